//! TLS for the sync loop: one rustls configuration (ring, the public web roots of
//! `webpki-roots`, plus the app's extra CA in PEM, e.g. a gemeente's private CA) shared
//! by the websocket (tokio-tungstenite) and the HTTP API (reqwest), and the test that
//! tells a certificate failure apart from a network failure.
//!
//! A certificate failure is not retried: it becomes `ConnectionState::TlsError` until
//! the app asks again, because retrying cannot fix it and would only hide it.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite;

use crate::error::{ClientError, Result};

/// The client's TLS configuration: web roots plus `extra_ca_pem` (every certificate in it).
pub fn client_config(extra_ca_pem: Option<&str>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let invalid = |message: String| ClientError::InvalidCertificate { message };
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| invalid(format!("not PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid("no CERTIFICATE block in the PEM".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidCertificate {
            message: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Refuses a plain `ws://`/`http://` server URL unless the app allowed it.
pub fn check_scheme(server_url: &str, allow_insecure: bool) -> Result<()> {
    let scheme = server_url.split("://").next().unwrap_or_default();
    match scheme.to_ascii_lowercase().as_str() {
        "wss" | "https" => Ok(()),
        "ws" | "http" if allow_insecure => Ok(()),
        "ws" | "http" => Err(ClientError::InsecureUrl {
            url: server_url.to_owned(),
        }),
        _ => Err(ClientError::invalid(format!(
            "server url {server_url:?}: use wss://host/sync"
        ))),
    }
}

/// If `err` (or anything in its chain) is a TLS failure, what it says.
pub fn failure(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // io::Error hides its inner error from `source()`; look inside.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(reason) = failure(inner) {
                    return Some(reason);
                }
            }
        }
        if let Some(tungstenite::Error::Tls(tls)) = e.downcast_ref::<tungstenite::Error>() {
            return Some(tls.to_string());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain URLs need the opt-in; wss always passes; other schemes never.
    #[test]
    fn schemes() {
        let check = |url: &str, allow: bool, ok: bool| {
            assert_eq!(check_scheme(url, allow).is_ok(), ok, "{url} allow={allow}");
        };
        check("wss://x/sync", false, true);
        check("ws://x/sync", false, false);
        check("ws://x/sync", true, true);
        check("ftp://x/sync", true, false);
        assert!(matches!(
            check_scheme("ws://x/sync", false),
            Err(ClientError::InsecureUrl { .. })
        ));
    }

    /// An extra CA that is not PEM is a clear error, not an empty trust store.
    #[test]
    fn bad_pem_is_refused() {
        assert!(matches!(
            client_config(Some("hello")),
            Err(ClientError::InvalidCertificate { .. })
        ));
        assert!(client_config(None).is_ok());
    }

    /// A rustls error behind an io::Error is found.
    #[test]
    fn finds_tls_errors_in_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(failure(&io).is_some_and(|r| r.contains("UnknownIssuer")));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(failure(&plain), None);
    }
}
