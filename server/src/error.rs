//! The server's error type, and its translation at the HTTP edge.
//!
//! Clients get a short, safe message; the log gets the detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite's group writer (`store::group`), which talks to SQLite directly.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("document {0} was erased")]
    Erased(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("too many connections for this user")]
    TooManyConnections,
    #[error("document would exceed {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("tls: {0}")]
    Tls(String),
    /// Authenticated, but the role may not use this endpoint (role-gated endpoints
    /// only; document access answers 404 so denied and missing look the same).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Core(#[from] sync_core::Error),
    #[error(transparent)]
    Request(#[from] sync_core::api::InvalidRequest),
    #[error(transparent)]
    Wijk(#[from] sync_core::partition::InvalidWijkId),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The SQLite group writer (`store::group`) is gone: the runtime is shutting down.
    #[error("the store's writer has stopped")]
    WriterStopped,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Error::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing, invalid, expired or revoked token",
            ),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) | Error::Erased(_) => (StatusCode::NOT_FOUND, "not found"),
            Error::Invalid(_) | Error::Core(_) | Error::Wijk(_) | Error::Request(_) => {
                (StatusCode::BAD_REQUEST, "bad request")
            }
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::TooManyConnections => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections for this user",
            ),
            _ => {
                tracing::error!(error = %self, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        };
        let mut response = (status, format!("{message}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                // RFC 6750: `invalid_token` tells a client to get a fresh token.
                axum::http::HeaderValue::from_static(
                    "Bearer realm=\"buurtsync\", error=\"invalid_token\"",
                ),
            );
        }
        response
    }
}
