//! The store's writes inside a transaction, as functions written once for both engines.
//!
//! [`Engine`] bundles the sqlx bounds a write needs (a `&mut` connection that executes
//! queries, and the types we bind and read) and is implemented for SQLite and
//! PostgreSQL; its provided methods are the transaction steps: the next change number,
//! marking a document changed, writing a commit's provenance (change authors, the
//! hand-over flag, audit entries), appending to the audit hash chain, and appending a
//! chunk. The SQLite group writer (`group`) and the PostgreSQL path (`documents`)
//! call the same [`Engine::append_chunk`]; the callers own `BEGIN` and `COMMIT`.
//!
//! Lock order on PostgreSQL, in every transaction that takes more than one: the
//! document's advisory lock, then the writer's token row (shared), then the audit
//! lock, then the change counter row.

use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use crate::audit::{entry_hash, AuditEntry, AuditEvent, GENESIS};
use crate::error::Error;

/// Seconds since the Unix epoch, the unit of every time column.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, the unit of `audit_log.at_ms`.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The PostgreSQL advisory lock that serialises audit appends across nodes ("buurtsyn").
pub(crate) const AUDIT_LOCK: i64 = 0x6275_7572_7473_796e;
/// The PostgreSQL channel of change notifications between nodes.
pub(crate) const CHANNEL: &str = "buurtsync_changes";
/// Sends one notification (inside the committing transaction).
pub(crate) const NOTIFY: &str = "SELECT pg_notify($1, $2)";
/// A document's advisory lock in shared mode (appends; compaction takes it exclusively).
pub(crate) const LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1)";

pub(crate) const INSERT_CHUNK: &str =
    "INSERT INTO chunks (doc_id, kind, hash, data, created_at) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (doc_id, hash) DO NOTHING RETURNING seq";
/// After an append: the document's change number and time, and its committed heads:
/// the new heads if they were the heads the writer started from, else unknown
/// (another node appended meanwhile). One statement (see [`Engine::mark_changed`]).
pub(crate) const MARK_APPENDED: &str = "UPDATE documents SET change_seq = $1, updated_at = $2,
     heads = CASE WHEN heads = $3 THEN $4 ELSE NULL END WHERE id = $5";
/// The store-wide change counter's next number.
pub(crate) const NEXT_CHANGE_SEQ: &str =
    "UPDATE change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq";
/// A token that is live now (`$2`); SQLite (PostgreSQL adds `FOR SHARE`).
pub(crate) const TOKEN_LIVE: &str =
    "SELECT CAST(1 AS BIGINT) FROM tokens WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2";
/// The start of the change authors' multi-row insert ([`multi_row`], 5 columns).
pub(crate) const INSERT_AUTHORS: &str =
    "INSERT INTO change_authors (doc_id, change_hash, user_id, device, at)";
/// What follows the authors' rows: a change delivered again keeps its first author.
pub(crate) const AUTHORS_CONFLICT: &str = " ON CONFLICT DO NOTHING";
/// A plan's hand-over flag; a flip moves `access_changed_at`, so incremental listings
/// report it.
pub(crate) const SET_HANDED_OVER: &str =
    "UPDATE documents SET handed_over = $1, access_changed_at = $3 WHERE id = $2 AND handed_over <> $1";
/// The start of the audit log's multi-row insert ([`multi_row`], 10 columns).
pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (seq, at_ms, user_id, device, document, partition, action, detail, prev_hash, hash)";
/// SQLite: the newest audit entry, and the highest seq ever handed out. CASTs: a row
/// tampered into other types must not stop new entries being written; verification
/// reports it.
pub(crate) const SQLITE_AUDIT_LAST: &str =
    "SELECT seq, CAST(hash AS BLOB) FROM audit_log ORDER BY seq DESC LIMIT 1";
pub(crate) const SQLITE_AUDIT_ISSUED: &str =
    "SELECT CAST(seq AS INTEGER) FROM sqlite_sequence WHERE name = 'audit_log'";

/// Rows per multi-row `INSERT`: far below SQLite's 32,766 bound parameters (an audit
/// row binds 10).
pub(crate) const ROWS_PER_INSERT: usize = 256;

/// `insert` followed by ` VALUES ($1, …), (…), …` for `rows` rows of `columns`
/// parameters each (placeholders both engines read).
pub(crate) fn multi_row(insert: &str, columns: usize, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(insert.len() + 8 + rows * columns * 5);
    sql.push_str(insert);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            let sep = if column == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}", row * columns + column + 1);
        }
        sql.push(')');
    }
    sql
}

/// What one transaction has read or written already, so its later steps need not ask
/// the database again: the audit chain's tail after the transaction's last append, and
/// the tokens found live in it. The SQLite group writer keeps one per batch across its
/// jobs (each statement is a round trip to sqlx's worker thread); a job rolled back to
/// its savepoint puts back the memo it started with. Valid only inside the
/// transaction that filled it: it holds the write lock (SQLite) or the audit lock and
/// the tokens' `FOR SHARE` row locks (PostgreSQL), so nothing it records can change
/// under it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TxMemo {
    /// (seq, hash) of the newest audit entry this transaction appended.
    pub(crate) audit_tail: Option<Tail>,
    /// Tokens this transaction found live.
    pub(crate) live_tokens: Vec<String>,
}

/// One audit entry ready to insert: (seq, at_ms, event, prev_hash, hash).
pub(crate) type ChainRow<'e> = (i64, i64, &'e AuditEvent, Vec<u8>, Vec<u8>);
/// The audit chain's tail: the newest entry's seq and hash.
pub(crate) type Tail = (i64, Vec<u8>);

/// Chains `events` after the entry (`seq`, `prev_hash`): each gets the next seq, the
/// time now and its hash over the previous one. Returns the rows to insert and the new
/// tail. The one place audit entries are numbered and hashed (both engines, and
/// SQLite's group writer).
pub(crate) fn chain(
    events: &[AuditEvent],
    (mut seq, mut prev_hash): Tail,
) -> Result<(Vec<ChainRow<'_>>, Tail), Error> {
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| Error::Corrupt("audit log seq overflow".into()))?;
        let at_ms = now_ms();
        let hash = entry_hash(&prev_hash, &event.hashed(seq, at_ms)).to_vec();
        let prev = std::mem::replace(&mut prev_hash, hash.clone());
        rows.push((seq, at_ms, event, prev, hash));
    }
    Ok((rows, (seq, prev_hash)))
}

/// The entries as recorded, from [`chain`]'s rows.
pub(crate) fn recorded(rows: Vec<ChainRow<'_>>) -> Vec<AuditEntry> {
    rows.into_iter()
        .map(|(seq, at_ms, event, prev, hash)| AuditEntry {
            seq,
            at_ms,
            event: event.clone(),
            prev_hash: hex::encode(prev),
            hash: hex::encode(hash),
        })
        .collect()
}

/// The audit tail from the newest entry (`last`: seq and hash, if any) and the highest
/// seq ever handed out (`issued`): a gap after a truncation stays visible to
/// verification.
pub(crate) fn tail_of(last: Option<(i64, Option<Vec<u8>>)>, issued: Option<i64>) -> Tail {
    let (last_seq, prev_hash) = match last {
        Some((seq, hash)) => (seq, hash.unwrap_or_default()),
        None => (0, GENESIS.to_vec()),
    };
    (last_seq.max(issued.unwrap_or(0)), prev_hash)
}

/// What a commit records beside its chunk, in the same transaction: who delivered
/// which changes (author binding), the audit events of the write, and the hand-over
/// flag when the commit moves it. Empty: nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Provenance<'a> {
    /// Hashes of the changes the commit adds.
    pub changes: &'a [String],
    /// (user, device) that delivered them; `None` records no authors.
    pub author: Option<(&'a str, &'a str)>,
    pub audit: &'a [AuditEvent],
    /// A plan's hand-over flag as the commit leaves it, when the commit changes it:
    /// the catalog's `handed_over` moves in the same transaction as the change.
    pub handed_over: Option<bool>,
    /// The token the changes came with: the commit stores nothing unless it is still
    /// live (not revoked, not expired) inside this transaction, so a write committed
    /// after `token revoke` returned is impossible. `None`: no token (CLI, tests).
    pub token: Option<&'a str>,
}

/// [`Provenance`] owned: what a chunk append waiting in the group writer's queue
/// (`store::group`) records beside its chunk.
#[derive(Debug, Clone, Default)]
pub struct OwnedProvenance {
    pub changes: Vec<String>,
    pub author: Option<(String, String)>,
    pub audit: Vec<AuditEvent>,
    pub handed_over: Option<bool>,
    pub token: Option<String>,
}

impl OwnedProvenance {
    pub fn borrowed(&self) -> Provenance<'_> {
        Provenance {
            changes: &self.changes,
            author: self
                .author
                .as_ref()
                .map(|(user, device)| (user.as_str(), device.as_str())),
            audit: &self.audit,
            handed_over: self.handed_over,
            token: self.token.as_deref(),
        }
    }
}

impl From<&Provenance<'_>> for OwnedProvenance {
    fn from(prov: &Provenance<'_>) -> Self {
        OwnedProvenance {
            changes: prov.changes.to_vec(),
            author: prov
                .author
                .map(|(user, device)| (user.to_owned(), device.to_owned())),
            audit: prov.audit.to_vec(),
            handed_over: prov.handed_over,
            token: prov.token.map(str::to_owned),
        }
    }
}

/// One sealed chunk to append with its provenance.
#[derive(Debug)]
pub(crate) struct ChunkAppend {
    pub doc: String,
    /// Content hash (keyed) and sealed bytes, as `documents::sealed` made them.
    pub hash: Vec<u8>,
    pub data: Vec<u8>,
    /// The catalog's committed heads become `heads` only if they were `base` (see
    /// `Documents::append_chunk_with`), as text (`heads_text`).
    pub base: Option<String>,
    pub heads: String,
    pub prov: OwnedProvenance,
}

/// A database engine the store writes to, with the sqlx bounds its transaction steps
/// need; the provided methods are those steps, written once. `tx` is an open
/// transaction (or savepoint); its type names the engine, so callers write
/// `Engine::mark_changed(&mut tx, doc)` on either.
#[allow(async_fn_in_trait)]
pub(crate) trait Engine: Database + Sized
where
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    for<'q> Self::Arguments<'q>: IntoArguments<'q, Self>,
    for<'q> i64: Encode<'q, Self> + Decode<'q, Self> + Type<Self>,
    for<'q> bool: Encode<'q, Self> + Type<Self>,
    for<'q> &'q str: Encode<'q, Self> + Type<Self>,
    for<'q> Option<&'q str>: Encode<'q, Self> + Type<Self>,
    for<'q> &'q [u8]: Encode<'q, Self> + Type<Self>,
    for<'q> Vec<u8>: Decode<'q, Self> + Type<Self>,
    usize: ColumnIndex<Self::Row>,
{
    /// PostgreSQL: several nodes share the database, so writes take advisory locks
    /// and commits notify the other nodes.
    const SHARED: bool;

    /// Takes the next number of the store-wide change counter (the central feed's
    /// cursor), after every other contended lock of the transaction, so numbers are
    /// handed out in commit order and a feed cursor never skips a commit. SQLite has
    /// one writer at a time. PostgreSQL: the `UPDATE` holds the counter row's lock
    /// until the commit, so a concurrent transaction gets its number (the next one)
    /// only after this one is visible. Nothing else is locked after it (no deadlock).
    async fn next_change_seq(tx: &mut Transaction<'_, Self>) -> Result<i64, Error> {
        let seq: i64 = sqlx::query_scalar(NEXT_CHANGE_SEQ)
            .fetch_one(&mut **tx)
            .await?;
        Ok(seq)
    }

    /// Gives document `doc` the next change number and the current time as
    /// `updated_at` (see [`next_change_seq`](Self::next_change_seq)).
    async fn mark_changed(tx: &mut Transaction<'_, Self>, doc: &str) -> Result<(), Error> {
        let seq = Self::next_change_seq(tx).await?;
        sqlx::query("UPDATE documents SET change_seq = $1, updated_at = $2 WHERE id = $3")
            .bind(seq)
            .bind(now())
            .bind(doc)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Refuses (`Unauthorized`) unless `token` is live: read inside the committing
    /// transaction. SQLite: the transaction holds the write lock, so a revocation
    /// either committed before (seen here) or waits for this commit. PostgreSQL:
    /// `FOR SHARE` makes a concurrent revocation wait for this commit likewise.
    async fn require_live_token(
        tx: &mut Transaction<'_, Self>,
        token: &str,
        memo: &mut TxMemo,
    ) -> Result<(), Error> {
        if memo.live_tokens.iter().any(|live| live == token) {
            return Ok(());
        }
        let sql = if Self::SHARED {
            std::borrow::Cow::Owned(format!("{TOKEN_LIVE} FOR SHARE"))
        } else {
            std::borrow::Cow::Borrowed(TOKEN_LIVE)
        };
        let live: Option<i64> = sqlx::query_scalar(&sql)
            .bind(token)
            .bind(now())
            .fetch_optional(&mut **tx)
            .await?;
        live.ok_or(Error::Unauthorized)?;
        memo.live_tokens.push(token.to_owned());
        Ok(())
    }

    /// Writes `prov`: first the token's liveness check, then change authors (one
    /// multi-row insert), the hand-over flag, then the audit events (PostgreSQL: under
    /// the audit lock, so before the change counter).
    async fn write_provenance(
        tx: &mut Transaction<'_, Self>,
        doc: &str,
        prov: &Provenance<'_>,
        memo: &mut TxMemo,
    ) -> Result<(), Error> {
        if let Some(token) = prov.token {
            Self::require_live_token(tx, token, memo).await?;
        }
        if let Some((user, device)) = prov.author {
            let at = now();
            for hashes in prov.changes.chunks(ROWS_PER_INSERT) {
                let sql = multi_row(INSERT_AUTHORS, 5, hashes.len()) + AUTHORS_CONFLICT;
                let mut insert = sqlx::query(&sql);
                for hash in hashes {
                    insert = insert
                        .bind(doc)
                        .bind(hash.as_str())
                        .bind(user)
                        .bind(device)
                        .bind(at);
                }
                insert.execute(&mut **tx).await?;
            }
        }
        if let Some(handed_over) = prov.handed_over {
            sqlx::query(SET_HANDED_OVER)
                .bind(handed_over)
                .bind(doc)
                .bind(now())
                .execute(&mut **tx)
                .await?;
        }
        if !prov.audit.is_empty() {
            Self::append_audit(tx, prov.audit, memo).await?;
        }
        Ok(())
    }

    /// Appends `events` to the audit hash chain and returns the entries as recorded,
    /// in multi-row inserts. The chain's tail is read once per transaction (then kept
    /// in `memo`). SQLite: the transaction began `IMMEDIATE` (the write lock is held
    /// before the last hash is read). PostgreSQL: the audit advisory lock is taken
    /// first.
    async fn append_audit(
        tx: &mut Transaction<'_, Self>,
        events: &[AuditEvent],
        memo: &mut TxMemo,
    ) -> Result<Vec<AuditEntry>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let start = match memo.audit_tail.take() {
            Some(tail) => tail,
            None => Self::audit_tail(tx).await?,
        };
        let (rows, tail) = chain(events, start)?;
        for some in rows.chunks(ROWS_PER_INSERT) {
            let sql = multi_row(INSERT_AUDIT, 10, some.len());
            let mut insert = sqlx::query(&sql);
            for (seq, at_ms, event, prev, hash) in some {
                insert = insert
                    .bind(*seq)
                    .bind(*at_ms)
                    .bind(event.user_id.as_str())
                    .bind(event.device.as_str())
                    .bind(event.document.as_deref())
                    .bind(event.partition.as_deref())
                    .bind(event.action.as_str())
                    .bind(event.detail.as_str())
                    .bind(&prev[..])
                    .bind(&hash[..]);
            }
            insert.execute(&mut **tx).await?;
        }
        let seq = tail.0;
        if Self::SHARED {
            sqlx::query("UPDATE audit_issued SET issued = $1 WHERE id = 1")
                .bind(seq)
                .execute(&mut **tx)
                .await?;
        }
        memo.audit_tail = Some(tail);
        Ok(recorded(rows))
    }

    /// The audit chain's tail as this transaction starts appending: the highest seq
    /// ever handed out (even if its row is gone: the first append after a truncation
    /// then leaves a gap that verification sees) and the newest entry's hash
    /// (PostgreSQL: after taking the audit lock).
    async fn audit_tail(tx: &mut Transaction<'_, Self>) -> Result<Tail, Error> {
        let (last_sql, issued_sql) = if Self::SHARED {
            (
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                "SELECT issued FROM audit_issued WHERE id = 1",
            )
        } else {
            (SQLITE_AUDIT_LAST, SQLITE_AUDIT_ISSUED)
        };
        if Self::SHARED {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        let last: Option<(i64, Option<Vec<u8>>)> =
            sqlx::query_as(last_sql).fetch_optional(&mut **tx).await?;
        let issued: Option<Option<i64>> = sqlx::query_scalar(issued_sql)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(tail_of(last, issued.flatten()))
    }

    /// Inserts one sealed chunk; its seq, or `None` when the chunk is stored already
    /// (chunk keys are content hashes).
    async fn insert_chunk(
        tx: &mut Transaction<'_, Self>,
        doc: &str,
        kind: &str,
        hash: &[u8],
        data: &[u8],
    ) -> Result<Option<i64>, Error> {
        let seq: Option<i64> = sqlx::query_scalar(INSERT_CHUNK)
            .bind(doc)
            .bind(kind)
            .bind(hash)
            .bind(data)
            .bind(now())
            .fetch_optional(&mut **tx)
            .await?;
        Ok(seq)
    }

    /// Appends one incremental chunk with its provenance and, when the chunk is new,
    /// the document's next change number and committed heads (and, on PostgreSQL,
    /// the notice `note` to the other nodes). PostgreSQL: under the document's shared
    /// advisory lock `lock`. The one chunk append of both engines.
    async fn append_chunk(
        tx: &mut Transaction<'_, Self>,
        job: &ChunkAppend,
        lock: i64,
        note: &str,
        memo: &mut TxMemo,
    ) -> Result<Option<i64>, Error> {
        if Self::SHARED {
            sqlx::query(LOCK_SHARED)
                .bind(lock)
                .execute(&mut **tx)
                .await?;
        }
        let seq = Self::insert_chunk(tx, &job.doc, "incremental", &job.hash, &job.data).await?;
        Self::write_provenance(tx, &job.doc, &job.prov.borrowed(), memo).await?;
        // A chunk stored already changes nothing: no change number, no new heads.
        if seq.is_some() {
            let change_seq = Self::next_change_seq(tx).await?;
            sqlx::query(MARK_APPENDED)
                .bind(change_seq)
                .bind(now())
                .bind(job.base.as_deref())
                .bind(job.heads.as_str())
                .bind(job.doc.as_str())
                .execute(&mut **tx)
                .await?;
            if Self::SHARED {
                sqlx::query(NOTIFY)
                    .bind(CHANNEL)
                    .bind(note)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(seq)
    }
}

impl Engine for Sqlite {
    const SHARED: bool = false;
}

impl Engine for Postgres {
    const SHARED: bool = true;
}

#[cfg(test)]
mod tests {
    use super::multi_row;

    #[test]
    fn multi_row_numbers_every_placeholder_once_in_order() {
        assert_eq!(
            multi_row("INSERT INTO t (a, b)", 2, 3),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6)"
        );
        assert_eq!(
            multi_row("INSERT INTO t (a)", 1, 1),
            "INSERT INTO t (a) VALUES ($1)"
        );
    }
}
