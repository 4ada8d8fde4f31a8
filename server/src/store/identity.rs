//! Identity rows (issue 17): device sessions and their rotating refresh tokens,
//! enrolment codes, and the identity provider's subjects of users.
//!
//! A device session's access tokens are rows of `tokens` with `session_id` set, so
//! every path that accepts a token (`auth::authenticate`, the live re-check of a
//! connection) accepts them unchanged; ending a session revokes them in the same
//! transaction and records an access change, so live connections close within one
//! poll of `serve::watch_access`.
//!
//! Functions that decide on time take `now`, so tests can check expiry without waiting.

use serde::Serialize;
use sync_core::partition::WijkId;

use super::{now, with_pool, Store};
use crate::error::Error;

/// How a device session was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Oidc,
    Enrolment,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Oidc => "oidc",
            Via::Enrolment => "enrolment",
        }
    }
}

/// The rows a new device session starts with: the session, its first refresh token and
/// its first access token (hashes only).
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub device_name: &'a str,
    pub via: Via,
    pub wijk: Option<&'a WijkId>,
    pub expires_at: i64,
    pub refresh_hash: &'a [u8],
    pub access: NewAccess<'a>,
}

/// One access token of a session.
#[derive(Debug, Clone, Copy)]
pub struct NewAccess<'a> {
    pub id: &'a str,
    pub hash: &'a [u8],
    pub expires_at: i64,
}

/// A device session as listed (never a secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: String,
    pub user_id: String,
    pub device_name: String,
    pub via: String,
    pub wijk_id: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_why: Option<String>,
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Rotated: the old token is used up, the new one and a new access token stored.
    Rotated { session: String, user: String },
    /// A token that was already rotated away: the session must end (it is stolen, or
    /// the device lost an answer; either way nobody can tell which copy is genuine).
    Reused { session: String },
    /// The session was switched off or ran out.
    Ended,
    /// Never issued.
    Unknown,
}

/// What redeeming an enrolment code came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// A device session was started for this user in this wijk.
    Enrolled { user: String, wijk: String },
    /// The code exists but was used, expired, or its person left the wijk.
    Spent,
    /// No such code.
    Unknown,
}

const SESSION_COLUMNS: &str = "id, user_id, device_name, via, wijk_id, created_at, last_seen_at, expires_at, revoked_at, revoked_why";

/// The statements of one transaction, written once for both engines: each takes the
/// open transaction as `&mut *tx` (`sqlx::Executor` for SQLite and PostgreSQL alike).
macro_rules! insert_session_rows {
    ($tx:expr, $new:expr, $now:expr) => {{
        let new = $new;
        sqlx::query(
            "INSERT INTO device_sessions (id, user_id, device_name, via, wijk_id, created_at, last_seen_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        )
        .bind(new.id)
        .bind(new.user)
        .bind(new.device_name)
        .bind(new.via.as_str())
        .bind(new.wijk.map(WijkId::as_str))
        .bind($now)
        .bind(new.expires_at)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (secret_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(new.refresh_hash)
        .bind(new.id)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(
            "INSERT INTO tokens (id, user_id, secret_hash, created_at, expires_at, session_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new.access.id)
        .bind(new.user)
        .bind(new.access.hash)
        .bind($now)
        .bind(new.access.expires_at)
        .bind(new.id)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// People's sign-in (`store.identity()`): device sessions with their refresh and
/// access tokens, enrolment codes, identity provider links, and the people of a wijk
/// as `/beheer` shows and changes them.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a>(&'a Store);

impl Store {
    /// The identity view of this store.
    pub fn identity(&self) -> Identity<'_> {
        Identity(self)
    }
}

impl Identity<'_> {
    /// Starts a device session (OIDC sign-in): session, refresh token and first access
    /// token in one transaction.
    pub async fn start_device_session(self, new: &NewSession<'_>) -> Result<(), Error> {
        let at = now();
        with_pool!(self.0.pool(), p => async {
            let mut tx = p.begin().await?;
            insert_session_rows!(tx, new, at);
            tx.commit().await
        }.await)?;
        Ok(())
    }

    /// Redeems an enrolment code and starts the device session it stands for, in one
    /// transaction: a code is used at most once, even by two devices at the same time.
    /// `new.user` and `new.wijk` are ignored: the code decides them.
    pub async fn enrol(
        self,
        code_hash: &[u8],
        new: &NewSession<'_>,
        at: i64,
    ) -> Result<Redeemed, Error> {
        let outcome: Redeemed = with_pool!(self.0.pool(), p => async {
            let mut tx = p.begin().await?;
            // The person must still be in the wijk the code was made for.
            let taken: Option<(String, String, String)> = sqlx::query_as(
                "UPDATE enrolment_codes SET used_at = $2, session_id = $3
                 WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2
                   AND EXISTS (SELECT 1 FROM grants g WHERE g.user_id = enrolment_codes.user_id
                               AND g.wijk_id = enrolment_codes.wijk_id)
                 RETURNING id, user_id, wijk_id",
            )
            .bind(code_hash)
            .bind(at)
            .bind(new.id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((_, user, wijk)) = taken else {
                let exists: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM enrolment_codes WHERE code_hash = $1",
                )
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await?;
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(if exists.is_some() { Redeemed::Spent } else { Redeemed::Unknown });
            };
            let wijk_id = WijkId::new(wijk.clone()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let own = NewSession { user: &user, wijk: Some(&wijk_id), via: Via::Enrolment, ..new.clone() };
            insert_session_rows!(tx, &own, at);
            tx.commit().await?;
            Ok(Redeemed::Enrolled { user, wijk })
        }.await)?;
        Ok(outcome)
    }

    /// Rotates a refresh token (see [`Rotation`]); `expires_at` is the session's new
    /// idle limit. The old token is marked used atomically, so two concurrent uses of
    /// one token cannot both rotate.
    pub async fn rotate_refresh(
        self,
        old_hash: &[u8],
        new_hash: &[u8],
        access: NewAccess<'_>,
        expires_at: i64,
        at: i64,
    ) -> Result<Rotation, Error> {
        let outcome: Rotation = with_pool!(self.0.pool(), p => async {
            let mut tx = p.begin().await?;
            let taken: Option<String> = sqlx::query_scalar(
                "UPDATE refresh_tokens SET used_at = $2 WHERE secret_hash = $1 AND used_at IS NULL
                 RETURNING session_id",
            )
            .bind(old_hash)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(session) = taken else {
                let known: Option<String> = sqlx::query_scalar(
                    "SELECT session_id FROM refresh_tokens WHERE secret_hash = $1",
                )
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(match known {
                    Some(session) => Rotation::Reused { session },
                    None => Rotation::Unknown,
                });
            };
            let live: Option<String> = sqlx::query_scalar(
                "SELECT user_id FROM device_sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
            )
            .bind(&session)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(user) = live else {
                tx.rollback().await?;
                return Ok(Rotation::Ended);
            };
            sqlx::query("INSERT INTO refresh_tokens (secret_hash, session_id, created_at) VALUES ($1, $2, $3)")
                .bind(new_hash)
                .bind(&session)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO tokens (id, user_id, secret_hash, created_at, expires_at, session_id)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(access.id)
            .bind(&user)
            .bind(access.hash)
            .bind(at)
            .bind(access.expires_at)
            .bind(&session)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE device_sessions SET last_seen_at = $2, expires_at = $3 WHERE id = $1")
                .bind(&session)
                .bind(at)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Rotation::Rotated { session, user })
        }.await)?;
        Ok(outcome)
    }

    /// Ends a device session: the session and every access token of it are revoked and
    /// an access change is recorded (live connections close within one poll), all in
    /// one transaction. Returns the session as it was, `None` if it was not live.
    pub async fn revoke_device_session(
        self,
        id: &str,
        why: &str,
    ) -> Result<Option<SessionInfo>, Error> {
        let at = now();
        let revoked: Option<SessionInfo> = with_pool!(self.0.pool(), p => async {
            let mut tx = p.begin().await?;
            let row: Option<SessionInfo> = sqlx::query_as(&format!(
                "UPDATE device_sessions SET revoked_at = $2, revoked_why = $3
                 WHERE id = $1 AND revoked_at IS NULL RETURNING {SESSION_COLUMNS}"
            ))
            .bind(id)
            .bind(at)
            .bind(why)
            .fetch_optional(&mut *tx)
            .await?;
            if row.is_some() {
                sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE session_id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO access_changes (at, what) VALUES ($1, $2)")
                    .bind(at)
                    .bind("device session ended")
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        Ok(revoked)
    }

    /// One device session.
    pub async fn device_session(self, id: &str) -> Result<Option<SessionInfo>, Error> {
        Ok(with_pool!(self.0.pool(), p => sqlx::query_as(&format!(
            "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(p)
        .await)?)
    }

    /// The device session an access token belongs to (`None`: a service token).
    pub async fn session_of_token(self, token_id: &str) -> Result<Option<String>, Error> {
        let found: Option<Option<String>> = with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT session_id FROM tokens WHERE id = $1"
        )
        .bind(token_id)
        .fetch_optional(p)
        .await)?;
        Ok(found.flatten())
    }

    /// Device sessions, of one user or all, newest first.
    pub async fn list_device_sessions(self, user: Option<&str>) -> Result<Vec<SessionInfo>, Error> {
        Ok(with_pool!(self.0.pool(), p => sqlx::query_as(&format!(
            "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE ($1 IS NULL OR user_id = $1)
             ORDER BY created_at DESC, id"
        ))
        .bind(user)
        .fetch_all(p)
        .await)?)
    }

    /// Device sessions of the people who hold a role in `wijk`, newest first.
    pub async fn wijk_device_sessions(self, wijk: &WijkId) -> Result<Vec<SessionInfo>, Error> {
        Ok(with_pool!(self.0.pool(), p => sqlx::query_as(&format!(
            "SELECT {SESSION_COLUMNS} FROM device_sessions
             WHERE user_id IN (SELECT user_id FROM grants WHERE wijk_id = $1)
             ORDER BY created_at DESC, id"
        ))
        .bind(wijk.as_str())
        .fetch_all(p)
        .await)?)
    }

    /// The people of a wijk: (user id, name, roles in the wijk), by id.
    pub async fn wijk_people(
        self,
        wijk: &WijkId,
    ) -> Result<Vec<(String, String, Vec<String>)>, Error> {
        let rows: Vec<(String, String, String)> = with_pool!(self.0.pool(), p => sqlx::query_as(
            "SELECT u.id, u.name, g.role FROM grants g JOIN users u ON u.id = g.user_id
             WHERE g.wijk_id = $1 ORDER BY u.id, g.role",
        )
        .bind(wijk.as_str())
        .fetch_all(p)
        .await)?;
        let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
        for (id, name, role) in rows {
            match out.last_mut() {
                Some(last) if last.0 == id => last.2.push(role),
                _ => out.push((id, name, vec![role])),
            }
        }
        Ok(out)
    }

    /// Takes every role of `user` in `wijk` away and ends the device sessions enrolled
    /// for that wijk, in one transaction with an access change. Returns the roles.
    pub async fn remove_from_wijk(self, user: &str, wijk: &WijkId) -> Result<Vec<String>, Error> {
        let at = now();
        let roles: Vec<String> = with_pool!(self.0.pool(), p => async {
            let mut tx = p.begin().await?;
            let roles: Vec<String> = sqlx::query_scalar(
                "DELETE FROM grants WHERE user_id = $1 AND wijk_id = $2 RETURNING role",
            )
            .bind(user)
            .bind(wijk.as_str())
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE tokens SET revoked_at = $3 WHERE revoked_at IS NULL AND session_id IN
                 (SELECT id FROM device_sessions WHERE user_id = $1 AND wijk_id = $2 AND revoked_at IS NULL)",
            )
            .bind(user)
            .bind(wijk.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE device_sessions SET revoked_at = $3, revoked_why = 'removed from wijk'
                 WHERE user_id = $1 AND wijk_id = $2 AND revoked_at IS NULL",
            )
            .bind(user)
            .bind(wijk.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO access_changes (at, what) VALUES ($1, $2)")
                .bind(at)
                .bind("removed from wijk")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(roles)
        }.await)?;
        Ok(roles)
    }

    /// Stores a new enrolment code (its hash). A clash with a live code's hash is a
    /// `Conflict` (the caller draws another code).
    pub async fn insert_enrolment_code(
        self,
        id: &str,
        code_hash: &[u8],
        user: &str,
        wijk: &WijkId,
        created_by: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        let result = with_pool!(self.0.pool(), p => sqlx::query(
            "INSERT INTO enrolment_codes (id, code_hash, user_id, wijk_id, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(code_hash)
        .bind(user)
        .bind(wijk.as_str())
        .bind(created_by)
        .bind(now())
        .bind(expires_at)
        .execute(p)
        .await
        .map(|_| ()));
        super::conflict_if_duplicate(result, || "enrolment code clash".into())
    }

    /// Links an identity provider subject to a user (one user per subject).
    pub async fn link_oidc(self, user: &str, subject: &str) -> Result<(), Error> {
        if subject.is_empty() || subject.len() > 512 {
            return Err(Error::Invalid("subject: 1-512 characters".into()));
        }
        let known: Option<String> = with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT id FROM users WHERE id = $1"
        )
        .bind(user)
        .fetch_optional(p)
        .await)?;
        if known.is_none() {
            return Err(Error::NotFound(format!("user {user}")));
        }
        let result = with_pool!(self.0.pool(), p => sqlx::query(
            "INSERT INTO oidc_subjects (subject, user_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(subject)
        .bind(user)
        .bind(now())
        .execute(p)
        .await
        .map(|_| ()));
        super::conflict_if_duplicate(result, || format!("subject {subject:?} is already linked"))
    }

    /// Removes a subject's link; returns whether there was one.
    pub async fn unlink_oidc(self, subject: &str) -> Result<bool, Error> {
        let n = with_pool!(self.0.pool(), p => sqlx::query("DELETE FROM oidc_subjects WHERE subject = $1")
            .bind(subject)
            .execute(p)
            .await
            .map(|d| d.rows_affected()))?;
        if n > 0 {
            with_pool!(self.0.pool(), p => sqlx::query("INSERT INTO access_changes (at, what) VALUES ($1, $2)")
                .bind(now())
                .bind("oidc unlinked")
                .execute(p)
                .await
                .map(|_| ()))?;
        }
        Ok(n > 0)
    }

    /// The user a subject is linked to.
    pub async fn oidc_user(self, subject: &str) -> Result<Option<String>, Error> {
        Ok(with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT user_id FROM oidc_subjects WHERE subject = $1"
        )
        .bind(subject)
        .fetch_optional(p)
        .await)?)
    }

    /// A user's name, if the user exists.
    pub async fn user_name(self, user: &str) -> Result<Option<String>, Error> {
        Ok(with_pool!(self.0.pool(), p => sqlx::query_scalar(
            "SELECT name FROM users WHERE id = $1"
        )
        .bind(user)
        .fetch_optional(p)
        .await)?)
    }
}
