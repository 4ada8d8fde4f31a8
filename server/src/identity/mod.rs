//! Identity (issue 17): who someone is, for people who are not service accounts.
//!
//! Layout:
//! - [`settings`]: lifetimes, enrolment and the `[oidc]` issuer (flags, environment, file).
//! - [`oidc`]: verifying an identity provider's JWT; [`jwks`]: its cached keys.
//! - [`device_session`]: sign-in yields a device session: rotating refresh token,
//!   short-lived access tokens.
//! - [`enrolment`]: codes a coordinator gives a volunteer, their QR code, guess limits.
//! - [`http`]: `POST /api/v1/session`, `/session/refresh`, `/session/end`.
//!
//! Access tokens of device sessions are rows of the `tokens` table bound to their
//! session, so today's token checks (websocket upgrade, API, the live re-check of a
//! connection) accept them without change. [`authenticate`] is the one function that
//! also knows the identity provider's tokens, for the places that allow them.

pub mod device_session;
pub mod enrolment;
pub mod http;
pub mod jwks;
pub mod oidc;
pub mod settings;

use sync_core::policy::Principal;

use crate::error::Error;
use crate::state::AppState;

pub use settings::IdentityArgs;

/// Token lifetimes in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access: i64,
    pub refresh_idle: i64,
    pub enrolment_code: i64,
}

/// The identity part of the shared state.
#[derive(Debug)]
pub struct Identity {
    pub lifetimes: Lifetimes,
    /// `None`: no issuer configured, OIDC tokens are refused.
    pub oidc: Option<oidc::OidcVerifier>,
    /// Base URL for enrolment links; `None`: the request's host.
    pub public_url: Option<String>,
    /// Wrong enrolment codes per source and in all.
    pub guesses: enrolment::Guesses,
    /// `/beheer` logins (cookie → checked credential), like the dashboard's.
    pub beheer_sessions: crate::central::session::Sessions,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            lifetimes: Lifetimes {
                access: 600,
                refresh_idle: 30 * 24 * 3600,
                enrolment_code: 900,
            },
            oidc: None,
            public_url: None,
            guesses: enrolment::Guesses::default(),
            beheer_sessions: crate::central::session::Sessions::default(),
        }
    }
}

fn secs(d: humantime::Duration, name: &str) -> Result<i64, Error> {
    let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if s <= 0 {
        return Err(Error::Config(format!("{name} must be at least one second")));
    }
    Ok(s)
}

impl IdentityArgs {
    /// The runtime identity state; refuses nonsense (zero lifetimes, HMAC algorithms,
    /// an issuer without an audience).
    pub fn build(&self) -> Result<Identity, Error> {
        Ok(Identity {
            lifetimes: Lifetimes {
                access: secs(self.access_token_ttl, "access_token_ttl")?,
                refresh_idle: secs(self.refresh_token_idle, "refresh_token_idle")?,
                enrolment_code: secs(self.enrolment_code_ttl, "enrolment_code_ttl")?,
            },
            oidc: oidc::OidcVerifier::from_settings(self)?,
            public_url: self.public_url.clone(),
            guesses: enrolment::Guesses::default(),
            beheer_sessions: crate::central::session::Sessions::default(),
        })
    }
}

/// The user an identity provider's token stands for: verified, then mapped through
/// `buurtsync user link-oidc`. `Unauthorized`-like refusals carry their reason;
/// an unlinked subject is `Forbidden` (never an automatic account).
pub async fn oidc_user(state: &AppState, token: &str) -> Result<String, OidcOutcome> {
    let Some(verifier) = &state.identity.oidc else {
        return Err(OidcOutcome::Refused(
            "sign-in with an identity provider is not configured on this server".into(),
        ));
    };
    let subject = verifier
        .verify(token)
        .await
        .map_err(|r| OidcOutcome::Refused(r.0))?;
    match state.store.oidc_user(&subject).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(OidcOutcome::Unlinked(subject)),
        Err(e) => Err(OidcOutcome::Failed(e)),
    }
}

/// Why an identity provider's token gave no user.
#[derive(Debug)]
pub enum OidcOutcome {
    /// The token is not valid here; the reason is safe to show.
    Refused(String),
    /// Valid, but no buurtsync user is linked to this subject.
    Unlinked(String),
    Failed(Error),
}

/// Whether a presented credential may be an identity provider's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowOidc {
    Yes,
    No,
}

/// The principal of a presented credential and its credential id: a service token or
/// a device session's access token (`tok_…`), or — where `allow` says so — an identity
/// provider's token (`oidc:<subject>`). Everything else is `Unauthorized`; an unlinked
/// subject is `Forbidden`.
pub async fn authenticate(
    state: &AppState,
    presented: &str,
    allow: AllowOidc,
) -> Result<(Principal, String), Error> {
    if allow == AllowOidc::Yes && oidc::OidcVerifier::looks_like_jwt(presented) {
        return match oidc_user(state, presented).await {
            Ok(user) => {
                let subject = format!("oidc:{user}");
                Ok((state.store.accounts().principal(&user).await?, subject))
            }
            Err(OidcOutcome::Refused(reason)) => {
                tracing::info!(%reason, "identity provider token refused");
                Err(Error::Unauthorized)
            }
            Err(OidcOutcome::Unlinked(subject)) => Err(Error::Forbidden(format!(
                "no buurtsync user is linked to {subject:?}"
            ))),
            Err(OidcOutcome::Failed(e)) => Err(e),
        };
    }
    crate::auth::authenticate(&state.store, presented).await
}

/// `/api/v1/session…`.
pub fn routes() -> axum::Router<std::sync::Arc<AppState>> {
    use axum::routing::post;
    axum::Router::new()
        .route("/api/v1/session", post(http::sign_in))
        .route("/api/v1/session/refresh", post(http::refresh))
        .route("/api/v1/session/end", post(http::end))
}
