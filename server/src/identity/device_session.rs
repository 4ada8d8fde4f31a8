//! Device sessions: what signing in (OIDC token or enrolment code) yields. A refresh
//! token (`bsr_…`, stored as SHA-256, rotated on every use) and short-lived access
//! tokens (`bst_…`, rows of `tokens` bound to the session, so the websocket and the API
//! accept them exactly like service tokens).
//!
//! Rotation rule: presenting a refresh token that was already rotated away ends the
//! whole session (someone holds a copy), which revokes its access tokens and closes its
//! live connections within one access poll.

use serde::Serialize;
use sync_core::partition::WijkId;

use crate::auth::hash_secret;
use crate::error::Error;
use crate::store::crypto::random_bytes;
use crate::store::identity::{NewAccess, NewSession, Redeemed, Rotation, Via};
use crate::store::{now, Store};

use super::Lifetimes;

/// What a device gets back from signing in or refreshing. The secrets are shown once.
#[derive(Debug, Clone, Serialize)]
pub struct Granted {
    pub session: String,
    pub user: String,
    pub access_token: String,
    pub access_token_expires_at: i64,
    /// Seconds the access token lives (OAuth's `expires_in`).
    pub expires_in: i64,
    pub refresh_token: String,
    /// The session ends if it is not refreshed before this (unix seconds).
    pub session_expires_at: i64,
}

/// What went wrong, in words a device (and its person) can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Unknown refresh token.
    Unknown,
    /// Switched off, removed from the wijk, or not refreshed in time.
    Ended,
    /// An old refresh token came back: the session was ended just now.
    Reused { session: String },
}

/// A new access token and refresh token, with the hashes the store keeps of them.
struct Secrets {
    access_id: String,
    access: String,
    refresh: String,
    access_hash: Vec<u8>,
    refresh_hash: Vec<u8>,
}

fn secrets() -> Secrets {
    let access = format!("bst_{}", hex::encode(random_bytes::<32>()));
    let refresh = format!("bsr_{}", hex::encode(random_bytes::<32>()));
    Secrets {
        access_id: format!("tok_{}", hex::encode(random_bytes::<6>())),
        access_hash: hash_secret(&access),
        refresh_hash: hash_secret(&refresh),
        access,
        refresh,
    }
}

impl Secrets {
    /// The access token's row, issued at `at`.
    fn access_row(&self, l: &Lifetimes, at: i64) -> NewAccess<'_> {
        NewAccess {
            id: &self.access_id,
            hash: &self.access_hash,
            expires_at: at + l.access,
        }
    }

    /// A new session `id` of `user` (empty: the enrolment code's person) on `device`,
    /// started at `at`.
    fn session<'a>(
        &'a self,
        id: &'a str,
        user: &'a str,
        device: &'a str,
        via: Via,
        l: &Lifetimes,
        at: i64,
    ) -> NewSession<'a> {
        NewSession {
            id,
            user,
            device_name: device,
            via,
            wijk: None,
            expires_at: at + l.refresh_idle,
            refresh_hash: &self.refresh_hash,
            access: self.access_row(l, at),
        }
    }
}

/// A device name as shown on /beheer: trimmed, one line, at most 64 characters.
pub fn device_name(given: Option<&str>) -> String {
    let name: String = given
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let name = name.trim();
    if name.is_empty() {
        "apparaat".into()
    } else {
        name.to_owned()
    }
}

fn granted(session: String, user: String, s: Secrets, l: &Lifetimes, at: i64) -> Granted {
    Granted {
        session,
        user,
        access_token: s.access,
        access_token_expires_at: at + l.access,
        expires_in: l.access,
        refresh_token: s.refresh,
        session_expires_at: at + l.refresh_idle,
    }
}

/// Starts a session for a user who signed in with their identity provider.
pub async fn start_oidc(
    store: &Store,
    l: &Lifetimes,
    user: &str,
    device: &str,
) -> Result<Granted, Error> {
    let at = now();
    let s = secrets();
    let id = format!("ses_{}", hex::encode(random_bytes::<8>()));
    store
        .identity()
        .start_device_session(&s.session(&id, user, device, Via::Oidc, l, at))
        .await?;
    Ok(granted(id, user.to_owned(), s, l, at))
}

/// Exchanges an enrolment code (normalised) for a session of the code's person.
/// `Ok(Err(spent))`: the code is unknown (`false`) or used/expired (`true`).
pub async fn start_enrolment(
    store: &Store,
    l: &Lifetimes,
    code: &str,
    device: &str,
) -> Result<Result<(Granted, WijkId), bool>, Error> {
    let at = now();
    let s = secrets();
    let id = format!("ses_{}", hex::encode(random_bytes::<8>()));
    let outcome = store
        .identity()
        .enrol(
            &hash_secret(code),
            &s.session(&id, "", device, Via::Enrolment, l, at),
            at,
        )
        .await?;
    Ok(match outcome {
        Redeemed::Enrolled { user, wijk } => Ok((granted(id, user, s, l, at), WijkId::new(wijk)?)),
        Redeemed::Spent => Err(true),
        Redeemed::Unknown => Err(false),
    })
}

/// Rotates a refresh token: a new refresh token and a new access token, or why not.
/// Reuse ends the session here (and says so).
pub async fn refresh(
    store: &Store,
    l: &Lifetimes,
    refresh_token: &str,
) -> Result<Result<Granted, Ended>, Error> {
    if !(refresh_token.len() == 68 && refresh_token.starts_with("bsr_")) {
        return Ok(Err(Ended::Unknown));
    }
    let at = now();
    let s = secrets();
    let outcome = store
        .identity()
        .rotate_refresh(
            &hash_secret(refresh_token),
            &s.refresh_hash,
            s.access_row(l, at),
            at + l.refresh_idle,
            at,
        )
        .await?;
    Ok(match outcome {
        Rotation::Rotated { session, user } => Ok(granted(session, user, s, l, at)),
        Rotation::Reused { session } => {
            store
                .identity()
                .revoke_device_session(&session, "refresh token reused")
                .await?;
            Err(Ended::Reused { session })
        }
        Rotation::Ended => Err(Ended::Ended),
        Rotation::Unknown => Err(Ended::Unknown),
    })
}

/// `token list`: the service tokens (already rendered) followed by the device
/// sessions, as text and as one JSON array (sessions with `"kind": "device_session"`).
pub async fn list_with_sessions(
    store: &Store,
    user: Option<&str>,
    tokens_text: String,
    tokens_json: serde_json::Value,
) -> Result<(String, serde_json::Value), Error> {
    let sessions = store.identity().list_device_sessions(user).await?;
    let at = now();
    let mut text = tokens_text;
    let mut list = match tokens_json {
        serde_json::Value::Array(list) => list,
        other => vec![other],
    };
    for s in &sessions {
        let status = if s.revoked_at.is_some() {
            "revoked"
        } else if s.expires_at <= at {
            "expired"
        } else {
            "live"
        };
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "{}\t{}\tdevice session ({}, {:?})\t{status}\tlast seen {}",
            s.id, s.user_id, s.via, s.device_name, s.last_seen_at
        ));
        let mut value = serde_json::to_value(s).map_err(|e| Error::Invalid(e.to_string()))?;
        value["kind"] = serde_json::json!("device_session");
        list.push(value);
    }
    Ok((text, serde_json::Value::Array(list)))
}
