//! Documents: the catalog (id → fixed partition), the automerge chunks, and persisted
//! sync states.
//!
//! Chunks are appended per commit (`incremental`) and replaced by one `snapshot` when
//! their total outgrows it. Loading concatenates every chunk and hands the bytes to
//! automerge once — one `load_incremental` per chunk is ~56× slower (PROTOCOL.md).

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

use super::{now, Store};
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
    pub bytes: Vec<u8>,
    pub incremental_bytes: u64,
    pub snapshot_bytes: u64,
    pub chunks: u64,
}

fn chunk_hash(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
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
    /// Creates the catalog row and the first chunk in one transaction. Fails with
    /// `Conflict` if the id is taken.
    pub async fn create_document(
        &self,
        entry: &CatalogEntry,
        first_chunk: &[u8],
    ) -> Result<(), Error> {
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
        if let Err(sqlx::Error::Database(e)) = &inserted {
            if e.is_unique_violation() {
                return Err(Error::Conflict(format!("document {} exists", entry.id)));
            }
        }
        inserted?;
        insert_chunk(&mut tx, &entry.id, "snapshot", first_chunk).await?;
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

    /// Catalog rows of a partition, oldest first.
    pub async fn list_documents(
        &self,
        partition: Option<&Partition>,
    ) -> Result<Vec<CatalogEntry>, Error> {
        let rows = sqlx::query(
            "SELECT id, kind, wijk_id, created_at, created_by FROM documents
             WHERE (? IS NULL OR (wijk_id = ? AND kind = ?)) ORDER BY created_at, id",
        )
        .bind(partition.map(|p| p.wijk.as_str()))
        .bind(partition.map(|p| p.wijk.as_str()))
        .bind(partition.map(|p| p.kind.as_str()))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get("id");
                let id = id
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("catalog id {id:?}: {e}")))?;
                entry_from_row(id, r)
            })
            .collect()
    }

    /// The catalog row and all chunks, concatenated in write order.
    pub async fn load_document(&self, id: &DocumentId) -> Result<Option<StoredDocument>, Error> {
        let Some(entry) = self.catalog(id).await? else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT kind, data FROM chunks WHERE doc_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(self.pool())
            .await?;
        let mut doc = StoredDocument {
            entry,
            bytes: Vec::new(),
            incremental_bytes: 0,
            snapshot_bytes: 0,
            chunks: 0,
        };
        for row in rows {
            let kind: String = row.get("kind");
            let data: Vec<u8> = row.get("data");
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
    pub async fn append_chunk(&self, id: &DocumentId, data: &[u8]) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        insert_chunk(&mut tx, id, "incremental", data).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces every chunk of the document with one snapshot, atomically.
    pub async fn compact(&self, id: &DocumentId, snapshot: &[u8]) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM chunks WHERE doc_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        insert_chunk(&mut tx, id, "snapshot", snapshot).await?;
        tx.commit().await?;
        Ok(())
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

    /// Persists sync states of one peer store, in one transaction.
    pub async fn put_sync_states(
        &self,
        storage_id: &str,
        states: &[(DocumentId, Vec<u8>)],
    ) -> Result<(), Error> {
        if states.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for (id, state) in states {
            sqlx::query(
                "INSERT INTO sync_states (storage_id, doc_id, state, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (storage_id, doc_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )
            .bind(storage_id)
            .bind(id.to_string())
            .bind(state)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &DocumentId,
    kind: &str,
    data: &[u8],
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO chunks (doc_id, kind, hash, data, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (doc_id, hash) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(kind)
    .bind(chunk_hash(data))
    .bind(data)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
