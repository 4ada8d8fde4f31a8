//! Erasures that outlive the database: what `erase` leaves behind on disk, and the
//! journal that makes a restored backup forget again (issue 16, items 3 and 4).
//!
//! Two things here. First, [`Store::shred_remains`]: after an erasure, no readable
//! copy of the destroyed key or of the document's change hashes may stay in a SQLite
//! file: every pool runs with `secure_delete` (deleted rows are zeroed, see
//! `store::sqlite_pool`), the key store is vacuumed, and both write-ahead logs are
//! checkpointed and truncated (otherwise the old pages, key included, sit in the
//! `-wal` file until the next checkpoint). Second, the erasure journal
//! `<database>.erasures`: one JSON line per erasure, appended and fsynced before the
//! erasure's transaction, kept beside the database but never inside it or the key
//! store, so a backup restored from before an erasure can re-apply it
//! ([`Documents::reapply_erasures`]). It holds ids, partitions, times and who asked:
//! no content. PostgreSQL stores write no journal (their restores are pg_dump or
//! PITR; docs/operations.md says what to do).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sync_core::partition::{Partition, WijkId};
use sync_core::protocol::DocumentId;

use super::documents::Documents;
use super::tx::Engine;
use super::{with_pool, Pool, Store};
use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;

/// One erasure in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub doc: String,
    pub kind: String,
    pub wijk: String,
    pub erased_at: i64,
    pub erased_by: String,
}

/// What re-applying a journal did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reapplied {
    /// Entries read from the journal.
    pub journaled: u64,
    /// Documents the restored database still held: erased again.
    pub erased: u64,
    /// Documents the backup did not know (created after it): tombstoned, so stale
    /// devices cannot bring them back.
    pub tombstoned: u64,
    /// Lines that did not parse (a line torn by a crash while journaling, whose
    /// erasure then never ran): skipped and logged.
    pub unreadable: u64,
}

/// The journal of the SQLite database at `db_path`: `<db_path>.erasures`.
pub fn journal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".erasures");
    PathBuf::from(name)
}

/// Reads a journal; a missing file is an empty journal.
pub fn read_journal(path: &Path) -> Result<(Vec<JournalEntry>, u64), Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e.into()),
    };
    let mut entries = Vec::new();
    let mut unreadable = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<JournalEntry>(line) {
            Ok(entry) => entries.push(entry),
            Err(e) => {
                tracing::warn!(journal = %path.display(), error = %e, "skipping an unreadable erasure journal line");
                unreadable += 1;
            }
        }
    }
    Ok((entries, unreadable))
}

/// Appends one line and fsyncs it (and the directory when the file is new), owner
/// read/write only. A line torn by an earlier crash is closed first.
fn append(path: &Path, entry: &JournalEntry) -> Result<(), Error> {
    use std::io::{Read, Seek, SeekFrom};
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let existed = path.exists();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    let mut line = serde_json::to_string(entry).map_err(|e| Error::Invalid(e.to_string()))?;
    line.push('\n');
    if file.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    file.write_all(line.as_bytes())?;
    file.sync_all()?;
    if !existed {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: copies the write-ahead log into the database
/// file and empties it, waiting (busy timeout) for readers of older pages. Older page
/// images (an erased row, a destroyed key) then exist nowhere.
async fn checkpoint(pool: &sqlx::SqlitePool) -> Result<(), Error> {
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(pool)
        .await?;
    if busy != 0 {
        // A reader held old pages past the busy timeout: the erasure stands, but the
        // log still holds them; the next erase or checkpoint removes them.
        tracing::warn!("write-ahead log not truncated after erasure: a reader was busy");
    }
    Ok(())
}

impl Store {
    /// The main database's file on SQLite (`None` in memory or on PostgreSQL).
    pub(crate) async fn sqlite_file(&self) -> Result<Option<PathBuf>, Error> {
        let Pool::Sqlite(p) = self.pool() else {
            return Ok(None);
        };
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("PRAGMA database_list").fetch_all(p).await?;
        Ok(rows
            .into_iter()
            .find(|(_, name, file)| name == "main" && !file.is_empty())
            .map(|(_, _, file)| PathBuf::from(file)))
    }

    /// Writes an erasure to `<database>.erasures` before it happens (SQLite only).
    pub(crate) async fn journal_erasure(
        &self,
        id: &DocumentId,
        partition: &Partition,
        erased_at: i64,
        by: &str,
    ) -> Result<(), Error> {
        let Some(file) = self.sqlite_file().await? else {
            return Ok(());
        };
        let entry = JournalEntry {
            doc: id.to_string(),
            kind: partition.kind.as_str().to_owned(),
            wijk: partition.wijk.as_str().to_owned(),
            erased_at,
            erased_by: by.to_owned(),
        };
        let path = journal_path(&file);
        tokio::task::spawn_blocking(move || append(&path, &entry))
            .await
            .map_err(|e| Error::Invalid(format!("erasure journal: {e}")))?
    }

    /// Leaves no readable remains of an erasure in the files: vacuums the key store
    /// and truncates both write-ahead logs (SQLite); rewrites `doc_keys` (PostgreSQL,
    /// whose WAL archive is then the one copy left: docs/operations.md).
    pub(crate) async fn shred_remains(&self) -> Result<(), Error> {
        match self.keys() {
            Pool::Sqlite(p) => {
                // VACUUM in WAL mode writes the new file into the log: checkpoint after.
                sqlx::query("VACUUM").execute(p).await?;
                checkpoint(p).await?;
            }
            Pool::Postgres(p) => {
                sqlx::query("VACUUM FULL doc_keys").execute(p).await?;
            }
        }
        if let Pool::Sqlite(p) = self.pool() {
            checkpoint(p).await?;
        }
        Ok(())
    }

    /// A tombstone for a document this database never held (it was created and
    /// erased after the backup, as the journal's `entry` says), with the next change
    /// number for the central feed.
    async fn insert_tombstone(
        &self,
        id: &DocumentId,
        partition: &Partition,
        entry: &JournalEntry,
    ) -> Result<(), Error> {
        with_pool!(self.pool(), p => {
            let mut tx = p.begin().await?;
            let seq = Engine::next_change_seq(&mut tx).await?;
            sqlx::query(
                "INSERT INTO tombstones (doc_id, kind, wijk_id, erased_at, erased_by, change_seq)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (doc_id) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(partition.kind.as_str())
            .bind(partition.wijk.as_str())
            .bind(entry.erased_at)
            .bind(entry.erased_by.as_str())
            .bind(seq)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        with_pool!(self.keys(), p => sqlx::query("DELETE FROM doc_keys WHERE doc_id = $1")
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|_| ()))?;
        self.shred_remains().await
    }
}

impl Documents<'_> {
    /// Re-applies the erasures of a journal to this (just restored) store: a document
    /// it holds is erased again, one it does not know gets its tombstone, and a key
    /// left in the key store goes. Each re-applied erasure is audited.
    pub async fn reapply_erasures(self, journal: &Path) -> Result<Reapplied, Error> {
        let (entries, unreadable) = read_journal(journal)?;
        let mut done = Reapplied {
            journaled: u64::try_from(entries.len()).unwrap_or(u64::MAX),
            unreadable,
            ..Reapplied::default()
        };
        for entry in entries {
            let id: DocumentId = entry
                .doc
                .parse()
                .map_err(|e| Error::Corrupt(format!("erasure journal: {e}")))?;
            let partition = Partition {
                kind: entry
                    .kind
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("erasure journal {id}: {e}")))?,
                wijk: WijkId::new(entry.wijk.clone())
                    .map_err(|e| Error::Corrupt(format!("erasure journal {id}: {e}")))?,
            };
            if self.tombstone(&id).await?.is_some() {
                if self.doc_key(&id).await?.is_some() {
                    self.erase_with(&id, &entry.erased_by, false).await?;
                }
                continue;
            }
            if self.catalog(&id).await?.is_some() {
                self.erase_with(&id, &entry.erased_by, false).await?;
                done.erased += 1;
            } else {
                self.0.insert_tombstone(&id, &partition, &entry).await?;
                done.tombstoned += 1;
            }
            self.0
                .audit()
                .append(
                    &AuditEvent::new(entry.erased_by.as_str(), "cli", AuditAction::Erase)
                        .on(&id, Some(&partition))
                        .with_detail("re-applied from the erasure journal at restore"),
                )
                .await?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Journal lines round-trip; a torn line is closed by the next append and then
    /// skipped as unreadable, never merged into the next entry.
    #[test]
    fn journal_appends_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.erasures");
        let entry = |n: i64| JournalEntry {
            doc: format!("doc{n}"),
            kind: "plan".into(),
            wijk: "noord".into(),
            erased_at: n,
            erased_by: "officer".into(),
        };
        append(&path, &entry(1)).expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"doc\":\"torn"))
            .expect("tear");
        append(&path, &entry(2)).expect("append");
        let (entries, unreadable) = read_journal(&path).expect("read");
        assert_eq!(entries, vec![entry(1), entry(2)]);
        assert_eq!(unreadable, 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            read_journal(&dir.path().join("none")).expect("missing"),
            (Vec::new(), 0)
        );
    }
}
