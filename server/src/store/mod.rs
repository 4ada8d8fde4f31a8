//! The server store: SQLite through sqlx, with migrations.
//!
//! `Store` is a cheap clone around a connection pool. Accounts (wijken, users, grants,
//! tokens) live in `accounts`, documents (catalog, chunks, sync states) in `documents`,
//! the audit log's hash chain in `audit`, online backup and restore in `backup`.
//! Nothing above this module writes SQL.

pub mod accounts;
pub mod audit;
pub mod backup;
pub mod crypto;
pub mod documents;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::error::Error;

pub use accounts::{TokenInfo, UserInfo};
pub use documents::{CatalogEntry, StoredDocument};

/// Handle to the database; clone freely.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The key store: per-document keys in a database file of its own, so backups of
    /// the main database never hold them (see `crypto`).
    keys: SqlitePool,
}

/// Seconds since the Unix epoch, the unit of every time column.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The file path of a `sqlite://PATH` URL.
pub fn sqlite_path(url: &str) -> Result<&str, Error> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            Error::Config(format!(
                "unsupported database URL {url:?}: use sqlite://PATH"
            ))
        })?;
    if path.is_empty() {
        return Err(Error::Config("empty database path".into()));
    }
    Ok(path)
}

/// The key store path: `keys` if given, else `<database path>.keys`.
pub fn keys_path(db_path: &str, keys: Option<&str>) -> String {
    keys.map_or_else(|| format!("{db_path}.keys"), str::to_owned)
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`) and runs the
    /// migrations. WAL mode with `synchronous=FULL`: a commit that returned is on disk,
    /// which is what lets us acknowledge changes after commit.
    pub async fn open(url: &str) -> Result<Store, Error> {
        Store::open_with_keys(url, None).await
    }

    /// As [`open`](Self::open), with the key store at `keys_path` instead of the
    /// default `<database path>.keys`.
    pub async fn open_with_keys(url: &str, keys_path: Option<&str>) -> Result<Store, Error> {
        let path = sqlite_path(url)?;
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() && path != ":memory:" {
                std::fs::create_dir_all(dir)?;
            }
        }
        let pool = sqlite_pool(path, url).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let keys_path = self::keys_path(path, keys_path);
        let keys = sqlite_pool(&keys_path, &keys_path).await?;
        sqlx::migrate!("./migrations/keys").run(&keys).await?;
        let store = Store { pool, keys };
        store.ensure_identity().await?;
        Ok(store)
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn keys(&self) -> &SqlitePool {
        &self.keys
    }

    /// Creates the store's storageId on first open.
    async fn ensure_identity(&self) -> Result<(), Error> {
        let storage_id = uuid_like();
        sqlx::query(
            "INSERT OR IGNORE INTO server_info (id, storage_id, created_at) VALUES (1, ?, ?)",
        )
        .bind(storage_id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// This store's automerge-repo storageId; stable for the life of the database.
    pub async fn storage_id(&self) -> Result<String, Error> {
        let id: String = sqlx::query_scalar("SELECT storage_id FROM server_info WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    /// Is the database reachable? For `/healthz`.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.keys.close().await;
    }
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
/// foreign keys on.
async fn sqlite_pool(path: &str, shown: &str) -> Result<SqlitePool, Error> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .map_err(|e| Error::Config(format!("database {shown:?}: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?)
}

/// A random id in UUID spelling, from the OS random source.
pub fn uuid_like() -> String {
    let b = crate::auth::random_bytes::<16>();
    format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}
