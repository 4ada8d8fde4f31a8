//! The identity settings: one struct that clap parses (flags and environment) and the
//! configuration file's `[identity]` and `[oidc]` sections fill where clap used its
//! defaults. Turned into the runtime [`super::Identity`] by [`IdentityArgs::build`].

use clap::Args;
use serde::Deserialize;

use crate::error::Error;

fn defaults() -> IdentityArgs {
    IdentityArgs::default()
}

/// Token lifetimes, enrolment and the OpenID Connect issuer.
#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// Lifetime of a device session's access token (what the websocket and the API
    /// accept). Short: a copied access token is useless soon; devices refresh.
    #[arg(long, env = "BUURTSYNC_ACCESS_TOKEN_TTL", default_value_t = defaults().access_token_ttl)]
    pub access_token_ttl: humantime::Duration,
    /// A device session not refreshed for this long ends (a phone left in a drawer).
    #[arg(long, env = "BUURTSYNC_REFRESH_TOKEN_IDLE", default_value_t = defaults().refresh_token_idle)]
    pub refresh_token_idle: humantime::Duration,
    /// How long an enrolment code from /beheer can be used.
    #[arg(long, env = "BUURTSYNC_ENROLMENT_CODE_TTL", default_value_t = defaults().enrolment_code_ttl)]
    pub enrolment_code_ttl: humantime::Duration,
    /// Public base URL of this server (e.g. `https://sync.gemeente.nl`), for the
    /// enrolment link in the QR code; default: the request's own host.
    #[arg(long, env = "BUURTSYNC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// OpenID Connect issuer (`iss` of accepted tokens). Unset: no OIDC sign-in.
    #[arg(long, env = "BUURTSYNC_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Accepted `aud` (the client id buurtsync is registered with at the issuer).
    #[arg(long, env = "BUURTSYNC_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// The issuer's JWKS URL; default: `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "BUURTSYNC_OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,
    /// The claim that names the person; its value is linked to a user with
    /// `buurtsync user link-oidc USER --subject VALUE`.
    #[arg(long, env = "BUURTSYNC_OIDC_USER_CLAIM", default_value_t = defaults().oidc_user_claim)]
    pub oidc_user_claim: String,
    /// Accepted signature algorithms (comma-separated): RS256, RS384, RS512, PS256,
    /// ES256, ES384. `none` and HMAC (HS*) are never accepted.
    #[arg(
        long,
        env = "BUURTSYNC_OIDC_ALGORITHMS",
        default_values_t = defaults().oidc_algorithms,
        value_delimiter = ','
    )]
    pub oidc_algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "BUURTSYNC_OIDC_CLOCK_SKEW", default_value_t = defaults().oidc_clock_skew)]
    pub oidc_clock_skew: humantime::Duration,
    /// The JWKS is fetched again for an unknown `kid` at most this often.
    #[arg(long, env = "BUURTSYNC_OIDC_JWKS_MIN_REFRESH", default_value_t = defaults().oidc_jwks_min_refresh)]
    pub oidc_jwks_min_refresh: humantime::Duration,
}

impl Default for IdentityArgs {
    /// The one place the defaults are written (clap's come from here too).
    fn default() -> Self {
        let secs = |s: u64| humantime::Duration::from(std::time::Duration::from_secs(s));
        IdentityArgs {
            access_token_ttl: secs(10 * 60),
            refresh_token_idle: secs(30 * 24 * 3600),
            enrolment_code_ttl: secs(15 * 60),
            public_url: None,
            oidc_issuer: None,
            oidc_audience: None,
            oidc_jwks_url: None,
            oidc_user_claim: "sub".into(),
            oidc_algorithms: vec!["RS256".into(), "ES256".into()],
            oidc_clock_skew: secs(60),
            oidc_jwks_min_refresh: secs(30),
        }
    }
}

/// `[identity]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    pub access_token_ttl: Option<String>,
    pub refresh_token_idle: Option<String>,
    pub enrolment_code_ttl: Option<String>,
    pub public_url: Option<String>,
}

/// `[oidc]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_url: Option<String>,
    pub user_claim: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub clock_skew: Option<String>,
    pub jwks_min_refresh: Option<String>,
}

fn duration(key: &str, text: &str) -> Result<humantime::Duration, Error> {
    text.parse::<humantime::Duration>()
        .map_err(|e| Error::Config(format!("{key} = {text:?}: {e}")))
}

impl IdentityArgs {
    /// Fills what clap took from its defaults (`defaulted(id)`: `config::defaulted`)
    /// with the file's `[identity]` and `[oidc]`.
    pub fn apply_file(
        &mut self,
        defaulted: impl Fn(&str) -> bool,
        identity: IdentitySection,
        oidc: OidcSection,
    ) -> Result<(), Error> {
        let pairs = [
            (
                "access_token_ttl",
                identity.access_token_ttl,
                &mut self.access_token_ttl,
            ),
            (
                "refresh_token_idle",
                identity.refresh_token_idle,
                &mut self.refresh_token_idle,
            ),
            (
                "enrolment_code_ttl",
                identity.enrolment_code_ttl,
                &mut self.enrolment_code_ttl,
            ),
            (
                "oidc_clock_skew",
                oidc.clock_skew,
                &mut self.oidc_clock_skew,
            ),
            (
                "oidc_jwks_min_refresh",
                oidc.jwks_min_refresh,
                &mut self.oidc_jwks_min_refresh,
            ),
        ];
        for (id, value, field) in pairs {
            if let Some(v) = value.filter(|_| defaulted(id)) {
                *field = duration(id, &v)?;
            }
        }
        let options = [
            ("public_url", identity.public_url, &mut self.public_url),
            ("oidc_issuer", oidc.issuer, &mut self.oidc_issuer),
            ("oidc_audience", oidc.audience, &mut self.oidc_audience),
            ("oidc_jwks_url", oidc.jwks_url, &mut self.oidc_jwks_url),
        ];
        for (id, value, field) in options {
            if let Some(v) = value.filter(|_| defaulted(id)) {
                *field = Some(v);
            }
        }
        if let Some(v) = oidc.user_claim.filter(|_| defaulted("oidc_user_claim")) {
            self.oidc_user_claim = v;
        }
        if let Some(v) = oidc.algorithms.filter(|_| defaulted("oidc_algorithms")) {
            self.oidc_algorithms = v;
        }
        Ok(())
    }
}
