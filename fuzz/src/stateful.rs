//! The stateful fuzz target's driver: two peers, a sequence of messages, the server's
//! check, and the oracles "a refused message leaves no trace" and "the server's answer
//! made with changes encoded once is automerge's answer".
//!
//! Only automerge and sync_core are used, so `sync-core/tests/fuzz_regressions.rs`
//! includes this very file (`#[path]`) to replay the corpus in the ordinary test run.

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use sync_core::chunks;
use sync_core::engine::{EncodedChanges, Outgoing, PeerSync, SyncError};
use sync_core::guard::{self, Site};
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
/// Each answer of the server is made both ways, with the last commit's changes encoded
/// once (`try_generate_with`, as the server sends it) and by automerge alone
/// (`try_generate`), and the two must agree ([`check_spliced`]).
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
    // The last accepted commit's new changes, encoded once, as the server's hub keeps
    // them for every subscriber's next message (`DocState::recent`, which
    // `Hub::persist_change` sets to the changes the commit's message added, with the
    // hashes of the commits just before: `EncodedChanges::follows`).
    let mut recent = EncodedChanges::default();
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
            // The server answers the peer; the device takes the answer. Made both ways
            // from the same session and checked against each other; bit 4 picks the
            // one the session goes on from and the device takes: automerge's (clear)
            // or the server's, with the encoded changes (set).
            5 => {
                let before = peer.server_engine.session(&id).cloned();
                let mut spliced = peer.server_engine.clone();
                let ours = spliced.try_generate_with(id, &server, &recent);
                let mut raw_state = before.clone().unwrap_or_default();
                let raw = guard::run(Site::Generate, || {
                    server.generate_sync_message(&mut raw_state)
                });
                let theirs = peer.server_engine.try_generate(id, &server);
                // `try_generate` is automerge's generate, except where it tells alone
                // that there is nothing to say: the same answer and session.
                if let Ok(raw) = raw {
                    let said = theirs.as_ref().ok().and_then(|o| o.as_ref());
                    assert_eq!(
                        said.map(|o| &o.data),
                        raw.map(|m| m.encode()).as_ref(),
                        "try_generate differs from automerge's generate"
                    );
                    assert_eq!(peer.server_engine.session(&id), Some(&raw_state));
                }
                check_spliced(
                    id,
                    &server,
                    &recent,
                    before.unwrap_or_default(),
                    (&theirs, &peer.server_engine),
                    (&ours, &spliced),
                    (&peer.device, &peer.device_engine),
                );
                let answer = if op & 0x10 != 0 {
                    peer.server_engine = spliced;
                    ours
                } else {
                    theirs
                };
                if let Ok(Some(m)) = answer {
                    let _ = peer.device_engine.receive(id, &mut peer.device, &m.data);
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
        // What automerge's own receive makes of the session and the heads (the engine
        // takes most messages without it, `engine::receive_here`).
        let automerges = automerge::sync::Message::decode(&payload)
            .ok()
            .and_then(|m| {
                let (mut doc, mut session) = (
                    server.clone(),
                    peer.server_engine.session(&id).cloned().unwrap_or_default(),
                );
                guard::run(Site::Receive, || doc.receive_sync_message(&mut session, m))
                    .ok()?
                    .ok()
                    .map(|()| (session, doc.get_heads()))
            });
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
                    schema::validate_changes(
                        doc,
                        &applied.heads_before,
                        applied.new_changes(doc),
                        partition.kind,
                    )
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
            Ok(applied) => {
                if let Some((session, heads)) = automerges {
                    assert_eq!(
                        peer.server_engine.session(&id),
                        Some(&session),
                        "an accepted message moved the session otherwise than automerge"
                    );
                    assert_eq!(server.get_heads(), heads, "other heads than automerge's");
                }
                schema::validate(&server).expect("an accepted document validates");
                if applied.changed() {
                    // The changes handed out (mostly the message's own) are automerge's.
                    let handed_out = EncodedChanges::applied(&applied, &server);
                    assert_eq!(
                        handed_out,
                        EncodedChanges::since(&server, &applied.heads_before),
                        "the changes the message added are not get_changes(heads before)"
                    );
                    // As the hub keeps them: with the earlier commits that led up.
                    recent = handed_out.follows(recent);
                }
            }
        }
    }
}

/// A generated answer as the oracle reads it: the result and the engine after it.
type Answer<'a> = (&'a Result<Option<Outgoing>, SyncError>, &'a PeerSync);

/// The oracle for `PeerSync::try_generate_with`: from the same session `before`, the
/// server's answer with the encoded changes (`ours`) against automerge's own
/// (`theirs`, `try_generate`). Both say something or both say nothing; a panic in
/// automerge is an error on both paths and leaves a fresh session. A message has the
/// same heads, need, have, flags and version, carries the same changes (each once) and
/// leaves the same session, so the device taking either ends at the same heads.
///
/// The one documented difference: where automerge sends a version 2 peer the whole
/// document, ours carries changes. Those must be the changes, and the session the one,
/// that automerge makes when it may not send the whole document (the peer read as
/// version 1 only); the device taking ours ends where it would with those. That can be
/// short of the whole document's heads: a change the device's bloom filter claims
/// wrongly (about 1 in 100) is not sent, and the device asks for it next. So the device
/// must reach the same heads once it has synced on from either message.
fn check_spliced(
    id: DocumentId,
    server: &Automerge,
    encoded: &EncodedChanges,
    before: sync::State,
    theirs: Answer<'_>,
    ours: Answer<'_>,
    (device, device_engine): (&Automerge, &PeerSync),
) {
    let (theirs_state, ours_state) = (theirs.1.session(&id), ours.1.session(&id));
    let (a, b) = match (theirs.0, ours.0) {
        (Ok(Some(a)), Ok(Some(b))) => (a, b),
        (Ok(None), Ok(None)) => {
            assert_eq!(
                theirs_state, ours_state,
                "nothing to say, yet the sessions differ"
            );
            return;
        }
        (Err(SyncError::Panicked(_)), Err(SyncError::Panicked(_))) => {
            assert_eq!(
                ours_state,
                Some(&sync::State::new()),
                "a panic in generate leaves a fresh session"
            );
            assert_eq!(theirs_state, ours_state, "a panic left different sessions");
            return;
        }
        (a, b) => panic!(
            "try_generate gave {}, try_generate_with {}",
            outcome(a),
            outcome(b)
        ),
    };
    let ma = sync::Message::decode(&a.data).expect("automerge's message decodes");
    let mb = sync::Message::decode(&b.data).expect("the spliced message decodes");
    assert_eq!(
        (&ma.heads, &ma.need, &ma.have, &ma.flags, &ma.version),
        (&mb.heads, &mb.need, &mb.have, &mb.flags, &mb.version),
        "the spliced message's heads, need, have, flags or version differ"
    );
    assert_eq!(
        a.carries_changes, b.carries_changes,
        "one message carries changes, the other none"
    );
    match (is_whole_document(&ma), is_whole_document(&mb)) {
        (false, false) => {
            assert_eq!(
                change_hashes(&ma).expect("automerge's changes decode"),
                change_hashes(&mb).expect("the spliced changes decode"),
                "the spliced message carries other changes than automerge's"
            );
            assert_eq!(
                theirs_state, ours_state,
                "the spliced message left another session than automerge's"
            );
        }
        (true, true) => {
            assert_eq!(ma.changes, mb.changes, "two different whole documents");
            assert_eq!(
                theirs_state, ours_state,
                "the whole document left another session than automerge's"
            );
        }
        (false, true) => panic!("the spliced message carries the whole document, automerge's not"),
        (true, false) => {
            // The documented difference. automerge's choice, but for the format.
            let mut reference = before.clone();
            if let Some(caps) = reference.their_capabilities.as_mut() {
                caps.retain(|c| *c != sync::Capability::MessageV2);
            }
            let mr = guard::run(Site::Generate, || {
                server.generate_sync_message(&mut reference)
            })
            .expect("automerge generated once from this session without a panic")
            .expect("automerge said something from this session");
            reference.their_capabilities = before.their_capabilities.clone();
            assert_eq!(
                change_hashes(&mr).expect("automerge's changes decode"),
                change_hashes(&mb).expect("the spliced changes decode"),
                "the spliced message's changes are not those automerge sends as changes"
            );
            assert_eq!(
                ours_state,
                Some(&reference),
                "the spliced message's session is not automerge's when it sends changes"
            );
            // Besides the hashes marked sent (all, for the whole document), the same.
            let strip = |state: Option<&sync::State>| {
                state.cloned().map(|s| sync::State {
                    sent_hashes: Default::default(),
                    ..s
                })
            };
            assert_eq!(
                strip(theirs_state),
                strip(ours_state),
                "the sessions differ in more than the hashes marked sent"
            );
            assert_eq!(
                take(device, device_engine, id, &mr.encode()),
                take(device, device_engine, id, &b.data),
                "the device ends elsewhere with the spliced changes than with automerge's"
            );
            let sync_on = |data: &[u8], engine: &PeerSync, encoded: &EncodedChanges| {
                let (mut doc, mut doc_engine) = (device.clone(), device_engine.clone());
                let _ = doc_engine.receive(id, &mut doc, data);
                sync_until_quiet(
                    id,
                    (doc, doc_engine),
                    (server.clone(), engine.clone()),
                    encoded,
                )
            };
            assert_eq!(
                sync_on(&a.data, theirs.1, &EncodedChanges::default()),
                sync_on(&b.data, ours.1, encoded),
                "the device syncs on to other heads from the spliced message"
            );
            return;
        }
    }
    assert_eq!(
        take(device, device_engine, id, &a.data),
        take(device, device_engine, id, &b.data),
        "the device ends elsewhere with the spliced message"
    );
}

/// Syncs the device with the server until neither has anything to say (at most 16
/// rounds), the server answering as it does, with `encoded`; the device's heads then.
fn sync_until_quiet(
    id: DocumentId,
    (mut device, mut device_engine): (Automerge, PeerSync),
    (mut server, mut server_engine): (Automerge, PeerSync),
    encoded: &EncodedChanges,
) -> Vec<ChangeHash> {
    for _ in 0..16 {
        let up = device_engine.generate(id, &device);
        let down = server_engine
            .try_generate_with(id, &server, encoded)
            .ok()
            .flatten();
        if up.is_none() && down.is_none() {
            break;
        }
        if let Some(m) = up {
            let _ = server_engine.receive(id, &mut server, &m);
        }
        if let Some(m) = down {
            let _ = device_engine.receive(id, &mut device, &m.data);
        }
    }
    device.get_heads()
}

/// The device's outcome of taking `data` on a copy of it: taken or not, and its heads.
fn take(
    device: &Automerge,
    device_engine: &PeerSync,
    id: DocumentId,
    data: &[u8],
) -> (bool, Vec<ChangeHash>) {
    let (mut doc, mut engine) = (device.clone(), device_engine.clone());
    let taken = engine.receive(id, &mut doc, data).is_ok();
    (taken, doc.get_heads())
}

/// A generate result in a few words, for a failed assertion.
fn outcome(result: &Result<Option<Outgoing>, SyncError>) -> String {
    match result {
        Ok(Some(out)) => format!("a message of {} bytes", out.data.len()),
        Ok(None) => "nothing".to_string(),
        Err(e) => format!("an error ({e})"),
    }
}

/// Does the message carry the whole document (automerge's "send everything" answer)?
fn is_whole_document(message: &sync::Message) -> bool {
    message
        .changes
        .iter()
        .next()
        .is_some_and(chunks::is_document)
}

/// The hashes of the changes a message carries, sorted, each as often as it is carried:
/// every change chunk decoded by automerge (`Change::try_from`, which checks the
/// checksum). Version 2 carries them as one concatenation, split here at the chunks'
/// headers. None when something is not a change.
fn change_hashes(message: &sync::Message) -> Option<Vec<ChangeHash>> {
    let mut hashes = Vec::new();
    for chunk in message.changes.iter() {
        for change in chunks::split(chunk).ok()? {
            hashes.push(Change::try_from(change).ok()?.hash());
        }
    }
    hashes.sort();
    Some(hashes)
}
