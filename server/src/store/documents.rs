//! Documents: the catalog (id → fixed partition) and the automerge chunks.
//!
//! Chunks are appended per commit (`incremental`) and replaced by one `snapshot` when
//! their total outgrows it. Loading concatenates every chunk and hands the bytes to
//! automerge once — one `load_incremental` per chunk is ~56× slower (PROTOCOL.md).
//!
//! Several writers (the relay nodes of a PostgreSQL store) may append to one document
//! at once. Chunk keys are content hashes, so a chunk written twice is stored once.
//! Compaction never deletes a chunk it has not folded into its snapshot: it reads every
//! chunk under an exclusive lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL:
//! `pg_advisory_xact_lock` on the document, which appends take in shared mode), lets
//! the caller merge them into the snapshot, and deletes exactly those. So two nodes
//! compacting at once, or a node compacting with a stale copy, lose nothing.
//!
//! Every chunk is sealed with the document's own key (`crypto`), kept in the separate
//! key store. Erasure deletes the rows, leaves a tombstone, and destroys the key.

use automerge::ChangeHash;
use serde::Serialize;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

use super::changes::payload;
use super::crypto::DocKey;
use super::tx::{ChunkAppend, Engine, Provenance, TxMemo, CHANNEL, NOTIFY};
use super::{conflict_if_duplicate, now, with_pool, Pool, Store};
use crate::error::Error;

/// A document's catalog row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogEntry {
    #[serde(serialize_with = "ser_display")]
    pub id: DocumentId,
    pub partition: Partition,
    pub created_at: i64,
    pub created_by: String,
    /// For a plan's hand-over copy (issue 16, item 5): the plan it copies. Fixed at
    /// creation like the partition; the policy lets only a consulent read a copy.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_display_opt"
    )]
    pub handover_of: Option<DocumentId>,
}

fn ser_display_opt<S: serde::Serializer>(v: &Option<DocumentId>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
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
    /// The highest chunk `seq` read: later reads ask only for what came after.
    pub last_seq: i64,
}

/// Chunks read from the store, decrypted and concatenated in write order.
#[derive(Debug, Clone, Default)]
pub struct Chunks {
    pub bytes: Vec<u8>,
    pub incremental_bytes: u64,
    pub snapshot_bytes: u64,
    pub count: u64,
    /// The highest `seq` among them (or the `after` asked for, if none).
    pub last_seq: i64,
}

/// What a compaction wrote.
#[derive(Debug, Clone, Copy)]
pub struct Compacted {
    pub snapshot_bytes: u64,
    pub seq: i64,
}

/// An erased document's tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub partition: Partition,
    pub erased_at: i64,
    pub erased_by: String,
}

/// The catalog columns `kind, wijk_id, created_at, created_by, handover_of`.
pub(super) type CatalogRow = (String, String, i64, String, Option<String>);

pub(super) fn entry_from_row(id: DocumentId, row: CatalogRow) -> Result<CatalogEntry, Error> {
    let (kind, wijk, created_at, created_by, handover_of) = row;
    let handover_of = handover_of
        .map(|plan| plan.parse::<DocumentId>())
        .transpose()
        .map_err(|e| Error::Corrupt(format!("document {id}: handover_of: {e}")))?;
    Ok(CatalogEntry {
        id,
        partition: Partition {
            kind: kind
                .parse::<DocumentKind>()
                .map_err(|e| Error::Corrupt(format!("document {id}: {e}")))?,
            wijk: WijkId::new(wijk).map_err(|e| Error::Corrupt(format!("document {id}: {e}")))?,
        },
        created_at,
        created_by,
        handover_of,
    })
}

/// A catalog row with its id and hand-over flag, as `list_catalog` reads it.
type CatalogListRow = (String, String, String, i64, String, bool, Option<String>);

/// The PostgreSQL advisory lock key of a document's chunks (its id folded to 64 bits).
fn lock_key(id: &DocumentId) -> i64 {
    let b = id.as_bytes();
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    i64::from_le_bytes(lo) ^ i64::from_le_bytes(hi)
}

const LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock($1)";

/// Heads as the catalog's `heads` column holds them: sorted hex, joined by `,`, so
/// equal sets compare equal as text.
pub fn heads_text(heads: &[ChangeHash]) -> String {
    let mut hex: Vec<String> = heads.iter().map(ToString::to_string).collect();
    hex.sort();
    hex.join(",")
}

/// A chunk ready for `INSERT_CHUNK`: (content hash, sealed bytes).
fn sealed(id: &DocumentId, key: &DocKey, data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Ok((key.chunk_hash(data), key.seal(id, data)?))
}

/// Decrypts and concatenates chunk rows `(seq, kind, sealed data)`.
fn open_chunks(
    id: &DocumentId,
    key: &DocKey,
    after: i64,
    rows: Vec<(i64, String, Vec<u8>)>,
) -> Result<Chunks, Error> {
    let mut out = Chunks {
        last_seq: after,
        ..Chunks::default()
    };
    for (seq, kind, sealed) in rows {
        let data = key.open(id, &sealed)?;
        let len = data.len() as u64;
        if kind == "snapshot" {
            out.snapshot_bytes += len;
        } else {
            out.incremental_bytes += len;
        }
        out.count += 1;
        out.last_seq = out.last_seq.max(seq);
        out.bytes.extend_from_slice(&data);
    }
    Ok(out)
}

/// Documents: the catalog, chunks, compaction, erasure, authors and listings
/// (`store.documents()`).
#[derive(Clone, Copy, Debug)]
pub struct Documents<'a>(pub(super) &'a Store);

impl Store {
    /// The documents view of this store.
    pub fn documents(&self) -> Documents<'_> {
        Documents(self)
    }
}

impl Documents<'_> {
    /// Creates the document: its key in the key store, then the catalog row and the
    /// first chunk in one transaction. Returns the key the chunks are sealed with (a
    /// key left by a creation that stopped before its commit is reused, so two nodes
    /// creating one id at once agree on it). `Conflict` if the id is taken, `Erased`
    /// if it was erased.
    pub async fn create_document(
        self,
        entry: &CatalogEntry,
        first_chunk: &[u8],
        key: &DocKey,
    ) -> Result<DocKey, Error> {
        self.create_document_with_heads(entry, first_chunk, None, key)
            .await
    }

    /// As [`create_document`](Self::create_document), recording the first chunk's
    /// `heads` as the committed heads in the catalog (`None`: unknown).
    pub async fn create_document_with_heads(
        self,
        entry: &CatalogEntry,
        first_chunk: &[u8],
        heads: Option<&[ChangeHash]>,
        key: &DocKey,
    ) -> Result<DocKey, Error> {
        self.create_document_with(entry, first_chunk, heads, key, &Provenance::default())
            .await
    }

    /// As [`create_document_with_heads`](Self::create_document_with_heads), recording
    /// `prov` (authors, audit, hand-over flag) in the creation's transaction.
    pub async fn create_document_with(
        self,
        entry: &CatalogEntry,
        first_chunk: &[u8],
        heads: Option<&[ChangeHash]>,
        key: &DocKey,
        prov: &Provenance<'_>,
    ) -> Result<DocKey, Error> {
        if self.tombstone(&entry.id).await?.is_some() {
            return Err(Error::Erased(entry.id.to_string()));
        }
        if self.catalog(&entry.id).await?.is_some() {
            return Err(Error::Conflict(format!("document {} exists", entry.id)));
        }
        let doc = entry.id.to_string();
        with_pool!(self.0.keys(), p => sqlx::query(
            "INSERT INTO doc_keys (doc_id, key, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (doc_id) DO NOTHING",
        )
        .bind(&doc)
        .bind(&key.0[..])
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()))?;
        let key = self.doc_key(&entry.id).await?.ok_or_else(|| {
            Error::Conflict(format!("document {} was erased while created", entry.id))
        })?;
        let (hash, data) = sealed(&entry.id, &key, first_chunk)?;
        with_pool!(self.0.pool(), p => {
            let mut tx = p.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO documents (id, kind, wijk_id, created_at, created_by, heads, access_changed_at, handover_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&doc)
            .bind(entry.partition.kind.as_str())
            .bind(entry.partition.wijk.as_str())
            .bind(entry.created_at)
            .bind(&entry.created_by)
            .bind(heads.map(heads_text))
            .bind(now())
            .bind(entry.handover_of.map(|plan| plan.to_string()))
            .execute(&mut *tx)
            .await
            .map(|_| ());
            conflict_if_duplicate(inserted, || format!("document {} exists", entry.id))?;
            Engine::insert_chunk(&mut tx, &doc, "snapshot", &hash, &data).await?;
            Engine::write_provenance(&mut tx, &doc, prov, &mut TxMemo::default()).await?;
            Engine::mark_changed(&mut tx, &doc).await?;
            tx.commit().await?;
        });
        Ok(key)
    }

    /// The catalog row of a document, if it exists.
    pub async fn catalog(self, id: &DocumentId) -> Result<Option<CatalogEntry>, Error> {
        let row: Option<CatalogRow> = with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT kind, wijk_id, created_at, created_by, handover_of FROM documents WHERE id = $1"
        )
        .bind(id.to_string())
        .fetch_optional(p)
        .await)?;
        row.map(|r| entry_from_row(*id, r)).transpose()
    }

    /// Records a plan's committed hand-over flag in the catalog (for listings); a flip
    /// moves `access_changed_at`, so incremental listings report it.
    pub async fn set_handed_over(self, id: &DocumentId, handed_over: bool) -> Result<(), Error> {
        with_pool!(self.0.pool(), p => sqlx::query(
            "UPDATE documents SET handed_over = $1, access_changed_at = $3 WHERE id = $2 AND handed_over <> $1",
        )
            .bind(handed_over)
            .bind(id.to_string())
            .bind(now())
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The hand-over copy of `plan`, if it has one (at most one at a time: a copy is
    /// made when the plan is handed over and erased when that is withdrawn).
    pub async fn handover_copy_of(self, plan: &DocumentId) -> Result<Option<DocumentId>, Error> {
        let found: Option<String> = with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT id FROM documents WHERE handover_of = $1 ORDER BY created_at LIMIT 1",
        )
        .bind(plan.to_string())
        .fetch_optional(p)
        .await)?;
        found
            .map(|id| id.parse())
            .transpose()
            .map_err(|e| Error::Corrupt(format!("hand-over copy of {plan}: {e}")))
    }

    /// Catalog rows with their hand-over flag, optionally of one wijk and/or kind,
    /// created at or after `since` (unix seconds), oldest first.
    pub async fn list_catalog(
        self,
        wijk: Option<&WijkId>,
        kind: Option<DocumentKind>,
        since: i64,
    ) -> Result<Vec<(CatalogEntry, bool)>, Error> {
        let rows: Vec<CatalogListRow> = with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT id, kind, wijk_id, created_at, created_by, handed_over, handover_of FROM documents
             WHERE ($1 IS NULL OR wijk_id = $1) AND ($2 IS NULL OR kind = $2) AND created_at >= $3
             ORDER BY created_at, id",
        )
        .bind(wijk.map(WijkId::as_str))
        .bind(kind.map(DocumentKind::as_str))
        .bind(since)
        .fetch_all(p)
        .await)?;
        rows.into_iter()
            .map(
                |(id, kind, wijk, created_at, created_by, handed_over, handover_of)| {
                    let id = id
                        .parse()
                        .map_err(|e| Error::Corrupt(format!("catalog id {id:?}: {e}")))?;
                    let entry =
                        entry_from_row(id, (kind, wijk, created_at, created_by, handover_of))?;
                    Ok((entry, handed_over))
                },
            )
            .collect()
    }

    /// Catalog rows of a partition (or all), oldest first.
    pub async fn list_documents(
        self,
        partition: Option<&Partition>,
    ) -> Result<Vec<CatalogEntry>, Error> {
        let rows = self
            .list_catalog(partition.map(|p| &p.wijk), partition.map(|p| p.kind), 0)
            .await?;
        Ok(rows.into_iter().map(|(entry, _)| entry).collect())
    }

    /// The document's key, if it was not destroyed.
    pub async fn doc_key(self, id: &DocumentId) -> Result<Option<DocKey>, Error> {
        let key: Option<Vec<u8>> = with_pool!(self.0.keys(), p => sqlx::query_scalar(
            "SELECT key FROM doc_keys WHERE doc_id = $1"
        )
        .bind(id.to_string())
        .fetch_optional(p)
        .await)?;
        key.map(|k| {
            <[u8; 32]>::try_from(k.as_slice())
                .map(DocKey)
                .map_err(|_| Error::Corrupt(format!("document {id}: key of wrong length")))
        })
        .transpose()
    }

    /// The catalog row and all chunks, decrypted and concatenated in write order.
    pub async fn load_document(self, id: &DocumentId) -> Result<Option<StoredDocument>, Error> {
        let Some(entry) = self.catalog(id).await? else {
            return Ok(None);
        };
        let key = self.doc_key(id).await?.ok_or_else(|| {
            Error::Corrupt(format!(
                "document {id}: its key is gone (erased, or the wrong key store)"
            ))
        })?;
        let chunks = self.chunks_after(id, &key, 0).await?;
        Ok(Some(StoredDocument {
            entry,
            key,
            bytes: chunks.bytes,
            incremental_bytes: chunks.incremental_bytes,
            snapshot_bytes: chunks.snapshot_bytes,
            chunks: chunks.count,
            last_seq: chunks.last_seq,
        }))
    }

    /// The chunks written after `seq` (0: all), decrypted and concatenated in write
    /// order: how a node catches up with what other nodes committed.
    pub async fn chunks_after(
        self,
        id: &DocumentId,
        key: &DocKey,
        after: i64,
    ) -> Result<Chunks, Error> {
        let rows: Vec<(i64, String, Vec<u8>)> = with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT seq, kind, data FROM chunks WHERE doc_id = $1 AND seq > $2 ORDER BY seq"
        )
        .bind(id.to_string())
        .bind(after)
        .fetch_all(p)
        .await)?;
        open_chunks(id, key, after, rows)
    }

    /// Appends an incremental chunk (idempotent: its key is its content hash) and, on
    /// a shared store, tells the other nodes the document's new `heads` in the same
    /// transaction (PostgreSQL delivers the notification only if the commit happens).
    /// Returns the chunk's `seq`, or `None` if it was stored already.
    pub async fn append_chunk(
        self,
        id: &DocumentId,
        key: &DocKey,
        data: &[u8],
        heads: &[ChangeHash],
    ) -> Result<Option<i64>, Error> {
        self.append_chunk_with(id, key, data, None, heads, &Provenance::default())
            .await
    }

    /// As [`append_chunk`](Self::append_chunk), recording `prov` (authors, audit) in
    /// the same transaction: one commit per relayed change. `base`: the committed
    /// heads the writer's copy had before this chunk; the catalog's heads become
    /// `heads` only if they were `base` (else another node appended concurrently, and
    /// they become unknown until the next compaction). On SQLite the group writer
    /// (`store::group`) runs it in a transaction shared with the other queued writes
    /// (one fsync for all of them) and answers after that commit; a failure of this
    /// append fails only this append.
    pub async fn append_chunk_with(
        self,
        id: &DocumentId,
        key: &DocKey,
        data: &[u8],
        base: Option<&[ChangeHash]>,
        heads: &[ChangeHash],
        prov: &Provenance<'_>,
    ) -> Result<Option<i64>, Error> {
        let (hash, data) = sealed(id, key, data)?;
        let job = ChunkAppend {
            doc: id.to_string(),
            hash,
            data,
            base: base.map(heads_text),
            heads: heads_text(heads),
            prov: prov.into(),
        };
        if let Some(writer) = self.0.writer() {
            // SQLite: the group writer commits it with whatever else is queued.
            return writer.append(job).await;
        }
        // PostgreSQL: a transaction of its own (the server merges concurrent WAL
        // flushes itself; see `store::group` for why we leave it so).
        let shared = self.0.is_shared();
        let note = payload(&self.0.node, id, heads);
        let seq = with_pool!(self.0.pool(), p => {
            // (SQLite without a writer, which `Store::open` never makes: IMMEDIATE, as
            // the audit chain needs; see `audit`.)
            let mut tx = if shared { p.begin().await? } else { p.begin_with("BEGIN IMMEDIATE").await? };
            let seq = Engine::append_chunk(&mut tx, &job, lock_key(id), &note, &mut TxMemo::default()).await?;
            tx.commit().await?;
            seq
        });
        Ok(seq)
    }

    /// Replaces the document's chunks with one snapshot, atomically, without losing a
    /// chunk written by someone else: under the document's exclusive lock it reads
    /// every stored chunk, hands their bytes to `build` (which merges them into the
    /// caller's document and returns its snapshot and new heads), then deletes exactly
    /// the chunks it read and inserts the snapshot. Other nodes are notified of the heads.
    pub async fn compact<F>(
        self,
        id: &DocumentId,
        key: &DocKey,
        build: F,
    ) -> Result<Compacted, Error>
    where
        F: FnOnce(&[u8]) -> Result<(Vec<u8>, Vec<ChangeHash>), Error> + Send,
    {
        self.compact_with(id, key, build, &Provenance::default())
            .await
    }

    /// As [`compact`](Self::compact), recording `prov` in the same transaction.
    pub async fn compact_with<F>(
        self,
        id: &DocumentId,
        key: &DocKey,
        build: F,
        prov: &Provenance<'_>,
    ) -> Result<Compacted, Error>
    where
        F: FnOnce(&[u8]) -> Result<(Vec<u8>, Vec<ChangeHash>), Error> + Send,
    {
        let shared = self.0.is_shared();
        let doc = id.to_string();
        let compacted = with_pool!(self.0.pool(), p => {
            // SQLite: IMMEDIATE takes the write lock before the read, so nothing is
            // appended between reading the chunks and deleting them.
            let mut tx = if shared { p.begin().await? } else { p.begin_with("BEGIN IMMEDIATE").await? };
            if shared {
                sqlx::query(LOCK_EXCLUSIVE).bind(lock_key(id)).execute(&mut *tx).await?;
            }
            let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, kind, data FROM chunks WHERE doc_id = $1 ORDER BY seq"
            )
            .bind(&doc)
            .fetch_all(&mut *tx)
            .await?;
            let stored = open_chunks(id, key, 0, rows)?;
            let (snapshot, heads) = build(&stored.bytes)?;
            let (hash, data) = sealed(id, key, &snapshot)?;
            sqlx::query("DELETE FROM chunks WHERE doc_id = $1 AND seq <= $2")
                .bind(&doc)
                .bind(stored.last_seq)
                .execute(&mut *tx)
                .await?;
            let seq = Engine::insert_chunk(&mut tx, &doc, "snapshot", &hash, &data).await?;
            Engine::write_provenance(&mut tx, &doc, prov, &mut TxMemo::default()).await?;
            Engine::mark_changed(&mut tx, &doc).await?;
            // Under the exclusive lock the snapshot holds every stored change.
            sqlx::query("UPDATE documents SET heads = $1 WHERE id = $2")
                .bind(heads_text(&heads))
                .bind(&doc)
                .execute(&mut *tx)
                .await?;
            if shared {
                let note = payload(&self.0.node, id, &heads);
                sqlx::query(NOTIFY).bind(CHANNEL).bind(&note).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Compacted { snapshot_bytes: snapshot.len() as u64, seq: seq.unwrap_or(stored.last_seq) }
        });
        Ok(compacted)
    }

    /// The tombstone of an erased document.
    pub async fn tombstone(self, id: &DocumentId) -> Result<Option<Tombstone>, Error> {
        let row: Option<(String, String, i64, String)> = with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT kind, wijk_id, erased_at, erased_by FROM tombstones WHERE doc_id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(p)
        .await)?;
        row.map(|(kind, wijk, erased_at, erased_by)| {
            Ok(Tombstone {
                partition: Partition {
                    kind: kind
                        .parse()
                        .map_err(|e| Error::Corrupt(format!("tombstone {id}: {e}")))?,
                    wijk: WijkId::new(wijk)
                        .map_err(|e| Error::Corrupt(format!("tombstone {id}: {e}")))?,
                },
                erased_at,
                erased_by,
            })
        })
        .transpose()
    }

    /// Erases a document (AVG art. 17): chunks, sync states, authors and catalog row
    /// go in one transaction that also writes the tombstone; then its key is destroyed,
    /// so copies of the chunks in older backups cannot be decrypted either. Running
    /// servers notice through `access_changes` and tell devices to purge; on
    /// PostgreSQL the transaction also notifies the other nodes (change feed), and
    /// `Hub::get` checks the tombstone before it serves a copy held in memory.
    /// Idempotent: erasing again finishes an erasure that stopped half-way.
    /// On SQLite the erasure is first written to the journal `<database>.erasures`,
    /// so a restored backup forgets the document again (`store::erasures`).
    pub async fn erase(self, id: &DocumentId, by: &str) -> Result<Tombstone, Error> {
        self.erase_with(id, by, true).await
    }

    /// [`erase`](Self::erase), journaled or not (re-applying the journal itself).
    pub(crate) async fn erase_with(
        self,
        id: &DocumentId,
        by: &str,
        journal: bool,
    ) -> Result<Tombstone, Error> {
        let doc = id.to_string();
        let shared = self.0.is_shared();
        // A plan's hand-over copy goes with it (and first: the copy holds nothing the
        // plan does not).
        if let Some(copy) = self.handover_copy_of(id).await? {
            Box::pin(self.erase_with(&copy, by, journal)).await?;
        }
        let tombstone = match self.catalog(id).await? {
            Some(entry) => {
                let erased_at = now();
                if journal {
                    self.0
                        .journal_erasure(id, &entry.partition, erased_at, by)
                        .await?;
                }
                with_pool!(self.0.pool(), p => {
                    let mut tx = p.begin().await?;
                    if shared {
                        // No node may append while the rows go (the chunk's foreign
                        // key would stop the catalog row's delete).
                        sqlx::query(LOCK_EXCLUSIVE).bind(lock_key(id)).execute(&mut *tx).await?;
                    }
                    for table in ["chunks", "sync_states", "change_authors"] {
                        sqlx::query(&format!("DELETE FROM {table} WHERE doc_id = $1"))
                            .bind(&doc)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("DELETE FROM documents WHERE id = $1")
                        .bind(&doc)
                        .execute(&mut *tx)
                        .await?;
                    let seq = Engine::next_change_seq(&mut tx).await?;
                    sqlx::query(
                        "INSERT INTO tombstones (doc_id, kind, wijk_id, erased_at, erased_by, change_seq, handover_of)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&doc)
                    .bind(entry.partition.kind.as_str())
                    .bind(entry.partition.wijk.as_str())
                    .bind(erased_at)
                    .bind(by)
                    .bind(seq)
                    .bind(entry.handover_of.map(|plan| plan.to_string()))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("INSERT INTO access_changes (at, what) VALUES ($1, 'erase')")
                        .bind(erased_at)
                        .execute(&mut *tx)
                        .await?;
                    if shared {
                        // Other nodes drop their copy when this commits (change feed).
                        let note = super::changes::erased_payload(&self.0.node, id);
                        sqlx::query(NOTIFY).bind(CHANNEL).bind(&note).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                });
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
        with_pool!(self.0.keys(), p => sqlx::query("DELETE FROM doc_keys WHERE doc_id = $1")
            .bind(&doc)
            .execute(p)
            .await
            .map(|_| ()))?;
        // Leave no readable remains of the key or the rows in free pages or logs.
        self.0.shred_remains().await?;
        Ok(tombstone)
    }

    /// Which of these documents were erased: one query however many ids (a
    /// connection asks for all its open documents whenever access changes).
    pub async fn erased_among(self, ids: &[DocumentId]) -> Result<Vec<DocumentId>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let erased: Vec<String> = match self.0.pool() {
            Pool::Sqlite(p) => sqlx::query_scalar(
                "SELECT doc_id FROM tombstones WHERE doc_id IN (SELECT value FROM json_each($1))",
            )
            .bind(serde_json::Value::from(list).to_string())
            .fetch_all(p)
            .await?,
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT doc_id FROM tombstones WHERE doc_id = ANY($1)")
                    .bind(list)
                    .fetch_all(p)
                    .await?
            }
        };
        Ok(ids
            .iter()
            .filter(|id| erased.contains(&id.to_string()))
            .copied()
            .collect())
    }

    /// Records who delivered which changes (author binding).
    pub async fn record_authors(
        self,
        id: &DocumentId,
        hashes: &[String],
        user: &str,
        device: &str,
    ) -> Result<(), Error> {
        if hashes.is_empty() {
            return Ok(());
        }
        with_pool!(self.0.pool(), p => {
            let mut tx = p.begin().await?;
            for hash in hashes {
                sqlx::query(
                    "INSERT INTO change_authors (doc_id, change_hash, user_id, device, at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING",
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
        });
        Ok(())
    }

    /// Who delivered each change of a document: (change hash, user, device, unix time).
    pub async fn change_authors(
        self,
        id: &DocumentId,
    ) -> Result<Vec<(String, String, String, i64)>, Error> {
        Ok(with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT change_hash, user_id, device, at FROM change_authors WHERE doc_id = $1 ORDER BY at, change_hash",
        )
        .bind(id.to_string())
        .fetch_all(p)
        .await)?)
    }
}
