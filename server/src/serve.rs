//! Running the server: bind, serve until a signal, then drain.
//!
//! Shutdown follows mini-redis: a watch channel tells every connection to finish, and
//! each connection holds a clone of an mpsc sender; when the receiver sees all of them
//! dropped, every connection has persisted its state and the store can close.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::app::{app, AppState, Limits};
use crate::error::Error;
use crate::store::changes::{ChangeFeed, FeedEvent};
use crate::store::Store;

/// Serves on `listener` until `stop` resolves; `web_app_dir` is served at `/app/`.
pub async fn serve_until(
    listener: TcpListener,
    store: Store,
    limits: Limits,
    web_app_dir: Option<PathBuf>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (access_tx, access_rx) = watch::channel(0u64);
    tokio::spawn(watch_access(store.clone(), access_tx, shutdown_rx.clone()));
    let state: Arc<AppState> = AppState::new(
        store.clone(),
        limits,
        shutdown_rx.clone(),
        alive_tx,
        access_rx,
        web_app_dir,
    )
    .await?;
    if let Some(feed) = store.change_feed().await? {
        tokio::spawn(follow_changes(feed, state.clone(), shutdown_rx));
    }
    let addr = listener.local_addr()?;
    if let Some(dir) = &state.web_app_dir {
        tracing::info!(dir = %dir.display(), "serving the volunteer web app at /app/");
    }
    tracing::info!(%addr, storage_id = %state.storage_id, "buurtsync listening");
    let router = app(state.clone());
    let signal = async move {
        stop.await;
        tracing::info!("shutting down: draining connections");
        let _ = shutdown_tx.send(true);
    };
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal)
    .await?;
    drop(state);
    // Wait (bounded) for every connection to persist and drop its guard.
    let _ = tokio::time::timeout(Duration::from_secs(10), alive_rx.recv()).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// How often the store is asked whether grants or tokens changed: revocations made
/// with the CLI reach live connections within this (plus one round trip).
pub const ACCESS_POLL: Duration = Duration::from_millis(250);
/// Connections re-check their token this often even without changes (expiry).
pub const ACCESS_RECHECK: Duration = Duration::from_secs(60);

/// Polls the store's access version and bumps `tx` when it moves, or every
/// [`ACCESS_RECHECK`] so expired tokens are noticed too.
async fn watch_access(store: Store, tx: watch::Sender<u64>, mut shutdown: watch::Receiver<bool>) {
    let mut seen = store.access_version().await.unwrap_or(0);
    let mut tick = tokio::time::interval(ACCESS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_bump = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let version = match store.access_version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "could not poll access changes");
                continue;
            }
        };
        if version != seen || last_bump.elapsed() >= ACCESS_RECHECK {
            seen = version;
            last_bump = tokio::time::Instant::now();
            tx.send_modify(|v| *v += 1);
        }
    }
}

/// How long to wait before listening again after the feed's connection failed.
const FEED_RETRY: Duration = Duration::from_secs(1);

/// Shared store: hears the other nodes' commits and lets the hub catch up, so a change
/// made through any node reaches the peers connected here. Ends at shutdown (it holds
/// the state, which shutdown waits for).
async fn follow_changes(
    mut feed: ChangeFeed,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!("following other nodes' commits (LISTEN buurtsync_changes)");
    loop {
        let event = tokio::select! {
            event = feed.next() => event,
            _ = shutdown.changed() => return,
        };
        match event {
            Ok(FeedEvent::Change(change)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = state.hub.catch_up(change.doc, &change.heads).await {
                        tracing::warn!(id = %change.doc, error = %e, "could not catch up with another node's commit");
                    }
                });
            }
            Ok(FeedEvent::Lost) => {
                tracing::warn!(
                    "change notifications may have been lost; re-reading loaded documents"
                );
                state.hub.catch_up_all().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "change feed failed; listening again");
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(FEED_RETRY) => {}
                        _ = shutdown.changed() => return,
                    }
                    match state.store.change_feed().await {
                        Ok(Some(fresh)) => {
                            feed = fresh;
                            break;
                        }
                        Ok(None) => return,
                        Err(e) => tracing::warn!(error = %e, "change feed: still cannot listen"),
                    }
                }
                state.hub.catch_up_all().await;
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
