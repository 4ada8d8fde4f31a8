//! Running the server: bind, serve until a signal, then drain.
//!
//! Shutdown follows mini-redis: a watch channel tells every connection to finish, and
//! each connection holds a clone of an mpsc sender; when the receiver sees all of them
//! dropped, every connection has persisted its state and the store can close.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::app::app;
use crate::error::Error;
use crate::state::{AppState, Limits};
use crate::store::changes::{ChangeFeed, FeedEvent};
use crate::store::Store;

/// Certificate chain and private key (PEM files) to serve TLS with. Re-read on SIGHUP
/// and whenever either file changes, so certificates rotate without a restart.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How often the TLS files are checked for changes (besides SIGHUP).
pub const TLS_WATCH: Duration = Duration::from_secs(5);

/// Reads and checks a certificate chain and key: the same check `serve` and
/// `config check` make, with errors that name the file.
pub async fn load_tls(files: &TlsFiles) -> Result<RustlsConfig, Error> {
    install_crypto_provider();
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|e| {
            Error::Tls(format!(
                "certificate {} / key {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })
}

/// rustls is built with the `ring` provider only; make it the process default.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What [`serve_until`] serves with: the listeners, bound by the caller (so a bad
/// address fails before anything runs), and the settings, already checked
/// (`config::ServeSettings` makes them).
pub struct Setup {
    /// The public listener: the API, `/sync`, the pages and `/app/`.
    pub listener: TcpListener,
    /// `/metrics` only, on its own listener (loopback by default: issue 16, item 7);
    /// `None`: no metrics.
    pub metrics: Option<TcpListener>,
    pub limits: Limits,
    /// TLS files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Served at `/app/`.
    pub web_app_dir: Option<PathBuf>,
    pub identity: crate::identity::Identity,
}

/// Serves `setup` until `stop` resolves: TLS with its TLS files, plain HTTP without.
pub async fn serve_until(
    store: Store,
    setup: Setup,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Setup {
        listener,
        metrics,
        limits,
        tls,
        web_app_dir,
        identity,
    } = setup;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (access_tx, access_rx) = watch::channel(0u64);
    tokio::spawn(watch_access(store.clone(), access_tx, shutdown_rx.clone()));
    let handshake_timeout = limits.handshake_timeout;
    let state: Arc<AppState> = AppState::new(
        store.clone(),
        limits,
        shutdown_rx.clone(),
        alive_tx,
        access_rx,
        web_app_dir,
        identity,
    )
    .await?;
    tokio::spawn(metrics_upkeep(shutdown_rx.clone()));
    if let Some(feed) = store.change_feed().await? {
        tokio::spawn(follow_changes(feed, state.clone(), shutdown_rx.clone()));
    }
    let addr = listener.local_addr()?;
    if let Some(dir) = &state.web_app_dir {
        tracing::info!(dir = %dir.display(), "serving the volunteer web app at /app/");
    }
    if let Some(listener) = metrics {
        serve_metrics(listener, state.clone(), shutdown_rx.clone())?;
    }
    let mut router = app(state.clone());
    if tls.is_some() {
        // Lets handlers know the browser reached us over TLS (Secure cookies).
        router = router.layer(axum::Extension(crate::web_security::Transport::Tls));
    }
    let router = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutting down: draining connections");
        let _ = shutdown_tx.send(true);
        signal_handle.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let mut server = axum_server::from_tcp(listener.into_std()?)?
        .handle(handle)
        // Slowloris: the first request (the upgrade) must arrive complete in time.
        .first_request_timeout(handshake_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(handshake_timeout));
    match tls {
        Some(files) => {
            let config = load_tls(&files).await?;
            tokio::spawn(watch_tls(files, config.clone(), shutdown_rx));
            tracing::info!(%addr, storage_id = %state.storage_id, tls = true, "buurtsync listening");
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(handshake_timeout);
            server.acceptor(acceptor).serve(router).await?;
        }
        None => {
            tracing::warn!("serving plain HTTP (--insecure-plain-http): put a TLS proxy in front");
            tracing::info!(%addr, storage_id = %state.storage_id, tls = false, "buurtsync listening");
            server.serve(router).await?;
        }
    }
    drop(state);
    // Wait (bounded) for every connection to persist and drop its guard.
    let _ = tokio::time::timeout(Duration::from_secs(10), alive_rx.recv()).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The metrics listener's default address: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Binds the metrics listener: `addr` when given (failing to bind is an error), else
/// [`DEFAULT_METRICS_LISTEN`], where a taken port (a second server on the host) only
/// costs the metrics, with a warning.
pub async fn bind_metrics(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, Error> {
    match addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| Error::Config(format!("--metrics-listen {addr}: {e}"))),
        None => match TcpListener::bind(DEFAULT_METRICS_LISTEN).await {
            Ok(listener) => Ok(Some(listener)),
            Err(e) => {
                tracing::warn!(addr = DEFAULT_METRICS_LISTEN, error = %e,
                    "metrics listener not started: give --metrics-listen another address");
                Ok(None)
            }
        },
    }
}

/// Serves `/metrics` on its own listener until shutdown. Kept off the public listener:
/// its counters describe activity (issue 16, item 7).
fn serve_metrics(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics listening");
    let router = crate::app::metrics_app(state);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

/// Drains the metrics recorder's histogram buffers now and then, so memory stays
/// flat between scrapes.
async fn metrics_upkeep(mut shutdown: watch::Receiver<bool>) {
    let handle = crate::metrics::install();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}

/// Reloads the certificate on SIGHUP and when the files change. A bad new pair is
/// logged and the old one kept: a botched rotation never takes the server down.
async fn watch_tls(files: TlsFiles, config: RustlsConfig, mut shutdown: watch::Receiver<bool>) {
    let stamp = |files: &TlsFiles| {
        [&files.cert, &files.key].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    };
    let mut seen = stamp(&files);
    let mut tick = tokio::time::interval(TLS_WATCH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let why = tokio::select! {
            () = hangup => "SIGHUP",
            _ = tick.tick() => {
                let now = stamp(&files);
                if now == seen {
                    continue;
                }
                seen = now;
                "files changed"
            }
            _ = shutdown.changed() => return,
        };
        match config.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                tracing::info!(why, cert = %files.cert.display(), "TLS certificate reloaded");
                metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "ok").increment(1);
            }
            Err(e) => {
                tracing::error!(why, error = %e, "TLS certificate reload failed; keeping the old one");
                metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "error").increment(1);
            }
        }
    }
}

/// How often the store is asked whether grants or tokens changed: revocations made
/// with the CLI reach live connections within this (plus one round trip).
pub const ACCESS_POLL: Duration = Duration::from_millis(250);
/// Connections re-check their token this often even without changes (expiry).
pub const ACCESS_RECHECK: Duration = Duration::from_secs(60);

/// Polls the store's access version and bumps `tx` when it moves, or every
/// [`ACCESS_RECHECK`] so expired tokens are noticed too.
async fn watch_access(store: Store, tx: watch::Sender<u64>, mut shutdown: watch::Receiver<bool>) {
    let mut seen = store.accounts().access_version().await.unwrap_or(0);
    let mut tick = tokio::time::interval(ACCESS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_bump = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let version = match store.accounts().access_version().await {
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
            Ok(FeedEvent::Erased(id)) => state.hub.erased(id),
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
