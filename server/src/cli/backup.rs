//! `backup` and `restore` of a SQLite store (PostgreSQL: pg_dump/PITR).

use std::path::Path;

use serde_json::json;

use super::output::print;
use crate::error::Error;
use crate::store::Store;

/// `backup FILE --keys-to K | --no-keys`: the database to FILE and the key store to
/// K (kept apart), while serving.
pub async fn backup(
    store: &Store,
    file: &Path,
    keys_to: Option<&Path>,
    json_out: bool,
) -> Result<(), Error> {
    let report = store.backup(file, keys_to).await?;
    let keys = report.keys.as_ref().map_or_else(
        || "no key store copy (--no-keys)".to_owned(),
        |k| format!("key store {}; keep them apart", k.display()),
    );
    print(
        json_out,
        json!(report),
        &format!(
            "backup written: {} ({} documents, {} bytes), {keys}",
            report.database.display(),
            report.documents,
            report.bytes,
        ),
    );
    Ok(())
}

/// The files a restore reads.
pub struct RestoreFiles<'a> {
    pub backup: &'a Path,
    pub keys_from: Option<&'a Path>,
    pub erasures: Option<&'a Path>,
}

/// `restore`: copy the backup into place, open it (running newer migrations, so an
/// old backup serves on a new binary), and re-apply the erasure journal, so nothing
/// erased since the backup comes back (issue 16, item 4).
pub async fn restore(
    database: &str,
    keys_store: Option<&str>,
    files: RestoreFiles<'_>,
    force: bool,
    json_out: bool,
) -> Result<(), Error> {
    let db = crate::store::sqlite_path(database)?;
    let keys = crate::store::keys_path(db, keys_store);
    let journal = files.erasures.map_or_else(
        || crate::store::erasures::journal_path(Path::new(db)),
        Path::to_owned,
    );
    let report = crate::store::backup::restore(
        files.backup,
        files.keys_from,
        Path::new(db),
        Path::new(&keys),
        force,
    )
    .await?;
    let store = Store::open_with_keys(database, keys_store).await?;
    let reapplied = store.documents().reapply_erasures(&journal).await?;
    store.close().await;
    let mut value = json!(report);
    value["erasures"] = json!(reapplied);
    value["erasure_journal"] = json!(journal.display().to_string());
    print(
        json_out,
        value,
        &format!(
            "restored {} documents into {} (keys {}); re-applied {} erasures from {} \
             ({} erased again, {} tombstoned{})",
            report.documents,
            report.database.display(),
            keys,
            reapplied.journaled,
            journal.display(),
            reapplied.erased,
            reapplied.tombstoned,
            if reapplied.unreadable > 0 {
                format!(", {} unreadable lines skipped", reapplied.unreadable)
            } else {
                String::new()
            }
        ),
    );
    Ok(())
}
