//! The audit log's SQL: appending to the hash chain, walking it, and one document's
//! entries. What the chain is and what it proves is in `crate::audit`.
//!
//! Appends are serialised by the database itself, across processes too (the CLI appends
//! grant and token events to the database a running server appends reads and writes
//! to, and on PostgreSQL several nodes append): SQLite runs each append in a
//! `BEGIN IMMEDIATE` transaction, which takes the write lock before the last hash is
//! read; PostgreSQL takes a transaction-scoped advisory lock first. Either way no two
//! appends can chain from the same entry. Within one server process, SQLite appends
//! go through the group writer (`store::group`), which chains a batch's entries in one
//! transaction in queue order.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::tx::{Engine, TxMemo};
use super::{with_pool, Store};
use crate::audit::{
    AuditAction, AuditAnchor, AuditEntry, AuditEvent, AuditReport, ChainCheck, StoredRow,
};
use crate::error::Error;

/// Rows per page when walking the chain: verification of millions of entries holds
/// one page at a time.
const PAGE: i64 = 1000;

const COLUMNS: &str =
    "seq, at_ms, user_id, device, document, partition, action, detail, prev_hash, hash";

/// The audit log: appending to the hash chain, verifying it, one document's entries
/// (`store.audit()`).
#[derive(Clone, Copy, Debug)]
pub struct Audit<'a>(&'a Store);

impl Store {
    /// The audit log view of this store.
    pub fn audit(&self) -> Audit<'_> {
        Audit(self)
    }
}

impl Audit<'_> {
    /// Appends one event to the audit log and returns it as recorded.
    pub async fn append(self, event: &AuditEvent) -> Result<AuditEntry, Error> {
        self.append_all(std::slice::from_ref(event))
            .await?
            .pop()
            .ok_or_else(|| Error::Corrupt("audit append recorded nothing".into()))
    }

    /// Appends several events in one transaction (all or none), in order.
    pub async fn append_many(self, events: &[AuditEvent]) -> Result<(), Error> {
        self.append_all(events).await.map(|_| ())
    }

    async fn append_all(self, events: &[AuditEvent]) -> Result<Vec<AuditEntry>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(writer) = self.0.writer() {
            // SQLite: the group writer commits them with whatever else is queued, in
            // its `BEGIN IMMEDIATE` transaction (one fsync for the batch).
            return writer.audit(events.to_vec()).await;
        }
        let shared = self.0.is_shared();
        // SQLite: IMMEDIATE takes the write lock now, not at the INSERT. A deferred
        // transaction would read the head under a shared lock, and two of them could
        // chain from the same entry (or fail with SQLITE_BUSY when upgrading). Waiting
        // is bounded by the pool's busy_timeout. Dropping `tx` before the commit rolls
        // back.
        let out = with_pool!(self.0.pool(), p => {
            let mut tx = if shared {
                p.begin().await?
            } else {
                p.begin_with("BEGIN IMMEDIATE").await?
            };
            let out = Engine::append_audit(&mut tx, events, &mut TxMemo::default()).await?;
            tx.commit().await?;
            out
        });
        Ok(out)
    }

    /// Walks the whole chain in `seq` order and reports every problem it finds.
    /// Truncation of the newest entries needs an anchor: see
    /// [`verify_against`](Self::verify_against).
    pub async fn verify(self) -> Result<AuditReport, Error> {
        self.verify_against(None).await
    }

    /// As [`verify`](Self::verify), and also checks the chain against a
    /// head kept outside the database.
    pub async fn verify_against(self, anchor: Option<&AuditAnchor>) -> Result<AuditReport, Error> {
        let mut check = ChainCheck::new(anchor.cloned());
        // One read transaction: every page comes from the same snapshot (readers do
        // not block the appenders).
        let shared = self.0.is_shared();
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
        with_pool!(self.0.pool(), p => {
            let mut tx = if shared {
                p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?
            } else {
                p.begin().await?
            };
            let mut after = i64::MIN;
            loop {
                let rows = sqlx::query(&sql)
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut *tx)
                    .await?;
                for row in &rows {
                    // seq is the key: always an integer.
                    let seq: i64 = row.try_get("seq")?;
                    check.push(seq, stored_row(row));
                    after = seq;
                }
                if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                    break;
                }
            }
            tx.commit().await?;
        });
        Ok(check.finish())
    }

    /// One document's entries in `seq` order, with those of its hand-over copies, live
    /// or erased (a consulent reads a plan through its copy): "who looked at my file".
    pub async fn for_document(self, doc: &str) -> Result<Vec<AuditEntry>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE document IN (
                 SELECT $1
                 UNION SELECT id FROM documents WHERE handover_of = $1
                 UNION SELECT doc_id FROM tombstones WHERE handover_of = $1)
             ORDER BY seq"
        );
        with_pool!(self.0.pool(), p => {
            let rows = sqlx::query(&sql).bind(doc).fetch_all(p).await?;
            rows.iter()
                .map(|row| entry(row.try_get("seq")?, stored_row(row)))
                .collect()
        })
    }
}

/// A row for verification: every column read as its declared type, or the reason not.
fn stored_row<R>(row: &R) -> Result<StoredRow, String>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn col<'r, R, T>(row: &'r R, name: &str) -> Result<T, String>
    where
        R: Row,
        for<'a> &'a str: ColumnIndex<R>,
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        row.try_get(name).map_err(|_| format!("column {name}"))
    }
    Ok(StoredRow {
        at_ms: col(row, "at_ms")?,
        user_id: col(row, "user_id")?,
        device: col(row, "device")?,
        document: col(row, "document")?,
        partition: col(row, "partition")?,
        action: col(row, "action")?,
        detail: col(row, "detail")?,
        prev_hash: col(row, "prev_hash")?,
        hash: col(row, "hash")?,
    })
}

/// A row (its `seq` and [`stored_row`]'s reading) as an entry; a row that does not
/// read back is corrupt.
fn entry(seq: i64, stored: Result<StoredRow, String>) -> Result<AuditEntry, Error> {
    let stored =
        stored.map_err(|what| Error::Corrupt(format!("audit entry {seq}: unreadable {what}")))?;
    let action: AuditAction = stored.action.parse().map_err(|_| {
        Error::Corrupt(format!(
            "audit entry {seq}: unknown action {:?}",
            stored.action
        ))
    })?;
    Ok(AuditEntry {
        seq,
        at_ms: stored.at_ms,
        event: AuditEvent {
            user_id: stored.user_id,
            device: stored.device,
            document: stored.document,
            partition: stored.partition,
            action,
            detail: stored.detail,
        },
        prev_hash: hex::encode(stored.prev_hash),
        hash: hex::encode(stored.hash),
    })
}
