//! The stateful fuzz target's driver: two peers, a sequence of messages, the server's
//! check, and the oracle "a refused message leaves no trace".
//!
//! Only automerge and sync_core are used, so `sync-core/tests/fuzz_regressions.rs`
//! includes this very file (`#[path]`) to replay the corpus in the ordinary test run.

use automerge::{Automerge, ReadDoc};
use sync_core::engine::PeerSync;
use sync_core::partition::{Partition, WijkId};
use sync_core::protocol::{self, DocumentId};
use sync_core::schema::{self, Plan};

/// The stored plan both peers start from (the `apply` target's, written by `seed-corpus`).
fn seed_document() -> Automerge {
    Automerge::load(include_bytes!("../seed_plan.automerge")).expect("seed plan loads")
}

/// Reads the fuzzer's bytes as a script of small decisions.
struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// Up to `max` bytes, their count chosen by the script.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.byte().unwrap_or(0))
            .min(max)
            .min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken.to_vec()
    }
}

/// One remote peer as the server sees it: its device's copy and engine, and the
/// server's engine for it. `writer` says whether its grants let it write the plan.
struct Peer {
    device: Automerge,
    device_engine: PeerSync,
    server_engine: PeerSync,
    writer: bool,
    edits: u32,
}

/// What a refusal must leave untouched: heads, the changes waiting in automerge's queue
/// (their missing dependencies), and the peer's persistable session.
#[derive(PartialEq, Eq, Debug)]
struct Trace {
    heads: Vec<automerge::ChangeHash>,
    queued_missing: Vec<automerge::ChangeHash>,
    session: Option<Vec<u8>>,
}

fn trace(doc: &Automerge, engine: &PeerSync, id: &DocumentId) -> Trace {
    let mut queued_missing = doc.get_missing_deps(&[]);
    queued_missing.sort();
    Trace {
        heads: doc.get_heads(),
        queued_missing,
        session: engine.persistable_state(id),
    }
}

/// Is `hash` waiting in `doc`'s queue (neither applied nor missing)?
fn queued(doc: &Automerge, hash: &automerge::ChangeHash) -> bool {
    doc.get_change_by_hash(hash).is_none() && !doc.get_missing_deps(&[*hash]).contains(hash)
}

/// The stateful target: two peers (a writer and a reader of the plan) drive a sequence
/// of messages through the server's check — good and bad edits, mutated and reordered
/// sync messages, creations, ephemeral and remote-subscription frames. The oracle: a
/// refused message leaves no trace, in the document, in automerge's queue of changes
/// waiting for dependencies, or in the peer's sync session; what is accepted validates.
pub fn stateful(data: &[u8]) {
    sync_core::guard::install_panic_hook();
    let mut script = Script { data };
    let partition = Partition {
        wijk: WijkId::new("noord").expect("wijk"),
        kind: sync_core::partition::DocumentKind::Plan,
    };
    let id = DocumentId::from_bytes([7; 16]);
    let new_id = DocumentId::from_bytes([8; 16]);
    let mut server = seed_document();
    let mut pending = Automerge::new();
    let mut peers = [true, false].map(|writer| Peer {
        device: server.fork(),
        device_engine: PeerSync::new(),
        server_engine: PeerSync::new(),
        writer,
        edits: 0,
    });
    for _ in 0..64 {
        let Some(op) = script.byte() else { break };
        let peer = &mut peers[usize::from(op >> 7)];
        let payload: Option<Vec<u8>> = match op & 0x0f {
            // A schema-valid edit, then the device's next sync message.
            0 => {
                peer.edits += 1;
                let text = format!("doel {}", peer.edits);
                let _ = schema::update::<Plan>(&mut peer.device, |p| {
                    p.goals
                        .push(schema::Goal::new(schema::Leefdomein::Financien, &text));
                });
                peer.device_engine.generate(id, &peer.device)
            }
            // A raw edit the schema or the partition rule refuses.
            1 => {
                use automerge::transaction::Transactable;
                let key = script.byte().unwrap_or(0);
                let mut tx = peer.device.transaction();
                let _ = match key % 3 {
                    0 => tx.put(automerge::ROOT, "unknown", "x").map(|_| ()),
                    1 => tx.put(automerge::ROOT, "goals", 7).map(|_| ()),
                    _ => match tx.get(automerge::ROOT, "meta") {
                        Ok(Some((_, meta))) => tx.put(meta, "wijk", "zuid").map(|_| ()),
                        _ => Ok(()),
                    },
                };
                tx.commit();
                peer.device_engine.generate(id, &peer.device)
            }
            // The device's next message with bytes overwritten by the script.
            2 => peer.device_engine.generate(id, &peer.device).map(|mut m| {
                for _ in 0..script.byte().unwrap_or(0) % 4 {
                    let (at, b) = (script.byte().unwrap_or(0), script.byte().unwrap_or(0));
                    if !m.is_empty() {
                        let i = usize::from(at) % m.len();
                        m[i] = b;
                    }
                }
                m
            }),
            // Only the device's latest change, without its dependencies: out of order.
            3 => {
                let changes = peer.device.get_changes(&[]);
                changes.last().map(|c| {
                    automerge::sync::Message {
                        heads: peer.device.get_heads(),
                        need: Vec::new(),
                        have: Vec::new(),
                        changes: vec![c.raw_bytes().to_vec()].into(),
                        flags: None,
                        version: automerge::sync::MessageVersion::V1,
                    }
                    .encode()
                })
            }
            // Bytes straight from the script.
            4 => Some(script.bytes(512)),
            // The server answers the peer; the device takes the answer.
            5 => {
                if let Some(m) = peer.server_engine.generate(id, &server) {
                    let _ = peer.device_engine.receive(id, &mut peer.device, &m);
                }
                None
            }
            // A creation: the device's plan under a new id (the create path's check).
            6 => {
                let bytes = script.bytes(256);
                let mut check_engine = peer.server_engine.clone();
                let before = trace(&pending, &check_engine, &new_id);
                let may_create = peer.writer;
                let result =
                    check_engine.receive_checked(new_id, &mut pending, &bytes, |doc, _| {
                        let meta = schema::meta::read_meta(doc).map_err(|e| e.to_string())?;
                        if !may_create || meta.partition() != partition {
                            return Err("not permitted".to_string());
                        }
                        schema::validate(doc).map(|_| ()).map_err(|e| e.to_string())
                    });
                if result.is_err() {
                    assert_eq!(
                        trace(&pending, &check_engine, &new_id),
                        before,
                        "a refused creation left a trace"
                    );
                }
                None
            }
            // Ephemeral and remote-subscription frames: decoded, never touching documents.
            7 => {
                let before = trace(&server, &peer.server_engine, &id);
                let _ = protocol::decode(&script.bytes(256));
                assert_eq!(trace(&server, &peer.server_engine, &id), before);
                None
            }
            _ => None,
        };
        let Some(payload) = payload else { continue };
        let writer = peer.writer;
        let before = trace(&server, &peer.server_engine, &id);
        let carried: Vec<automerge::ChangeHash> = automerge::sync::Message::decode(&payload)
            .map(|m| {
                m.changes
                    .iter()
                    .filter_map(|c| automerge::Change::try_from(c).ok())
                    .map(|c| c.hash())
                    .collect()
            })
            .unwrap_or_default();
        let was_queued: Vec<bool> = carried.iter().map(|h| queued(&server, h)).collect();
        let result =
            peer.server_engine
                .receive_checked(id, &mut server, &payload, |doc, applied| {
                    if !writer {
                        return Err("no write".to_string());
                    }
                    let meta = schema::meta::read_meta(doc).map_err(|e| e.to_string())?;
                    if meta.partition() != partition {
                        return Err("meta changed".to_string());
                    }
                    schema::validate_changes(doc, &applied.heads_before)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                });
        match result {
            Err(_) => {
                let after = trace(&server, &peer.server_engine, &id);
                assert_eq!(
                    after.heads, before.heads,
                    "a refused message moved the heads"
                );
                assert_eq!(
                    after.session, before.session,
                    "a refused message moved the session"
                );
                assert!(
                    after
                        .queued_missing
                        .iter()
                        .all(|h| before.queued_missing.contains(h)),
                    "a refused message queued changes with new missing dependencies"
                );
                for (hash, was) in carried.iter().zip(was_queued) {
                    assert!(
                        was || !queued(&server, hash),
                        "a refused message left its change {hash} in the queue"
                    );
                }
            }
            Ok(_) => {
                schema::validate(&server).expect("an accepted document validates");
            }
        }
    }
}
