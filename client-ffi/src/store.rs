//! The local store: one SQLite file (sqlx, WAL, `synchronous=FULL`) holding this
//! device's documents sealed under the app's key, the heads the server acknowledged, and
//! per-server sync states. Every write is one transaction that has committed before the
//! call returns, so an operation that returned survives a killed process.
//!
//! Only ids, partitions (wijk, kind) and change hashes are stored in the clear.
//!
//! `secure_delete` is on, so freed pages are overwritten with zeros, and every purge ends
//! with `wal_checkpoint(TRUNCATE)`, so no copy of a purged document stays in the file,
//! its free pages or the write-ahead log. A row that does not decrypt or load is
//! reported on its own (`LoadedStore::corrupt`); the rest of the store opens.

use std::path::Path;
use std::str::FromStr;

use std::collections::HashSet;

use automerge::{Automerge, ChangeHash};
use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

use crate::crypto::AtRestKey;
use crate::error::{ClientError, Result};
use crate::replica::Replica;

/// One stored document, decrypted and loaded.
pub struct StoredDoc {
    pub id: DocumentId,
    pub partition: Partition,
    pub doc: Automerge,
    pub acked: Vec<ChangeHash>,
    /// Local changes not acknowledged; `None` for a row from before the column existed.
    pub unacked: Option<HashSet<ChangeHash>>,
}

/// Everything `load_all` read: the documents, and the rows that did not load (id, why).
pub struct LoadedStore {
    pub docs: Vec<StoredDoc>,
    pub corrupt: Vec<(String, String)>,
}

/// The device's SQLite store.
pub struct LocalStore {
    pool: SqlitePool,
    key: AtRestKey,
    storage_id: String,
}

impl LocalStore {
    /// Opens (or creates) the store at `path`. A store made with another key is
    /// `WrongKey`; a fresh store records a key check and a new storageId.
    pub async fn open(path: &Path, key: AtRestKey) -> Result<LocalStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5))
            // Freed pages are zeroed: a purged document leaves no bytes behind.
            .pragma("secure_delete", "ON");
        // One connection: writes are serialised by the caller anyway, and a single
        // connection keeps the WAL simple for a phone.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| ClientError::Store {
                message: format!("cannot open {}: {e}", path.display()),
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;

        let check: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'key_check'")
                .fetch_optional(&pool)
                .await?;
        match check {
            Some(check) => key.verify(&check)?,
            None => {
                sqlx::query("INSERT INTO settings (key, value) VALUES ('key_check', ?)")
                    .bind(key.key_check()?)
                    .execute(&pool)
                    .await?;
            }
        }
        let storage_id: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'storage_id'")
                .fetch_optional(&pool)
                .await?;
        let storage_id = match storage_id {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => {
                let id = format!("device-{}", DocumentId::random());
                sqlx::query("INSERT INTO settings (key, value) VALUES ('storage_id', ?)")
                    .bind(id.as_bytes())
                    .execute(&pool)
                    .await?;
                id
            }
        };
        Ok(LocalStore {
            pool,
            key,
            storage_id,
        })
    }

    /// This store's automerge-repo storageId.
    pub fn storage_id(&self) -> &str {
        &self.storage_id
    }

    /// Loads and decrypts every document. A row that does not decrypt or load is
    /// listed in `corrupt` and the others still load.
    pub async fn load_all(&self) -> Result<LoadedStore> {
        let rows =
            sqlx::query("SELECT id, kind, wijk, sealed, acked_heads, unacked FROM documents")
                .fetch_all(&self.pool)
                .await?;
        let mut out = LoadedStore {
            docs: Vec::with_capacity(rows.len()),
            corrupt: Vec::new(),
        };
        for row in rows {
            let id_text: String = row.try_get("id")?;
            match self.load_row(&row, &id_text) {
                Ok(doc) => out.docs.push(doc),
                Err(why) => {
                    tracing::error!(id = %id_text, %why, "a stored document does not load");
                    out.corrupt.push((id_text, why));
                }
            }
        }
        Ok(out)
    }

    fn load_row(
        &self,
        row: &sqlx::sqlite::SqliteRow,
        id_text: &str,
    ) -> std::result::Result<StoredDoc, String> {
        let id = DocumentId::from_str(id_text).map_err(|_| "bad id".to_owned())?;
        let text = |col: &str| row.try_get::<String, _>(col).map_err(|e| e.to_string());
        let partition = Partition {
            kind: DocumentKind::from_str(&text("kind")?).map_err(|_| "bad kind".to_owned())?,
            wijk: WijkId::new(text("wijk")?).map_err(|_| "bad wijk".to_owned())?,
        };
        let sealed: Vec<u8> = row.try_get("sealed").map_err(|e| e.to_string())?;
        let bytes = self
            .key
            .open(id.as_bytes(), &sealed)
            .ok_or_else(|| "does not decrypt".to_owned())?;
        // issue 20: guarded, so a panic in automerge marks the document corrupt.
        let doc = sync_core::guard::load(&bytes).map_err(|e| format!("does not load: {e}"))?;
        let unacked: Option<String> = row.try_get("unacked").map_err(|e| e.to_string())?;
        Ok(StoredDoc {
            id,
            partition,
            doc,
            acked: parse_heads(&text("acked_heads")?),
            unacked: unacked.map(|u| parse_heads(&u).into_iter().collect()),
        })
    }

    /// Writes the whole document (sealed), its acknowledged heads and its
    /// unacknowledged local changes in one transaction.
    pub async fn put(&self, id: DocumentId, replica: &Replica) -> Result<()> {
        let sealed = self.key.seal(id.as_bytes(), &replica.doc.save())?;
        sqlx::query(
            "INSERT INTO documents (id, kind, wijk, sealed, acked_heads, unacked, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, strftime('%s','now'))
             ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed,
                 acked_heads = excluded.acked_heads, unacked = excluded.unacked,
                 updated_at = excluded.updated_at",
        )
        .bind(id.to_string())
        .bind(replica.partition.kind.as_str())
        .bind(replica.partition.wijk.as_str())
        .bind(sealed)
        .bind(format_heads(&replica.acked))
        .bind(format_set(&replica.unacked))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records what the server acknowledged (heads and the local changes still unacked).
    pub async fn put_acked(&self, id: DocumentId, replica: &Replica) -> Result<()> {
        sqlx::query("UPDATE documents SET acked_heads = ?, unacked = ? WHERE id = ?")
            .bind(format_heads(&replica.acked))
            .bind(format_set(&replica.unacked))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A setting (`last_synced_at`, `user`), as text.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let value: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value.as_bytes())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes every byte of a document and its sync states (purge).
    pub async fn delete(&self, id: DocumentId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM documents WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sync_states WHERE doc_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.checkpoint().await
    }

    /// Moves the write-ahead log into the database and truncates it to zero bytes, so
    /// deleted rows do not survive in old WAL frames.
    pub async fn checkpoint(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The saved sync states with one server, per document.
    pub async fn sync_states(&self, server: &str) -> Result<Vec<(DocumentId, Vec<u8>)>> {
        let rows = sqlx::query("SELECT doc_id, state FROM sync_states WHERE server_storage_id = ?")
            .bind(server)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("doc_id")?;
            if let Ok(id) = DocumentId::from_str(&id) {
                out.push((id, row.try_get("state")?));
            }
        }
        Ok(out)
    }

    /// Saves sync states with one server (one transaction for all).
    pub async fn put_sync_states(
        &self,
        server: &str,
        states: &[(DocumentId, Vec<u8>)],
    ) -> Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, state) in states {
            sqlx::query(
                "INSERT INTO sync_states (doc_id, server_storage_id, state) VALUES (?, ?, ?)
                 ON CONFLICT (doc_id, server_storage_id) DO UPDATE SET state = excluded.state",
            )
            .bind(id.to_string())
            .bind(server)
            .bind(state.as_slice())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn format_heads(heads: &[ChangeHash]) -> String {
    heads
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn format_set(hashes: &HashSet<ChangeHash>) -> String {
    let mut v: Vec<ChangeHash> = hashes.iter().copied().collect();
    v.sort();
    format_heads(&v)
}

fn parse_heads(s: &str) -> Vec<ChangeHash> {
    s.split(',')
        .filter(|h| !h.is_empty())
        .filter_map(|h| ChangeHash::from_str(h).ok())
        .collect()
}
