//! The one owner of a change from "checked" to "announced".
//!
//! A connection hands over a decoded sync payload and who sent it; this module locks
//! the document, applies the payload under the relay's check (through
//! `sync_core::engine`), commits everything that belongs to the change in **one** store
//! transaction — the chunk, its change authors, the `write` audit entry, the document's
//! change number and committed heads, and the plan's hand-over flag with its audit
//! entry — rolls memory back to the committed heads when that transaction fails
//! (`sync_core::engine::rollback`), and announces the change to every subscriber when
//! it succeeds. Creating a document ([`create`]) is the same in one step: catalog row,
//! first snapshot, authors, flag and audit entry commit together.
//!
//! Nothing here knows of sockets: the connection turns an [`Outcome`] into protocol
//! messages, and `server/tests/commit.rs` drives this module against a real store.

use std::sync::Arc;

use automerge::{Automerge, ChangeHash};
use sync_core::engine::{self, Outgoing, PeerSync, Rejected, SyncError};
use sync_core::partition::Partition;
use sync_core::policy::{self, Access, Principal};
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, is_handed_over};

use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;
use crate::handover;
use crate::hub::{off_reactor, ChangeCommit, ConnSignal, DocEntry, DocState, Hub};
use crate::metrics as m;
use crate::store::{now, CatalogEntry, Store};

/// Why the relay refused a change; the text goes to the peer in an `error` message.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("you may not change this document")]
    NoWrite,
    #[error("meta.kind and meta.wijk of a document never change (was {was}, now {now})")]
    MetaChanged { was: String, now: String },
    #[error("{0}")]
    Schema(#[from] schema::SchemaError),
    /// Same words whether the id exists elsewhere or the partition is not granted,
    /// so creation attempts reveal nothing about other partitions.
    #[error("you may not create a document with this id in this partition")]
    NotPermitted,
    /// Changes waiting for a missing dependency would take the document beyond
    /// `max_document_bytes`: they are memory like any other, so they count.
    #[error("changes waiting for missing dependencies would make the document larger than {limit} bytes; send the changes they depend on first")]
    QueueTooLarge { limit: u64 },
    /// The writer's changes waiting for missing dependencies, in all documents
    /// together, would exceed `max_queued_bytes_per_user` (`queue_budget`).
    #[error("your changes waiting for missing dependencies would exceed {limit} bytes across your documents; send the changes they depend on first")]
    UserQueueTooLarge { limit: u64 },
    /// Creation under an id that was erased or exists where this peer cannot read:
    /// one wording for both.
    #[error("document {0} cannot be stored under this id (it was erased or is taken); delete it from this device")]
    IdNotFree(DocumentId),
    /// A new document whose changes depend on changes not sent: the server holds
    /// nothing of it, so nothing can be missing legitimately.
    #[error("the changes depend on changes that were not sent; send the whole document")]
    Incomplete,
}

impl Refusal {
    /// A label for logs and metrics: schema messages quote client values, which may be
    /// personal data, so logs get the kind of refusal and never its text.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NoWrite => "no-write",
            Refusal::MetaChanged { .. } => "meta-changed",
            Refusal::Schema(_) => "schema",
            Refusal::NotPermitted => "not-permitted",
            Refusal::QueueTooLarge { .. } => "queue-too-large",
            Refusal::UserQueueTooLarge { .. } => "user-queue-too-large",
            Refusal::Incomplete => "incomplete",
            Refusal::IdNotFree(_) => "id-not-free",
        }
    }
}

/// Who delivers a change: the principal, and the device as provenance and audit
/// records name it (`token id/peer id`).
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub principal: &'a Principal,
    pub device: &'a str,
    /// The token id the connection authenticated with: nothing commits unless it is
    /// still live inside the commit's transaction (revoked or expired: refused).
    /// `None`: no token (tests).
    pub token: Option<&'a str>,
}

impl Writer<'_> {
    fn event(&self, action: AuditAction, id: &DocumentId, partition: &Partition) -> AuditEvent {
        AuditEvent::new(self.principal.user_id.clone(), self.device, action).on(id, Some(partition))
    }
}

/// What became of a payload.
#[derive(Debug)]
pub enum Outcome {
    /// New changes are committed and announced (the writer's connection included).
    Committed,
    /// Nothing new to commit (the payload was sync bookkeeping: a subscriber's answer
    /// to a relayed change, 8 of 9 messages in the live phase). The reply to it was
    /// generated under the same document lock; the caller sends it.
    Unchanged(Answer),
    /// Nothing was kept: store and memory are as before. `kind` labels the reason
    /// for logs and metrics; `message` is the text for the peer.
    Refused { kind: &'static str, message: String },
}

/// A reply generated for a peer's message while its document was locked, and the
/// committed heads at that moment (for `remote-heads-changed`).
#[derive(Debug)]
pub struct Answer {
    /// The sync payload to send, if there is anything to say; an error if automerge
    /// panicked (its session was reset).
    pub payload: Result<Option<Outgoing>, SyncError>,
    pub saved_heads: Vec<ChangeHash>,
}

impl Outcome {
    fn refused(kind: &'static str, message: String) -> Outcome {
        Outcome::Refused { kind, message }
    }
}

/// Applies `data` (an automerge sync message from `writer`) to an open document:
/// check, commit in one transaction, roll back on failure, announce on success.
pub async fn apply(
    hub: &Hub,
    store: &Store,
    entry: &Arc<DocEntry>,
    engine: &mut PeerSync,
    writer: Writer<'_>,
    data: &[u8],
) -> Outcome {
    let id = entry.id();
    let partition = entry.catalog.partition.clone();
    let may_write = policy::decide(writer.principal, entry.facts(), Access::Write).is_ok();
    // Fairness: this wijk's work waits for this wijk's permits only.
    let permit = hub.work_permit(&partition.wijk).await;
    let mut state = match hub.lock(entry).await {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(%id, error = %e, "reloading document failed");
            return Outcome::refused(
                "unavailable",
                format!("document {id} cannot be served right now; try again later"),
            );
        }
    };
    let stored_bytes = state.stored_bytes();
    let limit = hub.max_document_bytes();
    let user = writer.principal.user_id.as_str();
    // The queue may have drained since (another node's chunks brought what it
    // waited for): then nobody pays for it any more.
    settle_queue(&mut state);
    let DocState { doc, queue, .. } = &mut *state;
    // Whether the changes may have moved the plan's hand-over flag; unless the check
    // says they wrote nothing to `handover`, it is read again below.
    let mut handover_may_move = true;
    // Applying and validating a heavy payload is CPU work of milliseconds: keep it off
    // the reactor, so other connections' frames are not held up. A light one (a live
    // edit, or a subscriber's answer: all of the live phase) is less work than handing
    // the worker thread over (`block_in_place` wakes a thread of the blocking pool to
    // take the worker's queue, and back: ≈ 3 context switches per relayed change, and
    // ≈ 8 % of the server's CPU per change in the replay at 400/s, issue 18); it runs
    // here, and while one worker runs it the other steals its queued tasks. Light is
    // counted in bytes and in the ops the changes declare (`engine::runs_inline`):
    // automerge's run-length encoding can say a million ops in 119 bytes, which would
    // hold a worker for seconds (up to the engine's op limit, `--max-document-ops`).
    let mut work = || {
        engine.receive_checked(id, doc, data, |doc, applied| {
            // Runs for new heads and for changes queued behind a missing dependency
            // alike: a reader cannot park bytes in memory either.
            if !may_write {
                return Err(Refusal::NoWrite);
            }
            if stored_bytes.saturating_add(applied.queued_bytes) > limit {
                return Err(Refusal::QueueTooLarge { limit });
            }
            let grown = applied.queued_bytes.saturating_sub(applied.queued_before);
            if !applied.changed() {
                // Only queued: nothing to read yet; checked when it applies. The
                // writer pays for the growth (the last check: nothing refuses after).
                return queue
                    .charge(user, grown)
                    .map_err(|over| Refusal::UserQueueTooLarge { limit: over.limit });
            }
            let meta_changed = |meta: &schema::Meta| Refusal::MetaChanged {
                was: partition.to_string(),
                now: meta.partition().to_string(),
            };
            // The committed document was valid: only what the new changes touched is
            // read again (a whole plan costs milliseconds), as the partition's kind
            // (its `meta` was checked against the partition at every commit). The
            // changes are handed out once: the commit below stores and announces the
            // same ones. `meta` is read when they wrote to it; a moved partition is
            // refused as such, whatever else is wrong (meta is read again only then).
            let checked = match schema::validate_changes(
                doc,
                &applied.heads_before,
                applied.new_changes(doc),
                partition.kind,
            ) {
                Ok(checked) => checked,
                Err(e) => {
                    return Err(match schema::meta::read_meta(doc) {
                        Ok(meta) if meta.partition() != partition => meta_changed(&meta),
                        _ => Refusal::Schema(e),
                    })
                }
            };
            if let Some(meta) = checked.meta.as_ref().filter(|m| m.partition() != partition) {
                return Err(meta_changed(meta));
            }
            handover_may_move = checked.may_have_changed("handover");
            queue
                .charge(user, grown)
                .map_err(|over| Refusal::UserQueueTooLarge { limit: over.limit })
        })
    };
    let result = if !engine::runs_inline(data) {
        off_reactor(work)
    } else {
        work()
    };
    // A refusal rebuilt the document without its queue; changes that applied may have
    // drained it.
    settle_queue(&mut state);
    // The permit bounds CPU work; the commit below is a wait for the store (the
    // document lock still keeps others from reading the uncommitted change). Holding
    // it there would cap a wijk at one commit per fsync.
    drop(permit);
    let applied = match result {
        Ok(applied) if applied.changed() => applied,
        Ok(_) => {
            // Answered now, under this lock, rather than by marking the document for
            // the connection's next flush, which would take the wijk's permit and
            // this lock again for the same generate (issue 18).
            let payload = engine.try_generate_with(id, &state.doc, &state.recent);
            return Outcome::Unchanged(Answer {
                payload,
                saved_heads: state.saved_heads.clone(),
            });
        }
        Err(Rejected::Sync(e)) => {
            let kind = e.kind();
            m::rejected(kind);
            if matches!(e, SyncError::TooManyOps(_)) {
                tracing::info!(user = %writer.principal.user_id, %id, reason = kind, "change rejected");
            }
            // issue 20: automerge panicked under sync_core::guard. The engine rebuilt
            // the document; the store's copy is the one known to be whole, so the next
            // lock reloads from it.
            if let SyncError::Panicked(panicked) = &e {
                m::panic_caught(panicked, &id);
                hub.discard(&mut state);
            }
            return Outcome::refused(kind, format!("document {id}: {e}"));
        }
        Err(Rejected::Check(refusal)) => {
            let kind = refusal.kind();
            tracing::info!(user = %writer.principal.user_id, %id, reason = kind, "change rejected");
            m::rejected(kind);
            drop(state);
            // Nothing else is committed for a refusal: its audit entry stands alone.
            let event = writer
                .event(AuditAction::Denied, &id, &partition)
                .with_detail(format!("write: {kind}"));
            if let Err(e) = store.audit().append(&event).await {
                tracing::error!(%id, error = %e, "could not audit a refused change");
            }
            return Outcome::refused(kind, format!("document {id}: change rejected: {refusal}"));
        }
    };
    // Everything the change brings commits together. The flag is read again only when
    // the changes may have moved it: else it is the committed one, which the document
    // had before them (every commit, reload and catch-up sets it).
    let handed_over = if handover_may_move {
        is_handed_over(&state.doc)
    } else {
        entry.handed_over()
    };
    debug_assert_eq!(
        handed_over,
        is_handed_over(&state.doc),
        "{id}: hand-over flag"
    );
    let flag_moves = handed_over != entry.handed_over();
    let mut events = vec![writer.event(AuditAction::Write, &id, &partition)];
    if flag_moves {
        let action = if handed_over {
            AuditAction::HandOver
        } else {
            AuditAction::HandOverWithdrawn
        };
        events.push(writer.event(action, &id, &partition));
    }
    let cause = (writer.principal.user_id.as_str(), writer.device);
    // A withdrawal takes the consulent's copy away before it commits: if that fails,
    // the change is refused, so the copy never outlives the hand-over.
    let withdrawn = if flag_moves && !handed_over {
        handover::withdraw(hub, store, entry, cause).await
    } else {
        Ok(())
    };
    let committed = match withdrawn {
        Ok(()) => {
            let commit = ChangeCommit {
                author: Some(cause),
                audit: &events,
                handed_over: flag_moves.then_some(handed_over),
                token: writer.token,
                applied: Some(&applied),
            };
            hub.persist_change(&id, &mut state, commit).await
        }
        Err(e) => Err(e),
    };
    match committed {
        Ok(true) => {}
        Ok(false) => {
            // Nothing to write after all (the store holds these changes already):
            // the audit entries still say who delivered them.
            if let Err(e) = store.audit().append_many(&events).await {
                tracing::error!(%id, error = %e, "could not write audit events");
            }
        }
        Err(e) => {
            // Not durable, so not kept: memory stays equal to the store.
            let state = &mut *state;
            let rolled_back = engine::rollback(&mut state.doc, &state.saved_heads);
            // The rebuilt document has no queue (nor has a reloaded one).
            state.queue.clear();
            if !rolled_back {
                // The rebuild failed and emptied the copy: reload it from the store.
                hub.discard(state);
            }
            engine.forget(&id);
            engine.open(id);
            return if let Error::TooLarge { .. } = e {
                tracing::info!(user = %writer.principal.user_id, %id, "change rejected: document too large");
                m::rejected("document-too-large");
                Outcome::refused(
                    "document-too-large",
                    format!("document {id}: change rejected: {e}"),
                )
            } else if let Error::Unauthorized = e {
                tracing::info!(user = %writer.principal.user_id, %id, "change rejected: token revoked or expired");
                m::rejected("token-ended");
                Outcome::refused(
                    "token-ended",
                    format!("document {id}: change rejected: token revoked or expired"),
                )
            } else {
                tracing::error!(%id, error = %e, "commit failed");
                Outcome::refused(
                    "store-failed",
                    format!("document {id}: the change could not be stored; it will be retried"),
                )
            };
        }
    }
    // Nothing came in since the check, unless a compaction merged other nodes' chunks
    // in: then the flag is read again.
    let flag_changed = if state.doc.get_heads() == applied.heads_after {
        entry.set_handed_over(handed_over)
    } else {
        entry.refresh_facts(&state)
    };
    if flag_changed {
        tracing::info!(user = %writer.principal.user_id, %id, handed_over, "hand-over changed");
    }
    if handed_over {
        // The consulent's copy follows the committed plan. A failure leaves it missing
        // or behind (never ahead of the plan); the plan's next commit repairs it.
        if let Err(e) = handover::follow(hub, store, entry, &state.doc, cause).await {
            tracing::error!(%id, error = %e, "hand-over copy not brought up to date");
        }
    }
    drop(state);
    m::committed(partition.kind);
    entry.announce();
    Outcome::Committed
}

/// Gives back what users were charged for the document's queue once it is empty
/// (cheap: one look at automerge's missing dependencies while anyone is charged).
fn settle_queue(state: &mut DocState) {
    if !state.queue.is_empty() && !engine::has_queued(&state.doc) {
        state.queue.clear();
    }
}

/// What became of a creation.
#[derive(Debug)]
pub enum Created {
    /// Committed and announced; the entry is loaded.
    Document(Arc<DocEntry>),
    /// Nothing was stored. `erased`: the id is not free (erased, or taken in a
    /// partition the peer cannot read; the answer does not say which) and the device
    /// should purge it. `message` is the text for the peer.
    Refused { erased: bool, message: String },
}

/// Commits a document a peer created (`doc` passed the creation check): catalog row
/// with its partition pinned, first snapshot, change authors, hand-over flag, `create`
/// audit entry and change number in one transaction; then subscribes `subscriber` (the
/// creator's connection) and announces it.
pub async fn create(
    hub: &Hub,
    doc: Automerge,
    writer: Writer<'_>,
    id: DocumentId,
    subscriber: &Arc<ConnSignal>,
) -> Created {
    let partition = match schema::meta::read_meta(&doc) {
        Ok(meta) => meta.partition(),
        Err(e) => {
            return Created::Refused {
                erased: false,
                message: format!("document {id}: {e}"),
            }
        }
    };
    let catalog = CatalogEntry {
        id,
        partition: partition.clone(),
        created_at: now(),
        created_by: writer.principal.user_id.clone(),
        handover_of: None,
    };
    let event = writer.event(AuditAction::Create, &id, &partition);
    let user = writer.principal.user_id.as_str();
    match hub
        .create_with(
            catalog,
            doc,
            (user, writer.device),
            std::slice::from_ref(&event),
            writer.token,
        )
        .await
    {
        Ok(entry) => {
            tracing::info!(%user, %id, partition = %entry.catalog.partition, "document created");
            metrics::counter!(m::CREATED, "kind" => partition.kind.as_str()).increment(1);
            if entry.handed_over() {
                // Created handed over: the consulent's copy, as after any commit.
                let followed = match hub.lock(&entry).await {
                    Ok(state) => {
                        handover::follow(
                            hub,
                            hub.store(),
                            &entry,
                            &state.doc,
                            (user, writer.device),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = followed {
                    tracing::error!(%id, error = %e, "hand-over copy not made");
                }
            }
            entry.subscribe(subscriber);
            entry.announce();
            Created::Document(entry)
        }
        Err(Error::Erased(_) | Error::Conflict(_)) => {
            // A stale device pushing an erased document, or an id that exists in a
            // partition this peer may not read: one answer for both (and the device
            // purges its copy), so creating reveals nothing of other partitions.
            tracing::info!(%user, %id, "creation under an id that is not free refused");
            m::rejected("id-not-free");
            Created::Refused {
                erased: true,
                message: Refusal::IdNotFree(id).to_string(),
            }
        }
        Err(e @ Error::TooLarge { .. }) => {
            m::rejected("document-too-large");
            Created::Refused {
                erased: false,
                message: format!("document {id}: change rejected: {e}"),
            }
        }
        Err(Error::Unauthorized) => {
            m::rejected("token-ended");
            Created::Refused {
                erased: false,
                message: format!("document {id}: change rejected: token revoked or expired"),
            }
        }
        Err(e) => {
            tracing::error!(%id, error = %e, "creating document failed");
            Created::Refused {
                erased: false,
                message: format!("document {id}: could not be stored; try again later"),
            }
        }
    }
}
