//! Criterion micro-benchmarks of the relay's hot paths, each beside the floor it cannot
//! beat, so the relay's overhead reads as a ratio:
//!
//! - `codec`: protocol v1 encode and decode of a one-change `sync` message, and the
//!   encoding of the `remote-heads-changed` that follows it to every subscriber.
//! - `floor`: automerge's own `receive_sync_message` + `generate_sync_message` for one
//!   change, on a plan with 150 changes of history (the "assen" lifetime).
//! - `receive_and_store`: the same change through `PeerSync::receive_checked` with the
//!   server's check (partition, schema) and `Hub::persist_change` into a real SQLite
//!   file, with the changes the receive handed out, as `commit::apply` does.
//! - `check`: the relay's acceptance check without the store (`validate_changes`), for a
//!   new contact moment and for an edit of one field of an existing one
//!   (`receive_checked_edit`), and the whole-document `validate` it replaced.
//! - `avoided`: what the relay no longer asks automerge per relayed change (issue 18):
//!   `get_changes` of the new change (was twice per commit) and `get_changes_meta` of
//!   a subscriber's last sync (was once per subscriber's answer).
//! - `fan_out`: after one change, generating the sync message for N subscribed peers
//!   from the change encoded once (`try_generate_with`, as the relay does);
//!   and `fan_out/answer`, a subscriber's answer to it taken, with nothing to say back.
//! - `load`: a document loaded from the store (catalog, key, chunks, decrypt, load).
//!
//! Run with `cargo bench -p buurtsync-server --bench relay`; figures go to
//! docs/performance.md.

use std::hint::black_box;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use buurtsync_server::hub::{ChangeCommit, Hub};
use buurtsync_server::store::{now, CatalogEntry, Store};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use sync_core::engine::{EncodedChanges, PeerSync};
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::{self, DocumentId, Message};
use sync_core::schema::{self, ContactKind, ContactMoment, Date, Plan};

const HISTORY: usize = 150;

fn wijk() -> WijkId {
    WijkId::new("assen-noord").expect("wijk")
}

/// A plan with `HISTORY` changes: one contact moment per change, as home visits add.
fn plan() -> Automerge {
    let mut doc = schema::new_document(&Plan::new(wijk(), "huishouden-00001")).expect("plan");
    for i in 0..HISTORY {
        add_contact(&mut doc, i);
    }
    doc
}

fn add_contact(doc: &mut Automerge, i: usize) {
    let date = Date::from_ymd(2028, (i % 12) as u8 + 1, (i % 28) as u8 + 1).expect("date");
    schema::update::<Plan>(doc, |p| {
        p.contacts.push(ContactMoment::new(
            date,
            ContactKind::Huisbezoek,
            "Huisbezoek",
        ))
    })
    .expect("edit");
}

/// A writer and the relay's copy in a steady state, and the writer's next one-change
/// sync message as bytes.
struct Pair {
    relay: Automerge,
    relay_state: sync::State,
    message: Vec<u8>,
}

fn steady_pair() -> Pair {
    steady_pair_with(|writer| add_contact(writer, 7))
}

/// [`steady_pair`] whose change is `edit` on the writer's plan.
fn steady_pair_with(edit: impl FnOnce(&mut Automerge)) -> Pair {
    let mut writer = plan();
    let mut relay = writer.fork();
    let (mut ws, mut rs) = (sync::State::new(), sync::State::new());
    settle(&mut writer, &mut ws, &mut relay, &mut rs);
    edit(&mut writer);
    let message = writer
        .generate_sync_message(&mut ws)
        .expect("a message")
        .encode();
    Pair {
        relay,
        relay_state: rs,
        message,
    }
}

fn settle(a: &mut Automerge, sa: &mut sync::State, b: &mut Automerge, sb: &mut sync::State) {
    for _ in 0..20 {
        let (ma, mb) = (a.generate_sync_message(sa), b.generate_sync_message(sb));
        if ma.is_none() && mb.is_none() {
            return;
        }
        if let Some(m) = ma {
            b.receive_sync_message(sb, m).expect("receive");
        }
        if let Some(m) = mb {
            a.receive_sync_message(sa, m).expect("receive");
        }
    }
}

fn codec(c: &mut Criterion) {
    let pair = steady_pair();
    let msg = Message::Sync {
        sender_id: "prof-1-1".into(),
        target_id: "buurtsync-0123456789ab".into(),
        document_id: DocumentId::random(),
        data: pair.message.clone(),
    };
    let bytes = protocol::encode(&msg);
    // What the relay sends each subscriber after a commit, beside the sync message: the
    // store's storageId, one head, a millisecond clock (written as float64).
    let heads = Message::RemoteHeadsChanged {
        sender_id: "buurtsync-0123456789ab".into(),
        target_id: "prof-1-1".into(),
        document_id: DocumentId::random(),
        new_heads: [(
            "buurtsync-store-0123456789ab".to_string(),
            protocol::HeadsAtTime {
                heads: protocol::encode_heads(&pair.relay.get_heads()),
                timestamp: 1_800_000_000_123,
            },
        )]
        .into_iter()
        .collect(),
    };
    let mut g = c.benchmark_group("codec");
    g.bench_function("encode_sync", |b| {
        b.iter(|| protocol::encode(black_box(&msg)))
    });
    g.bench_function("encode_remote_heads_changed", |b| {
        b.iter(|| protocol::encode(black_box(&heads)))
    });
    g.bench_function("decode_sync", |b| {
        b.iter(|| protocol::decode(black_box(&bytes)).expect("decode"))
    });
    g.finish();
}

fn floor(c: &mut Criterion) {
    let pair = steady_pair();
    c.bench_function("floor/receive_and_generate", |b| {
        b.iter_batched(
            || (pair.relay.clone(), pair.relay_state.clone()),
            |(mut doc, mut state)| {
                let m = sync::Message::decode(&pair.message).expect("decode");
                doc.receive_sync_message(&mut state, m).expect("receive");
                doc.generate_sync_message(&mut state)
            },
            BatchSize::SmallInput,
        )
    });
}

/// The server's acceptance check on its own: receive through `PeerSync::receive_checked`
/// with the check the relay runs (`validate_changes`, which reads meta, then the
/// partition and whether `handover` was written), no store; and
/// the whole-document `validate` alone, which the relay ran per change before. Against
/// `floor`, this is what checking a change costs beyond automerge.
fn check(c: &mut Criterion) {
    let mut g = c.benchmark_group("check");
    // A new contact moment (a new item: read whole), and the most common small edit:
    // one field of an existing item (the last contact's kind).
    let edit = steady_pair_with(|writer| {
        schema::update::<Plan>(writer, |p| {
            if let Some(last) = p.contacts.last_mut() {
                last.kind = ContactKind::Telefoon;
            }
        })
        .expect("edit");
    });
    for (name, pair) in [
        ("receive_checked", steady_pair()),
        ("receive_checked_edit", edit),
    ] {
        let id = DocumentId::random();
        let resumed = pair.relay_state.encode();
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut engine = PeerSync::new();
                    engine.resume(id, &resumed);
                    (engine, pair.relay.clone())
                },
                |(mut engine, mut doc)| {
                    let applied = engine
                        .receive_checked(id, &mut doc, &pair.message, |doc, applied| {
                            let checked = schema::validate_changes(
                                doc,
                                &applied.heads_before,
                                applied.new_changes(doc),
                                DocumentKind::Plan,
                            )?;
                            black_box(checked.meta.as_ref().map(|meta| meta.partition()));
                            black_box(checked.may_have_changed("handover"));
                            Ok::<_, schema::SchemaError>(())
                        })
                        .expect("applied");
                    assert!(applied.changed());
                    engine.generate(id, &doc)
                },
                BatchSize::SmallInput,
            )
        });
    }
    let pair = steady_pair();
    g.bench_function("validate", |b| {
        b.iter(|| schema::validate(black_box(&pair.relay)).expect("valid"))
    });
    g.finish();
}

/// What the relay no longer asks automerge per relayed change, on the relay's copy
/// right after the change: `get_changes` of it (validation and the chunk each asked
/// once; now the message's own bytes are taken) and `get_changes_meta` of the heads
/// before it (a subscriber's last sync; each answer asked once, now only when the
/// cached changes are not the newest).
fn avoided(c: &mut Criterion) {
    let pair = steady_pair();
    let mut doc = pair.relay.clone();
    let before = doc.get_heads();
    let mut state = pair.relay_state.clone();
    let message = sync::Message::decode(&pair.message).expect("decode");
    doc.receive_sync_message(&mut state, message)
        .expect("receive");
    assert_eq!(doc.get_changes(&before).len(), 1);
    let mut g = c.benchmark_group("avoided");
    g.bench_function("get_changes", |b| {
        b.iter(|| doc.get_changes(black_box(&before)))
    });
    g.bench_function("get_changes_meta", |b| {
        b.iter(|| doc.get_changes_meta(black_box(&before)).len())
    });
    g.finish();
}

/// The store and a hub holding one plan, the relay's copy in a steady state with the
/// writer.
struct Served {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    store: Store,
    hub: Hub,
    id: DocumentId,
}

fn served() -> (Served, Pair) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.sqlite3").display());
    let pair = steady_pair();
    let id = DocumentId::random();
    let (store, hub) = rt.block_on(async {
        let store = Store::open(&url).await.expect("store");
        store
            .accounts()
            .add_wijk(&wijk(), "Noord")
            .await
            .expect("wijk");
        let hub = Hub::new(store.clone(), 1, u64::MAX);
        let catalog = CatalogEntry {
            id,
            partition: Partition {
                kind: DocumentKind::Plan,
                wijk: wijk(),
            },
            created_at: now(),
            created_by: "bench".into(),
            handover_of: None,
        };
        hub.create(catalog, pair.relay.clone(), ("bench", "bench"))
            .await
            .expect("create");
        (store, hub)
    });
    (
        Served {
            rt,
            _dir: dir,
            store,
            hub,
            id,
        },
        pair,
    )
}

fn receive_and_store(c: &mut Criterion) {
    let (s, pair) = served();
    let entry =
        s.rt.block_on(s.hub.get(s.id))
            .expect("get")
            .expect("present");
    let resumed = pair.relay_state.encode();
    c.bench_function("receive_and_store/one_change", |b| {
        b.iter_batched(
            || {
                // Each iteration applies the same change to the committed copy: roll
                // the in-memory document back so the change is new again.
                let mut engine = PeerSync::new();
                engine.resume(s.id, &resumed);
                engine
            },
            |mut engine| {
                s.rt.block_on(async {
                    let mut state = entry.state.lock().await;
                    let before = state.doc.get_heads();
                    let applied = engine
                        .receive_checked(s.id, &mut state.doc, &pair.message, |doc, applied| {
                            schema::validate_changes(
                                doc,
                                &applied.heads_before,
                                applied.new_changes(doc),
                                DocumentKind::Plan,
                            )
                            .map(|_| ())
                        })
                        .expect("applied");
                    assert!(applied.changed());
                    let commit = ChangeCommit {
                        applied: Some(&applied),
                        ..ChangeCommit::default()
                    };
                    s.hub
                        .persist_change(&s.id, &mut state, commit)
                        .await
                        .expect("persist");
                    // Undo in memory only, so the next iteration stores the change again.
                    state.doc = state.doc.fork_at(&before).expect("fork");
                    state.saved_heads = before;
                })
            },
            BatchSize::SmallInput,
        )
    });
    drop(entry);
    drop(s.store);
}

/// A subscriber of `relay` (a copy of it) and the relay's session with it, synced.
fn subscriber(relay: &mut Automerge, id: DocumentId) -> (PeerSync, Automerge, sync::State) {
    let (mut engine, mut peer, mut ps) = (PeerSync::new(), relay.fork(), sync::State::new());
    talk(relay, id, &mut engine, &mut peer, &mut ps);
    (engine, peer, ps)
}

/// The relay and a subscriber sync until both are quiet.
fn talk(
    relay: &mut Automerge,
    id: DocumentId,
    engine: &mut PeerSync,
    peer: &mut Automerge,
    ps: &mut sync::State,
) {
    for _ in 0..10 {
        let from_relay = engine.generate(id, relay);
        let from_peer = peer.generate_sync_message(ps);
        if from_relay.is_none() && from_peer.is_none() {
            return;
        }
        if let Some(m) = from_relay {
            let m = sync::Message::decode(&m).expect("m");
            peer.receive_sync_message(ps, m).expect("peer receive");
        }
        if let Some(m) = from_peer {
            engine
                .receive(id, relay, &m.encode())
                .expect("relay receive");
        }
    }
}

fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan_out");
    for n in [1usize, 10, 100] {
        let mut relay = plan();
        let id = DocumentId::random();
        // n peers in the live phase's steady state: each took the relay's last change
        // and answered it, so its last sync is the relay's heads.
        let mut peers: Vec<_> = (0..n).map(|_| subscriber(&mut relay, id)).collect();
        add_contact(&mut relay, 8);
        for (engine, peer, ps) in &mut peers {
            talk(&mut relay, id, engine, peer, ps);
        }
        let sessions: Vec<PeerSync> = peers.into_iter().map(|(engine, ..)| engine).collect();
        let mut changed = relay.clone();
        let mut tx = changed.transaction();
        tx.put(ROOT, "status", "intake").expect("put");
        tx.commit();
        // Encoded once for every subscriber, as the relay keeps a commit's changes.
        let encoded = EncodedChanges::since(&changed, &relay.get_heads());
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || sessions.clone(),
                |mut sessions| {
                    let mut sent = 0usize;
                    for engine in &mut sessions {
                        sent += engine
                            .try_generate_with(id, &changed, &encoded)
                            .expect("generated")
                            .map_or(0, |m| m.data.len());
                    }
                    sent
                },
                BatchSize::SmallInput,
            )
        });
    }
    // A subscriber's answer to the change: the relay takes it and has nothing to say
    // (8 of the 9 messages the relay takes per relayed change in the live phase).
    let mut relay = plan();
    let id = DocumentId::random();
    let (mut engine, mut subscriber, mut ss) = subscriber(&mut relay, id);
    add_contact(&mut relay, 9);
    let change = engine.generate(id, &relay).expect("the change");
    let change = sync::Message::decode(&change).expect("m");
    subscriber
        .receive_sync_message(&mut ss, change)
        .expect("receive");
    let answer = subscriber
        .generate_sync_message(&mut ss)
        .expect("an answer")
        .encode();
    g.bench_function("answer", |b| {
        b.iter_batched(
            || (engine.clone(), relay.clone()),
            |(mut engine, mut relay)| {
                engine.receive(id, &mut relay, &answer).expect("receive");
                let reply = engine.generate(id, &relay);
                assert!(reply.is_none(), "nothing to say to a subscriber in sync");
                (engine, relay)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn load(c: &mut Criterion) {
    let (s, _pair) = served();
    c.bench_function("load/plan_150_changes", |b| {
        b.iter(|| {
            s.rt.block_on(async {
                let stored = s
                    .store
                    .documents()
                    .load_document(&s.id)
                    .await
                    .expect("load")
                    .expect("there");
                Automerge::load(&stored.bytes).expect("automerge load")
            })
        })
    });
}

criterion_group!(
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = codec, floor, check, avoided, receive_and_store, fan_out, load
);
criterion_main!(benches);
