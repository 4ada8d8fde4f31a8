//! buurtsync relay server.
//!
//! Layout:
//! - [`cli`]: the `buurtsync` command line — `serve`, `demo` and the admin commands.
//! - [`config`]: the TOML configuration file under flags and environment.
//! - [`serve`]: binds, serves, shuts down gracefully.
//! - [`app`]: router, shared state, authentication at the websocket upgrade.
//! - [`api`]: the HTTP API (`/api/v1`): listing documents, moving a plan to another wijk.
//! - [`central`]: the central office: pseudonymised feed, aggregates, dashboard.
//! - [`ws::connection`]: one websocket peer: decode, policy, apply, commit, answer.
//! - [`metrics`]: Prometheus series names and the recorder behind `/metrics`.
//! - [`hub`]: documents in memory and the fan-out of their changes.
//! - [`store`]: SQLite through sqlx — accounts, catalog, chunks, sync states.
//! - [`auth`]: tokens, hashed at rest.
//! - [`audit`]: the append-only, hash-chained audit log (NEN 7513) and its export.
//! - [`error`]: the crate's error and its HTTP translation.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod central;
pub mod cli;
pub mod commit;
pub mod config;
pub mod error;
pub mod hub;
pub mod identity;
pub mod metrics;
pub mod serve;
pub mod state;
pub mod store;
pub mod ws;

pub use error::Error;
