//! The sync loop: one task that connects when it may, keeps one websocket session with
//! the server, and reconnects with exponential backoff and jitter when it drops.
//!
//! A session: fetch the discovery listing (purge what is no longer listed), open the
//! websocket with the bearer token, `join` / `peer`, resume the saved sync states for
//! the server's storageId, push every held document and `request` every listed one not
//! held yet. Then, until the connection ends or the app goes offline: apply what the
//! server sends (persisting before anything else), push local edits as they happen,
//! count `remote-heads-changed` with the server's storageId as the acknowledgement that
//! a change is committed, and purge documents the server says are unavailable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use automerge::Automerge;
use futures_util::{SinkExt, StreamExt};
use sync_core::engine::{wrap, PeerSync};
use sync_core::partition::Partition;
use sync_core::protocol::{self, decode_heads, DocumentId, Message, PeerMetadata};
use sync_core::schema::read_meta;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::backoff::{jitter, Backoff};
use crate::discovery::{self, Listing};
use crate::model::{ChangeKind, PurgeReason};
use crate::replica::{rollback, Replica};
use crate::state::{now_ms, Shared};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the app wants of the sync loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Online,
    Offline,
    Closed,
}

/// Why a session ended.
enum Ended {
    /// The app went offline or closed the client.
    Asked,
    /// The connection failed or dropped; `connected` if the handshake had succeeded.
    Lost { error: String, connected: bool },
}

/// Runs until the app closes the client.
pub async fn run(shared: Arc<Shared>, mut control: watch::Receiver<Control>) {
    let http = match reqwest::Client::builder().build() {
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
    loop {
        let wanted = *control.borrow_and_update();
        match wanted {
            Control::Closed => return,
            Control::Offline => {
                shared.update_status(|s| {
                    s.online = false;
                    s.sync_enabled = false;
                });
                if control.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Control::Online => shared.update_status(|s| s.sync_enabled = true),
        }
        match session(&shared, &http, &mut control).await {
            Ended::Asked => continue,
            Ended::Lost { error, connected } => {
                tracing::info!(%error, "sync connection ended");
                shared.update_status(|s| {
                    s.online = false;
                    s.last_error = Some(error);
                });
                if connected {
                    backoff.reset();
                }
            }
        }
        let delay = backoff.next_delay(jitter());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            changed = control.changed() => if changed.is_err() { return },
        }
    }
}

/// One connection, from discovery to its end.
async fn session(
    shared: &Arc<Shared>,
    http: &reqwest::Client,
    control: &mut watch::Receiver<Control>,
) -> Ended {
    let lost = |error: String| Ended::Lost {
        error,
        connected: false,
    };
    let url = match discovery::listing_url(&shared.server_url) {
        Ok(url) => url,
        Err(e) => return lost(e),
    };
    // Discovery first, so that documents whose access ended while we were offline are
    // purged before we would push them.
    let acked_before = acked_ids(shared).await;
    let listing = match discovery::fetch(http, &url, &shared.token).await {
        Ok(listing) => listing,
        Err(e) => return lost(e),
    };
    let mut ws = match open_socket(&shared.server_url, &shared.token).await {
        Ok(ws) => ws,
        Err(e) => return lost(e),
    };
    let (server_peer, server_storage) = match handshake(&mut ws, shared.store.storage_id()).await {
        Ok(ids) => ids,
        Err(e) => return lost(e),
    };
    tracing::info!(server = %server_peer, "sync connected");
    shared.update_status(|s| s.online = true);

    let mut conn = Conn {
        shared: Arc::clone(shared),
        ws,
        engine: PeerSync::new(),
        me: format!("{}-{}", shared.store.storage_id(), std::process::id()),
        server_peer,
        server_storage,
        wanted: HashMap::new(),
        listed: false,
    };
    let result = conn.run(listing, acked_before, &url, http, control).await;
    conn.save_sync_states().await;
    let _ = conn.ws.close(None).await;
    shared.update_status(|s| s.online = false);
    match result {
        Ok(()) => Ended::Asked,
        Err(error) => Ended::Lost {
            error,
            connected: true,
        },
    }
}

/// Opens the websocket with the token in the `Authorization` header.
async fn open_socket(url: &str, token: &str) -> Result<Ws, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("server url {url:?}: {e}"))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token contains characters a header cannot carry".to_owned())?;
    request.headers_mut().insert("Authorization", bearer);
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err("connecting timed out".into()),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(format!(
            "the server refused the connection: HTTP {}",
            resp.status()
        )),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
    }
}

/// `join` → `peer`; returns the server's peer id and storageId.
async fn handshake(ws: &mut Ws, storage_id: &str) -> Result<(String, String), String> {
    let join = Message::Join {
        sender_id: format!("{storage_id}-{}", std::process::id()),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some(storage_id.to_owned()),
            is_ephemeral: Some(false),
            capabilities: None,
        }),
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
            let storage = peer_metadata
                .and_then(|m| m.storage_id)
                .ok_or("handshake: the server sent no storageId")?;
            Ok((sender_id, storage))
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
    /// A listing was applied in this session (needed for "last successful sync").
    listed: bool,
}

impl Conn {
    async fn run(
        &mut self,
        listing: Listing,
        acked_before: HashSet<DocumentId>,
        url: &reqwest::Url,
        http: &reqwest::Client,
        control: &mut watch::Receiver<Control>,
    ) -> Result<(), String> {
        for (id, state) in self
            .shared
            .store
            .sync_states(&self.server_storage)
            .await
            .unwrap_or_default()
        {
            self.engine.resume(id, &state);
        }
        self.apply_listing(listing, &acked_before).await?;
        self.push_all().await?;
        self.check_synced().await;

        let period = Duration::from_millis(self.shared.options.discovery_interval_ms.max(100));
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = self.ws.next() => match frame {
                    Some(Ok(WsMessage::Binary(bytes))) => self.on_frame(&bytes).await?,
                    Some(Ok(WsMessage::Close(_))) | None => {
                        return Err("the server closed the connection".into())
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("connection lost: {e}")),
                },
                () = self.shared.wake.notified() => self.push_dirty().await?,
                _ = poll.tick() => self.poll(url, http).await?,
                () = self.shared.poll_now.notified() => self.poll(url, http).await?,
                changed = control.changed() => {
                    if changed.is_err() || *control.borrow() != Control::Online {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Asks the listing again and acts on it.
    async fn poll(&mut self, url: &reqwest::Url, http: &reqwest::Client) -> Result<(), String> {
        let acked_before = acked_ids(&self.shared).await;
        let listing = discovery::fetch(http, url, &self.shared.token).await?;
        self.apply_listing(listing, &acked_before).await?;
        self.check_synced().await;
        Ok(())
    }

    /// Requests listed documents not held; purges acknowledged documents no longer
    /// listed (their access ended while this device did not hear of it).
    async fn apply_listing(
        &mut self,
        listing: Listing,
        acked_before: &HashSet<DocumentId>,
    ) -> Result<(), String> {
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
        Ok(())
    }

    /// Pushes every held document (start of a session).
    async fn push_all(&mut self) -> Result<(), String> {
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
    async fn push_dirty(&mut self) -> Result<(), String> {
        let ids: Vec<DocumentId> = {
            let mut docs = self.shared.docs.lock().await;
            docs.map
                .iter_mut()
                .filter(|(_, r)| r.dirty)
                .map(|(id, r)| {
                    r.dirty = false;
                    *id
                })
                .collect()
        };
        for id in ids {
            self.push(id).await?;
        }
        Ok(())
    }

    /// Sends the engine's next message for a held document, if there is one.
    async fn push(&mut self, id: DocumentId) -> Result<(), String> {
        let msg = {
            let docs = self.shared.docs.lock().await;
            let Some(replica) = docs.map.get(&id) else {
                return Ok(());
            };
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
    async fn push_wanted(&mut self, id: DocumentId) -> Result<(), String> {
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

    async fn send(&mut self, msg: &Message) -> Result<(), String> {
        self.ws
            .send(WsMessage::Binary(protocol::encode(msg).into()))
            .await
            .map_err(|e| format!("connection lost: {e}"))
    }

    async fn on_frame(&mut self, bytes: &[u8]) -> Result<(), String> {
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
                if self.wanted.remove(&document_id).is_some() {
                    self.engine.forget(&document_id);
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
            Message::Error { message, .. } => {
                tracing::warn!(%message, "the server reported an error");
                self.shared
                    .update_status(|s| s.last_error = Some(format!("server: {message}")));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Applies a sync message: to a held document (persisted before we answer), or to
    /// a wanted one (which becomes held once it has its first changes).
    async fn on_sync(&mut self, id: DocumentId, data: &[u8]) -> Result<(), String> {
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
                if let Err(e) = self
                    .shared
                    .store
                    .put(id, &replica.partition, &replica.doc, &replica.acked)
                    .await
                {
                    // Keep memory equal to disk; the session restarts from saved state.
                    rollback(&mut replica.doc, &applied.heads_before);
                    return Err(format!("saving a received change failed: {e}"));
                }
                replica.refresh();
                self.shared.changed(id, ChangeKind::Remote);
                let pending = docs.pending();
                self.shared.update_status(|s| s.pending = pending);
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

    async fn on_wanted_sync(&mut self, id: DocumentId, data: &[u8]) -> Result<(), String> {
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
            if let Err(e) = self.shared.store.put(id, &partition, &doc, &[]).await {
                return Err(format!("saving a received document failed: {e}"));
            }
            docs.map
                .insert(id, Replica::new(partition, doc, Vec::new()));
            let pending = docs.pending();
            self.shared.update_status(|s| s.pending = pending);
        }
        self.shared.changed(id, ChangeKind::Remote);
        self.push(id).await
    }

    /// The server committed these heads of a document.
    async fn on_ack(
        &mut self,
        id: DocumentId,
        heads: Vec<automerge::ChangeHash>,
    ) -> Result<(), String> {
        {
            let mut docs = self.shared.docs.lock().await;
            let Some(replica) = docs.map.get_mut(&id) else {
                return Ok(());
            };
            let mut heads = heads;
            heads.sort();
            replica.acked = heads;
            replica.refresh();
            if let Err(e) = self.shared.store.put_acked(id, &replica.acked).await {
                return Err(format!("saving an acknowledgement failed: {e}"));
            }
            let pending = docs.pending();
            self.shared.update_status(|s| s.pending = pending);
        }
        if let Some(state) = self.engine.persistable_state(&id) {
            let _ = self
                .shared
                .store
                .put_sync_states(&self.server_storage, &[(id, state)])
                .await;
        }
        self.check_synced().await;
        Ok(())
    }

    /// Removes a document from this device and tells the app.
    async fn purge(&mut self, id: DocumentId, reason: PurgeReason) {
        self.engine.forget(&id);
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
        let pending = docs.pending();
        drop(docs);
        tracing::info!(%id, ?reason, "document purged");
        self.shared.update_status(|s| s.pending = pending);
        self.shared.changed(id, ChangeKind::Purged { reason });
    }

    /// Everything is on the server and every listed document is here: a successful sync.
    async fn check_synced(&self) {
        if !self.listed || !self.wanted.is_empty() {
            return;
        }
        let pending = self.shared.docs.lock().await.pending();
        if pending == 0 {
            self.shared.update_status(|s| {
                s.last_sync_at_ms = Some(now_ms());
                s.last_error = None;
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
