//! buurtsync relay server.
//!
//! Layout (docs/architecture.md has the code map and the life of a change):
//! - [`cli`]: the `buurtsync` command line — `serve`, `demo` and the admin commands.
//! - [`config`]: every serve setting, defined once (flags, environment, file, defaults).
//! - [`serve`]: binds, serves, follows other nodes, shuts down gracefully.
//! - [`app`]: the router, health and metrics, the websocket upgrade.
//! - [`state`]: the shared state handlers and connections use, and the limits.
//! - [`extract`]: extractors that turn a request's credential into a principal.
//! - [`api`]: the HTTP API (`/api/v1`): who am I, listing documents, moving a plan.
//! - [`central`]: the central office: pseudonymised feed, aggregates, dashboard.
//! - [`ws`]: one websocket peer — `transport` (the socket), `connection` (the protocol).
//! - [`commit`]: a change from "checked" to "announced", in one transaction.
//! - [`hub`]: documents in memory and the fan-out of their changes.
//! - [`store`]: SQLite or PostgreSQL through sqlx — the only SQL.
//! - [`auth`]: tokens, hashed at rest.
//! - [`identity`]: OIDC sign-in, enrolment codes, device sessions (refresh/access tokens).
//! - [`beheer`]: `/beheer`, the coordinator's page (server-rendered, no scripts).
//! - [`html`]: what the server's own pages share: escaping, the shell, their headers.
//! - [`audit`]: the append-only, hash-chained audit log (NEN 7513) and its export.
//! - [`metrics`]: Prometheus series names and the recorder behind `/metrics`.
//! - [`error`]: the crate's error and its HTTP translation.
//! - [`web_security`]: security headers, dotfiles, cross-site posts, TLS transport.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod beheer;
pub mod central;
pub mod cli;
pub mod commit;
pub mod config;
pub mod error;
pub mod extract;
pub mod handover;
pub mod html;
pub mod hub;
pub mod identity;
pub mod metrics;
pub mod queue_budget;
pub mod serve;
pub mod state;
pub mod store;
pub mod web_security;
pub mod ws;

pub use error::Error;
