//! `GET /api/v1/central/feed` and `GET /api/v1/central/aggregates`, bearer token of a
//! central-office user.
//!
//! The feed is incremental: `?cursor=N` returns the records of documents changed (or
//! erased) after change number N, oldest change first, at most `limit` (default and
//! maximum 10 000). The response header `Buurtsync-Next-Cursor` is the number to pass
//! next time (every record also carries its `seq`); `Buurtsync-More: true` says the
//! limit cut the page short. NDJSON (default) streams one record per line; `format=csv`
//! gives one row per record with lists flattened to counts.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use sync_core::api::{AggregateRequest, FeedRequest, Format};

use super::aggregate::{self, Aggregates, Method, Period, Released};
use super::anonymity::{self, Generalisation};
use super::audit_export;
use super::cellkey::Disclosure;
use super::disclosure::Memory;
use super::feed::View;
use super::pseudonym::Pseudonymiser;
use super::record::{self, Facts};
use super::spreadsheet::{self, Separator};
use crate::error::Error;
use crate::extract::{Authenticated, CentralOffice};
use crate::state::AppState;

/// Records per streamed body chunk.
const CHUNK: usize = 200;
/// `GET /api/v1/central/feed?cursor=&limit=&format=ndjson|csv&sep=`.
pub async fn feed(
    State(state): State<Arc<AppState>>,
    CentralOffice(Authenticated {
        principal,
        token_id,
    }): CentralOffice,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let FeedRequest {
        cursor,
        limit,
        format,
        sep,
    } = FeedRequest::parse_query(raw.as_deref().unwrap_or(""))?;
    let view = state.central.facts.refresh(&state.store).await?;
    let page = view.after(cursor, limit + 1);
    let more = page.len() > limit;
    let page: Vec<Arc<Facts>> = page.into_iter().take(limit).collect();
    let next = page.last().map_or(cursor.max(0), |f| f.seq);
    let pseudonyms = state
        .central
        .pseudonymiser(&state.store, &principal.user_id)
        .await?;
    // The page is a slice of one release: generalised over every current plan, never
    // finer than the aggregates' suppression allows.
    let floors = anonymity::floors(&server_release(&state, &view).await?);
    let generalisation = Arc::new(anonymity::generalise(
        view.current(),
        state.limits.central_min_count,
        &floors,
    ));
    audit_export(
        &state.store,
        &principal,
        &token_id,
        format!(
            "feed format={} cursor={cursor} records={} next={next}",
            format.as_str(),
            page.len()
        ),
    )
    .await?;
    tracing::info!(user = %principal.user_id, cursor, records = page.len(), next, "central feed");

    let body = match format {
        Format::Csv => {
            let head = spreadsheet::header(sep, record::CSV_COLUMNS)?;
            let chunks = page
                .chunks(CHUNK)
                .map(<[Arc<Facts>]>::to_vec)
                .collect::<Vec<_>>();
            let g = generalisation;
            let rows = futures_util::stream::iter(chunks).map(move |chunk| {
                spreadsheet::rows(
                    sep,
                    chunk
                        .iter()
                        .map(|f| record::csv_row(&record::record(f, &pseudonyms, &g))),
                )
                .map(Bytes::from)
            });
            Body::from_stream(
                futures_util::stream::once(async move { Ok::<_, Error>(Bytes::from(head)) })
                    .chain(rows),
            )
        }
        Format::Ndjson | Format::Json => {
            Body::from_stream(ndjson(page, pseudonyms, generalisation))
        }
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match format {
            Format::Csv => "text/csv; charset=utf-8",
            _ => "application/x-ndjson; charset=utf-8",
        }),
    );
    if format == Format::Csv {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!(
                "attachment; filename=\"buurtsync-feed-{cursor}-{next}.csv\""
            ))
            .map_err(|e| Error::Invalid(e.to_string()))?,
        );
    }
    h.insert("buurtsync-next-cursor", HeaderValue::from(next));
    h.insert(
        "buurtsync-more",
        HeaderValue::from_static(if more { "true" } else { "false" }),
    );
    no_store(h);
    Ok(response)
}

use futures_util::StreamExt;

/// One JSON line per record, built as the body is sent, in chunks.
fn ndjson(
    page: Vec<Arc<Facts>>,
    pseudonyms: Pseudonymiser,
    g: Arc<Generalisation>,
) -> impl futures_util::Stream<Item = Result<Bytes, Error>> {
    let chunks = page
        .chunks(CHUNK)
        .map(<[Arc<Facts>]>::to_vec)
        .collect::<Vec<_>>();
    futures_util::stream::iter(chunks).map(move |chunk| {
        let mut out = Vec::new();
        for f in chunk {
            serde_json::to_writer(&mut out, &record::record(&f, &pseudonyms, &g))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            out.push(b'\n');
        }
        Ok(Bytes::from(out))
    })
}

pub use crate::web_security::no_store;

/// How often a release is decided again when other nodes recorded theirs first (each
/// loss means another release was recorded meanwhile, so this bounds contention, not
/// a failure).
const RELEASE_ATTEMPTS: usize = 8;

/// Computes the aggregates from the current facts: a release consistent with every
/// earlier one on any node (the memory is the store's, `store.releases()`).
pub async fn compute(
    state: &AppState,
    period: Period,
    min_count: Option<u64>,
) -> Result<Aggregates, Error> {
    let threshold = state
        .limits
        .central_min_count
        .max(min_count.unwrap_or(0))
        .max(1);
    let view = state.central.facts.refresh(&state.store).await?;
    let today = today()?;
    let base = state.limits.central_min_count.max(1);
    if state.limits.central_disclosure == Disclosure::CellKey {
        // Consistent by construction (the noise follows the cell's units): no memory.
        let keys = state.central.cell_keys(&state.store).await?;
        let method = Method::CellKey(&keys);
        return Ok(aggregate::aggregate(
            view.current(),
            period,
            threshold,
            base,
            today,
            method,
        ));
    }
    decided(state, |memory| {
        let method = Method::Suppression(Some(memory));
        aggregate::aggregate(view.current(), period, threshold, base, today, method)
    })
    .await
}

/// The server's whole release now (every period length at the server's threshold),
/// recorded like any other: what the feed's generalisation must not undo. Always the
/// suppression release, also under cell-key perturbation: the feed's exact counts
/// must not be finer than what suppression would hide.
pub async fn server_release(state: &AppState, view: &View) -> Result<Vec<Released>, Error> {
    let today = today()?;
    let base = state.limits.central_min_count.max(1);
    decided(state, |memory| {
        aggregate::release_all(view.current(), base, today, Some(memory))
    })
    .await
}

fn today() -> Result<super::record::Month, Error> {
    super::record::Month::of_unix(crate::store::now())
        .ok_or_else(|| Error::Invalid("the server clock is before 1900".into()))
}

/// Decides a release from the store's memory and records it. Decided without a lock;
/// recorded under the next release number. When another node recorded that number
/// first, this release was decided from an older memory: it is decided again from the
/// new one, and only a recorded release leaves. A release that changes nothing in the
/// memory tells the attacker nothing new and records nothing.
async fn decided<T>(
    state: &AppState,
    mut decide: impl FnMut(&mut Memory) -> T,
) -> Result<T, Error> {
    for _ in 0..RELEASE_ATTEMPTS {
        let before = state.store.releases().load().await?;
        let mut memory = Memory::from_store(before.cells);
        let result = decide(&mut memory);
        let changed = memory.changed();
        if changed.is_empty() || state.store.releases().record(before.seq, &changed).await? {
            return Ok(result);
        }
        tracing::info!(
            after = before.seq,
            "another node released first; deciding again"
        );
    }
    Err(Error::Conflict(
        "other nodes kept releasing aggregates; try again".into(),
    ))
}

/// A release for one recipient: computed, then audited as `what` (the export or view)
/// before anything leaves.
pub async fn release(
    state: &AppState,
    who: &Authenticated,
    period: Period,
    min_count: Option<u64>,
    what: &str,
) -> Result<Aggregates, Error> {
    let result = compute(state, period, min_count).await?;
    audit_export(
        &state.store,
        &who.principal,
        &who.token_id,
        format!(
            "{what} period={} min_count={} cells={}",
            period.as_str(),
            result.min_count,
            result.cells.len()
        ),
    )
    .await?;
    Ok(result)
}

/// The aggregates as a CSV body (BOM, header row).
pub fn aggregates_csv(aggregates: &Aggregates, sep: Separator) -> Result<Vec<u8>, Error> {
    let mut out = spreadsheet::header(sep, aggregate::CSV_COLUMNS)?;
    out.extend(spreadsheet::rows(
        sep,
        aggregates.cells.iter().map(aggregate::csv_row),
    )?);
    Ok(out)
}

/// `GET /api/v1/central/aggregates?period=&format=json|csv&min_count=&sep=`.
pub async fn aggregates(
    State(state): State<Arc<AppState>>,
    CentralOffice(who): CentralOffice,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let AggregateRequest {
        period,
        format,
        sep,
        min_count,
    } = AggregateRequest::parse_query(raw.as_deref().unwrap_or(""))?;
    let result = release(&state, &who, period, min_count, "aggregates").await?;
    let mut response = if format == Format::Csv {
        csv_response(
            aggregates_csv(&result, sep)?,
            &format!("buurtsync-aggregaten-{}.csv", period.as_str()),
        )?
    } else {
        axum::Json(&result).into_response()
    };
    no_store(response.headers_mut());
    Ok(response)
}

/// A CSV download.
pub fn csv_response(body: Vec<u8>, filename: &str) -> Result<Response, Error> {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    no_store(h);
    Ok(response)
}
