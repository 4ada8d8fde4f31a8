//! A Rust client on sync-core: its codec and [`PeerSync`] engine over a real websocket.
//!
//! Documents live in the client (a replica) and outlive connections, so tests can go
//! offline, edit, and reconnect exactly as a device at a kitchen table does.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use automerge::Automerge;
use futures_util::{SinkExt, StreamExt};
use sync_core::engine::{wrap, PeerSync};
use sync_core::protocol::{self, encode_heads, summary_frames, DocumentId, Message, PeerMetadata};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("HTTP {0} at the upgrade")]
    Http(u16),
    #[error("websocket: {0}")]
    Ws(String),
    #[error("handshake: {0}")]
    Handshake(String),
}

/// Something the server said that is not document data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Error(String),
    Unavailable(DocumentId),
}

/// A device: documents, and at most one live connection.
pub struct Client {
    pub name: String,
    pub docs: HashMap<DocumentId, Automerge>,
    url: String,
    token: String,
    storage_id: Option<String>,
    ws: Option<Ws>,
    engine: PeerSync,
    server_peer: String,
    server_storage: Option<String>,
    /// Heads the server acknowledged as committed (remote-heads-changed), per doc.
    pub acked: HashMap<DocumentId, Vec<String>>,
    pub notices: Vec<Notice>,
    pub unavailable: HashSet<DocumentId>,
    /// Ephemeral messages received, per document.
    pub ephemeral: HashMap<DocumentId, usize>,
    /// Announce the summary capability at join and send a summary instead of a sync
    /// message per document on (re)connect.
    pub use_summary: bool,
    /// The `peerMetadata` of the server's last `peer` message.
    pub server_metadata: Option<PeerMetadata>,
    /// Documents the server's summary answers called in sync (since the last connect).
    pub in_sync: HashSet<DocumentId>,
    /// `buurtsync-summary-answer` frames received (since the last connect).
    pub summary_answers: usize,
    /// Sync messages received per document (since the last connect).
    pub sync_received: HashMap<DocumentId, usize>,
    /// Types of every message received (since the last connect).
    pub seen_types: Vec<&'static str>,
    /// Code and reason of the server's close frame, once the socket closed with one.
    pub closed_with: Option<(u16, String)>,
}

impl Client {
    /// Connects and completes the join/peer handshake.
    pub async fn connect(name: &str, url: &str, token: &str) -> Result<Client, ConnectError> {
        Self::connect_as(name, url, token, false).await
    }

    /// Connects announcing the summary capability (our own clients do).
    pub async fn connect_with_summary(
        name: &str,
        url: &str,
        token: &str,
    ) -> Result<Client, ConnectError> {
        Self::connect_as(name, url, token, true).await
    }

    async fn connect_as(
        name: &str,
        url: &str,
        token: &str,
        use_summary: bool,
    ) -> Result<Client, ConnectError> {
        let mut client = Client {
            name: name.to_owned(),
            docs: HashMap::new(),
            url: url.to_owned(),
            token: token.to_owned(),
            storage_id: Some(format!("storage-{name}")),
            ws: None,
            engine: PeerSync::new(),
            server_peer: String::new(),
            server_storage: None,
            acked: HashMap::new(),
            notices: Vec::new(),
            unavailable: HashSet::new(),
            ephemeral: HashMap::new(),
            use_summary,
            server_metadata: None,
            in_sync: HashSet::new(),
            summary_answers: 0,
            sync_received: HashMap::new(),
            seen_types: Vec::new(),
            closed_with: None,
        };
        client.reconnect().await?;
        Ok(client)
    }

    /// Opens a websocket with the bearer token in the Authorization header, no join.
    pub async fn open_socket(url: &str, token: &str) -> Result<Ws, ConnectError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::Ws(e.to_string()))?;
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| ConnectError::Ws(e.to_string()))?,
        );
        match tokio::time::timeout(crate::WAIT, tokio_tungstenite::connect_async(request)).await {
            Err(_) => Err(ConnectError::Ws("connect timed out".into())),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                Err(ConnectError::Http(resp.status().as_u16()))
            }
            Ok(Err(e)) => Err(ConnectError::Ws(e.to_string())),
        }
    }

    /// Goes back online: new socket, new sync sessions, then syncs every document.
    pub async fn reconnect(&mut self) -> Result<(), ConnectError> {
        let mut ws = Self::open_socket(&self.url, &self.token).await?;
        let metadata = PeerMetadata {
            storage_id: self.storage_id.clone(),
            is_ephemeral: Some(false),
            capabilities: None,
        };
        let join = Message::Join {
            sender_id: self.name.clone(),
            peer_metadata: Some(if self.use_summary {
                metadata.with_summary()
            } else {
                metadata
            }),
            supported_protocol_versions: vec!["1".into()],
        };
        ws.send(WsMessage::Binary(protocol::encode(&join).into()))
            .await
            .map_err(|e| ConnectError::Ws(e.to_string()))?;
        let reply = tokio::time::timeout(crate::WAIT, ws.next())
            .await
            .map_err(|_| ConnectError::Handshake("no peer message".into()))?;
        match reply {
            Some(Ok(WsMessage::Binary(b))) => match protocol::decode(&b) {
                Ok(Message::Peer {
                    sender_id,
                    peer_metadata,
                    ..
                }) => {
                    self.server_peer = sender_id;
                    self.server_storage = peer_metadata.as_ref().and_then(|m| m.storage_id.clone());
                    self.server_metadata = peer_metadata;
                }
                other => return Err(ConnectError::Handshake(format!("{other:?}"))),
            },
            other => return Err(ConnectError::Handshake(format!("{other:?}"))),
        }
        self.ws = Some(ws);
        self.engine = PeerSync::new();
        self.in_sync.clear();
        self.summary_answers = 0;
        self.sync_received.clear();
        self.seen_types.clear();
        self.closed_with = None;
        if self.use_summary {
            // One summary (split into frames) instead of a message per document; the
            // server answers which are in sync and syncs the others.
            let heads: Vec<_> = self
                .docs
                .iter()
                .map(|(id, doc)| (*id, doc.get_heads()))
                .collect();
            for frame in summary_frames(&self.name, &self.server_peer, heads) {
                self.send(&frame).await;
            }
            return Ok(());
        }
        let ids: Vec<_> = self.docs.keys().copied().collect();
        for id in ids {
            self.push(id).await;
        }
        Ok(())
    }

    /// Documents whose state has been settled since the last connect: listed in sync
    /// by a summary answer, or our heads acknowledged by the server.
    pub fn settled(&self, id: DocumentId) -> bool {
        self.in_sync.contains(&id) || self.is_acked(id)
    }

    /// Points the device at another server address (a restarted server's new port).
    pub fn set_url(&mut self, url: &str) {
        self.url = url.to_owned();
    }

    /// Goes offline: the socket is closed, documents stay.
    pub async fn disconnect(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }

    pub fn is_online(&self) -> bool {
        self.ws.is_some()
    }

    /// The server's storageId, from its `peer` message.
    pub fn server_storage(&self) -> Option<&str> {
        self.server_storage.as_deref()
    }

    /// Adds a new document (already holding its first change) and syncs it if online.
    pub async fn add_document(&mut self, doc: Automerge) -> DocumentId {
        let id = DocumentId::random();
        self.docs.insert(id, doc);
        self.push(id).await;
        id
    }

    /// Creates a plan for household `pseudonym` in `wijk` and waits until the server
    /// has committed it; panics (failing the test) if it does not.
    pub async fn create_plan(&mut self, wijk: &str, pseudonym: &str) -> DocumentId {
        let wijk = sync_core::partition::WijkId::new(wijk).expect("valid wijk");
        let doc = sync_core::schema::new_document(&sync_core::schema::Plan::new(wijk, pseudonym))
            .expect("new plan");
        let id = self.add_document(doc).await;
        assert!(
            self.sync_acked(id).await,
            "plan not acknowledged: {:?}",
            self.notices
        );
        id
    }

    /// Edits a document locally, then syncs it if online.
    pub async fn edit(&mut self, id: DocumentId, f: impl FnOnce(&mut Automerge)) {
        let doc = self.docs.get_mut(&id).expect("document held");
        f(doc);
        self.push(id).await;
    }

    /// Asks the server for a document we do not hold (`request`).
    pub async fn request(&mut self, id: DocumentId) {
        self.docs.entry(id).or_default();
        self.unavailable.remove(&id);
        self.engine.forget(&id);
        self.push(id).await;
    }

    /// Sends the engine's next message for `id`, if any and if online.
    pub async fn push(&mut self, id: DocumentId) {
        let Some(doc) = self.docs.get(&id) else {
            return;
        };
        if self.ws.is_none() {
            return;
        }
        if let Some(data) = self.engine.generate(id, doc) {
            let msg = wrap(&self.name, &self.server_peer, id, doc, data);
            self.send(&msg).await;
        }
    }

    /// Sends an ephemeral (presence) message about `id`.
    pub async fn send_ephemeral(&mut self, id: DocumentId, count: u64) {
        let msg = Message::Ephemeral {
            sender_id: self.name.clone(),
            target_id: self.server_peer.clone(),
            count,
            session_id: format!("{}-session", self.name),
            document_id: id,
            data: vec![0xa0],
        };
        self.send(&msg).await;
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, msg: &Message) {
        self.send_raw(protocol::encode(msg)).await;
    }

    /// Sends arbitrary bytes as one binary frame.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        if let Some(ws) = self.ws.as_mut() {
            if ws.send(WsMessage::Binary(bytes.into())).await.is_err() {
                self.ws = None;
            }
        }
    }

    /// Handles incoming messages until `done` holds or `limit` passes; returns whether
    /// `done` held. Replies to every sync message, like a real client.
    pub async fn pump_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Client) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done(self) {
                return true;
            }
            let Some(ws) = self.ws.as_mut() else {
                return done(self);
            };
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match tokio::time::timeout(deadline - now, ws.next()).await {
                Err(_) => return done(self),
                Ok(Some(Ok(WsMessage::Close(frame)))) => {
                    self.closed_with = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    self.ws = None;
                }
                Ok(None | Some(Err(_))) => {
                    self.ws = None;
                }
                Ok(Some(Ok(WsMessage::Binary(b)))) => self.handle(&b).await,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Pumps for a fixed time (to show that something does NOT arrive).
    pub async fn pump_for(&mut self, d: Duration) {
        self.pump_until(d, |_| false).await;
    }

    async fn handle(&mut self, bytes: &[u8]) {
        let msg = match protocol::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.notices
                    .push(Notice::Error(format!("undecodable from server: {e}")));
                return;
            }
        };
        self.seen_types.push(msg.type_name());
        match msg {
            Message::Sync {
                document_id, data, ..
            }
            | Message::Request {
                document_id, data, ..
            } => {
                *self.sync_received.entry(document_id).or_default() += 1;
                let doc = self.docs.entry(document_id).or_default();
                if let Err(e) = self.engine.receive(document_id, doc, &data) {
                    self.notices
                        .push(Notice::Error(format!("client could not apply: {e}")));
                }
                self.push(document_id).await;
            }
            Message::DocUnavailable { document_id, .. } => {
                self.unavailable.insert(document_id);
                self.notices.push(Notice::Unavailable(document_id));
                if self
                    .docs
                    .get(&document_id)
                    .is_some_and(|d| d.get_heads().is_empty())
                {
                    self.docs.remove(&document_id);
                }
                self.engine.forget(&document_id);
            }
            Message::RemoteHeadsChanged {
                document_id,
                new_heads,
                ..
            } => {
                if let Some(storage) = &self.server_storage {
                    if let Some(at) = new_heads.get(storage) {
                        self.acked.insert(document_id, at.heads.clone());
                    }
                }
            }
            Message::Error { message, .. } => self.notices.push(Notice::Error(message)),
            Message::Ephemeral { document_id, .. } => {
                *self.ephemeral.entry(document_id).or_default() += 1;
            }
            Message::SummaryAnswer { in_sync, .. } => {
                self.summary_answers += 1;
                self.in_sync.extend(in_sync);
            }
            _ => {}
        }
    }

    /// Syncs until the server acknowledged our current heads of `id` as committed.
    pub async fn sync_acked(&mut self, id: DocumentId) -> bool {
        self.push(id).await;
        self.pump_until(crate::WAIT, |c| c.is_acked(id)).await
    }

    /// Has the server committed exactly our heads of `id`?
    pub fn is_acked(&self, id: DocumentId) -> bool {
        let Some(doc) = self.docs.get(&id) else {
            return false;
        };
        let mut ours = encode_heads(&doc.get_heads());
        ours.sort();
        self.acked.get(&id).is_some_and(|h| {
            let mut h = h.clone();
            h.sort();
            h == ours
        })
    }

    /// Requests a document and waits until it arrives (or is unavailable).
    pub async fn fetch(&mut self, id: DocumentId) -> bool {
        self.request(id).await;
        self.pump_until(crate::WAIT, |c| {
            c.unavailable.contains(&id)
                || c.docs.get(&id).is_some_and(|d| !d.get_heads().is_empty())
        })
        .await;
        self.docs
            .get(&id)
            .is_some_and(|d| !d.get_heads().is_empty())
    }

    /// The document as JSON (for assertions on content).
    pub fn json(&self, id: DocumentId) -> serde_json::Value {
        let doc = self.docs.get(&id).expect("document held");
        serde_json::to_value(automerge::AutoSerde::from(doc)).expect("json")
    }

    /// Heads as hex strings, as `buurtsync doc info` prints them.
    pub fn heads_hex(&self, id: DocumentId) -> Vec<String> {
        let mut h: Vec<String> = self.docs[&id]
            .get_heads()
            .iter()
            .map(ToString::to_string)
            .collect();
        h.sort();
        h
    }

    /// Error messages the server sent.
    pub fn errors(&self) -> Vec<&str> {
        self.notices
            .iter()
            .filter_map(|n| match n {
                Notice::Error(m) => Some(m.as_str()),
                Notice::Unavailable(_) => None,
            })
            .collect()
    }
}

/// Pumps every client in turn until all hold the same heads of `id` and the server has
/// acknowledged them to each; returns whether that happened in time.
pub async fn converge(clients: &mut [&mut Client], id: DocumentId) -> bool {
    let deadline = Instant::now() + crate::WAIT;
    for c in clients.iter_mut() {
        c.push(id).await;
    }
    while Instant::now() < deadline {
        for c in clients.iter_mut() {
            c.pump_until(Duration::from_millis(100), |_| false).await;
        }
        let first = clients[0].docs.get(&id).map(Automerge::get_heads);
        let same = clients
            .iter()
            .all(|c| c.docs.get(&id).map(Automerge::get_heads) == first);
        if same && clients.iter().all(|c| c.is_acked(id)) {
            return true;
        }
    }
    false
}

/// What a raw peer saw next.
#[derive(Debug)]
pub enum Seen {
    Message(Message),
    /// A close frame (with its code) or the end of the stream.
    Closed(Option<u16>),
    /// Nothing within the wait.
    Nothing,
}

/// A bare protocol peer for hostile-input and isolation tests: sends exactly the bytes
/// it is given and reports exactly what comes back.
pub struct RawPeer {
    ws: Ws,
}

impl RawPeer {
    /// Opens a socket and completes join/peer.
    pub async fn joined(url: &str, token: &str) -> RawPeer {
        let mut peer = RawPeer::open(url, token).await;
        peer.send(&Message::Join {
            sender_id: "raw".into(),
            peer_metadata: None,
            supported_protocol_versions: vec!["1".into()],
        })
        .await;
        match peer.next().await {
            Seen::Message(Message::Peer { .. }) => peer,
            other => panic!("expected peer, saw {other:?}"),
        }
    }

    /// Opens a socket without joining.
    pub async fn open(url: &str, token: &str) -> RawPeer {
        RawPeer {
            ws: Client::open_socket(url, token).await.expect("socket"),
        }
    }

    pub async fn send(&mut self, msg: &Message) {
        self.send_raw(protocol::encode(msg)).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(WsMessage::Binary(bytes.into())).await;
    }

    /// Sends a text frame (not part of the protocol).
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(WsMessage::Text(text.into())).await;
    }

    /// The next protocol message or close, waiting at most [`crate::WAIT`].
    pub async fn next(&mut self) -> Seen {
        self.next_within(crate::WAIT).await
    }

    pub async fn next_within(&mut self, limit: Duration) -> Seen {
        let deadline = Instant::now() + limit;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Seen::Nothing;
            }
            match tokio::time::timeout(deadline - now, self.ws.next()).await {
                Err(_) => return Seen::Nothing,
                Ok(None | Some(Err(_))) => return Seen::Closed(None),
                Ok(Some(Ok(WsMessage::Close(frame)))) => {
                    return Seen::Closed(frame.map(|f| u16::from(f.code)))
                }
                Ok(Some(Ok(WsMessage::Binary(b)))) => {
                    return Seen::Message(protocol::decode(&b).expect("server sent valid CBOR"))
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Skips messages until an `error` arrives; returns its text.
    pub async fn expect_error(&mut self) -> String {
        loop {
            match self.next().await {
                Seen::Message(Message::Error { message, .. }) => return message,
                Seen::Message(_) => {}
                other => panic!("expected an error message, saw {other:?}"),
            }
        }
    }
}
