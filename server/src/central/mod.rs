//! The central office (gemeente / opdrachtgever): what it receives, and nothing more.
//!
//! Layout:
//! - [`record`]: the facts of one document the central office may know, and the
//!   pseudonymised record built from them (the one place that decides what leaves).
//! - [`anonymity`]: k-anonymity of the plan records of the feed (Datafly
//!   generalisation per wijk, small classes withheld).
//! - [`pseudonym`]: keyed per-recipient pseudonyms (HMAC-SHA256, server secret).
//! - [`feed`]: the incremental facts cache over the store's change numbers.
//! - [`outcome`]: a plan's outcome (schema 2): dates, waiting times, durations,
//!   movement in zelfredzaamheid and on the participatieladder, known-at times.
//! - [`aggregate`]: per wijk per month/quarter/year, small counts suppressed.
//! - [`cellkey`]: cell-key perturbation, the optional alternative to suppression.
//! - [`disclosure`]: primary and secondary suppression, consistent across releases.
//! - [`spreadsheet`]: CSV that opens in Excel (BOM, CRLF, no formulas).
//! - [`api`]: `GET /api/v1/central/feed` (NDJSON or CSV) and `/aggregates`.
//! - [`session`]: dashboard logins (a cookie that stands for a checked token).
//! - [`chart`]: server-side SVG bar charts.
//! - [`dashboard`]: `/dashboard`, server-rendered HTML, no scripts.
//! - [`routes`]: the router of all the above.
//!
//! Every endpoint is role-gated by the `extract::CentralOffice` extractor
//! (`policy::may_receive_central`): any other principal gets 403 (not 404: these are
//! not documents whose existence could leak).

pub mod aggregate;
pub mod anonymity;
pub mod api;
pub mod cellkey;
pub mod chart;
pub mod dashboard;
pub mod disclosure;
pub mod feed;
pub mod outcome;
pub mod pseudonym;
pub mod record;
pub mod routes;
pub mod session;
pub mod spreadsheet;

use sync_core::policy::Principal;

use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;

/// The central office's shared state: the facts cache, dashboard sessions and the
/// pseudonym secret (read once from the key store). The release memory is the
/// store's (`store.releases()`), shared by every node.
#[derive(Debug, Default)]
pub struct Central {
    pub facts: feed::FactsCache,
    pub sessions: session::Sessions,
    secret: tokio::sync::OnceCell<[u8; 32]>,
}

impl Central {
    /// The pseudonyms of `recipient`.
    pub async fn pseudonymiser(
        &self,
        store: &crate::store::Store,
        recipient: &str,
    ) -> Result<pseudonym::Pseudonymiser, Error> {
        let secret = self.secret(store).await?;
        Ok(pseudonym::Pseudonymiser::for_recipient(secret, recipient))
    }

    /// The record keys of cell-key perturbation (from the same secret).
    pub async fn cell_keys(&self, store: &crate::store::Store) -> Result<cellkey::CellKeys, Error> {
        Ok(cellkey::CellKeys::new(self.secret(store).await?))
    }

    async fn secret(&self, store: &crate::store::Store) -> Result<&[u8; 32], Error> {
        self.secret
            .get_or_try_init(|| store.central().pseudonym_secret())
            .await
    }
}

/// Records an export: who received what (never the content), for the audit trail.
pub async fn audit_export(
    store: &crate::store::Store,
    principal: &Principal,
    token_id: &str,
    detail: String,
) -> Result<(), Error> {
    store
        .audit()
        .append(
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
