//! The state every request handler and connection shares (`Arc<AppState>`), the
//! limits they obey, and a user's connection slot. Its own module, below the handlers
//! that import it, so no handler module and the router import each other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::hub::Hub;
use crate::store::Store;

/// Limits and settings the connections obey. Every field can be set by operators
/// (flags, environment, config file: see `config::ServeSettings`, which also holds the
/// defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest websocket message accepted; larger ones close the socket (1009).
    pub max_frame_bytes: usize,
    /// Documents a connection may be creating at once (unknown ids it sent `sync` for).
    pub max_pending_creations: usize,
    /// Largest stored size of one document; a change that would grow it beyond is
    /// refused (and not stored), so one document cannot eat the disk or the cache.
    pub max_document_bytes: u64,
    /// Most operations one document may hold, and so one sync message may declare
    /// (`sync_core::engine::PeerSync::with_max_ops`): bytes do not bound them, as
    /// automerge run-length encodes its columns, and applying each costs memory and
    /// time.
    pub max_document_ops: u64,
    /// Bytes of changes waiting for missing dependencies one user may keep in memory,
    /// in all documents together (`queue_budget`); beyond it such changes are refused.
    pub max_queued_bytes_per_user: u64,
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
    /// Suppression or cell-key perturbation of the aggregates.
    pub central_disclosure: crate::central::cellkey::Disclosure,
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
    pub(crate) metrics: metrics_exporter_prometheus::PrometheusHandle,
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
            hex::encode(crate::store::crypto::random_bytes::<6>())
        );
        Ok(Arc::new(AppState {
            hub: Hub::new(
                store.clone(),
                limits.max_busy_per_wijk,
                limits.max_document_bytes,
            )
            .with_cache_budget(limits.cache_budget_mib.saturating_mul(1024 * 1024))
            .with_queue_budget(limits.max_queued_bytes_per_user),
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
