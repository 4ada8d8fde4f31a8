//! The HTTP face: router, shared state, authentication at the websocket upgrade.
//! The central office's routes (`/api/v1/central/...`, `/dashboard`) come from
//! `crate::central::routes`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::hub::Hub;
use crate::store::Store;

/// The websocket read buffer per connection (issue 7: an idle device ≤ 64 KiB).
const WS_READ_BUFFER: usize = 8 * 1024;

/// Limits and settings the connections obey.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest websocket message accepted; larger ones close the socket (1009).
    pub max_frame_bytes: usize,
    /// Documents a connection may be creating at once (unknown ids it sent `sync` for).
    pub max_pending_creations: usize,
    /// Central-office aggregates backed by fewer units (households, sessions,
    /// activiteiten, volunteers) than this are suppressed.
    pub central_min_count: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 32 * 1024 * 1024,
            max_pending_creations: 256,
            central_min_count: 5,
        }
    }
}

/// Everything a request handler or connection needs; shared as `Arc<AppState>`.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub hub: Hub,
    pub limits: Limits,
    /// This store's storageId, sent in `peer` and `remote-heads-changed`.
    pub storage_id: String,
    /// This process's peerId.
    pub peer_id: String,
    /// Flips to true when the server shuts down; connections watch it.
    pub shutdown: watch::Receiver<bool>,
    /// Every connection holds a clone; shutdown waits until all are dropped.
    pub(crate) alive: mpsc::Sender<()>,
    /// Moves whenever grants or tokens change (polled from the store), and
    /// periodically; connections then re-check their principal and open documents.
    pub access: watch::Receiver<u64>,
    /// The central office's facts cache, dashboard sessions and pseudonym secret.
    pub central: crate::central::Central,
    /// The built volunteer web app (`mobile-examples/web-volunteer/dist`), served at
    /// `/app/` from the same origin as `/sync` and `/api`, so it needs no CORS.
    pub web_app_dir: Option<PathBuf>,
}

impl AppState {
    pub async fn new(
        store: Store,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        alive: mpsc::Sender<()>,
        access: watch::Receiver<u64>,
        web_app_dir: Option<PathBuf>,
    ) -> Result<Arc<AppState>, Error> {
        let storage_id = store.storage_id().await?;
        let peer_id = format!(
            "buurtsync-{}",
            hex::encode(crate::auth::random_bytes::<6>())
        );
        Ok(Arc::new(AppState {
            hub: Hub::new(store.clone()),
            store,
            limits,
            storage_id,
            peer_id,
            shutdown,
            alive,
            access,
            central: crate::central::Central::default(),
            web_app_dir,
        }))
    }
}

/// The router; tests build it without `main`.
pub fn app(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/sync", get(sync_upgrade))
        .route("/healthz", get(healthz))
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
    router.merge(crate::central::routes()).with_state(state)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The bearer token: `Authorization: Bearer …` first, then `?token=` for browsers.
fn presented_token(headers: &HeaderMap, query: &TokenQuery) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_owned())
        .or_else(|| query.token.clone())
}

async fn sync_upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, Error> {
    let token = presented_token(&headers, &query).ok_or(Error::Unauthorized)?;
    let (principal, token_id) = match crate::auth::authenticate(&state.store, &token).await {
        Ok(found) => found,
        Err(Error::Unauthorized) => {
            tracing::info!("websocket upgrade refused: bad token");
            return Err(Error::Unauthorized);
        }
        Err(e) => return Err(e),
    };
    let max = state.limits.max_frame_bytes;
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        // tungstenite preallocates its read buffer (128 KiB by default): an idle
        // device would cost that much. Frames larger than this still read, in steps.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| crate::ws::connection::run(state, socket, principal, token_id))
        .into_response())
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(serde_json::json!({
            "status": "ok",
            "storage_id": state.storage_id,
            "documents_loaded": state.hub.loaded(),
        }))
        .into_response(),
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
