//! [`BuurtClient`], the object apps hold: open, status, listener, online/offline,
//! listing and reading documents, close. The typed domain operations are in `ops`.
//!
//! FFI calls are synchronous: each one runs on the library's own tokio runtime
//! (`block_on`) and returns when its work is done — an edit returns after it is in the
//! local store. Apps call them off the UI thread (Kotlin `Dispatchers.IO`, Swift
//! `Task.detached`). The sync loop runs on the same runtime in the background.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use automerge::ReadDoc;
use sync_core::protocol::DocumentId;
use tokio::sync::watch;

use crate::crypto::AtRestKey;
use crate::error::{ClientError, Result};
use crate::model::{ClientOptions, DocumentKind, DocumentSummary, SyncStatus};
use crate::notify::ClientListener;
use crate::replica::{Replica, Replicas};
use crate::session::{self, Control};
use crate::state::{now_ms, Shared};
use crate::store::LocalStore;

/// A device's buurtsync client: encrypted local store plus sync loop.
#[derive(uniffi::Object)]
pub struct BuurtClient {
    /// `None` after `close`. Every call goes through [`BuurtClient::with`].
    inner: Mutex<Option<Open>>,
}

struct Open {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    sync_task: tokio::task::JoinHandle<()>,
    notifier_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BuurtClient {
    /// Dropped without `close`: stop everything without waiting. Every operation has
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
    /// key, and starts syncing with `server_url` (`ws://host:port/sync`) using `token`.
    /// A store made with another key fails with `WrongKey`.
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

    /// [`open`](Self::open) with tuning of the sync loop.
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
        crate::discovery::listing_url(&server_url).map_err(ClientError::invalid)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("buurtsync-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Store {
                message: format!("cannot start the runtime: {e}"),
            })?;
        let shared = runtime.block_on(async {
            let store = LocalStore::open(&PathBuf::from(&db_path), key).await?;
            let mut docs = Replicas::default();
            for stored in store.load_all().await? {
                docs.map.insert(
                    stored.id,
                    Replica::new(stored.partition, stored.doc, stored.acked),
                );
            }
            Ok::<_, ClientError>(Arc::new(Shared::new(
                store,
                docs,
                server_url,
                token,
                options.clone(),
            )))
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
        }))
    }

    /// Registers the app's listener (replacing any earlier one).
    pub fn set_listener(&self, listener: Arc<dyn ClientListener>) -> Result<()> {
        self.with(|open| {
            open.shared.notifier.set_listener(Some(listener));
            open.shared.notifier.status(open.shared.status());
            Ok(())
        })
    }

    /// Starts (or resumes) syncing whenever the server is reachable.
    pub fn go_online(&self) -> Result<()> {
        self.with(|open| {
            open.control.send_replace(Control::Online);
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

    /// Asks the server's listing for new documents now, instead of at the next interval.
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

    /// Waits (at most `timeout_ms`) until the client is online, the server has
    /// acknowledged every local change and a discovery listing was applied after this
    /// call began. Returns whether that happened. For scripts and tests; apps use the
    /// listener.
    pub fn wait_for_sync(&self, timeout_ms: u64) -> Result<bool> {
        let shared = self.with(|open| {
            open.shared.poll_now.notify_one();
            Ok(Arc::clone(&open.shared))
        })?;
        let started = now_ms();
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let s = shared.status();
            if s.online && s.pending_changes == 0 && s.last_sync_at_ms.is_some_and(|t| t >= started)
            {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The documents held on this device, optionally only of one kind and/or wijk,
    /// sorted by label.
    pub fn list_documents(
        &self,
        kind: Option<DocumentKind>,
        wijk: Option<String>,
    ) -> Result<Vec<DocumentSummary>> {
        self.block_on(|shared| async move {
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
                    pending_changes: r.pending as u64,
                })
                .collect();
            out.sort_by(|a, b| a.label.cmp(&b.label).then(a.id.cmp(&b.id)));
            Ok(out)
        })
    }

    /// The whole document as JSON (the same shape JavaScript clients see).
    pub fn get_json(&self, doc_id: String) -> Result<String> {
        self.block_on(|shared| async move {
            let id = parse_id(&doc_id)?;
            let docs = shared.docs.lock().await;
            let replica = docs.map.get(&id).ok_or(ClientError::NotFound { doc_id })?;
            serde_json::to_string(&automerge::AutoSerde::from(&replica.doc)).map_err(|e| {
                ClientError::Corrupt {
                    message: format!("document {id} cannot be shown as JSON: {e}"),
                }
            })
        })
    }

    /// The document's heads (hex change hashes, sorted), as `buurtsync doc info` prints them.
    pub fn heads(&self, doc_id: String) -> Result<Vec<String>> {
        self.block_on(|shared| async move {
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
    }

    /// Stops syncing, delivers the last events and closes the store. Later calls fail
    /// with `Closed`. Dropping the client without `close` does the same, less gently.
    pub fn close(&self) -> Result<()> {
        let open = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(ClientError::Closed)?;
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
            shared.store.close().await;
        });
        shared.notifier.close();
        if let Some(t) = notifier_thread.take() {
            // Never wait for ourselves: close() may be called from the listener.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        drop(control);
        runtime.shutdown_background();
        Ok(())
    }
}

impl BuurtClient {
    /// Runs `f` on the open client, or fails with `Closed`.
    fn with<T>(&self, f: impl FnOnce(&Open) -> Result<T>) -> Result<T> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let open = guard.as_ref().ok_or(ClientError::Closed)?;
        f(open)
    }

    /// Runs an async operation on the client's runtime and waits for it. The client's
    /// lock is released first, so a slow operation never blocks `status` or `close`.
    pub(crate) fn block_on<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (handle, shared) =
            self.with(|open| Ok((open.runtime.handle().clone(), Arc::clone(&open.shared))))?;
        // Spawned, so the operation finishes (store write included) even if the
        // calling thread goes away; joined, so the call returns only when it did.
        let task = handle.spawn(f(shared));
        handle.block_on(task).map_err(|e| ClientError::Store {
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
