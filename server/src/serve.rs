//! Running the server: bind, serve until a signal, then drain.
//!
//! Shutdown follows mini-redis: a watch channel tells every connection to finish, and
//! each connection holds a clone of an mpsc sender; when the receiver sees all of them
//! dropped, every connection has persisted its state and the store can close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::app::{app, AppState, Limits};
use crate::error::Error;
use crate::store::Store;

/// Serves on `listener` until `stop` resolves.
pub async fn serve_until(
    listener: TcpListener,
    store: Store,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let state: Arc<AppState> = AppState::new(store.clone(), limits, shutdown_rx, alive_tx).await?;
    let addr = listener.local_addr()?;
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
