//! The issuer's signing keys (JWKS), fetched once and cached; fetched again when a
//! token names a `kid` the cache does not know (the issuer rotated its keys), but at
//! most once per `min_refresh`, so tokens with made-up `kid`s cannot make the server
//! hammer the issuer.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::DecodingKey;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// One usable key: the decoding key and the algorithm the JWK pins, if any.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    pub alg: Option<jsonwebtoken::Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Cached {
    keys: HashMap<String, Key>,
    fetched: Option<Instant>,
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A JWKS URL given in the settings.
    Url(String),
    /// `jwks_uri` of `<issuer>/.well-known/openid-configuration`, looked up on first use.
    Discovery(String),
}

#[derive(Debug)]
pub struct JwksCache {
    source: Source,
    min_refresh: Duration,
    http: reqwest::Client,
    cached: Mutex<Cached>,
}

/// Why no key could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The issuer does not (or no longer) publish this `kid`.
    Unknown { refreshed: bool },
    /// The issuer could not be reached or answered nonsense.
    Unreachable(String),
}

impl JwksCache {
    pub fn new(source: Source, min_refresh: Duration) -> Result<JwksCache, crate::Error> {
        // reqwest speaks TLS through rustls with the process's provider (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| crate::Error::Config(format!("oidc: http client: {e}")))?;
        Ok(JwksCache {
            source,
            min_refresh,
            http,
            cached: Mutex::new(Cached::default()),
        })
    }

    /// The key named `kid`: from the cache, or after fetching the JWKS again when the
    /// cache does not know it and the last fetch is at least `min_refresh` ago.
    pub async fn key(&self, kid: &str) -> Result<Key, KeyError> {
        let mut cached = self.cached.lock().await;
        if let Some(key) = cached.keys.get(kid) {
            return Ok(key.clone());
        }
        let may_fetch = cached
            .fetched
            .is_none_or(|at| at.elapsed() >= self.min_refresh);
        if !may_fetch {
            return Err(KeyError::Unknown { refreshed: false });
        }
        let keys = self.fetch().await?;
        cached.fetched = Some(Instant::now());
        cached.keys = keys;
        cached
            .keys
            .get(kid)
            .cloned()
            .ok_or(KeyError::Unknown { refreshed: true })
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, KeyError> {
        let url = match &self.source {
            Source::Url(url) => url.clone(),
            Source::Discovery(issuer) => {
                let doc: serde_json::Value = self
                    .get_json(&format!(
                        "{}/.well-known/openid-configuration",
                        issuer.trim_end_matches('/')
                    ))
                    .await?;
                doc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| {
                        KeyError::Unreachable("discovery document has no jwks_uri".into())
                    })?
                    .to_owned()
            }
        };
        let set: serde_json::Value = self.get_json(&url).await?;
        let Some(list) = set["keys"].as_array() else {
            return Err(KeyError::Unreachable(format!("{url}: no \"keys\" array")));
        };
        let mut keys = HashMap::new();
        for value in list {
            // A key we cannot use (another type, no kid) is skipped, not fatal: issuers
            // publish encryption keys and certificates beside their signing keys.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
                continue;
            };
            // A shared secret in a public key set is a misconfiguration; never use one.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<jsonwebtoken::Algorithm>().ok());
            keys.insert(kid, Key { decoding, alg });
        }
        tracing::info!(%url, keys = keys.len(), "fetched the identity provider's signing keys");
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, KeyError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| KeyError::Unreachable(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(KeyError::Unreachable(format!(
                "{url}: HTTP {}",
                response.status()
            )));
        }
        response
            .json()
            .await
            .map_err(|e| KeyError::Unreachable(format!("{url}: {e}")))
    }
}
