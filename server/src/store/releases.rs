//! The central office's release memory (`store.releases()`): what every aggregate
//! release published, per cell, so a release on any node, after any restart, is
//! consistent with every earlier one (`crate::central::disclosure` decides; this file
//! only keeps what it decided).
//!
//! Two nodes may release at once. Neither holds a lock while it computes: each reads
//! the memory with the number of the last release ([`Releases::load`]), decides, and
//! records its release as that number plus one ([`Releases::record`]). The primary key
//! of `central_releases` lets exactly one of two releases computed from the same memory
//! be recorded; the other gets `false` and must be decided again from the new memory
//! before anything leaves. The number and the changed cells are written in one
//! transaction, so the memory never holds half a release.

use std::collections::HashMap;

use super::{now, with_pool, Store};
use crate::error::Error;

/// Rows per multi-row upsert: 4 parameters each, far below either engine's limit.
const ROWS_PER_STATEMENT: usize = 250;

/// What the releases so far said of one cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Released {
    pub value: f64,
    pub suppressed: bool,
}

/// The memory as of one release.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Remembered {
    /// The number of the last release that changed the memory (0: none yet).
    pub seq: i64,
    /// Per cell key (`wijk|period|metric`).
    pub cells: HashMap<String, Released>,
}

/// The release memory (`store.releases()`).
#[derive(Clone, Copy, Debug)]
pub struct Releases<'a>(&'a Store);

impl Store {
    /// The central office's release memory.
    pub fn releases(&self) -> Releases<'_> {
        Releases(self)
    }
}

impl Releases<'_> {
    /// The last release's number, then every remembered cell. In this order: cells
    /// recorded after the number was read make the next [`record`](Self::record)
    /// conflict, never pass unnoticed.
    pub async fn load(self) -> Result<Remembered, Error> {
        let seq: i64 = with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) FROM central_releases"
        )
        .fetch_one(p)
        .await)?;
        let rows: Vec<(String, f64, bool)> = with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT cell, value, suppressed FROM central_release_cells"
        )
        .fetch_all(p)
        .await)?;
        Ok(Remembered {
            seq,
            cells: rows
                .into_iter()
                .map(|(cell, value, suppressed)| (cell, Released { value, suppressed }))
                .collect(),
        })
    }

    /// Records release `after + 1` with the cells it changed, in one transaction.
    /// `false`: another release took that number first (this one was decided from an
    /// older memory and must not leave); nothing was written.
    pub async fn record(self, after: i64, changed: &[(String, Released)]) -> Result<bool, Error> {
        let seq = after + 1;
        let shared = self.0.is_shared();
        let cells = i64::try_from(changed.len()).unwrap_or(i64::MAX);
        let recorded = with_pool!(self.0.pool(), p => {
            // SQLite: IMMEDIATE takes the write lock at once (no deadlock upgrading a
            // read lock). PostgreSQL: the second of two inserts of one number waits for
            // the first to commit, then inserts nothing.
            let mut tx = if shared {
                p.begin().await?
            } else {
                p.begin_with("BEGIN IMMEDIATE").await?
            };
            let won = sqlx::query(
                "INSERT INTO central_releases (seq, released_at, cells) VALUES ($1, $2, $3)
                 ON CONFLICT (seq) DO NOTHING",
            )
            .bind(seq)
            .bind(now())
            .bind(cells)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if won {
                for chunk in changed.chunks(ROWS_PER_STATEMENT) {
                    let sql = upsert_sql(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for (cell, r) in chunk {
                        q = q.bind(cell).bind(r.value).bind(r.suppressed).bind(seq);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            won
        });
        Ok(recorded)
    }
}

/// `INSERT … VALUES ($1, $2, $3, $4), … ON CONFLICT (cell) DO UPDATE …` for `rows` rows.
fn upsert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let b = 4 * r;
            format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
        })
        .collect();
    format!(
        "INSERT INTO central_release_cells (cell, value, suppressed, release_seq) VALUES {}
         ON CONFLICT (cell) DO UPDATE SET value = excluded.value,
             suppressed = excluded.suppressed, release_seq = excluded.release_seq",
        values.join(", ")
    )
}
