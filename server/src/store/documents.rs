//! Documents: the catalog (id → fixed partition), the automerge chunks, and persisted
//! sync states.
//!
//! Chunks are appended per commit (`incremental`) and replaced by one `snapshot` when
//! their total outgrows it. Loading concatenates every chunk and hands the bytes to
//! automerge once — one `load_incremental` per chunk is ~56× slower (PROTOCOL.md).
//!
//! Every chunk is sealed with the document's own key (`crypto`), kept in the separate
//! key store. Erasure deletes the rows, leaves a tombstone, and destroys the key.

use serde::Serialize;
use sqlx::Row;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

use super::crypto::DocKey;
use super::{conflict_if_duplicate, now, Store};
use crate::error::Error;

/// A document's catalog row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogEntry {
    #[serde(serialize_with = "ser_display")]
    pub id: DocumentId,
    pub partition: Partition,
    pub created_at: i64,
    pub created_by: String,
}

fn ser_display<S: serde::Serializer>(v: &DocumentId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A document as stored: its catalog row and its chunks, concatenated.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    pub entry: CatalogEntry,
    pub key: DocKey,
    pub bytes: Vec<u8>,
    pub incremental_bytes: u64,
    pub snapshot_bytes: u64,
    pub chunks: u64,
}

/// An erased document's tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub partition: Partition,
    pub erased_at: i64,
    pub erased_by: String,
}

fn entry_from_row(id: DocumentId, row: &sqlx::sqlite::SqliteRow) -> Result<CatalogEntry, Error> {
    let kind: String = row.get("kind");
    let wijk: String = row.get("wijk_id");
    Ok(CatalogEntry {
        id,
        partition: Partition {
            kind: kind
                .parse::<DocumentKind>()
                .map_err(|e| Error::Corrupt(format!("document {id}: {e}")))?,
            wijk: WijkId::new(wijk).map_err(|e| Error::Corrupt(format!("document {id}: {e}")))?,
        },
        created_at: row.get("created_at"),
        created_by: row.get("created_by"),
    })
}

impl Store {
    /// Creates the document: its key in the key store, then the catalog row and the
    /// first chunk in one transaction. `Conflict` if the id is taken, `Erased` if it
    /// was erased. Callers serialise creations of one id (the hub does).
    pub async fn create_document(
        &self,
        entry: &CatalogEntry,
        first_chunk: &[u8],
        key: &DocKey,
    ) -> Result<(), Error> {
        if self.tombstone(&entry.id).await?.is_some() {
            return Err(Error::Erased(entry.id.to_string()));
        }
        if self.catalog(&entry.id).await?.is_some() {
            return Err(Error::Conflict(format!("document {} exists", entry.id)));
        }
        // A key left by a creation that crashed before its commit is replaced.
        sqlx::query("INSERT OR REPLACE INTO doc_keys (doc_id, key, created_at) VALUES (?, ?, ?)")
            .bind(entry.id.to_string())
            .bind(&key.0[..])
            .bind(now())
            .execute(self.keys())
            .await?;
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO documents (id, kind, wijk_id, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(entry.id.to_string())
        .bind(entry.partition.kind.as_str())
        .bind(entry.partition.wijk.as_str())
        .bind(entry.created_at)
        .bind(&entry.created_by)
        .execute(&mut *tx)
        .await;
        conflict_if_duplicate(inserted, || format!("document {} exists", entry.id))?;
        insert_chunk(&mut tx, &entry.id, key, "snapshot", first_chunk).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The catalog row of a document, if it exists.
    pub async fn catalog(&self, id: &DocumentId) -> Result<Option<CatalogEntry>, Error> {
        let row =
            sqlx::query("SELECT kind, wijk_id, created_at, created_by FROM documents WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| entry_from_row(*id, &r)).transpose()
    }

    /// Records a plan's committed hand-over flag in the catalog (for listings).
    pub async fn set_handed_over(&self, id: &DocumentId, handed_over: bool) -> Result<(), Error> {
        sqlx::query("UPDATE documents SET handed_over = ? WHERE id = ?")
            .bind(handed_over)
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Catalog rows with their hand-over flag, optionally of one wijk and/or kind,
    /// created at or after `since` (unix seconds), oldest first.
    pub async fn list_catalog(
        &self,
        wijk: Option<&WijkId>,
        kind: Option<DocumentKind>,
        since: i64,
    ) -> Result<Vec<(CatalogEntry, bool)>, Error> {
        let rows = sqlx::query(
            "SELECT id, kind, wijk_id, created_at, created_by, handed_over FROM documents
             WHERE (? IS NULL OR wijk_id = ?) AND (? IS NULL OR kind = ?) AND created_at >= ?
             ORDER BY created_at, id",
        )
        .bind(wijk.map(WijkId::as_str))
        .bind(wijk.map(WijkId::as_str))
        .bind(kind.map(DocumentKind::as_str))
        .bind(kind.map(DocumentKind::as_str))
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get("id");
                let id = id
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("catalog id {id:?}: {e}")))?;
                let handed_over: bool = r.get("handed_over");
                Ok((entry_from_row(id, r)?, handed_over))
            })
            .collect()
    }

    /// Catalog rows of a partition (or all), oldest first.
    pub async fn list_documents(
        &self,
        partition: Option<&Partition>,
    ) -> Result<Vec<CatalogEntry>, Error> {
        let rows = self
            .list_catalog(partition.map(|p| &p.wijk), partition.map(|p| p.kind), 0)
            .await?;
        Ok(rows.into_iter().map(|(entry, _)| entry).collect())
    }

    /// The document's key, if it was not destroyed.
    pub async fn doc_key(&self, id: &DocumentId) -> Result<Option<DocKey>, Error> {
        let key: Option<Vec<u8>> = sqlx::query_scalar("SELECT key FROM doc_keys WHERE doc_id = ?")
            .bind(id.to_string())
            .fetch_optional(self.keys())
            .await?;
        key.map(|k| {
            <[u8; 32]>::try_from(k.as_slice())
                .map(DocKey)
                .map_err(|_| Error::Corrupt(format!("document {id}: key of wrong length")))
        })
        .transpose()
    }

    /// The catalog row and all chunks, decrypted and concatenated in write order.
    pub async fn load_document(&self, id: &DocumentId) -> Result<Option<StoredDocument>, Error> {
        let Some(entry) = self.catalog(id).await? else {
            return Ok(None);
        };
        let key = self.doc_key(id).await?.ok_or_else(|| {
            Error::Corrupt(format!(
                "document {id}: its key is gone (erased, or the wrong key store)"
            ))
        })?;
        let rows = sqlx::query("SELECT kind, data FROM chunks WHERE doc_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(self.pool())
            .await?;
        let mut doc = StoredDocument {
            entry,
            key: key.clone(),
            bytes: Vec::new(),
            incremental_bytes: 0,
            snapshot_bytes: 0,
            chunks: 0,
        };
        for row in rows {
            let kind: String = row.get("kind");
            let sealed: Vec<u8> = row.get("data");
            let data = key.open(id, &sealed)?;
            let len = data.len() as u64;
            if kind == "snapshot" {
                doc.snapshot_bytes += len;
            } else {
                doc.incremental_bytes += len;
            }
            doc.chunks += 1;
            doc.bytes.extend_from_slice(&data);
        }
        Ok(Some(doc))
    }

    /// Appends an incremental chunk (idempotent: its key is its content hash).
    pub async fn append_chunk(
        &self,
        id: &DocumentId,
        key: &DocKey,
        data: &[u8],
    ) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        insert_chunk(&mut tx, id, key, "incremental", data).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces every chunk of the document with one snapshot, atomically.
    pub async fn compact(
        &self,
        id: &DocumentId,
        key: &DocKey,
        snapshot: &[u8],
    ) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM chunks WHERE doc_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        insert_chunk(&mut tx, id, key, "snapshot", snapshot).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tombstone of an erased document.
    pub async fn tombstone(&self, id: &DocumentId) -> Result<Option<Tombstone>, Error> {
        let row = sqlx::query(
            "SELECT kind, wijk_id, erased_at, erased_by FROM tombstones WHERE doc_id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let kind: String = r.get("kind");
            let wijk: String = r.get("wijk_id");
            Ok(Tombstone {
                partition: Partition {
                    kind: kind
                        .parse()
                        .map_err(|e| Error::Corrupt(format!("tombstone {id}: {e}")))?,
                    wijk: WijkId::new(wijk)
                        .map_err(|e| Error::Corrupt(format!("tombstone {id}: {e}")))?,
                },
                erased_at: r.get("erased_at"),
                erased_by: r.get("erased_by"),
            })
        })
        .transpose()
    }

    /// Erases a document (AVG art. 17): chunks, sync states, authors and catalog row
    /// go in one transaction that also writes the tombstone; then its key is destroyed,
    /// so copies of the chunks in older backups cannot be decrypted either. Running
    /// servers notice through `access_changes` and tell devices to purge.
    /// Idempotent: erasing again finishes an erasure that stopped half-way.
    pub async fn erase(&self, id: &DocumentId, by: &str) -> Result<Tombstone, Error> {
        let doc = id.to_string();
        let tombstone = match self.catalog(id).await? {
            Some(entry) => {
                let mut tx = self.pool().begin().await?;
                for table in ["chunks", "sync_states", "change_authors"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE doc_id = ?"))
                        .bind(&doc)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("DELETE FROM documents WHERE id = ?")
                    .bind(&doc)
                    .execute(&mut *tx)
                    .await?;
                let erased_at = now();
                sqlx::query(
                    "INSERT INTO tombstones (doc_id, kind, wijk_id, erased_at, erased_by) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&doc)
                .bind(entry.partition.kind.as_str())
                .bind(entry.partition.wijk.as_str())
                .bind(erased_at)
                .bind(by)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO access_changes (at, what) VALUES (?, 'erase')")
                    .bind(erased_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Tombstone {
                    partition: entry.partition,
                    erased_at,
                    erased_by: by.to_owned(),
                }
            }
            None => self
                .tombstone(id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("document {id}")))?,
        };
        sqlx::query("DELETE FROM doc_keys WHERE doc_id = ?")
            .bind(&doc)
            .execute(self.keys())
            .await?;
        // Leave no readable remains of the key in the key store's free pages or WAL.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(self.keys())
            .await?;
        sqlx::query("VACUUM").execute(self.keys()).await?;
        Ok(tombstone)
    }

    /// Which of these documents were erased: one query however many ids (a
    /// connection asks for all its open documents whenever access changes).
    pub async fn erased_among(&self, ids: &[DocumentId]) -> Result<Vec<DocumentId>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::Value::from(ids.iter().map(ToString::to_string).collect::<Vec<_>>());
        let erased: Vec<String> = sqlx::query_scalar(
            "SELECT doc_id FROM tombstones WHERE doc_id IN (SELECT value FROM json_each(?))",
        )
        .bind(list.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(ids
            .iter()
            .filter(|id| erased.contains(&id.to_string()))
            .copied()
            .collect())
    }

    /// Records who delivered which changes (author binding).
    pub async fn record_authors(
        &self,
        id: &DocumentId,
        hashes: &[String],
        user: &str,
        device: &str,
    ) -> Result<(), Error> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for hash in hashes {
            sqlx::query(
                "INSERT OR IGNORE INTO change_authors (doc_id, change_hash, user_id, device, at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id.to_string())
            .bind(hash)
            .bind(user)
            .bind(device)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Who delivered each change of a document: (change hash, user, device, unix time).
    pub async fn change_authors(
        &self,
        id: &DocumentId,
    ) -> Result<Vec<(String, String, String, i64)>, Error> {
        let rows = sqlx::query(
            "SELECT change_hash, user_id, device, at FROM change_authors WHERE doc_id = ? ORDER BY at, change_hash",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("change_hash"),
                    r.get("user_id"),
                    r.get("device"),
                    r.get("at"),
                )
            })
            .collect())
    }

    /// The persisted sync state of a peer store for a document.
    pub async fn sync_state(
        &self,
        storage_id: &str,
        id: &DocumentId,
    ) -> Result<Option<Vec<u8>>, Error> {
        Ok(
            sqlx::query_scalar("SELECT state FROM sync_states WHERE storage_id = ? AND doc_id = ?")
                .bind(storage_id)
                .bind(id.to_string())
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Persists sync states of one peer store saved by `user`'s connection, in one
    /// transaction, and keeps the table bounded: only the user's `per_user` most
    /// recently used peer stores keep states, and states older than `ttl` go.
    pub async fn put_sync_states(
        &self,
        storage_id: &str,
        user: &str,
        states: &[(DocumentId, Vec<u8>)],
        per_user: usize,
        ttl: std::time::Duration,
    ) -> Result<(), Error> {
        if states.is_empty() {
            return Ok(());
        }
        let at = now();
        let mut tx = self.pool().begin().await?;
        for (id, state) in states {
            sqlx::query(
                "INSERT INTO sync_states (storage_id, doc_id, state, updated_at, user_id) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (storage_id, doc_id) DO UPDATE SET state = excluded.state,
                   updated_at = excluded.updated_at, user_id = excluded.user_id",
            )
            .bind(storage_id)
            .bind(id.to_string())
            .bind(state)
            .bind(at)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM sync_states WHERE user_id = ?1 AND storage_id NOT IN (
                 SELECT storage_id FROM sync_states WHERE user_id = ?1
                 GROUP BY storage_id ORDER BY MAX(updated_at) DESC, storage_id = ?2 DESC
                 LIMIT ?3)",
        )
        .bind(user)
        .bind(storage_id)
        .bind(i64::try_from(per_user.max(1)).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        sqlx::query("DELETE FROM sync_states WHERE updated_at < ?")
            .bind(at.saturating_sub(ttl))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Distinct peer stores with persisted sync states, of one user or of everyone.
    pub async fn sync_state_storages(&self, user: Option<&str>) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT storage_id) FROM sync_states WHERE ?1 IS NULL OR user_id = ?1",
        )
        .bind(user)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

async fn insert_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &DocumentId,
    key: &DocKey,
    kind: &str,
    data: &[u8],
) -> Result<(), Error> {
    let sealed = key.seal(id, data)?;
    sqlx::query(
        "INSERT INTO chunks (doc_id, kind, hash, data, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (doc_id, hash) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(kind)
    .bind(key.chunk_hash(data))
    .bind(sealed)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
