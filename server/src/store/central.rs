//! The central office's view of the catalog: what changed after a cursor (documents
//! and erasures, in change order), and the server secret its pseudonyms derive from.
//!
//! Only ids, partitions, times and change numbers: the records themselves are built
//! from the decrypted documents by `crate::central`.

use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

use super::{now, with_pool, Store};
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

/// A feed row as selected: seq, id, kind, wijk, created_at, changed_at, erased.
type FeedTuple = (i64, String, String, String, Option<i64>, i64, bool);

/// The name of the pseudonym secret in the key store's `secrets` table.
const PSEUDONYM_SECRET: &str = "central_pseudonym";

/// The central office's view: the change feed, its cursor and the pseudonym secret
/// (`store.central()`).
#[derive(Clone, Copy, Debug)]
pub struct Central<'a>(&'a Store);

impl Store {
    /// The central office's view of this store.
    pub fn central(&self) -> Central<'_> {
        Central(self)
    }
}

impl Central<'_> {
    /// Documents committed and documents erased after change number `after`, oldest
    /// change first, at most `limit`. A document appears once, with its last change.
    pub async fn changes_after(self, after: i64, limit: i64) -> Result<Vec<FeedRow>, Error> {
        let rows: Vec<FeedTuple> = with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT change_seq, id, kind, wijk_id, created_at, updated_at, FALSE AS erased
               FROM documents WHERE change_seq > $1
             UNION ALL
             SELECT change_seq, doc_id, kind, wijk_id, NULL, erased_at, TRUE
               FROM tombstones WHERE change_seq > $2
             ORDER BY change_seq LIMIT $3",
        )
        .bind(after)
        .bind(after)
        .bind(limit)
        .fetch_all(p)
        .await)?;
        rows.into_iter()
            .map(|(seq, id, kind, wijk, created_at, changed_at, erased)| {
                let corrupt =
                    |e: &dyn std::fmt::Display| Error::Corrupt(format!("feed row {id}: {e}"));
                Ok(FeedRow {
                    seq,
                    id: id.parse().map_err(|e| corrupt(&e))?,
                    partition: Partition {
                        kind: kind.parse::<DocumentKind>().map_err(|e| corrupt(&e))?,
                        wijk: WijkId::new(wijk.clone()).map_err(|e| corrupt(&e))?,
                    },
                    created_at,
                    changed_at,
                    erased,
                })
            })
            .collect()
    }

    /// The highest change number handed out so far.
    pub async fn last_change_seq(self) -> Result<i64, Error> {
        let seq: i64 = with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT seq FROM change_counter WHERE id = 1"
        )
        .fetch_one(p)
        .await)?;
        Ok(seq)
    }

    /// The 32-byte secret the central office's pseudonyms derive from, created from OS
    /// randomness on first use and kept in the key store (never the main database).
    pub async fn pseudonym_secret(self) -> Result<[u8; 32], Error> {
        // Nodes asking at once agree: the first insert wins, the others read it.
        with_pool!(self.0.keys(), p => sqlx::query(
            "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(PSEUDONYM_SECRET)
        .bind(&crate::store::crypto::random_bytes::<32>()[..])
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()))?;
        let value: Vec<u8> = with_pool!(self.0.keys(), p => sqlx::query_scalar(
            "SELECT value FROM secrets WHERE name = $1"
        )
        .bind(PSEUDONYM_SECRET)
        .fetch_one(p)
        .await)?;
        <[u8; 32]>::try_from(value.as_slice())
            .map_err(|_| Error::Corrupt("the pseudonym secret has the wrong length".into()))
    }
}
