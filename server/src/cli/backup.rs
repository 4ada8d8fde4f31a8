//! `backup` and `restore` of a SQLite store (PostgreSQL: pg_dump/PITR).

use std::path::Path;

use serde_json::json;

use super::output::print;
use crate::error::Error;
use crate::store::Store;

/// `backup FILE`: the database to FILE and the key store to FILE.keys, while serving.
pub async fn backup(store: &Store, file: &Path, json_out: bool) -> Result<(), Error> {
    let report = store.backup(file).await?;
    print(
        json_out,
        json!(report),
        &format!(
            "backup written: {} ({} documents, {} bytes) and key store {}; keep both",
            report.database.display(),
            report.documents,
            report.bytes,
            report.keys.display()
        ),
    );
    Ok(())
}

/// `restore FILE [--force]`: the backup becomes the database and key store at
/// `database` (a `sqlite://` URL) and `keys`.
pub async fn restore(
    database: &str,
    keys: Option<&str>,
    file: &Path,
    force: bool,
    json_out: bool,
) -> Result<(), Error> {
    let db = crate::store::sqlite_path(database)?;
    let keys_file = crate::store::keys_path(db, keys);
    let report = crate::store::backup::restore(
        file,
        std::path::Path::new(db),
        std::path::Path::new(&keys_file),
        force,
    )
    .await?;
    // Opening runs any newer migrations, so an old backup serves on a new binary.
    let store = Store::open_with_keys(database, keys).await?;
    store.close().await;
    print(
        json_out,
        json!(report),
        &format!(
            "restored {} documents into {} (keys {})",
            report.documents,
            report.database.display(),
            report.keys.display()
        ),
    );
    Ok(())
}
