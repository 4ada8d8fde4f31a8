//! The central office's view of the catalog: what changed after a cursor (documents
//! and erasures, in change order), and the server secret its pseudonyms derive from.
//!
//! Only ids, partitions, times and change numbers: the records themselves are built
//! from the decrypted documents by `crate::central`.

use sqlx::Row;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

use super::{now, Store};
use crate::error::Error;

/// One entry of the change feed: a document's last commit or its erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    /// The change number: the feed's cursor.
    pub seq: i64,
    pub id: DocumentId,
    pub partition: Partition,
    /// Unix seconds; for an erased document, when it was created is gone.
    pub created_at: Option<i64>,
    /// The last commit, or the erasure.
    pub changed_at: i64,
    pub erased: bool,
}

/// The name of the pseudonym secret in the key store's `secrets` table.
const PSEUDONYM_SECRET: &str = "central_pseudonym";

impl Store {
    /// Documents committed and documents erased after change number `after`, oldest
    /// change first, at most `limit`. A document appears once, with its last change.
    pub async fn changes_after(&self, after: i64, limit: i64) -> Result<Vec<FeedRow>, Error> {
        let rows = sqlx::query(
            "SELECT change_seq, id, kind, wijk_id, created_at, updated_at AS changed_at, 0 AS erased
               FROM documents WHERE change_seq > ?
             UNION ALL
             SELECT change_seq, doc_id, kind, wijk_id, NULL, erased_at, 1
               FROM tombstones WHERE change_seq > ?
             ORDER BY change_seq LIMIT ?",
        )
        .bind(after)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get("id");
                let kind: String = r.get("kind");
                let wijk: String = r.get("wijk_id");
                let corrupt =
                    |e: &dyn std::fmt::Display| Error::Corrupt(format!("feed row {id}: {e}"));
                Ok(FeedRow {
                    seq: r.get("change_seq"),
                    id: id.parse().map_err(|e| corrupt(&e))?,
                    partition: Partition {
                        kind: kind.parse::<DocumentKind>().map_err(|e| corrupt(&e))?,
                        wijk: WijkId::new(wijk).map_err(|e| corrupt(&e))?,
                    },
                    created_at: r.get("created_at"),
                    changed_at: r.get("changed_at"),
                    erased: r.get::<i64, _>("erased") != 0,
                })
            })
            .collect()
    }

    /// The highest change number handed out so far.
    pub async fn last_change_seq(&self) -> Result<i64, Error> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM change_counter WHERE id = 1")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// The 32-byte secret the central office's pseudonyms derive from, created from OS
    /// randomness on first use and kept in the key store (never the main database).
    pub async fn pseudonym_secret(&self) -> Result<[u8; 32], Error> {
        sqlx::query("INSERT OR IGNORE INTO secrets (name, value, created_at) VALUES (?, ?, ?)")
            .bind(PSEUDONYM_SECRET)
            .bind(&crate::auth::random_bytes::<32>()[..])
            .bind(now())
            .execute(self.keys())
            .await?;
        let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
            .bind(PSEUDONYM_SECRET)
            .fetch_one(self.keys())
            .await?;
        <[u8; 32]>::try_from(value.as_slice())
            .map_err(|_| Error::Corrupt("the pseudonym secret has the wrong length".into()))
    }
}
