//! Group commit for SQLite: one writer thread per store that commits many writes with
//! one transaction and one fsync.
//!
//! With `synchronous=FULL` every SQLite commit is an fsync of the WAL (≈ 10 ms on the
//! benchmark machine's disk), and SQLite has one writer at a time, so one transaction
//! per relayed change (and one more per subscriber for its audit `read` entry) capped
//! the relay at about 100 commits/s however many cores it had. Here every chunk append
//! ([`ChunkAppend`], with its provenance) and every audit-only append of this process
//! goes into one bounded queue. The writer takes the first job as soon as it arrives,
//! then whatever else is queued *at that moment* (at most [`MAX_JOBS`] jobs or about
//! [`MAX_BYTES`] of chunks), runs them in one `BEGIN IMMEDIATE` transaction, commits
//! once, and only then answers each job on its oneshot. When jobs have lately been arriving faster than one per [`COMMIT_DELAY`],
//! the writer first waits out that delay for company (PostgreSQL's `commit_delay`, but
//! only under load: [`Arrivals`]); an idle or quiet server adds no latency. So:
//!
//! - a caller is answered only after the commit that contains its job has returned
//!   (durability as before: nothing is acknowledged before it is on disk);
//! - a job that fails (a constraint, an erased document's foreign key) rolls that
//!   transaction back; the batch runs again with each job in a savepoint of its own,
//!   the failing one is rolled back to its savepoint and its error reaches only its
//!   caller; the others commit;
//! - if the transaction itself fails (begin, a savepoint, the commit), every job of the
//!   batch is run again alone, in a transaction of its own, so each caller gets its
//!   own outcome;
//! - jobs run in queue order inside one transaction, so audit entries chain in that
//!   order and change numbers (`tx::Engine::next_change_seq`) are handed out in commit order.
//!
//! The writer is a thread of its own with its own connection (rusqlite on the same
//! bundled SQLite as sqlx), not a task on sqlx's pool: sqlx runs every statement of a
//! SQLite connection on that connection's worker thread, a round trip per statement,
//! and a commit is about ten statements; the replay profile was dominated by those
//! hand-offs (docs/performance.md). Here a job costs one hand-off each way. The steps
//! are `tx::Engine::append_chunk`'s, in the same order with the same SQL (`tx`'s
//! constants) and the same audit chaining (`tx::chain`); `Engine` keeps them for
//! PostgreSQL and for SQLite's other writers.
//!
//! Other SQLite writers (document creation, compaction, erasure, sync states, the admin
//! CLI in another process) keep their own transactions; SQLite's write lock orders
//! them against the writer's batches (the pool's `busy_timeout` bounds the wait).
//!
//! PostgreSQL does not use the writer: it already merges the WAL flushes of concurrent
//! commits (group commit inside the server), and its writes take locks in the order
//! document → audit → change counter per transaction; a batch of several documents in
//! one transaction would hold many advisory locks at once against other nodes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::tx::{
    chain, multi_row, now, recorded, tail_of, ChunkAppend, TxMemo, AUTHORS_CONFLICT, INSERT_AUDIT,
    INSERT_AUTHORS, INSERT_CHUNK, MARK_APPENDED, NEXT_CHANGE_SEQ, ROWS_PER_INSERT, SET_HANDED_OVER,
    SQLITE_AUDIT_ISSUED, SQLITE_AUDIT_LAST, TOKEN_LIVE,
};
use crate::audit::{AuditEntry, AuditEvent};
use crate::error::Error;

/// Most jobs in one transaction.
pub const MAX_JOBS: usize = 256;
/// Chunk bytes after which the writer stops adding queued jobs to a batch.
pub const MAX_BYTES: usize = 8 << 20;
/// Jobs that may wait in the queue; senders beyond it wait (backpressure).
const QUEUE: usize = 4096;
/// How long the writer waits for another connection's write lock (the pool's too).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a first job waits for company when jobs arrive faster than this apart.
/// Each transaction writes its dirty pages to the WAL whole and fsyncs once, so jobs
/// that share one share those costs: at the capacity knee the writer used to commit
/// 1.8 jobs a transaction (docs/performance.md, "Group commit waits for company").
pub const COMMIT_DELAY: Duration = Duration::from_millis(2);
/// The writer's page cache in KiB (SQLite's `cache_size`, negative: in KiB); it fills
/// only with pages the writer touches.
pub const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// How far back the writer looks to judge the arrival rate.
const RATE_WINDOW: Duration = Duration::from_millis(200);

/// The writer's view of how fast jobs arrive, to decide whether a batch should wait
/// for company: only when another job is expected within [`COMMIT_DELAY`] (on
/// average), judged over the last [`RATE_WINDOW`] or so. Times are passed in, so the
/// rule is tested without a clock.
#[derive(Debug)]
pub(crate) struct Arrivals {
    /// Start of the current window and the jobs taken in it.
    since: Instant,
    taken: u64,
    /// Jobs a second in the last complete window.
    rate: f64,
}

impl Arrivals {
    pub(crate) fn new(now: Instant) -> Self {
        Arrivals {
            since: now,
            taken: 0,
            rate: 0.0,
        }
    }

    /// Counts `jobs` taken from the queue at `now`.
    pub(crate) fn took(&mut self, jobs: usize, now: Instant) {
        self.taken += jobs as u64;
        let span = now.saturating_duration_since(self.since);
        if span >= RATE_WINDOW {
            self.rate = self.taken as f64 / span.as_secs_f64();
            self.since = now;
            self.taken = 0;
        }
    }

    /// Should a batch that is not full wait for company? Only if the last window's
    /// rate says another job comes within the delay, and that window is recent (a
    /// quiet spell since makes it stale: no). After a burst ends, at most one window's
    /// worth of jobs waits needlessly.
    pub(crate) fn worth_waiting(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < RATE_WINDOW * 2
            && self.rate * COMMIT_DELAY.as_secs_f64() >= 1.0
    }
}

/// What one job writes.
#[derive(Debug)]
enum Work {
    Append(Box<ChunkAppend>),
    Audit(Vec<AuditEvent>),
}

/// What one job wrote.
#[derive(Debug)]
enum Done {
    /// The chunk's seq, `None` if it was stored already.
    Append(Option<i64>),
    Audit(Vec<AuditEntry>),
}

#[derive(Debug)]
struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Done, Error>>,
}

/// What the writer's queue carries.
#[derive(Debug)]
enum Msg {
    Job(Job),
    /// `Store::close`: commit what was queued before, close the connection, refuse
    /// every later job; answer when done.
    Close(oneshot::Sender<()>),
}

/// How much batching happened: jobs committed and the transactions they took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Jobs handed to the writer.
    pub submitted: u64,
    /// Jobs the writer has finished (committed or failed).
    pub jobs: u64,
    /// Batches (write transactions) the writer ran for them.
    pub batches: u64,
}

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    jobs: AtomicU64,
    batches: AtomicU64,
}

/// The handle to a store's writer thread; the thread ends when the last handle is
/// dropped.
#[derive(Debug)]
pub(crate) struct GroupWriter {
    queue: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
}

impl GroupWriter {
    /// Opens the writer's connection to the SQLite file at `path` (migrated already)
    /// and starts its thread.
    pub(crate) fn spawn(path: &str) -> Result<GroupWriter, Error> {
        let path = Path::new(path).to_owned();
        let conn = open(&path)?;
        let (queue, jobs) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let mine = counters.clone();
        std::thread::Builder::new()
            .name("buurtsync-writer".into())
            .spawn(move || run(&path, conn, jobs, &mine))?;
        Ok(GroupWriter { queue, counters })
    }

    pub(crate) fn stats(&self) -> GroupStats {
        GroupStats {
            submitted: self.counters.submitted.load(Ordering::SeqCst),
            jobs: self.counters.jobs.load(Ordering::SeqCst),
            batches: self.counters.batches.load(Ordering::SeqCst),
        }
    }

    /// Appends a sealed chunk with its provenance; answers after the commit.
    pub(crate) async fn append(&self, job: ChunkAppend) -> Result<Option<i64>, Error> {
        match self.submit(Work::Append(Box::new(job))).await? {
            Done::Append(seq) => Ok(seq),
            Done::Audit(_) => Err(stopped()),
        }
    }

    /// Appends audit events (all or none, in order); answers after the commit.
    pub(crate) async fn audit(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, Error> {
        match self.submit(Work::Audit(events)).await? {
            Done::Audit(entries) => Ok(entries),
            Done::Append(_) => Err(stopped()),
        }
    }

    /// Commits what is queued, then closes the writer's connection; later writes fail
    /// with [`Error::WriterStopped`].
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Msg::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    async fn submit(&self, work: Work) -> Result<Done, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Msg::Job(Job { work, reply }))
            .await
            .map_err(|_| stopped())?;
        self.counters.submitted.fetch_add(1, Ordering::SeqCst);
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::WriterStopped
}

impl Work {
    fn bytes(&self) -> usize {
        match self {
            Work::Append(job) => job.data.len(),
            Work::Audit(events) => events.len() * 256,
        }
    }
}

/// The writer's connection, set up as the pool's (`store::sqlite_pool`): WAL,
/// `synchronous=FULL` (a returned commit is on disk), foreign keys, `secure_delete`.
fn open(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Config(format!(
            "{}: SQLite refused WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    // SQLite's default page cache (2 MB) is smaller than the index pages one second of
    // appends touches (each change writes a leaf of several per-document indexes): the
    // writer read them again from the file at every batch (issue 18's profile).
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    Ok(conn)
}

/// The writer thread: batch, commit, answer, until every handle is gone.
fn run(path: &Path, conn: Connection, mut queue: mpsc::Receiver<Msg>, counters: &Counters) {
    let mut conn = Some(conn);
    let mut closed = false;
    let mut arrivals = Arrivals::new(Instant::now());
    let mut next = queue.blocking_recv();
    while let Some(msg) = next.take() {
        let first = match msg {
            Msg::Close(done) => {
                closed = true;
                conn = None;
                let _ = done.send(());
                next = queue.blocking_recv();
                continue;
            }
            Msg::Job(job) if closed => {
                let _ = job.reply.send(Err(stopped()));
                next = queue.blocking_recv();
                continue;
            }
            Msg::Job(job) => job,
        };
        let taken_at = Instant::now();
        let mut bytes = first.work.bytes();
        let mut batch = vec![first];
        // What is queued now; then, under load only, what comes within the delay. A
        // close waits for this batch (it comes next).
        let full = take_queued(&mut queue, &mut batch, &mut bytes, &mut next);
        if !full && next.is_none() && arrivals.worth_waiting(taken_at) {
            std::thread::sleep(COMMIT_DELAY.saturating_sub(taken_at.elapsed()));
            take_queued(&mut queue, &mut batch, &mut bytes, &mut next);
        }
        arrivals.took(batch.len(), taken_at);
        // A panic in a batch (none is known) must not stop the writer: its callers
        // get `WriterStopped` (their replies are dropped), the connection is closed,
        // and the next batch opens another.
        let guarded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit_batch(path, &mut conn, batch, counters)
        }));
        if guarded.is_err() {
            tracing::error!("the group writer panicked in a batch; its jobs failed");
            conn = None;
        }
        if next.is_none() {
            next = queue.blocking_recv();
        }
    }
}

/// Moves queued jobs into `batch` until it is full ([`MAX_JOBS`], [`MAX_BYTES`]) or the
/// queue is empty; a close message stops it and is left in `next`. `true`: full.
fn take_queued(
    queue: &mut mpsc::Receiver<Msg>,
    batch: &mut Vec<Job>,
    bytes: &mut usize,
    next: &mut Option<Msg>,
) -> bool {
    while batch.len() < MAX_JOBS && *bytes < MAX_BYTES {
        match queue.try_recv() {
            Ok(Msg::Job(job)) => {
                *bytes += job.work.bytes();
                batch.push(job);
            }
            Ok(close) => {
                *next = Some(close);
                return false;
            }
            Err(_) => return false,
        }
    }
    true
}

/// Commits `batch` and answers each job.
fn commit_batch(path: &Path, conn: &mut Option<Connection>, batch: Vec<Job>, counters: &Counters) {
    metrics::histogram!(crate::metrics::STORE_BATCH_JOBS).record(batch.len() as f64);
    let (works, replies): (Vec<Work>, Vec<_>) =
        batch.into_iter().map(|job| (job.work, job.reply)).unzip();
    let outcomes = match run_batch(path, conn, &works) {
        Ok(outcomes) => {
            counters.batches.fetch_add(1, Ordering::SeqCst);
            outcomes
        }
        Err(e) => {
            // The transaction failed as a whole: nothing of it is stored. Each job
            // again on its own, so each caller gets its own outcome.
            tracing::warn!(jobs = works.len(), error = %e, "group commit failed; committing its jobs one by one");
            let mut outcomes = Vec::with_capacity(works.len());
            for work in &works {
                counters.batches.fetch_add(1, Ordering::SeqCst);
                outcomes.push(match run_batch(path, conn, std::slice::from_ref(work)) {
                    Ok(mut one) => one.pop().unwrap_or_else(|| Err(stopped())),
                    Err(e) => Err(e),
                });
            }
            outcomes
        }
    };
    counters
        .jobs
        .fetch_add(replies.len() as u64, Ordering::SeqCst);
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A caller that went away (its connection closed) no longer listens; its
        // write is committed all the same.
        let _ = reply.send(outcome);
    }
}

/// One transaction for `works`, each in its own savepoint. `Err`: the transaction
/// failed as a whole (nothing committed); `Ok`: committed, with each job's outcome.
fn run_batch(
    path: &Path,
    conn: &mut Option<Connection>,
    works: &[Work],
) -> Result<Vec<Result<Done, Error>>, Error> {
    let db = match conn {
        Some(db) => db,
        None => conn.insert(open(path)?),
    };
    match batch_on(db, works) {
        Ok(outcomes) => Ok(outcomes),
        Err(e) => {
            // A failed batch can leave transaction state behind on its connection (on
            // a full disk a failed COMMIT keeps SQLite's transaction open, and every
            // later BEGIN on it would fail). Close it; the next batch opens another.
            *conn = None;
            Err(e)
        }
    }
}

/// [`run_batch`] on one connection. The jobs share a [`TxMemo`] (the audit chain's
/// tail and the tokens found live are read once per batch). First all of them in one
/// transaction without savepoints ([`all_or_nothing`]): a job fails rarely (an erased
/// document, a token revoked meanwhile). If one does, that transaction is rolled back
/// and the batch runs again with a savepoint per job; a job rolled back to its
/// savepoint restores the memo it started with. A batch of one job needs no savepoint:
/// its failure rolls back the transaction.
fn batch_on(db: &mut Connection, works: &[Work]) -> Result<Vec<Result<Done, Error>>, Error> {
    if works.len() > 1 {
        if let Some(outcomes) = all_or_nothing(db, works)? {
            return Ok(outcomes);
        }
    }
    let mut tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut memo = TxMemo::default();
    if let [work] = works {
        return match run_job(&tx, work, &mut memo) {
            Ok(done) => {
                tx.commit()?;
                Ok(vec![Ok(done)])
            }
            Err(e) => {
                tx.rollback()?;
                Ok(vec![Err(e)])
            }
        };
    }
    let mut outcomes = Vec::with_capacity(works.len());
    for work in works {
        let mut job = tx.savepoint()?;
        let before = memo.clone();
        match run_job(&job, work, &mut memo) {
            Ok(done) => {
                job.commit()?;
                outcomes.push(Ok(done));
            }
            Err(e) => {
                // ROLLBACK TO undoes the job; RELEASE then drops its (empty) savepoint.
                job.rollback()?;
                job.commit()?;
                memo = before;
                outcomes.push(Err(e));
            }
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Every job of `works` in one transaction, committed only if each succeeds: `None`
/// when one failed (the transaction is rolled back, nothing of it stored). Without a
/// savepoint per job, SQLite neither runs the savepoint statements nor copies each
/// page a job first writes to its sub-journal: ≈ 2 % of the relay's CPU at the
/// capacity knee (issue 18).
fn all_or_nothing(
    db: &mut Connection,
    works: &[Work],
) -> Result<Option<Vec<Result<Done, Error>>>, Error> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut memo = TxMemo::default();
    let mut outcomes = Vec::with_capacity(works.len());
    for work in works {
        match run_job(&tx, work, &mut memo) {
            Ok(done) => outcomes.push(Ok(done)),
            Err(_) => {
                tx.rollback()?;
                return Ok(None);
            }
        }
    }
    tx.commit()?;
    Ok(Some(outcomes))
}

/// `sql` as rusqlite prepares it: `tx`'s constants number parameters `$N` (both sqlx
/// drivers read that); SQLite reads `$N` as a *name*, numbered by first appearance,
/// but `?N` as position N.
fn positional(sql: &str) -> String {
    sql.replace('$', "?")
}

/// One job's writes in `db` (a transaction or a savepoint).
fn run_job(db: &Connection, work: &Work, memo: &mut TxMemo) -> Result<Done, Error> {
    match work {
        Work::Append(append) => append_chunk(db, append, memo).map(Done::Append),
        Work::Audit(events) => append_audit(db, events, memo).map(Done::Audit),
    }
}

/// `tx::Engine::append_chunk` for SQLite (no advisory lock, no notice: one node).
fn append_chunk(
    db: &Connection,
    job: &ChunkAppend,
    memo: &mut TxMemo,
) -> Result<Option<i64>, Error> {
    let seq: Option<i64> = db
        .prepare_cached(&positional(INSERT_CHUNK))?
        .query_row(
            params![job.doc, "incremental", job.hash, job.data, now()],
            |row| row.get(0),
        )
        .optional()?;
    let prov = job.prov.borrowed();
    if let Some(token) = prov.token {
        if !memo.live_tokens.iter().any(|live| live == token) {
            let live: Option<i64> = db
                .prepare_cached(&positional(TOKEN_LIVE))?
                .query_row(params![token, now()], |row| row.get(0))
                .optional()?;
            live.ok_or(Error::Unauthorized)?;
            memo.live_tokens.push(token.to_owned());
        }
    }
    if let Some((user, device)) = prov.author {
        let at = now();
        for hashes in prov.changes.chunks(ROWS_PER_INSERT) {
            let sql = multi_row(INSERT_AUTHORS, 5, hashes.len()) + AUTHORS_CONFLICT;
            let mut insert = db.prepare_cached(&positional(&sql))?;
            let mut at_index = 1;
            for hash in hashes {
                insert.raw_bind_parameter(at_index, &job.doc)?;
                insert.raw_bind_parameter(at_index + 1, hash)?;
                insert.raw_bind_parameter(at_index + 2, user)?;
                insert.raw_bind_parameter(at_index + 3, device)?;
                insert.raw_bind_parameter(at_index + 4, at)?;
                at_index += 5;
            }
            insert.raw_execute()?;
        }
    }
    if let Some(handed_over) = prov.handed_over {
        db.prepare_cached(&positional(SET_HANDED_OVER))?
            .execute(params![handed_over, job.doc, now()])?;
    }
    append_audit(db, prov.audit, memo)?;
    // A chunk stored already changes nothing: no change number, no new heads.
    if seq.is_some() {
        let change_seq: i64 = db
            .prepare_cached(NEXT_CHANGE_SEQ)?
            .query_row([], |row| row.get(0))?;
        db.prepare_cached(&positional(MARK_APPENDED))?
            .execute(params![change_seq, now(), job.base, job.heads, job.doc])?;
    }
    Ok(seq)
}

/// `tx::Engine::append_audit` for SQLite: the same chaining (`tx::chain`), the tail
/// read once per transaction.
fn append_audit(
    db: &Connection,
    events: &[AuditEvent],
    memo: &mut TxMemo,
) -> Result<Vec<AuditEntry>, Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let start = match memo.audit_tail.take() {
        Some(tail) => tail,
        None => {
            let last: Option<(i64, Option<Vec<u8>>)> = db
                .prepare_cached(SQLITE_AUDIT_LAST)?
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let issued: Option<Option<i64>> = db
                .prepare_cached(SQLITE_AUDIT_ISSUED)?
                .query_row([], |row| row.get(0))
                .optional()?;
            tail_of(last, issued.flatten())
        }
    };
    let (rows, tail) = chain(events, start)?;
    for some in rows.chunks(ROWS_PER_INSERT) {
        let sql = multi_row(INSERT_AUDIT, 10, some.len());
        let mut insert = db.prepare_cached(&positional(&sql))?;
        let mut at_index = 1;
        for (seq, at_ms, event, prev, hash) in some {
            insert.raw_bind_parameter(at_index, seq)?;
            insert.raw_bind_parameter(at_index + 1, at_ms)?;
            insert.raw_bind_parameter(at_index + 2, &event.user_id)?;
            insert.raw_bind_parameter(at_index + 3, &event.device)?;
            insert.raw_bind_parameter(at_index + 4, &event.document)?;
            insert.raw_bind_parameter(at_index + 5, &event.partition)?;
            insert.raw_bind_parameter(at_index + 6, event.action.as_str())?;
            insert.raw_bind_parameter(at_index + 7, &event.detail)?;
            insert.raw_bind_parameter(at_index + 8, prev)?;
            insert.raw_bind_parameter(at_index + 9, hash)?;
            at_index += 10;
        }
        insert.raw_execute()?;
    }
    memo.audit_tail = Some(tail);
    Ok(recorded(rows))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{positional, Arrivals, COMMIT_DELAY, RATE_WINDOW};

    /// Jobs taken one at a time, `gap` apart, from `start` for `span`; returns the
    /// time after the last.
    fn steady(arrivals: &mut Arrivals, start: Instant, gap: Duration, span: Duration) -> Instant {
        let mut at = start;
        while at < start + span {
            arrivals.took(1, at);
            at += gap;
        }
        at
    }

    #[test]
    fn a_batch_waits_for_company_only_while_jobs_come_faster_than_the_delay() {
        let start = Instant::now();
        let mut arrivals = Arrivals::new(start);
        // A fresh writer knows of no load: the first jobs never wait.
        assert!(!arrivals.worth_waiting(start));
        // Two jobs per delay: waiting pays.
        let busy = steady(&mut arrivals, start, COMMIT_DELAY / 2, RATE_WINDOW * 3);
        assert!(arrivals.worth_waiting(busy));
        // One job per two delays: each would wait alone; it must not.
        let quiet = steady(&mut arrivals, busy, COMMIT_DELAY * 2, RATE_WINDOW * 3);
        assert!(!arrivals.worth_waiting(quiet));
        // Busy again, then silence for two windows: the old rate is stale.
        let busy = steady(&mut arrivals, quiet, COMMIT_DELAY / 4, RATE_WINDOW * 3);
        assert!(arrivals.worth_waiting(busy));
        assert!(!arrivals.worth_waiting(busy + RATE_WINDOW * 2));
    }

    #[test]
    fn batches_of_many_jobs_count_every_job() {
        let start = Instant::now();
        let mut arrivals = Arrivals::new(start);
        // One batch of 20 jobs every 10 ms is 2,000 jobs a second, though the writer
        // wakes only 100 times a second.
        let mut at = start;
        while at < start + RATE_WINDOW * 2 {
            arrivals.took(20, at);
            at += Duration::from_millis(10);
        }
        assert!(arrivals.worth_waiting(at));
    }

    #[test]
    fn positional_keeps_each_parameter_at_its_number() {
        // "$1 … $3 … $2 … $1" as names would be numbered 1, 2, 3 by first appearance.
        assert_eq!(
            positional("SET a = $1, b = $3 WHERE id = $2 AND a <> $1"),
            "SET a = ?1, b = ?3 WHERE id = ?2 AND a <> ?1"
        );
    }
}
