//! The HTTP face: router, shared state, authentication at the websocket upgrade.
//! The central office's routes (`/api/v1/central/...`, `/dashboard`) come from
//! `crate::central::routes`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Limits and settings the connections obey. Every field can be set by operators
/// (flags, environment, config file: see `cli::ServeArgs`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest websocket message accepted; larger ones close the socket (1009).
    pub max_frame_bytes: usize,
    /// Documents a connection may be creating at once (unknown ids it sent `sync` for).
    pub max_pending_creations: usize,
    /// Largest stored size of one document; a change that would grow it beyond is
    /// refused (and not stored), so one document cannot eat the disk or the cache.
    pub max_document_bytes: u64,
    /// Memory budget of the document cache, in MiB of estimated resident memory:
    /// beyond it the least recently used documents are evicted (`Hub::enforce_budget`).
    pub cache_budget_mib: u64,
    /// Messages per second a connection may send on average; faster peers are slowed
    /// down (their frames are read later, so TCP pushes back), never buffered.
    pub max_messages_per_sec: u32,
    /// Websocket connections one user may hold at once; more get HTTP 429.
    pub max_connections_per_user: usize,
    /// How often the server pings an idle peer.
    pub ping_interval: Duration,
    /// A peer that sends nothing (not even a pong) for this long is half-open: closed.
    pub idle_timeout: Duration,
    /// Time a new TCP connection has to complete its HTTP request (and TLS handshake),
    /// and an upgraded socket to send `join`: bounds slowloris peers.
    pub handshake_timeout: Duration,
    /// How long the server waits for a slow consumer to take its next message before
    /// it drops the connection (its outbox is bounded: backpressure first).
    pub send_timeout: Duration,
    /// Connections of one wijk that may do automerge work at the same time: a busy
    /// wijk queues for its own permits and leaves runtime threads to the others.
    pub max_busy_per_wijk: usize,
    /// Peer storageIds whose sync states are kept per user; the least recently used
    /// beyond this are dropped (clients such as samod announce a new one every run).
    pub sync_states_per_user: usize,
    /// Persisted sync states unused for this long are deleted.
    pub sync_state_ttl: Duration,
    /// Central-office aggregates backed by fewer units (households, sessions,
    /// activiteiten, volunteers) than this are suppressed.
    pub central_min_count: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Limits {
            max_frame_bytes: 32 * 1024 * 1024,
            max_pending_creations: 256,
            max_document_bytes: 64 * 1024 * 1024,
            cache_budget_mib: 512,
            max_messages_per_sec: 500,
            max_connections_per_user: 32,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            handshake_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            max_busy_per_wijk: workers.saturating_sub(1).max(1),
            sync_states_per_user: 16,
            sync_state_ttl: Duration::from_secs(90 * 24 * 3600),
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
    /// Open connections per user, for `max_connections_per_user`.
    user_connections: Mutex<HashMap<String, usize>>,
    /// Renders `/metrics`.
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The central office's facts cache, dashboard sessions and pseudonym secret.
    pub central: crate::central::Central,
    /// The built volunteer web app (`mobile-examples/web-volunteer/dist`), served at
    /// `/app/` from the same origin as `/sync` and `/api`, so it needs no CORS.
    pub web_app_dir: Option<PathBuf>,
    /// Sign-in: lifetimes, the OIDC verifier, enrolment guess limits (`identity`).
    pub identity: crate::identity::Identity,
}

/// One user's slot among `max_connections_per_user`; given back on drop.
#[derive(Debug)]
pub struct UserSlot {
    state: Arc<AppState>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut map = self
            .state
            .user_connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}

impl AppState {
    /// Takes one of the user's connection slots, or `None` when all are in use.
    pub fn take_user_slot(self: &Arc<Self>, user: &str) -> Option<UserSlot> {
        let mut map = self
            .user_connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(user.to_owned()).or_default();
        if *n >= self.limits.max_connections_per_user {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            state: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl AppState {
    pub async fn new(
        store: Store,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        alive: mpsc::Sender<()>,
        access: watch::Receiver<u64>,
        web_app_dir: Option<PathBuf>,
        identity: crate::identity::Identity,
    ) -> Result<Arc<AppState>, Error> {
        let storage_id = store.storage_id().await?;
        let peer_id = format!(
            "buurtsync-{}",
            hex::encode(crate::auth::random_bytes::<6>())
        );
        Ok(Arc::new(AppState {
            hub: Hub::new(
                store.clone(),
                limits.max_busy_per_wijk,
                limits.max_document_bytes,
            )
            .with_cache_budget(limits.cache_budget_mib.saturating_mul(1024 * 1024)),
            store,
            limits,
            storage_id,
            peer_id,
            shutdown,
            alive,
            access,
            user_connections: Mutex::new(HashMap::new()),
            metrics: crate::metrics::install(),
            central: crate::central::Central::default(),
            web_app_dir,
            identity,
        }))
    }
}

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
        .merge(crate::central::routes())
        .merge(crate::identity::routes())
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
            crate::ws::connection::run(state, socket, principal, token_id, slot)
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
