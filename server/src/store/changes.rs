//! The change feed between relay nodes that share one PostgreSQL store.
//!
//! Every commit of document bytes on a shared store sends, in its own transaction,
//! `pg_notify('buurtsync_changes', {node, doc, heads})`: PostgreSQL delivers it to
//! every listening node if and only if the commit happens. A node that holds the
//! document in memory loads what it lacks from the store and announces it to its own
//! connections (`hub::Hub::catch_up`). The payload is a hint, not the data: a node that
//! lost notifications (its listener connection broke) re-reads every loaded document.
//! On SQLite there is one node and no feed.

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sync_core::protocol::DocumentId;

use super::{Pool, Store};
use crate::error::Error;

/// The notification channel.
use super::tx::CHANNEL;
/// A notification carries at most this many heads (PostgreSQL caps payloads at 8000
/// bytes); with more, it carries none and receivers re-read the document.
const MAX_HEADS: usize = 64;

#[derive(Serialize, Deserialize)]
struct Payload {
    node: String,
    doc: String,
    heads: Vec<String>,
    /// The document was erased: every node drops its copy at once (not only at its
    /// next access poll). Absent in notices of older nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    erased: bool,
}

/// The notification text for the erasure of `id` by `node` (sent in the erasing
/// transaction).
pub(crate) fn erased_payload(node: &str, id: &DocumentId) -> String {
    serde_json::json!(Payload {
        node: node.to_owned(),
        doc: id.to_string(),
        heads: Vec::new(),
        erased: true,
    })
    .to_string()
}

/// The notification text for a commit of `id` with new `heads` by `node`.
pub(crate) fn payload(node: &str, id: &DocumentId, heads: &[ChangeHash]) -> String {
    let heads = if heads.len() <= MAX_HEADS {
        heads.iter().map(ToString::to_string).collect()
    } else {
        Vec::new()
    };
    serde_json::json!(Payload {
        node: node.to_owned(),
        doc: id.to_string(),
        heads,
        erased: false,
    })
    .to_string()
}

/// A commit made by another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    pub doc: DocumentId,
    /// The document's heads after that commit; empty if too many to send.
    pub heads: Vec<ChangeHash>,
}

/// What the feed reports next.
#[derive(Debug)]
pub enum FeedEvent {
    Change(RemoteChange),
    /// Another node erased this document.
    Erased(DocumentId),
    /// Notifications may have been missed (the listener reconnected): re-read every
    /// loaded document.
    Lost,
}

/// A node's subscription to the other nodes' commits.
#[derive(Debug)]
pub struct ChangeFeed {
    listener: PgListener,
    node: String,
}

impl Store {
    /// Subscribes to other nodes' commits; `None` on SQLite (one node, nothing to hear).
    pub async fn change_feed(&self) -> Result<Option<ChangeFeed>, Error> {
        let Pool::Postgres(pool) = self.pool() else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(ChangeFeed {
            listener,
            node: self.node.clone(),
        }))
    }
}

impl ChangeFeed {
    /// The next commit of another node, or `Lost`. Our own notifications and ones
    /// that do not parse are skipped (the latter logged). An error means the
    /// listener's connection is gone and could not be re-established yet.
    pub async fn next(&mut self) -> Result<FeedEvent, Error> {
        loop {
            let Some(note) = self.listener.try_recv().await? else {
                return Ok(FeedEvent::Lost);
            };
            let Ok(payload) = serde_json::from_str::<Payload>(note.payload()) else {
                tracing::warn!(
                    bytes = note.payload().len(),
                    "unreadable change notification"
                );
                continue;
            };
            if payload.node == self.node {
                continue;
            }
            let Ok(doc) = payload.doc.parse::<DocumentId>() else {
                tracing::warn!("change notification for a malformed document id");
                continue;
            };
            if payload.erased {
                return Ok(FeedEvent::Erased(doc));
            }
            // A head that does not parse makes the hint useless: re-read instead.
            let heads = payload
                .heads
                .iter()
                .map(|h| h.parse::<ChangeHash>())
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_default();
            return Ok(FeedEvent::Change(RemoteChange { doc, heads }));
        }
    }
}
