//! A presented credential to a principal: [`authenticate`] is the one function that
//! does it, for every way in (the extractors in `extract`, sign-in, `/beheer`). Service
//! tokens and device sessions' access tokens are rows of `tokens` (`auth`); an
//! identity provider's token (OIDC) counts only where the caller allows it.

use sync_core::policy::Principal;

use super::oidc;
use crate::error::Error;
use crate::state::AppState;

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
    match state.store.identity().oidc_user(&subject).await {
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
