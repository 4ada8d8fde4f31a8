//! Identity (issue 17): who someone is, for people who are not service accounts.
//!
//! Layout:
//! - [`settings`]: lifetimes, enrolment and the `[oidc]` issuer (flags, environment, file).
//! - [`oidc`]: verifying an identity provider's JWT; [`jwks`]: its cached keys.
//! - [`device_session`]: sign-in yields a device session: rotating refresh token,
//!   short-lived access tokens.
//! - [`enrolment`]: codes a coordinator gives a volunteer, their QR code, guess limits.
//! - [`http`]: `POST /api/v1/session`, `/session/refresh`, `/session/end`.
//! - [`principal`]: [`principal::authenticate`], any presented credential to a
//!   principal.
//!
//! Here: the runtime [`Identity`] (`AppState::identity`) built from the settings.
//!
//! Access tokens of device sessions are rows of the `tokens` table bound to their
//! session, so today's token checks (websocket upgrade, API, the live re-check of a
//! connection) accept them without change. [`principal::authenticate`] is the one
//! function that also knows the identity provider's tokens, for the places that allow
//! them.

pub mod device_session;
pub mod enrolment;
pub mod http;
pub mod jwks;
pub mod oidc;
pub mod principal;
pub mod settings;

use crate::error::Error;

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
