//! The central office (gemeente / opdrachtgever): what it receives, and nothing more.
//!
//! Layout:
//! - [`record`]: the facts of one document the central office may know, and the
//!   pseudonymised record built from them (the one place that decides what leaves).
//! - [`pseudonym`]: keyed per-recipient pseudonyms (HMAC-SHA256, server secret).
//! - [`feed`]: the incremental facts cache over the store's change numbers.
//! - [`outcome`]: a plan's outcome (schema 2): dates, waiting times, durations,
//!   movement in zelfredzaamheid and on the participatieladder, known-at times.
//! - [`aggregate`]: per wijk per month/quarter/year, small counts suppressed.
//! - [`disclosure`]: primary and secondary suppression, consistent across releases.
//! - [`spreadsheet`]: CSV that opens in Excel (BOM, CRLF, no formulas).
//! - [`api`]: `GET /api/v1/central/feed` (NDJSON or CSV) and `/aggregates`.
//! - [`session`]: dashboard logins (a cookie that stands for a checked token).
//! - [`chart`]: server-side SVG bar charts.
//! - [`dashboard`]: `/dashboard`, server-rendered HTML, no scripts.
//!
//! Every endpoint is role-gated with [`policy::may_receive_central`]: any other
//! principal gets 403 (not 404: these are not documents whose existence could leak).

pub mod aggregate;
pub mod api;
pub mod chart;
pub mod dashboard;
pub mod disclosure;
pub mod feed;
pub mod outcome;
pub mod pseudonym;
pub mod record;
pub mod session;
pub mod spreadsheet;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use sync_core::policy::{self, Principal};

use crate::app::AppState;
use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;

/// The central office's shared state: the facts cache, dashboard sessions and the
/// pseudonym secret (read once from the key store).
#[derive(Debug, Default)]
pub struct Central {
    pub facts: feed::FactsCache,
    pub sessions: session::Sessions,
    /// What every earlier aggregate release said, so tonight's cannot be differenced
    /// against it (in memory: a restart forgets it; see docs/central-office.md).
    pub releases: std::sync::Mutex<disclosure::Memory>,
    secret: tokio::sync::OnceCell<[u8; 32]>,
}

impl Central {
    /// The pseudonyms of `recipient`.
    pub async fn pseudonymiser(
        &self,
        store: &crate::store::Store,
        recipient: &str,
    ) -> Result<pseudonym::Pseudonymiser, Error> {
        let secret = self
            .secret
            .get_or_try_init(|| store.pseudonym_secret())
            .await?;
        Ok(pseudonym::Pseudonymiser::for_recipient(secret, recipient))
    }
}

/// The routes under `/api/v1/central` and `/dashboard`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/central/feed", get(api::feed))
        .route("/api/v1/central/aggregates", get(api::aggregates))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/login", post(dashboard::login))
        .route("/dashboard/logout", post(dashboard::logout))
        .route("/dashboard/aggregates.csv", get(dashboard::download))
}

/// The bearer token's principal if it is the central office's: 401 without a valid
/// token, 403 (and a `denied` audit entry) for every other role.
pub async fn authorize_bearer(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Principal, String), Error> {
    let token = bearer(headers).ok_or(Error::Unauthorized)?;
    let (principal, token_id) = crate::auth::authenticate(&state.store, &token).await?;
    check_role(state, principal, token_id).await
}

/// `Authorization: Bearer …`, if present.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_owned())
}

/// Lets the central office through; refuses and audits anyone else.
pub async fn check_role(
    state: &AppState,
    principal: Principal,
    token_id: String,
) -> Result<(Principal, String), Error> {
    match policy::may_receive_central(&principal) {
        Ok(()) => Ok((principal, token_id)),
        Err(reason) => {
            tracing::info!(user = %principal.user_id, %reason, "central office endpoint denied");
            state
                .store
                .audit(
                    &AuditEvent::new(
                        &principal.user_id,
                        format!("{token_id}/central"),
                        AuditAction::Denied,
                    )
                    .with_detail(format!("central: {reason}")),
                )
                .await?;
            Err(Error::Forbidden(reason.to_string()))
        }
    }
}

/// Records an export: who received what (never the content), for the audit trail.
pub async fn audit_export(
    state: &AppState,
    principal: &Principal,
    token_id: &str,
    detail: String,
) -> Result<(), Error> {
    state
        .store
        .audit(
            &AuditEvent::new(
                &principal.user_id,
                format!("{token_id}/central"),
                AuditAction::CentralExport,
            )
            .with_detail(detail),
        )
        .await?;
    Ok(())
}
