//! One simulated device: its documents (which outlive connections), a sync-core
//! [`PeerSync`] engine, and at most one websocket to the server.
//!
//! A device answers every sync message like a real automerge-repo peer, follows which
//! of its documents are in sync with the server, which of its own changes the server
//! has taken (committed), and which tracked changes of other devices reached it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash, ReadDoc};
use futures_util::{SinkExt, StreamExt};
use sync_core::engine::{wrap, PeerSync};
use sync_core::protocol::{
    self, summary_frames, DocumentId, Message, PeerMetadata, SUMMARY_CAPABILITY, SUMMARY_VERSION,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::metrics::{lock, Probe, Tracked};
use crate::workload::{self, DeviceSpec, Role};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connect or handshake may take before it counts as an error.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// A change the server has not taken after this long is an error.
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// Silence after which a device re-syncs documents it still waits on.
const STALL: Duration = Duration::from_secs(2);

/// A document on the device.
pub struct Held {
    pub doc: Automerge,
    pub is_plan: bool,
}

/// Phase-wide coordination: how many devices are still busy, and when to stop.
#[derive(Debug, Default)]
pub struct Coord {
    pub busy: AtomicIsize,
    pub stop: AtomicBool,
}

/// A simulated device.
pub struct Device {
    pub idx: usize,
    pub spec: DeviceSpec,
    url: String,
    token: Option<String>,
    pub docs: HashMap<DocumentId, Held>,
    /// Documents this device edits (plans for professionals, activiteiten for volunteers).
    editable: Vec<DocumentId>,
    engine: PeerSync,
    ws: Option<Ws>,
    server_peer: String,
    pub rng: fastrand::Rng,
    /// Held documents not in sync with the server as of its last message.
    unsynced: HashSet<DocumentId>,
    /// Our changes the server has not yet reported holding.
    outstanding: Vec<(DocumentId, ChangeHash, Instant)>,
    /// Tracked changes this device wrote, for the convergence check.
    written: HashMap<ChangeHash, DocumentId>,
    last_frame: Instant,
    /// Connections opened so far; part of the peerId.
    connections: u32,
    /// Announce the summary capability and, where the server answers it, send one
    /// summary at connect instead of a sync message per document (`--no-summary`: off).
    pub use_summary: bool,
    /// Heads the server confirmed holding (summary answer or acknowledgement), sorted:
    /// a document whose heads are still these needs no sync session to be in sync.
    confirmed: HashMap<DocumentId, Vec<ChangeHash>>,
}

/// Documents a device puts on the server before it waits for them (`push_all`).
pub const PUSH_BATCH: usize = 100;

impl Device {
    pub fn new(idx: usize, spec: DeviceSpec, url: &str, token: Option<String>, seed: u64) -> Self {
        Device {
            idx,
            spec,
            url: url.to_owned(),
            token,
            docs: HashMap::new(),
            editable: Vec::new(),
            engine: PeerSync::new(),
            ws: None,
            server_peer: String::new(),
            rng: fastrand::Rng::with_seed(seed),
            unsynced: HashSet::new(),
            outstanding: Vec::new(),
            written: HashMap::new(),
            last_frame: Instant::now(),
            connections: 0,
            use_summary: true,
            confirmed: HashMap::new(),
        }
    }

    /// Adds a document: one we created, or an empty one to fetch from the server.
    pub fn hold(&mut self, id: DocumentId, doc: Automerge, is_plan: bool) {
        let editable = match self.spec.role {
            Role::Professional => is_plan,
            Role::Volunteer => !is_plan,
        };
        if editable {
            self.editable.push(id);
        }
        self.docs.insert(id, Held { doc, is_plan });
    }

    /// Adds a document while online and offers it to the server at once.
    pub async fn add_and_push(
        &mut self,
        id: DocumentId,
        doc: Automerge,
        is_plan: bool,
        probe: &Probe,
    ) {
        self.hold(id, doc, is_plan);
        self.engine.open(id);
        self.unsynced.insert(id);
        self.push(id, probe, false).await;
    }

    /// Puts `docs` on the server in batches of [`PUSH_BATCH`] (a server may limit how
    /// many creations one connection has in flight; ours: 256), waiting after each
    /// batch until the server took it; on a timeout, why not.
    pub async fn push_all(
        &mut self,
        docs: Vec<(DocumentId, Automerge, bool)>,
        probe: &Probe,
        limit: Duration,
    ) -> Result<(), String> {
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() {
            for (id, doc, is_plan) in docs.by_ref().take(PUSH_BATCH) {
                self.add_and_push(id, doc, is_plan, probe).await;
            }
            self.send_queued(probe).await;
            if !self.pump_until_synced(probe, Instant::now() + limit).await {
                return Err(format!(
                    "{} {:?}",
                    self.why_unsynced(),
                    probe.error_samples()
                ));
            }
        }
        Ok(())
    }

    /// Sends what `add_and_push` queued.
    pub async fn send_queued(&mut self, probe: &Probe) {
        self.flush(probe).await;
    }

    pub fn is_online(&self) -> bool {
        self.ws.is_some()
    }

    /// Opens a websocket, joins, and offers every held document (a `request` for those
    /// still empty). Sync sessions restart from their persisted form, as automerge-repo
    /// does across reconnects.
    pub async fn connect(&mut self, probe: &Probe) -> Result<(), String> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        if let Some(token) = &self.token {
            let value =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
            request.headers_mut().insert("Authorization", value);
        }
        let (mut ws, _) =
            tokio::time::timeout(CONNECT_WAIT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
        // A new peerId per connection (an app started afresh), the same storageId: a
        // server may resume sync state by storage, but keeps no stale per-peer session
        // (automerge-repo would otherwise stay silent about unchanged documents).
        self.connections += 1;
        let peer_id = format!("{}-{}", self.spec.name, self.connections);
        let metadata = PeerMetadata {
            storage_id: Some(format!("loadgen-{}", self.spec.name)),
            is_ephemeral: Some(false),
            capabilities: None,
        };
        let join = Message::Join {
            sender_id: peer_id.clone(),
            peer_metadata: Some(if self.use_summary {
                metadata.with_summary()
            } else {
                metadata
            }),
            supported_protocol_versions: vec![protocol::PROTOCOL_VERSION.into()],
        };
        let bytes = protocol::encode(&join);
        Probe::add(&probe.bytes_sent, bytes.len() as u64);
        ws.send(WsMessage::Binary(bytes.into()))
            .await
            .map_err(|e| format!("send join: {e}"))?;
        let deadline = Instant::now() + CONNECT_WAIT;
        let summary;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Err(_) => return Err("no peer message".into()),
                Ok(Some(Ok(WsMessage::Binary(b)))) => {
                    Probe::add(&probe.bytes_received, b.len() as u64);
                    match protocol::decode(&b) {
                        Ok(Message::Peer {
                            sender_id,
                            peer_metadata,
                            ..
                        }) => {
                            self.server_peer = sender_id;
                            // Only a server that answered the capability gets summaries
                            // (the reference server ignores it and syncs the old way).
                            summary = self.use_summary
                                && peer_metadata.is_some_and(|m| {
                                    m.supports(SUMMARY_CAPABILITY, SUMMARY_VERSION)
                                });
                            break;
                        }
                        Ok(Message::Error { message, .. }) => {
                            return Err(format!("server refused join: {message}"))
                        }
                        _ => {}
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => return Err(format!("closed during handshake: {other:?}")),
            }
        }
        self.ws = Some(ws);
        let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
        for id in &ids {
            match self.engine.persistable_state(id) {
                Some(state) => self.engine.resume(*id, &state),
                None => self.engine.open(*id),
            }
        }
        self.unsynced = ids.iter().copied().collect();
        if summary {
            self.send_summary(probe).await;
        } else {
            for id in ids {
                self.push(id, probe, false).await;
            }
        }
        self.flush(probe).await;
        self.last_frame = Instant::now();
        Ok(())
    }

    /// Queues the summary frames of every held document (id → heads).
    async fn send_summary(&mut self, probe: &Probe) {
        let me = format!("{}-{}", self.spec.name, self.connections);
        let heads: Vec<_> = self
            .docs
            .iter()
            .map(|(id, held)| (*id, held.doc.get_heads()))
            .collect();
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        for frame in summary_frames(&me, &self.server_peer, heads) {
            let bytes = protocol::encode(&frame);
            Probe::add(&probe.bytes_sent, bytes.len() as u64);
            Probe::add(&probe.frames_sent, 1);
            if let Err(e) = ws.feed(WsMessage::Binary(bytes.into())).await {
                probe.error(format!("{}: send failed: {e}", self.spec.name));
                self.ws = None;
                return;
            }
        }
    }

    /// Whether the server confirmed holding exactly our current heads of `id`.
    fn confirmed_current(&self, id: &DocumentId) -> bool {
        let (Some(held), Some(confirmed)) = (self.docs.get(id), self.confirmed.get(id)) else {
            return false;
        };
        let mut ours = held.doc.get_heads();
        ours.sort();
        !ours.is_empty() && &ours == confirmed
    }

    /// Goes offline; documents and sync sessions stay.
    pub async fn disconnect(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }

    /// Queues (and with `flush`, sends) the engine's next message for `id`.
    async fn push(&mut self, id: DocumentId, probe: &Probe, flush: bool) {
        let (Some(held), Some(ws)) = (self.docs.get(&id), self.ws.as_mut()) else {
            return;
        };
        let Some(data) = self.engine.generate(id, &held.doc) else {
            return;
        };
        let me = format!("{}-{}", self.spec.name, self.connections);
        let msg = wrap(&me, &self.server_peer, id, &held.doc, data);
        let bytes = protocol::encode(&msg);
        Probe::add(&probe.bytes_sent, bytes.len() as u64);
        Probe::add(&probe.frames_sent, 1);
        let frame = WsMessage::Binary(bytes.into());
        let sent = if flush {
            ws.send(frame).await
        } else {
            ws.feed(frame).await
        };
        if let Err(e) = sent {
            probe.error(format!("{}: send failed: {e}", self.spec.name));
            self.ws = None;
        }
    }

    async fn flush(&mut self, probe: &Probe) {
        if let Some(ws) = self.ws.as_mut() {
            if let Err(e) = ws.flush().await {
                probe.error(format!("{}: flush failed: {e}", self.spec.name));
                self.ws = None;
            }
        }
    }

    /// Waits up to `wait` for one frame and handles it; false if none came.
    pub async fn recv(&mut self, probe: &Probe, wait: Duration) -> bool {
        let Some(ws) = self.ws.as_mut() else {
            tokio::time::sleep(wait).await;
            return false;
        };
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => false,
            Ok(Some(Ok(WsMessage::Binary(b)))) => {
                self.last_frame = Instant::now();
                Probe::add(&probe.bytes_received, b.len() as u64);
                Probe::add(&probe.frames_received, 1);
                self.handle(&b, probe).await;
                true
            }
            Ok(Some(Ok(WsMessage::Close(_))) | None) => {
                probe.error(format!("{}: server closed the connection", self.spec.name));
                self.ws = None;
                false
            }
            Ok(Some(Err(e))) => {
                probe.error(format!("{}: websocket error: {e}", self.spec.name));
                self.ws = None;
                false
            }
            Ok(Some(Ok(_))) => true,
        }
    }

    async fn handle(&mut self, bytes: &[u8], probe: &Probe) {
        let msg = match protocol::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                probe.error(format!("undecodable frame from server: {e}"));
                return;
            }
        };
        match msg {
            Message::Sync {
                document_id, data, ..
            }
            | Message::Request {
                document_id, data, ..
            } => self.on_sync(document_id, &data, probe).await,
            Message::DocUnavailable { document_id, .. } if self.docs.contains_key(&document_id) => {
                probe.error(format!("{}: doc-unavailable {document_id}", self.spec.name));
            }
            Message::Error { message, .. } => {
                probe.error(format!("{}: server error: {message}", self.spec.name));
            }
            Message::SummaryAnswer { in_sync, .. } => {
                for id in in_sync {
                    if let Some(held) = self.docs.get(&id) {
                        let mut heads = held.doc.get_heads();
                        heads.sort();
                        self.confirmed.insert(id, heads);
                        if self.confirmed_current(&id) {
                            self.unsynced.remove(&id);
                        }
                    }
                }
            }
            Message::RemoteHeadsChanged {
                document_id,
                new_heads,
                ..
            } => {
                // A server that acknowledges its store's heads (ours does) tells us it
                // took a change even when no sync message follows: automerge stays
                // silent when both sides already agree.
                for at in new_heads.values() {
                    if let Some(heads) = sync_core::protocol::decode_heads(&at.heads) {
                        self.on_server_heads(document_id, &heads, probe);
                    }
                }
            }
            _ => {}
        }
    }

    async fn on_sync(&mut self, id: DocumentId, data: &[u8], probe: &Probe) {
        let Some(held) = self.docs.get_mut(&id) else {
            return;
        };
        let applied = match self.engine.receive(id, &mut held.doc, data) {
            Ok(a) => a,
            Err(e) => {
                probe.error(format!("{}: could not apply: {e}", self.spec.name));
                return;
            }
        };
        if applied.changed() {
            let arrived = held.doc.get_changes_meta(&applied.heads_before);
            let now = Instant::now();
            let tracked = lock(&probe.tracked);
            let mut delivered = Vec::new();
            for change in arrived {
                if let Some(t) = tracked.get(&change.hash) {
                    if t.writer != self.idx {
                        delivered.push(now.duration_since(t.at).as_micros() as u64);
                    }
                }
            }
            drop(tracked);
            if !delivered.is_empty() {
                Probe::add(&probe.deliveries, delivered.len() as u64);
                lock(&probe.propagation_us).extend(delivered);
            }
        }
        if self.engine.in_sync(&id, &held.doc) {
            self.unsynced.remove(&id);
        } else {
            self.unsynced.insert(id);
        }
        if self.outstanding.iter().any(|(d, _, _)| *d == id) {
            let now = Instant::now();
            let engine = &self.engine;
            let doc = &held.doc;
            let mut committed = Vec::new();
            self.outstanding.retain(|(d, hash, at)| {
                if *d == id && engine.peer_has(d, doc, hash) {
                    committed.push(now.duration_since(*at).as_micros() as u64);
                    false
                } else {
                    true
                }
            });
            Probe::add(&probe.changes_committed, committed.len() as u64);
            lock(&probe.commit_us).extend(committed);
        }
        self.push(id, probe, true).await;
    }

    /// The server reported holding `heads` of `id`: settle what they cover.
    fn on_server_heads(&mut self, id: DocumentId, heads: &[ChangeHash], probe: &Probe) {
        let Some(held) = self.docs.get(&id) else {
            return;
        };
        if heads.is_empty()
            || heads
                .iter()
                .any(|h| held.doc.get_change_by_hash(h).is_none())
        {
            return;
        }
        let mut ours = held.doc.get_heads();
        let mut theirs = heads.to_vec();
        ours.sort();
        theirs.sort();
        if ours == theirs {
            self.unsynced.remove(&id);
            self.confirmed.insert(id, ours);
        }
        if !self.outstanding.iter().any(|(d, _, _)| *d == id) {
            return;
        }
        let beyond: std::collections::HashSet<ChangeHash> = held
            .doc
            .get_changes_meta(heads)
            .iter()
            .map(|c| c.hash)
            .collect();
        let now = Instant::now();
        let mut committed = Vec::new();
        self.outstanding.retain(|(d, hash, at)| {
            if *d == id && !beyond.contains(hash) {
                committed.push(now.duration_since(*at).as_micros() as u64);
                false
            } else {
                true
            }
        });
        Probe::add(&probe.changes_committed, committed.len() as u64);
        lock(&probe.commit_us).extend(committed);
    }

    /// One edit of a random document this device edits; syncs it when online. With
    /// `track`, other devices record when it reaches them and we wait for the commit.
    /// A random document this device edits.
    pub fn pick_editable(&mut self) -> Option<DocumentId> {
        if self.editable.is_empty() {
            return None;
        }
        Some(self.editable[self.rng.usize(..self.editable.len())])
    }

    /// The document a tracked change of ours was made in.
    pub fn doc_of(&self, hash: &ChangeHash) -> Option<DocumentId> {
        self.written.get(hash).copied()
    }

    pub async fn edit_random(&mut self, probe: &Probe, track: bool) {
        if let Some(id) = self.pick_editable() {
            self.edit(id, probe, track).await;
        }
    }

    pub async fn edit(&mut self, id: DocumentId, probe: &Probe, track: bool) {
        let Some(held) = self.docs.get_mut(&id) else {
            return;
        };
        let before = held.doc.get_heads();
        if let Err(e) = workload::edit(&mut held.doc, held.is_plan, &mut self.rng) {
            probe.error(format!("{}: workload edit failed: {e}", self.spec.name));
            return;
        }
        if held.doc.get_heads() == before {
            return;
        }
        Probe::add(&probe.changes_made, 1);
        let Some(hash) = held.doc.get_heads().first().copied() else {
            return;
        };
        let now = Instant::now();
        if track {
            lock(&probe.tracked).insert(
                hash,
                Tracked {
                    at: now,
                    writer: self.idx,
                },
            );
            self.outstanding.push((id, hash, now));
            self.written.insert(hash, id);
        }
        self.unsynced.insert(id);
        self.push(id, probe, true).await;
    }

    /// Pumps frames until every held document is in sync (and non-empty), or the
    /// deadline; returns whether it got there.
    pub async fn pump_until_synced(&mut self, probe: &Probe, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if self.synced() {
                return true;
            }
            if !self.is_online() {
                return false;
            }
            self.recv(probe, Duration::from_millis(50)).await;
        }
        self.synced()
    }

    /// Why this device is not in sync, for error messages.
    pub fn why_unsynced(&self) -> String {
        let empty = self
            .docs
            .values()
            .filter(|h| h.doc.get_heads().is_empty())
            .count();
        format!(
            "{} of {} documents not in sync, {empty} still empty, {} changes outstanding",
            self.unsynced.len(),
            self.docs.len(),
            self.outstanding.len()
        )
    }

    /// Every held document has content and is in sync with the server.
    pub fn synced(&self) -> bool {
        self.unsynced.is_empty() && self.docs.values().all(|h| !h.doc.get_heads().is_empty())
    }

    /// Keeps answering the server until the phase's stop flag is set.
    pub async fn pump_until_stop(&mut self, probe: &Probe, coord: &Coord, deadline: Instant) {
        while !coord.stop.load(Ordering::Acquire) && Instant::now() < deadline {
            self.recv(probe, Duration::from_millis(50)).await;
        }
    }

    /// The live-editing phase: closed loop, at most `window` uncommitted changes of
    /// ours at once, `think` between edits, until `until`.
    pub async fn live(
        &mut self,
        probe: &Probe,
        until: Instant,
        window: usize,
        think: Duration,
        writer: bool,
    ) {
        let mut next_edit = Instant::now() + think.mul_f64(self.rng.f64());
        loop {
            let now = Instant::now();
            if now >= until || !self.is_online() {
                break;
            }
            if writer && self.outstanding.len() < window && now >= next_edit {
                self.edit_random(probe, true).await;
                next_edit = now + think;
                continue;
            }
            let wait = if writer && self.outstanding.len() < window {
                next_edit.saturating_duration_since(now)
            } else {
                Duration::from_millis(50)
            }
            .min(until.saturating_duration_since(now))
            .max(Duration::from_millis(1));
            self.recv(probe, wait).await;
            let before = self.outstanding.len();
            self.outstanding
                .retain(|(_, _, at)| now.duration_since(*at) < COMMIT_WAIT);
            for _ in self.outstanding.len()..before {
                probe.error(format!("{}: change not committed in time", self.spec.name));
            }
        }
    }

    /// A document whose sync went quiet while a change of ours is still not taken (or
    /// it is out of sync) gets a fresh sync session, as a client re-syncs after a
    /// timeout. Counted in the report (`resyncs`); it should stay at zero.
    async fn nudge_stalled(&mut self, probe: &Probe) {
        if self.last_frame.elapsed() < STALL {
            return;
        }
        let mut stalled: Vec<DocumentId> = self.outstanding.iter().map(|(d, _, _)| *d).collect();
        stalled.extend(self.unsynced.iter().copied());
        stalled.sort();
        stalled.dedup();
        for id in stalled {
            if let Some(state) = self.engine.persistable_state(&id) {
                self.engine.resume(id, &state);
            }
            Probe::add(&probe.resyncs, 1);
            self.push(id, probe, true).await;
        }
        self.last_frame = Instant::now();
    }

    /// After a phase: answer until this device is in sync, has nothing outstanding and
    /// heard nothing for `quiet`; then report not busy, but keep answering until the
    /// orchestrator stops everyone (and become busy again if something new arrives).
    pub async fn settle(
        &mut self,
        probe: &Probe,
        coord: &Coord,
        quiet: Duration,
        deadline: Instant,
    ) {
        // Re-derive which documents are out of sync after the last edits.
        let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
        for id in ids {
            if !self.engine.in_sync(&id, &self.docs[&id].doc) && !self.confirmed_current(&id) {
                self.unsynced.insert(id);
            }
        }
        let mut done = false;
        while !coord.stop.load(Ordering::Acquire) && Instant::now() < deadline {
            self.recv(probe, Duration::from_millis(50)).await;
            self.nudge_stalled(probe).await;
            let ok =
                self.outstanding.is_empty() && self.synced() && self.last_frame.elapsed() >= quiet;
            if ok != done {
                let delta = if ok { -1 } else { 1 };
                coord.busy.fetch_add(delta, Ordering::AcqRel);
                done = ok;
            }
        }
        if !self.outstanding.is_empty() {
            let (id, hash, _) = self.outstanding[0];
            let doc = &self.docs[&id].doc;
            probe.error(format!(
                "{}: {} changes never committed (first: in doc {id}, in_sync {}, peer_has {}, heads {:?}, ours {hash})",
                self.spec.name,
                self.outstanding.len(),
                self.engine.in_sync(&id, doc),
                self.engine.peer_has(&id, doc, &hash),
                doc.get_heads(),
            ));
            self.outstanding.clear();
        }
    }
}
