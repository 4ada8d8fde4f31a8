//! buurtsync's mobile client library: an encrypted offline store, a sync loop, and
//! typed operations on household plans and activiteiten, exported to Kotlin, Swift and
//! Python with UniFFI (proc-macro style; `scripts/gen-bindings.sh` generates them).
//!
//! Layout:
//! - [`client`]: `BuurtClient`, the object apps hold (open, status, credentials,
//!   listing, document state, discard, wipe, shutdown).
//! - [`ops`]: the typed domain operations (plans and activiteiten).
//! - [`model`]: the records and enums that cross the FFI.
//! - [`error`]: `ClientError`, the one error type, typed across the FFI.
//! - [`notify`]: the app's `ClientListener` and the thread that calls it.
//! - [`credentials`]: the token and the app's `CredentialsProvider`.
//! - [`tls`]: the rustls configuration (web roots plus the app's CA) and TLS failures.
//! - [`session`]: the sync loop (websocket session, acks, purge, reconnect).
//! - [`discovery`]: the server's listing of the documents this user may read.
//! - [`backoff`]: reconnect delays with jitter.
//! - [`replica`]: the documents in memory and their unacknowledged changes.
//! - [`store`]: the local SQLite store; [`crypto`]: encryption at rest.
//! - [`state`]: what the FFI calls and the sync loop share.
//!
//! It stands on sync-core (codec, schema, sync engine) and never on the server crate.

uniffi::setup_scaffolding!();

pub mod backoff;
pub mod client;
pub mod credentials;
pub mod crypto;
pub mod discovery;
pub mod error;
pub mod model;
pub mod notify;
pub mod ops;
pub mod replica;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;

pub use client::BuurtClient;
pub use credentials::CredentialsProvider;
pub use error::ClientError;
pub use model::*;
pub use notify::ClientListener;
