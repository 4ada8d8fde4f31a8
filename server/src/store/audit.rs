//! The audit log's SQL: appending to the hash chain, walking it, and one document's
//! entries. What the chain is and what it proves is in `crate::audit`.
//!
//! Appends are serialised by SQLite itself, across processes too (the CLI appends grant
//! and token events to the file a running server appends reads and writes to): each
//! append runs in a `BEGIN IMMEDIATE` transaction, which takes the write lock before
//! the last hash is read, so no two appends can chain from the same entry.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::Store;
use crate::audit::{
    entry_hash, AuditAction, AuditAnchor, AuditEntry, AuditEvent, AuditReport, ChainCheck,
    HashedFields, StoredRow, GENESIS,
};
use crate::error::Error;

/// Rows per page when walking the chain: verification of millions of entries holds
/// one page at a time.
const PAGE: i64 = 1000;

const COLUMNS: &str =
    "seq, at_ms, user_id, device, document, partition, action, detail, prev_hash, hash";

/// Milliseconds since the Unix epoch, the unit of `audit_log.at_ms`.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Appends one event to the audit log and returns it as recorded.
    pub async fn audit(&self, event: &AuditEvent) -> Result<AuditEntry, Error> {
        self.append_audit(std::slice::from_ref(event))
            .await?
            .pop()
            .ok_or_else(|| Error::Corrupt("audit append recorded nothing".into()))
    }

    /// Appends several events in one transaction (all or none), in order.
    pub async fn audit_many(&self, events: &[AuditEvent]) -> Result<(), Error> {
        self.append_audit(events).await.map(|_| ())
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<Vec<AuditEntry>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // IMMEDIATE: take the write lock now, not at the INSERT. A deferred transaction
        // would read the head under a shared lock, and two of them could chain from the
        // same entry (or fail with SQLITE_BUSY when upgrading). Waiting for the lock is
        // bounded by the pool's busy_timeout. Dropping `tx` before the commit (an error,
        // a cancelled future) rolls back.
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        // CASTs: a row tampered into other types must not stop new entries being
        // written; verification reports it.
        let last: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT seq, CAST(hash AS BLOB) FROM audit_log ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        // The highest seq ever handed out, even if its row is gone: the first append
        // after a truncation then leaves a gap that verification sees.
        let issued: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT CAST(seq AS INTEGER) FROM sqlite_sequence WHERE name = 'audit_log'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let (last_seq, mut prev_hash) = match last {
            Some((seq, hash)) => (seq, hash.unwrap_or_default()),
            None => (0, GENESIS.to_vec()),
        };
        let mut seq = last_seq.max(issued.flatten().unwrap_or(0));
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            seq = seq
                .checked_add(1)
                .ok_or_else(|| Error::Corrupt("audit log seq overflow".into()))?;
            let at_ms = now_ms();
            let action = event.action.as_str();
            let hash = entry_hash(
                &prev_hash,
                &HashedFields {
                    seq,
                    at_ms,
                    user_id: &event.user_id,
                    device: &event.device,
                    document: event.document.as_deref(),
                    partition: event.partition.as_deref(),
                    action,
                    detail: &event.detail,
                },
            );
            sqlx::query(
                "INSERT INTO audit_log (seq, at_ms, user_id, device, document, partition, action, detail, prev_hash, hash) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(seq)
            .bind(at_ms)
            .bind(&event.user_id)
            .bind(&event.device)
            .bind(event.document.as_deref())
            .bind(event.partition.as_deref())
            .bind(action)
            .bind(&event.detail)
            .bind(&prev_hash[..])
            .bind(&hash[..])
            .execute(&mut *tx)
            .await?;
            out.push(AuditEntry {
                seq,
                at_ms,
                user_id: event.user_id.clone(),
                device: event.device.clone(),
                document: event.document.clone(),
                partition: event.partition.clone(),
                action: event.action,
                detail: event.detail.clone(),
                prev_hash: hex::encode(&prev_hash),
                hash: hex::encode(hash),
            });
            prev_hash = hash.to_vec();
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Walks the whole chain in `seq` order and reports every problem it finds.
    /// Truncation of the newest entries needs an anchor: see
    /// [`audit_verify_against`](Self::audit_verify_against).
    pub async fn audit_verify(&self) -> Result<AuditReport, Error> {
        self.audit_verify_against(None).await
    }

    /// As [`audit_verify`](Self::audit_verify), and also checks the chain against a
    /// head kept outside the database.
    pub async fn audit_verify_against(
        &self,
        anchor: Option<&AuditAnchor>,
    ) -> Result<AuditReport, Error> {
        let mut check = ChainCheck::new(anchor.cloned());
        // One read transaction: every page comes from the same snapshot (WAL readers
        // do not block the appenders).
        let mut tx = self.pool().begin().await?;
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?");
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                // seq is the rowid: always an integer.
                let seq: i64 = row.try_get("seq")?;
                check.push(seq, stored_row(row));
                after = seq;
            }
            if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        tx.commit().await?;
        Ok(check.finish())
    }

    /// One document's entries in `seq` order: "who looked at my file".
    pub async fn audit_for_document(&self, doc: &str) -> Result<Vec<AuditEntry>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE document = ? ORDER BY seq"
        ))
        .bind(doc)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry).collect()
    }
}

/// A row for verification: every column read as its declared type, or the reason not.
fn stored_row(row: &SqliteRow) -> Result<StoredRow, String> {
    fn col<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T, String>
    where
        T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
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

/// A row as an entry; a row that does not read back is corrupt.
fn entry(row: &SqliteRow) -> Result<AuditEntry, Error> {
    let seq: i64 = row.try_get("seq")?;
    let stored = stored_row(row)
        .map_err(|what| Error::Corrupt(format!("audit entry {seq}: unreadable {what}")))?;
    let action: AuditAction = stored.action.parse().map_err(|_| {
        Error::Corrupt(format!(
            "audit entry {seq}: unknown action {:?}",
            stored.action
        ))
    })?;
    Ok(AuditEntry {
        seq,
        at_ms: stored.at_ms,
        user_id: stored.user_id,
        device: stored.device,
        document: stored.document,
        partition: stored.partition,
        action,
        detail: stored.detail,
        prev_hash: hex::encode(stored.prev_hash),
        hash: hex::encode(stored.hash),
    })
}
