//! Prometheus metrics: the names of every series, and the one recorder behind them.
//!
//! The `metrics` facade is global, so the recorder is installed once per process
//! ([`install`]); `/metrics` renders it, on its own listener (`--metrics-listen`,
//! loopback by default). Labels never carry personal data: a document kind, a message
//! type or a refusal reason, never a user, token or document id, and never a wijk: a
//! per-wijk count of commits or creations counts people's activity below the central
//! office's suppression threshold (issue 16, item 7).

use std::sync::OnceLock;

use metrics::{Counter, Histogram, KeyName, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sync_core::protocol::Message;

/// Open websocket connections (gauge).
pub const CONNECTIONS: &str = "buurtsync_connections";
/// Websocket connections accepted since start (counter).
pub const CONNECTIONS_TOTAL: &str = "buurtsync_connections_total";
/// Documents held in memory (gauge).
pub const DOCUMENTS_LOADED: &str = "buurtsync_documents_loaded";
/// Stored bytes of the documents held in memory (gauge): the document cache's size.
pub const CACHE_BYTES: &str = "buurtsync_cache_bytes";
/// Documents evicted from memory to keep the cache within its budget.
pub const CACHE_EVICTIONS: &str = "buurtsync_cache_evictions_total";
/// Evicted documents loaded again because someone used them.
pub const CACHE_RELOADS: &str = "buurtsync_cache_reloads_total";
/// automerge documents loaded from the store into the hub: first loads and reloads
/// after eviction (counter). What a reconnect costs the server in document work; a
/// denied or missing id never counts (access is decided from the catalog first).
pub const DOCUMENT_LOADS: &str = "buurtsync_document_loads_total";
/// Protocol messages received, by `type` (counter).
pub const MESSAGES_IN: &str = "buurtsync_messages_in_total";
/// Protocol messages sent, by `type` (counter).
pub const MESSAGES_OUT: &str = "buurtsync_messages_out_total";
/// Websocket payload bytes received (counter).
pub const BYTES_IN: &str = "buurtsync_bytes_in_total";
/// Websocket payload bytes sent (counter).
pub const BYTES_OUT: &str = "buurtsync_bytes_out_total";
/// From receiving a sync payload to its commit (or refusal), seconds (histogram).
pub const SYNC_LATENCY: &str = "buurtsync_sync_latency_seconds";
/// Store operations, by `op` (`load`, `commit`, `create`), seconds (histogram).
pub const STORE_LATENCY: &str = "buurtsync_store_latency_seconds";
/// Jobs (chunk appends, audit appends) per SQLite group commit (histogram): above 1
/// when the writer batches concurrent writes into one transaction and one fsync.
pub const STORE_BATCH_JOBS: &str = "buurtsync_store_batch_jobs";
/// Messages or connections refused, by `reason` (counter).
pub const REJECTED: &str = "buurtsync_rejected_total";
/// Committed changes, by `kind` (counter).
pub const COMMITS: &str = "buurtsync_commits_total";
/// Documents created, by `kind` (counter).
pub const CREATED: &str = "buurtsync_documents_created_total";
/// Time spent waiting for a wijk's work permit, seconds (histogram, no wijk label):
/// how much the fairness quota held busy wijken back.
pub const WIJK_QUEUE_WAIT: &str = "buurtsync_wijk_queue_wait_seconds";
/// Documents named in connect-time summaries, by `answer` (`in-sync`: watched without
/// loading; `changed`: opened and synced) (counter).
pub const SUMMARY_DOCUMENTS: &str = "buurtsync_summary_documents_total";
/// TLS certificate reloads, by `result` (`ok`, `error`) (counter).
pub const TLS_RELOADS: &str = "buurtsync_tls_reloads_total";
/// Panics in automerge/autosurgeon caught by `sync_core::guard`, by `site`.
pub const PANICS_CAUGHT: &str = "buurtsync_panics_caught_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(STORE_BATCH_JOBS.into()), &batch)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            handle
        })
        .clone()
}

/// What a series is, for its description.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every series with its kind, unit and help text (`# HELP` on `/metrics`).
#[rustfmt::skip]
const DESCRIBED: &[(&str, Kind, Option<Unit>, &str)] = &[
    (CONNECTIONS, Kind::Gauge, None, "Open websocket connections"),
    (CONNECTIONS_TOTAL, Kind::Counter, None, "Websocket connections accepted"),
    (DOCUMENTS_LOADED, Kind::Gauge, None, "Documents held in memory"),
    (DOCUMENT_LOADS, Kind::Counter, None, "Documents loaded and decrypted from the store"),
    (CACHE_BYTES, Kind::Gauge, Some(Unit::Bytes), "Stored size of the documents in memory"),
    (CACHE_EVICTIONS, Kind::Counter, None, "Documents evicted from memory to keep the cache within its budget"),
    (CACHE_RELOADS, Kind::Counter, None, "Evicted documents loaded again on use"),
    (MESSAGES_IN, Kind::Counter, None, "Protocol messages received, by type"),
    (MESSAGES_OUT, Kind::Counter, None, "Protocol messages sent, by type"),
    (BYTES_IN, Kind::Counter, Some(Unit::Bytes), "Websocket payload bytes received"),
    (BYTES_OUT, Kind::Counter, Some(Unit::Bytes), "Websocket payload bytes sent"),
    (SYNC_LATENCY, Kind::Histogram, Some(Unit::Seconds), "Sync payload received to committed"),
    (STORE_LATENCY, Kind::Histogram, Some(Unit::Seconds), "Store operations, by op"),
    (STORE_BATCH_JOBS, Kind::Histogram, Some(Unit::Count), "Jobs per SQLite group commit (one transaction, one fsync)"),
    (REJECTED, Kind::Counter, None, "Refused messages and connections, by reason"),
    (COMMITS, Kind::Counter, None, "Committed changes, by document kind"),
    (CREATED, Kind::Counter, None, "Documents created, by document kind"),
    (WIJK_QUEUE_WAIT, Kind::Histogram, Some(Unit::Seconds), "Waiting for the wijk's work quota"),
    (SUMMARY_DOCUMENTS, Kind::Counter, None, "Documents in connect-time summaries, by answer (in-sync, changed)"),
    (TLS_RELOADS, Kind::Counter, None, "TLS certificate reloads, by result"),
    (PANICS_CAUGHT, Kind::Counter, None, "Panics in the document library caught by the guard, by site"),
];

fn describe() {
    metrics::with_recorder(|r| {
        for &(name, kind, unit, help) in DESCRIBED {
            let name = KeyName::from_const_str(name);
            match kind {
                Kind::Counter => r.describe_counter(name, unit, help.into()),
                Kind::Gauge => r.describe_gauge(name, unit, help.into()),
                Kind::Histogram => r.describe_histogram(name, unit, help.into()),
            }
        }
    });
}

/// Counts and logs (one bounded line) a panic the guard caught; `doc` is the document
/// id when there is one.
pub fn panic_caught(panicked: &sync_core::guard::Panicked, doc: &dyn std::fmt::Display) {
    metrics::counter!(PANICS_CAUGHT, "site" => panicked.site.as_str()).increment(1);
    tracing::warn!(site = panicked.site.as_str(), %doc, message = %panicked.message, "panic in the document library caught");
}

/// Counts one protocol message received (`MESSAGES_IN`, by `type`).
pub fn message_in(msg: &Message) {
    RECEIVED.count(msg);
}

/// Counts one protocol message sent (`MESSAGES_OUT`, by `type`).
pub fn message_out(msg: &Message) {
    SENT.count(msg);
}

static RECEIVED: ByType = ByType::new(MESSAGES_IN);
static SENT: ByType = ByType::new(MESSAGES_OUT);

/// One counter's handles, one per message type. `counter!` builds the key, hashes it
/// and looks it up in the registry at every call, and a relayed change counts 26
/// messages; a handle is looked up once per type and kept. Handles are taken only
/// after [`install`]: one taken before the recorder would count into nothing for good.
struct ByType {
    name: &'static str,
    handles: [OnceLock<Counter>; Message::TYPE_NAMES.len()],
}

impl ByType {
    const fn new(name: &'static str) -> Self {
        ByType {
            name,
            handles: [const { OnceLock::new() }; Message::TYPE_NAMES.len()],
        }
    }

    fn count(&self, msg: &Message) {
        let (name, label) = (self.name, msg.type_name());
        if HANDLE.get().is_none() {
            metrics::counter!(name, "type" => label).increment(1);
            return;
        }
        self.handles[msg.type_index()]
            .get_or_init(|| metrics::counter!(name, "type" => label))
            .increment(1);
    }
}

/// A series' handle, looked up once and kept: `counter!`/`histogram!` build the key,
/// hash it and look it up in the registry at every call, and these series count every
/// frame or commit (issue 18). As [`ByType`], a handle is kept only after [`install`].
struct Hot<H: 'static> {
    handle: OnceLock<H>,
    make: fn() -> H,
}

impl<H> Hot<H> {
    const fn new(make: fn() -> H) -> Self {
        Hot {
            handle: OnceLock::new(),
            make,
        }
    }

    fn with(&self, use_it: impl FnOnce(&H)) {
        if HANDLE.get().is_none() {
            use_it(&(self.make)());
        } else {
            use_it(self.handle.get_or_init(self.make));
        }
    }
}

static BYTES_IN_HOT: Hot<Counter> = Hot::new(|| metrics::counter!(BYTES_IN));
static BYTES_OUT_HOT: Hot<Counter> = Hot::new(|| metrics::counter!(BYTES_OUT));
static SYNC_LATENCY_HOT: Hot<Histogram> = Hot::new(|| metrics::histogram!(SYNC_LATENCY));
static COMMIT_LATENCY_HOT: Hot<Histogram> =
    Hot::new(|| metrics::histogram!(STORE_LATENCY, "op" => "commit"));
static WIJK_QUEUE_WAIT_HOT: Hot<Histogram> = Hot::new(|| metrics::histogram!(WIJK_QUEUE_WAIT));
static COMMITS_PLAN: Hot<Counter> = Hot::new(|| metrics::counter!(COMMITS, "kind" => "plan"));
static COMMITS_ACTIVITEIT: Hot<Counter> =
    Hot::new(|| metrics::counter!(COMMITS, "kind" => "activiteit"));

/// Counts `n` bytes of websocket frames received (`BYTES_IN`).
pub fn bytes_in(n: usize) {
    BYTES_IN_HOT.with(|c| c.increment(n as u64));
}

/// Counts `n` bytes of websocket frames sent (`BYTES_OUT`).
pub fn bytes_out(n: usize) {
    BYTES_OUT_HOT.with(|c| c.increment(n as u64));
}

/// Records how long one sync payload took to handle (`SYNC_LATENCY`).
pub fn sync_latency(secs: f64) {
    SYNC_LATENCY_HOT.with(|h| h.record(secs));
}

/// Records how long one change's commit took (`STORE_LATENCY`, op `commit`).
pub fn commit_latency(secs: f64) {
    COMMIT_LATENCY_HOT.with(|h| h.record(secs));
}

/// Records a wait for the wijk's work quota (`WIJK_QUEUE_WAIT`).
pub fn wijk_queue_wait(secs: f64) {
    WIJK_QUEUE_WAIT_HOT.with(|h| h.record(secs));
}

/// Counts one committed change of a document of `kind` (`COMMITS`).
pub fn committed(kind: sync_core::partition::DocumentKind) {
    use sync_core::partition::DocumentKind;
    match kind {
        DocumentKind::Plan => &COMMITS_PLAN,
        DocumentKind::Activiteit => &COMMITS_ACTIVITEIT,
    }
    .with(|c| c.increment(1));
}

/// Counts one refusal.
pub fn rejected(reason: &'static str) {
    metrics::counter!(REJECTED, "reason" => reason).increment(1);
}
