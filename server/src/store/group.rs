//! Group commit for SQLite: one writer task per store that commits many writes with
//! one transaction and one fsync.
//!
//! With `synchronous=FULL` every SQLite commit is an fsync of the WAL (≈ 10 ms on the
//! benchmark machine's disk), and SQLite has one writer at a time, so one transaction
//! per relayed change (and one more per subscriber for its audit `read` entry) capped
//! the relay at about 100 commits/s however many cores it had. Here every chunk append
//! ([`ChunkAppend`], with its provenance) and every audit-only append of this process
//! goes into one bounded queue. The writer takes the first job as soon as it arrives,
//! then whatever else is queued *at that moment* (at most [`MAX_JOBS`] jobs or about
//! [`MAX_BYTES`] of chunks: no timer waits for company, so an idle server adds no
//! latency), runs them in one `BEGIN IMMEDIATE` transaction, each inside a savepoint
//! of its own, commits once, and only then answers each job on its oneshot. So:
//!
//! - a caller is answered only after the commit that contains its job has returned
//!   (durability as before: nothing is acknowledged before it is on disk);
//! - a job that fails (a constraint, an erased document's foreign key) is rolled back
//!   to its savepoint and its error reaches only its caller; the others commit;
//! - if the transaction itself fails (begin, a savepoint, the commit), every job of the
//!   batch is run again alone, in a transaction of its own, so each caller gets its
//!   own outcome;
//! - jobs run in queue order inside one transaction, so audit entries chain in that
//!   order and change numbers (`tx::Engine::next_change_seq`) are handed out in commit order.
//!
//! Other SQLite writers (document creation, compaction, erasure, sync states, the admin
//! CLI in another process) keep their own transactions; SQLite's write lock orders
//! them against the writer's batches (the pool's `busy_timeout` bounds the wait).
//!
//! PostgreSQL does not use the writer: it already merges the WAL flushes of concurrent
//! commits (group commit inside the server), and its writes take locks in the order
//! document → audit → change counter per transaction; a batch of several documents in
//! one transaction would hold many advisory locks at once against other nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use sqlx::Sqlite;

use super::tx::{ChunkAppend, Engine, TxMemo};
use crate::audit::{AuditEntry, AuditEvent};
use crate::error::Error;

/// Most jobs in one transaction.
pub const MAX_JOBS: usize = 256;
/// Chunk bytes after which the writer stops adding queued jobs to a batch.
pub const MAX_BYTES: usize = 8 << 20;
/// Jobs that may wait in the queue; senders beyond it wait (backpressure).
const QUEUE: usize = 4096;

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

/// The handle to a store's writer task; the task ends when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct GroupWriter {
    queue: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl GroupWriter {
    /// Starts the writer task on the current tokio runtime.
    pub(crate) fn spawn(pool: SqlitePool) -> GroupWriter {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(pool, jobs, counters.clone()));
        GroupWriter { queue, counters }
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

    async fn submit(&self, work: Work) -> Result<Done, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { work, reply })
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

/// The writer task: batch, commit, answer, until every handle is gone.
async fn run(pool: SqlitePool, mut queue: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.work.bytes();
        let mut batch = vec![first];
        // Only what is queued now: waiting for company would add latency when idle.
        while batch.len() < MAX_JOBS && bytes < MAX_BYTES {
            match queue.try_recv() {
                Ok(job) => {
                    bytes += job.work.bytes();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!(crate::metrics::STORE_BATCH_JOBS).record(batch.len() as f64);
        let (works, replies): (Vec<Work>, Vec<_>) =
            batch.into_iter().map(|job| (job.work, job.reply)).unzip();
        let outcomes = match run_batch(&pool, &works).await {
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
                    outcomes.push(match run_batch(&pool, std::slice::from_ref(work)).await {
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
}

/// One transaction for `works`, each in its own savepoint. `Err`: the transaction
/// failed as a whole (nothing committed); `Ok`: committed, with each job's outcome.
async fn run_batch(pool: &SqlitePool, works: &[Work]) -> Result<Vec<Result<Done, Error>>, Error> {
    let mut conn = pool.acquire().await?;
    match batch_on(&mut conn, works).await {
        Ok(outcomes) => Ok(outcomes),
        Err(e) => {
            // A failed batch can leave transaction state behind on its connection: on a
            // full disk the failed COMMIT kept SQLite's transaction open and the next
            // batch on that pooled connection failed with "begin_with at non-zero
            // transaction depth", forever. Close it rather than give it back.
            let _ = sqlx::Connection::close(conn.detach()).await;
            Err(e)
        }
    }
}

/// [`run_batch`] on one connection. The jobs share a [`TxMemo`] (the audit chain's
/// tail and the tokens found live are read once per batch); a job rolled back to its
/// savepoint restores the memo it started with. A batch of one job needs no savepoint:
/// its failure rolls back the transaction.
async fn batch_on(
    conn: &mut sqlx::SqliteConnection,
    works: &[Work],
) -> Result<Vec<Result<Done, Error>>, Error> {
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    let mut memo = TxMemo::default();
    if let [work] = works {
        return match run_job(&mut tx, work, &mut memo).await {
            Ok(done) => {
                tx.commit().await?;
                Ok(vec![Ok(done)])
            }
            Err(e) => {
                tx.rollback().await?;
                Ok(vec![Err(e)])
            }
        };
    }
    let mut outcomes = Vec::with_capacity(works.len());
    for work in works {
        let mut job = sqlx::Acquire::begin(&mut tx).await?;
        let before = memo.clone();
        match run_job(&mut job, work, &mut memo).await {
            Ok(done) => {
                job.commit().await?;
                outcomes.push(Ok(done));
            }
            Err(e) => {
                job.rollback().await?;
                memo = before;
                outcomes.push(Err(e));
            }
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// One job's writes in `tx` (a transaction or a savepoint).
async fn run_job(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    work: &Work,
    memo: &mut TxMemo,
) -> Result<Done, Error> {
    match work {
        // No advisory lock and no notice: SQLite has one node.
        Work::Append(append) => <Sqlite as Engine>::append_chunk(tx, append, 0, "", memo)
            .await
            .map(Done::Append),
        Work::Audit(events) => <Sqlite as Engine>::append_audit(tx, events, memo)
            .await
            .map(Done::Audit),
    }
}
