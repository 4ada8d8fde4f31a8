//! The hub: documents held in memory, shared by every connection, and the fan-out of
//! their changes.
//!
//! Each loaded document is one [`DocEntry`]: its fixed catalog row, the automerge
//! document behind an async lock (held across the store write, so nothing uncommitted
//! is ever read by another peer), and the connections subscribed to it. A change is
//! announced by marking the document dirty in each subscriber's [`ConnSignal`]; each
//! connection then generates its own sync message. Marks coalesce, so a slow peer
//! costs a set entry, not a queue of messages.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::{Automerge, ChangeHash, ReadDoc};
use sync_core::engine::{Applied, EncodedChanges};
use sync_core::partition::WijkId;
use sync_core::policy::DocFacts;
use sync_core::protocol::{DocumentId, Message};
use sync_core::schema::is_handed_over;
use tokio::sync::{mpsc, Notify, OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::audit::AuditEvent;
use crate::error::Error;
use crate::queue_budget::{QueueCharges, QueueLedger};
use crate::store::crypto::DocKey;
use crate::store::{CatalogEntry, Provenance, Store};

/// Locks a std mutex, recovering from poisoning: the guarded maps stay consistent
/// because no code path panics while holding them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs CPU-heavy work (automerge apply and validation) without stalling the reactor:
/// on a multi-threaded runtime the worker thread hands its other tasks to another
/// worker for the duration (`block_in_place`); on a current-thread runtime (some
/// tests) it simply runs.
pub fn off_reactor<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// How a connection is told about work: dirty documents and relayed ephemeral messages.
#[derive(Debug)]
pub struct ConnSignal {
    pub id: u64,
    dirty: Mutex<HashSet<DocumentId>>,
    notify: Notify,
    /// Ephemeral messages of other peers; lossy by design (try_send), so bounded. Shared
    /// (`Arc`): one copy for all receivers, and the channel's first block of slots,
    /// which every connection allocates, is 32 pointers rather than 32 messages
    /// (≈ 4 KiB less per idle connection; issue 18).
    ephemeral: mpsc::Sender<Arc<Message>>,
}

impl ConnSignal {
    pub fn new(id: u64, ephemeral: mpsc::Sender<Arc<Message>>) -> Self {
        ConnSignal {
            id,
            dirty: Mutex::new(HashSet::new()),
            notify: Notify::new(),
            ephemeral,
        }
    }

    /// Asks the connection to (re)generate its sync message for `id`.
    pub fn mark(&self, id: DocumentId) {
        lock(&self.dirty).insert(id);
        self.notify.notify_one();
    }

    /// The dirty documents, emptying the set.
    pub fn take(&self) -> Vec<DocumentId> {
        lock(&self.dirty).drain().collect()
    }

    /// Resolves when something was marked since the last call.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Connections that hold a document in sync without having it open (the connect-time
/// summary answered "in sync" without loading it). A change to such a document marks
/// its watchers like subscribers; their connections then open it (load, resume the
/// persisted sync state, generate). Shared by the hub and every [`DocEntry`], so a
/// commit on a loaded document and another node's commit on one that is not loaded
/// reach them alike. A watch costs a map entry, not a loaded document.
#[derive(Debug, Default)]
pub struct Watchers(Mutex<HashMap<DocumentId, HashMap<u64, Arc<ConnSignal>>>>);

impl Watchers {
    fn watch(&self, id: DocumentId, conn: &Arc<ConnSignal>) {
        lock(&self.0)
            .entry(id)
            .or_default()
            .insert(conn.id, conn.clone());
    }

    fn unwatch(&self, id: DocumentId, conn: u64) {
        let mut map = lock(&self.0);
        if let Some(conns) = map.get_mut(&id) {
            conns.remove(&conn);
            if conns.is_empty() {
                map.remove(&id);
            }
        }
    }

    /// Marks `id` dirty for every connection watching it.
    fn announce(&self, id: DocumentId) {
        if let Some(conns) = lock(&self.0).get(&id) {
            for conn in conns.values() {
                conn.mark(id);
            }
        }
    }

    /// Marks every watched document for its watchers (change notices were lost).
    fn announce_all(&self) {
        for (id, conns) in lock(&self.0).iter() {
            for conn in conns.values() {
                conn.mark(*id);
            }
        }
    }

    /// Number of (document, connection) watches.
    pub fn len(&self) -> usize {
        lock(&self.0).values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.0).is_empty()
    }
}

/// A document's in-memory state.
#[derive(Debug)]
pub struct DocState {
    pub doc: Automerge,
    /// Heads of what is committed to the store; only these are ever acknowledged.
    pub saved_heads: Vec<ChangeHash>,
    /// The document's data key, for sealing the chunks this state commits.
    key: DocKey,
    incremental_bytes: u64,
    snapshot_bytes: u64,
    /// The highest chunk `seq` this copy has read or written: on a shared store,
    /// catching up with other nodes reads only the chunks after it.
    seen_seq: i64,
    /// False when the automerge document was evicted to keep the cache within its
    /// budget: `doc` is then empty and [`Hub::lock`] reloads it from the store before
    /// anyone reads it. Everything else here stays valid while evicted.
    resident: bool,
    /// Which users grew this document's queue of changes waiting for a dependency,
    /// and by how much (`queue_budget`); released when the queue goes.
    pub queue: QueueCharges,
    /// The last commit's new changes, encoded once (they were its chunk), with the
    /// heads after them: every subscriber's sync message carries these bytes rather
    /// than automerge encoding the same changes again per subscriber
    /// (`PeerSync::try_generate_with`). Stale once the document gains other changes
    /// (another node's, caught up); the engine then sees the heads differ. It keeps
    /// the hashes of the commits just before, when they led up to it
    /// (`EncodedChanges::follows`), for subscribers that have not answered those yet.
    pub recent: EncodedChanges,
}

impl DocState {
    /// Bytes this document occupies in the store (snapshot plus incremental chunks).
    pub fn stored_bytes(&self) -> u64 {
        self.snapshot_bytes + self.incremental_bytes
    }

    /// Is the automerge document in memory (not evicted)?
    pub fn is_resident(&self) -> bool {
        self.resident
    }

    /// What this document counts against the cache budget: its stored size while
    /// resident, nothing while evicted.
    fn resident_bytes(&self) -> u64 {
        if self.resident {
            self.stored_bytes()
        } else {
            0
        }
    }
}

/// A loaded document.
#[derive(Debug)]
pub struct DocEntry {
    pub catalog: CatalogEntry,
    pub state: tokio::sync::Mutex<DocState>,
    subscribers: Mutex<HashMap<u64, Arc<ConnSignal>>>,
    /// The committed `handover.requested` of a plan, readable without the document
    /// lock: a commit that flips it writes the hand-over audit entry and the catalog
    /// flag, and makes or erases the hand-over copy.
    handed_over: AtomicBool,
    /// When this document was last locked through [`Hub::lock`] (the hub's use clock):
    /// the least recently used resident documents are evicted first.
    last_used: AtomicU64,
    /// The hub's watchers, told of every change like the subscribers.
    watchers: Arc<Watchers>,
    /// Set when the document is erased ([`Hub::erased`]): connections holding this
    /// entry close it at their next step and never serve it again.
    erased: AtomicBool,
}

impl DocEntry {
    fn new(catalog: CatalogEntry, state: DocState, watchers: Arc<Watchers>) -> DocEntry {
        let handed_over = AtomicBool::new(is_handed_over(&state.doc));
        DocEntry {
            catalog,
            state: tokio::sync::Mutex::new(state),
            subscribers: Mutex::new(HashMap::new()),
            handed_over,
            last_used: AtomicU64::new(0),
            watchers,
            erased: AtomicBool::new(false),
        }
    }

    /// Was the document erased while loaded? Then it is served to nobody.
    pub fn is_erased(&self) -> bool {
        self.erased.load(Ordering::Acquire)
    }

    pub fn id(&self) -> DocumentId {
        self.catalog.id
    }

    /// What the policy needs to know of this document (both fixed at creation).
    pub fn facts(&self) -> DocFacts<'_> {
        DocFacts {
            partition: &self.catalog.partition,
            handover_copy: self.catalog.handover_of.is_some(),
        }
    }

    /// The committed `handover.requested` of a plan: whether it has (or is about to
    /// get) a hand-over copy (`handover::follow`).
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::Acquire)
    }

    /// Re-reads the hand-over flag after a commit; returns whether it changed.
    pub fn refresh_facts(&self, state: &DocState) -> bool {
        self.set_handed_over(is_handed_over(&state.doc))
    }

    /// Sets the hand-over flag to what the committed document says, when the caller
    /// knows it without reading the document again; returns whether it changed.
    pub fn set_handed_over(&self, now: bool) -> bool {
        self.handed_over.swap(now, Ordering::AcqRel) != now
    }

    pub fn subscribe(&self, conn: &Arc<ConnSignal>) {
        lock(&self.subscribers).insert(conn.id, conn.clone());
    }

    pub fn unsubscribe(&self, conn: u64) {
        lock(&self.subscribers).remove(&conn);
    }

    /// Marks the document dirty for every subscriber (including the writer, whose
    /// connection then answers and acknowledges) and every watcher.
    pub fn announce(&self) {
        let id = self.id();
        for conn in lock(&self.subscribers).values() {
            conn.mark(id);
        }
        self.watchers.announce(id);
    }

    /// Relays an ephemeral message to every other subscriber; dropped where full.
    pub fn relay_ephemeral(&self, from: u64, msg: Message) {
        let msg = Arc::new(msg);
        for (id, conn) in lock(&self.subscribers).iter() {
            if *id != from {
                let _ = conn.ephemeral.try_send(msg.clone());
            }
        }
    }
}

type Slot = Arc<OnceCell<Option<Arc<DocEntry>>>>;

/// What commits with a change besides its chunk ([`Hub::persist_change`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ChangeCommit<'a> {
    /// (user, device), recorded against every new change hash.
    pub author: Option<(&'a str, &'a str)>,
    /// Audit entries appended in the same transaction.
    pub audit: &'a [AuditEvent],
    /// The catalog's hand-over flag, moved to this when `Some`.
    pub handed_over: Option<bool>,
    /// The writer's token, which must still be live inside the transaction
    /// (`Provenance::token`); `None`: no token (tests, the server's own writes).
    pub token: Option<&'a str>,
    /// The receive that brought the changes (`commit::apply`): its changes
    /// (`Applied::new_changes`) are the chunk when it started from the committed heads.
    pub applied: Option<&'a Applied>,
}

/// The registry of loaded documents.
#[derive(Debug)]
pub struct Hub {
    store: Store,
    docs: Mutex<HashMap<DocumentId, Slot>>,
    next_conn: AtomicU64,
    /// Serialises creations, so two peers creating one id cannot both write a key.
    creating: tokio::sync::Mutex<()>,
    /// Per-wijk work quota (fairness): automerge work on a wijk's documents takes one
    /// of that wijk's permits, so a flood in one wijk queues behind its own permits
    /// and cannot occupy every runtime thread.
    wijk_permits: Mutex<HashMap<WijkId, Arc<Semaphore>>>,
    per_wijk: usize,
    /// Largest stored size of a document (`Limits::max_document_bytes`).
    max_document_bytes: u64,
    /// Sum of `stored_bytes` of the resident documents (evicted ones count nothing):
    /// the cache-bytes metric, and what the budget is checked against.
    cache_bytes: AtomicU64,
    /// The document cache's memory budget in bytes of estimated resident memory
    /// (`cache_bytes × MEMORY_PER_STORED_BYTE`); `u64::MAX`: unbounded.
    cache_budget: u64,
    /// Ticks on every [`Hub::lock`]: the recency order for eviction.
    use_clock: AtomicU64,
    /// Documents evicted so far (for the metric and the tests).
    evictions: AtomicU64,
    /// Connections watching documents they hold in sync (see [`Watchers`]).
    watchers: Arc<Watchers>,
    /// Bytes each user keeps queued behind missing dependencies, in all documents.
    queue_ledger: Arc<QueueLedger>,
}

/// Resident memory of a loaded automerge document per byte it occupies in the store
/// (compressed columnar chunks): measured for "assen"-shaped plans with
/// `cargo run --release -p buurtsync-server --example doc_memory` (docs/performance.md),
/// rounded up, so the budget errs on the side of evicting early.
pub const MEMORY_PER_STORED_BYTE: u64 = 20;

/// A document's incremental chunks are compacted into one snapshot once they hold more
/// than this many times the snapshot's bytes. Compacting reads every chunk back,
/// merges them, saves the whole document and writes it in a transaction of its own:
/// work in proportion to the document, paid once per `ratio × snapshot` bytes of
/// changes. At 1 (the chunks outgrow the snapshot) a live plan of 2.3 KiB compacted
/// every 8 or so changes of ≈ 290 bytes, ≈ 10 % of the relay's CPU per change (issue
/// 18); at 4 it is a quarter of that, and a document loads at most 5× its snapshot
/// in stored bytes (small change chunks, milliseconds for automerge). The size limit
/// does not move with it: a commit that would take the stored bytes past
/// `max_document_bytes` compacts first and is refused only if the snapshot is too
/// large ([`Hub::persist_change`]).
pub const COMPACT_RATIO: u64 = 4;

impl Hub {
    /// `per_wijk`: concurrent automerge work per wijk; `max_document_bytes`: the
    /// largest stored size a commit may grow a document to.
    pub fn new(store: Store, per_wijk: usize, max_document_bytes: u64) -> Self {
        Hub {
            store,
            docs: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            creating: tokio::sync::Mutex::new(()),
            wijk_permits: Mutex::new(HashMap::new()),
            per_wijk: per_wijk.max(1),
            max_document_bytes,
            cache_bytes: AtomicU64::new(0),
            cache_budget: u64::MAX,
            use_clock: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            watchers: Arc::new(Watchers::default()),
            queue_ledger: QueueLedger::new(u64::MAX),
        }
    }

    /// Bounds the bytes one user may keep queued behind missing dependencies in all
    /// documents together (`Limits::max_queued_bytes_per_user`; unbounded without).
    #[must_use]
    pub fn with_queue_budget(mut self, bytes: u64) -> Self {
        self.queue_ledger = QueueLedger::new(bytes);
        self
    }

    /// The per-user tally of queued bytes (`commit::apply` charges it).
    pub fn queue_ledger(&self) -> &QueueLedger {
        &self.queue_ledger
    }

    /// Bounds the document cache to `bytes` of estimated resident memory: when the
    /// resident documents exceed it, the least recently used ones that nobody is
    /// working on are evicted (their automerge state is dropped; subscriptions, sync
    /// sessions and acknowledgements stay) and reloaded from the store on next use.
    #[must_use]
    pub fn with_cache_budget(mut self, bytes: u64) -> Self {
        self.cache_budget = bytes;
        self
    }

    /// Estimated resident memory of the documents held in memory.
    pub fn cache_memory(&self) -> u64 {
        self.cache_bytes().saturating_mul(MEMORY_PER_STORED_BYTE)
    }

    /// Documents evicted to keep within the budget since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Locks a document's state for reading or writing, first reloading it from the
    /// store if it was evicted. Every use of a document's automerge state goes through
    /// here, so an evicted document is never read empty.
    pub async fn lock<'a>(
        &self,
        entry: &'a DocEntry,
    ) -> Result<tokio::sync::MutexGuard<'a, DocState>, Error> {
        let mut state = entry.state.lock().await;
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        if !state.resident {
            self.reload(entry.id(), &mut state).await?;
            // Another node may have changed the hand-over while it was evicted.
            entry.refresh_facts(&state);
            self.enforce_budget();
        }
        Ok(state)
    }

    /// Throws away the in-memory copy of a document after `sync_core::guard` caught a
    /// panic in automerge on it (issue 20): the copy may be inconsistent, the store's is
    /// not. The next [`Hub::lock`] reloads it, exactly as after an eviction.
    pub fn discard(&self, state: &mut DocState) {
        if state.resident {
            self.unload(state);
        }
    }

    /// Drops a resident document's in-memory copy and its bytes from the cache's
    /// count (eviction and [`Hub::discard`]); the next [`Hub::lock`] reloads it.
    fn unload(&self, state: &mut DocState) {
        let bytes = state.stored_bytes();
        state.doc = Automerge::new();
        state.resident = false;
        state.recent = EncodedChanges::default();
        // The queue went with the document.
        state.queue.clear();
        let _ = self
            .cache_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(bytes))
            });
    }

    /// The next value of the use clock.
    fn tick(&self) -> u64 {
        self.use_clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Brings an evicted document back: everything the store holds, which is at least
    /// what was committed when it was evicted (and, on a shared store, what other nodes
    /// committed since).
    async fn reload(&self, id: DocumentId, state: &mut DocState) -> Result<(), Error> {
        let stored = self
            .store
            .documents()
            .load_document(&id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("document {id} vanished from the store")))?;
        let doc = off_reactor(|| sync_core::guard::load(&stored.bytes)) // issue 20: guarded
            .map_err(|e| load_failed(&id, "does not load", e))?;
        state.saved_heads = doc.get_heads();
        state.doc = doc;
        state.snapshot_bytes = stored.snapshot_bytes;
        state.incremental_bytes = stored.incremental_bytes;
        state.seen_seq = state.seen_seq.max(stored.last_seq);
        state.resident = true;
        self.cache_bytes
            .fetch_add(state.stored_bytes(), Ordering::Relaxed);
        metrics::counter!(crate::metrics::CACHE_RELOADS).increment(1);
        metrics::counter!(crate::metrics::DOCUMENT_LOADS).increment(1);
        tracing::debug!(%id, "evicted document reloaded");
        Ok(())
    }

    /// Evicts least recently used resident documents until the cache is back under
    /// 90 % of its budget (the slack keeps one load from evicting one document each
    /// time). Documents being worked on (locked) or holding uncommitted changes are
    /// skipped. Cheap when under budget: one atomic read.
    pub fn enforce_budget(&self) {
        if self.cache_memory() <= self.cache_budget {
            return;
        }
        let target = self.cache_budget / 10 * 9;
        let mut candidates: Vec<(u64, Arc<DocEntry>)> = lock(&self.docs)
            .values()
            .filter_map(|slot| slot.get().cloned().flatten())
            .map(|entry| (entry.last_used.load(Ordering::Relaxed), entry))
            .collect();
        candidates.sort_unstable_by_key(|(used, _)| *used);
        for (_, entry) in candidates {
            if self.cache_memory() <= target {
                break;
            }
            let Ok(mut state) = entry.state.try_lock() else {
                continue;
            };
            if !state.resident || state.doc.get_heads() != state.saved_heads {
                continue;
            }
            self.unload(&mut state);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::CACHE_EVICTIONS).increment(1);
        }
    }

    /// Tells `conn` of every later change to `id` without loading it.
    pub fn watch(&self, id: DocumentId, conn: &Arc<ConnSignal>) {
        self.watchers.watch(id, conn);
    }

    pub fn unwatch(&self, id: DocumentId, conn: u64) {
        self.watchers.unwatch(id, conn);
    }

    /// The watchers registry (for its size in metrics and tests).
    pub fn watchers(&self) -> &Watchers {
        &self.watchers
    }

    /// Waits for one of `wijk`'s work permits (see `wijk_permits`).
    pub async fn work_permit(&self, wijk: &WijkId) -> OwnedSemaphorePermit {
        let semaphore = lock(&self.wijk_permits)
            .entry(wijk.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_wijk)))
            .clone();
        let started = std::time::Instant::now();
        let permit = semaphore
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("wijk semaphores are never closed"));
        crate::metrics::wijk_queue_wait(started.elapsed().as_secs_f64());
        permit
    }

    /// The store this hub loads from and commits to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Largest stored size of a document (`Limits::max_document_bytes`); changes
    /// queued behind a missing dependency count against it too (`commit::apply`).
    pub fn max_document_bytes(&self) -> u64 {
        self.max_document_bytes
    }

    /// Stored bytes of the documents held in memory.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes.load(Ordering::Relaxed)
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of documents held in memory.
    pub fn loaded(&self) -> usize {
        lock(&self.docs).len()
    }

    /// The document, loading it from the store once however many ask at the same time.
    /// `None` if the catalog does not know it, or it was erased: a copy already in
    /// memory is served only after a tombstone check (another process may have erased
    /// it since, and the access poll has not told us yet).
    pub async fn get(&self, id: DocumentId) -> Result<Option<Arc<DocEntry>>, Error> {
        let found = self.get_loaded_or_load(id).await?;
        let Some((entry, was_loaded)) = found else {
            return Ok(None);
        };
        if entry.is_erased() {
            return Ok(None);
        }
        if was_loaded && self.store.documents().tombstone(&id).await?.is_some() {
            drop(entry);
            self.erased(id);
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// The document was erased (here, through the change feed, or found by a
    /// tombstone check): its in-memory copy goes at once. Connections holding it see
    /// [`DocEntry::is_erased`] at their next step (they are woken now) and tell their
    /// device it is unavailable.
    pub fn erased(&self, id: DocumentId) {
        let slot = lock(&self.docs).remove(&id);
        let Some(Some(entry)) = slot.as_ref().and_then(|s| s.get().cloned()) else {
            return;
        };
        entry.erased.store(true, Ordering::Release);
        if let Ok(mut state) = entry.state.try_lock() {
            self.discard(&mut state);
        }
        entry.announce();
    }

    /// [`get`](Self::get) without the erasure checks; also says whether the entry
    /// was in memory already (`true`) or loaded from the catalog just now.
    async fn get_loaded_or_load(
        &self,
        id: DocumentId,
    ) -> Result<Option<(Arc<DocEntry>, bool)>, Error> {
        for _ in 0..3 {
            let slot = lock(&self.docs).entry(id).or_default().clone();
            let was_loaded = slot.initialized();
            let loaded = slot
                .get_or_try_init(|| async { self.load(id).await })
                .await
                .cloned();
            let mut docs = lock(&self.docs);
            let current = docs.get(&id).cloned();
            match (&loaded, current) {
                // A creation replaced our slot while we loaded: use what it installed.
                (_, Some(cur)) if !Arc::ptr_eq(&cur, &slot) => {
                    drop(docs);
                    continue;
                }
                (Ok(None) | Err(_), Some(_)) => {
                    docs.remove(&id);
                }
                // Released while we loaded: put it back so there is only one copy.
                (Ok(Some(_)), None) => {
                    docs.insert(id, slot.clone());
                }
                _ => {}
            }
            return loaded.map(|found| found.map(|entry| (entry, was_loaded)));
        }
        Err(Error::Conflict(format!("document {id} is being created")))
    }

    async fn load(&self, id: DocumentId) -> Result<Option<Arc<DocEntry>>, Error> {
        let started = std::time::Instant::now();
        let stored = self.store.documents().load_document(&id).await?;
        metrics::histogram!(crate::metrics::STORE_LATENCY, "op" => "load")
            .record(started.elapsed().as_secs_f64());
        let Some(stored) = stored else {
            return Ok(None);
        };
        let doc = off_reactor(|| sync_core::guard::load(&stored.bytes)) // issue 20: guarded
            .map_err(|e| load_failed(&id, "does not load", e))?;
        tracing::debug!(%id, bytes = stored.bytes.len(), chunks = stored.chunks, "document loaded");
        metrics::counter!(crate::metrics::DOCUMENT_LOADS).increment(1);
        self.cache_bytes.fetch_add(
            stored.snapshot_bytes + stored.incremental_bytes,
            Ordering::Relaxed,
        );
        let entry = Arc::new(DocEntry::new(
            stored.entry,
            DocState {
                saved_heads: doc.get_heads(),
                doc,
                key: stored.key,
                incremental_bytes: stored.incremental_bytes,
                snapshot_bytes: stored.snapshot_bytes,
                seen_seq: stored.last_seq,
                resident: true,
                queue: QueueCharges::new(self.queue_ledger.clone()),
                recent: EncodedChanges::default(),
            },
            self.watchers.clone(),
        ));
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        self.enforce_budget();
        Ok(Some(entry))
    }

    /// Creates a document: catalog row and first snapshot in one transaction, then
    /// installs it in memory. `Conflict` if the id exists.
    pub async fn create(
        &self,
        catalog: CatalogEntry,
        doc: Automerge,
        author: (&str, &str),
    ) -> Result<Arc<DocEntry>, Error> {
        self.create_with(catalog, doc, author, &[], None).await
    }

    /// As [`create`](Self::create), with `audit` appended: catalog row, first
    /// snapshot, change authors, hand-over flag, audit events and change number in one
    /// store transaction. `token`: the creator's token, which must still be live
    /// inside that transaction (`Provenance::token`).
    pub async fn create_with(
        &self,
        catalog: CatalogEntry,
        doc: Automerge,
        author: (&str, &str),
        audit: &[AuditEvent],
        token: Option<&str>,
    ) -> Result<Arc<DocEntry>, Error> {
        let snapshot = doc.save();
        if snapshot.len() as u64 > self.max_document_bytes {
            return Err(Error::TooLarge {
                limit: self.max_document_bytes,
            });
        }
        let hashes: Vec<String> = doc
            .get_changes_meta(&[])
            .iter()
            .map(|c| c.hash.to_string())
            .collect();
        let prov = Provenance {
            changes: &hashes,
            author: Some(author),
            audit,
            handed_over: is_handed_over(&doc).then_some(true),
            token,
        };
        let key = {
            let _one_at_a_time = self.creating.lock().await;
            let started = std::time::Instant::now();
            let key = self
                .store
                .documents()
                .create_document_with(
                    &catalog,
                    &snapshot,
                    Some(&doc.get_heads()),
                    &DocKey::random(),
                    &prov,
                )
                .await?;
            metrics::histogram!(crate::metrics::STORE_LATENCY, "op" => "create")
                .record(started.elapsed().as_secs_f64());
            key
        };
        self.cache_bytes
            .fetch_add(snapshot.len() as u64, Ordering::Relaxed);
        let id = catalog.id;
        let entry = Arc::new(DocEntry::new(
            catalog,
            DocState {
                saved_heads: doc.get_heads(),
                doc,
                key,
                incremental_bytes: 0,
                snapshot_bytes: snapshot.len() as u64,
                seen_seq: 0,
                resident: true,
                queue: QueueCharges::new(self.queue_ledger.clone()),
                recent: EncodedChanges::default(),
            },
            self.watchers.clone(),
        ));
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        let slot = Arc::new(OnceCell::new_with(Some(Some(entry.clone()))));
        lock(&self.docs).insert(id, slot);
        self.enforce_budget();
        Ok(entry)
    }

    /// Commits what the in-memory document has beyond the saved heads: one
    /// incremental chunk, compacted into a snapshot once the chunks hold
    /// [`COMPACT_RATIO`] times its bytes (or would pass the size limit).
    /// Returns whether anything was written. The caller holds the state lock.
    /// `author` (user, device) is recorded against every new change hash.
    pub async fn persist(
        &self,
        id: &DocumentId,
        state: &mut DocState,
        author: Option<(&str, &str)>,
    ) -> Result<bool, Error> {
        self.persist_with(id, state, author, &[]).await
    }

    /// As [`persist`](Self::persist), also appending `audit` to the audit log: chunk,
    /// change authors, audit events and change number in one store transaction, so a
    /// relayed change costs one commit (one fsync on SQLite).
    pub async fn persist_with(
        &self,
        id: &DocumentId,
        state: &mut DocState,
        author: Option<(&str, &str)>,
        audit: &[AuditEvent],
    ) -> Result<bool, Error> {
        let commit = ChangeCommit {
            author,
            audit,
            ..ChangeCommit::default()
        };
        self.persist_change(id, state, commit).await
    }

    /// As [`persist_with`](Self::persist_with), with everything else `commit` says:
    /// the catalog's hand-over flag moved in the same transaction, nothing stored
    /// (`Error::Unauthorized`) unless the writer's token is still live in it, and the
    /// changes taken from the receive that made them.
    pub async fn persist_change(
        &self,
        id: &DocumentId,
        state: &mut DocState,
        commit: ChangeCommit<'_>,
    ) -> Result<bool, Error> {
        if !state.resident {
            // Evicted documents hold nothing uncommitted (only those are evicted).
            return Ok(false);
        }
        let heads = state.doc.get_heads();
        if heads == state.saved_heads {
            return Ok(false);
        }
        // The new changes, encoded once: for the chunk and for the subscribers' messages.
        // The receive that brought them has them when it started from the committed
        // heads and nothing came since (usually: read from its message); else automerge
        // encodes them from its op set.
        let encoded = match commit.applied {
            Some(applied)
                if applied.heads_before == state.saved_heads && applied.heads_after == heads =>
            {
                EncodedChanges::applied(applied, &state.doc)
            }
            _ => EncodedChanges::since(&state.doc, &state.saved_heads),
        };
        let new_changes: Vec<String> = encoded
            .changes()
            .iter()
            .map(|(hash, _)| hash.to_string())
            .collect();
        let prov = Provenance {
            changes: &new_changes,
            author: commit.author,
            audit: commit.audit,
            handed_over: commit.handed_over,
            token: commit.token,
        };
        // What `save_after(saved_heads)` would make, without encoding the changes again.
        let chunk = encoded.concatenated();
        let incremental = state.incremental_bytes + chunk.len() as u64;
        let before = state.stored_bytes();
        let limit = self.max_document_bytes;
        // Past the limit in stored bytes, the document may still fit once compacted:
        // the snapshot decides (checked before anything is written).
        let over_limit = state.snapshot_bytes + incremental > limit;
        let started = std::time::Instant::now();
        let heads = if over_limit || incremental > COMPACT_RATIO * state.snapshot_bytes {
            // The store hands over every chunk it holds, other nodes' included; they
            // are merged in, so the snapshot replaces nothing it does not contain.
            let doc = &mut state.doc;
            let compacted = self
                .store
                .documents()
                .compact_with(
                    id,
                    &state.key,
                    |stored| {
                        sync_core::guard::load_incremental(doc, stored)
                            .map_err(|e| load_failed(id, "stored chunks do not load", e))?;
                        let snapshot = doc.save();
                        if snapshot.len() as u64 > limit {
                            return Err(Error::TooLarge { limit });
                        }
                        Ok((snapshot, doc.get_heads()))
                    },
                    &prov,
                )
                .await?;
            state.snapshot_bytes = compacted.snapshot_bytes;
            state.incremental_bytes = 0;
            state.seen_seq = state.seen_seq.max(compacted.seq);
            state.doc.get_heads()
        } else {
            if let Some(seq) = self
                .store
                .documents()
                .append_chunk_with(
                    id,
                    &state.key,
                    &chunk,
                    Some(&state.saved_heads),
                    &heads,
                    &prov,
                )
                .await?
            {
                state.seen_seq = state.seen_seq.max(seq);
            }
            state.incremental_bytes = incremental;
            heads
        };
        crate::metrics::commit_latency(started.elapsed().as_secs_f64());
        let after = state.stored_bytes();
        if after >= before {
            self.cache_bytes
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.cache_bytes
                .fetch_sub(before - after, Ordering::Relaxed);
        }
        state.saved_heads = heads;
        state.recent = encoded.follows(std::mem::take(&mut state.recent));
        self.enforce_budget();
        Ok(true)
    }

    /// Another node committed to `id` (shared store): if this node holds the document,
    /// loads from the store what its copy lacks and announces it to the local
    /// subscribers, whose connections then send it and acknowledge the new committed
    /// heads. `heads` are the other node's heads after its commit (empty: unknown).
    /// Returns whether the copy changed.
    pub async fn catch_up(&self, id: DocumentId, heads: &[ChangeHash]) -> Result<bool, Error> {
        let Some(entry) = self.loaded_entry(id) else {
            // Not held here; connections watching it open it and sync from the store.
            self.watchers.announce(id);
            return Ok(false);
        };
        let mut state = entry.state.lock().await;
        if !state.resident {
            // Nothing in memory to bring up to date: whoever uses it next reloads it
            // from the store, other nodes' chunks included. Tell the subscribers.
            drop(state);
            entry.announce();
            return Ok(true);
        }
        let has_all = |doc: &Automerge| {
            !heads.is_empty() && heads.iter().all(|h| doc.get_change_by_hash(h).is_some())
        };
        if has_all(&state.doc) {
            return Ok(false);
        }
        let before = state.doc.get_heads();
        // Without heads to check against, read everything: a chunk may have committed
        // below `seen_seq` (sequence values are not handed out in commit order).
        let after = if heads.is_empty() { 0 } else { state.seen_seq };
        let newer = self
            .store
            .documents()
            .chunks_after(&id, &state.key, after)
            .await?;
        self.merge_stored(&id, &mut state, &newer.bytes)?;
        state.seen_seq = state.seen_seq.max(newer.last_seq);
        state.incremental_bytes += newer.incremental_bytes;
        self.cache_bytes
            .fetch_add(newer.incremental_bytes, Ordering::Relaxed);
        if !heads.is_empty() && !has_all(&state.doc) {
            // A chunk committed out of seq order (or compacted away): read everything.
            let all = self
                .store
                .documents()
                .chunks_after(&id, &state.key, 0)
                .await?;
            self.merge_stored(&id, &mut state, &all.bytes)?;
            state.seen_seq = state.seen_seq.max(all.last_seq);
        }
        // Everything in memory came from the store or was committed by us: all of it
        // is committed, so it may be acknowledged.
        state.saved_heads = state.doc.get_heads();
        let changed = state.saved_heads != before;
        entry.refresh_facts(&state);
        drop(state);
        if changed {
            tracing::debug!(%id, "caught up with another node's commit");
            entry.announce();
        }
        Ok(changed)
    }

    /// Catches up every loaded document (after change notifications may have been
    /// lost), and marks every watched one for its watchers: any of them may have changed.
    pub async fn catch_up_all(&self) {
        self.watchers.announce_all();
        let ids: Vec<DocumentId> = lock(&self.docs).keys().copied().collect();
        for id in ids {
            if let Err(e) = self.catch_up(id, &[]).await {
                tracing::warn!(%id, error = %e, "could not catch up with the store");
            }
        }
    }

    fn merge_stored(
        &self,
        id: &DocumentId,
        state: &mut DocState,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        sync_core::guard::load_incremental(&mut state.doc, bytes) // issue 20: guarded
            .map(|_| ())
            .map_err(|e| load_failed(id, "stored chunks do not load", e))
    }

    /// The loaded entry of `id`, without loading it.
    pub fn loaded_entry(&self, id: DocumentId) -> Option<Arc<DocEntry>> {
        let slot = lock(&self.docs).get(&id).cloned()?;
        slot.get().cloned().flatten()
    }

    /// Drops a document from memory when nobody uses it any more.
    pub fn release(&self, id: DocumentId) {
        let mut docs = lock(&self.docs);
        let unused = docs.get(&id).is_some_and(|slot| {
            Arc::strong_count(slot) == 1
                && match slot.get() {
                    Some(Some(entry)) => {
                        Arc::strong_count(entry) == 1 && lock(&entry.subscribers).is_empty()
                    }
                    _ => true,
                }
        });
        if unused {
            if let Some(slot) = docs.remove(&id) {
                if let Some(Some(entry)) = slot.get() {
                    if let Ok(state) = entry.state.try_lock() {
                        let bytes = state.resident_bytes();
                        let _ = self.cache_bytes.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |v| Some(v.saturating_sub(bytes)),
                        );
                    }
                }
            }
        }
    }
}

/// issue 20: a guarded load's failure as `Error::Corrupt`, counting a caught panic.
fn load_failed(id: &DocumentId, what: &str, e: sync_core::guard::GuardError) -> Error {
    if let sync_core::guard::GuardError::Panicked(panicked) = &e {
        crate::metrics::panic_caught(panicked, id);
    }
    Error::Corrupt(format!("document {id}: {what}: {e}"))
}
