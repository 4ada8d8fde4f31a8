//! The socket side of one websocket peer: a writer task that owns the sending half
//! behind a bounded channel, and the read loop that feeds frames, pings, hub signals,
//! access changes, ephemeral messages and the shutdown notice to the [`Connection`]
//! (which speaks the protocol). Here live the transport's limits: the handshake
//! deadline, pings and the idle timeout, the per-connection rate limit, frame size and
//! the slow-consumer cut-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use sync_core::policy::Principal;
use sync_core::protocol::Message;
use tokio::sync::mpsc;

use super::connection::{far_future, Connection, Flow};
use crate::hub::ConnSignal;
use crate::metrics as m;
use crate::state::{AppState, UserSlot};

/// Frames buffered towards a slow peer before the reader waits (backpressure).
const OUTBOX: usize = 64;
/// Ephemeral messages buffered for a peer; beyond that they are dropped.
const EPHEMERAL_BUFFER: usize = 32;

/// Runs a connection until the peer leaves, breaks protocol, or the server stops.
/// `slot` is the user's connection slot, given back when the connection ends.
pub async fn run(
    state: Arc<AppState>,
    socket: WebSocket,
    principal: Principal,
    token_id: String,
    slot: UserSlot,
) {
    let alive = state.alive.clone();
    let conn_id = state.hub.next_conn_id();
    metrics::gauge!(m::CONNECTIONS).increment(1.0);
    metrics::counter!(m::CONNECTIONS_TOTAL).increment(1);
    let (sink, stream) = socket.split();
    let (out_tx, out_rx) = mpsc::channel::<WsMessage>(OUTBOX);
    let writer = tokio::spawn(write_loop(sink, out_rx, state.limits.send_timeout));
    let (eph_tx, eph_rx) = mpsc::channel(EPHEMERAL_BUFFER);
    let signal = Arc::new(ConnSignal::new(conn_id, eph_tx));
    tracing::info!(conn = conn_id, user = %principal.user_id, token = %token_id, "peer connected");
    let mut conn = Connection::new(state.clone(), principal, token_id, signal, out_tx);
    serve(&mut conn, stream, eph_rx).await;
    conn.close().await;
    drop(conn);
    // The writer ends once every sender is gone and the queue is flushed.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    drop(slot);
    drop(alive);
}

/// Sends queued frames. A socket that does not take a frame within `send_timeout`
/// (a peer that stopped reading, or a dead link) ends the writer, and so the
/// connection: a slow consumer is dropped rather than buffered.
async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::Receiver<WsMessage>,
    send_timeout: Duration,
) {
    while let Some(msg) = rx.recv().await {
        // Whatever else is queued by now goes out with this frame: one flush (one
        // write to the socket) for the lot rather than one per frame (issue 18: a
        // relayed change sends a peer a sync message and a heads notice at once).
        let batch = async {
            let mut closing = matches!(msg, WsMessage::Close(_));
            sink.feed(msg).await?;
            for _ in 1..OUTBOX {
                if closing {
                    break;
                }
                let Ok(next) = rx.try_recv() else { break };
                closing = matches!(next, WsMessage::Close(_));
                sink.feed(next).await?;
            }
            sink.flush().await.map(|()| closing)
        };
        match tokio::time::timeout(send_timeout, batch).await {
            Ok(Ok(false)) => {}
            Ok(_) => break,
            Err(_) => {
                tracing::info!("peer does not read; dropping the slow consumer");
                m::rejected("slow-consumer");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(send_timeout, sink.close()).await;
}

/// A token bucket: `per_sec` messages a second on average, bursts up to twice that.
struct RateLimit {
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        RateLimit {
            per_sec,
            tokens: per_sec * 2.0,
            at: Instant::now(),
        }
    }

    /// Takes a token; returns how long to wait first when the bucket is empty.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec * 2.0);
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_sec))
    }
}

/// The read loop: one step per frame or event, until the connection closes.
async fn serve(
    conn: &mut Connection,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    mut ephemeral: mpsc::Receiver<Arc<Message>>,
) {
    let mut shutdown = conn.state.shutdown.clone();
    let mut access = conn.state.access.clone();
    let signal = conn.signal.clone();
    let limits = conn.state.limits.clone();
    // Messages per second (`Limits::max_messages_per_sec`).
    let mut rate = RateLimit::new(limits.max_messages_per_sec);
    // When the peer last sent anything (a pong included): half-open detection.
    let mut last_seen = Instant::now();
    let join_deadline = tokio::time::sleep(limits.handshake_timeout);
    tokio::pin!(join_deadline);
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    // The token ends at its expiry, noticed then rather than at the next access poll.
    let token_deadline = conn.token_deadline().await;
    let token_expiry = tokio::time::sleep_until(token_deadline.unwrap_or_else(far_future));
    tokio::pin!(token_expiry);
    loop {
        let flow = tokio::select! {
            frame = stream.next() => {
                last_seen = Instant::now();
                match frame {
                    Some(Ok(WsMessage::Binary(bytes))) => {
                        if let Some(wait) = rate.take() {
                            // Too fast: read its next frame later (TCP pushes back).
                            m::rejected("rate-limited");
                            tokio::time::sleep(wait).await;
                        }
                        m::bytes_in(bytes.len());
                        // Boxed: handling a frame (commit, creation) is a future of
                        // ≈ 18 KiB, and inline it would make every connection's task
                        // that large for its whole life, idle or not (issue 18: idle
                        // memory). One allocation per frame instead.
                        Box::pin(conn.on_frame(&bytes)).await
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        m::rejected("text-frame");
                        conn.send_error("text frames are not part of the protocol; send CBOR in binary frames").await;
                        conn.on_bad_frame().await
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => Flow::Continue,
                    Some(Ok(WsMessage::Close(_))) | None => Flow::Close,
                    Some(Err(e)) => {
                        tracing::info!(conn = conn.conn_id, error = %e, "websocket read failed");
                        if is_too_big(&e) {
                            m::rejected("frame-too-big");
                            conn.close_with(1009, "message too big").await;
                        }
                        Flow::Close
                    }
                }
            },
            () = &mut join_deadline, if !conn.joined() => {
                tracing::info!(conn = conn.conn_id, "no join in time; closing");
                m::rejected("join-timeout");
                conn.close_with(1008, "send join first").await;
                Flow::Close
            }
            _ = ping.tick() => {
                if last_seen.elapsed() >= limits.idle_timeout {
                    // Half-open (or silent) peer: nothing, not even a pong, arrived.
                    tracing::info!(conn = conn.conn_id, user = %conn.principal.user_id, "peer unresponsive; closing");
                    m::rejected("idle-timeout");
                    let _ = conn.out.try_send(WsMessage::Close(Some(CloseFrame {
                        code: 1001,
                        reason: "no answer to pings".into(),
                    })));
                    Flow::Close
                } else {
                    let _ = conn.out.try_send(WsMessage::Ping(Vec::new().into()));
                    Flow::Continue
                }
            }
            () = signal.notified() => conn.flush().await,
            Ok(()) = access.changed() => conn.refresh_access().await,
            () = &mut token_expiry, if token_deadline.is_some() => {
                // Re-armed in case the store's clock says the token still lives.
                let deadline = conn.token_deadline().await.unwrap_or_else(far_future);
                token_expiry.as_mut().reset(deadline.max(tokio::time::Instant::now() + Duration::from_secs(1)));
                conn.check_token().await
            }
            Some(msg) = ephemeral.recv() => conn.forward_ephemeral(msg).await,
            _ = shutdown.changed() => {
                conn.close_with(1001, "server shutting down").await;
                Flow::Close
            }
        };
        let _ = conn.write_audit().await;
        if conn.is_stalled() {
            tracing::info!(conn = conn.conn_id, user = %conn.principal.user_id, "peer does not read its messages; dropping the slow consumer");
            m::rejected("slow-consumer");
            break;
        }
        if let Flow::Close = flow {
            break;
        }
    }
}

fn is_too_big(e: &axum::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("too long") || text.contains("too big") || text.contains("capacity")
}
