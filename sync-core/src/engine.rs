//! The sync engine: automerge sync sessions between this side and ONE remote peer, for
//! many documents.
//!
//! It holds a `sync::State` per document and turns incoming `sync`/`request` payloads
//! into applied changes, and documents into outgoing payloads. It owns no documents and
//! does no I/O: the caller lends it each document (the server from its shared hub, a
//! client from its local store), so the same code serves both sides. A received
//! message can be applied under a check (partition, schema, permission) and is rolled
//! back as a whole — document and sync state — when the check refuses it.
//!
//! Every automerge call here (and the caller's check, which reads the document through
//! autosurgeon) runs behind [`crate::guard`]: a panic in the library on a hostile payload
//! becomes [`SyncError::Panicked`] and is rolled back like any other refusal.
//!
//! The changes a message added are handed out once ([`Applied::new_changes`]): the
//! relay validates them, stores them as the incremental chunk and sends them to every
//! subscriber, and automerge 0.12 encodes a change again from its op set each time it
//! is asked for one. Usually they are the message's own change chunks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::OnceLock;

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ReadDoc, SaveOptions};

use crate::chunks;
use crate::guard::{self, Panicked, Site};
use crate::protocol::{DocumentId, Message};

/// Why a sync payload could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("invalid automerge sync message: {0}")]
    InvalidMessage(String),
    #[error("automerge could not apply the sync message: {0}")]
    Apply(String),
    /// automerge or autosurgeon panicked on the payload; the document and the session
    /// were restored. The server counts these (`buurtsync_panics_caught_total`).
    #[error("the sync message could not be processed: {0}")]
    Panicked(#[from] Panicked),
    /// More operations than a document may hold ([`PeerSync::with_max_ops`]): the
    /// message's chunks declare more (counted before automerge parses them,
    /// [`chunks::screen`]), or the document and automerge's queue would hold more after
    /// it. Nothing was kept.
    #[error("{0}")]
    TooManyOps(String),
}

impl SyncError {
    /// A label for logs and metrics (the server's `buurtsync_rejected_total`).
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::TooManyOps(_) => "too-many-ops",
            SyncError::InvalidMessage(_) | SyncError::Apply(_) | SyncError::Panicked(_) => {
                "invalid-sync"
            }
        }
    }
}

/// A generated sync message, encoded, and whether it hands over changes (document
/// content: the server audits that as a read) or is only bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub data: Vec<u8>,
    pub carries_changes: bool,
}

/// A payload applied under a check: either the check's refusal or a sync error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected<E> {
    Sync(SyncError),
    Check(E),
}

/// What a received payload did to the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub heads_before: Vec<ChangeHash>,
    pub heads_after: Vec<ChangeHash>,
    /// Bytes of changes automerge holds back after this message because a dependency
    /// is missing ([`queued_bytes`]); they are part of the document's memory.
    pub queued_bytes: u64,
    /// The queue's bytes before this message: `queued_bytes - queued_before` is what
    /// this message added (the sender's share, `queue_budget` on the server).
    pub queued_before: u64,
    /// Did this message add to that queue?
    pub queue_grew: bool,
    /// The changes the message added, once known: the message's own changes when they
    /// are provably what automerge added ([`PeerSync::receive_checked`]), else
    /// automerge's at the first [`Applied::new_changes`]. A `OnceLock` rather than a
    /// `OnceCell`: the server holds `&Applied` across its commit's `.await`.
    new_changes: OnceLock<Vec<Change>>,
}

impl Applied {
    /// Did the document gain changes?
    pub fn changed(&self) -> bool {
        self.heads_before != self.heads_after
    }

    /// The changes the message added to the document, exactly as
    /// `doc.get_changes(&self.heads_before)` gives them: in automerge's order (each
    /// after its dependencies) with their raw, uncompressed bytes. Worked out at most
    /// once, and usually not by automerge: it re-encodes every change it hands out from
    /// its op set (2–3 % of the relay's CPU per call in the live phase).
    /// `doc` is the document the message was applied to, still at `heads_after`. Empty
    /// when the document gained nothing (changes only queued).
    pub fn new_changes(&self, doc: &Automerge) -> &[Change] {
        self.new_changes.get_or_init(|| {
            debug_assert_eq!(doc.get_heads(), self.heads_after, "another document state");
            if self.changed() {
                doc.get_changes(&self.heads_before)
            } else {
                Vec::new()
            }
        })
    }

    /// Did the message leave anything behind (applied or queued)? Then it is checked.
    pub fn left_something(&self) -> bool {
        self.changed() || self.queue_grew
    }
}

/// Sync sessions with one remote peer, one per document.
#[derive(Debug, Clone)]
pub struct PeerSync {
    states: HashMap<DocumentId, sync::State>,
    /// Operations a document may hold, and so a message may declare: automerge's
    /// run-length encoding lets a few bytes say millions, and applying each costs
    /// memory and time (`chunks`). The server sets its `--max-document-ops`.
    max_ops: u64,
}

impl Default for PeerSync {
    fn default() -> Self {
        PeerSync {
            states: HashMap::new(),
            max_ops: chunks::MAX_OPS,
        }
    }
}

impl PeerSync {
    /// Sessions under the default limit of operations per document ([`chunks::MAX_OPS`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, with another limit of operations per document: a message declaring
    /// more is refused before automerge parses it, and one after which the document
    /// (with automerge's queue) holds more is rolled back.
    pub fn with_max_ops(mut self, max_ops: u64) -> Self {
        self.max_ops = max_ops;
        self
    }

    /// Is a session open for this document?
    pub fn has(&self, id: &DocumentId) -> bool {
        self.states.contains_key(id)
    }

    /// Documents with an open session.
    pub fn documents(&self) -> impl Iterator<Item = &DocumentId> {
        self.states.keys()
    }

    /// Opens a session from a persisted state (`sync::State::encode`), so a reconnecting
    /// peer does not start from an empty bloom filter. Bad bytes start a fresh session.
    pub fn resume(&mut self, id: DocumentId, persisted: &[u8]) {
        let state = sync::State::decode(persisted).unwrap_or_default();
        self.states.insert(id, state);
    }

    /// Opens a fresh session if none is open.
    pub fn open(&mut self, id: DocumentId) {
        self.states.entry(id).or_default();
    }

    /// Ends the session (doc-unavailable, revoked, erased).
    pub fn forget(&mut self, id: &DocumentId) {
        self.states.remove(id);
    }

    /// The state worth persisting across connections (the shared heads).
    pub fn persistable_state(&self, id: &DocumentId) -> Option<Vec<u8>> {
        self.states.get(id).map(sync::State::encode)
    }

    /// The session's automerge state, to read: what the peer said it has, needs and holds,
    /// and what was sent to it. For oracles that compare two ways of generating
    /// (the `stateful` fuzz target); nothing else needs it.
    pub fn session(&self, id: &DocumentId) -> Option<&sync::State> {
        self.states.get(id)
    }

    /// Applies an incoming `sync`/`request` payload. Unlike [`Self::receive_checked`]
    /// it does not read the message's changes for [`Applied::new_changes`] (a device
    /// rarely asks for them; they are then automerge's).
    pub fn receive(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        data: &[u8],
    ) -> Result<Applied, SyncError> {
        self.receive_inner(id, doc, data, false, |_, _| Ok::<(), ()>(()))
            .map_err(|e| match e {
                Rejected::Sync(e) => e,
                Rejected::Check(()) => SyncError::Apply("unreachable check".into()),
            })
    }

    /// Applies an incoming payload, then runs `check` on the result. If the check
    /// refuses, the document and this session are restored to what they were, so a
    /// refused message leaves no trace.
    ///
    /// The check runs whenever the message left something behind: new heads, or
    /// changes automerge queued because their dependencies are missing (the heads do
    /// not move for those, but their bytes stay in memory). A refusal drops the
    /// document's whole queue with it ([`rollback`]). Before it, the engine's own: the
    /// document's ops and the ops waiting in automerge's queue (which a later message
    /// can drain into it at once) must stay within the limit
    /// ([`Self::with_max_ops`]), so small messages cannot grow it past what one
    /// message may not bring.
    ///
    /// The changes the message added ([`Applied::new_changes`]) are its own change
    /// chunks when that is provably what automerge did: nothing was queued before or
    /// after, the document was not empty, every chunk is one uncompressed change whose
    /// checksum holds (no whole document), each of those the document lacked before is
    /// in it after, and with the heads before they account for every head after. They
    /// are then put in the order automerge applied them ([`in_applied_order`]), which is
    /// the order `get_changes` lists them in. Otherwise automerge is asked, once.
    pub fn receive_checked<E>(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        data: &[u8],
        check: impl FnOnce(&Automerge, &Applied) -> Result<(), E>,
    ) -> Result<Applied, Rejected<E>> {
        self.receive_inner(id, doc, data, true, check)
    }

    /// [`Self::receive_checked`]; `read_changes`: take [`Applied::new_changes`] from the
    /// message where that is exact.
    fn receive_inner<E>(
        &mut self,
        id: DocumentId,
        doc: &mut Automerge,
        data: &[u8],
        read_changes: bool,
        check: impl FnOnce(&Automerge, &Applied) -> Result<(), E>,
    ) -> Result<Applied, Rejected<E>> {
        let message = guard::run(Site::Receive, || sync::Message::decode(data))
            .map_err(|p| Rejected::Sync(p.into()))?
            .map_err(|e| Rejected::Sync(SyncError::InvalidMessage(e.to_string())))?;
        check_bloom_filters(&message).map_err(Rejected::Sync)?;
        // Sizes automerge would trust: bundles, deflate bombs and run lengths
        // (crate::chunks).
        let max_ops = self.max_ops;
        let budget = chunks::Budget {
            inflated_bytes: chunks::MAX_INFLATED_BYTES,
            ops: max_ops,
        };
        chunks::screen(&message, budget).map_err(|e| {
            Rejected::Sync(match e {
                chunks::ChunkError::TooManyOps { .. } => SyncError::TooManyOps(e.to_string()),
                e => SyncError::InvalidMessage(e.to_string()),
            })
        })?;
        // automerge keeps changes whose dependencies are missing in a queue. A failed
        // receive must not leave any there; with an empty queue before (the usual case)
        // that is cheap to see afterwards. `get_missing_deps(&[])` is empty exactly when
        // the queue is.
        let carries_changes = !message.changes.is_empty();
        let queue_was_empty = doc.get_missing_deps(&[]).is_empty();
        // A refusal must not even leave a new, empty session behind.
        let had_session = self.states.contains_key(&id);
        let state = self.states.entry(id).or_default();
        let saved_state = state.clone();
        let heads_before = doc.get_heads();
        let queued_before = if queue_was_empty {
            0
        } else {
            queue_of(doc).bytes
        };
        // The message's changes the document lacks, read before automerge takes the
        // message (after, nothing tells what it held before). automerge loads an empty
        // document as a whole instead, and drains a queue in with the message's changes.
        // A panic here only loses the shortcut: automerge parses the bytes itself next.
        let from_message =
            if read_changes && carries_changes && queue_was_empty && !heads_before.is_empty() {
                guard::run(Site::Receive, || message_changes(&message, doc))
                    .ok()
                    .flatten()
            } else {
                None
            };
        // The queue is measured inside the guard: it saves the document, queued
        // (untrusted) changes included.
        let received = guard::run(Site::Receive, || {
            match receive_here(state, doc, message) {
                Ok(received) => received,
                Err(message) => doc.receive_sync_message(state, message),
            }
            .map(|()| queue_of(doc))
        });
        let (failure, queued_after) = match received {
            Ok(Ok(queued)) => (None, queued),
            Ok(Err(e)) => (Some(SyncError::Apply(e.to_string())), Queue::default()),
            Err(panicked) => (Some(SyncError::Panicked(panicked)), Queue::default()),
        };
        if let Some(e) = failure {
            *state = saved_state;
            // After a panic the document may be inconsistent even where its heads did
            // not move: always rebuild. After an error, rebuild when anything moved.
            // A failure with changes queued before rebuilds too, which also drops the
            // older queued changes: they were never checked, and peers send them again.
            let queue_touched =
                carries_changes && !(queue_was_empty && doc.get_missing_deps(&[]).is_empty());
            if matches!(e, SyncError::Panicked(_))
                || doc.get_heads() != heads_before
                || queue_touched
            {
                guard::restore(doc, &heads_before);
            }
            if !had_session {
                self.states.remove(&id);
            }
            return Err(Rejected::Sync(e));
        }
        let heads_after = doc.get_heads();
        let new_changes = OnceLock::new();
        if heads_after != heads_before {
            if let Some(added) =
                from_message.and_then(|c| added_in_order(doc, &heads_before, &heads_after, c))
            {
                let _ = new_changes.set(added);
            }
        }
        let applied = Applied {
            heads_after,
            heads_before,
            queued_bytes: queued_after.bytes,
            queued_before,
            queue_grew: queued_after.bytes > queued_before,
            new_changes,
        };
        if applied.left_something() {
            // The document's ops and those a later message can drain into it at once.
            let ops = doc.stats().num_ops.saturating_add(queued_after.ops);
            let verdict = if ops > max_ops {
                Some(Rejected::Sync(SyncError::TooManyOps(format!(
                    "the document would hold more than {max_ops} operations"
                ))))
            } else {
                match guard::run(Site::Check, || check(doc, &applied)) {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(Rejected::Check(e)),
                    Err(panicked) => Some(Rejected::Sync(SyncError::Panicked(panicked))),
                }
            };
            if let Some(refusal) = verdict {
                *state = saved_state;
                guard::restore(doc, &applied.heads_before);
                if !had_session {
                    self.states.remove(&id);
                }
                return Err(refusal);
            }
        }
        Ok(applied)
    }

    /// Did the remote peer, in its last message, report exactly our heads? Then neither
    /// side missed anything the other held at that moment (a device has caught up).
    pub fn in_sync(&self, id: &DocumentId, doc: &Automerge) -> bool {
        let Some(theirs) = self.states.get(id).and_then(|s| s.their_heads.as_ref()) else {
            return false;
        };
        let mut ours = doc.get_heads();
        let mut theirs = theirs.clone();
        ours.sort();
        theirs.sort();
        ours == theirs
    }

    /// Does the remote peer hold the change `hash`, as far as its last message told us?
    /// True when every head it reported is known here and `hash` is among their
    /// ancestors: how a writer learns that the other side has taken its change.
    pub fn peer_has(&self, id: &DocumentId, doc: &Automerge, hash: &ChangeHash) -> bool {
        let Some(theirs) = self.states.get(id).and_then(|s| s.their_heads.as_ref()) else {
            return false;
        };
        if theirs.contains(hash) {
            return true;
        }
        if theirs.is_empty() || theirs.iter().any(|h| doc.get_change_by_hash(h).is_none()) {
            return false;
        }
        !doc.get_changes_meta(theirs).iter().any(|c| &c.hash == hash)
    }

    /// The next payload to send for this document, if there is anything to say. A panic
    /// in automerge ends the session (see [`Self::try_generate`]) and says nothing.
    pub fn generate(&mut self, id: DocumentId, doc: &Automerge) -> Option<Vec<u8>> {
        self.try_generate(id, doc)
            .ok()
            .flatten()
            .map(|out| out.data)
    }

    /// [`Self::try_generate`] for a document whose newest changes are already encoded
    /// (`encoded`): automerge is told they are sent, generates the rest of the message
    /// (heads, have, need, any older changes) and moves the sync state as ever, and the
    /// encoded bytes are added to the message's changes. The message carries the same
    /// changes and leaves the same sync state as [`Self::try_generate`]'s; only when
    /// [`ours_to_send`] finds them on automerge's ordinary path, else this is
    /// `try_generate`. One difference is left: to a peer that reads version 2,
    /// automerge sends the whole document instead when the changes to send are more
    /// than a third of all (a document of fewer than three changes per new one); here
    /// the changes go as changes, and only they are marked sent (automerge marks every
    /// change of the document). Both bring the peer to the same heads, the changes
    /// perhaps a round later: they are those automerge sends a version 1 peer, without
    /// a change the peer's bloom filter claims wrongly, which the peer then asks for.
    pub fn try_generate_with(
        &mut self,
        id: DocumentId,
        doc: &Automerge,
        encoded: &EncodedChanges,
    ) -> Result<Option<Outgoing>, SyncError> {
        let state = self.states.entry(id).or_default();
        let ours = ours_to_send(state, doc, encoded);
        if ours.is_empty() {
            if let Some(message) = acknowledged(state, doc, encoded) {
                return Ok(Some(Outgoing {
                    carries_changes: false,
                    data: message.encode(),
                }));
            }
            return self.try_generate(id, doc);
        }
        if let Some(data) = relayed(state, doc, encoded, &ours) {
            return Ok(Some(Outgoing {
                carries_changes: true,
                data,
            }));
        }
        // `ours_to_send` took only hashes that were not marked sent.
        for (hash, _) in &ours {
            state.sent_hashes.insert(*hash);
        }
        let generated = guard::run(Site::Generate, || doc.generate_sync_message(state));
        let message = match generated {
            Ok(Some(message)) => message,
            Ok(None) => {
                // Nothing else to say (automerge returns before touching the state):
                // unmark ours, and let automerge send them itself.
                for (hash, _) in &ours {
                    state.sent_hashes.remove(hash);
                }
                return self.try_generate(id, doc);
            }
            Err(panicked) => {
                *state = sync::State::new();
                return Err(panicked.into());
            }
        };
        let mut chunks: Vec<Vec<u8>> = message.changes.iter().map(<[u8]>::to_vec).collect();
        if chunks
            .first()
            .is_some_and(|chunk| chunks::is_document(chunk))
        {
            // automerge chose to send the whole document (it holds our changes too)
            // and marked every hash as sent.
        } else if message.version == sync::MessageVersion::V1 {
            chunks.extend(ours.iter().map(|(_, bytes)| bytes.clone()));
        } else {
            // Version 2 carries changes as one chunk of concatenated changes.
            let mut joined = chunks.concat();
            for (_, bytes) in &ours {
                joined.extend_from_slice(bytes);
            }
            chunks = vec![joined];
        }
        let message = sync::Message {
            changes: chunks.into(),
            ..message
        };
        Ok(Some(Outgoing {
            carries_changes: !message.changes.is_empty(),
            data: message.encode(),
        }))
    }

    /// [`Self::generate`] that reports a panic in automerge instead of hiding it. The
    /// session is then reset to a fresh one: the state that made automerge panic (say, a
    /// hostile bloom filter the peer sent earlier) would make it panic again.
    pub fn try_generate(
        &mut self,
        id: DocumentId,
        doc: &Automerge,
    ) -> Result<Option<Outgoing>, SyncError> {
        let state = self.states.entry(id).or_default();
        if nothing_to_say(state, doc) {
            return Ok(None);
        }
        match guard::run(Site::Generate, || {
            doc.generate_sync_message(state).map(|message| Outgoing {
                carries_changes: !message.changes.is_empty(),
                data: message.encode(),
            })
        }) {
            Ok(payload) => Ok(payload),
            Err(panicked) => {
                *state = sync::State::new();
                Err(panicked.into())
            }
        }
    }
}

/// automerge's `receive_sync_message`, done on the session here where automerge's walk
/// over the history can be left out. After loading a message's changes automerge drops
/// the hashes it sent that the peer's heads now cover, by a walk over every ancestor
/// of those heads: the whole history, ≈ 9 % of the relay's CPU in the live phase,
/// where the relay takes 9 messages per change (the writer's and 8 subscribers'
/// answers). The walk removes nothing when no hash was sent (or the peer asked for a
/// reset), and everything we have when the peer is at our heads: then it is left out.
/// The message back, untouched, where that cannot be told beforehand (a message
/// without changes naming a head we lack or with a queue of changes waiting for
/// dependencies, hashes sent while the peer is elsewhere, or changes while hashes are
/// sent or we are read-only): automerge takes it. Otherwise the changes are loaded as
/// automerge loads them (`load_incremental`; its error is the receive's) and the
/// session moves as automerge moves it.
fn receive_here(
    state: &mut sync::State,
    doc: &mut Automerge,
    message: sync::Message,
) -> Result<Result<(), automerge::AutomergeError>, sync::Message> {
    let reset = message
        .flags
        .is_some_and(|flags| flags.contains(sync::MessageFlags::SYNC_RESET));
    let carries = !message.changes.is_empty();
    let before_heads = doc.get_heads();
    if carries {
        if state.read_only || !(state.sent_hashes.is_empty() || reset) {
            return Err(message);
        }
    } else {
        let mut theirs = message.heads.clone();
        theirs.sort_unstable();
        theirs.dedup();
        let at_our_heads = theirs == before_heads;
        if !applied(doc, &message.heads) || !(state.sent_hashes.is_empty() || reset || at_our_heads)
        {
            return Err(message);
        }
    }
    state.in_flight = false;
    if let Some(flags) = message.flags {
        let mut capabilities = vec![sync::Capability::MessageV2];
        if flags.contains(sync::MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(sync::Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        if reset {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(sync::MessageFlags::READ_ONLY);
    }
    if carries {
        let joined: Vec<u8> = message.changes.iter().flatten().copied().collect();
        if let Err(e) = doc.load_incremental(&joined) {
            return Ok(Err(e));
        }
        let after_heads = doc.get_heads();
        let mut advanced: Vec<ChangeHash> = after_heads
            .iter()
            .filter(|head| !before_heads.contains(head))
            .chain(
                state
                    .shared_heads
                    .iter()
                    .filter(|head| after_heads.contains(head)),
            )
            .copied()
            .collect();
        advanced.sort_unstable();
        advanced.dedup();
        state.shared_heads = advanced;
    } else {
        // At our heads every change we have is behind the peer's: sent hashes of
        // changes we have no longer count as unseen (one we no longer have, after a
        // rollback, stays, as automerge keeps it). Elsewhere none is sent.
        state
            .sent_hashes
            .retain(|hash| !applied(doc, std::slice::from_ref(hash)));
        if message.heads == before_heads {
            state.last_sent_heads.clone_from(&message.heads);
        }
    }
    // Without changes every head was applied before (checked above).
    let known: Vec<ChangeHash> = if !carries || applied(doc, &message.heads) {
        message.heads.clone()
    } else {
        message
            .heads
            .iter()
            .filter(|hash| doc.get_change_meta_by_hash(hash).is_some())
            .copied()
            .collect()
    };
    if known.len() == message.heads.len() {
        state.shared_heads.clone_from(&message.heads);
        if message.heads.is_empty() {
            state.last_sent_heads = Vec::new();
            state.sent_hashes = Default::default();
        }
    } else {
        let mut shared: Vec<ChangeHash> =
            state.shared_heads.iter().chain(&known).copied().collect();
        shared.sort_unstable();
        shared.dedup();
        state.shared_heads = shared;
    }
    state.their_have = Some(message.have);
    state.their_heads = Some(message.heads);
    state.their_need = Some(message.need);
    Ok(Ok(()))
}

/// Are all of `hashes` applied to `doc`, with no change waiting in its queue? A hash
/// lookup each (with the queue empty, as nearly always), where
/// `get_change_meta_by_hash` builds the change's metadata. Always `false` with a
/// queue: only for questions where "no" is the cautious answer (automerge then
/// decides).
fn applied(doc: &Automerge, hashes: &[ChangeHash]) -> bool {
    doc.get_missing_deps(hashes).is_empty()
}

/// Would automerge's `generate_sync_message` say nothing to this peer? Told without
/// the two walks over the history automerge makes before it decides (the bloom filter
/// of our changes since the shared heads, and the changes after the peer's last sync),
/// which for a document of a few hundred changes were ≈ 7 % of the relay's CPU in the
/// live phase: every subscriber's answer to a change is followed by a generate that
/// says nothing. `true` only where automerge returns `None` (and so leaves the state
/// as it was): our heads are those we last sent and we have answered; no reset or
/// whole document is due; and the peer's message is still in flight, or the peer is at
/// our heads and would get no change: nothing it asked for by hash is unsent, and its
/// last sync covers our heads (so no change of ours comes after it). Otherwise `false`,
/// and automerge decides as ever.
fn nothing_to_say(state: &sync::State, doc: &Automerge) -> bool {
    if !state.have_responded {
        return false;
    }
    let our_heads = doc.get_heads();
    if state.last_sent_heads != our_heads {
        return false;
    }
    // A peer with no heads may be sent the whole document.
    if state.their_heads.as_ref().is_some_and(Vec::is_empty) {
        return false;
    }
    // automerge answers with a reset when the peer's last sync names changes we lack.
    if let Some(first) = state.their_have.as_ref().and_then(|have| have.first()) {
        if !applied(doc, &first.last_sync) {
            return false;
        }
    }
    if state.in_flight {
        return true;
    }
    if state.their_heads.as_ref() != Some(&our_heads) && !state.read_only {
        return false;
    }
    if state.is_peer_read_only() {
        return true;
    }
    let (Some(have), Some(need)) = (state.their_have.as_ref(), state.their_need.as_ref()) else {
        return true;
    };
    let asked_unsent = need.iter().any(|hash| {
        !state.sent_hashes.contains(hash) && doc.get_change_meta_by_hash(hash).is_some()
    });
    !asked_unsent
        && (have.is_empty()
            || our_heads
                .iter()
                .all(|head| have.iter().any(|h| h.last_sync.contains(head))))
}

/// What automerge answers the writer of the newest changes (`encoded`) once they are
/// applied, built without its two walks over the history (the changes since our shared
/// heads, for our bloom filter; the changes after the peer's last sync, to send): one
/// per relayed change, the writer's acknowledgement. It applies when the peer is at
/// our heads, needs nothing, and summarised the changes of `encoded` (its last sync is
/// the heads before them, or before earlier kept changes, [`EncodedChanges::earlier`],
/// when it sent more before our answer) with a bloom filter that claims each change
/// since its last sync; and
/// our shared heads are our heads, which moved since we last sent them. Then automerge
/// has no change to send (every change after the peer's last sync is in its filter),
/// needs nothing (it has the peer's heads), its filter covers no change, and it must
/// say something (our heads moved): our heads, that empty filter at our shared heads,
/// no need, no changes (for a version 2 peer too), the sync-reset flag; and the session:
/// responded, heads sent, in flight. Elsewhere `None`, and automerge decides.
fn acknowledged(
    state: &mut sync::State,
    doc: &Automerge,
    encoded: &EncodedChanges,
) -> Option<sync::Message> {
    let (their_heads, have) = settled_summary(state)?;
    let our_heads = doc.get_heads();
    if our_heads.is_empty()
        || our_heads != encoded.heads
        || encoded.before.is_empty()
        || encoded.changes.is_empty()
        || state.last_sent_heads == our_heads
        || sorted(their_heads) != our_heads
        || sorted(&state.shared_heads) != our_heads
    {
        return None;
    }
    // automerge offers every change after the writer's last sync (perhaps before
    // earlier changes of its, not yet acknowledged) and leaves out those its filter
    // claims: all of them here.
    let since_last_sync = encoded.earlier_since(&sorted(&have.last_sync))?;
    let claimed = since_last_sync
        .iter()
        .chain(encoded.changes.iter().map(|(hash, _)| hash))
        .all(|hash| have.bloom.contains_hash(hash));
    if !claimed {
        return None;
    }
    Some(send_as_automerge(state, our_heads, &[], &[]))
}

/// Changes encoded once for every peer they go to: the newest changes of a document,
/// each as (hash, raw bytes) the way `Automerge::get_changes` gives them, and the
/// document's heads when they were its newest. The server keeps a commit's new changes
/// so (`DocState::recent`); each subscriber's message then carries these bytes instead
/// of automerge encoding the same changes again per subscriber
/// ([`PeerSync::try_generate_with`]).
///
/// Made only from a document (its changes since heads it had, which it has only gained
/// since), so that "the document has no change newer than these" can be told from its
/// heads ([`ours_to_send`] relies on it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedChanges {
    changes: Vec<(ChangeHash, Vec<u8>)>,
    /// The document's heads right after `changes` (sorted, as `get_heads` gives them).
    heads: Vec<ChangeHash>,
    /// The document's heads right before `changes`, sorted.
    before: Vec<ChangeHash>,
    /// The encoded changes just before these, oldest first, each one's heads the next
    /// one's `before` (the last one's heads are this `before`): what a subscriber that
    /// has not yet answered them has been sent ([`Self::follows`], [`relayed`]).
    earlier: Vec<Earlier>,
    /// The messages [`relayed`] built from these changes, encoded, for every other
    /// subscriber in the same place to send as they are.
    built: Built,
}

/// Encoded messages that [`relayed`] built for subscribers: each is a function of the
/// changes (all of them go), the peer's message version and our shared heads with it
/// (which also fix the earlier changes in flight), so every subscriber that was in
/// sync at the same heads gets the same bytes. Encoding one is most of a relay's cost
/// per subscriber after the changes themselves (the bloom filter, the copy of each
/// change, the growing buffer): 8 subscribers a change in the live phase. Subscribers'
/// connections generate on their own tasks, under the document's lock, so this is
/// behind a mutex that nobody waits for.
#[derive(Debug, Default)]
struct Built(std::sync::Mutex<Vec<BuiltMessage>>);

/// One message in [`Built`].
#[derive(Debug)]
struct BuiltMessage {
    v2: bool,
    shared_heads: Vec<ChangeHash>,
    data: Vec<u8>,
}

/// Places (version, shared heads) [`Built`] keeps messages for; subscribers elsewhere
/// have theirs built each time.
const BUILT_KEPT: usize = 4;

impl Built {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BuiltMessage>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The message kept for a peer of version `v2` at `shared_heads`.
    fn find(&self, v2: bool, shared_heads: &[ChangeHash]) -> Option<Vec<u8>> {
        self.lock()
            .iter()
            .find(|b| b.v2 == v2 && b.shared_heads == shared_heads)
            .map(|b| b.data.clone())
    }

    /// Keeps the message built for that place, when there is room.
    fn keep(&self, v2: bool, shared_heads: Vec<ChangeHash>, data: &[u8]) {
        let mut built = self.lock();
        if built.len() < BUILT_KEPT {
            built.push(BuiltMessage {
                v2,
                shared_heads,
                data: data.to_vec(),
            });
        }
    }
}

/// A copy starts empty: what it would hold is built again on demand.
impl Clone for Built {
    fn clone(&self) -> Self {
        Built::default()
    }
}

/// What is built is derived from the rest of [`EncodedChanges`]: it takes no part in
/// equality.
impl PartialEq for Built {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Built {}

/// Encoded changes that came before others ([`EncodedChanges::earlier`]): the heads
/// before them (sorted) and their hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Earlier {
    before: Vec<ChangeHash>,
    hashes: Vec<ChangeHash>,
}

/// How many earlier encoded changes [`EncodedChanges::follows`] keeps: subscribers more
/// changes behind than this are left to automerge.
pub const EARLIER_KEPT: usize = 8;

impl EncodedChanges {
    /// `doc`'s changes since `before`: `before` are heads `doc` had, and it has only
    /// gained changes since (the committed heads; the heads before a receive). Asks
    /// automerge to encode them.
    pub fn since(doc: &Automerge, before: &[ChangeHash]) -> Self {
        Self::of(doc.get_changes(before).iter(), doc.get_heads(), before)
    }

    /// The changes a received message added ([`Applied::new_changes`]); `doc` is the
    /// document it was applied to, still at `applied.heads_after`.
    pub fn applied(applied: &Applied, doc: &Automerge) -> Self {
        Self::of(
            applied.new_changes(doc).iter(),
            applied.heads_after.clone(),
            &applied.heads_before,
        )
    }

    fn of<'c>(
        changes: impl Iterator<Item = &'c Change>,
        heads: Vec<ChangeHash>,
        before: &[ChangeHash],
    ) -> Self {
        let mut before = before.to_vec();
        before.sort_unstable();
        EncodedChanges {
            changes: changes
                .map(|c| (c.hash(), c.raw_bytes().to_vec()))
                .collect(),
            heads,
            before,
            earlier: Vec::new(),
            built: Built::default(),
        }
    }

    /// The hashes of the earlier changes kept since heads `from` (sorted), oldest first,
    /// up to these changes' `before`: empty when `from` are `before`, `None` when they
    /// are no kept earlier `before`. With the document still at these changes' heads,
    /// its changes since `from` are exactly these hashes and these changes: each
    /// encoded set holds all the document gained since its `before`, and each one's
    /// heads are the next one's `before`.
    fn earlier_since(&self, from: &[ChangeHash]) -> Option<Vec<ChangeHash>> {
        if from == self.before.as_slice() {
            return Some(Vec::new());
        }
        let start = self
            .earlier
            .iter()
            .rposition(|earlier| earlier.before.as_slice() == from)?;
        Some(
            self.earlier[start..]
                .iter()
                .flat_map(|earlier| earlier.hashes.iter().copied())
                .collect(),
        )
    }

    /// These changes, knowing that `previous` (the document's encoded changes before)
    /// came right before them: when `previous` ended at the heads these start from, it
    /// and up to [`EARLIER_KEPT`] - 1 of its own earlier ones are kept (their hashes).
    /// Then a subscriber that has not answered them yet still gets its message built
    /// here rather than by automerge ([`relayed`]). Otherwise nothing is kept.
    #[must_use]
    pub fn follows(mut self, previous: EncodedChanges) -> Self {
        self.earlier.clear();
        // What was built assumed no earlier changes.
        self.built = Built::default();
        if previous.changes.is_empty() || previous.heads != self.before {
            return self;
        }
        // Moved, not copied: the hub replaces `previous` with these at every commit.
        let mut earlier = previous.earlier;
        earlier.drain(..(earlier.len() + 1).saturating_sub(EARLIER_KEPT));
        earlier.push(Earlier {
            before: previous.before,
            hashes: previous.changes.iter().map(|(hash, _)| *hash).collect(),
        });
        self.earlier = earlier;
        self
    }

    /// The changes, each after its dependencies.
    pub fn changes(&self) -> &[(ChangeHash, Vec<u8>)] {
        &self.changes
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Their raw bytes one after the other: what `Automerge::save_after` of the heads
    /// before them makes (the server's incremental chunk).
    pub fn concatenated(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.changes.iter().map(|(_, b)| b.len()).sum());
        for (_, bytes) in &self.changes {
            out.extend_from_slice(bytes);
        }
        out
    }
}

/// The changes of `encoded` that automerge's generate would send to this peer and that
/// it may leave to us: automerge's own path for them is the ordinary one (the peer has
/// said what it has and needs, it is not read-only, not at its first sync, no reset is
/// due), and the peer has not got them (not sent in this session, not among its heads,
/// not in any bloom filter it sent, not asked for by hash, not before its last sync).
/// Empty when any of that does not hold: then automerge generates as always.
fn ours_to_send<'e>(
    state: &sync::State,
    doc: &Automerge,
    encoded: &'e EncodedChanges,
) -> Vec<&'e (ChangeHash, Vec<u8>)> {
    let (Some(have), Some(need), Some(their_heads)) = (
        state.their_have.as_ref(),
        state.their_need.as_ref(),
        state.their_heads.as_ref(),
    ) else {
        return Vec::new();
    };
    if state.is_peer_read_only() || their_heads.is_empty() || !need.is_empty() {
        return Vec::new();
    }
    // Without a summary of what the peer has, automerge sends only what it asked for.
    let Some(first) = have.first() else {
        return Vec::new();
    };
    // automerge answers with a reset when the peer's last sync names changes we lack.
    if !applied(doc, &first.last_sync) {
        return Vec::new();
    }
    let mut ours: Vec<_> = encoded
        .changes
        .iter()
        .filter(|(hash, _)| {
            !state.sent_hashes.contains(hash)
                && !their_heads.contains(hash)
                && have.iter().all(|h| !h.bloom.contains_hash(hash))
                && applied(doc, std::slice::from_ref(hash))
        })
        .collect();
    // automerge offers only the changes after the peer's last sync (the heads named in
    // all its summaries): those before, the peer had then. Its bloom filters cover only
    // the changes after, so a change before is in none of them.
    let last_sync: Vec<ChangeHash> = have
        .iter()
        .flat_map(|h| h.last_sync.iter().copied())
        .collect();
    if !ours.is_empty() && !last_sync.is_empty() && !after_last_sync(doc, encoded, &last_sync) {
        // The peer's last sync may follow some of ours: ask automerge which changes
        // come after it (a clock over the history: ≈ 2 % of the relay's CPU in the
        // live phase when asked per subscriber; now rare, see `after_last_sync`).
        let after: HashSet<ChangeHash> = doc
            .get_changes_meta(&last_sync)
            .into_iter()
            .map(|c| c.hash)
            .collect();
        ours.retain(|(hash, _)| after.contains(hash));
    }
    ours
}

/// The message [`PeerSync::try_generate_with`] sends a subscriber that was in sync
/// before `encoded` came, built here instead of by automerge, and the session moved
/// as automerge moves it; `None` where that is not told from the session alone, and
/// then automerge generates as ever. The usual case of the live phase: the peer's
/// heads, its last sync and our shared heads are all the document's heads before
/// `encoded`, it needs nothing and `ours` are all of `encoded`. Then automerge's two
/// walks over the history (the changes since the shared heads, for our bloom filter;
/// the changes after the peer's last sync, to send) both find exactly `encoded`, the
/// peer's bloom filter holds none of them (`ours` are all of them), and our need is
/// empty (we have the peer's heads). What automerge would build: our heads, that bloom
/// filter over our shared heads, no need, `ours` as the changes (one chunk for a
/// version 2 peer), the sync-reset flag; and the session: responded, heads and hashes
/// sent, in flight. Also a subscriber that has not yet answered earlier changes it was
/// sent (a change came before its answer to the last one): its heads and our shared
/// heads are the heads before those ([`EncodedChanges::earlier_since`]); automerge then
/// sends only `ours` (the earlier ones are marked sent) and its filter covers the
/// earlier ones and `ours`. And a peer whose last sync lags its heads (a writer
/// summarises from the heads before its own change) while its filter claims every
/// change between: automerge leaves those out as claimed.
fn relayed(
    state: &mut sync::State,
    doc: &Automerge,
    encoded: &EncodedChanges,
    ours: &[&(ChangeHash, Vec<u8>)],
) -> Option<Vec<u8>> {
    let (their_heads, have) = settled_summary(state)?;
    let our_heads = doc.get_heads();
    if ours.len() != encoded.changes.len()
        || our_heads != encoded.heads
        || encoded.before.is_empty()
        || state.last_sent_heads == our_heads
    {
        return None;
    }
    let at = sorted(their_heads);
    if sorted(&state.shared_heads) != at || !applied(doc, &at) {
        return None;
    }
    // Sent and not answered yet: automerge leaves them out as sent.
    let in_flight = encoded.earlier_since(&at)?;
    if !in_flight
        .iter()
        .all(|hash| state.sent_hashes.contains(hash))
    {
        return None;
    }
    // The peer summarised before it had them all (a writer's last sync is the heads
    // before its own change): automerge offers the changes after its last sync, and
    // leaves out those its filter claims, here every one before `at`.
    let last_sync = sorted(&have.last_sync);
    if last_sync != at {
        let lag = encoded.earlier_since(&last_sync)?;
        let held = lag.len().checked_sub(in_flight.len())?;
        if lag[held..] != in_flight[..] || !lag[..held].iter().all(|h| have.bloom.contains_hash(h))
        {
            return None;
        }
    }
    // The message is the same for every peer of this version at these shared heads
    // (`ours` are all of `encoded`): built once, the session moved for each.
    let v2 = reads_v2(state);
    if let Some(data) = encoded.built.find(v2, &state.shared_heads) {
        mark_sent(state, our_heads, ours);
        return Some(data);
    }
    let shared_heads = state.shared_heads.clone();
    let data = send_as_automerge(state, our_heads, ours, &in_flight).encode();
    encoded.built.keep(v2, shared_heads, &data);
    Some(data)
}

/// The peer's heads and its one summary, when it needs nothing and neither side is
/// read-only or due a reset: the sessions [`relayed`] and [`acknowledged`] build
/// automerge's message for.
fn settled_summary(state: &sync::State) -> Option<(&[ChangeHash], &sync::Have)> {
    let (Some(their_heads), Some(need), Some([have])) = (
        state.their_heads.as_ref(),
        state.their_need.as_ref(),
        state.their_have.as_deref(),
    ) else {
        return None;
    };
    let settled =
        need.is_empty() && !state.read_only && !state.needs_reset && !state.is_peer_read_only();
    settled.then_some((their_heads.as_slice(), have))
}

/// The message automerge's generate builds when it sends `ours` (perhaps none) and
/// needs nothing, and the session it leaves: our heads, a bloom filter over
/// `in_flight` and `ours` (the changes since our shared heads) at those shared heads,
/// no need, `ours` as the
/// changes (one chunk for a version 2 peer, none when there are none), the sync-reset
/// flag; responded, heads and hashes sent, in flight.
fn send_as_automerge(
    state: &mut sync::State,
    our_heads: Vec<ChangeHash>,
    ours: &[&(ChangeHash, Vec<u8>)],
    in_flight: &[ChangeHash],
) -> sync::Message {
    let v2 = reads_v2(state);
    let chunks: Vec<Vec<u8>> = if ours.is_empty() {
        Vec::new()
    } else if v2 {
        vec![ours
            .iter()
            .flat_map(|(_, bytes)| bytes.iter().copied())
            .collect()]
    } else {
        ours.iter().map(|(_, bytes)| bytes.clone()).collect()
    };
    let bloom = if in_flight.is_empty() {
        sync::BloomFilter::from_hashes(ours.iter().map(|(hash, _)| hash))
    } else {
        let since: Vec<&ChangeHash> = in_flight
            .iter()
            .chain(ours.iter().map(|(hash, _)| hash))
            .collect();
        sync::BloomFilter::from_hashes(since.into_iter())
    };
    let mut flags = sync::MessageFlags::new();
    flags.set(sync::MessageFlags::SUPPORTS_SYNC_RESET);
    let last_sync = state.shared_heads.clone();
    mark_sent(state, our_heads.clone(), ours);
    sync::Message {
        heads: our_heads,
        need: Vec::new(),
        have: vec![sync::Have { last_sync, bloom }],
        changes: chunks.into(),
        flags: Some(flags),
        version: if v2 {
            sync::MessageVersion::V2
        } else {
            sync::MessageVersion::V1
        },
    }
}

/// How automerge's generate moves the session when it sends `ours` (perhaps none) at
/// `our_heads`: responded, heads and hashes sent, in flight.
fn mark_sent(state: &mut sync::State, our_heads: Vec<ChangeHash>, ours: &[&(ChangeHash, Vec<u8>)]) {
    state.have_responded = true;
    state.last_sent_heads = our_heads;
    state.sent_hashes.extend(ours.iter().map(|(hash, _)| *hash));
    state.in_flight = true;
}

/// Does the peer read sync messages of version 2 (it said so)?
fn reads_v2(state: &sync::State) -> bool {
    state
        .their_capabilities
        .as_ref()
        .is_some_and(|caps| caps.contains(&sync::Capability::MessageV2))
}

/// `hashes` sorted, as `get_heads` gives heads.
fn sorted(hashes: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut hashes = hashes.to_vec();
    hashes.sort_unstable();
    hashes
}

/// Is every change of `encoded` after the peer's `last_sync`, as automerge counts it,
/// told without a walk over the history? Yes when `encoded` are still the document's
/// newest changes (its heads are those after them), every `last_sync` hash is in the
/// document and none is one of them. Then each `last_sync` change was in the document
/// before `encoded` came (the document only gained `encoded` since), and so were its
/// ancestors (automerge applies a change after its dependencies): the clock of
/// `last_sync` (per actor, the highest seq among them and their ancestors) counts only
/// changes from before, and each of `encoded` has a higher seq than every earlier
/// change of its actor (automerge refuses a seq it has), so `get_changes_meta(last_sync)`
/// holds all of `encoded`. The usual case when subscribers are answered right after a
/// commit: their last sync is at most the heads before it.
fn after_last_sync(doc: &Automerge, encoded: &EncodedChanges, last_sync: &[ChangeHash]) -> bool {
    doc.get_heads() == encoded.heads
        && last_sync.iter().all(|hash| {
            !encoded.changes.iter().any(|(ours, _)| ours == hash)
                && applied(doc, std::slice::from_ref(hash))
        })
}

/// The changes `message` carries that `doc` lacks, once each and in the order they
/// come, if every chunk is one uncompressed change whose checksum holds: then, when
/// automerge applies them all, they are exactly what it adds (with an empty queue
/// before: it skips changes it has and repeats, and loads nothing else). `None` for a
/// whole document, a compressed change or anything that does not parse: automerge
/// decides those, and is asked for what it added.
fn message_changes(message: &sync::Message, doc: &Automerge) -> Option<Vec<Change>> {
    let mut seen = HashSet::new();
    let mut lacked = Vec::new();
    for bytes in message.changes.iter() {
        for chunk in chunks::split(bytes).ok()? {
            if !chunks::is_change(chunk) {
                return None;
            }
            let change = Change::try_from(chunk).ok()?;
            let hash = change.hash();
            // automerge loads no chunk past one whose header checksum is not the start
            // of its hash; automerge's own bytes for the change carry the right one.
            if chunks::checksum(chunk) != Some(&hash.0[..4]) {
                return None;
            }
            if seen.insert(hash) && !applied(doc, &[hash]) {
                lacked.push(change);
            }
        }
    }
    Some(lacked)
}

/// `changes` ([`message_changes`]) in the order automerge applied them, if they are
/// exactly what the receive added to `doc`: nothing waits in its queue, each of them
/// is in the document, and they and the heads before account for every head after.
/// Their bytes are then those `doc.get_changes(heads_before)` gives: a chunk's bytes
/// are fixed by its hash (over type and contents), its checksum (checked) and its
/// length (automerge refuses overlong ones), and automerge encodes a change it holds
/// back to the bytes of its hash (its sync sends changes so). Only a hand-made change
/// that does not round-trip through automerge's encoder would differ: `get_changes`
/// would give it under another hash than the document holds, and these keep the
/// document's.
fn added_in_order(
    doc: &Automerge,
    heads_before: &[ChangeHash],
    heads_after: &[ChangeHash],
    changes: Vec<Change>,
) -> Option<Vec<Change>> {
    if changes.is_empty() || has_queued(doc) {
        return None;
    }
    let hashes: HashSet<ChangeHash> = changes.iter().map(Change::hash).collect();
    if !heads_after
        .iter()
        .all(|head| hashes.contains(head) || heads_before.contains(head))
    {
        return None;
    }
    if !applied(doc, &hashes.into_iter().collect::<Vec<_>>()) {
        return None;
    }
    in_applied_order(changes)
}

/// New changes in the order automerge 0.12 applies them and so lists them in
/// `get_changes` (by their place in its change graph): `ChangeQueue::pop_topo_sorted_ready`,
/// Kahn's algorithm from the order they came in, first in first out, counting the
/// dependencies among them (the others the document had). `None` if some change never
/// becomes ready (it could not have been applied).
fn in_applied_order(changes: Vec<Change>) -> Option<Vec<Change>> {
    if changes.len() == 1 {
        return Some(changes);
    }
    let place: HashMap<ChangeHash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, change)| (change.hash(), i))
        .collect();
    let mut waiting = vec![0usize; changes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, change) in changes.iter().enumerate() {
        for dep in change.deps() {
            if let Some(&j) = place.get(dep) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..changes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(changes.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if order.len() != changes.len() {
        return None;
    }
    let mut slots: Vec<Option<Change>> = changes.into_iter().map(Some).collect();
    order.into_iter().map(|i| slots[i].take()).collect()
}

/// The most probes per hash a peer's bloom filter may ask for. automerge and
/// automerge-repo make filters with 7; automerge computes every probe for every hash it
/// checks against the filter, so a hand-made filter with millions of probes made one
/// generate of a 21-change document take seconds (found by the helper that wrote the
/// `stateful` oracle).
pub const MAX_BLOOM_PROBES: u64 = 32;

/// Refuses bloom filters automerge 0.12 would panic on or spend unbounded time probing.
/// Its decoder accepts a filter that claims entries but has zero bits per entry;
/// probing it then divides by zero (`sync/bloom.rs`; found by the `apply` fuzz target,
/// `fuzz/regressions/apply/bloom-zero-bits`). And it takes any number of probes per
/// hash ([`MAX_BLOOM_PROBES`]).
fn check_bloom_filters(message: &sync::Message) -> Result<(), SyncError> {
    for have in &message.have {
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            continue; // the empty filter: no entries, never probed
        }
        // num_entries, num_bits_per_entry, num_probes (LEB128), then the bits.
        let mut rest = bytes.as_slice();
        let mut header = [0u64; 3];
        for field in &mut header {
            (*field, rest) = chunks::uleb(rest)
                .map_err(|_| SyncError::InvalidMessage("malformed bloom filter header".into()))?;
        }
        let probes = header[2];
        if probes > MAX_BLOOM_PROBES {
            return Err(SyncError::InvalidMessage(format!(
                "bloom filter with {probes} probes per hash (at most {MAX_BLOOM_PROBES})"
            )));
        }
        if rest.is_empty() {
            return Err(SyncError::InvalidMessage(
                "bloom filter claims entries but has no bits".into(),
            ));
        }
    }
    Ok(())
}

/// The largest payload the server applies and checks on the async runtime's own
/// threads; a larger one (an upload, a catch-up) goes off them. Live edits and
/// subscribers' answers are far below it (an answer is heads and a bloom filter of
/// ≈ 1.25 bytes per change since the last sync), and applying them costs less than
/// handing a worker thread over (issue 18).
pub const INLINE_BYTES: usize = 4 * 1024;

/// The most operations a payload applied on the async runtime's own threads may
/// declare: about as many as [`INLINE_BYTES`] of typed text (an op is about a byte
/// there, and ≈ 0.5 µs to apply). automerge's run-length encoding can say a million
/// in 119 bytes (`chunks`), so bytes alone do not make a payload light.
pub const INLINE_OPS: u64 = 4 * 1024;

/// May the server apply and check `data` (an encoded sync payload) on the async
/// runtime's own threads? Yes when it is within [`INLINE_BYTES`] and its changes
/// declare at most [`INLINE_OPS`] operations, counted from their column headers
/// without decoding anything ([`chunks::sync_message_ops`]); anything that does not
/// parse so goes off them too.
pub fn runs_inline(data: &[u8]) -> bool {
    data.len() <= INLINE_BYTES
        && chunks::sync_message_ops(
            data,
            chunks::Budget {
                inflated_bytes: INLINE_BYTES as u64 * 16,
                ops: INLINE_OPS,
            },
        )
        .is_ok()
}

/// Does automerge hold changes back for this document because their dependencies
/// are missing? Cheap: it walks only the queue, which is nearly always empty.
pub fn has_queued(doc: &Automerge) -> bool {
    !doc.get_missing_deps(&[]).is_empty()
}

/// Bytes of the changes automerge holds back (see [`has_queued`]): 0 without a queue
/// (cheap); otherwise a save of the document (`queue_of`).
pub fn queued_bytes(doc: &Automerge) -> u64 {
    queue_of(doc).bytes
}

/// What automerge holds back for a document because dependencies are missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Queue {
    bytes: u64,
    /// The operations its changes declare (`chunks::declared_ops`): a message that
    /// brings what they wait for applies them all at once.
    ops: u64,
}

/// The queue's bytes and ops: nothing without a queue (cheap); otherwise one save of
/// the document with its orphans, as automerge 0.12 shows its queue no other way. The
/// save is the document chunk, then each queued change's bytes as it came
/// (`Automerge::save_with_options`). Should those not parse, the queue counts as
/// holding more ops than any limit.
fn queue_of(doc: &Automerge) -> Queue {
    if !has_queued(doc) {
        return Queue::default();
    }
    let saved = doc.save_with_options(SaveOptions {
        deflate: false,
        retain_orphans: true,
    });
    let document = chunks::split(&saved)
        .ok()
        .and_then(|chunks| chunks.first().map(|c| c.len()))
        .unwrap_or(0);
    let orphans = &saved[document..];
    Queue {
        bytes: orphans.len() as u64,
        ops: chunks::declared_ops(orphans).unwrap_or(u64::MAX),
    }
}

/// Restores a document to the given heads (the rare path of a refused message or a
/// failed store write), dropping whatever it gained since, including changes waiting in
/// automerge's queue for missing dependencies. The one rollback every caller uses (the
/// server's commit, the client's operations and sync loop); the work is
/// [`guard::restore`]. False when even the rebuild failed and the document was emptied:
/// the caller must reload it from its durable copy.
pub fn rollback(doc: &mut Automerge, heads: &[ChangeHash]) -> bool {
    guard::restore(doc, heads)
}

/// Wraps a payload the way automerge-repo does: `request` while we hold nothing of the
/// document (asking for it), `sync` otherwise.
pub fn wrap(
    sender_id: &str,
    target_id: &str,
    document_id: DocumentId,
    doc: &Automerge,
    data: Vec<u8>,
) -> Message {
    let (sender_id, target_id) = (sender_id.to_owned(), target_id.to_owned());
    if doc.get_heads().is_empty() {
        Message::Request {
            sender_id,
            target_id,
            document_id,
            data,
        }
    } else {
        Message::Sync {
            sender_id,
            target_id,
            document_id,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    fn doc_with(key: &str, value: &str) -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).expect("put");
        tx.commit();
        doc
    }

    fn put(doc: &mut Automerge, key: &str, value: &str) {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).expect("put");
        tx.commit();
    }

    /// Runs the sync protocol between two sides until both are quiet; returns rounds.
    fn converge(
        a: &mut PeerSync,
        doc_a: &mut Automerge,
        b: &mut PeerSync,
        doc_b: &mut Automerge,
        id: DocumentId,
    ) -> usize {
        for round in 0..20 {
            let from_a = a.generate(id, doc_a);
            let from_b = b.generate(id, doc_b);
            if from_a.is_none() && from_b.is_none() {
                return round;
            }
            if let Some(m) = from_a {
                b.receive(id, doc_b, &m).expect("b receives");
            }
            if let Some(m) = from_b {
                a.receive(id, doc_a, &m).expect("a receives");
            }
        }
        panic!("did not converge in 20 rounds");
    }

    /// A device that synced `server` from nothing: the device's document, the server's
    /// session with it and the device's session with the server.
    fn device_in_sync(server: &mut Automerge, id: DocumentId) -> (Automerge, PeerSync, PeerSync) {
        let mut device = Automerge::new();
        let (mut to_device, mut device_side) = (PeerSync::new(), PeerSync::new());
        converge(&mut to_device, server, &mut device_side, &mut device, id);
        (device, to_device, device_side)
    }

    /// The device reconnects from its persisted session and says hello (its heads and
    /// what it has since its last sync); returns the server's new session, which took
    /// the hello.
    fn reconnected(
        device_side: &PeerSync,
        device: &Automerge,
        server: &mut Automerge,
        id: DocumentId,
    ) -> PeerSync {
        let persisted = device_side.persistable_state(&id).expect("session");
        let mut device_side = PeerSync::new();
        device_side.resume(id, &persisted);
        let hello = device_side.generate(id, device).expect("device says hello");
        let mut to_device = PeerSync::new();
        to_device
            .receive(id, server, &hello)
            .expect("server takes the hello");
        to_device
    }

    /// A writer's document holding one change and its session, synced with a server's
    /// document and session.
    fn synced_writer(id: DocumentId) -> (Automerge, PeerSync, Automerge, PeerSync) {
        let mut writer_doc = doc_with("a", "1");
        let mut writer = PeerSync::default();
        let mut server_doc = Automerge::new();
        let mut server = PeerSync::default();
        converge(
            &mut writer,
            &mut writer_doc,
            &mut server,
            &mut server_doc,
            id,
        );
        (writer_doc, writer, server_doc, server)
    }

    /// A writer and a server in sync, then the writer's message with one new change:
    /// the id, the server's document and session, and the message.
    fn synced_then_changed() -> (DocumentId, Automerge, PeerSync, Vec<u8>) {
        let id = DocumentId::random();
        let (mut writer_doc, mut writer, server_doc, server) = synced_writer(id);
        put(&mut writer_doc, "b", "2");
        let sent = writer.generate(id, &writer_doc).expect("a change to send");
        (id, server_doc, server, sent)
    }

    /// A bloom filter asking for more probes per hash than automerge ever makes is
    /// refused at the door, before automerge computes a single probe; one with the
    /// usual 7 is not.
    #[test]
    fn bloom_filters_with_too_many_probes_are_refused() {
        let (id, server_doc, _, sent) = synced_then_changed();
        let message = sync::Message::decode(&sent).expect("decodes");
        assert!(
            !message.have.is_empty(),
            "the writer summarises what it has"
        );
        let with_probes = |probes: u64| {
            // 1 entry, 10 bits per entry, `probes` probes (LEB128), 2 bytes of bits.
            let mut bytes = vec![1, 10];
            let mut rest = probes;
            loop {
                let low = (rest & 0x7f) as u8;
                rest >>= 7;
                if rest == 0 {
                    bytes.push(low);
                    break;
                }
                bytes.push(low | 0x80);
            }
            bytes.extend([0xff, 0xff]);
            let mut m = message.clone();
            m.have[0].bloom = sync::BloomFilter::try_from(bytes.as_slice()).expect("a filter");
            m.encode()
        };
        let mut doc = server_doc.clone();
        let heads = doc.get_heads();
        let mut fresh = PeerSync::default();
        match fresh.receive(id, &mut doc, &with_probes(10_000_000)) {
            Err(SyncError::InvalidMessage(why)) => assert!(why.contains("probes"), "{why}"),
            other => panic!("a 10-million-probe filter was not refused: {other:?}"),
        }
        assert_eq!(
            doc.get_heads(),
            heads,
            "a refused message changed the document"
        );
        fresh
            .receive(id, &mut doc, &with_probes(7))
            .expect("seven probes, as automerge makes them");
        // The most automerge's decoder takes (a u32) is refused too.
        assert!(
            matches!(
                PeerSync::default().receive(id, &mut doc, &with_probes(u64::from(u32::MAX))),
                Err(SyncError::InvalidMessage(_))
            ),
            "u32::MAX probes were taken"
        );
    }

    /// [`PeerSync::generate`] compared with automerge's own generate from the same
    /// session: the same message (or both nothing) and the same session after. Returns
    /// whether [`nothing_to_say`] decided without automerge.
    fn generate_as_automerge(
        engine: &mut PeerSync,
        id: DocumentId,
        doc: &Automerge,
    ) -> (Option<Vec<u8>>, bool) {
        let before = engine.session(&id).cloned().unwrap_or_default();
        let mut theirs = before.clone();
        let automerge_says = doc.generate_sync_message(&mut theirs).map(|m| m.encode());
        let short_cut = nothing_to_say(&before, doc);
        let ours = engine.generate(id, doc);
        assert_eq!(ours, automerge_says, "the message differs from automerge's");
        assert_eq!(
            engine.session(&id),
            Some(&theirs),
            "the session differs from automerge's"
        );
        (ours, short_cut)
    }

    /// The server's generates and receives in [`talk`], and how many of them
    /// [`nothing_to_say`] and [`receive_here`] decided without automerge.
    #[derive(Debug, Default)]
    struct ShortCuts {
        generates: usize,
        silent: usize,
        receives: usize,
        bookkept: usize,
    }

    impl ShortCuts {
        fn add(&mut self, other: ShortCuts) {
            self.generates += other.generates;
            self.silent += other.silent;
            self.receives += other.receives;
            self.bookkept += other.bookkept;
        }
    }

    /// The server and a device talk until both are quiet (the server's side checked by
    /// [`generate_as_automerge`] and [`receive_as_automerge`]); returns the server's
    /// generates and receives and how many took a short cut.
    fn talk(
        server: &mut Automerge,
        to_device: &mut PeerSync,
        device: &mut Automerge,
        device_side: &mut PeerSync,
        id: DocumentId,
    ) -> ShortCuts {
        let mut counts = ShortCuts::default();
        for _ in 0..20 {
            let (from_server, short_cut) = generate_as_automerge(to_device, id, server);
            counts.generates += 1;
            counts.silent += usize::from(short_cut);
            let from_device = device_side.generate(id, device);
            if from_server.is_none() && from_device.is_none() {
                assert_eq!(device.get_heads(), server.get_heads(), "converged");
                return counts;
            }
            if let Some(m) = from_server {
                device_side
                    .receive(id, device, &m)
                    .expect("device receives");
            }
            if let Some(m) = from_device {
                counts.receives += 1;
                counts.bookkept += usize::from(receive_as_automerge(to_device, id, server, &m));
            }
        }
        panic!("did not converge in 20 rounds");
    }

    /// [`PeerSync::receive`] compared with automerge's own receive from the same
    /// session and document: the same session and heads after. Returns whether
    /// [`receive_here`] took the message without automerge.
    fn receive_as_automerge(
        engine: &mut PeerSync,
        id: DocumentId,
        doc: &mut Automerge,
        data: &[u8],
    ) -> bool {
        let before = engine.session(&id).cloned().unwrap_or_default();
        let message = sync::Message::decode(data).expect("decodes");
        let (mut theirs, mut their_doc) = (before.clone(), doc.clone());
        their_doc
            .receive_sync_message(&mut theirs, message.clone())
            .expect("automerge receives");
        let short_cut = receive_here(&mut before.clone(), &mut doc.clone(), message).is_ok();
        engine.receive(id, doc, data).expect("the engine receives");
        assert_eq!(engine.session(&id), Some(&theirs), "the session differs");
        assert_eq!(doc.get_heads(), their_doc.get_heads());
        short_cut
    }

    /// The relay's answers to answers: a subscriber that took a change and answered is
    /// told nothing, without automerge's walks over the history, and in every other
    /// session on the way (first syncs, edits on both sides, a device offline and back,
    /// a peer asking for a change by hash) the engine says exactly what automerge says.
    #[test]
    fn nothing_to_say_is_decided_as_automerge_decides() {
        let id = DocumentId::random();
        let mut server = with_history(40);
        let mut devices: Vec<(Automerge, PeerSync, PeerSync)> = (0..3)
            .map(|_| (Automerge::new(), PeerSync::new(), PeerSync::new()))
            .collect();
        let mut counts = ShortCuts::default();
        for round in 0..30 {
            let writer = round % 3;
            let offline = (round / 7) % 3;
            put(
                &mut devices[writer].0,
                &format!("d{writer}"),
                &format!("r{round}"),
            );
            if round % 5 == 0 {
                put(&mut server, "server", &format!("r{round}"));
            }
            // Every online device and the server talk until both are quiet.
            for (n, (device, to_device, device_side)) in devices.iter_mut().enumerate() {
                if n == offline && round % 7 != 6 {
                    continue;
                }
                counts.add(talk(&mut server, to_device, device, device_side, id));
            }
        }
        // A peer asking for a change by hash is answered as automerge answers.
        let (device, to_device, device_side) = &mut devices[0];
        talk(&mut server, to_device, device, device_side, id);
        let asked = server.get_changes(&[])[3].hash();
        if let Some(state) = to_device.states.get_mut(&id) {
            state.their_need = Some(vec![asked]);
        }
        let (answer, short_cut) = generate_as_automerge(to_device, id, &server);
        assert!(!short_cut, "a change asked for is not nothing to say");
        assert!(answer.is_some());
        assert!(
            counts.silent * 3 > counts.generates,
            "nothing_to_say decided {} of {} generates",
            counts.silent,
            counts.generates
        );
        assert!(
            counts.bookkept * 2 > counts.receives,
            "receive_here took {} of {} receives",
            counts.bookkept,
            counts.receives
        );
    }

    /// The live phase stays on the reactor: a relayed edit and the answer to it are
    /// both light ([`runs_inline`]). A payload of many bytes, or of few bytes that
    /// declare many ops (the op bomb), or one that does not parse, is not.
    #[test]
    fn live_edits_and_answers_are_applied_inline() {
        let (id, mut server_doc, mut server, with_change) = synced_then_changed();
        assert!(runs_inline(&with_change), "{} bytes", with_change.len());
        server
            .receive(id, &mut server_doc, &with_change)
            .expect("server receives");
        let answer = server.generate(id, &server_doc).expect("an answer");
        assert!(runs_inline(&answer), "{} bytes", answer.len());

        let bomb = include_bytes!("../../fuzz/regressions/apply/op-run-length-bomb");
        assert!(bomb.len() - 1 <= INLINE_BYTES);
        assert!(
            !runs_inline(&bomb[1..]),
            "a billion ops in {} bytes",
            bomb.len()
        );
        // Light in bytes, heavy in ops: a change of INLINE_OPS + 1 ops.
        let (mut writer, mut writer_side, _, _) = synced_writer(id);
        insert_nulls(&mut writer, "l", INLINE_OPS as usize);
        let heavy = writer_side.generate(id, &writer).expect("a change");
        assert!(heavy.len() <= INLINE_BYTES, "{} bytes", heavy.len());
        assert!(!runs_inline(&heavy));
        let carried: u64 = sync::Message::decode(&heavy)
            .expect("decodes")
            .changes
            .iter()
            .map(|bytes| {
                chunks::split(bytes)
                    .expect("chunks")
                    .iter()
                    .map(|chunk| match Change::try_from(*chunk) {
                        Ok(change) => change.len() as u64,
                        // automerge sends a version 2 peer the whole document for
                        // more than a third of it.
                        Err(_) => Automerge::load(chunk).expect("a document").stats().num_ops,
                    })
                    .sum::<u64>()
            })
            .sum();
        assert_eq!(
            chunks::sync_message_ops(&heavy, chunks::Budget::default()),
            Ok(carried),
            "counted from the headers as automerge counts them"
        );
        assert!(carried > INLINE_OPS);
        let mut large = with_change.clone();
        large.resize(INLINE_BYTES + 1, 0);
        assert!(!runs_inline(&large));
        assert!(!runs_inline(&[0x42, 0x05]), "does not parse");
        assert!(!runs_inline(&[]));
    }

    /// The message, and the changes it hands to a peer holding `base`: their hashes,
    /// sorted.
    fn change_hashes(data: &[u8], base: &Automerge) -> (sync::Message, Vec<ChangeHash>) {
        let message = sync::Message::decode(data).expect("decodes");
        let mut peer = base.clone();
        for chunk in message.changes.iter() {
            peer.load_incremental(chunk).expect("chunk loads");
        }
        let mut hashes: Vec<ChangeHash> = peer
            .get_changes(&base.get_heads())
            .iter()
            .map(|c| c.hash())
            .collect();
        hashes.sort();
        (message, hashes)
    }

    /// A subscriber's message built from changes encoded once carries the same changes
    /// and leaves the same sync state as automerge's own; the writer (who has the
    /// changes) and a peer that asked for nothing new get automerge's own message.
    #[test]
    fn encoded_changes_give_automerges_message_and_state() {
        let id = DocumentId::random();
        let mut server = fixed_history(30);
        let (mut to_reader, mut to_writer) = (PeerSync::new(), PeerSync::new());
        let mut reader = Automerge::new();
        let mut writer = fixed_fork(&Automerge::new(), 0xd1);
        let (mut reader_side, mut writer_side) = (PeerSync::new(), PeerSync::new());
        converge(
            &mut to_reader,
            &mut server,
            &mut reader_side,
            &mut reader,
            id,
        );
        converge(
            &mut to_writer,
            &mut server,
            &mut writer_side,
            &mut writer,
            id,
        );

        // The writer makes two changes and sends them; the server applies them.
        let before = server.get_heads();
        fixed_put(&mut writer, "new", "one");
        fixed_put(&mut writer, "new", "two");
        let message = writer_side
            .generate(id, &writer)
            .expect("writer says something");
        to_writer
            .receive(id, &mut server, &message)
            .expect("server applies");
        let encoded = EncodedChanges::since(&server, &before);
        assert_eq!(encoded.changes().len(), 2);

        // To the reader: our bytes, automerge's message and state.
        let reader_state = to_reader.states.get(&id).expect("state");
        assert_eq!(
            ours_to_send(reader_state, &server, &encoded).len(),
            2,
            "both new changes are ours to send to the reader"
        );
        assert!(
            after_last_sync(&server, &encoded, &last_sync(reader_state)),
            "the reader's last sync is before the commit: no walk over the history"
        );
        let ours = ours_to_send(reader_state, &server, &encoded);
        assert!(
            relayed(&mut reader_state.clone(), &server, &encoded, &ours).is_some(),
            "the reader was in sync before the commit: its message is built without automerge"
        );
        // Both message versions: a peer that advertised version 2 gets its changes as
        // one chunk.
        let (mut v1, mut v2) = (to_reader.clone(), to_reader.clone());
        for (peer, capability) in [
            (&mut v1, sync::Capability::MessageV1),
            (&mut v2, sync::Capability::MessageV2),
        ] {
            if let Some(state) = peer.states.get_mut(&id) {
                state.their_capabilities = Some(vec![capability]);
            }
        }
        let mut b = None;
        for (peer, version) in [
            (&v1, sync::MessageVersion::V1),
            (&v2, sync::MessageVersion::V2),
        ] {
            let mut plain = peer.clone();
            let mut cached = peer.clone();
            let a = plain.try_generate(id, &server).expect("ok").expect("some");
            let ours = cached
                .try_generate_with(id, &server, &encoded)
                .expect("ok")
                .expect("some");
            let (ma, ha) = change_hashes(&a.data, &reader);
            let (mb, hb) = change_hashes(&ours.data, &reader);
            assert_eq!(ha, hb, "the same changes ({version:?})");
            assert_eq!(ha.len(), 2);
            assert_eq!((ma.heads, ma.need, ma.have), (mb.heads, mb.need, mb.have));
            assert_eq!(mb.version, version);
            assert_eq!((ma.version, ma.flags), (mb.version, mb.flags));
            assert_eq!(a.carries_changes, ours.carries_changes);
            assert_eq!(
                plain.states.get(&id),
                cached.states.get(&id),
                "the same sync state"
            );
            b.get_or_insert(ours);
        }
        let b = b.expect("a message");

        // The reader applies it and the two converge as ever.
        reader_side
            .receive(id, &mut reader, &b.data)
            .expect("reader applies");
        assert_eq!(reader.get_heads(), server.get_heads());

        // To the writer, who has them: nothing of ours to add, and its acknowledgement
        // is built without automerge, byte for byte automerge's, for either version.
        let writer_state = to_writer.states.get(&id).expect("state");
        assert!(ours_to_send(writer_state, &server, &encoded).is_empty());
        assert!(
            acknowledged(&mut writer_state.clone(), &server, &encoded).is_some(),
            "the writer's acknowledgement is built without automerge"
        );
        for capability in [sync::Capability::MessageV1, sync::Capability::MessageV2] {
            let mut plain = to_writer.clone();
            if let Some(state) = plain.states.get_mut(&id) {
                state.their_capabilities = Some(vec![capability.clone()]);
            }
            let mut cached = plain.clone();
            let a = plain.try_generate(id, &server).expect("ok");
            let b = cached.try_generate_with(id, &server, &encoded).expect("ok");
            assert!(a.is_some(), "the writer is acknowledged");
            assert_eq!(
                a, b,
                "the writer gets automerge's own message ({capability:?})"
            );
            assert_eq!(plain.states.get(&id), cached.states.get(&id));
        }
        // A writer whose summary does not claim the changes is sent them by automerge.
        let mut unclaimed = to_writer.clone();
        if let Some(have) = unclaimed
            .states
            .get_mut(&id)
            .and_then(|state| state.their_have.as_mut())
            .and_then(|have| have.first_mut())
        {
            have.bloom = sync::BloomFilter::from_hashes(std::iter::empty::<ChangeHash>());
        }
        let unclaimed_state = unclaimed.states.get(&id).expect("state").clone();
        assert!(acknowledged(&mut unclaimed_state.clone(), &server, &encoded).is_none());
        let base = server
            .fork_at(&before)
            .expect("the server before the commit");
        let sent = automerges_changes(&unclaimed, id, &server, &encoded, &base);
        assert_eq!(
            sent.len(),
            2,
            "automerge sends the changes the summary lacks"
        );
        let mut cached = to_writer.clone();
        cached.try_generate_with(id, &server, &encoded).expect("ok");

        // Generated once, the changes count as sent: a second call adds nothing.
        let again = cached.try_generate_with(id, &server, &encoded).expect("ok");
        assert!(again.is_none_or(|out| !out.carries_changes));
    }

    /// A change relayed before the subscriber answered the last one: with the earlier
    /// encoded changes kept (`follows`), its message is still built here, and it is
    /// automerge's own, byte for byte, with the same session after, for either message
    /// version: only the new change (the earlier one was sent), a bloom filter over
    /// both at the heads before the first. Without them, or when the earlier change was
    /// not sent to this peer, automerge decides. The subscriber then converges.
    #[test]
    fn a_subscriber_that_has_not_answered_gets_automerges_message() {
        let id = DocumentId::random();
        let mut server = fixed_history(30);
        let (mut reader, mut to_reader, mut reader_side) = device_in_sync(&mut server, id);
        let at_rest = to_reader.clone();

        // The first commit goes out; the reader does not answer yet.
        let before_first = server.get_heads();
        fixed_put(&mut server, "first", "one");
        let first = EncodedChanges::since(&server, &before_first);
        let sent_first = to_reader
            .try_generate_with(id, &server, &first)
            .expect("ok")
            .expect("the first change goes out");

        // The second commit, kept with the first's hashes.
        let before_second = server.get_heads();
        fixed_put(&mut server, "second", "two");
        let alone = EncodedChanges::since(&server, &before_second);
        let second = alone.clone().follows(first.clone());
        assert_eq!(second.earlier.len(), 1);
        let state = to_reader.states.get(&id).expect("state");
        let ours = ours_to_send(state, &server, &second);
        assert_eq!(ours.len(), 1, "only the second change is still to send");
        assert!(
            relayed(&mut state.clone(), &server, &second, &ours).is_some(),
            "built without automerge"
        );
        let ours_alone = ours_to_send(state, &server, &alone);
        assert!(
            relayed(&mut state.clone(), &server, &alone, &ours_alone).is_none(),
            "without the first's hashes the filter cannot be told"
        );

        let answer = automerges_own_in_both_versions(&to_reader, id, &server, &second);
        let holds_first = server.fork_at(&before_second).expect("after the first");
        let (message, hashes) = change_hashes(&answer.data, &holds_first);
        assert_eq!(hashes, vec![alone.changes()[0].0], "only the second");
        assert_eq!(message.have[0].last_sync, before_first);

        // Not sent the first (its session from before): automerge sends both.
        let state = at_rest.states.get(&id).expect("state");
        let ours = ours_to_send(state, &server, &second);
        assert!(relayed(&mut state.clone(), &server, &second, &ours).is_none());
        let base = server.fork_at(&before_first).expect("before the first");
        let sent = automerges_changes(&at_rest, id, &server, &second, &base);
        assert_eq!(sent.len(), 2, "automerge sends both");

        // The reader takes both messages in turn and ends at the server's heads.
        for message in [sent_first.data, answer.data] {
            reader_side
                .receive(id, &mut reader, &message)
                .expect("reader applies");
        }
        converge(
            &mut to_reader,
            &mut server,
            &mut reader_side,
            &mut reader,
            id,
        );
        assert_eq!(reader.get_heads(), server.get_heads());
    }

    /// Subscribers in one place (message version, shared heads) get the message built
    /// for the first of them, byte for byte automerge's for each, each session moved as
    /// automerge moves it; a subscriber that has not answered the change before is
    /// elsewhere and gets its own.
    #[test]
    fn subscribers_in_one_place_share_one_built_message() {
        let id = DocumentId::random();
        let mut server = fixed_history(30);
        let (_, mut to_late, _) = device_in_sync(&mut server, id);
        let before_first = server.get_heads();
        fixed_put(&mut server, "first", "one");
        let first = EncodedChanges::since(&server, &before_first);
        to_late
            .try_generate_with(id, &server, &first)
            .expect("ok")
            .expect("the first change goes out, not answered");
        let (_, to_a, _) = device_in_sync(&mut server, id);
        let (_, to_b, _) = device_in_sync(&mut server, id);
        let before_second = server.get_heads();
        fixed_put(&mut server, "second", "two");
        let second = EncodedChanges::since(&server, &before_second).follows(first);
        let built = |encoded: &EncodedChanges| encoded.built.0.lock().expect("lock").len();

        let to_a_message = automerges_own_in_both_versions(&to_a, id, &server, &second);
        assert_eq!(built(&second), 2, "one message for each version");
        let to_b_message = automerges_own_in_both_versions(&to_b, id, &server, &second);
        assert_eq!(built(&second), 2, "the same place: the same messages");
        assert_eq!(to_a_message, to_b_message);
        let to_late_message = automerges_own_in_both_versions(&to_late, id, &server, &second);
        assert_eq!(built(&second), 4, "another place: its own messages");
        assert_ne!(to_late_message, to_a_message);
    }

    /// A writer's last sync lags its heads: it summarises from the heads before its own
    /// change. Sending two changes before our answer, it is still acknowledged without
    /// automerge; and another writer's change relayed to it before it answered is too.
    /// Both byte for byte automerge's message, with the same session after, for either
    /// version; without the earlier changes kept, automerge decides.
    #[test]
    fn a_writer_whose_last_sync_lags_gets_automerges_message() {
        let id = DocumentId::random();
        let mut server = fixed_history(30);
        let (device, mut to_writer, mut writer_side) = device_in_sync(&mut server, id);
        let mut writer = device.with_actor(automerge::ActorId::from([0xc1; 16]));

        // Two changes, each sent before the server answered.
        let mut encoded = EncodedChanges::default();
        for key in ["one", "two"] {
            fixed_put(&mut writer, key, "by the writer");
            let message = writer_side.generate(id, &writer).expect("writer says it");
            let before = server.get_heads();
            to_writer
                .receive(id, &mut server, &message)
                .expect("server applies");
            encoded = EncodedChanges::since(&server, &before).follows(encoded);
        }
        let state = to_writer.states.get(&id).expect("state");
        assert_ne!(last_sync(state), encoded.before, "the last sync lags");
        assert!(
            acknowledged(&mut state.clone(), &server, &encoded).is_some(),
            "acknowledged without automerge"
        );
        let unkept = encoded.clone().follows(EncodedChanges::default());
        assert!(acknowledged(&mut state.clone(), &server, &unkept).is_none());
        automerges_own_in_both_versions(&to_writer, id, &server, &encoded);
        to_writer
            .try_generate_with(id, &server, &encoded)
            .expect("ok")
            .expect("the acknowledgement");

        // Another device's change, relayed before the writer answered.
        let before = server.get_heads();
        let mut other = fixed_fork(&server, 0xc2);
        fixed_put(&mut other, "three", "elsewhere");
        server
            .apply_changes([other.get_last_local_change().expect("change")])
            .expect("applies");
        let third = EncodedChanges::since(&server, &before).follows(encoded);
        let state = to_writer.states.get(&id).expect("state");
        let ours = ours_to_send(state, &server, &third);
        assert_eq!(ours.len(), 1);
        assert!(
            relayed(&mut state.clone(), &server, &third, &ours).is_some(),
            "relayed without automerge"
        );
        let unkept = third.clone().follows(EncodedChanges::default());
        let ours_unkept = ours_to_send(state, &server, &unkept);
        assert!(relayed(&mut state.clone(), &server, &unkept, &ours_unkept).is_none());
        automerges_own_in_both_versions(&to_writer, id, &server, &third);
        let relay = to_writer
            .try_generate_with(id, &server, &third)
            .expect("ok")
            .expect("the third change");
        writer_side
            .receive(id, &mut writer, &relay.data)
            .expect("writer applies");
        converge(
            &mut to_writer,
            &mut server,
            &mut writer_side,
            &mut writer,
            id,
        );
        assert_eq!(writer.get_heads(), server.get_heads());
    }

    /// `follows` keeps the encoded changes that led up to these, at most
    /// [`EARLIER_KEPT`] of them, newest last, and none after a gap (changes that did
    /// not start where the last ones ended).
    #[test]
    fn follows_keeps_a_bounded_unbroken_chain() {
        let mut doc = fixed_history(3);
        let mut chain = EncodedChanges::default();
        let mut befores = Vec::new();
        for i in 0..EARLIER_KEPT + 3 {
            let before = doc.get_heads();
            fixed_put(&mut doc, "k", &i.to_string());
            befores.push(sorted(&before));
            chain = EncodedChanges::since(&doc, &before).follows(chain);
        }
        assert_eq!(chain.earlier.len(), EARLIER_KEPT);
        let kept: Vec<_> = chain.earlier.iter().map(|e| e.before.clone()).collect();
        assert_eq!(
            kept,
            befores[befores.len() - 1 - EARLIER_KEPT..befores.len() - 1]
        );
        for pair in chain.earlier.windows(2) {
            let later = doc.fork_at(&pair[1].before).expect("heads");
            assert_eq!(
                later
                    .get_changes(&pair[0].before)
                    .iter()
                    .map(|c| c.hash())
                    .collect::<Vec<_>>(),
                pair[0].hashes
            );
        }
        // A gap: changes that do not start at the chain's heads keep nothing.
        let before = doc.get_heads();
        fixed_put(&mut doc, "gap", "unseen");
        let skipped = doc.get_heads();
        fixed_put(&mut doc, "after", "gap");
        let after_gap = EncodedChanges::since(&doc, &skipped).follows(chain);
        assert!(after_gap.earlier.is_empty());
        assert_ne!(sorted(&before), after_gap.before);
    }

    /// A peer that had the encoded changes at its last sync gets none of them, also when
    /// its heads have moved past them to a change we lack (a device back from offline
    /// edits): automerge offers only changes after the last sync. Found by the
    /// `stateful` fuzz target, which compares the two generates.
    #[test]
    fn encoded_changes_before_the_peers_last_sync_stay_out() {
        let id = DocumentId::random();
        let mut server = with_history(30);
        let (mut device, mut to_device, mut device_side) = device_in_sync(&mut server, id);
        // A commit the device then syncs: the server keeps it encoded.
        let before = server.get_heads();
        put(&mut server, "new", "commit");
        let encoded = EncodedChanges::since(&server, &before);
        converge(
            &mut to_device,
            &mut server,
            &mut device_side,
            &mut device,
            id,
        );
        // Offline, the device edits; it reconnects from its persisted session and says
        // only its heads and what it has since the last sync.
        put(&mut device, "offline", "edit");
        let to_device = reconnected(&device_side, &device, &mut server, id);

        check_automerges_own(&to_device, id, &server, &encoded);
    }

    /// A peer that summarised nothing it has (no bloom filter, as only a hand-made
    /// message does) and asked for nothing gets none of the encoded changes: automerge
    /// then sends only what was asked for.
    #[test]
    fn encoded_changes_stay_out_without_a_summary() {
        let id = DocumentId::random();
        let mut server = doc_with("k0", "v0");
        let mut device = server.fork();
        let before = server.get_heads();
        put(&mut server, "new", "commit");
        let encoded = EncodedChanges::since(&server, &before);
        put(&mut device, "own", "edit");
        let bare = sync::Message {
            heads: device.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: device.get_changes(&before)[0].raw_bytes().to_vec().into(),
            flags: None,
            version: sync::MessageVersion::V1,
        };
        let mut to_device = PeerSync::new();
        to_device
            .receive(id, &mut server, &bare.encode())
            .expect("server takes the bare message");
        check_automerges_own(&to_device, id, &server, &encoded);
    }

    /// None of `encoded` is ours to send to this peer, and the message and the state
    /// are automerge's own.
    /// `try_generate_with` gives automerge's own message (byte for byte) and leaves the
    /// same session, to the peer as a version 1 and as a version 2 peer; returns the
    /// version 2 message.
    fn automerges_own_in_both_versions(
        to_peer: &PeerSync,
        id: DocumentId,
        server: &Automerge,
        encoded: &EncodedChanges,
    ) -> Outgoing {
        let mut last = None;
        for capability in [sync::Capability::MessageV1, sync::Capability::MessageV2] {
            let mut plain = to_peer.clone();
            if let Some(state) = plain.states.get_mut(&id) {
                state.their_capabilities = Some(vec![capability.clone()]);
            }
            let mut cached = plain.clone();
            let a = plain.try_generate(id, server).expect("ok");
            let b = cached.try_generate_with(id, server, encoded).expect("ok");
            assert!(a.is_some(), "a message ({capability:?})");
            assert_eq!(a, b, "automerge's own message ({capability:?})");
            assert_eq!(plain.states.get(&id), cached.states.get(&id));
            last = b;
        }
        last.expect("a message")
    }

    /// `try_generate_with` sends the changes automerge's generate sends (to a peer
    /// holding `base`) with the same heads, need and summary, and leaves the same
    /// session; returns their hashes, sorted.
    fn automerges_changes(
        to_peer: &PeerSync,
        id: DocumentId,
        server: &Automerge,
        encoded: &EncodedChanges,
        base: &Automerge,
    ) -> Vec<ChangeHash> {
        let (mut plain, mut cached) = (to_peer.clone(), to_peer.clone());
        let a = plain.try_generate(id, server).expect("ok").expect("some");
        let b = cached
            .try_generate_with(id, server, encoded)
            .expect("ok")
            .expect("some");
        let ((ma, ha), (mb, hb)) = (change_hashes(&a.data, base), change_hashes(&b.data, base));
        assert_eq!(ha, hb, "the same changes");
        assert_eq!((ma.heads, ma.need, ma.have), (mb.heads, mb.need, mb.have));
        assert_eq!(plain.states.get(&id), cached.states.get(&id));
        ha
    }

    fn check_automerges_own(
        to_peer: &PeerSync,
        id: DocumentId,
        server: &Automerge,
        encoded: &EncodedChanges,
    ) {
        let state = to_peer.states.get(&id).expect("state");
        assert!(ours_to_send(state, server, encoded).is_empty());
        let mut plain = to_peer.clone();
        let mut cached = to_peer.clone();
        let a = plain.try_generate(id, server).expect("ok");
        let b = cached.try_generate_with(id, server, encoded).expect("ok");
        assert_eq!(a, b, "automerge's own message");
        assert_eq!(plain.states.get(&id), cached.states.get(&id));
    }

    /// The heads a peer's summaries name as its last sync.
    fn last_sync(state: &sync::State) -> Vec<ChangeHash> {
        state
            .their_have
            .iter()
            .flatten()
            .flat_map(|have| have.last_sync.iter().copied())
            .collect()
    }

    /// Encoded changes that are no longer the document's newest (another node's change
    /// came after them) are filtered by the peer's last sync as ever: a peer whose last
    /// sync is that later change, which builds on ours, gets none of ours. Without the
    /// heads check the shortcut would send them again.
    #[test]
    fn encoded_changes_behind_a_later_change_stay_out() {
        let id = DocumentId::random();
        let mut server = doc_with("k0", "v0");
        let (mut device, mut to_device, mut device_side) = device_in_sync(&mut server, id);
        // A commit, kept encoded; then a change of another node built on it.
        let before = server.get_heads();
        put(&mut server, "new", "commit");
        let encoded = EncodedChanges::since(&server, &before);
        let mut other_node = server.fork();
        put(&mut other_node, "later", "elsewhere");
        let later = other_node.get_last_local_change().expect("change");
        server.apply_changes([later]).expect("caught up");
        // The device syncs both, then reconnects from its persisted session.
        converge(
            &mut to_device,
            &mut server,
            &mut device_side,
            &mut device,
            id,
        );
        let to_device = reconnected(&device_side, &device, &mut server, id);
        let state = to_device.states.get(&id).expect("state");
        assert!(!after_last_sync(&server, &encoded, &last_sync(state)));
        check_automerges_own(&to_device, id, &server, &encoded);
    }

    /// What [`Applied::new_changes`] hands out is `get_changes(heads_before)` on the
    /// document after the message: hashes, bytes and order. `from_message`: whether
    /// they were the message's own changes (the shortcut) or automerge's.
    fn check_handed_out(applied: &Applied, doc: &Automerge, from_message: bool) {
        assert_eq!(
            applied.new_changes.get().is_some(),
            from_message,
            "taken from the message"
        );
        let raw = |changes: &[Change]| -> Vec<(ChangeHash, Vec<u8>)> {
            changes
                .iter()
                .map(|c| (c.hash(), c.raw_bytes().to_vec()))
                .collect()
        };
        let automerges = raw(&doc.get_changes(&applied.heads_before));
        assert!(!automerges.is_empty());
        assert_eq!(raw(applied.new_changes(doc)), automerges);
    }

    /// A sync message as a hand-made client may send it: `changes` as they are, no
    /// summary.
    fn message_of(changes: Vec<Vec<u8>>, heads: Vec<ChangeHash>) -> Vec<u8> {
        sync::Message {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::from(changes),
            flags: None,
            version: sync::MessageVersion::V1,
        }
        .encode()
    }

    /// Receives `message` on `doc` under a check that accepts.
    fn accept(doc: &mut Automerge, message: &[u8]) -> Applied {
        PeerSync::new()
            .receive_checked(DocumentId::from_bytes([3; 16]), doc, message, |_, _| {
                Ok::<(), ()>(())
            })
            .expect("accepted")
    }

    /// A document of `changes` changes (each puts a key), so that automerge's sync sends a few new changes
    /// as changes (to a version 2 peer it sends the whole document instead when the new
    /// ones are more than a third of all).
    fn with_history(changes: usize) -> Automerge {
        let mut doc = doc_with("k0", "v0");
        for i in 1..changes {
            put(&mut doc, &format!("k{i}"), "history");
        }
        doc
    }

    /// A document of `changes` changes as [`with_history`] makes, with the same hashes
    /// every run (a fixed actor, commit times 0), and a fork of it with actor `n`:
    /// automerge's sync leaves out a change its peer's bloom filter claims to hold (a
    /// false positive, about 1 in 100 for random hashes), so a test that needs
    /// automerge to send a change uses changes whose hashes are known not to collide.
    fn fixed_history(changes: usize) -> Automerge {
        let mut doc = Automerge::new().with_actor(automerge::ActorId::from([0xb0; 16]));
        for i in 0..changes {
            fixed_put(&mut doc, &format!("k{i}"), "history");
        }
        doc
    }

    /// A fork of `doc` whose changes are `actor`'s.
    fn fixed_fork(doc: &Automerge, actor: u8) -> Automerge {
        doc.fork().with_actor(automerge::ActorId::from([actor; 16]))
    }

    /// [`put`] committed at time 0, so the change's hash depends on its content only.
    fn fixed_put(doc: &mut Automerge, key: &str, value: &str) {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).expect("put");
        tx.commit_with(automerge::transaction::CommitOptions::default().with_time(0));
    }

    /// What automerge's sync sends from `writer` to a server holding `server_doc`
    /// (its first message after the server's hello).
    fn sent_by_sync(server_doc: &Automerge, mut writer: Automerge) -> Vec<u8> {
        let id = DocumentId::random();
        let (mut server, mut writer_side) = (PeerSync::new(), PeerSync::new());
        let hello = server.generate(id, server_doc).expect("hello");
        writer_side
            .receive(id, &mut writer, &hello)
            .expect("writer takes the hello");
        writer_side.generate(id, &writer).expect("changes")
    }

    /// One change, as automerge's sync sends it (both message versions): the message's
    /// own bytes, and they are automerge's.
    #[test]
    fn one_new_change_is_the_messages_own() {
        let base = fixed_history(21);
        let mut writer = fixed_fork(&base, 1);
        fixed_put(&mut writer, "new", "change");
        let v2 = sent_by_sync(&base, writer.clone());
        let mut v1 = sync::Message::decode(&v2).expect("decodes");
        assert_eq!(v1.version, sync::MessageVersion::V2);
        v1.version = sync::MessageVersion::V1;
        v1.flags = None;
        for sent in [v2, v1.encode()] {
            let mut doc = base.clone();
            let applied = accept(&mut doc, &sent);
            assert_eq!(doc.get_heads(), writer.get_heads());
            check_handed_out(&applied, &doc, true);
        }
    }

    /// A writer's edits since it last synced, with a merged change of another device in
    /// between: `base`, the writer with `w1 → w2`, `f1` from the other device, and
    /// `w3` on both; each as (hash, raw bytes).
    fn branching_edits() -> (Automerge, Automerge, Vec<Change>) {
        let base = fixed_history(21);
        let mut writer = fixed_fork(&base, 1);
        let mut other = fixed_fork(&base, 2);
        fixed_put(&mut writer, "x", "w1");
        fixed_put(&mut writer, "y", "w2");
        fixed_put(&mut other, "z", "f1");
        writer.merge(&mut other).expect("merge");
        fixed_put(&mut writer, "m", "w3");
        let changes = writer.get_changes(&base.get_heads());
        assert_eq!(changes.len(), 4);
        (base, writer, changes)
    }

    /// Several new changes in one message, in whatever order the message has them
    /// (automerge's, reversed, or concatenated into one chunk as version 2 sends
    /// them): the message's own, in automerge's order.
    #[test]
    fn several_new_changes_come_in_automerges_order() {
        let (base, writer, changes) = branching_edits();
        let heads = writer.get_heads();
        let raw: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
        let reversed: Vec<Vec<u8>> = raw.iter().rev().cloned().collect();
        let joined = vec![reversed.concat()];
        for (name, chunks) in [
            ("in order", raw),
            ("reversed", reversed),
            ("joined", joined),
        ] {
            let mut doc = base.clone();
            let applied = accept(&mut doc, &message_of(chunks, heads.clone()));
            assert_eq!(doc.get_heads(), heads, "{name}");
            check_handed_out(&applied, &doc, true);
        }
        // automerge's own message from the writer's side, too.
        let mut doc = base.clone();
        let applied = accept(&mut doc, &sent_by_sync(&base, writer.clone()));
        assert_eq!(doc.get_heads(), writer.get_heads());
        check_handed_out(&applied, &doc, true);
    }

    /// A message whose changes the document partly had (another device's change
    /// reached it first): the ones it lacked, from the message.
    #[test]
    fn changes_known_before_are_not_handed_out() {
        let (base, writer, changes) = branching_edits();
        let mut doc = base.clone();
        let known = changes
            .iter()
            .find(|c| c.actor_id() != writer.get_actor())
            .expect("the other device's change")
            .clone();
        doc.apply_changes([known.clone()]).expect("known before");
        let raw = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
        let applied = accept(&mut doc, &message_of(raw, writer.get_heads()));
        check_handed_out(&applied, &doc, true);
        assert!(!applied
            .new_changes(&doc)
            .iter()
            .any(|c| c.hash() == known.hash()));
    }

    /// A message that drains automerge's queue (the change a queued one waited for):
    /// automerge's changes, both of them.
    #[test]
    fn a_drained_queue_hands_out_automerges_changes() {
        let mut doc = doc_with("k", "v");
        let (orphan, ahead) = orphan_message(&doc);
        let queued = accept(&mut doc, &orphan);
        assert!(queued.queue_grew && !queued.changed());
        assert!(queued.new_changes(&doc).is_empty());
        let withheld = ahead.get_changes(&doc.get_heads())[0].raw_bytes().to_vec();
        let applied = accept(&mut doc, &message_of(vec![withheld], ahead.get_heads()));
        assert_eq!(doc.get_heads(), ahead.get_heads());
        check_handed_out(&applied, &doc, false);
        assert_eq!(applied.new_changes(&doc).len(), 2);
    }

    /// Chunks that are not plain changes — a compressed change, a whole document —
    /// and a chunk automerge stops loading at (its checksum is wrong): automerge's
    /// changes.
    #[test]
    fn other_chunks_hand_out_automerges_changes() {
        let base = doc_with("k", "v");
        let mut writer = base.fork();
        put(&mut writer, "long", &"lang verhaal ".repeat(100));
        let mut change = writer.get_last_local_change().expect("change");
        let raw = change.raw_bytes().to_vec();
        let compressed = change.bytes().to_vec();
        assert_eq!(
            compressed.get(8),
            Some(&2),
            "automerge compressed the change"
        );
        assert!(compressed.len() < raw.len());
        put(&mut writer, "second", "change");
        let mut bad_checksum = writer
            .get_last_local_change()
            .expect("change")
            .raw_bytes()
            .to_vec();
        bad_checksum[4] ^= 0xff;
        let cases = [
            ("compressed", vec![compressed], 1),
            ("document", vec![writer.save()], 2),
            ("cut short at a bad checksum", vec![raw, bad_checksum], 1),
        ];
        for (name, chunks, added) in cases {
            let mut doc = base.clone();
            let applied = accept(&mut doc, &message_of(chunks, writer.get_heads()));
            check_handed_out(&applied, &doc, false);
            assert_eq!(applied.new_changes(&doc).len(), added, "{name}");
        }
    }

    /// Two sides with different edits converge to the same heads and content.
    #[test]
    fn two_sides_converge() {
        let id = DocumentId::random();
        let mut doc_a = doc_with("a", "1");
        let mut doc_b = doc_a.fork();
        put(&mut doc_a, "x", "from a");
        put(&mut doc_b, "y", "from b");
        let (mut a, mut b) = (PeerSync::new(), PeerSync::new());
        converge(&mut a, &mut doc_a, &mut b, &mut doc_b, id);
        assert_eq!(doc_a.get_heads(), doc_b.get_heads());
        for doc in [&doc_a, &doc_b] {
            assert!(doc.get(ROOT, "x").expect("get").is_some());
            assert!(doc.get(ROOT, "y").expect("get").is_some());
        }
    }

    /// A refused message leaves document and session as they were, and the next
    /// acceptable exchange still converges.
    #[test]
    fn refused_message_rolls_back() {
        let id = DocumentId::random();
        let mut server_doc = doc_with("meta", "fixed");
        let mut client_doc = server_doc.fork();
        let (mut server, mut client) = (PeerSync::new(), PeerSync::new());
        converge(
            &mut client,
            &mut client_doc,
            &mut server,
            &mut server_doc,
            id,
        );
        let before = server_doc.get_heads();

        put(&mut client_doc, "meta", "changed");
        let mut refused = false;
        for _ in 0..10 {
            let Some(m) = client.generate(id, &client_doc) else {
                break;
            };
            match server.receive_checked(id, &mut server_doc, &m, |doc, _| {
                match doc.get(ROOT, "meta").expect("get") {
                    Some((v, _)) if v.as_str() == Some("fixed") => Ok(()),
                    _ => Err("meta changed"),
                }
            }) {
                Err(Rejected::Check("meta changed")) => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("unexpected {e:?}"),
                Ok(_) => {}
            }
            if let Some(reply) = server.generate(id, &server_doc) {
                client
                    .receive(id, &mut client_doc, &reply)
                    .expect("client receives");
            }
        }
        assert!(refused, "the meta change was never refused");
        assert_eq!(server_doc.get_heads(), before);
        let meta = server_doc
            .get(ROOT, "meta")
            .expect("get")
            .map(|(v, _)| v.to_string());
        assert_eq!(meta.as_deref(), Some("\"fixed\""));
    }

    /// A sync message carrying only `orphan`'s change (its dependency withheld).
    fn orphan_message(doc: &Automerge) -> (Vec<u8>, Automerge) {
        let mut ahead = doc.fork();
        put(&mut ahead, "withheld", "x");
        put(&mut ahead, "orphan", &"y".repeat(4096));
        let orphan = ahead.get_last_local_change().expect("change");
        let message = sync::Message {
            heads: ahead.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::from(vec![orphan.raw_bytes().to_vec()]),
            flags: None,
            version: sync::MessageVersion::V1,
        };
        (message.encode(), ahead)
    }

    /// A message whose changes wait for a missing dependency is checked (the heads do
    /// not move), and a refusal leaves nothing in automerge's queue.
    #[test]
    fn queued_changes_are_checked_and_dropped_on_refusal() {
        let id = DocumentId::random();
        let mut doc = doc_with("k", "v");
        let heads = doc.get_heads();
        let (message, _) = orphan_message(&doc);
        let mut peer = PeerSync::new();
        let mut checked = None;
        let result = peer.receive_checked(id, &mut doc, &message, |_, applied| {
            checked = Some(applied.clone());
            Err("read-only")
        });
        assert_eq!(result, Err(Rejected::Check("read-only")));
        let applied = checked.expect("the check ran");
        assert!(!applied.changed() && applied.queue_grew);
        assert!(applied.queued_bytes >= 4096, "{}", applied.queued_bytes);
        assert_eq!(doc.get_heads(), heads);
        assert!(!has_queued(&doc), "the refused change stayed queued");
        assert_eq!(queued_bytes(&doc), 0);
    }

    /// An accepted queued change waits, and applies once its dependency arrives.
    #[test]
    fn accepted_queued_changes_apply_when_the_dependency_arrives() {
        let id = DocumentId::random();
        let mut doc = doc_with("k", "v");
        let (message, mut ahead) = orphan_message(&doc);
        let mut peer = PeerSync::new();
        let applied = peer
            .receive_checked(id, &mut doc, &message, |_, _| Ok::<(), ()>(()))
            .expect("accepted");
        assert!(applied.queue_grew && !applied.changed());
        assert!(has_queued(&doc));
        let mut device = PeerSync::new();
        converge(&mut device, &mut ahead, &mut peer, &mut doc, id);
        assert_eq!(doc.get_heads(), ahead.get_heads());
        assert!(!has_queued(&doc));
    }

    /// Inserts `n` nulls into the list at `key` (made if missing) in one change: a few
    /// bytes of run-length-encoded columns whatever `n` is.
    fn insert_nulls(doc: &mut Automerge, key: &str, n: usize) {
        let mut tx = doc.transaction();
        let list = match tx.get(ROOT, key).expect("get") {
            Some((_, list)) => list,
            None => tx
                .put_object(ROOT, key, automerge::ObjType::List)
                .expect("list"),
        };
        let at = tx.length(&list);
        for i in 0..n {
            tx.insert(&list, at + i, automerge::ScalarValue::Null)
                .expect("insert");
        }
        tx.commit();
    }

    fn too_many_ops(result: Result<Applied, Rejected<()>>) -> String {
        match result {
            Err(Rejected::Sync(SyncError::TooManyOps(why))) => why,
            other => panic!("expected a refusal for too many ops, got {other:?}"),
        }
    }

    /// A message whose changes declare more ops than a document may hold is refused
    /// before automerge parses it: the check never runs, document and session are as
    /// before. The billion-op finding is refused under the default limit at once.
    #[test]
    fn messages_declaring_more_ops_than_the_limit_are_refused() {
        let id = DocumentId::random();
        let (mut writer_doc, mut writer, mut server_doc, server) = synced_writer(id);
        let mut server = server.with_max_ops(20);
        insert_nulls(&mut writer_doc, "l", 20); // and the list: 21 ops
        let sent = writer.generate(id, &writer_doc).expect("a change to send");
        let (heads, session) = (server_doc.get_heads(), server.session(&id).cloned());
        let mut checked = false;
        let why = too_many_ops(server.receive_checked(id, &mut server_doc, &sent, |_, _| {
            checked = true;
            Ok(())
        }));
        assert!(why.contains("more than 20 operations"), "{why}");
        assert!(!checked, "the check ran on a refused message");
        assert_eq!(server_doc.get_heads(), heads);
        assert_eq!(server_doc.stats().num_ops, 1);
        assert_eq!(server.session(&id).cloned(), session, "the session moved");

        let finding = include_bytes!("../../fuzz/regressions/apply/op-run-length-bomb");
        let mut fresh = PeerSync::new();
        let why =
            too_many_ops(fresh.receive_checked(id, &mut server_doc, &finding[1..], |_, _| Ok(())));
        assert!(
            why.contains(&format!("more than {} operations", chunks::MAX_OPS)),
            "{why}"
        );
        assert_eq!(server_doc.get_heads(), heads);
        assert!(!fresh.has(&id), "a refused payload left a session behind");
    }

    /// Messages each within the limit cannot grow a document past it: the one that
    /// crosses it is refused after automerge applied it and rolled back, document and
    /// session alike, and the document takes changes again within the limit.
    #[test]
    fn the_message_that_crosses_the_document_limit_is_rolled_back() {
        let id = DocumentId::random();
        let mut writer_doc = doc_with("a", "1");
        let mut writer = PeerSync::new();
        let mut server_doc = Automerge::new();
        let mut server = PeerSync::new().with_max_ops(30);
        // The writer's next message, and the server's answer to an accepted one.
        let send = |writer: &mut PeerSync,
                    writer_doc: &mut Automerge,
                    server: &mut PeerSync,
                    server_doc: &mut Automerge| {
            let sent = writer.generate(id, writer_doc).expect("a change to send");
            let result = server.receive_checked(id, server_doc, &sent, |_, _| Ok(()));
            if result.is_ok() {
                if let Some(reply) = server.generate(id, server_doc) {
                    writer.receive(id, writer_doc, &reply).expect("reply");
                }
            }
            result
        };
        let (w, wd, s, sd) = (&mut writer, &mut writer_doc, &mut server, &mut server_doc);
        send(w, wd, s, sd).expect("the first change");
        insert_nulls(wd, "l", 9); // and the list: 10 ops, 11 in all
        send(w, wd, s, sd).expect("11 ops");
        insert_nulls(wd, "l", 10);
        send(w, wd, s, sd).expect("21 ops");
        let (heads, session) = (sd.get_heads(), s.session(&id).cloned());
        insert_nulls(wd, "l", 10);
        let why = too_many_ops(send(w, wd, s, sd));
        assert_eq!(why, "the document would hold more than 30 operations");
        assert_eq!(server_doc.get_heads(), heads, "not rolled back");
        assert_eq!(server_doc.stats().num_ops, 21);
        assert_eq!(server.session(&id).cloned(), session, "the session moved");
        // Up to the limit exactly is fine.
        let mut other = server_doc.fork();
        insert_nulls(&mut other, "m", 8); // and the list: 9 ops, 30 in all
        let mut device = PeerSync::new();
        let sent = device.generate(id, &other).expect("hello");
        let mut fresh = PeerSync::new().with_max_ops(30);
        fresh
            .receive_checked(id, &mut server_doc, &sent, |_, _| Ok::<(), ()>(()))
            .expect("a hello");
        converge(&mut device, &mut other, &mut fresh, &mut server_doc, id);
        assert_eq!(server_doc.stats().num_ops, 30);
    }

    /// Changes waiting in automerge's queue count against the limit: a message may not
    /// park more ops than the document may still hold, since the one that brings their
    /// dependency applies them all at once. The refusal drops the queue.
    #[test]
    fn queued_ops_count_against_the_document_limit() {
        let id = DocumentId::random();
        let mut doc = doc_with("k", "v");
        let mut ahead = doc.fork();
        put(&mut ahead, "withheld", "x");
        let orphans: Vec<Vec<u8>> = ["l", "m"]
            .into_iter()
            .map(|key| {
                insert_nulls(&mut ahead, key, 24); // and the list: 25 ops
                ahead
                    .get_last_local_change()
                    .expect("change")
                    .raw_bytes()
                    .to_vec()
            })
            .collect();
        let carrying = |chunk: &Vec<u8>| {
            sync::Message {
                heads: Vec::new(),
                need: Vec::new(),
                have: Vec::new(),
                changes: sync::ChunkList::from(vec![chunk.clone()]),
                flags: None,
                version: sync::MessageVersion::V1,
            }
            .encode()
        };
        let mut peer = PeerSync::new().with_max_ops(30);
        let applied = peer
            .receive_checked(
                id,
                &mut doc,
                &carrying(&orphans[0]),
                |_, _| Ok::<(), ()>(()),
            )
            .expect("1 op and 25 waiting");
        assert!(applied.queue_grew && !applied.changed());
        assert_eq!(queue_of(&doc).ops, 25);
        let why =
            too_many_ops(peer.receive_checked(id, &mut doc, &carrying(&orphans[1]), |_, _| Ok(())));
        assert_eq!(why, "the document would hold more than 30 operations");
        assert!(!has_queued(&doc), "the queue stayed");
        assert_eq!(doc.stats().num_ops, 1);
    }

    /// Garbage payloads are errors and change nothing.
    #[test]
    fn invalid_payloads_are_errors() {
        let id = DocumentId::random();
        let mut doc = doc_with("k", "v");
        let heads = doc.get_heads();
        let mut peer = PeerSync::new();
        for garbage in [
            &b""[..],
            b"\x42",
            b"\x42\xff\xff\xff\xff\xff",
            b"hello world",
        ] {
            assert!(
                matches!(
                    peer.receive(id, &mut doc, garbage),
                    Err(SyncError::InvalidMessage(_))
                ),
                "{garbage:?}"
            );
            assert_eq!(doc.get_heads(), heads);
        }
    }

    /// A payload on which automerge 0.12 panics is a typed error; document and sessions
    /// are as before. The payload: a version 2 sync message carrying a whole document
    /// whose value column is cut short (hexane `RawColumnIter::take` "would cross slab
    /// boundary"). The earlier finding, through a bundle chunk, no longer reaches
    /// automerge (`chunks`).
    #[test]
    fn library_panic_is_an_error_and_leaves_no_trace() {
        crate::guard::install_panic_hook();
        let finding =
            include_bytes!("../../fuzz/regressions/apply/hexane-raw-column-take-v2-document");
        let payload = &finding[1..]; // the first byte is the fuzz target's mode byte
        let id = DocumentId::random();
        let mut doc = doc_with("k", "v");
        let heads = doc.get_heads();
        let mut peer = PeerSync::new();
        match peer.receive(id, &mut doc, payload) {
            Err(SyncError::Panicked(p)) => assert_eq!(p.site, crate::guard::Site::Receive),
            other => panic!("expected a caught panic, got {other:?}"),
        }
        assert_eq!(doc.get_heads(), heads);
        assert!(!peer.has(&id), "a refused payload left a session behind");
        assert_eq!(
            doc.get(ROOT, "k")
                .expect("get")
                .map(|(v, _)| v.to_string())
                .as_deref(),
            Some("\"v\"")
        );
    }

    /// A persisted session resumes with the shared heads, so a reconnect sends less.
    #[test]
    fn persisted_state_resumes() {
        let id = DocumentId::random();
        let mut doc_a = doc_with("a", "1");
        for i in 0..50 {
            put(&mut doc_a, "k", &i.to_string());
        }
        let mut doc_b = Automerge::new();
        let (mut a, mut b) = (PeerSync::new(), PeerSync::new());
        converge(&mut a, &mut doc_a, &mut b, &mut doc_b, id);
        let saved = b.persistable_state(&id).expect("state");

        put(&mut doc_a, "k", "after");
        let mut a2 = PeerSync::new();
        let mut b2 = PeerSync::new();
        b2.resume(id, &saved);
        let first_b = b2.generate(id, &doc_b).expect("b speaks first");
        a2.receive(id, &mut doc_a, &first_b).expect("a receives");
        let reply = a2.generate(id, &doc_a).expect("a replies");
        // Only the one new change travels, not the 51 before it.
        let msg = sync::Message::decode(&reply).expect("decode");
        let change_bytes: usize = msg.changes.iter().map(<[u8]>::len).sum();
        assert!(
            change_bytes < doc_a.save().len(),
            "resumed sync resent the history"
        );
        assert!(b2.has(&id));
    }

    /// `in_sync` and `peer_has` follow what the other side reported: false before it
    /// spoke, true once it acknowledged our change, also when a later change of its own
    /// built on ours.
    #[test]
    fn in_sync_and_peer_has_follow_the_peer() {
        let id = DocumentId::random();
        let mut doc_a = doc_with("a", "1");
        let mut doc_b = doc_a.fork();
        let (mut a, mut b) = (PeerSync::new(), PeerSync::new());
        assert!(!a.in_sync(&id, &doc_a));
        converge(&mut a, &mut doc_a, &mut b, &mut doc_b, id);
        assert!(a.in_sync(&id, &doc_a) && b.in_sync(&id, &doc_b));

        put(&mut doc_a, "x", "new");
        let ours = doc_a.get_heads()[0];
        assert!(!a.in_sync(&id, &doc_a));
        assert!(!a.peer_has(&id, &doc_a, &ours));
        converge(&mut a, &mut doc_a, &mut b, &mut doc_b, id);
        assert!(a.peer_has(&id, &doc_a, &ours));

        // b builds on our change; its heads no longer name it, but it still has it.
        put(&mut doc_b, "y", "later");
        converge(&mut a, &mut doc_a, &mut b, &mut doc_b, id);
        assert!(!doc_a.get_heads().contains(&ours));
        assert!(a.peer_has(&id, &doc_a, &ours));
        assert!(a.in_sync(&id, &doc_a));
    }

    /// `request` is used while we hold nothing, `sync` once we have the document.
    #[test]
    fn wrap_chooses_request_or_sync() {
        let id = DocumentId::random();
        let empty = Automerge::new();
        let full = doc_with("k", "v");
        assert!(matches!(
            wrap("a", "b", id, &empty, vec![1]),
            Message::Request { .. }
        ));
        assert!(matches!(
            wrap("a", "b", id, &full, vec![1]),
            Message::Sync { .. }
        ));
    }
}
