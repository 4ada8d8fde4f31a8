//! Who pays for the changes automerge holds back.
//!
//! automerge keeps a change whose dependencies it lacks in a queue inside the document,
//! until they arrive. `commit::apply` lets a writer queue only up to the document limit
//! in one document; this module bounds what one *user* keeps queued across all the
//! documents they may write (issue 16 item 1: a volunteer with three activiteiten could
//! otherwise park three times the document limit in memory).
//!
//! The [`QueueLedger`] (one per hub) holds each user's queued bytes; a document's
//! [`QueueCharges`] (in its `DocState`) remember which user's growth of that document's
//! queue was charged. The charges are released when the queue is gone: it drained (the
//! dependencies arrived), the document was rolled back or unloaded (both drop the
//! queue), or the state itself was dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Queued bytes per user, against one limit.
#[derive(Debug)]
pub struct QueueLedger {
    limit: u64,
    per_user: Mutex<HashMap<String, u64>>,
}

impl QueueLedger {
    /// `limit`: the bytes one user may keep queued in all documents together.
    pub fn new(limit: u64) -> Arc<QueueLedger> {
        Arc::new(QueueLedger {
            limit,
            per_user: Mutex::new(HashMap::new()),
        })
    }

    /// The per-user limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes `user` keeps queued now.
    pub fn queued(&self, user: &str) -> u64 {
        self.users().get(user).copied().unwrap_or(0)
    }

    /// Adds `bytes` to `user`'s tally if that stays within the limit (check and add
    /// under one lock, so two documents of one user cannot both slip under it).
    fn try_charge(&self, user: &str, bytes: u64) -> bool {
        let mut users = self.users();
        let queued = users.get(user).copied().unwrap_or(0);
        match queued.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                users.insert(user.to_owned(), total);
                true
            }
            _ => false,
        }
    }

    fn release(&self, user: &str, bytes: u64) {
        let mut users = self.users();
        if let Some(queued) = users.get_mut(user) {
            *queued = queued.saturating_sub(bytes);
            if *queued == 0 {
                users.remove(user);
            }
        }
    }

    /// The map, recovering from poisoning: nothing panics while holding it.
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.per_user.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one document's queue has cost whom; released on [`clear`](Self::clear) and
/// on drop.
#[derive(Debug)]
pub struct QueueCharges {
    ledger: Arc<QueueLedger>,
    by_user: HashMap<String, u64>,
}

/// A charge the ledger refused: the user would keep more than `limit` bytes queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub limit: u64,
}

impl QueueCharges {
    pub fn new(ledger: Arc<QueueLedger>) -> QueueCharges {
        QueueCharges {
            ledger,
            by_user: HashMap::new(),
        }
    }

    /// Charges `user` for `bytes` more of this document's queue.
    pub fn charge(&mut self, user: &str, bytes: u64) -> Result<(), OverBudget> {
        if bytes == 0 {
            return Ok(());
        }
        if !self.ledger.try_charge(user, bytes) {
            return Err(OverBudget {
                limit: self.ledger.limit,
            });
        }
        *self.by_user.entry(user.to_owned()).or_insert(0) += bytes;
        Ok(())
    }

    /// The queue is gone: every user charged for it is released.
    pub fn clear(&mut self) {
        for (user, bytes) in self.by_user.drain() {
            self.ledger.release(&user, bytes);
        }
    }

    /// Is anyone charged for this document's queue?
    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

impl Drop for QueueCharges {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One user's charges in two documents add up against one limit; a refused charge
    /// changes nothing; clearing or dropping a document's charges gives them back.
    #[test]
    fn charges_add_up_per_user_and_are_given_back() {
        let ledger = QueueLedger::new(100);
        let mut first = QueueCharges::new(ledger.clone());
        let mut second = QueueCharges::new(ledger.clone());
        first.charge("vol", 60).expect("within");
        second
            .charge("other", 90)
            .expect("another user's own budget");
        assert_eq!(second.charge("vol", 50), Err(OverBudget { limit: 100 }));
        assert_eq!(ledger.queued("vol"), 60, "a refused charge was kept");
        second.charge("vol", 40).expect("exactly the limit");
        assert_eq!(ledger.queued("vol"), 100);
        first.clear();
        assert_eq!(ledger.queued("vol"), 40);
        assert!(first.is_empty());
        drop(second);
        assert_eq!(ledger.queued("vol"), 0);
        assert_eq!(ledger.queued("other"), 0);
        assert!(ledger.users().is_empty(), "released users leave no entry");
    }
}
