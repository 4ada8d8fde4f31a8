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
//!
//! The key store copy goes where the operator says (`--keys-to`), never beside the
//! database copy by default: a database backup kept next to its keys is readable by
//! whoever gets the backup directory, and key copies need a shorter retention so that
//! erasures take hold (docs/operations.md). Every file is written owner-only (0600).
//! Restore re-applies the erasure journal (`store::erasures`), so a backup taken
//! before an erasure does not bring the document back.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Pool, Store};
use crate::error::Error;

/// What a backup or restore wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub database: PathBuf,
    /// The key store copy (`None`: the backup holds the database only).
    pub keys: Option<PathBuf>,
    pub documents: u64,
    pub bytes: u64,
}

/// Where earlier versions put the key store copy of a database backup: `<file>.keys`
/// (`restore` still looks there when no `--keys-from` is given).
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

/// Creates an empty file readable by its owner only, for `VACUUM INTO` to fill.
fn create_private(path: &Path) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?;
    Ok(())
}

impl Store {
    /// Writes a consistent copy of the database to `dest` and, when `keys_dest` is
    /// given, of the key store there, while the server may be serving. Refuses to
    /// overwrite; the files are owner-only (0600).
    pub async fn backup(
        &self,
        dest: &Path,
        keys_dest: Option<&Path>,
    ) -> Result<BackupReport, Error> {
        let (Pool::Sqlite(main), Pool::Sqlite(keys)) = (self.pool(), self.keys()) else {
            return Err(Error::Config(
                "this is a PostgreSQL database: back it up with pg_dump or point-in-time \
                 recovery (see docs/operations.md, \"Backup and restore\")"
                    .into(),
            ));
        };
        if keys_dest == Some(dest) {
            return Err(Error::Invalid(
                "the key store copy needs a file of its own".into(),
            ));
        }
        for path in std::iter::once(dest).chain(keys_dest) {
            if path.exists() {
                return Err(Error::Conflict(format!(
                    "{} exists; choose a new backup file",
                    path.display()
                )));
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
        }
        let tmp_main = temp_beside(dest);
        let tmp_keys = keys_dest.map(temp_beside);
        let result = async {
            create_private(&tmp_main)?;
            vacuum_into(main, &tmp_main).await?;
            if let (Some(tmp), Some(to)) = (&tmp_keys, keys_dest) {
                create_private(tmp)?;
                vacuum_into(keys, tmp).await?;
                std::fs::rename(tmp, to)?;
            }
            std::fs::rename(&tmp_main, dest)?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp_main);
            if let Some(tmp) = &tmp_keys {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }
        let documents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
            .fetch_one(main)
            .await?;
        Ok(BackupReport {
            database: dest.to_owned(),
            keys: keys_dest.map(Path::to_owned),
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
/// `db_path` with its key store at `keys_path`. The key store copy is `keys_backup`,
/// else `<backup>.keys`. The server must be stopped. Existing files are replaced only
/// with `force`. The caller then re-applies the erasure journal
/// (`store.documents().reapply_erasures`).
pub async fn restore(
    backup: &Path,
    keys_backup: Option<&Path>,
    db_path: &Path,
    keys_path: &Path,
    force: bool,
) -> Result<BackupReport, Error> {
    let keys_backup = keys_backup.map_or_else(|| keys_file_of(backup), Path::to_owned);
    for path in [backup, keys_backup.as_path()] {
        if !path.is_file() {
            return Err(Error::NotFound(format!(
                "{} (a backup is the database file plus its key store copy: --keys-from)",
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
        keys: Some(keys_path.to_owned()),
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
