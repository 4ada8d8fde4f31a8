//! Persisted sync states: per (peer store, document), what the relay's sync session
//! with that peer knew, so a reconnect resumes instead of starting from nothing.
//! Bounded per user (most recently used peer stores) and by age.

use sync_core::protocol::DocumentId;

use super::{now, with_pool, Store};
use crate::error::Error;

/// Persisted sync states (`store.sync_states()`).
#[derive(Clone, Copy, Debug)]
pub struct SyncStates<'a>(&'a Store);

impl Store {
    /// The sync states view of this store.
    pub fn sync_states(&self) -> SyncStates<'_> {
        SyncStates(self)
    }
}

impl SyncStates<'_> {
    /// The persisted sync state of a peer store for a document.
    /// Only `user`'s own: a storageId is the peer's self-description, so another
    /// user announcing the same one reads nothing (and overwrites nothing, see
    /// [`put`](Self::put)).
    pub async fn get(
        self,
        storage_id: &str,
        user: &str,
        id: &DocumentId,
    ) -> Result<Option<Vec<u8>>, Error> {
        Ok(with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT state FROM sync_states WHERE storage_id = $1 AND doc_id = $2 AND user_id = $3"
        )
        .bind(storage_id)
        .bind(id.to_string())
        .bind(user)
        .fetch_optional(p)
        .await)?)
    }

    /// Persists sync states of one peer store saved by `user`'s connection, in one
    /// transaction, and keeps the table bounded: only the user's `per_user` most
    /// recently used peer stores keep states, and states older than `ttl` go.
    pub async fn put(
        self,
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
        let per_user = i64::try_from(per_user.max(1)).unwrap_or(i64::MAX);
        let oldest = at.saturating_sub(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        with_pool!(self.0.pool(), p => {
            let mut tx = p.begin().await?;
            for (id, state) in states {
                sqlx::query(
                    "INSERT INTO sync_states (storage_id, doc_id, state, updated_at, user_id)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (storage_id, doc_id) DO UPDATE SET state = excluded.state,
                       updated_at = excluded.updated_at, user_id = excluded.user_id
                     WHERE sync_states.user_id IS NULL OR sync_states.user_id = excluded.user_id",
                )
                .bind(storage_id)
                .bind(id.to_string())
                .bind(state)
                .bind(at)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            }
            // Keep the user's `per_user` most recently used peer stores (the one saving
            // now always among them), and drop every state older than the TTL.
            sqlx::query(
                "DELETE FROM sync_states WHERE user_id = $1 AND storage_id NOT IN (
                     SELECT storage_id FROM sync_states WHERE user_id = $1
                     GROUP BY storage_id ORDER BY MAX(updated_at) DESC, storage_id = $2 DESC
                     LIMIT $3)",
            )
            .bind(user)
            .bind(storage_id)
            .bind(per_user)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM sync_states WHERE updated_at < $1")
                .bind(oldest)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Distinct peer stores with persisted sync states, of one user or of everyone.
    pub async fn storages(self, user: Option<&str>) -> Result<u64, Error> {
        let n: i64 = with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT COUNT(DISTINCT storage_id) FROM sync_states WHERE $1 IS NULL OR user_id = $1",
        )
        .bind(user)
        .fetch_one(p)
        .await)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
