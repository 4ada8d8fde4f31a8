//! The documents this device holds, in memory, exactly as they are in the local store.
//!
//! Every document is loaded at open (a professional holds a few hundred plans) and kept
//! beside the heads the server acknowledged. A document changes in memory only together
//! with a store write: if the write fails, the document is restored to its old heads.

use std::collections::HashMap;

use automerge::{Automerge, ChangeHash};
use sync_core::partition::Partition;
use sync_core::protocol::DocumentId;

/// One document on this device.
pub struct Replica {
    pub partition: Partition,
    pub doc: Automerge,
    /// Heads the server said it committed (`remote-heads-changed` with its storageId).
    pub acked: Vec<ChangeHash>,
    /// Changes in `doc` not covered by `acked`; cached, recomputed by [`Replica::refresh`].
    pub pending: usize,
    /// Edited locally since the sync loop last pushed it.
    pub dirty: bool,
}

impl Replica {
    pub fn new(partition: Partition, doc: Automerge, acked: Vec<ChangeHash>) -> Replica {
        let mut r = Replica {
            partition,
            doc,
            acked,
            pending: 0,
            dirty: false,
        };
        r.refresh();
        r
    }

    /// Recomputes `pending`: the changes the server has not acknowledged. Acked heads we
    /// do not hold yet (the server is ahead) cover nothing of ours.
    pub fn refresh(&mut self) {
        if self.doc.get_heads() == self.acked {
            self.pending = 0;
            return;
        }
        let known: Vec<ChangeHash> = self
            .acked
            .iter()
            .filter(|h| self.doc.get_change_meta_by_hash(h).is_some())
            .copied()
            .collect();
        self.pending = self.doc.get_changes_meta(&known).len();
    }
}

/// All documents held.
#[derive(Default)]
pub struct Replicas {
    pub map: HashMap<DocumentId, Replica>,
}

impl Replicas {
    /// Changes not yet acknowledged, over all documents.
    pub fn pending(&self) -> u64 {
        self.map.values().map(|r| r.pending as u64).sum()
    }
}

/// Restores a document to earlier heads (after a refused edit or a failed write).
pub fn rollback(doc: &mut Automerge, heads: &[ChangeHash]) {
    if doc.get_heads() == heads {
        return;
    }
    let restored = if heads.is_empty() {
        Ok(Automerge::new())
    } else {
        doc.fork_at(heads)
    };
    if let Ok(mut restored) = restored {
        restored.set_actor(doc.get_actor().clone());
        *doc = restored;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::partition::WijkId;
    use sync_core::schema::{self, Goal, Leefdomein, Plan};

    /// Pending counts the changes after the acknowledged heads, and none once acked.
    #[test]
    fn pending_counts_unacked_changes() -> Result<(), Box<dyn std::error::Error>> {
        let wijk = WijkId::new("noord")?;
        let mut doc = schema::new_document(&Plan::new(wijk.clone(), "HH-1"))?;
        let partition = Partition {
            wijk,
            kind: sync_core::partition::DocumentKind::Plan,
        };
        let created = doc.get_heads();
        for text in ["a", "b"] {
            schema::update::<Plan>(&mut doc, |p| {
                p.goals.push(Goal::new(Leefdomein::Wonen, text))
            })?;
        }
        let mut r = Replica::new(partition, doc, Vec::new());
        assert_eq!(r.pending, 3);
        r.acked = created;
        r.refresh();
        assert_eq!(r.pending, 2);
        r.acked = r.doc.get_heads();
        r.refresh();
        assert_eq!(r.pending, 0);
        // Heads we do not know (the server is ahead) acknowledge nothing of ours.
        r.acked = vec![ChangeHash([9; 32])];
        r.refresh();
        assert_eq!(r.pending, 3);
        Ok(())
    }
}
