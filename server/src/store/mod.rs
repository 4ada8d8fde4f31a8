//! The server store: sqlx on SQLite (one file, the embedded default) or PostgreSQL
//! (several relay nodes sharing one database), chosen by the database URL.
//!
//! `Store` is a cheap clone around two connection pools: the main database and the key
//! store (`crypto`). Accounts (wijken, users, grants, tokens) live in `accounts`,
//! documents (catalog, chunks, sync states) in `documents`, the audit log's hash chain
//! in `audit`, the PostgreSQL change feed between nodes in `changes`, the central
//! office's change-number feed and pseudonym secret in `central`, the batched catalog
//! facts of a connect-time summary in `summary`, online backup and restore of a
//! SQLite store in `backup` (PostgreSQL: pg_dump/PITR, docs/operations.md), the
//! erasure journal and the shredding of an erasure's remains in `erasures`,
//! SQLite's group commit of chunk and audit appends in `group`, the document
//! listing's index-served catalog queries in `listing`, and the central office's
//! release memory (a view: `store.releases()`) in `releases`.
//! Nothing above this module writes SQL.
//!
//! Why an enum of backends and not `sqlx::Any` or a trait: each query is written once,
//! with `$N` parameters that both drivers accept, and [`with_pool!`] expands it for each
//! native pool, so it is type-checked against both drivers and decodes native types
//! (SQLite's integer booleans, PostgreSQL's `BOOLEAN`/`BYTEA`). The few places where the
//! engines really differ (audit serialisation, advisory locks, `LISTEN/NOTIFY`, the
//! key store's shredding) are a visible `match` on [`Pool`], not hidden in a trait.
//! `sqlx::Any` would hide both: it has no `PgListener`, and it converts every value.

pub mod accounts;
pub mod audit;
pub mod backup;
pub mod central;
pub mod changes;
pub mod crypto;
pub mod documents;
pub mod erasures;
pub mod group;
pub mod identity;
pub mod listing;
pub mod releases;
pub mod summary;
pub mod sync_states;
pub mod tx;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::error::Error;

pub use accounts::{Accounts, TokenInfo, UserInfo};
pub use audit::Audit;
pub use changes::RemoteChange;
pub use documents::{heads_text, CatalogEntry, StoredDocument};
pub use group::GroupStats;
pub use summary::SummaryFacts;
pub use tx::{now, OwnedProvenance, Provenance};

/// One database, on either engine.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on whichever engine `$pool` is: `with_pool!(pool, p => expr)`
/// expands `expr` once per engine with `p` bound to the native pool, so one SQL text
/// (with `$1`, `$2`, … parameters, which both drivers accept) serves both.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Handle to the database; clone freely.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// The key store: per-document keys kept apart from the main database, so backups
    /// of it never hold them (see `crypto`). SQLite: a file of its own. PostgreSQL:
    /// the schema `buurtsync_keys`, or a database of its own given by `--keys`.
    keys: Pool,
    /// This process's id in change notifications, so a node skips its own.
    node: String,
    /// SQLite: the group writer every chunk append and audit append goes through (one
    /// transaction and one fsync for whatever is queued). PostgreSQL: none.
    writer: Option<Arc<group::GroupWriter>>,
}

/// The file path of a `sqlite://PATH` URL. A PostgreSQL URL gets a clear error: file
/// operations (backup, restore, `config check`'s key path) apply to SQLite only.
pub fn sqlite_path(url: &str) -> Result<&str, Error> {
    if is_postgres_url(url) {
        return Err(Error::Config(
            "this is a PostgreSQL database: back it up with pg_dump or point-in-time \
             recovery (see docs/operations.md, \"Backup and restore\"); \
             buurtsync backup/restore handle SQLite files only"
                .into(),
        ));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            Error::Config(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://…"
            ))
        })?;
    if path.is_empty() {
        return Err(Error::Config("empty database path".into()));
    }
    Ok(path)
}

/// The SQLite key store path: `keys` if given, else `<database path>.keys`.
pub fn keys_path(db_path: &str, keys: Option<&str>) -> String {
    keys.map_or_else(|| format!("{db_path}.keys"), str::to_owned)
}

/// Connections per node to PostgreSQL (see docs/operations.md for sizing).
pub const PG_POOL_SIZE: u32 = 16;
/// The PostgreSQL schema of the key store when `--keys` names no database of its own.
pub const PG_KEYS_SCHEMA: &str = "buurtsync_keys";

impl Store {
    /// Opens (creating if needed) the database at `url` and runs the migrations:
    /// `sqlite://PATH` or `postgres://…` (`postgresql://…`).
    ///
    /// SQLite runs in WAL mode with `synchronous=FULL`; PostgreSQL commits are durable
    /// with its defaults (`fsync`, `synchronous_commit=on`). Either way a commit that
    /// returned is on disk, which is what lets us acknowledge changes after commit.
    pub async fn open(url: &str) -> Result<Store, Error> {
        Store::open_with_keys(url, None).await
    }

    /// As [`open`](Self::open), with the key store at `keys` instead of the default:
    /// SQLite `<database path>.keys` (`keys` is a path), PostgreSQL the schema
    /// `buurtsync_keys` of the same database (`keys` is a `postgres://` URL of another
    /// database).
    pub async fn open_with_keys(url: &str, keys: Option<&str>) -> Result<Store, Error> {
        let (pool, keys) = if is_postgres_url(url) {
            open_postgres(url, keys).await?
        } else {
            open_sqlite(url, keys).await?
        };
        let writer = match &pool {
            Pool::Sqlite(_) => Some(Arc::new(group::GroupWriter::spawn(sqlite_path(url)?)?)),
            Pool::Postgres(_) => None,
        };
        let store = Store {
            pool,
            keys,
            node: uuid_like(),
            writer,
        };
        store.ensure_identity().await?;
        Ok(store)
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn keys(&self) -> &Pool {
        &self.keys
    }

    pub(crate) fn writer(&self) -> Option<&group::GroupWriter> {
        self.writer.as_deref()
    }

    /// How the group writer has batched this store's writes so far (SQLite; `None` on
    /// PostgreSQL, which commits each write in its own transaction).
    pub fn group_stats(&self) -> Option<GroupStats> {
        self.writer.as_ref().map(|w| w.stats())
    }

    /// Is this store shared by several nodes (PostgreSQL)?
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The engine's name, for logs and `/healthz`.
    pub fn engine(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Creates the store's storageId on first open (nodes starting together agree:
    /// the first insert wins).
    async fn ensure_identity(&self) -> Result<(), Error> {
        let storage_id = uuid_like();
        with_pool!(self.pool(), p => sqlx::query(
            "INSERT INTO server_info (id, storage_id, created_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(storage_id)
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// This store's automerge-repo storageId; stable for the life of the database and
    /// the same on every node.
    pub async fn storage_id(&self) -> Result<String, Error> {
        let id: String = with_pool!(self.pool(), p => sqlx::query_scalar("SELECT storage_id FROM server_info WHERE id = 1")
            .fetch_one(p)
            .await)?;
        Ok(id)
    }

    /// Is the database reachable? For `/healthz`.
    pub async fn ping(&self) -> Result<(), Error> {
        with_pool!(self.pool(), p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes the store: the group writer commits what is queued and stops (later
    /// writes fail), then the pools close.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        with_pool!(&self.pool, p => p.close().await);
        with_pool!(&self.keys, p => p.close().await);
    }
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

async fn open_sqlite(url: &str, keys: Option<&str>) -> Result<(Pool, Pool), Error> {
    let path = sqlite_path(url)?;
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() && path != ":memory:" {
            std::fs::create_dir_all(dir)?;
        }
    }
    let pool = sqlite_pool(path, url).await?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    let keys_path = keys_path(path, keys);
    if is_postgres_url(&keys_path) {
        return Err(Error::Config(
            "a SQLite database keeps its keys in a SQLite file: give --keys a path".into(),
        ));
    }
    let keys = sqlite_pool(&keys_path, &keys_path).await?;
    sqlx::migrate!("./migrations/keys").run(&keys).await?;
    Ok((Pool::Sqlite(pool), Pool::Sqlite(keys)))
}

async fn open_postgres(url: &str, keys: Option<&str>) -> Result<(Pool, Pool), Error> {
    let options =
        PgConnectOptions::from_str(url).map_err(|e| Error::Config(format!("database URL: {e}")))?;
    let pool = pg_pool(options.clone()).await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    let keys_options = match keys {
        Some(keys) if is_postgres_url(keys) => PgConnectOptions::from_str(keys)
            .map_err(|e| Error::Config(format!("key store URL: {e}")))?,
        Some(other) => {
            return Err(Error::Config(format!(
                "a PostgreSQL database keeps its keys in PostgreSQL: give --keys a postgres:// URL, not {other:?}"
            )))
        }
        None => {
            // Nodes starting together may race to create it; the loser's unique
            // violation means it exists.
            let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {PG_KEYS_SCHEMA}"))
                .execute(&pool)
                .await;
            match created {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
                other => {
                    other?;
                }
            }
            options.options([("search_path", PG_KEYS_SCHEMA)])
        }
    };
    let keys = pg_pool(keys_options).await?;
    sqlx::migrate!("./migrations/postgres_keys")
        .run(&keys)
        .await?;
    Ok((Pool::Postgres(pool), Pool::Postgres(keys)))
}

async fn pg_pool(options: PgConnectOptions) -> Result<PgPool, Error> {
    Ok(PgPoolOptions::new()
        .max_connections(PG_POOL_SIZE)
        .acquire_timeout(Duration::from_secs(10))
        .before_acquire(|conn, _| Box::pin(async move { Ok(outside_transaction(conn)) }))
        .connect_with(options)
        .await?)
}

/// Turns a unique-key violation into `Conflict` (with `what` as its message) and any
/// other database error into `Database`.
pub(crate) fn conflict_if_duplicate<T>(
    result: Result<T, sqlx::Error>,
    what: impl FnOnce() -> String,
) -> Result<T, Error> {
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::Conflict(what())),
        other => other.map_err(Error::from),
    }
}

/// A pool on one SQLite file: WAL, `synchronous=FULL` (a returned commit is on disk),
/// foreign keys on, `secure_delete` (deleted rows and freed pages are zeroed, so an
/// erased document's hashes and a destroyed key leave no remains: `erasures`).
async fn sqlite_pool(path: &str, shown: &str) -> Result<SqlitePool, Error> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .map_err(|e| Error::Config(format!("database {shown:?}: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .pragma("secure_delete", "ON")
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        .before_acquire(|conn, _| Box::pin(async move { Ok(outside_transaction(conn)) }))
        .connect_with(options)
        .await?)
}

/// Whether an idle pooled connection may be handed out: not if sqlx still counts it
/// inside a transaction. That happens after a COMMIT fails in a way that ends the
/// transaction in the database (SQLite rolls back by itself on a full disk): sqlx keeps
/// its depth, its queued ROLLBACK then fails ("no transaction is active"), and every
/// later `begin_with` on that connection would fail with "non-zero transaction depth".
/// sqlx pings an idle connection (flushing a queued rollback) before this check runs,
/// so a connection counted inside a transaction here is stuck; the pool closes it and
/// opens a fresh one.
fn outside_transaction<C: sqlx::Connection>(conn: &C) -> bool {
    if conn.is_in_transaction() {
        tracing::warn!(
            "a pooled database connection was left inside a transaction (a failed COMMIT?); \
             closing it"
        );
        return false;
    }
    true
}

/// A random id in UUID spelling, from the OS random source.
pub fn uuid_like() -> String {
    let b = crate::store::crypto::random_bytes::<16>();
    format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a COMMIT failing on a full disk leaves behind, made without a full disk:
    /// the transaction ends in SQLite while sqlx still counts it open. The next
    /// `BEGIN IMMEDIATE` from the pool must get a usable connection (before the
    /// `before_acquire` check it failed with "non-zero transaction depth").
    #[tokio::test]
    async fn a_connection_left_inside_a_transaction_is_not_handed_out_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pool.sqlite3");
        let path = path.to_str().expect("utf-8 path");
        let pool = sqlite_pool(path, path).await.expect("pool");
        sqlx::raw_sql("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .expect("create");
        {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut *tx)
                .await
                .expect("end the transaction behind sqlx's back");
            assert!(
                tx.commit().await.is_err(),
                "committing a transaction SQLite already ended must fail"
            );
        }
        for round in 0..3 {
            let mut tx = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .unwrap_or_else(|e| panic!("round {round}: begin after a failed commit: {e}"));
            sqlx::query("INSERT INTO t (x) VALUES ($1)")
                .bind(round)
                .execute(&mut *tx)
                .await
                .expect("insert");
            tx.commit().await.expect("commit");
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(n, 3, "every later transaction committed");
    }
}
