//! The documents this device holds, in memory, exactly as they are in the local store.
//!
//! Every document is loaded at open (a professional holds a few hundred plans) and kept
//! beside what the server acknowledged. A document changes in memory only together
//! with a store write: if the write fails, the document is restored to its old heads.
//!
//! The pending count is exact: `unacked` holds the hashes of the changes made on this
//! device that no acknowledgement has covered yet. Changes that arrived from the server
//! are never in it, and an acknowledgement only ever removes from it, so acks arriving
//! out of order (or heads the device does not hold yet) never make the count wrong.

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, ChangeHash};
use sync_core::partition::Partition;
use sync_core::protocol::DocumentId;

/// One document on this device.
pub struct Replica {
    pub partition: Partition,
    pub doc: Automerge,
    /// The heads the server said it committed, merged over every acknowledgement
    /// (`remote-heads-changed` with its storageId, or a summary answer), sorted.
    pub acked: Vec<ChangeHash>,
    /// Local changes not covered by any acknowledgement yet.
    pub unacked: HashSet<ChangeHash>,
    /// The server refused a change of this document, in its words.
    pub refused: Option<String>,
    /// Edited locally since the sync loop last pushed it.
    pub dirty: bool,
    /// The sync session must start over for this document (after `discard_unsynced`).
    pub resync: bool,
}

impl Replica {
    /// A document with the given local, unacknowledged changes.
    pub fn new(
        partition: Partition,
        doc: Automerge,
        acked: Vec<ChangeHash>,
        unacked: HashSet<ChangeHash>,
    ) -> Replica {
        let mut r = Replica {
            partition,
            doc,
            acked,
            unacked,
            refused: None,
            dirty: false,
            resync: false,
        };
        r.settle();
        r
    }

    /// A document created on this device: all its changes are local.
    pub fn created(partition: Partition, doc: Automerge) -> Replica {
        let unacked = all_changes(&doc);
        Replica::new(partition, doc, Vec::new(), unacked)
    }

    /// Local changes the server has not acknowledged.
    pub fn pending(&self) -> usize {
        self.unacked.len()
    }

    /// Records changes made on this device since `before`.
    pub fn record_local(&mut self, before: &[ChangeHash]) {
        let new = self.doc.get_changes_meta(before);
        self.unacked.extend(new.iter().map(|c| c.hash));
    }

    /// The server committed `heads`: merge them into `acked` and drop every local
    /// change they cover. Safe in any order and for heads not held yet.
    pub fn acknowledge(&mut self, heads: &[ChangeHash]) {
        let mut all: Vec<ChangeHash> = self.acked.iter().chain(heads).copied().collect();
        all.sort();
        all.dedup();
        self.acked = reduce_heads(&self.doc, all);
        self.settle();
    }

    /// Drops the local changes covered by the acknowledged heads we hold. Called after
    /// an ack and after receiving changes (acked heads we lacked may have arrived).
    pub fn settle(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        let known: Vec<ChangeHash> = self
            .acked
            .iter()
            .filter(|h| self.doc.get_change_meta_by_hash(h).is_some())
            .copied()
            .collect();
        if known.is_empty() {
            return;
        }
        self.acked = reduce_heads(&self.doc, self.acked.clone());
        let not_covered: HashSet<ChangeHash> = self
            .doc
            .get_changes_meta(&known)
            .iter()
            .map(|c| c.hash)
            .collect();
        self.unacked.retain(|h| not_covered.contains(h));
        if self.unacked.is_empty() {
            self.refused = None;
        }
    }
}

/// Every change of a document.
pub fn all_changes(doc: &Automerge) -> HashSet<ChangeHash> {
    doc.get_changes_meta(&[]).iter().map(|c| c.hash).collect()
}

/// Removes from `heads` those that are ancestors of others (held ones only; hashes not
/// held yet are kept, they cannot be compared).
fn reduce_heads(doc: &Automerge, heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    let held: Vec<ChangeHash> = heads
        .iter()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .copied()
        .collect();
    heads
        .iter()
        .filter(|h| {
            if !held.contains(h) {
                return true;
            }
            let others: Vec<ChangeHash> = held.iter().filter(|o| o != h).copied().collect();
            // `h` is redundant if it is not among the changes after the others' heads.
            others.is_empty() || doc.get_changes_meta(&others).iter().any(|c| c.hash == **h)
        })
        .copied()
        .collect()
}

/// All documents held.
#[derive(Default)]
pub struct Replicas {
    pub map: HashMap<DocumentId, Replica>,
}

impl Replicas {
    /// Changes not yet acknowledged, over all documents.
    pub fn pending(&self) -> u64 {
        self.map.values().map(|r| r.pending() as u64).sum()
    }

    /// Changes not yet acknowledged, leaving out documents the server refused: what
    /// decides whether everything that can sync has synced.
    pub fn pending_unrefused(&self) -> u64 {
        self.map
            .values()
            .filter(|r| r.refused.is_none())
            .map(|r| r.pending() as u64)
            .sum()
    }

    /// Documents whose change the server refused.
    pub fn refused(&self) -> u64 {
        self.map.values().filter(|r| r.refused.is_some()).count() as u64
    }

    /// Documents with local changes not acknowledged (what is being uploaded).
    pub fn uploading(&self) -> u64 {
        self.map
            .values()
            .filter(|r| r.refused.is_none() && r.pending() > 0)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sync_core::partition::WijkId;
    use sync_core::schema::{self, Goal, Leefdomein, Plan};

    fn plan_partition() -> Partition {
        Partition {
            wijk: WijkId::new("noord").expect("wijk"),
            kind: sync_core::partition::DocumentKind::Plan,
        }
    }

    /// Pending counts the changes after the acknowledged heads, and none once acked.
    #[test]
    fn pending_counts_unacked_changes() -> Result<(), Box<dyn std::error::Error>> {
        let mut doc = schema::new_document(&Plan::new(WijkId::new("noord")?, "HH-1"))?;
        let created = doc.get_heads();
        for text in ["a", "b"] {
            schema::update::<Plan>(&mut doc, |p| {
                p.goals.push(Goal::new(Leefdomein::Wonen, text))
            })?;
        }
        let mut r = Replica::created(plan_partition(), doc);
        assert_eq!(r.pending(), 3);
        // Heads we do not know (the server is ahead) acknowledge nothing of ours.
        r.acknowledge(&[ChangeHash([9; 32])]);
        assert_eq!(r.pending(), 3);
        r.acknowledge(&created);
        assert_eq!(r.pending(), 2);
        let heads = r.doc.get_heads();
        r.acknowledge(&heads);
        assert_eq!(r.pending(), 0);
        Ok(())
    }

    /// Remote changes merged into the document are never counted as pending.
    #[test]
    fn remote_changes_are_not_pending() -> Result<(), Box<dyn std::error::Error>> {
        let base = schema::new_document(&Plan::new(WijkId::new("noord")?, "HH-1"))?;
        let mut remote = base.fork();
        schema::update::<Plan>(&mut remote, |p| {
            p.goals.push(Goal::new(Leefdomein::Wonen, "remote"))
        })?;
        let mut r = Replica::new(
            plan_partition(),
            base.fork(),
            base.get_heads(),
            HashSet::new(),
        );
        r.doc.merge(&mut remote)?;
        r.settle();
        assert_eq!(r.pending(), 0);
        let before = r.doc.get_heads();
        r.doc
            .transact(|tx| {
                use automerge::transaction::Transactable;
                tx.put(automerge::ROOT, "regiehouder", "fatima")
            })
            .map_err(|f| f.error)?;
        r.record_local(&before);
        assert_eq!(r.pending(), 1);
        Ok(())
    }

    proptest! {
        /// With n local edits and acknowledgements of arbitrary earlier states arriving
        /// in any order, pending is exactly the number of edits no ack has covered.
        #[test]
        fn pending_is_exact_under_out_of_order_acks(
            n in 1usize..8,
            acks in proptest::collection::vec(0usize..8, 0..8),
        ) {
            let mut doc = schema::new_document(
                &Plan::new(WijkId::new("noord").expect("wijk"), "HH-1"),
            ).expect("plan");
            let mut r = Replica::created(plan_partition(), doc.fork());
            let mut states = vec![r.doc.get_heads()];
            for i in 0..n {
                let before = r.doc.get_heads();
                schema::update::<Plan>(&mut r.doc, |p| {
                    p.goals.push(Goal::new(Leefdomein::Wonen, format!("g{i}")))
                }).expect("edit");
                r.record_local(&before);
                states.push(r.doc.get_heads());
            }
            doc = r.doc.fork();
            let total = n + 1; // the creation change too
            let mut highest_acked: Option<usize> = None;
            for a in acks {
                let a = a.min(n);
                r.acknowledge(&states[a]);
                highest_acked = Some(highest_acked.map_or(a, |h| h.max(a)));
                // states[a] covers the creation change and the first `a` edits.
                let expected = total - highest_acked.map_or(0, |h| h + 1);
                prop_assert_eq!(r.pending(), expected);
            }
            prop_assert_eq!(doc.get_heads(), r.doc.get_heads());
        }
    }
}
