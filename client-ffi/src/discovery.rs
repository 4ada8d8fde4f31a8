//! Discovery: which documents this user may hold, from the server's authenticated
//! listing `GET /api/v1/documents` (ids and partitions only, filtered by the server's
//! access policy). The sync loop asks it on every connect and every
//! `discovery_interval_ms` while online: ids it does not hold yet are requested over the
//! websocket; documents the server once acknowledged but no longer lists are purged.
//!
//! The full listing is asked each time (not `since`), because an id that *disappears*
//! from it is what tells an offline-revoked device to purge.

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
}

#[derive(Deserialize)]
struct ListedDoc {
    id: String,
    kind: String,
    wijk: String,
}

/// The documents the server says this user may read.
pub type Listing = HashMap<DocumentId, Partition>;

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

/// Fetches the listing; an error says what went wrong for the status line.
pub async fn fetch(http: &reqwest::Client, url: &Url, token: &str) -> Result<Listing, String> {
    let response = http
        .get(url.clone())
        .bearer_auth(token)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err("discovery: the server refused the token (expired or revoked)".into());
    }
    if !status.is_success() {
        return Err(format!("discovery: HTTP {status}"));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let body: ListingBody =
        serde_json::from_slice(&bytes).map_err(|e| format!("discovery: unexpected answer: {e}"))?;
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
    Ok(listing)
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
