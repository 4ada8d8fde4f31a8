//! OpenID Connect sign-in: an ID or access token (a JWT) from the configured issuer,
//! verified with `jsonwebtoken` against the issuer's JWKS (`jwks`): signature, `alg`
//! (only the configured asymmetric algorithms: never `none`, never HMAC), `iss`, `aud`,
//! `exp` and `nbf` with the configured clock skew. The configured claim names the
//! person; `store::identity` maps it to a user. The IdP says who someone is; buurtsync's
//! grants say what they may see.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use super::jwks::{JwksCache, KeyError, Source};
use super::settings::IdentityArgs;
use crate::error::Error;

/// The issuer and what its tokens must carry.
#[derive(Debug)]
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    user_claim: String,
    algorithms: Vec<Algorithm>,
    clock_skew: Duration,
    jwks: JwksCache,
}

/// Why a token was refused: said to the client (it holds no secret) and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(reason: impl Into<String>) -> Refused {
    Refused(reason.into())
}

/// Algorithms that may never be configured: symmetric ones would let anyone holding
/// the client secret mint tokens, and `none` is no signature at all.
fn allowed_algorithm(name: &str) -> Result<Algorithm, Error> {
    let alg: Algorithm = name
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("oidc algorithm {name:?} is not known")))?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(Error::Config(format!(
            "oidc algorithm {name}: HMAC is never accepted (use the issuer's RS256/ES256 keys)"
        ))),
        other => Ok(other),
    }
}

impl OidcVerifier {
    /// The verifier the settings ask for; `None` when no issuer is configured.
    pub fn from_settings(s: &IdentityArgs) -> Result<Option<OidcVerifier>, Error> {
        let Some(issuer) = s.oidc_issuer.clone() else {
            return Ok(None);
        };
        let audience = s.oidc_audience.clone().ok_or_else(|| {
            Error::Config(
                "oidc: an issuer needs an audience (the client id buurtsync has there)".into(),
            )
        })?;
        if s.oidc_algorithms.is_empty() {
            return Err(Error::Config("oidc: no algorithms allowed".into()));
        }
        let algorithms = s
            .oidc_algorithms
            .iter()
            .map(|a| allowed_algorithm(a))
            .collect::<Result<Vec<_>, _>>()?;
        let source = match &s.oidc_jwks_url {
            Some(url) => Source::Url(url.clone()),
            None => Source::Discovery(issuer.clone()),
        };
        Ok(Some(OidcVerifier {
            issuer,
            audience,
            user_claim: s.oidc_user_claim.clone(),
            algorithms,
            clock_skew: *s.oidc_clock_skew,
            jwks: JwksCache::new(source, *s.oidc_jwks_min_refresh)?,
        }))
    }

    /// Does this look like a JWT (three dot-separated parts) rather than one of our
    /// opaque tokens?
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && !token.starts_with("bs")
    }

    /// The value of the configured user claim of a valid token, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<String, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::Json(_) => refused(
                "token algorithm not allowed or header unreadable (alg none and HMAC are never accepted)",
            ),
            _ => refused(format!("not a JWT: {e}")),
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(refused(format!(
                "token algorithm {:?} not allowed (allowed: {:?})",
                header.alg, self.algorithms
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| refused("token has no kid (key id)"))?;
        let key = self.jwks.key(kid).await.map_err(|e| match e {
            KeyError::Unknown { .. } => refused(format!(
                "unknown signing key {kid:?}: the issuer does not publish it"
            )),
            KeyError::Unreachable(why) => {
                tracing::warn!(%why, "identity provider's keys unreachable");
                refused("the identity provider's keys could not be fetched")
            }
        })?;
        if key.alg.is_some_and(|alg| alg != header.alg) {
            return Err(refused(format!(
                "token algorithm {:?} does not match its key's",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.clock_skew.as_secs();
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => refused("token expired"),
                ErrorKind::ImmatureSignature => refused("token not valid yet (nbf)"),
                ErrorKind::InvalidAudience => refused("wrong audience (aud)"),
                ErrorKind::InvalidIssuer => refused("wrong issuer (iss)"),
                ErrorKind::InvalidSignature => {
                    refused("bad signature: not signed by the issuer's key")
                }
                ErrorKind::MissingRequiredClaim(c) => refused(format!("claim {c} missing")),
                ErrorKind::InvalidAlgorithm => refused("token algorithm not allowed"),
                _ => refused(format!("token refused: {e}")),
            })?;
        match &data.claims[&self.user_claim] {
            serde_json::Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(refused(format!(
                "claim {:?} (the configured user claim) missing",
                self.user_claim
            ))),
        }
    }
}
