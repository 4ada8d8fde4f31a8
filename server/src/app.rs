//! The HTTP face: the router, health and metrics, and the websocket upgrade (which
//! authenticates before it upgrades, so a refused client never gets a socket). The
//! central office's routes (`/api/v1/central/...`, `/dashboard`) come from
//! `crate::central::routes`.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::Error;
use crate::extract::{Authenticated, SocketAuthenticated};
use crate::state::AppState;

/// The websocket read buffer per connection (issue 7: an idle device ≤ 64 KiB; issue
/// 18: ≤ 16 KiB). Most protocol frames are smaller; a larger frame grows the buffer
/// to its length while it is read.
const WS_READ_BUFFER: usize = 2 * 1024;

/// The router; tests build it without `main`.
pub fn app(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/sync", get(sync_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/me", get(crate::api::me))
        .route("/api/v1/documents", get(crate::api::list_documents))
        .route(
            "/api/v1/documents/{id}/move",
            axum::routing::post(crate::api::move_document),
        );
    if let Some(dir) = &state.web_app_dir {
        // Static files only; the app's routes live in the URL fragment, so an unknown
        // path is a plain 404. `/app` redirects so relative URLs resolve under `/app/`.
        router = router
            .route("/app", get(|| async { Redirect::permanent("/app/") }))
            .nest_service("/app/", tower_http::services::ServeDir::new(dir));
    }
    router
        .merge(crate::central::routes::routes())
        .merge(crate::identity::http::routes())
        .merge(crate::beheer::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::web_security::harden))
}

/// The router of the metrics listener (`--metrics-listen`): `/metrics` only.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::web_security::harden))
}

async fn sync_upgrade(
    State(state): State<Arc<AppState>>,
    who: Result<SocketAuthenticated, Error>,
    ws: WebSocketUpgrade,
) -> Result<Response, Error> {
    let SocketAuthenticated(Authenticated {
        principal,
        token_id,
    }) = who.inspect_err(|e| {
        if matches!(e, Error::Unauthorized) {
            tracing::info!("websocket upgrade refused: bad token");
        }
    })?;
    let Some(slot) = state.take_user_slot(&principal.user_id) else {
        tracing::info!(user = %principal.user_id, "websocket upgrade refused: too many connections");
        crate::metrics::rejected("too-many-connections");
        return Err(Error::TooManyConnections);
    };
    let max = state.limits.max_frame_bytes;
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        // tungstenite preallocates its read buffer (128 KiB by default): an idle
        // device would cost that much. Frames larger than this still read, in steps.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            crate::ws::transport::run(state, socket, principal, token_id, slot)
        })
        .into_response())
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        // Public: the status only. The storage id and the cache's contents tell an
        // outsider about activity; operators read them from /metrics (issue 16, item 7).
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unreachable");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "store unreachable"})),
            )
                .into_response()
        }
    }
}

/// Ready to serve: the store answers. Load balancers route by this one; `/healthz`
/// is for humans and says more.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (axum::http::StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: store unreachable");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "store unreachable\n",
            )
                .into_response()
        }
    }
}

/// Prometheus text exposition of every series in `crate::metrics`.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    metrics::gauge!(crate::metrics::DOCUMENTS_LOADED).set(state.hub.loaded() as f64);
    metrics::gauge!(crate::metrics::CACHE_BYTES).set(state.hub.cache_bytes() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
