//! buurtsync's ground floor: everything about syncing that needs no I/O.
//!
//! Layout:
//! - [`api`]: the HTTP API's requests (query strings, bodies), parsed and checked.
//! - [`protocol`]: automerge-repo websocket protocol v1 — ids, messages, CBOR codec.
//! - [`partition`]: kinds, wijk ids and the (wijk, kind) partition of a document.
//! - [`schema`]: typed `plan` and `activiteit` documents (autosurgeon) and validation.
//! - [`policy`]: the access policy, the one place that decides who reads and writes what.
//! - [`engine`]: per-document sync sessions with one remote peer.
//! - [`summary`]: the server's decision on one document of a connect-time summary.
//! - [`guard`]: the one guard that turns panics in automerge/autosurgeon into errors.
//!
//! Nothing here opens a socket, a file or a database, so it cannot fail for outside
//! reasons and is tested as tables of inputs and outputs.
#![forbid(unsafe_code)]

pub mod api;
pub mod chunks;
pub mod engine;
pub mod error;
pub mod guard;
pub mod partition;
pub mod policy;
pub mod protocol;
pub mod schema;
pub mod summary;

pub use error::Error;
