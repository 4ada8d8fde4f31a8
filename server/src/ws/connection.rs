//! One websocket peer's protocol session: decode → dispatch → reply.
//!
//! `transport` owns the socket and feeds this connection frames and events. Here a
//! frame is decoded (sync-core's codec), dispatched by message type, checked against
//! the policy for reading, and answered. A sync payload for an open document goes to
//! `commit::apply`, which owns the change from "checked" to "announced"; a payload for
//! an unknown id starts the creation path, committed by `commit::create`. Outgoing sync messages are generated in one place, [`Connection::flush`],
//! whenever the hub marks a document dirty — for this peer's own writes as for
//! everyone else's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use automerge::{Automerge, ChangeHash};
use axum::extract::ws::{CloseFrame, Message as WsMessage};
use sync_core::engine::{Outgoing, PeerSync, Rejected, SyncError};
use sync_core::policy::{self, Access, Principal};
use sync_core::protocol::{
    self, encode_heads, DocumentId, HeadsAtTime, Message, PeerMetadata, SUMMARY_CAPABILITY,
    SUMMARY_VERSION,
};
use sync_core::schema;
use sync_core::summary;
use tokio::sync::mpsc;

use crate::audit::{AuditAction, AuditEvent};
use crate::commit::{self, Created, Outcome, Refusal, Writer};
use crate::hub::{ConnSignal, DocEntry};
use crate::metrics as m;
use crate::state::AppState;
use crate::store::now;

/// Consecutive undecodable frames before we give up on a peer.
const MAX_BAD_FRAMES: u32 = 16;

struct Peer {
    id: String,
    metadata: PeerMetadata,
    /// How this device is named in provenance and audit records ([`Connection::device`]),
    /// spelled once: every applied frame names it.
    device: String,
}

impl Peer {
    fn new(token_id: &str, id: String, metadata: PeerMetadata) -> Peer {
        Peer {
            device: device_name(token_id, &id),
            id,
            metadata,
        }
    }
}

/// The token a device authenticated with (trusted) and the peerId it announced
/// (self-description).
fn device_name(token_id: &str, peer_id: &str) -> String {
    format!("{token_id}/{peer_id}")
}

pub(super) struct Connection {
    pub(super) state: Arc<AppState>,
    /// Who is connected; re-read from the store whenever access changes.
    pub(super) principal: Principal,
    /// The token the connection was opened with; a revoked token ends the connection.
    token_id: String,
    pub(super) conn_id: u64,
    /// Set by `join`; nothing but `join` is accepted before.
    peer: Option<Peer>,
    engine: PeerSync,
    /// Documents this peer syncs and may read; we are subscribed to each.
    open: HashMap<DocumentId, Arc<DocEntry>>,
    /// Documents the peer holds in sync per its summary, not loaded: registered with
    /// the hub's watchers, opened on their first change (see `open_watched`).
    watched: HashSet<DocumentId>,
    /// Documents the peer is creating: unknown ids it sent `sync` for, not yet valid.
    pending: HashMap<DocumentId, Automerge>,
    /// Committed heads we last acknowledged to this peer, per document.
    told_heads: HashMap<DocumentId, Vec<ChangeHash>>,
    pub(super) signal: Arc<ConnSignal>,
    pub(super) out: mpsc::Sender<WsMessage>,
    bad_frames: u32,
    /// Audit events of the current step, written together after it (one transaction).
    audit: Vec<AuditEvent>,
    /// Reads of the current minute per document (issue 18): the window's first
    /// delivery is audited before it leaves, the rest only counted, and the window's
    /// summary (first, last, how often) is audited when it closes.
    reads: HashMap<DocumentId, ReadWindow>,
    /// automerge-repo ignores a remote-heads timestamp that is not greater than the
    /// last one, so acknowledgements use a strictly increasing clock.
    last_timestamp: u64,
    /// Set when the outbox stayed full for `send_timeout`: the peer is not reading.
    stalled: AtomicBool,
}

/// How long a read window lasts: reads of one document on one connection within it
/// share one opening and one summary entry (issue 18, item 3).
pub(super) const READ_WINDOW: Duration = Duration::from_secs(60);

/// One document's reads on one connection within a [`READ_WINDOW`].
struct ReadWindow {
    partition: sync_core::partition::Partition,
    /// Unix milliseconds of the window's first and last delivery.
    first_ms: u64,
    last_ms: u64,
    /// Deliveries of content in the window.
    count: u64,
}

impl ReadWindow {
    /// The summary entry's detail: `first=… last=… count=N` (times to the second).
    fn summary(&self) -> String {
        format!(
            "window=closed first={} last={} count={}",
            rfc3339_s(self.first_ms),
            rfc3339_s(self.last_ms),
            self.count
        )
    }
}

/// RFC 3339 to the second, UTC.
fn rfc3339_s(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What the read loop should do next.
pub(super) enum Flow {
    Continue,
    Close,
}

impl Connection {
    pub(super) fn new(
        state: Arc<AppState>,
        principal: Principal,
        token_id: String,
        signal: Arc<ConnSignal>,
        out: mpsc::Sender<WsMessage>,
    ) -> Connection {
        let engine = PeerSync::new().with_max_ops(state.limits.max_document_ops);
        Connection {
            state,
            principal,
            token_id,
            conn_id: signal.id,
            peer: None,
            engine,
            open: HashMap::new(),
            watched: HashSet::new(),
            pending: HashMap::new(),
            told_heads: HashMap::new(),
            signal,
            out,
            bad_frames: 0,
            audit: Vec::new(),
            reads: HashMap::new(),
            last_timestamp: 0,
            stalled: AtomicBool::new(false),
        }
    }

    /// Has the peer sent `join`? Nothing else is accepted before.
    pub(super) fn joined(&self) -> bool {
        self.peer.is_some()
    }

    /// Did the peer stop reading its messages (the outbox stayed full)?
    pub(super) fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    pub(super) async fn on_frame(&mut self, bytes: &[u8]) -> Flow {
        let msg = match protocol::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::info!(conn = self.conn_id, error = %e, "undecodable frame");
                m::rejected("malformed");
                self.send_error(&format!("malformed message: {e}")).await;
                return self.on_bad_frame().await;
            }
        };
        m::message_in(&msg);
        self.bad_frames = 0;
        if self.peer.is_none() {
            return self.on_join(msg).await;
        }
        match msg {
            Message::Join { sender_id, .. } => {
                // A repeated join re-announces the same peer; answer it again.
                if let Some(peer) = &mut self.peer {
                    peer.device = device_name(&self.token_id, &sender_id);
                    peer.id = sender_id;
                }
                self.send_peer().await;
                Flow::Continue
            }
            Message::Request {
                document_id, data, ..
            } => self.on_sync(document_id, &data, true).await,
            Message::Sync {
                document_id, data, ..
            } => self.on_sync(document_id, &data, false).await,
            Message::Ephemeral { document_id, .. } => {
                // A watched document is opened first (that re-checks read access).
                if self.watched.contains(&document_id) {
                    self.open_watched(document_id).await;
                }
                // Only relayed within a document the sender may read (it is open),
                // and only while its token lives: a revocation takes effect here at
                // once, not at the next access poll.
                if let Some(entry) = self.open.get(&document_id).cloned() {
                    match self.token_lives().await {
                        Ok(true) => entry.relay_ephemeral(self.conn_id, msg),
                        Ok(false) => return self.refresh_access().await,
                        Err(e) => {
                            tracing::warn!(conn = self.conn_id, error = %e, "could not check the token; ephemeral message dropped");
                        }
                    }
                }
                Flow::Continue
            }
            Message::DocUnavailable { document_id, .. } => {
                self.pending.remove(&document_id);
                Flow::Continue
            }
            Message::Leave { .. } => Flow::Close,
            Message::RemoteSubscriptionChange { .. } | Message::RemoteHeadsChanged { .. } => {
                // We always announce our own storage's heads; nothing to subscribe to.
                Flow::Continue
            }
            Message::Error { message, .. } => {
                // The text is the peer's and may quote document content: log its size only.
                tracing::info!(
                    conn = self.conn_id,
                    bytes = message.len(),
                    "peer reported an error"
                );
                Flow::Continue
            }
            Message::Peer { .. } => {
                self.send_error("`peer` is the server's answer; clients send `join`")
                    .await;
                Flow::Continue
            }
            Message::Summary { documents, .. } => {
                if self.summary_negotiated() {
                    self.on_summary(documents).await
                } else {
                    m::rejected("summary-not-negotiated");
                    self.send_error(&format!(
                        "`buurtsync-summary` needs the capability announced in join: peerMetadata.buurtsync = {{\"{SUMMARY_CAPABILITY}\": {SUMMARY_VERSION}}}"
                    ))
                    .await;
                    Flow::Continue
                }
            }
            Message::SummaryAnswer { .. } => {
                self.send_error(
                    "`buurtsync-summary-answer` is the server's answer; clients send `buurtsync-summary`",
                )
                .await;
                Flow::Continue
            }
        }
    }

    pub(super) async fn on_bad_frame(&mut self) -> Flow {
        self.bad_frames += 1;
        if self.bad_frames >= MAX_BAD_FRAMES {
            m::rejected("too-many-bad-frames");
            self.close_with(1008, "too many malformed messages").await;
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    async fn on_join(&mut self, msg: Message) -> Flow {
        let Message::Join {
            sender_id,
            peer_metadata,
            supported_protocol_versions,
        } = msg
        else {
            self.send_error("send `join` first").await;
            self.close_with(1002, "join first").await;
            return Flow::Close;
        };
        if !supported_protocol_versions
            .iter()
            .any(|v| v == protocol::PROTOCOL_VERSION)
        {
            self.send(Message::Error {
                sender_id: Some(self.state.peer_id.clone()),
                target_id: Some(sender_id),
                message: "unsupported protocol version".into(),
            })
            .await;
            self.close_with(1002, "unsupported protocol version").await;
            return Flow::Close;
        }
        self.peer = Some(Peer::new(
            &self.token_id,
            sender_id,
            peer_metadata.unwrap_or_default(),
        ));
        self.send_peer().await;
        Flow::Continue
    }

    async fn send_peer(&self) {
        let target = self.peer_id();
        self.send(Message::Peer {
            sender_id: self.state.peer_id.clone(),
            target_id: target,
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(self.state.storage_id.clone()),
                is_ephemeral: Some(false),
                // Extensions only to a peer that announced its own (our clients):
                // everyone else sees exactly automerge-repo's `peer`.
                capabilities: self.peer_capabilities(),
            }),
            selected_protocol_version: protocol::PROTOCOL_VERSION.into(),
        })
        .await;
    }

    /// The capabilities we answer with: `None` unless the join carried the
    /// `buurtsync` key; then those of the peer's we speak (possibly none).
    fn peer_capabilities(&self) -> Option<BTreeMap<String, u64>> {
        let asked = self.peer.as_ref()?.metadata.capabilities.as_ref()?;
        let mut ours = BTreeMap::new();
        if asked.get(SUMMARY_CAPABILITY) == Some(&SUMMARY_VERSION) {
            ours.insert(SUMMARY_CAPABILITY.to_owned(), SUMMARY_VERSION);
        }
        Some(ours)
    }

    /// Whether the peer asked for the summary extension (and so got it).
    fn summary_negotiated(&self) -> bool {
        self.peer
            .as_ref()
            .is_some_and(|p| p.metadata.supports(SUMMARY_CAPABILITY, SUMMARY_VERSION))
    }

    /// Notes an audit event about a document for this connection's user and device.
    fn record(
        &mut self,
        action: AuditAction,
        id: DocumentId,
        partition: Option<&sync_core::partition::Partition>,
        detail: &str,
    ) {
        let event = AuditEvent::new(self.principal.user_id.clone(), self.device(), action)
            .on(&id, partition)
            .with_detail(detail);
        self.audit.push(event);
    }

    /// Counts a delivery of `id`'s content in its read window; returns whether the
    /// delivery opened a window (its entry is noted and must be written before the
    /// content leaves). A window older than [`READ_WINDOW`] is summarised first.
    fn note_read(&mut self, id: DocumentId, partition: &sync_core::partition::Partition) -> bool {
        let now = now_ms();
        if let Some(window) = self.reads.get_mut(&id) {
            if now.saturating_sub(window.first_ms) < READ_WINDOW.as_millis() as u64 {
                window.last_ms = now;
                window.count += 1;
                return false;
            }
            self.summarise_read(id);
        }
        self.reads.insert(
            id,
            ReadWindow {
                partition: partition.clone(),
                first_ms: now,
                last_ms: now,
                count: 1,
            },
        );
        self.record(
            AuditAction::Read,
            id,
            Some(partition),
            &format!("window=open first={}", rfc3339_s(now)),
        );
        true
    }

    /// Notes the summary entry of `id`'s read window and closes it.
    fn summarise_read(&mut self, id: DocumentId) {
        if let Some(w) = self.reads.remove(&id) {
            self.record(AuditAction::Read, id, Some(&w.partition), &w.summary());
        }
    }

    /// Notes the summary of every open read window (the connection is ending).
    pub(super) fn summarise_reads(&mut self) {
        let ids: Vec<DocumentId> = self.reads.keys().copied().collect();
        for id in ids {
            self.summarise_read(id);
        }
    }

    /// Writes the noted audit events; returns whether they are stored. A failure is
    /// logged loudly. Reads write their entry before the content is sent (`flush`);
    /// the other entries of a step (denials, closes) are written after it.
    pub(super) async fn write_audit(&mut self) -> bool {
        if self.audit.is_empty() {
            return true;
        }
        let events = std::mem::take(&mut self.audit);
        if let Err(e) = self.state.store.audit().append_many(&events).await {
            tracing::error!(conn = self.conn_id, error = %e, lost = events.len(), "could not write audit events");
            m::rejected("audit-failed");
            return false;
        }
        true
    }

    /// How this device is named in provenance and audit records: the token it
    /// authenticated with (trusted) and the peerId it announced (self-description).
    fn device(&self) -> String {
        match &self.peer {
            Some(peer) => peer.device.clone(),
            None => device_name(&self.token_id, ""),
        }
    }

    fn peer_id(&self) -> String {
        self.peer.as_ref().map(|p| p.id.clone()).unwrap_or_default()
    }

    /// The peer's storageId, if it keeps state worth resuming.
    fn persistent_storage(&self) -> Option<String> {
        let meta = &self.peer.as_ref()?.metadata;
        match meta.is_ephemeral {
            Some(true) => None,
            _ => meta.storage_id.clone(),
        }
    }

    /// A `request` or `sync` payload for `id`.
    async fn on_sync(&mut self, id: DocumentId, data: &[u8], is_request: bool) -> Flow {
        let started = Instant::now();
        let flow = self.on_sync_inner(id, data, is_request).await;
        m::sync_latency(started.elapsed().as_secs_f64());
        flow
    }

    async fn on_sync_inner(&mut self, id: DocumentId, data: &[u8], is_request: bool) -> Flow {
        if let Some(entry) = self.open.get(&id).cloned() {
            if !entry.is_erased()
                && policy::decide(&self.principal, entry.facts(), Access::Read).is_ok()
            {
                self.apply(entry, data).await;
            } else {
                self.close_document(id).await;
            }
            return Flow::Continue;
        }
        if !self.pending.contains_key(&id) {
            // Decide from the catalog first: a denied document is never loaded nor
            // decrypted, so it answers as fast as a missing one.
            match self.denied_by_catalog(id).await {
                Ok(false) => {}
                Ok(true) => return self.unknown_or_denied(id, data, is_request).await,
                Err(()) => return Flow::Continue,
            }
            let found = match self.state.hub.get(id).await {
                Ok(found) => found,
                Err(e) => {
                    self.try_again_later(id, "loading document", &e).await;
                    return Flow::Continue;
                }
            };
            if let Some(entry) = found {
                let readable = policy::decide(&self.principal, entry.facts(), Access::Read);
                match readable {
                    Ok(()) => {
                        self.open_entry(entry.clone()).await;
                        self.apply(entry, data).await;
                        return Flow::Continue;
                    }
                    Err(reason) => self.deny_read(entry, &reason),
                }
            }
            return self.unknown_or_denied(id, data, is_request).await;
        }
        self.create(id, data).await;
        Flow::Continue
    }

    /// A `request` or `sync` for a missing or denied id: from here on both look
    /// exactly the same (`doc-unavailable`, or the creation path).
    async fn unknown_or_denied(&mut self, id: DocumentId, data: &[u8], is_request: bool) -> Flow {
        if is_request {
            self.send_unavailable(id).await;
            return Flow::Continue;
        }
        if self.pending.len() >= self.state.limits.max_pending_creations {
            m::rejected("too-many-creations");
            self.send_error("too many documents being created at once on this connection")
                .await;
            return Flow::Continue;
        }
        self.create(id, data).await;
        Flow::Continue
    }

    /// For a document not loaded here: does the catalog (partition, hand-over flag)
    /// deny this peer reading it? A denial is logged and audited like `deny_read`.
    /// `Err`: the store failed and the peer was told to try again.
    async fn denied_by_catalog(&mut self, id: DocumentId) -> Result<bool, ()> {
        if self.state.hub.loaded_entry(id).is_some() {
            return Ok(false); // decided from the loaded entry's facts, at no cost
        }
        let facts = match self.state.store.summary().facts(&[id]).await {
            Ok(facts) => facts,
            Err(e) => {
                self.try_again_later(id, "reading the catalog", &e).await;
                return Err(());
            }
        };
        let Some(f) = facts.get(&id) else {
            return Ok(false); // unknown: the caller finds it missing as well
        };
        let doc_facts = policy::DocFacts {
            partition: &f.partition,
            handover_copy: f.handover_copy,
        };
        match policy::decide(&self.principal, doc_facts, Access::Read) {
            Ok(()) => Ok(false),
            Err(reason) => {
                let partition = f.partition.clone();
                self.audit_denied_read(id, &partition, &reason);
                Ok(true)
            }
        }
    }

    /// Subscribes to a readable document and resumes any persisted sync state.
    async fn open_entry(&mut self, entry: Arc<DocEntry>) {
        let id = entry.id();
        entry.subscribe(&self.signal);
        if self.watched.remove(&id) {
            self.state.hub.unwatch(id, self.conn_id);
        }
        if !self.engine.has(&id) {
            let persisted = match self.persistent_storage() {
                Some(storage) => self
                    .state
                    .store
                    .sync_states()
                    .get(&storage, &self.principal.user_id, &id)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            match persisted {
                Some(bytes) => self.engine.resume(id, &bytes),
                None => self.engine.open(id),
            }
        }
        self.open.insert(id, entry);
    }

    /// Applies a payload to an open document: `commit::apply` checks, commits and
    /// announces; a refusal is answered with an `error` message.
    async fn apply(&mut self, entry: Arc<DocEntry>, data: &[u8]) {
        let device = self.peer.as_ref().map_or("", |peer| peer.device.as_str());
        let writer = Writer {
            principal: &self.principal,
            device,
            token: Some(&self.token_id),
        };
        let state = &self.state;
        match commit::apply(
            &state.hub,
            &state.store,
            &entry,
            &mut self.engine,
            writer,
            data,
        )
        .await
        {
            Outcome::Committed => {}
            Outcome::Unchanged(answer) => {
                let partition = &entry.catalog.partition;
                self.deliver(
                    entry.id(),
                    Some(partition),
                    answer.payload,
                    Some(answer.saved_heads),
                )
                .await;
            }
            Outcome::Refused { message, .. } => self.send_error(&message).await,
        }
    }

    /// A payload for a document the server does not have (for this peer): the peer is
    /// creating it. Once the changes carry a valid `meta` the peer may create in, the
    /// document is committed with its partition pinned (`commit::create`) and becomes
    /// an open document.
    async fn create(&mut self, id: DocumentId, data: &[u8]) {
        let principal = &self.principal;
        let doc = self.pending.entry(id).or_default();
        let result = self.engine.receive_checked(id, doc, data, |doc, applied| {
            // Runs for queued changes too (`Applied::left_something`): a peer that
            // may create nothing cannot park bytes in a pending document.
            if applied.queued_bytes > 0 {
                return Err(Refusal::Incomplete);
            }
            let meta = schema::meta::read_meta(doc)?;
            policy::may_create(principal, &meta.partition()).map_err(|_| Refusal::NotPermitted)?;
            schema::validate(doc)?;
            Ok::<(), Refusal>(())
        });
        match result {
            Ok(applied) if applied.changed() => {}
            Ok(_) => {
                self.signal.mark(id);
                return;
            }
            Err(Rejected::Sync(e)) => {
                m::rejected(e.kind());
                if let SyncError::Panicked(panicked) = &e {
                    m::panic_caught(panicked, &id); // issue 20
                }
                self.send_error(&format!("document {id}: {e}")).await;
                return;
            }
            Err(Rejected::Check(refusal)) => {
                tracing::info!(conn = self.conn_id, user = %self.principal.user_id, %id, reason = refusal.kind(), "creation rejected");
                m::rejected(refusal.kind());
                self.record(
                    AuditAction::Denied,
                    id,
                    None,
                    &format!("create: {}", refusal.kind()),
                );
                self.send_error(&format!("document {id}: change rejected: {refusal}"))
                    .await;
                return;
            }
        }
        let Some(doc) = self.pending.remove(&id) else {
            return;
        };
        let device = self.device();
        let writer = Writer {
            principal: &self.principal,
            device: &device,
            token: Some(&self.token_id),
        };
        match commit::create(&self.state.hub, doc, writer, id, &self.signal).await {
            Created::Document(entry) => {
                self.open.insert(id, entry);
            }
            Created::Refused {
                erased: true,
                message,
            } => {
                self.record(AuditAction::Denied, id, None, "create: id not free");
                self.send_error(&message).await;
                self.send_unavailable(id).await;
            }
            Created::Refused {
                erased: false,
                message,
            } => {
                self.engine.forget(&id);
                self.send_error(&message).await;
            }
        }
    }

    /// A `buurtsync-summary` frame: the heads of documents the peer holds. Answered
    /// from the catalog in one query, without loading documents: those whose committed
    /// heads equal the peer's are listed in the answer and watched; the others are
    /// opened and get a sync message (flush), exactly as if the peer had sent `sync`;
    /// unknown and unreadable ones get `doc-unavailable` (and the same audit) as a
    /// `request` would.
    async fn on_summary(&mut self, documents: BTreeMap<DocumentId, Vec<ChangeHash>>) -> Flow {
        let started = Instant::now();
        let mut in_sync = Vec::new();
        let mut to_open = Vec::new();
        // Documents in an active session (or being created) just carry on.
        let asked: Vec<DocumentId> = documents
            .keys()
            .filter(|id| !self.open.contains_key(id) && !self.pending.contains_key(id))
            .copied()
            .collect();
        for id in documents.keys().filter(|id| self.open.contains_key(id)) {
            self.signal.mark(*id);
        }
        // Watch before reading the catalog: a commit after the read then still
        // reaches us (its announce comes after its commit).
        for id in &asked {
            self.state.hub.watch(*id, &self.signal);
        }
        let facts = match self.state.store.summary().facts(&asked).await {
            Ok(facts) => facts,
            Err(e) => {
                tracing::error!(conn = self.conn_id, error = %e, "reading the catalog for a summary failed");
                for id in &asked {
                    if !self.watched.contains(id) {
                        self.state.hub.unwatch(*id, self.conn_id);
                    }
                }
                self.send_error("the summary cannot be answered right now; try again later")
                    .await;
                return Flow::Continue;
            }
        };
        for id in asked {
            // issue 20: the decision is sync_core::summary::verdict (pure, fuzzed).
            let f = facts.get(&id);
            // A loaded copy knows the freshest committed hand-over flag.
            let loaded = self.state.hub.loaded_entry(id);
            let catalog = f.map(|f| summary::Catalog {
                facts: match &loaded {
                    Some(entry) => entry.facts(),
                    None => policy::DocFacts {
                        partition: &f.partition,
                        handover_copy: f.handover_copy,
                    },
                },
                committed_heads: f.heads.as_deref(),
            });
            match summary::verdict(&self.principal, catalog, &documents[&id]) {
                // Unknown (or erased): exactly what a `request` for it gets.
                summary::Verdict::Unavailable => {
                    self.unwatch(id);
                    self.send_unavailable(id).await;
                }
                summary::Verdict::Denied(reason) => {
                    tracing::info!(conn = self.conn_id, user = %self.principal.user_id, %id, %reason, "read denied");
                    let partition = f.map(|f| f.partition.clone());
                    self.record(
                        AuditAction::Denied,
                        id,
                        partition.as_ref(),
                        &format!("read: {reason}"),
                    );
                    self.unwatch(id);
                    self.send_unavailable(id).await;
                }
                summary::Verdict::InSync => {
                    self.watched.insert(id);
                    in_sync.push(id);
                }
                summary::Verdict::Changed => {
                    self.unwatch(id);
                    to_open.push(id);
                }
            }
        }
        metrics::counter!(m::SUMMARY_DOCUMENTS, "answer" => "in-sync")
            .increment(in_sync.len() as u64);
        metrics::counter!(m::SUMMARY_DOCUMENTS, "answer" => "changed")
            .increment(to_open.len() as u64);
        self.send(Message::SummaryAnswer {
            sender_id: self.state.peer_id.clone(),
            target_id: self.peer_id(),
            in_sync,
        })
        .await;
        for id in to_open {
            self.open_for_sync(id).await;
        }
        tracing::debug!(conn = self.conn_id, elapsed = ?started.elapsed(), "summary answered");
        Flow::Continue
    }

    /// Stops watching `id` (hub and our set).
    fn unwatch(&mut self, id: DocumentId) {
        self.watched.remove(&id);
        self.state.hub.unwatch(id, self.conn_id);
    }

    /// Opens a document the peer holds but not at our heads, and marks it so `flush`
    /// sends our sync message (from the resumed sync state).
    /// A loaded document this peer may not read: logged, audited as a denied read, and
    /// released (it was loaded only to decide). The caller answers as for a missing id.
    fn deny_read(&mut self, entry: Arc<DocEntry>, reason: &policy::Denied) {
        let id = entry.id();
        let partition = entry.catalog.partition.clone();
        self.audit_denied_read(id, &partition, reason);
        drop(entry);
        self.state.hub.release(id);
    }

    /// Logs and audits a denied read (the one wording for every path).
    fn audit_denied_read(
        &mut self,
        id: DocumentId,
        partition: &sync_core::partition::Partition,
        reason: &policy::Denied,
    ) {
        tracing::info!(conn = self.conn_id, user = %self.principal.user_id, %id, %reason, "read denied");
        self.record(
            AuditAction::Denied,
            id,
            Some(partition),
            &format!("read: {reason}"),
        );
    }

    async fn open_for_sync(&mut self, id: DocumentId) {
        match self.state.hub.get(id).await {
            Ok(Some(entry)) => match policy::decide(&self.principal, entry.facts(), Access::Read) {
                Ok(()) => {
                    self.open_entry(entry).await;
                    self.signal.mark(id);
                }
                Err(reason) => {
                    self.deny_read(entry, &reason);
                    self.send_unavailable(id).await;
                }
            },
            Ok(None) => self.send_unavailable(id).await,
            Err(e) => {
                self.try_again_later(id, "loading document", &e).await;
            }
        }
    }

    /// A watched document changed (or the peer addressed it): open it, re-checking
    /// read access. Access that ended closes it like an open document's. A load
    /// error leaves it watched, so a later change tries again.
    async fn open_watched(&mut self, id: DocumentId) {
        match self.state.hub.get(id).await {
            Ok(Some(entry)) => {
                if policy::decide(&self.principal, entry.facts(), Access::Read).is_ok() {
                    self.open_entry(entry).await;
                } else {
                    drop(entry);
                    self.state.hub.release(id);
                    self.close_document(id).await;
                }
            }
            Ok(None) => self.close_document(id).await,
            Err(e) => {
                tracing::error!(conn = self.conn_id, %id, error = %e, "loading a watched document failed");
            }
        }
    }

    /// Grants changed: re-decide read access for every watched document from the
    /// catalog (one query), closing those no longer readable.
    async fn recheck_watched(&mut self) {
        if self.watched.is_empty() {
            return;
        }
        let ids: Vec<DocumentId> = self.watched.iter().copied().collect();
        let facts = match self.state.store.summary().facts(&ids).await {
            Ok(facts) => facts,
            Err(e) => {
                // Cannot tell: open them all, so flush re-checks each one.
                tracing::warn!(conn = self.conn_id, error = %e, "could not re-check watched documents");
                for id in ids {
                    self.signal.mark(id);
                }
                return;
            }
        };
        for id in ids {
            let readable = facts.get(&id).is_some_and(|f| {
                let loaded = self.state.hub.loaded_entry(id);
                let doc_facts = match &loaded {
                    Some(entry) => entry.facts(),
                    None => policy::DocFacts {
                        partition: &f.partition,
                        handover_copy: f.handover_copy,
                    },
                };
                policy::decide(&self.principal, doc_facts, Access::Read).is_ok()
            });
            if !readable {
                self.close_document(id).await;
            }
        }
    }

    /// Sends what each dirty document needs: a sync message, and the committed heads
    /// (`remote-heads-changed` with our storageId) when they moved.
    pub(super) async fn flush(&mut self) -> Flow {
        for id in self.signal.take() {
            if self.watched.contains(&id) && !self.open.contains_key(&id) {
                // A change to a document the peer holds in sync: open it now.
                self.open_watched(id).await;
            }
            let still_readable = self.open.get(&id).map(|e| {
                !e.is_erased() && policy::decide(&self.principal, e.facts(), Access::Read).is_ok()
            });
            if still_readable == Some(false) {
                self.close_document(id).await;
                continue;
            }
            let (payload, saved, entry) = if let Some(entry) = self.open.get(&id).cloned() {
                let _permit = self
                    .state
                    .hub
                    .work_permit(&entry.catalog.partition.wijk)
                    .await;
                let state = match self.state.hub.lock(&entry).await {
                    Ok(state) => state,
                    Err(e) => {
                        tracing::error!(conn = self.conn_id, %id, error = %e, "reloading document failed");
                        continue;
                    }
                };
                let payload = self.engine.try_generate_with(id, &state.doc, &state.recent);
                let saved = state.saved_heads.clone();
                drop(state);
                (payload, Some(saved), Some(entry))
            } else if let Some(doc) = self.pending.get(&id) {
                // The peer's own creation in progress: not a read to audit.
                let payload = self.engine.generate(id, doc).map(|data| Outgoing {
                    data,
                    carries_changes: false,
                });
                (Ok(payload), None, None)
            } else {
                continue;
            };
            let partition = entry.as_ref().map(|e| &e.catalog.partition);
            self.deliver(id, partition, payload, saved).await;
        }
        Flow::Continue
    }

    /// Sends a generated reply for `id`: an `error` if automerge panicked, the sync
    /// message (a read of `partition`'s content, audited first when it carries
    /// changes), and the committed heads `saved` when they moved since last told.
    /// `partition` and `saved` are `None` for a creation in progress.
    async fn deliver(
        &mut self,
        id: DocumentId,
        partition: Option<&sync_core::partition::Partition>,
        payload: Result<Option<Outgoing>, SyncError>,
        saved: Option<Vec<ChangeHash>>,
    ) {
        let payload = match payload {
            Ok(payload) => payload,
            Err(e) => {
                // issue 20: a panic in automerge's generate, counted and told to the peer.
                if let SyncError::Panicked(panicked) = &e {
                    m::panic_caught(panicked, &id);
                }
                self.send_error(&format!("document {id}: {e}")).await;
                None
            }
        };
        if let Some(Outgoing {
            data,
            carries_changes,
        }) = payload
        {
            // A read, for the audit: the message hands document content to the device.
            if let (Some(partition), true) = (partition, carries_changes) {
                // Fail closed: a read window's opening entry is committed before its
                // first content leaves; without it nothing is sent, and the session
                // starts over so the next flush offers the changes again. Later reads
                // of the window are counted.
                if self.note_read(id, partition) && !self.write_audit().await {
                    self.reads.remove(&id);
                    self.engine.forget(&id);
                    self.engine.open(id);
                    self.send_try_again_later(id).await;
                    return;
                }
            }
            self.send(Message::Sync {
                sender_id: self.state.peer_id.clone(),
                target_id: self.peer_id(),
                document_id: id,
                data,
            })
            .await;
        }
        if let Some(saved) = saved {
            if !saved.is_empty() && self.told_heads.get(&id) != Some(&saved) {
                let mut new_heads = BTreeMap::new();
                new_heads.insert(
                    self.state.storage_id.clone(),
                    HeadsAtTime {
                        heads: encode_heads(&saved),
                        timestamp: self.next_timestamp(),
                    },
                );
                self.send(Message::RemoteHeadsChanged {
                    sender_id: self.state.peer_id.clone(),
                    target_id: self.peer_id(),
                    document_id: id,
                    new_heads,
                })
                .await;
                self.told_heads.insert(id, saved);
            }
        }
    }

    fn next_timestamp(&mut self) -> u64 {
        self.last_timestamp = now_ms().max(self.last_timestamp + 1);
        self.last_timestamp
    }

    /// Access to an open document ended (grant removed, hand-over withdrawn): tell the
    /// peer it is unavailable and stop syncing and relaying it.
    async fn close_document(&mut self, id: DocumentId) {
        if let Some(entry) = self.open.remove(&id) {
            entry.unsubscribe(self.conn_id);
            drop(entry);
            self.state.hub.release(id);
        }
        if self.watched.remove(&id) {
            self.state.hub.unwatch(id, self.conn_id);
        }
        self.told_heads.remove(&id);
        self.summarise_read(id);
        tracing::info!(conn = self.conn_id, user = %self.principal.user_id, %id, "access to open document ended");
        self.record(
            AuditAction::Denied,
            id,
            None,
            "access ended (grant, token, hand-over or erasure)",
        );
        self.send_unavailable(id).await;
    }

    /// Grants or tokens changed somewhere: re-read who this connection is. A dead token
    /// ends the connection; changed grants re-check every open document.
    pub(super) async fn refresh_access(&mut self) -> Flow {
        let store = &self.state.store;
        match store.accounts().live_token_user(&self.token_id).await {
            Ok(Some(user)) => match store.accounts().principal(&user).await {
                Ok(principal) => {
                    let mut open: Vec<DocumentId> = self.open.keys().copied().collect();
                    open.extend(self.watched.iter().copied());
                    match store.documents().erased_among(&open).await {
                        Ok(erased) => {
                            for id in erased {
                                // Erased by another process: no copy stays in memory.
                                self.state.hub.erased(id);
                                self.close_document(id).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(conn = self.conn_id, error = %e, "could not check for erasures");
                        }
                    }
                    if principal != self.principal {
                        tracing::info!(conn = self.conn_id, user = %principal.user_id, "grants changed; re-checking open documents");
                        self.principal = principal;
                        for id in self.open.keys() {
                            self.signal.mark(*id);
                        }
                        self.recheck_watched().await;
                    }
                    Flow::Continue
                }
                Err(e) => {
                    tracing::warn!(conn = self.conn_id, error = %e, "could not re-read grants");
                    Flow::Continue
                }
            },
            Ok(None) => self.token_ended().await,
            Err(e) => {
                tracing::warn!(conn = self.conn_id, error = %e, "could not re-check token");
                Flow::Continue
            }
        }
    }

    pub(super) async fn forward_ephemeral(&mut self, msg: Arc<Message>) -> Flow {
        if let Message::Ephemeral {
            sender_id,
            count,
            session_id,
            document_id,
            data,
            ..
        } = &*msg
        {
            if self.open.contains_key(document_id) {
                self.send(Message::Ephemeral {
                    sender_id: sender_id.clone(),
                    target_id: self.peer_id(),
                    count: *count,
                    session_id: session_id.clone(),
                    document_id: *document_id,
                    data: data.clone(),
                })
                .await;
            }
        }
        Flow::Continue
    }

    async fn send_unavailable(&mut self, id: DocumentId) {
        self.engine.forget(&id);
        self.send(Message::DocUnavailable {
            sender_id: self.state.peer_id.clone(),
            target_id: self.peer_id(),
            document_id: id,
        })
        .await;
    }

    /// Tells the peer that `id` cannot be served now (the store failed: `what`, logged
    /// with the error, never sent).
    async fn try_again_later(
        &self,
        id: DocumentId,
        what: &str,
        e: &(dyn std::fmt::Display + Sync),
    ) {
        tracing::error!(conn = self.conn_id, %id, error = %e, "{what} failed");
        self.send_try_again_later(id).await;
    }

    async fn send_try_again_later(&self, id: DocumentId) {
        self.send_error(&format!(
            "document {id} cannot be served right now; try again later"
        ))
        .await;
    }

    pub(super) async fn send_error(&self, message: &str) {
        self.send(Message::Error {
            sender_id: Some(self.state.peer_id.clone()),
            target_id: self.peer.as_ref().map(|p| p.id.clone()),
            message: message.to_owned(),
        })
        .await;
    }

    async fn send(&self, msg: Message) {
        if self.stalled.load(Ordering::Relaxed) {
            return;
        }
        let bytes = protocol::encode(&msg);
        m::message_out(&msg);
        m::bytes_out(bytes.len());
        // A failed send means the writer is gone; the read loop notices the close. A
        // full outbox for `send_timeout` means the peer stopped reading: drop it.
        if let Err(mpsc::error::SendTimeoutError::Timeout(_)) = self
            .out
            .send_timeout(
                WsMessage::Binary(bytes.into()),
                self.state.limits.send_timeout,
            )
            .await
        {
            self.stalled.store(true, Ordering::Relaxed);
        }
    }

    pub(super) async fn close_with(&self, code: u16, reason: &'static str) {
        let _ = self
            .out
            .send(WsMessage::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }

    /// Persists sync states for a returning peer and leaves every document.
    pub(super) async fn close(&mut self) {
        self.summarise_reads();
        let _ = self.write_audit().await;
        if let Some(storage) = self.persistent_storage() {
            let states: Vec<_> = self
                .open
                .keys()
                .filter_map(|id| self.engine.persistable_state(id).map(|s| (*id, s)))
                .collect();
            let limits = &self.state.limits;
            if let Err(e) = self
                .state
                .store
                .sync_states()
                .put(
                    &storage,
                    &self.principal.user_id,
                    &states,
                    limits.sync_states_per_user,
                    limits.sync_state_ttl,
                )
                .await
            {
                tracing::warn!(conn = self.conn_id, error = %e, "could not persist sync states");
            }
        }
        for (id, entry) in self.open.drain() {
            entry.unsubscribe(self.conn_id);
            drop(entry);
            self.state.hub.release(id);
        }
        for id in self.watched.drain() {
            self.state.hub.unwatch(id, self.conn_id);
        }
        tracing::info!(conn = self.conn_id, user = %self.principal.user_id, "peer disconnected");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The websocket close code for "your token ended" (expired or revoked): the HTTP 401
/// of a live connection. The peer keeps its documents and reconnects with a fresh token;
/// `doc-unavailable` stays reserved for access to a document ending.
pub const CLOSE_TOKEN_ENDED: u16 = 4401;

/// Why a token stopped working, as the peer is told in the `error` message and the
/// close reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenEnd {
    Expired,
    Revoked,
}

impl TokenEnd {
    /// From the token's expiry and revocation time; `None` while it is live at `now`.
    fn at(expires_at: i64, revoked_at: Option<i64>, now: i64) -> Option<TokenEnd> {
        if revoked_at.is_some() {
            Some(TokenEnd::Revoked)
        } else if expires_at <= now {
            Some(TokenEnd::Expired)
        } else {
            None
        }
    }

    fn reason(self) -> &'static str {
        match self {
            TokenEnd::Expired => "token expired",
            TokenEnd::Revoked => "token revoked",
        }
    }
}

/// A deadline no connection reaches, for a timer that is not armed.
pub(super) fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Token lifetime of a live connection: noticing its end and ending the connection.
impl Connection {
    /// When the connection's token expires, on the runtime's clock; `None` if the store
    /// cannot say (the access poll still ends the connection then).
    pub(super) async fn token_deadline(&self) -> Option<tokio::time::Instant> {
        let (expires_at, _) = match self
            .state
            .store
            .accounts()
            .token_lifetime(&self.token_id)
            .await
        {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(conn = self.conn_id, error = %e, "could not read the token's expiry");
                return None;
            }
        };
        let expires = UNIX_EPOCH + Duration::from_secs(u64::try_from(expires_at).unwrap_or(0));
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Some(tokio::time::Instant::now() + left)
    }

    /// At the token's expiry: ends the connection if the token no longer works.
    pub(super) async fn check_token(&mut self) -> Flow {
        match self.token_lives().await {
            Ok(true) => Flow::Continue,
            Ok(false) => self.token_ended().await,
            Err(e) => {
                tracing::warn!(conn = self.conn_id, error = %e, "could not re-check token");
                Flow::Continue
            }
        }
    }

    /// Is the connection's token still live (neither revoked nor expired)?
    async fn token_lives(&self) -> Result<bool, crate::error::Error> {
        let user = self
            .state
            .store
            .accounts()
            .live_token_user(&self.token_id)
            .await?;
        Ok(user.is_some())
    }

    /// The token expired or was revoked: say which in an `error`, close with
    /// [`CLOSE_TOKEN_ENDED`]. No `doc-unavailable`: the peer's access to its documents
    /// did not end, only this credential did, and a peer that purged on it would lose
    /// edits not yet on the server. Each open document is audited as denied from now on.
    async fn token_ended(&mut self) -> Flow {
        let end = match self
            .state
            .store
            .accounts()
            .token_lifetime(&self.token_id)
            .await
        {
            Ok(Some((expires_at, revoked_at))) => {
                TokenEnd::at(expires_at, revoked_at, now()).unwrap_or(TokenEnd::Revoked)
            }
            // Gone from the store, or unreadable: it does not work, and was not expired.
            Ok(None) | Err(_) => TokenEnd::Revoked,
        };
        tracing::info!(conn = self.conn_id, user = %self.principal.user_id, token = %self.token_id, reason = end.reason(), "token ended; closing");
        let mut ids: Vec<DocumentId> = self.open.keys().copied().collect();
        ids.extend(self.watched.iter().copied());
        for id in ids {
            self.record(AuditAction::Denied, id, None, end.reason());
        }
        self.pending.clear();
        self.send_error(end.reason()).await;
        self.close_with(CLOSE_TOKEN_ENDED, end.reason()).await;
        Flow::Close
    }
}

#[cfg(test)]
mod token_end_tests {
    use super::TokenEnd;

    /// Revocation wins over expiry; a token is expired from its `expires_at` second on.
    #[test]
    fn token_end_reasons() {
        let check = |expires_at, revoked_at, expected| {
            assert_eq!(TokenEnd::at(expires_at, revoked_at, 100), expected);
        };
        check(101, None, None);
        check(100, None, Some(TokenEnd::Expired));
        check(50, None, Some(TokenEnd::Expired));
        check(101, Some(90), Some(TokenEnd::Revoked));
        check(50, Some(90), Some(TokenEnd::Revoked));
    }
}
