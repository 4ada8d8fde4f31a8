//! Idle connections: open many websockets that join and then say nothing, and weigh
//! them in the server's resident memory (target: at most 64 KiB each; 10,000 work).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sync_core::protocol::{self, Message, PeerMetadata};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

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
}

async fn open(url: &str, token: Option<&str>, i: usize) -> Result<impl Sized, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
        request.headers_mut().insert("Authorization", v);
    }
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
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
    let ticks = ticks_per_second();
    let before = args.pid.and_then(|p| proc_stat(p, ticks));
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    // Open in batches so the accept queue is not flooded.
    for chunk in (0..args.connections).collect::<Vec<_>>().chunks(100) {
        let opened = futures_util::future::join_all(
            chunk.iter().map(|i| open(&args.url, token.as_deref(), *i)),
        )
        .await;
        for o in opened {
            match o {
                Ok(ws) => held.push(ws),
                Err(e) => {
                    if failed < 3 {
                        eprintln!("connection failed: {e}");
                    }
                    failed += 1;
                }
            }
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)).await;
    let after = args.pid.and_then(|p| proc_stat(p, ticks));
    let n = held.len();
    let per_conn_kib = match (before, after) {
        (Some(b), Some(a)) if n > 0 => (a.rss_kib.saturating_sub(b.rss_kib)) as f64 / n as f64,
        _ => f64::NAN,
    };
    let report = serde_json::json!({
        "connections": n,
        "failed": failed,
        "open_secs": took.as_secs_f64(),
        "rss_before_mib": before.map(|s| s.rss_kib as f64 / 1024.0),
        "rss_after_mib": after.map(|s| s.rss_kib as f64 / 1024.0),
        "kib_per_connection": per_conn_kib,
    });
    println!("{report}");
    drop(held);
    if failed > 0 {
        return Err(Error::Failed(failed as u64));
    }
    Ok(())
}
