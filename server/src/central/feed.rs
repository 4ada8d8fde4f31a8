//! The incremental feed of facts: the store numbers every commit and erasure
//! (`documents.change_seq`, `tombstones.change_seq`), and [`FactsCache`] keeps the
//! facts of every document up to the last number it has read, reading only what came
//! after it on each refresh.
//!
//! One cache serves every recipient (facts are recipient-independent; pseudonyms are
//! applied per request), so the nightly exports and the dashboard cost one document
//! load per change, not per request. Erased documents stay as small `Erased` entries
//! so the feed can tell the central office to drop them.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::Automerge;
use futures_util::StreamExt;
use sync_core::protocol::DocumentId;

use super::record::{Body, Facts};
use crate::error::Error;
use crate::store::central::FeedRow;
use crate::store::Store;

/// Feed rows read from the store per query while refreshing.
const PAGE: i64 = 500;
/// Documents loaded at once while refreshing.
const PARALLEL: usize = 8;

#[derive(Debug, Default, Clone)]
struct Snapshot {
    last_seq: i64,
    docs: HashMap<DocumentId, Arc<Facts>>,
}

/// The facts of every document, as of the last change number read.
#[derive(Debug, Default)]
pub struct FactsCache {
    /// Held across a refresh so concurrent requests share one pass over the store.
    inner: tokio::sync::Mutex<Arc<Snapshot>>,
}

/// A consistent view: facts of every document up to `last_seq`.
#[derive(Debug, Clone)]
pub struct View {
    pub last_seq: i64,
    facts: Arc<Snapshot>,
}

impl View {
    /// Every document's facts (erased ones included), in change order.
    pub fn all(&self) -> Vec<Arc<Facts>> {
        let mut all: Vec<Arc<Facts>> = self.facts.docs.values().cloned().collect();
        all.sort_by_key(|f| f.seq);
        all
    }

    /// The facts changed after `cursor`, in change order, at most `limit`.
    pub fn after(&self, cursor: i64, limit: usize) -> Vec<Arc<Facts>> {
        let mut changed: Vec<Arc<Facts>> = self
            .facts
            .docs
            .values()
            .filter(|f| f.seq > cursor)
            .cloned()
            .collect();
        changed.sort_by_key(|f| f.seq);
        changed.truncate(limit);
        changed
    }

    /// Current documents only (for aggregates).
    pub fn current(&self) -> impl Iterator<Item = &Facts> {
        self.facts
            .docs
            .values()
            .map(|f| f.as_ref())
            .filter(|f| !matches!(f.body, Body::Erased))
    }
}

impl FactsCache {
    /// Reads what changed since the last refresh and returns the up-to-date view.
    pub async fn refresh(&self, store: &Store) -> Result<View, Error> {
        let mut guard = self.inner.lock().await;
        let mut next: Option<Snapshot> = None;
        loop {
            let after = next.as_ref().map_or(guard.last_seq, |s| s.last_seq);
            let rows = store.central().changes_after(after, PAGE).await?;
            if rows.is_empty() {
                break;
            }
            let snapshot = next.get_or_insert_with(|| (**guard).clone());
            // A few documents at a time: reading is mostly waiting for SQLite.
            let loaded: Vec<Result<(FeedRow, Facts), Error>> = futures_util::stream::iter(rows)
                .map(|row| async move {
                    let facts = load_facts(store, &row).await?;
                    Ok((row, facts))
                })
                .buffered(PARALLEL)
                .collect()
                .await;
            for result in loaded {
                let (row, facts) = result?;
                snapshot.last_seq = snapshot.last_seq.max(row.seq);
                snapshot.docs.insert(row.id, Arc::new(facts));
            }
        }
        if let Some(snapshot) = next {
            *guard = Arc::new(snapshot);
        }
        Ok(View {
            last_seq: guard.last_seq,
            facts: guard.clone(),
        })
    }
}

/// The facts of one feed row: the document is decrypted and read off the reactor.
async fn load_facts(store: &Store, row: &FeedRow) -> Result<Facts, Error> {
    if row.erased {
        return Ok(Facts::extract(row, None, &HashMap::new()));
    }
    let stored = match store.documents().load_document(&row.id).await {
        Ok(stored) => stored,
        // Erased since the feed query: its tombstone comes with a later number.
        Err(Error::Corrupt(e)) => {
            tracing::warn!(id = %row.id, error = %e, "central feed: document unreadable");
            None
        }
        Err(e) => return Err(e),
    };
    // The commit times of the plan's changes: the known-at dates of its status history.
    let authors: HashMap<String, i64> = match (&stored, row.partition.kind) {
        (Some(_), sync_core::partition::DocumentKind::Plan) => store
            .documents()
            .change_authors(&row.id)
            .await?
            .into_iter()
            .map(|(hash, _user, _device, at)| (hash, at))
            .collect(),
        _ => HashMap::new(),
    };
    let row = row.clone();
    tokio::task::spawn_blocking(move || {
        let doc = stored.and_then(|s| match Automerge::load(&s.bytes) {
            Ok(doc) => Some(doc),
            Err(e) => {
                tracing::warn!(id = %row.id, error = %e, "central feed: document does not load");
                None
            }
        });
        Facts::extract(&row, doc.as_ref(), &authors)
    })
    .await
    .map_err(|e| Error::Corrupt(format!("reading a document for the central feed: {e}")))
}
