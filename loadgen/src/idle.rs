//! Idle connections: open many websockets that join and then say nothing, and weigh
//! them in the server's resident memory (issue 18: 50,000 on one node, at most 16 KiB
//! each).
//!
//! One loopback address gives a client at most the ephemeral port range (about 28,000
//! ports) towards one server port, so the sockets are spread over `--source-addrs`
//! addresses of 127.0.0.0/8 (127.0.0.2, 127.0.0.3, …), each socket bound to its
//! address before it connects. Every connection keeps a task reading it, so the
//! server's pings are answered (as a real device's library does) and a connection the
//! server closes is counted.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sync_core::protocol::{self, Message, PeerMetadata};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::metrics::{proc_stat, ticks_per_second};
use crate::Error;

#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    #[arg(long)]
    url: String,
    /// A token for every connection (omit for the reference server).
    #[arg(long)]
    token: Option<String>,
    /// Tokens file: the first professional token in it is used.
    #[arg(long)]
    tokens: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Server process whose RSS is read from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// How long to hold the connections after all joined.
    #[arg(long, default_value_t = 2.0)]
    hold_secs: f64,
    /// Loopback source addresses to spread the sockets over (127.0.0.2 onwards);
    /// default: one per 20,000 connections.
    #[arg(long)]
    source_addrs: Option<usize>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
}

/// The server's address in a `ws://host:port/...` URL (loopback benchmarks only).
fn server_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs can be spread over source addresses"))?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port
        .parse()
        .map_err(|e| format!("{url}: the host must be an IP address and port: {e}"))
}

/// The `i`th loopback source address of `addrs`: 127.0.0.2, 127.0.0.3, …
fn source(i: usize, addrs: usize) -> Ipv4Addr {
    let n = (i % addrs.max(1)) as u32 + 2;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n)
}

async fn open(
    url: &str,
    server: SocketAddr,
    from: Ipv4Addr,
    token: Option<&str>,
    i: usize,
) -> Result<WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
        request.headers_mut().insert("Authorization", v);
    }
    let connect = async {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(SocketAddr::from((from, 0)))
            .map_err(|e| format!("bind {from}: {e}"))?;
        let stream = socket
            .connect(server)
            .await
            .map_err(|e| format!("connect from {from}: {e}"))?;
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .map_err(|e| e.to_string())
    };
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .map_err(|_| "connect timed out".to_owned())??;
    let join = Message::Join {
        sender_id: format!("idle-{i}"),
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: Some(true),
            capabilities: None,
        }),
        supported_protocol_versions: vec![protocol::PROTOCOL_VERSION.into()],
    };
    ws.send(WsMessage::Binary(protocol::encode(&join).into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(WsMessage::Binary(b)))) => {
                if let Ok(Message::Peer { .. }) = protocol::decode(&b) {
                    return Ok(ws);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no peer message: {other:?}")),
        }
    }
}

pub async fn run(args: IdleArgs) -> Result<(), Error> {
    let token = match (&args.token, &args.tokens) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => {
            let text = std::fs::read(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
            let tokens: crate::run::Tokens = serde_json::from_slice(&text)
                .map_err(|e| Error::Json(path.display().to_string(), e))?;
            tokens.values().find_map(|r| r.get("professional").cloned())
        }
        (None, None) => None,
    };
    let server = server_addr(&args.url).map_err(Error::Setup)?;
    let addrs = args
        .source_addrs
        .unwrap_or(args.connections / 20_000 + 1)
        .clamp(1, 250);
    let ticks = ticks_per_second();
    let before = args.pid.and_then(|p| proc_stat(p, ticks));
    let started = Instant::now();
    let closed = Arc::new(AtomicU64::new(0));
    let mut held = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    // A bounded number at once, so the accept queue is not flooded.
    let mut opening = futures_util::stream::iter(0..args.connections)
        .map(|i| {
            let token = token.clone();
            let url = args.url.clone();
            async move { open(&url, server, source(i, addrs), token.as_deref(), i).await }
        })
        .buffer_unordered(args.parallel.max(1));
    while let Some(o) = opening.next().await {
        match o {
            Ok(ws) => {
                // Read it, so pings are answered; count what the server closes.
                let closed = closed.clone();
                held.push(tokio::spawn(async move {
                    let mut ws = ws;
                    while let Some(Ok(frame)) = ws.next().await {
                        if frame.is_close() {
                            break;
                        }
                    }
                    closed.fetch_add(1, Ordering::Relaxed);
                }));
            }
            Err(e) => {
                if failed < 3 {
                    eprintln!("connection failed: {e}");
                }
                failed += 1;
            }
        }
    }
    let took = started.elapsed();
    eprintln!(
        "{} connections open from {addrs} source addresses in {:.1} s ({failed} failed)",
        held.len(),
        took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    let after = args.pid.and_then(|p| proc_stat(p, ticks));
    let closed = closed.load(Ordering::Relaxed) as usize;
    let n = held.len() - closed.min(held.len());
    let per_conn_kib = match (before, after) {
        (Some(b), Some(a)) if n > 0 => (a.rss_kib.saturating_sub(b.rss_kib)) as f64 / n as f64,
        _ => f64::NAN,
    };
    let report = serde_json::json!({
        "connections": n,
        "failed": failed,
        "closed_by_server": closed,
        "source_addrs": addrs,
        "open_secs": took.as_secs_f64(),
        "rss_before_mib": before.map(|s| s.rss_kib as f64 / 1024.0),
        "rss_after_mib": after.map(|s| s.rss_kib as f64 / 1024.0),
        "kib_per_connection": per_conn_kib,
    });
    println!("{report}");
    // Issue 18's target, met or not: 50,000 idle connections, ≤ 16 KiB each.
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    eprintln!(
        "target: 50,000 idle connections: {n} held: {}; ≤ 16 KiB each: {per_conn_kib:.1} KiB: {}",
        verdict(n >= 50_000),
        verdict(per_conn_kib <= 16.0)
    );
    for task in held {
        task.abort();
    }
    if failed + closed > 0 {
        return Err(Error::Failed((failed + closed) as u64));
    }
    Ok(())
}
