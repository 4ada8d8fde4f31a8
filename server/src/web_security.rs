//! What browsers need to be told, on every route: security headers, no dotfiles from
//! `/app/`, no cross-site posts to the cookie-authenticated dashboard, and whether the
//! server itself serves TLS (so the dashboard cookie can be `Secure` and `__Host-`).
//!
//! It exists apart from the handlers because it is one policy for the whole HTTP face
//! (issue 16, items 13 and 16): [`harden`] is a middleware over the router built in
//! `app::app`, [`Transport`] an extractor set by `serve` under TLS, and
//! [`is_cross_site`] the check every state-changing cookie post makes.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The volunteer web app's policy: its own scripts plus automerge's WebAssembly
/// (`wasm-unsafe-eval` compiles it; no `eval` of text), its own stylesheet, images and
/// manifest, a service worker, and `fetch`/websocket to its own origin only.
pub const APP_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; \
     manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Everything else (JSON, CSV, text): nothing may load, run or frame it. The
/// dashboard's pages set their own, stricter-for-pages policy, which is kept.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Middleware for the whole router: 404 for any path under `/app/` with a segment
/// that starts with a dot (`.env`, `.git/…`, also percent-encoded), and the security
/// headers on every answer that does not set its own.
pub async fn harden(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let app = path == "/app" || path.starts_with("/app/");
    if app && has_dot_segment(path) {
        // Exactly what a missing file answers: no hint that it exists.
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let csp = if app { APP_CSP } else { API_CSP };
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(csp));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    response
}

/// Does any segment of this (still percent-encoded) path start with a dot?
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        segment.starts_with('.')
            || segment
                .get(..3)
                .is_some_and(|p| p.eq_ignore_ascii_case("%2e"))
    })
}

/// Is this a cross-site request? A browser says so in `Sec-Fetch-Site` (anything but
/// `same-origin` or `none`, the user typing the URL), or older ones through an
/// `Origin` whose host is not the `Host` asked for (`null` included). A request with
/// neither header is not from a browser page (curl, scripts) and is let through:
/// forging a cross-site post needs a browser, and browsers send at least one of them.
pub fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
        _ => true,
    }
}

/// How this request reached the server: `serve` adds the `Tls` extension to every
/// request when it serves TLS itself; a TLS-terminating proxy is recognised by its
/// `X-Forwarded-Proto: https`. Plain HTTP otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    Plain,
}

impl Transport {
    pub fn is_tls(self) -> bool {
        self == Transport::Tls
    }

    /// How this request arrived (what the extractor gives, for other extractors).
    pub fn of(parts: &Parts) -> Transport {
        match parts.extensions.get::<Transport>() {
            Some(Transport::Tls) => Transport::Tls,
            _ if forwarded_https(&parts.headers) => Transport::Tls,
            _ => Transport::Plain,
        }
    }
}

/// A TLS-terminating proxy in front says so with `X-Forwarded-Proto: https`.
pub fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Headers of an answer that holds something personal or secret (tokens, aggregates,
/// pages behind a login): never cached, never sniffed.
pub fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The value of the first cookie called one of `names` (the plain and the
/// `__Host-`/`__Secure-` spelling of one cookie), from every `Cookie` header.
pub fn cookie(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| names.contains(name))
        .map(|(_, value)| value.to_owned())
}

impl<S: Send + Sync> FromRequestParts<S> for Transport {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Transport::of(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dot segments are found however they are spelled; ordinary files pass.
    #[test]
    fn dot_segments() {
        let check = |path: &str, expected: bool| {
            assert_eq!(has_dot_segment(path), expected, "{path}");
        };
        check("/app/", false);
        check("/app/index.html", false);
        check("/app/assets/index-3f2a.js", false);
        check("/app/.env", true);
        check("/app/%2eenv", true);
        check("/app/%2Egit/config", true);
        check("/app/.git/config", true);
        check("/app/assets/.hidden", true);
    }

    /// Cross-site posts are told apart from same-origin ones and from non-browsers.
    #[test]
    fn cross_site() {
        let check = |pairs: &[(&'static str, &'static str)], expected: bool| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            assert_eq!(is_cross_site(&h), expected, "{pairs:?}");
        };
        check(&[], false);
        check(&[("sec-fetch-site", "same-origin")], false);
        check(&[("sec-fetch-site", "none")], false);
        check(&[("sec-fetch-site", "cross-site")], true);
        check(&[("sec-fetch-site", "same-site")], true);
        check(
            &[("origin", "https://a.example"), ("host", "a.example")],
            false,
        );
        check(
            &[
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080"),
            ],
            false,
        );
        check(
            &[("origin", "https://evil.example"), ("host", "a.example")],
            true,
        );
        check(&[("origin", "null"), ("host", "a.example")], true);
    }
}
