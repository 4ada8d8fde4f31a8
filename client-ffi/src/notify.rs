//! Delivery of events to the app's listener on a thread of its own.
//!
//! The sync loop and the FFI calls only *mark* events (which documents changed, that
//! the status moved); a dedicated thread hands them to the listener. Marks coalesce, so
//! a slow listener costs memory bounded by the number of documents, never blocks sync,
//! and can call back into the client without deadlocking on the client's locks.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::model::{DocChange, SyncStatus};

/// What the app implements to hear about changes. Called on a library thread, one
/// event at a time; keep it short (post to the UI thread).
#[uniffi::export(with_foreign)]
pub trait ClientListener: Send + Sync {
    /// Online/offline, pending changes or last sync time moved.
    fn on_status(&self, status: SyncStatus);
    /// Documents changed locally, arrived or changed from the server, or were purged.
    fn on_changes(&self, changes: Vec<DocChange>);
}

#[derive(Default)]
struct Queue {
    listener: Option<Arc<dyn ClientListener>>,
    changes: Vec<DocChange>,
    seen: HashSet<DocChange>,
    status: Option<SyncStatus>,
    closed: bool,
}

/// The mark side; the delivery thread waits on `ready`.
#[derive(Default)]
pub struct Notifier {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Notifier {
    /// Events marked before a listener exists wait for it (coalesced), so a listener
    /// registered after `open` misses nothing.
    pub fn set_listener(&self, listener: Option<Arc<dyn ClientListener>>) {
        self.lock().listener = listener;
        self.ready.notify_one();
    }

    /// Marks a document change (duplicates since the last delivery coalesce).
    pub fn change(&self, change: DocChange) {
        let mut q = self.lock();
        if q.seen.insert(change.clone()) {
            q.changes.push(change);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Marks the latest status (only the newest is delivered).
    pub fn status(&self, status: SyncStatus) {
        self.lock().status = Some(status);
        self.ready.notify_one();
    }

    /// Ends the delivery thread after it has delivered what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The delivery loop; runs on its own thread until `close`.
    pub fn run(self: Arc<Self>) {
        loop {
            let (listener, changes, status) = {
                let mut q = self.lock();
                // Without a listener, events stay queued (coalesced) until one comes.
                while (q.listener.is_none() || (q.changes.is_empty() && q.status.is_none()))
                    && !q.closed
                {
                    q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                if q.closed
                    && (q.listener.is_none() || (q.changes.is_empty() && q.status.is_none()))
                {
                    return;
                }
                q.seen.clear();
                (
                    q.listener.clone(),
                    std::mem::take(&mut q.changes),
                    q.status.take(),
                )
            };
            let Some(listener) = listener else { continue };
            // A panicking Rust listener must not end delivery; foreign listeners'
            // exceptions are caught by the bindings.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if !changes.is_empty() {
                    listener.on_changes(changes);
                }
                if let Some(status) = status {
                    listener.on_status(status);
                }
            }));
        }
    }
}
