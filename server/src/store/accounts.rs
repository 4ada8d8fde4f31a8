//! Accounts: wijken, users, grants and tokens.

use serde::Serialize;
use sync_core::partition::WijkId;
use sync_core::policy::{GlobalRole, Grant, Principal, WijkRole};

use super::{conflict_if_duplicate, now, with_pool, Pool, Store};
use crate::error::Error;

/// A token as listed (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// `service`: a long-lived token issued with `token issue`. Device sessions'
    /// short-lived access tokens are not listed here (`list_device_sessions`).
    pub kind: &'static str,
}

/// A user with their grants.
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub grants: Vec<Grant>,
    pub global_roles: Vec<GlobalRole>,
}

/// Accounts: wijken, users, grants and tokens, and the access-change counter that
/// tells running servers to re-check (`store.accounts()`).
#[derive(Clone, Copy, Debug)]
pub struct Accounts<'a>(&'a Store);

impl Store {
    /// The accounts view of this store.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts(self)
    }
}

impl Accounts<'_> {
    fn pool(&self) -> &Pool {
        self.0.pool()
    }

    /// Records that access changed, so running servers (every node of a shared
    /// store) re-check live connections.
    async fn access_changed(self, what: &str) -> Result<(), Error> {
        with_pool!(self.pool(), p => sqlx::query("INSERT INTO access_changes (at, what) VALUES ($1, $2)")
            .bind(now())
            .bind(what)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A number that grows whenever a grant or token changes.
    pub async fn access_version(self) -> Result<i64, Error> {
        Ok(with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT COALESCE(MAX(id), 0) FROM access_changes"
        )
        .fetch_one(p)
        .await)?)
    }

    /// The user of a token that is still live, by token id (for re-checking a live
    /// connection).
    pub async fn live_token_user(self, token_id: &str) -> Result<Option<String>, Error> {
        let found = self.live_token(Some(token_id), None).await?;
        Ok(found.map(|(_, user)| user))
    }

    /// (token id, user) of a live (unrevoked, unexpired) token, by id or by secret
    /// hash (as `revoke_token` finds one).
    async fn live_token(
        self,
        id: Option<&str>,
        secret_hash: Option<&[u8]>,
    ) -> Result<Option<(String, String)>, Error> {
        Ok(with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT id, user_id FROM tokens
             WHERE (id = $1 OR secret_hash = $2) AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(id.unwrap_or(""))
        .bind(secret_hash.unwrap_or(&[]))
        .bind(now())
        .fetch_optional(p)
        .await)?)
    }

    /// A token's expiry (unix seconds) and revocation time, by token id: a live
    /// connection arms a timer at the expiry and, when the token stops working, tells
    /// the peer which of the two ended it. `None` for an unknown id.
    pub async fn token_lifetime(self, token_id: &str) -> Result<Option<(i64, Option<i64>)>, Error> {
        Ok(with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT expires_at, revoked_at FROM tokens WHERE id = $1",
        )
        .bind(token_id)
        .fetch_optional(p)
        .await)?)
    }

    pub async fn add_wijk(self, id: &WijkId, name: &str) -> Result<(), Error> {
        let result = with_pool!(self.pool(), p => sqlx::query(
            "INSERT INTO wijken (id, name, created_at) VALUES ($1, $2, $3)"
        )
        .bind(id.as_str())
        .bind(name)
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()));
        conflict_if_duplicate(result, || format!("wijk {id} already exists"))
    }

    pub async fn wijk_exists(self, id: &WijkId) -> Result<bool, Error> {
        let found: Option<String> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT id FROM wijken WHERE id = $1"
        )
        .bind(id.as_str())
        .fetch_optional(p)
        .await)?;
        Ok(found.is_some())
    }

    pub async fn list_wijken(self) -> Result<Vec<(String, String)>, Error> {
        Ok(with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT id, name FROM wijken ORDER BY id"
        )
        .fetch_all(p)
        .await)?)
    }

    /// Every wijk's name by its id.
    pub async fn wijk_names(self) -> Result<std::collections::HashMap<String, String>, Error> {
        Ok(self.list_wijken().await?.into_iter().collect())
    }

    pub async fn add_user(self, id: &str, name: &str) -> Result<(), Error> {
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_whitespace) {
            return Err(Error::Invalid(format!(
                "invalid user id {id:?}: 1-128 characters, no spaces"
            )));
        }
        let result = with_pool!(self.pool(), p => sqlx::query(
            "INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3)"
        )
        .bind(id)
        .bind(name)
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()));
        conflict_if_duplicate(result, || format!("user {id} already exists"))
    }

    async fn require_user(self, id: &str) -> Result<(), Error> {
        let found: Option<String> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT id FROM users WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await)?;
        found
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("user {id}")))
    }

    /// Grants a role in a wijk. Granting twice is harmless.
    pub async fn grant(self, user: &str, wijk: &WijkId, role: WijkRole) -> Result<(), Error> {
        self.require_user(user).await?;
        if !self.wijk_exists(wijk).await? {
            return Err(Error::NotFound(format!("wijk {wijk}")));
        }
        with_pool!(self.pool(), p => sqlx::query(
            "INSERT INTO grants (user_id, wijk_id, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(wijk.as_str())
        .bind(role.as_str())
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()))?;
        self.access_changed("grant").await?;
        Ok(())
    }

    /// Grants a role that is not tied to a wijk.
    pub async fn grant_global(self, user: &str, role: GlobalRole) -> Result<(), Error> {
        self.require_user(user).await?;
        with_pool!(self.pool(), p => sqlx::query(
            "INSERT INTO global_grants (user_id, role, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(role.as_str())
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()))?;
        self.access_changed("grant").await?;
        Ok(())
    }

    /// Removes a role in a wijk; returns whether there was one.
    pub async fn revoke_grant(
        self,
        user: &str,
        wijk: &WijkId,
        role: WijkRole,
    ) -> Result<bool, Error> {
        let removed = with_pool!(self.pool(), p => sqlx::query(
            "DELETE FROM grants WHERE user_id = $1 AND wijk_id = $2 AND role = $3"
        )
        .bind(user)
        .bind(wijk.as_str())
        .bind(role.as_str())
        .execute(p)
        .await
        .map(|done| done.rows_affected()))?;
        self.access_changed("ungrant").await?;
        Ok(removed > 0)
    }

    /// Removes a global role (consulent, central office, admin); returns whether there
    /// was one. Like every grant change, live connections and dashboard sessions
    /// re-read the principal through `access_changes` (issue 16, item 14).
    pub async fn revoke_global(self, user: &str, role: GlobalRole) -> Result<bool, Error> {
        let removed = with_pool!(self.pool(), p => sqlx::query(
            "DELETE FROM global_grants WHERE user_id = $1 AND role = $2"
        )
        .bind(user)
        .bind(role.as_str())
        .execute(p)
        .await
        .map(|done| done.rows_affected()))?;
        self.access_changed("ungrant").await?;
        Ok(removed > 0)
    }

    /// The user's grants as the policy sees them.
    pub async fn principal(self, user: &str) -> Result<Principal, Error> {
        let rows: Vec<(String, String)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT wijk_id, role FROM grants WHERE user_id = $1 ORDER BY wijk_id, role",
        )
        .bind(user)
        .fetch_all(p)
        .await)?;
        let mut grants = Vec::new();
        for (wijk, role) in rows {
            // Rows were validated on insert; a row we cannot read grants nothing.
            if let (Ok(wijk), Ok(role)) = (WijkId::new(wijk), role.parse::<WijkRole>()) {
                grants.push(Grant { wijk, role });
            }
        }
        let roles: Vec<String> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "SELECT role FROM global_grants WHERE user_id = $1 ORDER BY role"
        )
        .bind(user)
        .fetch_all(p)
        .await)?;
        Ok(Principal {
            user_id: user.to_owned(),
            grants,
            global_roles: roles.iter().filter_map(|r| r.parse().ok()).collect(),
        })
    }

    pub async fn list_users(self) -> Result<Vec<UserInfo>, Error> {
        let rows: Vec<(String, String)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT id, name FROM users ORDER BY id"
        )
        .fetch_all(p)
        .await)?;
        let mut out = Vec::new();
        for (id, name) in rows {
            let principal = self.principal(&id).await?;
            out.push(UserInfo {
                id,
                name,
                grants: principal.grants,
                global_roles: principal.global_roles,
            });
        }
        Ok(out)
    }

    pub async fn insert_token(
        self,
        id: &str,
        user: &str,
        secret_hash: &[u8],
        expires_at: i64,
    ) -> Result<(), Error> {
        self.require_user(user).await?;
        with_pool!(self.pool(), p => sqlx::query(
            "INSERT INTO tokens (id, user_id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user)
        .bind(secret_hash)
        .bind(now())
        .bind(expires_at)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The user a live (unrevoked, unexpired) token belongs to.
    pub async fn token_user(self, secret_hash: &[u8]) -> Result<Option<(String, String)>, Error> {
        self.live_token(None, Some(secret_hash)).await
    }

    /// Revokes by token id or by secret hash; returns the revoked token's id.
    pub async fn revoke_token(
        self,
        id: Option<&str>,
        secret_hash: Option<&[u8]>,
    ) -> Result<Option<String>, Error> {
        let revoked: Option<String> = with_pool!(self.pool(), p => sqlx::query_scalar(
            "UPDATE tokens SET revoked_at = $1 WHERE (id = $2 OR secret_hash = $3) AND revoked_at IS NULL RETURNING id",
        )
        .bind(now())
        .bind(id.unwrap_or(""))
        .bind(secret_hash.unwrap_or(&[]))
        .fetch_optional(p)
        .await)?;
        self.access_changed("token revoked").await?;
        Ok(revoked)
    }

    pub async fn list_tokens(self, user: Option<&str>) -> Result<Vec<TokenInfo>, Error> {
        let rows: Vec<(String, String, i64, i64, Option<i64>)> = with_pool!(self.pool(), p => sqlx::query_as(
            "SELECT id, user_id, created_at, expires_at, revoked_at FROM tokens
             WHERE ($1 IS NULL OR user_id = $1) AND session_id IS NULL ORDER BY created_at, id",
        )
        .bind(user)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, user_id, created_at, expires_at, revoked_at)| TokenInfo {
                    id,
                    user_id,
                    created_at,
                    expires_at,
                    revoked_at,
                    kind: "service",
                },
            )
            .collect())
    }
}
