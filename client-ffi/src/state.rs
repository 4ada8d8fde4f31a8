//! What the FFI calls and the sync loop share: the local store, the documents in
//! memory, the status, the listener's notifier and the wake-ups between them.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sync_core::protocol::DocumentId;
use tokio::sync::Notify;

use crate::model::{ChangeKind, ClientOptions, DocChange, SyncStatus};
use crate::notify::Notifier;
use crate::replica::Replicas;
use crate::store::LocalStore;

/// The status fields that are not derived from the documents.
#[derive(Default)]
pub struct Status {
    pub online: bool,
    pub sync_enabled: bool,
    pub pending: u64,
    pub last_sync_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

pub struct Shared {
    pub store: LocalStore,
    /// The documents; an async lock because it is held across the store write that
    /// must finish before an operation returns.
    pub docs: tokio::sync::Mutex<Replicas>,
    status: Mutex<Status>,
    pub notifier: std::sync::Arc<Notifier>,
    /// A local edit happened: the sync loop pushes dirty documents.
    pub wake: Notify,
    /// The app asked for a sync now: the sync loop polls discovery at once.
    pub poll_now: Notify,
    pub server_url: String,
    pub token: String,
    pub options: ClientOptions,
}

impl Shared {
    pub fn new(
        store: LocalStore,
        docs: Replicas,
        server_url: String,
        token: String,
        options: ClientOptions,
    ) -> Shared {
        let pending = docs.pending();
        Shared {
            store,
            docs: tokio::sync::Mutex::new(docs),
            status: Mutex::new(Status {
                pending,
                ..Status::default()
            }),
            notifier: std::sync::Arc::default(),
            wake: Notify::new(),
            poll_now: Notify::new(),
            server_url,
            token,
            options,
        }
    }

    /// The status as the app sees it.
    pub fn status(&self) -> SyncStatus {
        let s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        SyncStatus {
            online: s.online,
            sync_enabled: s.sync_enabled,
            pending_changes: s.pending,
            last_sync_at_ms: s.last_sync_at_ms,
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
