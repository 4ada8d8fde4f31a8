//! Discovery: which documents this user may hold, from the server's authenticated
//! listing `GET /api/v1/documents` (ids and partitions only, filtered by the server's
//! access policy), and who the token belongs to (`GET /api/v1/me`).
//!
//! The sync loop asks the **full** listing at each fresh start and every
//! `full_reconcile_interval_ms`: an id that *disappears* from it is what tells a device
//! that was offline that access ended, so acknowledged documents it lacks are purged.
//! In between it asks **incrementally** (`?since=<cursor>`, the `cursor` of the previous
//! answer): only what was created or became readable since, never a reason to purge.
//! A server that answers without a `cursor` gets the full listing every time.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

/// How long one listing request may take.
const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
struct ListingBody {
    documents: Vec<ListedDoc>,
    /// The server's cursor for the next incremental listing (opaque to us).
    #[serde(default)]
    cursor: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MeBody {
    user: String,
}

/// Why an HTTP call to the server failed.
#[derive(Debug)]
pub enum HttpError {
    /// HTTP 401: the token is invalid, expired or revoked.
    Unauthorized,
    /// The server's certificate was not trusted.
    Tls(String),
    /// Anything else (network, server error, unexpected answer).
    Other(String),
}

impl HttpError {
    fn from_reqwest(what: &str, e: &reqwest::Error) -> HttpError {
        match crate::tls::failure(e) {
            Some(reason) => HttpError::Tls(reason),
            None => HttpError::Other(format!("{what}: {e}")),
        }
    }
}

#[derive(Deserialize)]
struct ListedDoc {
    id: String,
    kind: String,
    wijk: String,
}

/// The documents the server says this user may read.
pub type Listing = HashMap<DocumentId, Partition>;

/// One answer of the listing.
pub struct Fetched {
    pub listing: Listing,
    /// Whether this was the full listing (absence means: no longer readable).
    pub full: bool,
    /// What to pass as `since` next time, when the server supports it.
    pub cursor: Option<String>,
}

/// The listing URL that belongs to a websocket URL: `ws://h:p/sync` →
/// `http://h:p/api/v1/documents` (`wss` → `https`).
pub fn listing_url(server_url: &str) -> Result<Url, String> {
    let mut url = Url::parse(server_url).map_err(|e| format!("server url {server_url:?}: {e}"))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => {
            return Err(format!(
                "server url: unsupported scheme {other:?} (use ws:// or wss://)"
            ))
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| format!("server url {server_url:?}: cannot derive the HTTP address"))?;
    url.set_path("/api/v1/documents");
    url.set_query(None);
    Ok(url)
}

/// Fetches the listing: incremental after `since`, or full when `since` is `None`.
pub async fn fetch(
    http: &reqwest::Client,
    url: &Url,
    token: &str,
    since: Option<&str>,
) -> Result<Fetched, HttpError> {
    let mut url = url.clone();
    if let Some(since) = since {
        url.query_pairs_mut().append_pair("since", since);
    }
    let bytes = get(http, url, token, "discovery").await?;
    let body: ListingBody = serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::Other(format!("discovery: unexpected answer: {e}")))?;
    let mut listing = Listing::new();
    for doc in body.documents {
        // Skip what this build does not understand rather than fail the whole listing.
        let (Ok(id), Ok(kind), Ok(wijk)) = (
            DocumentId::from_str(&doc.id),
            DocumentKind::from_str(&doc.kind),
            WijkId::new(doc.wijk),
        ) else {
            continue;
        };
        listing.insert(id, Partition { wijk, kind });
    }
    let cursor = body.cursor.and_then(|c| match c {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    Ok(Fetched {
        listing,
        full: since.is_none(),
        cursor,
    })
}

/// The user the token belongs to (`GET /api/v1/me`).
pub async fn fetch_me(
    http: &reqwest::Client,
    listing: &Url,
    token: &str,
) -> Result<String, HttpError> {
    let mut url = listing.clone();
    url.set_path("/api/v1/me");
    let bytes = get(http, url, token, "who am I").await?;
    let body: MeBody = serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::Other(format!("who am I: unexpected answer: {e}")))?;
    Ok(body.user)
}

async fn get(
    http: &reqwest::Client,
    url: Url,
    token: &str,
    what: &str,
) -> Result<Vec<u8>, HttpError> {
    let response = http
        .get(url)
        .bearer_auth(token)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| HttpError::from_reqwest(what, &e))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(HttpError::Unauthorized);
    }
    if !status.is_success() {
        return Err(HttpError::Other(format!("{what}: HTTP {status}")));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| HttpError::from_reqwest(what, &e))?;
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listing address follows the websocket address; other schemes are refused.
    #[test]
    fn listing_urls() {
        let check = |ws: &str, expected: Result<&str, ()>| {
            let got = listing_url(ws).map(|u| u.to_string()).map_err(|_| ());
            assert_eq!(got, expected.map(str::to_owned), "{ws}");
        };
        check(
            "ws://127.0.0.1:8080/sync",
            Ok("http://127.0.0.1:8080/api/v1/documents"),
        );
        check(
            "wss://buurtsync.example.nl/sync?x=1",
            Ok("https://buurtsync.example.nl/api/v1/documents"),
        );
        check("ftp://x/sync", Err(()));
        check("not a url", Err(()));
    }
}
