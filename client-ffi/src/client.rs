//! [`BuurtClient`], the object apps hold: open, status, listener, credentials,
//! online/offline, listing and reading documents, discarding refused changes, wiping
//! and shutting down. The typed domain operations are in `ops`.
//!
//! Everything that may wait (on the store, the document lock or the network) is an
//! async function across the FFI (Kotlin `suspend`, Swift `async`, Python coroutine).
//! Its work runs on the library's own tokio runtime and is spawned there, so an edit
//! finishes (store write included) even if the caller's coroutine is cancelled. The
//! rest (status, set_listener, set_token, go_online, ...) returns at once. `open`,
//! `shutdown` and `wipe` are blocking (they start and stop the runtime); call them off
//! the UI thread.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use automerge::ReadDoc;
use sync_core::protocol::DocumentId;
use tokio::sync::watch;

use crate::credentials::CredentialsProvider;
use crate::crypto::AtRestKey;
use crate::error::{ClientError, Result};
use crate::model::{
    ChangeKind, ClientOptions, DocumentKind, DocumentState, DocumentSummary, PurgeReason,
    SyncStatus,
};
use crate::notify::ClientListener;
use crate::replica::{all_changes, Replica, Replicas};
use crate::session::{self, Control, LAST_SYNCED_KEY};
use crate::state::{now_ms, Shared};
use crate::store::LocalStore;

/// A device's buurtsync client: encrypted local store plus sync loop.
#[derive(uniffi::Object)]
pub struct BuurtClient {
    /// `None` after `shutdown`. Every call goes through [`BuurtClient::with`].
    inner: Mutex<Option<Open>>,
    /// The store's file, for `wipe`.
    db_path: PathBuf,
}

struct Open {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    sync_task: tokio::task::JoinHandle<()>,
    notifier_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BuurtClient {
    /// Dropped without `shutdown`: stop everything without waiting. Every operation has
    /// already persisted, so nothing is lost.
    fn drop(&mut self) {
        let open = self
            .inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(open) = open {
            open.control.send_replace(Control::Closed);
            open.shared.notifier.close();
            open.sync_task.abort();
            open.runtime.shutdown_background();
        }
    }
}

#[uniffi::export]
impl BuurtClient {
    /// Opens the local store at `db_path` (created if missing) with the app's 32-byte
    /// key, and starts syncing with `server_url` (`wss://host/sync`) using `token`.
    /// A store made with another key fails with `WrongKey`; a `ws://` URL fails with
    /// `InsecureUrl` (see `ClientOptions.allow_insecure`).
    #[uniffi::constructor]
    pub fn open(
        db_path: String,
        encryption_key: Vec<u8>,
        server_url: String,
        token: String,
    ) -> Result<Arc<BuurtClient>> {
        Self::open_with_options(
            db_path,
            encryption_key,
            server_url,
            token,
            ClientOptions::default(),
        )
    }

    /// [`open`](Self::open) with TLS and tuning options.
    #[uniffi::constructor]
    pub fn open_with_options(
        db_path: String,
        encryption_key: Vec<u8>,
        server_url: String,
        token: String,
        options: ClientOptions,
    ) -> Result<Arc<BuurtClient>> {
        // issue 20: panics the guard catches (automerge on hostile bytes) become typed
        // errors; keep them out of the app's log as backtraces.
        sync_core::guard::install_panic_hook();
        let key = AtRestKey::new(&encryption_key)?;
        crate::tls::check_scheme(&server_url, options.allow_insecure)?;
        crate::discovery::listing_url(&server_url).map_err(ClientError::invalid)?;
        let tls = crate::tls::client_config(options.extra_ca_pem.as_deref())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("buurtsync-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Store {
                message: format!("cannot start the runtime: {e}"),
            })?;
        let path = PathBuf::from(&db_path);
        let shared = runtime.block_on(async {
            let store = LocalStore::open(&path, key).await?;
            let loaded = store.load_all().await?;
            let mut docs = Replicas::default();
            for stored in loaded.docs {
                // A row from before the exact count: what the acks do not cover.
                let unacked = stored.unacked.unwrap_or_else(|| all_changes(&stored.doc));
                docs.map.insert(
                    stored.id,
                    Replica::new(stored.partition, stored.doc, stored.acked, unacked),
                );
            }
            let corrupt: HashMap<String, String> = loaded.corrupt.into_iter().collect();
            let last_synced = store
                .setting(LAST_SYNCED_KEY)
                .await?
                .and_then(|v| v.parse::<i64>().ok());
            let shared = Shared::new(store, docs, server_url, token, options.clone(), tls);
            *shared
                .corrupt
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = corrupt;
            shared.update_status(|s| s.last_synced_at_ms = last_synced);
            Ok::<_, ClientError>(Arc::new(shared))
        })?;
        let notifier = Arc::clone(&shared.notifier);
        let notifier_thread = std::thread::Builder::new()
            .name("buurtsync-listener".into())
            .spawn(move || notifier.run())
            .map_err(|e| ClientError::Store {
                message: format!("cannot start the listener thread: {e}"),
            })?;
        let start = if options.start_online {
            Control::Online
        } else {
            Control::Offline
        };
        let (control, control_rx) = watch::channel(start);
        let sync_task = runtime.spawn(session::run(Arc::clone(&shared), control_rx));
        Ok(Arc::new(BuurtClient {
            inner: Mutex::new(Some(Open {
                runtime,
                shared,
                control,
                sync_task,
                notifier_thread: Some(notifier_thread),
            })),
            db_path: path,
        }))
    }

    /// Registers the app's listener (replacing any earlier one). It gets the current
    /// status at once, then every change; events from before it was set are delivered
    /// to it first (coalesced), not lost.
    pub fn set_listener(&self, listener: Arc<dyn ClientListener>) -> Result<()> {
        self.with(|open| {
            open.shared.notifier.set_listener(Some(listener));
            open.shared.notifier.status(open.shared.status());
            Ok(())
        })
    }

    /// Gives the library the app's credentials provider, asked (once per refusal) for a
    /// fresh token when the server refuses the current one.
    pub fn set_credentials_provider(&self, provider: Arc<dyn CredentialsProvider>) -> Result<()> {
        self.with(|open| {
            open.shared.credentials.set_provider(Some(provider));
            open.shared.token_changed.notify_one();
            Ok(())
        })
    }

    /// Replaces the access token (after a sign-in or the app's own refresh). Ends an
    /// `Unauthorized` wait at once.
    pub fn set_token(&self, token: String) -> Result<()> {
        self.with(|open| {
            open.shared.credentials.set_token(token);
            open.shared.token_changed.notify_one();
            Ok(())
        })
    }

    /// Starts (or resumes) syncing whenever the server is reachable.
    pub fn go_online(&self) -> Result<()> {
        self.with(|open| {
            open.control.send_replace(Control::Online);
            open.shared.poll_now.notify_one();
            Ok(())
        })
    }

    /// Stops syncing and closes the connection; every operation keeps working.
    pub fn go_offline(&self) -> Result<()> {
        self.with(|open| {
            open.control.send_replace(Control::Offline);
            Ok(())
        })
    }

    /// Asks the server's listing now instead of at the next interval (and retries at
    /// once after a TLS error).
    pub fn sync_now(&self) -> Result<()> {
        self.with(|open| {
            open.shared.poll_now.notify_one();
            open.shared.wake.notify_one();
            Ok(())
        })
    }

    /// The sync status.
    pub fn status(&self) -> Result<SyncStatus> {
        self.with(|open| Ok(open.shared.status()))
    }

    /// Stops syncing, delivers the last events and closes the store. Later calls fail
    /// with `Closed`. Dropping the client without `shutdown` does the same, less gently.
    /// (Named so it does not collide with the bindings' own `close()`/`destroy()`.)
    pub fn shutdown(&self) -> Result<()> {
        let open = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(ClientError::Closed)?;
        stop(open);
        Ok(())
    }

    /// Logout: removes every byte of this store (documents, keys check, user binding;
    /// the database file and its WAL) and shuts the client down. Refused with
    /// `UnsentChanges` while local changes are not on the server, unless `force`.
    pub fn wipe(&self, force: bool) -> Result<()> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let open = guard.as_ref().ok_or(ClientError::Closed)?;
        let pending = open.shared.status().pending_changes;
        if pending > 0 && !force {
            return Err(ClientError::UnsentChanges { count: pending });
        }
        let Some(open) = guard.take() else {
            return Err(ClientError::Closed);
        };
        drop(guard);
        stop(open);
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.db_path.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ClientError::Store {
                        message: format!("wipe: cannot remove {}: {e}", self.db_path.display()),
                    })
                }
            }
        }
        Ok(())
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl BuurtClient {
    /// Waits (at most `timeout_ms`) until the client is online, the server has
    /// acknowledged every local change it did not refuse and a listing was applied
    /// after this call began. Returns whether that happened. For scripts and tests;
    /// apps use the listener.
    pub async fn wait_for_sync(&self, timeout_ms: u64) -> Result<bool> {
        self.run(move |shared| async move {
            shared.poll_now.notify_one();
            let started = now_ms();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
            loop {
                let s = shared.status();
                if s.online && s.last_synced_at_ms.is_some_and(|t| t >= started) {
                    let pending = shared.docs.lock().await.pending_unrefused();
                    if pending == 0 {
                        return Ok(true);
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await
    }

    /// The documents held on this device, optionally only of one kind and/or wijk,
    /// sorted by label.
    pub async fn list_documents(
        &self,
        kind: Option<DocumentKind>,
        wijk: Option<String>,
    ) -> Result<Vec<DocumentSummary>> {
        self.run(|shared| async move {
            let docs = shared.docs.lock().await;
            let mut out: Vec<DocumentSummary> = docs
                .map
                .iter()
                .filter(|(_, r)| kind.is_none_or(|k| DocumentKind::from(r.partition.kind) == k))
                .filter(|(_, r)| {
                    wijk.as_deref()
                        .is_none_or(|w| r.partition.wijk.as_str() == w)
                })
                .map(|(id, r)| DocumentSummary {
                    id: id.to_string(),
                    kind: r.partition.kind.into(),
                    wijk: r.partition.wijk.as_str().to_owned(),
                    label: label(&r.doc),
                    pending_changes: r.pending() as u64,
                })
                .collect();
            out.sort_by(|a, b| a.label.cmp(&b.label).then(a.id.cmp(&b.id)));
            Ok(out)
        })
        .await
    }

    /// The whole document as JSON (the same shape JavaScript clients see).
    pub async fn get_json(&self, doc_id: String) -> Result<String> {
        self.run(|shared| async move {
            let id = parse_id(&doc_id)?;
            let docs = shared.docs.lock().await;
            let replica = docs.map.get(&id).ok_or(ClientError::NotFound { doc_id })?;
            serde_json::to_string(&automerge::AutoSerde::from(&replica.doc)).map_err(|e| {
                ClientError::Corrupt {
                    message: format!("document {id} cannot be shown as JSON: {e}"),
                }
            })
        })
        .await
    }

    /// The document's heads (hex change hashes, sorted), as `buurtsync doc info` prints them.
    pub async fn heads(&self, doc_id: String) -> Result<Vec<String>> {
        self.run(|shared| async move {
            let id = parse_id(&doc_id)?;
            let docs = shared.docs.lock().await;
            let replica = docs.map.get(&id).ok_or(ClientError::NotFound { doc_id })?;
            let mut heads: Vec<String> = replica
                .doc
                .get_heads()
                .iter()
                .map(ToString::to_string)
                .collect();
            heads.sort();
            Ok(heads)
        })
        .await
    }

    /// Where one document stands: synced, pending, refused by the server (with its
    /// reason) or corrupt in the local store.
    pub async fn document_state(&self, doc_id: String) -> Result<DocumentState> {
        self.run(|shared| async move {
            let id = parse_id(&doc_id)?;
            if let Some(reason) = shared
                .corrupt
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id.to_string())
            {
                return Ok(DocumentState::Corrupt {
                    reason: reason.clone(),
                });
            }
            let docs = shared.docs.lock().await;
            let replica = docs.map.get(&id).ok_or(ClientError::NotFound { doc_id })?;
            let changes = replica.pending() as u64;
            Ok(match (&replica.refused, changes) {
                (Some(reason), _) => DocumentState::Refused {
                    reason: reason.clone(),
                    changes,
                },
                (None, 0) => DocumentState::Synced,
                (None, changes) => DocumentState::Pending { changes },
            })
        })
        .await
    }

    /// Throws away this document's local changes the server has not acknowledged:
    /// it forks back to the acknowledged heads. A document the server never accepted
    /// (created here, refused) is removed from this device (`Purged { Discarded }`).
    pub async fn discard_unsynced(&self, doc_id: String) -> Result<()> {
        self.run(|shared| async move {
            let id = parse_id(&doc_id)?;
            let mut docs = shared.docs.lock().await;
            let replica = docs
                .map
                .get_mut(&id)
                .ok_or(ClientError::NotFound { doc_id })?;
            let known: Vec<automerge::ChangeHash> = replica
                .acked
                .iter()
                .filter(|h| replica.doc.get_change_meta_by_hash(h).is_some())
                .copied()
                .collect();
            if known.is_empty() {
                shared.store.delete(id).await?;
                docs.map.remove(&id);
                shared.counts_changed(&docs);
                drop(docs);
                shared.changed(
                    id,
                    ChangeKind::Purged {
                        reason: PurgeReason::Discarded,
                    },
                );
                return Ok(());
            }
            let mut forked = replica
                .doc
                .fork_at(&known)
                .map_err(|e| ClientError::Corrupt {
                    message: format!("document {id}: cannot fork at the acknowledged heads: {e}"),
                })?;
            forked.set_actor(automerge::ActorId::random());
            let discarded = Replica {
                partition: replica.partition.clone(),
                doc: forked,
                acked: known,
                unacked: HashSet::new(),
                refused: None,
                dirty: true,
                resync: true,
            };
            shared.store.put(id, &discarded).await?;
            shared.store.checkpoint().await?;
            *replica = discarded;
            shared.counts_changed(&docs);
            drop(docs);
            shared.changed(id, ChangeKind::Local);
            shared.wake.notify_one();
            Ok(())
        })
        .await
    }
}

/// Stops the sync loop and the listener thread, closes the store and the runtime.
fn stop(open: Open) {
    open.control.send_replace(Control::Closed);
    let Open {
        runtime,
        shared,
        control,
        sync_task,
        mut notifier_thread,
    } = open;
    runtime.block_on(async {
        // The loop saves sync states and closes the socket when it sees Closed.
        let _ = tokio::time::timeout(Duration::from_secs(5), sync_task).await;
        let _ = shared.store.checkpoint().await;
        shared.store.close().await;
    });
    shared.notifier.close();
    if let Some(t) = notifier_thread.take() {
        // Never wait for ourselves: shutdown() may be called from the listener.
        if t.thread().id() != std::thread::current().id() {
            let _ = t.join();
        }
    }
    drop(control);
    runtime.shutdown_background();
}

impl BuurtClient {
    /// Runs `f` on the open client, or fails with `Closed`.
    fn with<T>(&self, f: impl FnOnce(&Open) -> Result<T>) -> Result<T> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let open = guard.as_ref().ok_or(ClientError::Closed)?;
        f(open)
    }

    /// Runs an async operation on the client's runtime and waits for it. Spawned, so
    /// the operation finishes (store write included) even if the caller stops waiting;
    /// the client's lock is released first, so a slow operation never blocks `status`
    /// or `shutdown`.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (handle, shared) =
            self.with(|open| Ok((open.runtime.handle().clone(), Arc::clone(&open.shared))))?;
        let task = handle.spawn(f(shared));
        task.await.map_err(|e| ClientError::Store {
            message: format!("operation did not finish: {e}"),
        })?
    }
}

pub(crate) fn parse_id(s: &str) -> Result<DocumentId> {
    DocumentId::from_str(s).map_err(|e| ClientError::invalid(e.to_string()))
}

/// A plan's household pseudonym or an activiteit's title, for lists.
fn label(doc: &automerge::Automerge) -> String {
    let text = |obj: &automerge::ObjId, key: &str| -> Option<String> {
        match doc.get(obj, key).ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_str().map(str::to_owned),
            (automerge::Value::Object(automerge::ObjType::Text), id) => doc.text(&id).ok(),
            _ => None,
        }
    };
    if let Some(title) = text(&automerge::ROOT, "title") {
        return title;
    }
    match doc.get(automerge::ROOT, "household") {
        Ok(Some((automerge::Value::Object(_), household))) => {
            text(&household, "pseudonym").unwrap_or_default()
        }
        _ => String::new(),
    }
}
