//! The crate's one error enum, [`ClientError`], which is also what crosses the FFI:
//! every variant becomes a typed exception (Kotlin, Python) or `Error` case (Swift) whose
//! message a developer can act on. Nothing in this crate panics across the FFI.

/// Everything that can go wrong in a client call.
///
/// Flat across the FFI: each variant is its own exception type (`ClientError.WrongKey`
/// in Python, `ClientException.WrongKey` in Kotlin, `ClientError.WrongKey` in Swift)
/// carrying the message below as its text.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum ClientError {
    /// The store was created with another encryption key.
    #[error("wrong encryption key: this store was created with another key")]
    WrongKey,
    /// The key is not 32 bytes.
    #[error("invalid encryption key: {reason}")]
    InvalidKey { reason: String },
    /// A bad argument: an unknown wijk spelling, an impossible date, a negative number.
    #[error("invalid input: {message}")]
    InvalidInput { message: String },
    /// No such document in the local store (perhaps purged).
    #[error("document {doc_id} is not in the local store")]
    NotFound { doc_id: String },
    /// The operation does not fit the document: a goal on an activiteit, an unknown goal id.
    #[error("{message}")]
    WrongDocument { message: String },
    /// The document does not match its schema after the edit (the edit is not stored).
    #[error("schema: {message}")]
    Schema { message: String },
    /// The local store could not be read or written; nothing was changed.
    #[error("local store: {message}")]
    Store { message: String },
    /// Stored bytes do not decrypt or load: the file was altered or damaged.
    #[error("local store is corrupt: {message}")]
    Corrupt { message: String },
    /// The server URL is `ws://`/`http://` and `ClientOptions.allow_insecure` is off.
    #[error("insecure server url {url}: use wss:// (or set allow_insecure for a test server)")]
    InsecureUrl { url: String },
    /// The extra CA certificate is not usable PEM.
    #[error("extra CA certificate: {message}")]
    InvalidCertificate { message: String },
    /// `wipe` without `force` while local changes are not on the server yet.
    #[error("{count} local changes are not on the server yet; sync first or wipe with force")]
    UnsentChanges { count: u64 },
    /// The client was closed; open it again.
    #[error("the client is closed")]
    Closed,
}

impl From<sqlx::Error> for ClientError {
    fn from(e: sqlx::Error) -> Self {
        ClientError::Store {
            message: e.to_string(),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for ClientError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        ClientError::Store {
            message: format!("migrating the local store: {e}"),
        }
    }
}

impl From<sync_core::schema::SchemaError> for ClientError {
    fn from(e: sync_core::schema::SchemaError) -> Self {
        ClientError::Schema {
            message: e.to_string(),
        }
    }
}

impl ClientError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ClientError::InvalidInput {
            message: message.into(),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
