//! What the FFI calls and the sync loop share: the local store, the documents in
//! memory, the status, the credentials, the listener's notifier and the wake-ups
//! between them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sync_core::protocol::DocumentId;
use tokio::sync::Notify;

use crate::credentials::Credentials;
use crate::model::{ChangeKind, ClientOptions, ConnectionState, DocChange, SyncStatus};
use crate::notify::Notifier;
use crate::replica::Replicas;
use crate::store::LocalStore;

/// The status fields that are not derived from the documents.
pub struct Status {
    pub state: ConnectionState,
    pub sync_enabled: bool,
    pub pending: u64,
    pub uploading: u64,
    pub downloading: u64,
    pub refused: u64,
    pub last_synced_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

pub struct Shared {
    pub store: LocalStore,
    /// The documents; an async lock because it is held across the store write that
    /// must finish before an operation returns.
    pub docs: tokio::sync::Mutex<Replicas>,
    /// Rows of the store that do not decrypt or load: id → why. Such a document is
    /// downloaded again if the server still lists it.
    pub corrupt: Mutex<HashMap<String, String>>,
    status: Mutex<Status>,
    pub notifier: Arc<Notifier>,
    /// A local edit happened: the sync loop pushes dirty documents.
    pub wake: Notify,
    /// The app asked for a sync now: the sync loop polls discovery at once (and retries
    /// at once after a TLS error).
    pub poll_now: Notify,
    /// The app gave a new token (`set_token`) or provider.
    pub token_changed: Notify,
    pub credentials: Credentials,
    pub server_url: String,
    pub options: ClientOptions,
    /// The TLS configuration for wss:// and https://.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Shared {
    pub fn new(
        store: LocalStore,
        docs: Replicas,
        server_url: String,
        token: String,
        options: ClientOptions,
        tls: Arc<rustls::ClientConfig>,
    ) -> Shared {
        Shared {
            store,
            status: Mutex::new(Status {
                state: ConnectionState::Offline,
                sync_enabled: false,
                pending: docs.pending(),
                uploading: 0,
                downloading: 0,
                refused: 0,
                last_synced_at_ms: None,
                last_error: None,
            }),
            docs: tokio::sync::Mutex::new(docs),
            corrupt: Mutex::new(HashMap::new()),
            notifier: Arc::default(),
            wake: Notify::new(),
            poll_now: Notify::new(),
            token_changed: Notify::new(),
            credentials: Credentials::new(token),
            server_url,
            options,
            tls,
        }
    }

    /// The status as the app sees it.
    pub fn status(&self) -> SyncStatus {
        let s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        SyncStatus {
            online: s.state == ConnectionState::Online,
            state: s.state.clone(),
            sync_enabled: s.sync_enabled,
            pending_changes: s.pending,
            uploading: if s.state == ConnectionState::Online {
                s.uploading
            } else {
                0
            },
            downloading: s.downloading,
            refused_documents: s.refused,
            has_synced: s.last_synced_at_ms.is_some(),
            last_synced_at_ms: s.last_synced_at_ms,
            last_error: s.last_error.clone(),
        }
    }

    /// Changes the status and tells the listener if anything moved.
    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        let before = self.status();
        {
            let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut s);
        }
        let after = self.status();
        if after != before {
            self.notifier.status(after);
        }
    }

    /// Refreshes the counts derived from the documents.
    pub fn counts_changed(&self, docs: &Replicas) {
        let (pending, uploading, refused) = (docs.pending(), docs.uploading(), docs.refused());
        self.update_status(|s| {
            s.pending = pending;
            s.uploading = uploading;
            s.refused = refused;
        });
    }

    /// Tells the listener about a document.
    pub fn changed(&self, id: DocumentId, change: ChangeKind) {
        self.notifier.change(DocChange {
            doc_id: id.to_string(),
            change,
        });
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
