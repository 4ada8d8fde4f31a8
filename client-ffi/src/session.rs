//! The sync loop: one task that connects when it may, keeps one websocket session with
//! the server, and reconnects with exponential backoff and jitter when it drops.
//!
//! A session: ask who the token belongs to (`/api/v1/me`; a store belongs to one user),
//! fetch the listing (full at a fresh start and every `full_reconcile_interval_ms`,
//! purging acknowledged documents it no longer has; incremental with the server's
//! cursor otherwise), open the websocket with the bearer token (TLS unless the app
//! allowed `ws://`), `join` / `peer`, then send ONE connect-time summary of the held
//! documents the server has accepted before (when the server speaks it), push the rest
//! (new documents, or everything when there is no summary), and `request` every listed
//! document not held yet. Then, until the connection ends or the app goes offline: apply
//! what the server sends (persisting before anything else), push local edits as they
//! happen, count `remote-heads-changed` with the server's storageId (and summary
//! answers) as acknowledgements, and purge documents the server says are unavailable.
//!
//! Token failures are not network failures: HTTP 401 (upgrade or API) and websocket
//! close code 4401 ask the credentials provider once for a fresh token and reconnect;
//! if that does not help, the status is `Unauthorized` and nothing is purged. A
//! certificate failure is `TlsError` and is not retried until the app asks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use automerge::{Automerge, ChangeHash};
use futures_util::{SinkExt, StreamExt};
use sync_core::engine::{rollback, wrap, PeerSync};
use sync_core::partition::Partition;
use sync_core::protocol::{
    self, decode_heads, summary_frames, DocumentId, Message, PeerMetadata, SUMMARY_CAPABILITY,
    SUMMARY_VERSION,
};
use sync_core::schema::read_meta;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::backoff::{jitter, Backoff};
use crate::discovery::{self, Fetched, HttpError};
use crate::model::{ChangeKind, ConnectionState, PurgeReason};
use crate::replica::Replica;
use crate::state::{now_ms, Shared};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The websocket close code with which the server ends a connection whose token
/// expired or was revoked (docs/client.md): refresh the token, purge nothing.
pub const CLOSE_TOKEN_ENDED: u16 = 4401;

/// Documents created on this device that may be on their way to the server at once.
/// The server holds a creation in memory until its first changes arrive (a second
/// round trip) and refuses more than `max_pending_creations` (256) per connection; a
/// device that made hundreds of plans offline sends them in waves below that.
const MAX_CREATING: usize = 64;

/// The settings key of the persisted `last_synced_at_ms`.
pub const LAST_SYNCED_KEY: &str = "last_synced_at";
/// The settings key of the user this store belongs to.
pub const USER_KEY: &str = "user";

/// What the app wants of the sync loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Online,
    Offline,
    Closed,
}

/// Why a session could not start or went on no longer.
#[derive(Debug)]
enum Fail {
    /// The network or the server failed; retried with backoff.
    Lost(String),
    /// The server refused the token (401 or close 4401).
    Unauthorized,
    /// The server's certificate is not trusted.
    Tls(String),
    /// The token is another user's than the store's.
    WrongUser {
        store_user: String,
        token_user: String,
    },
}

impl From<HttpError> for Fail {
    fn from(e: HttpError) -> Fail {
        match e {
            HttpError::Unauthorized => Fail::Unauthorized,
            HttpError::Tls(reason) => Fail::Tls(reason),
            HttpError::Other(e) => Fail::Lost(e),
        }
    }
}

/// Why a session ended.
enum Ended {
    /// The app went offline or closed the client.
    Asked,
    /// It failed; `connected` if the handshake had succeeded.
    Failed { fail: Fail, connected: bool },
}

/// What discovery remembers between sessions.
#[derive(Default)]
struct DiscoveryState {
    /// The cursor of the last listing, for the next incremental one.
    cursor: Option<String>,
    /// When the last full listing was applied (none yet: the next one is full).
    last_full: Option<Instant>,
}

impl DiscoveryState {
    /// `Some(cursor)` for an incremental listing, `None` when the full one is due.
    fn since(&self, full_every: Duration) -> Option<String> {
        match self.last_full {
            Some(at) if at.elapsed() < full_every => self.cursor.clone(),
            _ => None,
        }
    }

    fn applied(&mut self, fetched: &Fetched) {
        if fetched.full {
            self.last_full = Some(Instant::now());
        }
        // A server without cursors: every listing is full.
        self.cursor.clone_from(&fetched.cursor);
        if fetched.cursor.is_none() {
            self.last_full = None;
        }
    }
}

/// Runs until the app closes the client.
pub async fn run(shared: Arc<Shared>, mut control: watch::Receiver<Control>) {
    let http = match reqwest::Client::builder()
        .tls_backend_preconfigured((*shared.tls).clone())
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            shared.update_status(|s| s.last_error = Some(format!("no HTTP client: {e}")));
            return;
        }
    };
    let mut backoff = Backoff::new(
        shared.options.backoff_initial_ms,
        shared.options.backoff_max_ms,
    );
    let mut discovery = DiscoveryState::default();
    // The provider was asked since the last connection the server accepted.
    let mut refreshed = false;
    loop {
        let wanted = *control.borrow_and_update();
        match wanted {
            Control::Closed => return,
            Control::Offline => {
                shared.update_status(|s| {
                    s.state = ConnectionState::Offline;
                    s.sync_enabled = false;
                });
                if control.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Control::Online => shared.update_status(|s| {
                s.sync_enabled = true;
                if !matches!(
                    s.state,
                    ConnectionState::Unauthorized | ConnectionState::WrongUser { .. }
                ) {
                    s.state = ConnectionState::Connecting;
                }
            }),
        }
        let (fail, connected) = match session(&shared, &http, &mut control, &mut discovery).await {
            Ended::Asked => continue,
            Ended::Failed { fail, connected } => (fail, connected),
        };
        if connected {
            backoff.reset();
            refreshed = false;
        }
        match fail {
            Fail::Lost(error) => {
                tracing::info!(%error, "sync connection ended");
                shared.update_status(|s| {
                    s.state = ConnectionState::Offline;
                    s.last_error = Some(error);
                });
                let delay = backoff.next_delay(jitter());
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.token_changed.notified() => {}
                    changed = control.changed() => if changed.is_err() { return },
                }
            }
            Fail::Unauthorized => {
                if !refreshed {
                    refreshed = true;
                    if shared.credentials.refresh().await {
                        tracing::info!("token refreshed by the credentials provider");
                        continue;
                    }
                }
                tracing::info!("the server refused the token");
                shared.update_status(|s| {
                    s.state = ConnectionState::Unauthorized;
                    s.last_error = Some("the server refused the token (expired or revoked)".into());
                });
                // Wait for a new token; ask the provider again later, with backoff.
                let delay = backoff.next_delay(jitter());
                tokio::select! {
                    () = tokio::time::sleep(delay) => refreshed = false,
                    () = shared.token_changed.notified() => {
                        refreshed = false;
                        backoff.reset();
                    }
                    changed = control.changed() => if changed.is_err() { return },
                }
            }
            Fail::Tls(reason) => {
                tracing::warn!(%reason, "TLS failure: not retrying until asked");
                shared.update_status(|s| {
                    s.state = ConnectionState::TlsError {
                        reason: reason.clone(),
                    };
                    s.last_error = Some(format!("TLS: {reason}"));
                });
                tokio::select! {
                    () = shared.poll_now.notified() => {}
                    () = shared.token_changed.notified() => {}
                    changed = control.changed() => if changed.is_err() { return },
                }
            }
            Fail::WrongUser {
                store_user,
                token_user,
            } => {
                shared.update_status(|s| {
                    s.last_error = Some(format!(
                        "the token is {token_user}'s, this store is {store_user}'s"
                    ));
                    s.state = ConnectionState::WrongUser {
                        store_user,
                        token_user,
                    };
                });
                tokio::select! {
                    () = shared.token_changed.notified() => {}
                    changed = control.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

/// One connection, from discovery to its end.
async fn session(
    shared: &Arc<Shared>,
    http: &reqwest::Client,
    control: &mut watch::Receiver<Control>,
    discovery: &mut DiscoveryState,
) -> Ended {
    let failed = |fail: Fail| Ended::Failed {
        fail,
        connected: false,
    };
    let url = match discovery::listing_url(&shared.server_url) {
        Ok(url) => url,
        Err(e) => return failed(Fail::Lost(e)),
    };
    let token = shared.credentials.token();
    if let Err(fail) = check_user(shared, http, &url, &token).await {
        return failed(fail);
    }
    // Discovery first, so that documents whose access ended while we were offline are
    // purged before we would push them.
    let acked_before = acked_ids(shared).await;
    let since = discovery.since(Duration::from_millis(
        shared.options.full_reconcile_interval_ms.max(1_000),
    ));
    let fetched = match discovery::fetch(http, &url, &token, since.as_deref()).await {
        Ok(fetched) => fetched,
        Err(e) => return failed(e.into()),
    };
    let mut ws = match open_socket(shared, &token).await {
        Ok(ws) => ws,
        Err(fail) => return failed(fail),
    };
    let (server_peer, server_storage, summary) =
        match handshake(&mut ws, shared.store.storage_id()).await {
            Ok(ids) => ids,
            Err(e) => return failed(Fail::Lost(e)),
        };
    tracing::info!(server = %server_peer, summary, "sync connected");
    shared.update_status(|s| {
        s.state = ConnectionState::Online;
    });

    let mut conn = Conn {
        shared: Arc::clone(shared),
        ws,
        engine: PeerSync::new(),
        me: format!("{}-{}", shared.store.storage_id(), std::process::id()),
        server_peer,
        server_storage,
        wanted: HashMap::new(),
        summarised: HashMap::new(),
        listed: false,
        url: url.clone(),
        http: http.clone(),
        token_checked: Some(Instant::now()),
        creating: HashSet::new(),
        create_queue: std::collections::VecDeque::new(),
    };
    let result = conn
        .run(fetched, acked_before, summary, discovery, control)
        .await;
    conn.save_sync_states().await;
    let _ = conn.ws.close(None).await;
    shared.update_status(|s| {
        s.state = ConnectionState::Offline;
        s.downloading = 0;
    });
    match result {
        Ok(()) => Ended::Asked,
        Err(fail) => Ended::Failed {
            fail,
            connected: true,
        },
    }
}

/// The store belongs to the first user whose token synced it; another user's token is
/// refused (`WrongUser`) before anything is exchanged.
async fn check_user(
    shared: &Shared,
    http: &reqwest::Client,
    url: &reqwest::Url,
    token: &str,
) -> Result<(), Fail> {
    let token_user = discovery::fetch_me(http, url, token).await?;
    let store_user = shared
        .store
        .setting(USER_KEY)
        .await
        .map_err(|e| Fail::Lost(e.to_string()))?;
    match store_user {
        Some(store_user) if store_user != token_user => Err(Fail::WrongUser {
            store_user,
            token_user,
        }),
        Some(_) => Ok(()),
        None => shared
            .store
            .set_setting(USER_KEY, &token_user)
            .await
            .map_err(|e| Fail::Lost(e.to_string())),
    }
}

/// Opens the websocket with the token in the `Authorization` header, over TLS for wss://.
async fn open_socket(shared: &Shared, token: &str) -> Result<Ws, Fail> {
    let url = shared.server_url.as_str();
    let mut request = url
        .into_client_request()
        .map_err(|e| Fail::Lost(format!("server url {url:?}: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        Fail::Lost("the token contains characters a header cannot carry".to_owned())
    })?;
    request.headers_mut().insert("Authorization", bearer);
    let connector = if url.starts_with("wss:") {
        Connector::Rustls(Arc::clone(&shared.tls))
    } else {
        Connector::Plain
    };
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err(Fail::Lost("connecting timed out".into())),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            if resp.status() == 401 {
                Err(Fail::Unauthorized)
            } else {
                Err(Fail::Lost(format!(
                    "the server refused the connection: HTTP {}",
                    resp.status()
                )))
            }
        }
        Ok(Err(e)) => match crate::tls::failure(&e) {
            Some(reason) => Err(Fail::Tls(reason)),
            None => Err(Fail::Lost(format!("cannot connect: {e}"))),
        },
    }
}

/// `join` → `peer`; returns the server's peer id, its storageId and whether it
/// speaks the connect-time summary.
async fn handshake(ws: &mut Ws, storage_id: &str) -> Result<(String, String, bool), String> {
    let join = Message::Join {
        sender_id: format!("{storage_id}-{}", std::process::id()),
        peer_metadata: Some(
            PeerMetadata {
                storage_id: Some(storage_id.to_owned()),
                is_ephemeral: Some(false),
                capabilities: None,
            }
            .with_summary(),
        ),
        supported_protocol_versions: vec![protocol::PROTOCOL_VERSION.into()],
    };
    ws.send(WsMessage::Binary(protocol::encode(&join).into()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, ws.next())
        .await
        .map_err(|_| "handshake: the server did not answer join".to_owned())?;
    let Some(Ok(WsMessage::Binary(bytes))) = reply else {
        return Err("handshake: the connection closed".into());
    };
    match protocol::decode(&bytes) {
        Ok(Message::Peer {
            sender_id,
            peer_metadata,
            ..
        }) => {
            let metadata = peer_metadata.unwrap_or_default();
            let summary = metadata.supports(SUMMARY_CAPABILITY, SUMMARY_VERSION);
            let storage = metadata
                .storage_id
                .ok_or("handshake: the server sent no storageId")?;
            Ok((sender_id, storage, summary))
        }
        Ok(Message::Error { message, .. }) => Err(format!("handshake refused: {message}")),
        Ok(other) => Err(format!("handshake: unexpected {}", other.type_name())),
        Err(e) => Err(format!("handshake: {e}")),
    }
}

/// Ids of documents the server has acknowledged at least once.
async fn acked_ids(shared: &Shared) -> HashSet<DocumentId> {
    let docs = shared.docs.lock().await;
    docs.map
        .iter()
        .filter(|(_, r)| !r.acked.is_empty())
        .map(|(id, _)| *id)
        .collect()
}

/// The document id an `error` message is about (`document <id>: ...`), if any.
fn error_document(message: &str) -> Option<DocumentId> {
    let rest = message.strip_prefix("document ")?;
    let end = rest.find([':', ' '])?;
    rest[..end].parse().ok()
}

/// One live connection.
struct Conn {
    shared: Arc<Shared>,
    ws: Ws,
    engine: PeerSync,
    me: String,
    server_peer: String,
    server_storage: String,
    /// Listed by the server, not held yet: requested, waiting for their first changes.
    wanted: HashMap<DocumentId, (Partition, Automerge)>,
    /// The heads sent in the summary, per document: a summary answer saying "in sync"
    /// acknowledges exactly these.
    summarised: HashMap<DocumentId, Vec<ChangeHash>>,
    /// A listing was applied in this session (needed for "last successful sync").
    listed: bool,
    url: reqwest::Url,
    http: reqwest::Client,
    /// When the token was last confirmed valid (before purging on doc-unavailable).
    token_checked: Option<Instant>,
    /// New documents sent to the server and not yet acknowledged (at most `MAX_CREATING`).
    creating: HashSet<DocumentId>,
    /// New documents waiting for a place in `creating`.
    create_queue: std::collections::VecDeque<DocumentId>,
}

impl Conn {
    async fn run(
        &mut self,
        fetched: Fetched,
        acked_before: HashSet<DocumentId>,
        summary: bool,
        discovery: &mut DiscoveryState,
        control: &mut watch::Receiver<Control>,
    ) -> Result<(), Fail> {
        for (id, state) in self
            .shared
            .store
            .sync_states(&self.server_storage)
            .await
            .unwrap_or_default()
        {
            self.engine.resume(id, &state);
        }
        discovery.applied(&fetched);
        self.apply_listing(fetched, &acked_before).await?;
        if summary {
            self.send_summary().await?;
        } else {
            self.push_all().await?;
        }
        self.check_synced().await;

        let period = Duration::from_millis(self.shared.options.discovery_interval_ms.max(100));
        let mut poll = tokio::time::interval_at(Instant::now() + period, period);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = self.ws.next() => match frame {
                    Some(Ok(WsMessage::Binary(bytes))) => self.on_frame(&bytes).await?,
                    Some(Ok(WsMessage::Close(frame))) => {
                        return Err(match frame {
                            Some(f) if u16::from(f.code) == CLOSE_TOKEN_ENDED => Fail::Unauthorized,
                            Some(f) => Fail::Lost(format!("the server closed the connection: {}", f.reason)),
                            None => Fail::Lost("the server closed the connection".into()),
                        });
                    }
                    None => return Err(Fail::Lost("the server closed the connection".into())),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(Fail::Lost(format!("connection lost: {e}"))),
                },
                () = self.shared.wake.notified() => self.push_dirty().await?,
                _ = poll.tick() => self.poll(discovery).await?,
                () = self.shared.poll_now.notified() => self.poll(discovery).await?,
                changed = control.changed() => {
                    if changed.is_err() || *control.borrow() != Control::Online {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Asks the listing again (full when due, else incremental) and acts on it.
    async fn poll(&mut self, discovery: &mut DiscoveryState) -> Result<(), Fail> {
        let acked_before = acked_ids(&self.shared).await;
        let since = discovery.since(Duration::from_millis(
            self.shared.options.full_reconcile_interval_ms.max(1_000),
        ));
        let token = self.shared.credentials.token();
        let fetched = discovery::fetch(&self.http, &self.url, &token, since.as_deref()).await?;
        discovery.applied(&fetched);
        self.apply_listing(fetched, &acked_before).await?;
        self.check_synced().await;
        Ok(())
    }

    /// Requests listed documents not held; on a full listing, purges acknowledged
    /// documents no longer listed (their access ended while this device did not hear).
    async fn apply_listing(
        &mut self,
        fetched: Fetched,
        acked_before: &HashSet<DocumentId>,
    ) -> Result<(), Fail> {
        let Fetched { listing, full, .. } = fetched;
        if full {
            let gone: Vec<DocumentId> = {
                let docs = self.shared.docs.lock().await;
                docs.map
                    .keys()
                    .filter(|id| acked_before.contains(id) && !listing.contains_key(id))
                    .copied()
                    .collect()
            };
            for id in gone {
                self.purge(id, PurgeReason::NoLongerListed).await;
            }
            self.wanted.retain(|id, _| listing.contains_key(id));
        }
        let held: HashSet<DocumentId> = self.shared.docs.lock().await.map.keys().copied().collect();
        for (id, partition) in listing {
            if held.contains(&id) || self.wanted.contains_key(&id) {
                continue;
            }
            self.engine.forget(&id);
            self.wanted.insert(id, (partition, Automerge::new()));
            self.push_wanted(id).await?;
        }
        self.listed = true;
        let downloading = self.wanted.len() as u64;
        self.shared.update_status(|s| s.downloading = downloading);
        Ok(())
    }

    /// The connect-time summary: the heads of every held document the server accepted
    /// before, in as few frames as the codec allows; documents the server never
    /// acknowledged (created offline) are pushed as usual, since the summary would get
    /// them a `doc-unavailable`.
    async fn send_summary(&mut self) -> Result<(), Fail> {
        let (known, fresh): (Vec<(DocumentId, Vec<ChangeHash>)>, Vec<DocumentId>) = {
            let mut docs = self.shared.docs.lock().await;
            let mut known = Vec::new();
            let mut fresh = Vec::new();
            for (id, r) in &mut docs.map {
                r.dirty = false;
                if r.acked.is_empty() {
                    fresh.push(*id);
                } else {
                    let mut heads = r.doc.get_heads();
                    heads.sort();
                    known.push((*id, heads));
                }
            }
            (known, fresh)
        };
        for (id, heads) in &known {
            if self.engine.persistable_state(id).is_none() {
                self.engine.open(*id);
            }
            self.summarised.insert(*id, heads.clone());
        }
        for frame in summary_frames(&self.me, &self.server_peer, known) {
            self.send(&frame).await?;
        }
        for id in fresh {
            self.push(id).await?;
        }
        Ok(())
    }

    /// Pushes every held document (start of a session without the summary).
    async fn push_all(&mut self) -> Result<(), Fail> {
        let ids: Vec<DocumentId> = {
            let mut docs = self.shared.docs.lock().await;
            docs.map.values_mut().for_each(|r| r.dirty = false);
            docs.map.keys().copied().collect()
        };
        for id in ids {
            self.push(id).await?;
        }
        Ok(())
    }

    /// Pushes documents edited locally since the last push.
    async fn push_dirty(&mut self) -> Result<(), Fail> {
        let ids: Vec<DocumentId> = {
            let mut docs = self.shared.docs.lock().await;
            let mut ids = Vec::new();
            for (id, r) in &mut docs.map {
                if r.resync {
                    // discard_unsynced: what we told the server before no longer holds.
                    r.resync = false;
                    self.engine.forget(id);
                }
                if r.dirty {
                    r.dirty = false;
                    ids.push(*id);
                }
            }
            ids
        };
        for id in ids {
            self.push(id).await?;
        }
        Ok(())
    }

    /// Sends the engine's next message for a held document, if there is one. A document
    /// the server has never acknowledged waits for a place among `MAX_CREATING`.
    async fn push(&mut self, id: DocumentId) -> Result<(), Fail> {
        let msg = {
            let docs = self.shared.docs.lock().await;
            let Some(replica) = docs.map.get(&id) else {
                return Ok(());
            };
            if replica.acked.is_empty() && replica.refused.is_none() && !self.creating.contains(&id)
            {
                if self.creating.len() >= MAX_CREATING {
                    if !self.create_queue.contains(&id) {
                        self.create_queue.push_back(id);
                    }
                    return Ok(());
                }
                self.creating.insert(id);
            }
            self.engine
                .generate(id, &replica.doc)
                .map(|data| wrap(&self.me, &self.server_peer, id, &replica.doc, data))
        };
        match msg {
            Some(msg) => self.send(&msg).await,
            None => Ok(()),
        }
    }

    /// Sends the `request` (or follow-up `sync`) for a wanted document.
    async fn push_wanted(&mut self, id: DocumentId) -> Result<(), Fail> {
        let msg = self.wanted.get(&id).and_then(|(_, doc)| {
            self.engine
                .generate(id, doc)
                .map(|data| wrap(&self.me, &self.server_peer, id, doc, data))
        });
        match msg {
            Some(msg) => self.send(&msg).await,
            None => Ok(()),
        }
    }

    async fn send(&mut self, msg: &Message) -> Result<(), Fail> {
        self.ws
            .send(WsMessage::Binary(protocol::encode(msg).into()))
            .await
            .map_err(|e| Fail::Lost(format!("connection lost: {e}")))
    }

    async fn on_frame(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let msg = match protocol::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the server");
                return Ok(());
            }
        };
        match msg {
            Message::Sync {
                document_id, data, ..
            }
            | Message::Request {
                document_id, data, ..
            } => self.on_sync(document_id, &data).await,
            Message::DocUnavailable { document_id, .. } => {
                if !self.wanted.contains_key(&document_id) {
                    // Purge only when access really ended: a server that reports a dead
                    // token as doc-unavailable (before close code 4401) must not make
                    // us delete unsent work. The token is checked once per burst.
                    self.check_token().await?;
                }
                if self.wanted.remove(&document_id).is_some() {
                    self.engine.forget(&document_id);
                    let downloading = self.wanted.len() as u64;
                    self.shared.update_status(|s| s.downloading = downloading);
                } else {
                    self.purge(document_id, PurgeReason::Unavailable).await;
                }
                self.check_synced().await;
                Ok(())
            }
            Message::RemoteHeadsChanged {
                document_id,
                new_heads,
                ..
            } => {
                if let Some(at) = new_heads.get(&self.server_storage) {
                    if let Some(heads) = decode_heads(&at.heads) {
                        self.on_ack(document_id, heads).await?;
                    }
                }
                Ok(())
            }
            Message::SummaryAnswer { in_sync, .. } => {
                for id in in_sync {
                    if let Some(heads) = self.summarised.remove(&id) {
                        self.on_ack(id, heads).await?;
                    }
                }
                Ok(())
            }
            Message::Error { message, .. } => {
                self.on_error(message).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Fails with `Unauthorized` if the server no longer takes our token (asked at most
    /// once every few seconds).
    async fn check_token(&mut self) -> Result<(), Fail> {
        if self
            .token_checked
            .is_some_and(|at| at.elapsed() < Duration::from_secs(5))
        {
            return Ok(());
        }
        let token = self.shared.credentials.token();
        match discovery::fetch_me(&self.http, &self.url, &token).await {
            Err(HttpError::Unauthorized) => Err(Fail::Unauthorized),
            // Network trouble: the server's word stands, as before.
            _ => {
                self.token_checked = Some(Instant::now());
                Ok(())
            }
        }
    }

    /// An `error` from the server. One about a change of a document we hold marks that
    /// document refused (with the server's words); the others keep syncing.
    async fn on_error(&mut self, message: String) {
        tracing::warn!(%message, "the server reported an error");
        if let Some(id) = error_document(&message) {
            if message.contains("change rejected") {
                let mut docs = self.shared.docs.lock().await;
                if let Some(replica) = docs.map.get_mut(&id) {
                    replica.refused = Some(message.clone());
                    self.shared.counts_changed(&docs);
                    drop(docs);
                    self.shared.changed(id, ChangeKind::Local);
                    if let Err(e) = self.created(id).await {
                        tracing::debug!(?e, "sending the next new document failed");
                    }
                    self.check_synced().await;
                    return;
                }
            }
        }
        self.shared
            .update_status(|s| s.last_error = Some(format!("server: {message}")));
    }

    /// Applies a sync message: to a held document (persisted before we answer), or to
    /// a wanted one (which becomes held once it has its first changes).
    async fn on_sync(&mut self, id: DocumentId, data: &[u8]) -> Result<(), Fail> {
        if self.wanted.contains_key(&id) {
            return self.on_wanted_sync(id, data).await;
        }
        let reply = {
            let mut docs = self.shared.docs.lock().await;
            let Some(replica) = docs.map.get_mut(&id) else {
                return Ok(()); // purged meanwhile, or never asked for
            };
            let applied = match self.engine.receive(id, &mut replica.doc, data) {
                Ok(applied) => applied,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "could not apply a sync message");
                    return Ok(());
                }
            };
            if applied.changed() {
                // Acknowledged heads we lacked may have arrived with these changes.
                replica.settle();
                if let Err(e) = self.shared.store.put(id, replica).await {
                    // Keep memory equal to disk; the session restarts from saved state.
                    rollback(&mut replica.doc, &applied.heads_before);
                    return Err(Fail::Lost(format!("saving a received change failed: {e}")));
                }
                self.shared.changed(id, ChangeKind::Remote);
                self.shared.counts_changed(&docs);
            }
            let docs = &*docs;
            docs.map.get(&id).and_then(|r| {
                self.engine
                    .generate(id, &r.doc)
                    .map(|d| wrap(&self.me, &self.server_peer, id, &r.doc, d))
            })
        };
        if let Some(reply) = reply {
            self.send(&reply).await?;
        }
        Ok(())
    }

    async fn on_wanted_sync(&mut self, id: DocumentId, data: &[u8]) -> Result<(), Fail> {
        let Some((partition, mut doc)) = self.wanted.remove(&id) else {
            return Ok(());
        };
        if let Err(e) = self.engine.receive(id, &mut doc, data) {
            tracing::warn!(%id, error = %e, "could not apply a sync message");
            return Ok(());
        }
        if doc.get_heads().is_empty() {
            self.wanted.insert(id, (partition, doc));
            return self.push_wanted(id).await;
        }
        // The server validated it; still, only keep what is what the listing said.
        match read_meta(&doc) {
            Ok(meta) if meta.partition() == partition => {}
            _ => {
                tracing::warn!(%id, "a listed document does not carry the listed partition");
                self.engine.forget(&id);
                return Ok(());
            }
        }
        {
            let mut docs = self.shared.docs.lock().await;
            let replica = Replica::new(partition, doc, Vec::new(), HashSet::new());
            if let Err(e) = self.shared.store.put(id, &replica).await {
                return Err(Fail::Lost(format!(
                    "saving a received document failed: {e}"
                )));
            }
            docs.map.insert(id, replica);
            self.shared.counts_changed(&docs);
        }
        // A corrupt row of this document was just replaced by the server's copy.
        self.shared
            .corrupt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id.to_string());
        let downloading = self.wanted.len() as u64;
        self.shared.update_status(|s| s.downloading = downloading);
        self.shared.changed(id, ChangeKind::Remote);
        self.push(id).await?;
        self.check_synced().await;
        Ok(())
    }

    /// A new document left `creating` (acknowledged, refused or gone): send the next.
    async fn created(&mut self, id: DocumentId) -> Result<(), Fail> {
        if self.creating.remove(&id) {
            while self.creating.len() < MAX_CREATING {
                let Some(next) = self.create_queue.pop_front() else {
                    break;
                };
                self.push(next).await?;
            }
        }
        Ok(())
    }

    /// The server committed these heads of a document.
    async fn on_ack(&mut self, id: DocumentId, heads: Vec<ChangeHash>) -> Result<(), Fail> {
        {
            let mut docs = self.shared.docs.lock().await;
            let Some(replica) = docs.map.get_mut(&id) else {
                return Ok(());
            };
            replica.acknowledge(&heads);
            if let Err(e) = self.shared.store.put_acked(id, replica).await {
                return Err(Fail::Lost(format!("saving an acknowledgement failed: {e}")));
            }
            self.shared.counts_changed(&docs);
        }
        if let Some(state) = self.engine.persistable_state(&id) {
            let _ = self
                .shared
                .store
                .put_sync_states(&self.server_storage, &[(id, state)])
                .await;
        }
        self.created(id).await?;
        self.check_synced().await;
        Ok(())
    }

    /// Removes a document from this device and tells the app.
    async fn purge(&mut self, id: DocumentId, reason: PurgeReason) {
        self.engine.forget(&id);
        self.summarised.remove(&id);
        self.create_queue.retain(|q| *q != id);
        if let Err(e) = self.created(id).await {
            tracing::debug!(?e, "sending the next new document failed");
        }
        let mut docs = self.shared.docs.lock().await;
        if !docs.map.contains_key(&id) {
            return;
        }
        if let Err(e) = self.shared.store.delete(id).await {
            // It stays until the next attempt; never leave memory and disk apart.
            tracing::error!(%id, error = %e, "purging a document failed");
            return;
        }
        docs.map.remove(&id);
        self.shared.counts_changed(&docs);
        drop(docs);
        tracing::info!(%id, ?reason, "document purged");
        self.shared.changed(id, ChangeKind::Purged { reason });
    }

    /// Everything that can be on the server is, and every listed document is here: a
    /// successful sync. Documents the server refused do not hold this back.
    async fn check_synced(&self) {
        if !self.listed || !self.wanted.is_empty() {
            return;
        }
        let (pending, refused) = {
            let docs = self.shared.docs.lock().await;
            (docs.pending_unrefused(), docs.refused())
        };
        if pending == 0 {
            let now = now_ms();
            if let Err(e) = self
                .shared
                .store
                .set_setting(LAST_SYNCED_KEY, &now.to_string())
                .await
            {
                tracing::warn!(error = %e, "could not persist last_synced_at");
            }
            self.shared.update_status(|s| {
                s.last_synced_at_ms = Some(now);
                if refused == 0 {
                    s.last_error = None;
                }
            });
        }
    }

    async fn save_sync_states(&self) {
        let states: Vec<(DocumentId, Vec<u8>)> = self
            .engine
            .documents()
            .filter(|id| !self.wanted.contains_key(id))
            .filter_map(|id| self.engine.persistable_state(id).map(|s| (*id, s)))
            .collect();
        let _ = self
            .shared
            .store
            .put_sync_states(&self.server_storage, &states)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document an error message names is found; other errors name none.
    #[test]
    fn error_documents() {
        let id = DocumentId::random();
        assert_eq!(
            error_document(&format!("document {id}: change rejected: no")),
            Some(id)
        );
        assert_eq!(
            error_document(&format!("document {id} was erased and cannot come back")),
            Some(id)
        );
        assert_eq!(error_document("token expired"), None);
        assert_eq!(error_document("document nonsense: x"), None);
    }
}
