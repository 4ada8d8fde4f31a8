//! Logins of the server's own pages: the dashboard's ([`DASHBOARD`]) and `/beheer`'s
//! (its own [`LoginCookie`]). The central-office user posts their token once to
//! `/dashboard/login`; the server checks it and answers with a session cookie
//! (`HttpOnly; SameSite=Strict; Path=/dashboard`; under TLS `__Host-…; Secure; Path=/`,
//! so neither a plain-HTTP page nor a sibling subdomain can set or read it). Safer than keeping the token in
//! the page's sessionStorage: no script can read the cookie (an injected script
//! cannot steal it), the browser never sends it from another site's request (no
//! CSRF), and the token itself is never stored in the browser.
//!
//! Sessions live in memory only (a restart logs everyone out) and hold the token id,
//! not the secret: every request re-checks that the token is still live and that its
//! user still has the central-office role, so revoking the token ends the session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::web_security::Transport;

/// A login cookie (the dashboard's, `/beheer`'s): its name over plain HTTP
/// (loopback, the demo) and under TLS, and the path it is sent to over plain HTTP.
/// Under TLS browsers accept a `__Host-` cookie only with `Secure`, `Path=/` and no
/// `Domain`, so no other origin can plant one (issue 16, item 13).
#[derive(Debug, Clone, Copy)]
pub struct LoginCookie {
    pub plain: &'static str,
    pub tls: &'static str,
    pub plain_path: &'static str,
}

/// The dashboard's cookie.
pub const DASHBOARD: LoginCookie = LoginCookie {
    plain: "buurtsync_dashboard",
    tls: "__Host-buurtsync_dashboard",
    plain_path: "/dashboard",
};

impl LoginCookie {
    /// The cookie's name for this transport.
    pub fn name(self, transport: Transport) -> &'static str {
        if transport.is_tls() {
            self.tls
        } else {
            self.plain
        }
    }

    /// The `Set-Cookie` value that sets (or, with `max_age` 0 and an empty value,
    /// clears) the cookie for this transport.
    pub fn set(self, value: &str, transport: Transport, max_age: u64) -> String {
        if transport.is_tls() {
            format!(
                "{}={value}; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age={max_age}",
                self.tls
            )
        } else {
            format!(
                "{}={value}; HttpOnly; SameSite=Strict; Path={}; Max-Age={max_age}",
                self.plain, self.plain_path
            )
        }
    }

    /// The cookie's value (the name this transport uses) in the `Cookie` headers.
    pub fn read(self, headers: &axum::http::HeaderMap, transport: Transport) -> Option<String> {
        crate::web_security::cookie(headers, &[self.name(transport)])
    }
}

/// How long a login lasts without being renewed.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Upper bound on live sessions: logins beyond it push out the oldest.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub token_id: String,
    expires: Instant,
}

/// Live sessions, keyed by the SHA-256 of the cookie value (a memory dump holds no
/// usable cookie).
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session and returns the cookie value (32 random bytes, hex).
    pub fn start(&self, user_id: &str, token_id: &str) -> String {
        let cookie = hex::encode(crate::store::crypto::random_bytes::<32>());
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&cookie),
            Session {
                user_id: user_id.to_owned(),
                token_id: token_id.to_owned(),
                expires: now + LIFETIME,
            },
        );
        cookie
    }

    /// The session of a cookie value, if it is live.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let mut map = self.lock();
        let k = key(cookie);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn end(&self, cookie: &str) {
        self.lock().remove(&key(cookie));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A started session is found by its cookie and gone after `end`; a made-up cookie
    /// finds nothing.
    #[test]
    fn start_get_end() {
        let sessions = Sessions::default();
        let cookie = sessions.start("office", "tok_1");
        assert_eq!(
            sessions.get(&cookie).map(|s| s.user_id),
            Some("office".into())
        );
        assert!(sessions.get("00").is_none());
        sessions.end(&cookie);
        assert!(sessions.get(&cookie).is_none());
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static("a=1; buurtsync_dashboard=abc; b=2"),
        );
        assert_eq!(
            DASHBOARD.read(&headers, Transport::Plain).as_deref(),
            Some("abc")
        );
        // Under TLS only the `__Host-` cookie counts.
        assert_eq!(DASHBOARD.read(&headers, Transport::Tls), None);
    }
}
