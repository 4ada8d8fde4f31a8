//! Online backup and restore of a SQLite store (a PostgreSQL store is backed up with
//! pg_dump or point-in-time recovery: docs/operations.md): the main database and the key store,
//! both needed to read any document.
//!
//! `VACUUM INTO` copies a database inside one read transaction, so the copy is a
//! consistent snapshot while the server keeps writing (WAL readers do not block
//! writers). The main database is copied first and the key store second: keys are
//! written before their document's catalog row, so every document in the copy has its
//! key in the key copy. (A document erased in between has lost its key in the copy
//! too, which is what erasure means.)

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Pool, Store};
use crate::error::Error;

/// What a backup or restore wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub database: PathBuf,
    pub keys: PathBuf,
    pub documents: u64,
    pub bytes: u64,
}

/// The key store file that belongs with a database backup file: `<file>.keys`.
pub fn keys_file_of(backup: &Path) -> PathBuf {
    let mut name = backup.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".partial-{}", std::process::id()));
    PathBuf::from(name)
}

impl Store {
    /// Writes a consistent copy of the database to `dest` and of the key store to
    /// `dest.keys`, while the server may be serving. Refuses to overwrite.
    pub async fn backup(&self, dest: &Path) -> Result<BackupReport, Error> {
        let (Pool::Sqlite(main), Pool::Sqlite(keys)) = (self.pool(), self.keys()) else {
            return Err(Error::Config(
                "this is a PostgreSQL database: back it up with pg_dump or point-in-time \
                 recovery (see docs/operations.md, \"Backup and restore\")"
                    .into(),
            ));
        };
        let keys_dest = keys_file_of(dest);
        for path in [dest, keys_dest.as_path()] {
            if path.exists() {
                return Err(Error::Conflict(format!(
                    "{} exists; choose a new backup file",
                    path.display()
                )));
            }
        }
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let (tmp_main, tmp_keys) = (temp_beside(dest), temp_beside(&keys_dest));
        let result = async {
            vacuum_into(main, &tmp_main).await?;
            vacuum_into(keys, &tmp_keys).await?;
            std::fs::rename(&tmp_main, dest)?;
            std::fs::rename(&tmp_keys, &keys_dest)?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp_main);
            let _ = std::fs::remove_file(&tmp_keys);
            return Err(e);
        }
        let documents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
            .fetch_one(main)
            .await?;
        Ok(BackupReport {
            database: dest.to_owned(),
            keys: keys_dest,
            documents: u64::try_from(documents).unwrap_or(0),
            bytes: std::fs::metadata(dest)?.len(),
        })
    }
}

async fn vacuum_into(pool: &sqlx::SqlitePool, dest: &Path) -> Result<(), Error> {
    let dest = dest
        .to_str()
        .ok_or_else(|| Error::Config(format!("backup path {} is not UTF-8", dest.display())))?;
    sqlx::query("VACUUM INTO ?")
        .bind(dest)
        .execute(pool)
        .await?;
    Ok(())
}

/// Checks a backup (both files present, both pass `PRAGMA integrity_check`, the
/// database has a storage identity) and copies it into place as the database at
/// `db_path` with its key store at `keys_path`. The server must be stopped. Existing
/// files are replaced only with `force`.
pub async fn restore(
    backup: &Path,
    db_path: &Path,
    keys_path: &Path,
    force: bool,
) -> Result<BackupReport, Error> {
    let keys_backup = keys_file_of(backup);
    for path in [backup, keys_backup.as_path()] {
        if !path.is_file() {
            return Err(Error::NotFound(format!(
                "{} (a backup is the database file plus <file>.keys)",
                path.display()
            )));
        }
    }
    let documents = check_backup(backup, true).await?;
    check_backup(&keys_backup, false).await?;
    if !force {
        for path in [db_path, keys_path] {
            if path.exists() {
                return Err(Error::Conflict(format!(
                    "{} exists; stop the server and pass --force to replace it",
                    path.display()
                )));
            }
        }
    }
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    for (from, to) in [(backup, db_path), (keys_backup.as_path(), keys_path)] {
        // Stale WAL files of the replaced database would be replayed onto the copy.
        for suffix in ["-wal", "-shm"] {
            let mut side = to.as_os_str().to_owned();
            side.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(side));
        }
        let tmp = temp_beside(to);
        std::fs::copy(from, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, to)?;
    }
    Ok(BackupReport {
        database: db_path.to_owned(),
        keys: keys_path.to_owned(),
        documents,
        bytes: std::fs::metadata(db_path)?.len(),
    })
}

/// Opens a backup file read-only and checks it; returns its document count (main).
async fn check_backup(path: &Path, main: bool) -> Result<u64, Error> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let mut conn =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| Error::Config(format!("backup {}: {e}", path.display())))?
            .read_only(true)
            .connect()
            .await?;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?;
    if check != "ok" {
        return Err(Error::Corrupt(format!(
            "backup {} fails its integrity check: {check}",
            path.display()
        )));
    }
    let table = if main { "server_info" } else { "doc_keys" };
    let exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(table)
            .fetch_one(&mut conn)
            .await?;
    if exists == 0 {
        return Err(Error::Corrupt(format!(
            "{} is not a buurtsync {} backup",
            path.display(),
            if main { "database" } else { "key store" }
        )));
    }
    if !main {
        return Ok(0);
    }
    let documents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
        .fetch_one(&mut conn)
        .await?;
    Ok(u64::try_from(documents).unwrap_or(0))
}
