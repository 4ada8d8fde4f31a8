//! Who is asking: axum extractors that turn a request's credential into a principal.
//!
//! Handlers never read `Authorization` themselves. They take [`Authenticated`] (a
//! bearer token in the header), [`SocketAuthenticated`] (the header, or `?token=` for
//! browsers, which cannot set headers on a websocket), or a role such as
//! [`CentralOffice`]. A refusal is an [`Error`], so every route answers alike: 401 with
//! `WWW-Authenticate: Bearer realm="buurtsync"` for a missing or bad credential, 403
//! for a role that may not use the endpoint.
//!
//! One parser ([`presented`]) finds the credential and one function ([`principal_for`])
//! turns a [`Credential`] into a principal, through [`authenticate`]
//! (the one place credentials become principals): service tokens and device sessions'
//! access tokens (both rows of the `tokens` table). Identity providers' tokens are
//! taken only by sign-in and `/beheer` (`AllowOidc::Yes` there), which read the
//! header with the same parser ([`bearer`]).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::Deserialize;
use sync_core::policy::{self, Principal};

use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;
use crate::identity::principal::{authenticate, AllowOidc};
use crate::state::AppState;
use crate::store::Store;

/// What a client presented to prove who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A `bst_…` token secret (`auth`): a service token or a device session's access
    /// token.
    Bearer(String),
}

impl Credential {
    /// The secret as presented.
    pub fn secret(&self) -> &str {
        match self {
            Credential::Bearer(secret) => secret,
        }
    }

    /// The secret as presented, owned.
    pub fn into_secret(self) -> String {
        match self {
            Credential::Bearer(secret) => secret,
        }
    }
}

/// An authenticated caller: the principal and the id of the token it used (devices and
/// audit entries are named by the token id, never the secret).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub token_id: String,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The credential in `Authorization: Bearer …` (the scheme in any case).
pub fn bearer(headers: &HeaderMap) -> Option<Credential> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| Credential::Bearer(token.trim().to_owned()))
}

/// The credential of a request: the [`bearer`] header, then, only where
/// `query_allowed`, `?token=…`.
pub fn presented(parts: &Parts, query_allowed: bool) -> Option<Credential> {
    bearer(&parts.headers).or_else(|| {
        query_allowed
            .then(|| Query::<TokenQuery>::try_from_uri(&parts.uri).ok())
            .flatten()
            .and_then(|Query(q)| q.token)
            .map(Credential::Bearer)
    })
}

/// The principal a credential stands for; `Unauthorized` for anything unknown,
/// expired or revoked.
pub async fn principal_for(
    state: &AppState,
    credential: &Credential,
) -> Result<Authenticated, Error> {
    match credential {
        Credential::Bearer(secret) => {
            let (principal, token_id) = authenticate(state, secret, AllowOidc::No).await?;
            Ok(Authenticated {
                principal,
                token_id,
            })
        }
    }
}

async fn extract(
    parts: &Parts,
    state: &Arc<AppState>,
    query_allowed: bool,
) -> Result<Authenticated, Error> {
    let credential = presented(parts, query_allowed).ok_or(Error::Unauthorized)?;
    principal_for(state, &credential).await
}

/// A bearer token in the header (the HTTP API: no tokens in API URLs, which end up in
/// proxy logs).
impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        extract(parts, state, false).await
    }
}

/// The websocket upgrade's caller: the header, or `?token=` (browsers cannot set
/// headers on a websocket).
#[derive(Debug, Clone)]
pub struct SocketAuthenticated(pub Authenticated);

impl FromRequestParts<Arc<AppState>> for SocketAuthenticated {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        extract(parts, state, true).await.map(SocketAuthenticated)
    }
}

/// A caller the policy lets receive the central office's data
/// ([`policy::may_receive_central`]); anyone else gets 403 and a `denied` audit entry.
#[derive(Debug, Clone)]
pub struct CentralOffice(pub Authenticated);

impl CentralOffice {
    /// Lets the central office through; refuses and audits anyone else.
    pub async fn check(store: &Store, who: Authenticated) -> Result<CentralOffice, Error> {
        match policy::may_receive_central(&who.principal) {
            Ok(()) => Ok(CentralOffice(who)),
            Err(reason) => {
                tracing::info!(user = %who.principal.user_id, %reason, "central office endpoint denied");
                store
                    .audit()
                    .append(
                        &AuditEvent::new(
                            &who.principal.user_id,
                            format!("{}/central", who.token_id),
                            AuditAction::Denied,
                        )
                        .with_detail(format!("central: {reason}")),
                    )
                    .await?;
                Err(Error::Forbidden(reason.to_string()))
            }
        }
    }
}

impl FromRequestParts<Arc<AppState>> for CentralOffice {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let who = Authenticated::from_request_parts(parts, state).await?;
        CentralOffice::check(&state.store, who).await
    }
}
