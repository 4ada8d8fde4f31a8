//! `commit`, the owner of a change from "checked" to "announced", against a real SQLite
//! file and no socket: a device's sync messages go straight to `commit::apply`.

use std::sync::Arc;

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash};
use buurtsync_server::audit::{AuditAction, AuditEntry};
use buurtsync_server::commit::{self, Outcome, Writer};
use buurtsync_server::hub::{DocEntry, Hub};
use buurtsync_server::store::{CatalogEntry, Store};
use sync_core::engine::{EncodedChanges, PeerSync};
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::policy::{Grant, Principal, WijkRole};
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, ContactKind, ContactMoment, Date, Plan};

fn wijk() -> WijkId {
    WijkId::new("noord").expect("wijk")
}

/// A professional of the plan's wijk (may write), or a user without grants (may not).
fn principal(may_write: bool) -> Principal {
    Principal {
        user_id: "ann".into(),
        grants: if may_write {
            vec![Grant {
                wijk: wijk(),
                role: WijkRole::Professional,
            }]
        } else {
            Vec::new()
        },
        global_roles: Vec::new(),
    }
}

/// One stored plan, the relay's side of it, and a device holding the same history.
struct Fixture {
    _dir: tempfile::TempDir,
    url: String,
    store: Store,
    hub: Hub,
    id: DocumentId,
    entry: Arc<DocEntry>,
    engine: PeerSync,
    device: Automerge,
    device_sync: sync::State,
    committed: Vec<ChangeHash>,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_limit(u64::MAX).await
    }

    /// A fixture whose hub refuses documents beyond `max_document_bytes`.
    async fn with_limit(max_document_bytes: u64) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/db.sqlite3", dir.path().display());
        let store = Store::open(&url).await.expect("open");
        let hub = Hub::new(store.clone(), 1, max_document_bytes);
        let id = DocumentId::random();
        let plan = schema::new_document(&Plan::new(wijk(), "huishouden-1")).expect("plan");
        let catalog = CatalogEntry {
            id,
            partition: Partition {
                wijk: wijk(),
                kind: DocumentKind::Plan,
            },
            created_at: 1,
            created_by: "ann".into(),
            handover_of: None,
        };
        let entry = hub
            .create(catalog, plan.fork(), ("ann", "tok/phone"))
            .await
            .expect("create");
        let mut engine = PeerSync::new();
        engine.open(id);
        let committed = plan.get_heads();
        Fixture {
            _dir: dir,
            url,
            store,
            hub,
            id,
            entry,
            engine,
            device: plan,
            device_sync: sync::State::new(),
            committed,
        }
    }

    /// Syncs the device with the relay through `commit::apply` until neither side has
    /// anything to say; returns the outcome of every payload the relay received.
    async fn sync(&mut self, principal: &Principal) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for _ in 0..8 {
            let to_relay = self.device.generate_sync_message(&mut self.device_sync);
            // A message that commits nothing is answered by `apply` itself.
            let mut answered = None;
            if let Some(message) = &to_relay {
                let writer = Writer {
                    principal,
                    device: "tok/phone",
                    token: None,
                };
                let outcome = commit::apply(
                    &self.hub,
                    &self.store,
                    &self.entry,
                    &mut self.engine,
                    writer,
                    &message.clone().encode(),
                )
                .await;
                if let Outcome::Unchanged(answer) = &outcome {
                    let payload = answer.payload.as_ref().expect("generates");
                    answered = Some(payload.as_ref().map(|out| out.data.clone()));
                }
                outcomes.push(outcome);
            }
            let to_device = match answered {
                Some(answer) => answer,
                None => {
                    let state = self.hub.lock(&self.entry).await.expect("lock");
                    self.engine.generate(self.id, &state.doc)
                }
            };
            if let Some(bytes) = &to_device {
                let message = sync::Message::decode(bytes).expect("decode");
                self.device
                    .receive_sync_message(&mut self.device_sync, message)
                    .expect("device receives");
            }
            if to_relay.is_none() && to_device.is_none() {
                break;
            }
        }
        outcomes
    }

    /// The document's audit entries.
    async fn audit(&self) -> Vec<AuditEntry> {
        self.store
            .audit()
            .for_document(&self.id.to_string())
            .await
            .expect("audit")
    }

    /// Sends the relay `count` sync messages, each carrying one change of `bytes` of
    /// text whose dependency (an edit made just before it) is never sent: automerge
    /// queues such changes without moving the heads.
    async fn send_orphans(
        &mut self,
        principal: &Principal,
        count: usize,
        bytes: usize,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for i in 0..count {
            let mut ahead = self.device.fork();
            add_contact(&mut ahead);
            let date = Date::from_ymd(2028, 3, 15).expect("date");
            let text = format!("{i}{}", "x".repeat(bytes));
            schema::update::<Plan>(&mut ahead, |plan| {
                plan.contacts
                    .push(ContactMoment::new(date, ContactKind::Huisbezoek, &text))
            })
            .expect("edit");
            let orphan = ahead.get_last_local_change().expect("change");
            let message = sync::Message {
                heads: ahead.get_heads(),
                need: Vec::new(),
                have: Vec::new(),
                changes: sync::ChunkList::from(vec![orphan.raw_bytes().to_vec()]),
                flags: None,
                version: sync::MessageVersion::V1,
            };
            let writer = Writer {
                principal,
                device: "tok/phone",
                token: None,
            };
            outcomes.push(
                commit::apply(
                    &self.hub,
                    &self.store,
                    &self.entry,
                    &mut self.engine,
                    writer,
                    &message.encode(),
                )
                .await,
            );
        }
        outcomes
    }

    /// Bytes automerge holds queued in the relay's copy of the document.
    async fn queued(&self) -> u64 {
        let state = self.hub.lock(&self.entry).await.expect("lock");
        sync_core::engine::queued_bytes(&state.doc)
    }

    /// The document as the store holds it (its chunks' bytes and sizes).
    async fn stored_document(&self) -> buurtsync_server::store::StoredDocument {
        self.store
            .documents()
            .load_document(&self.id)
            .await
            .expect("load")
            .expect("exists")
    }

    /// (heads in memory, committed heads in memory).
    async fn memory(&self) -> (Vec<ChangeHash>, Vec<ChangeHash>) {
        let state = self.hub.lock(&self.entry).await.expect("lock");
        (state.doc.get_heads(), state.saved_heads.clone())
    }
}

/// The heads and the hand-over flag a fresh store handle reads from the file.
async fn stored(url: &str, id: &DocumentId) -> (Vec<ChangeHash>, bool) {
    let store = Store::open(url).await.expect("reopen");
    let bytes = store
        .documents()
        .load_document(id)
        .await
        .expect("load")
        .expect("exists")
        .bytes;
    let heads = Automerge::load(&bytes).expect("loads").get_heads();
    let (_, handed_over) = store
        .documents()
        .list_catalog(None, None, 0)
        .await
        .expect("catalog")
        .into_iter()
        .find(|(entry, _)| entry.id == *id)
        .expect("in the catalog");
    store.close().await;
    (heads, handed_over)
}

fn add_contact(doc: &mut Automerge) {
    let date = Date::from_ymd(2028, 3, 14).expect("date");
    schema::update::<Plan>(doc, |plan| {
        plan.contacts.push(ContactMoment::new(
            date,
            ContactKind::Huisbezoek,
            "Huisbezoek",
        ))
    })
    .expect("edit");
}

fn request_hand_over(doc: &mut Automerge) {
    schema::update::<Plan>(doc, |plan| plan.handover.requested = true).expect("edit");
}

fn committed(outcomes: &[Outcome]) -> bool {
    outcomes.iter().any(|o| matches!(o, Outcome::Committed))
}

fn refused(outcomes: &[Outcome]) -> Vec<&str> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Refused { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

/// An accepted change is committed (file and memory agree) and audited as a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_change_is_committed_and_audited() {
    let mut fx = Fixture::new().await;
    add_contact(&mut fx.device);
    let outcomes = fx.sync(&principal(true)).await;
    assert!(committed(&outcomes), "{outcomes:?}");
    let (heads, saved) = fx.memory().await;
    assert_eq!(heads, fx.device.get_heads());
    assert_eq!(saved, heads, "committed heads move with the commit");
    assert_eq!(stored(&fx.url, &fx.id).await.0, heads);
    let audit = fx.audit().await;
    assert!(audit.iter().any(|e| e.event.action == AuditAction::Write));
}

/// A commit stores, and keeps for the subscribers' messages, exactly the bytes
/// automerge gives for the new changes (the relay takes them from the device's
/// message): hashes, order and bytes of the chunk after the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_stores_automerges_bytes_of_the_new_changes() {
    let mut fx = Fixture::new().await;
    // Some history first, so that the device sends its next edits as changes (not as
    // the whole document) and they fit in a chunk after a compacted snapshot.
    for _ in 0..12 {
        add_contact(&mut fx.device);
    }
    assert!(committed(&fx.sync(&principal(true)).await));
    let before = fx.memory().await.1;
    for _ in 0..3 {
        add_contact(&mut fx.device);
    }
    assert!(committed(&fx.sync(&principal(true)).await));
    let state = fx.hub.lock(&fx.entry).await.expect("lock");
    let automerges = EncodedChanges::since(&state.doc, &before);
    assert_eq!(automerges.changes().len(), 3);
    // Set aside the earlier commit's hashes it also keeps (`follows` an empty set
    // keeps none).
    let kept = state.recent.clone().follows(EncodedChanges::default());
    assert_eq!(kept, automerges, "kept for the subscribers");
    drop(state);
    let stored = fx.stored_document().await;
    let chunk = automerges.concatenated();
    assert_eq!(
        stored.incremental_bytes,
        chunk.len() as u64,
        "{} chunks",
        stored.chunks
    );
    assert!(stored.bytes.ends_with(&chunk), "the stored chunk");
}

/// A refused change leaves the store and the relay's memory as they were (and is
/// audited as a denied write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_change_leaves_store_and_memory_unchanged() {
    let mut fx = Fixture::new().await;
    let seq_before = fx.store.central().last_change_seq().await.expect("seq");
    add_contact(&mut fx.device);
    let outcomes = fx.sync(&principal(false)).await;
    assert!(!committed(&outcomes), "{outcomes:?}");
    assert!(refused(&outcomes).contains(&"no-write"), "{outcomes:?}");
    assert_eq!(
        fx.memory().await,
        (fx.committed.clone(), fx.committed.clone())
    );
    assert_eq!(stored(&fx.url, &fx.id).await, (fx.committed.clone(), false));
    assert_eq!(
        fx.store.central().last_change_seq().await.expect("seq"),
        seq_before
    );
    let audit = fx.audit().await;
    assert!(audit
        .iter()
        .any(|e| e.event.action == AuditAction::Denied && e.event.detail == "write: no-write"));
    assert!(!audit.iter().any(|e| e.event.action == AuditAction::Write));
}

/// A write the store cannot take (its pool is closed) rolls memory back to the
/// committed heads: nothing uncommitted stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_rolls_memory_back_to_committed_heads() {
    let mut fx = Fixture::new().await;
    fx.store.close().await;
    add_contact(&mut fx.device);
    let outcomes = fx.sync(&principal(true)).await;
    assert!(!committed(&outcomes), "{outcomes:?}");
    assert!(refused(&outcomes).contains(&"store-failed"), "{outcomes:?}");
    assert_eq!(
        fx.memory().await,
        (fx.committed.clone(), fx.committed.clone())
    );
    assert_eq!(stored(&fx.url, &fx.id).await.0, fx.committed);
}

/// A hand-over request commits with its change: the catalog flag, the policy's flag
/// and the document move together, with a `hand_over` audit entry; then the
/// consulent's hand-over copy is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_commits_with_the_document() {
    let mut fx = Fixture::new().await;
    request_hand_over(&mut fx.device);
    let outcomes = fx.sync(&principal(true)).await;
    assert!(committed(&outcomes), "{outcomes:?}");
    assert!(fx.entry.handed_over());
    assert_eq!(stored(&fx.url, &fx.id).await, (fx.device.get_heads(), true));
    let audit = fx.audit().await;
    assert!(audit
        .iter()
        .any(|e| e.event.action == AuditAction::HandOver));
    // After the commit, the consulent's copy (issue 16, item 5).
    let copy = fx
        .store
        .documents()
        .handover_copy_of(&fx.id)
        .await
        .expect("copy of");
    assert!(copy.is_some(), "no hand-over copy");
}

/// A hand-over request whose commit fails leaves neither the flag nor the document
/// changed, in the store or in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_fails_with_the_document() {
    let mut fx = Fixture::new().await;
    fx.store.close().await;
    request_hand_over(&mut fx.device);
    let outcomes = fx.sync(&principal(true)).await;
    assert!(refused(&outcomes).contains(&"store-failed"), "{outcomes:?}");
    assert!(!fx.entry.handed_over());
    assert_eq!(
        fx.memory().await,
        (fx.committed.clone(), fx.committed.clone())
    );
    assert_eq!(stored(&fx.url, &fx.id).await, (fx.committed.clone(), false));
    let reopened = Store::open(&fx.url).await.expect("reopen");
    let copy = reopened
        .documents()
        .handover_copy_of(&fx.id)
        .await
        .expect("copy of");
    assert!(copy.is_none(), "a copy of a hand-over that did not commit");
}

/// A reader's changes that wait for a dependency it never sends are refused and
/// leave nothing in automerge's queue (before: accepted silently, bytes kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_changes_of_a_reader_are_refused_and_dropped() {
    let mut fx = Fixture::new().await;
    let outcomes = fx.send_orphans(&principal(false), 4, 64 * 1024).await;
    assert_eq!(refused(&outcomes), vec!["no-write"; 4], "{outcomes:?}");
    assert_eq!(
        fx.queued().await,
        0,
        "refused changes stayed queued in memory"
    );
    assert_eq!(
        fx.memory().await,
        (fx.committed.clone(), fx.committed.clone())
    );
}

/// A writer's queued changes count against `max_document_bytes`: beyond it they are
/// refused and dropped, so memory stays bounded by the document limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_changes_count_against_the_document_limit() {
    let mut fx = Fixture::with_limit(128 * 1024).await;
    let outcomes = fx.send_orphans(&principal(true), 8, 64 * 1024).await;
    assert!(
        refused(&outcomes).contains(&"queue-too-large"),
        "{outcomes:?}"
    );
    assert!(
        fx.queued().await <= 128 * 1024,
        "{} bytes queued",
        fx.queued().await
    );
    // A writer's complete sync still goes through afterwards.
    add_contact(&mut fx.device);
    let outcomes = fx.sync(&principal(true)).await;
    assert!(committed(&outcomes), "{outcomes:?}");
}

/// The size limit is on what a document takes once compacted: a commit that would
/// take its stored chunks past `max_document_bytes` compacts them into one snapshot
/// and goes through while that snapshot fits, and the store never holds more than the
/// limit. Only when the snapshot itself is too large is the change refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_past_the_limit_compacts_and_the_snapshot_decides() {
    const LIMIT: u64 = 6 * 1024;
    let mut fx = Fixture::with_limit(LIMIT).await;
    let mut compacted_at_the_limit = 0;
    for i in 0..200 {
        let before = fx.stored_document().await;
        let saved = fx.memory().await.1;
        add_contact(&mut fx.device);
        let outcomes = fx.sync(&principal(true)).await;
        if !committed(&outcomes) {
            assert_eq!(refused(&outcomes), ["document-too-large"], "edit {i}");
            assert!(
                fx.device.save().len() as u64 > LIMIT,
                "edit {i} refused while the whole document is {} bytes",
                fx.device.save().len()
            );
            assert!(compacted_at_the_limit > 0, "the limit never compacted");
            return;
        }
        let after = fx.stored_document().await;
        assert!(
            after.snapshot_bytes + after.incremental_bytes <= LIMIT,
            "edit {i}: {} + {} stored bytes",
            after.snapshot_bytes,
            after.incremental_bytes
        );
        // What the edit's chunk alone would have added to the stored bytes.
        let state = fx.hub.lock(&fx.entry).await.expect("lock");
        let chunk = EncodedChanges::since(&state.doc, &saved)
            .concatenated()
            .len() as u64;
        drop(state);
        if before.snapshot_bytes + before.incremental_bytes + chunk > LIMIT {
            assert_eq!(after.incremental_bytes, 0, "edit {i}: compacted");
            compacted_at_the_limit += 1;
        }
    }
    panic!("200 edits and the document never reached the limit");
}
