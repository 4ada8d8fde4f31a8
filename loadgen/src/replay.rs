//! Replaying a recording (`record`) against a fresh server at a chosen rate, so that the
//! server, not the load generator, is what saturates.
//!
//! 1. `upload`: one device per wijk puts every recorded document, with its recorded id
//!    and initial state, on the server (the path `run`'s create phase takes). From here
//!    the server holds exactly what the recording was made against.
//! 2. `subscribe`: one connection per recorded device joins and says, for every
//!    document it holds, "I have the initial heads" (a sync message with those heads as
//!    the last shared ones and an empty bloom filter); it waits for the server's answer.
//! 3. `replay`: change `k` is due at `k / rate` seconds (an open loop: a slow server
//!    does not slow the offer down, and latencies count from the due time). Its writer
//!    sends the recorded frame as soon as it is due and the writer's connection holds
//!    the change it builds on (a device only builds on what it has), so every frame is
//!    valid against the server's state. Every connection answers a server message that
//!    carries changes with the cheapest correct reply: "my heads are yours now"
//!    (`heads` = `last_sync` = the server's heads, empty bloom), without applying
//!    anything; and a message whose heads are ahead of what it holds but that carries
//!    no changes with "I hold these heads", so the server sends what is missing. No automerge work happens on the client: decoding the frame's heads
//!    and encoding a reply is all it does per delivery.
//! 4. `drain`: after the last change is due, wait until every sent change is
//!    committed and delivered (bounded), then stop.
//!
//! A change counts as committed when a server message (a sync message's heads, or
//! our server's `remote-heads-changed` acknowledgement) covers it; delivered when a
//! server message carrying changes brings a holder's heads to or past it. The report
//! holds the server's CPU seconds (from `/proc/<pid>/stat`) and the load generator's
//! own (`/proc/self/stat`, the same utime + stime getrusage reports) from the start of
//! the replay to the end of the drain, each per committed change.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use automerge::sync::{self, BloomFilter, Have, MessageVersion};
use automerge::ChangeHash;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use sync_core::protocol::{self, DocumentId, Message, PeerMetadata};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::device::Device;
use crate::metrics::{
    lock, proc_stat, ticks_per_second, Percentiles, Probe, ServerUse, ServerWatch,
};
use crate::record::{self, Recording};
use crate::report::Floor;
use crate::run::Tokens;
use crate::workload::{DeviceSpec, Role};
use crate::Error;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long connecting and joining may take.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Websocket URL of a fresh server, e.g. ws://127.0.0.1:8080/sync. Repeat it for
    /// several nodes on one store: device `i` connects to the `i mod n`-th (the
    /// upload goes to the first).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Tokens file (`seed` writes it); omit for the reference server.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// The recording (`record --out`).
    #[arg(long)]
    recording: PathBuf,
    /// Offered rate, changes per second.
    #[arg(long)]
    rate: f64,
    /// Length of the replay window; it replays min(recorded, rate × secs) changes.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Name in the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Server processes to read CPU and RSS of, from /proc (repeat it per node; the
    /// report sums them).
    #[arg(long)]
    pid: Vec<u32>,
    /// Longest the drain after the window (and any setup step) may take, seconds.
    #[arg(long, default_value_t = 60)]
    drain_secs: u64,
    /// Changes timed for the automerge floor (0 skips it).
    #[arg(long, default_value_t = 200)]
    floor_rounds: usize,
    /// Write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit with an error unless every change was committed and delivered to every
    /// holder without errors (for tests).
    #[arg(long)]
    check: bool,
}

/// One replay at one rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    pub label: String,
    pub url: String,
    /// Offered rate, changes per second.
    pub rate: f64,
    /// Seconds over which the changes were due.
    pub window_secs: f64,
    pub connections: usize,
    pub documents: usize,
    /// Seconds the upload and the subscriptions took (not measured further).
    pub setup_secs: f64,
    pub changes_scheduled: u64,
    pub changes_sent: u64,
    /// Changes that had to wait for their writer to receive the change they build on.
    pub changes_held_back: u64,
    pub changes_committed: u64,
    /// Committed changes per second: committed / max(window, due-start to last commit).
    pub committed_per_s: f64,
    /// (change, holder other than its writer) pairs delivered, and expected.
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub undelivered: u64,
    /// (connection, document) pairs whose last heads are not the document's last
    /// replayed change.
    pub heads_mismatched: u64,
    /// Due time until a holder received it, per delivery.
    pub propagation_ms: Percentiles,
    /// Due time until the server reported holding it.
    pub commit_ms: Percentiles,
    /// From the start of the window to the end of the drain.
    pub secs: f64,
    pub server: ServerUse,
    pub server_cpu_us_per_change: f64,
    pub client_cpu_s: f64,
    pub client_cpu_us_per_change: f64,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// automerge's own work per change at this replay's average fan-out.
    pub floor: Floor,
}

impl ReplayReport {
    /// Everything committed and delivered, heads as recorded, no error.
    pub fn complete(&self) -> bool {
        self.errors == 0
            && self.changes_committed == self.changes_scheduled
            && self.undelivered == 0
            && self.heads_mismatched == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "{} at {:.0} changes/s offered: {} of {} committed ({:.1}/s), {} of {} deliveries, \
             propagation p50/p99 {:.1}/{:.1} ms, server {:.2} CPU s ({:.0} µs per change), \
             load generator {:.2} CPU s ({:.0} µs per change), peak RSS {:.0} MiB, \
             heads mismatched {}, errors {}, floor {:.0} µs at fan-out {}\n",
            self.label,
            self.rate,
            self.changes_committed,
            self.changes_scheduled,
            self.committed_per_s,
            self.deliveries,
            self.expected_deliveries,
            self.propagation_ms.p50,
            self.propagation_ms.p99,
            self.server.cpu_s,
            self.server_cpu_us_per_change,
            self.client_cpu_s,
            self.client_cpu_us_per_change,
            self.server.peak_rss_mib,
            self.heads_mismatched,
            self.errors,
            self.floor.us_per_change,
            self.floor.fanout,
        )
    }
}

/// What every connection of a replay shares.
struct Shared {
    ids: Vec<DocumentId>,
    doc_ids: HashMap<DocumentId, usize>,
    by_hash: record::ByHash,
    /// Per document, the indices of its recorded changes in position order.
    doc_changes: Vec<Vec<usize>>,
    /// Per document, the heads before any recorded change.
    initial_heads: Vec<Vec<ChangeHash>>,
    /// Per change: writer, document, position, hash, frame.
    changes: Vec<Planned>,
    /// Per document, the highest position the server reported holding.
    committed: Vec<AtomicU32>,
    committed_total: AtomicU64,
    /// Changes due before their writer held the change they build on.
    held_back: AtomicU64,
    /// Microseconds from the start of the window to the latest commit.
    last_commit_us: AtomicU64,
    rate: f64,
    /// `BUURTSYNC_REPLAY_TRACE` set: print every sync frame received (debugging).
    trace: bool,
    start: OnceLock<Instant>,
    probe: Probe,
}

struct Planned {
    writer: usize,
    doc: usize,
    pos: u32,
    hash: ChangeHash,
    sync: Vec<u8>,
}

impl Shared {
    fn due(&self, k: usize) -> Instant {
        let start = *self.start.get().unwrap_or(&Instant::now());
        start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Heads of `doc` once its line reaches `pos`.
    fn heads_at(&self, doc: usize, pos: u32) -> Vec<ChangeHash> {
        match pos {
            0 => self.initial_heads[doc].clone(),
            p => vec![self.changes[self.doc_changes[doc][p as usize - 1]].hash],
        }
    }

    /// The position of `doc`'s line that `heads` reach (0: none of the recorded changes).
    fn position(&self, doc: usize, heads: &[ChangeHash]) -> u32 {
        heads
            .iter()
            .filter_map(|h| self.by_hash.get(h))
            .filter(|(d, _)| *d == doc)
            .map(|(_, p)| *p)
            .max()
            .unwrap_or(0)
    }

    /// The server reported holding `doc` up to `pos`: count what that newly commits.
    fn on_server_heads(&self, doc: usize, pos: u32) {
        if pos == 0 {
            return;
        }
        let before = self.committed[doc].fetch_max(pos, Ordering::AcqRel);
        if before >= pos {
            return;
        }
        let now = Instant::now();
        let mut samples = Vec::new();
        for q in before + 1..=pos {
            let k = self.doc_changes[doc][q as usize - 1];
            samples.push(now.saturating_duration_since(self.due(k)).as_micros() as u64);
        }
        self.committed_total
            .fetch_add(samples.len() as u64, Ordering::AcqRel);
        if let Some(start) = self.start.get() {
            self.last_commit_us.fetch_max(
                now.duration_since(*start).as_micros() as u64,
                Ordering::AcqRel,
            );
        }
        lock(&self.probe.commit_us).extend(samples);
    }
}

/// Reads the tokens file, if any.
fn tokens(path: &Option<PathBuf>) -> Result<Option<Tokens>, Error> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::Json(path.display().to_string(), e))
}

fn token_for(tokens: &Option<Tokens>, wijk: usize, role: Role) -> Result<Option<String>, Error> {
    let Some(tokens) = tokens else {
        return Ok(None);
    };
    let id = crate::workload::wijk_id(wijk);
    tokens
        .get(&id)
        .and_then(|r| r.get(role.as_str()))
        .cloned()
        .map(Some)
        .ok_or_else(|| {
            Error::Setup(format!(
                "no {} token for {id} in the tokens file",
                role.as_str()
            ))
        })
}

/// Puts every recorded document on the server, one device per wijk.
async fn upload(
    rec: &Recording,
    url: &str,
    tokens: &Option<Tokens>,
    limit: Duration,
) -> Result<(), Error> {
    let probe = Arc::new(Probe::default());
    let mut tasks = Vec::new();
    for w in 0..rec.sizes.wijken {
        let mut docs = Vec::new();
        for d in rec.documents.iter().filter(|d| d.wijk == w) {
            docs.push((d.document_id()?, d.load()?, d.is_plan));
        }
        let spec = DeviceSpec {
            name: format!("upload-{w}"),
            role: Role::Professional,
            wijk: w,
        };
        let mut dev = Device::new(
            300_000 + w,
            spec,
            url,
            token_for(tokens, w, Role::Professional)?,
            w as u64,
        );
        let probe = probe.clone();
        tasks.push(tokio::spawn(async move {
            dev.connect(&probe).await.map_err(Error::Setup)?;
            dev.push_all(docs, &probe, limit).await.map_err(|why| {
                Error::Setup(format!(
                    "upload to wijk {w}: the server did not take every document: {why}"
                ))
            })?;
            dev.disconnect().await;
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Setup(e.to_string()))??;
    }
    Ok(())
}

/// What a connection task is told.
enum Cmd {
    /// Change `k` is due.
    Due(usize),
}

/// One replay connection: a recorded device.
struct Conn {
    dev: usize,
    ws: Ws,
    me: String,
    server_peer: String,
    /// Held documents → the position of their line this connection holds.
    held: HashMap<usize, u32>,
    /// Due changes waiting for the change they build on.
    pending: VecDeque<usize>,
    /// Held documents the server has not answered since subscribing.
    unanswered: usize,
    answered: Vec<bool>,
}

impl Conn {
    async fn open(
        shared: &Shared,
        url: &str,
        token: Option<String>,
        dev: usize,
        name: &str,
        held: Vec<usize>,
        docs: usize,
    ) -> Result<Conn, String> {
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
            request.headers_mut().insert("Authorization", v);
        }
        let (mut ws, _) =
            tokio::time::timeout(CONNECT_WAIT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
        let me = format!("replay-{name}");
        let join = Message::Join {
            sender_id: me.clone(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(format!("replay-{name}")),
                is_ephemeral: Some(false),
                capabilities: None,
            }),
            supported_protocol_versions: vec![protocol::PROTOCOL_VERSION.into()],
        };
        ws.send(WsMessage::Binary(protocol::encode(&join).into()))
            .await
            .map_err(|e| format!("send join: {e}"))?;
        let server_peer = loop {
            match tokio::time::timeout(CONNECT_WAIT, ws.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b)))) => match protocol::decode(&b) {
                    Ok(Message::Peer { sender_id, .. }) => break sender_id,
                    Ok(Message::Error { message, .. }) => {
                        return Err(format!("server refused join: {message}"))
                    }
                    _ => {}
                },
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("no peer message: {other:?}")),
            }
        };
        let mut conn = Conn {
            dev,
            ws,
            me,
            server_peer,
            unanswered: held.len(),
            held: held.iter().map(|d| (*d, 0)).collect(),
            pending: VecDeque::new(),
            answered: vec![false; docs],
        };
        for d in held {
            let heads = shared.initial_heads[d].clone();
            conn.feed(shared, d, heads).await?;
        }
        conn.ws.flush().await.map_err(|e| format!("flush: {e}"))?;
        Ok(conn)
    }

    /// Queues the cheapest sync message saying "I hold `heads` of `doc`".
    async fn feed(
        &mut self,
        shared: &Shared,
        doc: usize,
        heads: Vec<ChangeHash>,
    ) -> Result<(), String> {
        let data = sync::Message {
            heads: heads.clone(),
            need: Vec::new(),
            have: vec![Have {
                last_sync: heads,
                bloom: BloomFilter::default(),
            }],
            changes: Vec::<Vec<u8>>::new().into(),
            flags: None,
            version: MessageVersion::V1,
        }
        .encode();
        self.feed_data(shared, doc, data).await
    }

    async fn feed_data(
        &mut self,
        shared: &Shared,
        doc: usize,
        data: Vec<u8>,
    ) -> Result<(), String> {
        let id = shared.ids[doc];
        let bytes = protocol::encode(&Message::Sync {
            sender_id: self.me.clone(),
            target_id: self.server_peer.clone(),
            document_id: id,
            data,
        });
        Probe::add(&shared.probe.bytes_sent, bytes.len() as u64);
        Probe::add(&shared.probe.frames_sent, 1);
        self.ws
            .feed(WsMessage::Binary(bytes.into()))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// Reads frames until the server answered every subscription.
    async fn wait_answered(&mut self, shared: &Shared, deadline: Instant) -> Result<(), String> {
        while self.unanswered > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => {
                    return Err(format!(
                        "{} of {} subscriptions unanswered",
                        self.unanswered,
                        self.held.len()
                    ))
                }
                Ok(Some(Ok(WsMessage::Binary(b)))) => self.on_frame(shared, &b).await?,
                Ok(Some(Ok(_))) => {}
                Ok(other) => return Err(format!("closed while subscribing: {other:?}")),
            }
        }
        self.ws.flush().await.map_err(|e| format!("flush: {e}"))
    }

    async fn on_frame(&mut self, shared: &Shared, bytes: &[u8]) -> Result<(), String> {
        Probe::add(&shared.probe.frames_received, 1);
        Probe::add(&shared.probe.bytes_received, bytes.len() as u64);
        let msg = protocol::decode(bytes).map_err(|e| format!("undecodable frame: {e}"))?;
        match msg {
            Message::Sync {
                document_id, data, ..
            }
            | Message::Request {
                document_id, data, ..
            } => {
                let Some(&doc) = shared.doc_ids.get(&document_id) else {
                    return Ok(());
                };
                let msg =
                    sync::Message::decode(&data).map_err(|e| format!("bad sync message: {e}"))?;
                if !self.answered[doc] {
                    self.answered[doc] = true;
                    self.unanswered = self.unanswered.saturating_sub(1);
                }
                let pos = shared.position(doc, &msg.heads);
                if shared.trace {
                    eprintln!(
                        "trace {} doc {doc} heads at {pos} changes {} have {:?}",
                        self.me,
                        msg.changes.len(),
                        msg.have
                            .iter()
                            .map(|h| h.last_sync.len())
                            .collect::<Vec<_>>()
                    );
                }
                shared.on_server_heads(doc, pos);
                let Some(held) = self.held.get_mut(&doc) else {
                    return Ok(());
                };
                if msg.changes.is_empty() {
                    // The server is ahead but sent nothing (automerge-repo does this
                    // after resetting a peer's session): say what we hold, so it sends
                    // the rest. Otherwise we agree and there is nothing to say.
                    if pos > *held {
                        let heads = shared.heads_at(doc, *held);
                        self.feed(shared, doc, heads).await?;
                    }
                    return Ok(());
                }
                if pos > *held {
                    let now = Instant::now();
                    let mut samples = Vec::new();
                    for q in *held + 1..=pos {
                        let k = shared.doc_changes[doc][q as usize - 1];
                        if shared.changes[k].writer != self.dev {
                            samples.push(
                                now.saturating_duration_since(shared.due(k)).as_micros() as u64
                            );
                        }
                    }
                    *held = pos;
                    Probe::add(&shared.probe.deliveries, samples.len() as u64);
                    lock(&shared.probe.propagation_us).extend(samples);
                }
                let heads = shared.heads_at(doc, *held);
                self.feed(shared, doc, heads).await?;
            }
            Message::RemoteHeadsChanged {
                document_id,
                new_heads,
                ..
            } => {
                if let Some(&doc) = shared.doc_ids.get(&document_id) {
                    for at in new_heads.values() {
                        if let Some(heads) = protocol::decode_heads(&at.heads) {
                            shared.on_server_heads(doc, shared.position(doc, &heads));
                        }
                    }
                }
            }
            Message::DocUnavailable { document_id, .. } => {
                shared
                    .probe
                    .error(format!("{}: doc-unavailable {document_id}", self.me));
            }
            Message::Error { message, .. } => {
                shared
                    .probe
                    .error(format!("{}: server error: {message}", self.me));
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends every pending change whose predecessor this connection holds.
    async fn send_ready(&mut self, shared: &Shared) -> Result<(), String> {
        let mut i = 0;
        let mut sent = false;
        while i < self.pending.len() {
            let k = self.pending[i];
            let c = &shared.changes[k];
            let holds = self.held.get(&c.doc).copied().unwrap_or(0);
            if holds + 1 == c.pos {
                self.pending.remove(i);
                self.held.insert(c.doc, c.pos);
                let data = c.sync.clone();
                self.feed_data(shared, c.doc, data).await?;
                Probe::add(&shared.probe.changes_made, 1);
                sent = true;
            } else {
                i += 1;
            }
        }
        if sent {
            self.ws.flush().await.map_err(|e| format!("flush: {e}"))?;
        }
        Ok(())
    }

    /// The replay loop: due changes in, frames out, until the orchestrator hangs up.
    async fn serve(mut self, shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Cmd>) -> Conn {
        loop {
            let step = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Due(k)) => {
                        if self.held.get(&shared.changes[k].doc).copied().unwrap_or(0) + 1 != shared.changes[k].pos {
                            shared.held_back.fetch_add(1, Ordering::Relaxed);
                        }
                        self.pending.push_back(k);
                        Ok(())
                    }
                    None => break,
                },
                frame = self.ws.next() => match frame {
                    Some(Ok(WsMessage::Binary(b))) => self.on_frame(&shared, &b).await.and(self.ws.flush().await.map_err(|e| format!("flush: {e}"))),
                    Some(Ok(WsMessage::Close(_))) | None => Err("server closed the connection".to_owned()),
                    Some(Err(e)) => Err(format!("websocket error: {e}")),
                    Some(Ok(_)) => Ok(()),
                },
            };
            let step = match step {
                Ok(()) => self.send_ready(&shared).await,
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                shared.probe.error(format!("{}: {e}", self.me));
                break;
            }
        }
        let _ = self.ws.close(None).await;
        self
    }
}

/// Runs one replay and returns its report.
pub async fn replay(args: &ReplayArgs) -> Result<ReplayReport, Error> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(Error::Setup(format!(
            "--rate must be positive, not {}",
            args.rate
        )));
    }
    let rec = record::load(&args.recording)?;
    let tokens = tokens(&args.tokens)?;
    let limit = Duration::from_secs(args.drain_secs);
    let scheduled = ((args.rate * args.secs).round() as usize).min(rec.changes.len());
    let (pos, by_hash) = record::positions(&rec)?;
    let mut doc_changes = vec![Vec::new(); rec.documents.len()];
    let mut changes = Vec::with_capacity(scheduled);
    for (k, c) in rec.changes.iter().enumerate().take(scheduled) {
        doc_changes[c.doc].push(k);
        changes.push(Planned {
            writer: c.device,
            doc: c.doc,
            pos: pos[k],
            hash: c.hash()?,
            sync: c.sync_bytes()?,
        });
    }
    let mut ids = Vec::new();
    let mut initial_heads = Vec::new();
    for d in &rec.documents {
        ids.push(d.document_id()?);
        initial_heads.push(d.heads()?);
    }
    let doc_ids = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let holdings: Vec<Vec<usize>> = rec
        .devices
        .iter()
        .map(|dev| {
            (0..rec.documents.len())
                .filter(|&d| record::holds(dev, &rec.documents[d]))
                .collect()
        })
        .collect();
    let holders: Vec<u64> = (0..rec.documents.len())
        .map(|d| holdings.iter().filter(|h| h.contains(&d)).count() as u64)
        .collect();
    let expected_deliveries: u64 = changes
        .iter()
        .map(|c| holders[c.doc].saturating_sub(1))
        .sum();
    let shared = Arc::new(Shared {
        ids,
        doc_ids,
        by_hash,
        doc_changes,
        initial_heads,
        committed: (0..rec.documents.len())
            .map(|_| AtomicU32::new(0))
            .collect(),
        committed_total: AtomicU64::new(0),
        held_back: AtomicU64::new(0),
        last_commit_us: AtomicU64::new(0),
        rate: args.rate,
        trace: std::env::var_os("BUURTSYNC_REPLAY_TRACE").is_some(),
        start: OnceLock::new(),
        probe: Probe::default(),
        changes,
    });

    let setup = Instant::now();
    upload(&rec, &args.url[0], &tokens, limit).await?;
    eprintln!(
        "[{}] uploaded {} documents in {:.1} s",
        args.label,
        rec.documents.len(),
        setup.elapsed().as_secs_f64()
    );
    let mut opening = Vec::new();
    for (dev, spec) in rec.devices.iter().enumerate() {
        let token = token_for(&tokens, spec.wijk, spec.role())?;
        let shared = shared.clone();
        let url = args.url[dev % args.url.len()].clone();
        let name = spec.name.clone();
        let held = holdings[dev].clone();
        let docs = rec.documents.len();
        opening.push(tokio::spawn(async move {
            let mut conn = Conn::open(&shared, &url, token, dev, &name, held, docs).await?;
            conn.wait_answered(&shared, Instant::now() + limit).await?;
            Ok::<_, String>(conn)
        }));
    }
    let mut conns = Vec::new();
    for o in opening {
        let conn = o
            .await
            .map_err(|e| Error::Setup(e.to_string()))?
            .map_err(|e| Error::Setup(format!("subscribing: {e}")))?;
        conns.push(conn);
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    eprintln!(
        "[{}] {} connections subscribed; replaying {scheduled} changes at {} /s",
        args.label,
        conns.len(),
        args.rate
    );
    // The counters so far are the setup's.
    let base_frames = (
        Probe::get(&shared.probe.frames_sent),
        Probe::get(&shared.probe.frames_received),
        Probe::get(&shared.probe.bytes_sent),
        Probe::get(&shared.probe.bytes_received),
    );

    let ticks = ticks_per_second();
    let me = std::process::id();
    let client_before = proc_stat(me, ticks);
    let watches: Vec<ServerWatch> = args
        .pid
        .iter()
        .map(|&pid| ServerWatch::start(Some(pid), ticks))
        .collect();
    let start = Instant::now();
    let _ = shared.start.set(start);
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for conn in conns {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        tasks.push(tokio::spawn(conn.serve(shared.clone(), rx)));
    }
    // The schedule: an open loop, every change sent to its writer when due.
    let mut k = 0;
    while k < scheduled {
        let now = Instant::now();
        while k < scheduled && shared.due(k) <= now {
            let _ = senders[shared.changes[k].writer].send(Cmd::Due(k));
            k += 1;
        }
        if k < scheduled {
            tokio::time::sleep_until(shared.due(k).into()).await;
        }
    }
    let window = start.elapsed();
    // The drain: until everything is committed and delivered, or the limit.
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let done = shared.committed_total.load(Ordering::Acquire) >= scheduled as u64
            && Probe::get(&shared.probe.deliveries) >= expected_deliveries;
        if done || shared.probe.errors.load(Ordering::Acquire) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let server = ServerUse::sum(watches.into_iter().map(ServerWatch::finish));
    let client_after = proc_stat(me, ticks);
    drop(senders);
    let mut finished = Vec::new();
    for t in tasks {
        finished.push(
            t.await
                .map_err(|e| Error::Setup(format!("connection task: {e}")))?,
        );
    }

    // Heads: every holder ends at its documents' last replayed change.
    let mut heads_mismatched = 0;
    let mut unsent = 0;
    for conn in &finished {
        unsent += conn.pending.len() as u64;
        for (doc, at) in &conn.held {
            if *at as usize != shared.doc_changes[*doc].len() {
                heads_mismatched += 1;
            }
        }
    }
    if unsent > 0 {
        shared.probe.error(format!(
            "{unsent} changes never sent: their writer never received the change they build on"
        ));
    }
    let committed = shared.committed_total.load(Ordering::Acquire);
    if committed < scheduled as u64 {
        shared.probe.error(format!(
            "{} changes never committed",
            scheduled as u64 - committed
        ));
    }
    let deliveries = Probe::get(&shared.probe.deliveries);
    let last_commit = Duration::from_micros(shared.last_commit_us.load(Ordering::Acquire));
    let busy = window.max(last_commit).as_secs_f64().max(1e-9);
    let client_cpu_s = match (client_before, client_after) {
        (Some(b), Some(a)) => a.cpu.saturating_sub(b.cpu).as_secs_f64(),
        _ => 0.0,
    };
    let per_change = |cpu_s: f64| cpu_s * 1e6 / committed.max(1) as f64;
    let fanout = if scheduled == 0 {
        0
    } else {
        (expected_deliveries as f64 / scheduled as f64).round() as usize
    };
    let floor = if args.floor_rounds == 0 {
        Floor::default()
    } else {
        tokio::task::block_in_place(|| {
            crate::run::floor_for(rec.seed, rec.history, args.floor_rounds, fanout)
        })?
    };
    let probe = &shared.probe;
    let propagation_ms = Percentiles::of(&lock(&probe.propagation_us), 1000.0);
    let commit_ms = Percentiles::of(&lock(&probe.commit_us), 1000.0);
    let report = ReplayReport {
        label: args.label.clone(),
        url: args.url.join(","),
        rate: args.rate,
        window_secs: window.as_secs_f64(),
        connections: finished.len(),
        documents: rec.documents.len(),
        setup_secs,
        changes_scheduled: scheduled as u64,
        changes_sent: Probe::get(&probe.changes_made),
        changes_held_back: shared.held_back.load(Ordering::Relaxed),
        changes_committed: committed,
        committed_per_s: committed as f64 / busy,
        deliveries,
        expected_deliveries,
        undelivered: expected_deliveries.saturating_sub(deliveries),
        heads_mismatched,
        propagation_ms,
        commit_ms,
        secs,
        server,
        server_cpu_us_per_change: per_change(server.cpu_s),
        client_cpu_s,
        client_cpu_us_per_change: per_change(client_cpu_s),
        frames_sent: Probe::get(&probe.frames_sent) - base_frames.0,
        frames_received: Probe::get(&probe.frames_received) - base_frames.1,
        bytes_sent: Probe::get(&probe.bytes_sent) - base_frames.2,
        bytes_received: Probe::get(&probe.bytes_received) - base_frames.3,
        errors: Probe::get(&probe.errors),
        error_samples: probe.error_samples(),
        floor,
    };
    Ok(report)
}

/// `buurtsync-loadgen replay`: one replay, its summary printed and its report saved.
pub async fn run(args: ReplayArgs) -> Result<(), Error> {
    let report = replay(&args).await?;
    print!("{}", report.summary());
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| Error::Json("report".into(), e))?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json).map_err(|e| Error::Io(out.display().to_string(), e))?;
    }
    if args.check && !report.complete() {
        return Err(Error::Failed(report.errors.max(1)));
    }
    Ok(())
}
