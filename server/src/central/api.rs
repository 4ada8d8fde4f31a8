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
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use sync_core::api::{AggregateRequest, FeedRequest, Format};

use super::aggregate::{self, Aggregates, Period};
use super::audit_export;
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
            let rows = futures_util::stream::iter(chunks).map(move |chunk| {
                spreadsheet::rows(sep, chunk.iter().map(|f| record::csv_row(f, &pseudonyms)))
                    .map(Bytes::from)
            });
            Body::from_stream(
                futures_util::stream::once(async move { Ok::<_, Error>(Bytes::from(head)) })
                    .chain(rows),
            )
        }
        Format::Ndjson | Format::Json => Body::from_stream(ndjson(page, pseudonyms)),
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
) -> impl futures_util::Stream<Item = Result<Bytes, Error>> {
    let chunks = page
        .chunks(CHUNK)
        .map(<[Arc<Facts>]>::to_vec)
        .collect::<Vec<_>>();
    futures_util::stream::iter(chunks).map(move |chunk| {
        let mut out = Vec::new();
        for f in chunk {
            serde_json::to_writer(&mut out, &record::record(&f, &pseudonyms))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            out.push(b'\n');
        }
        Ok(Bytes::from(out))
    })
}

/// Nothing the central office receives is kept in shared caches.
pub fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Computes the aggregates from the current facts.
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
    let today = super::record::Month::of_unix(crate::store::now())
        .ok_or_else(|| Error::Invalid("the server clock is before 1900".into()))?;
    // Held while computing (no await inside): releases are made one at a time, each
    // consistent with all before it.
    let mut memory = state
        .central
        .releases
        .lock()
        .map_err(|_| Error::Corrupt("the release memory lock is poisoned".into()))?;
    Ok(aggregate::aggregate(
        view.current(),
        period,
        threshold,
        state.limits.central_min_count.max(1),
        today,
        Some(&mut memory),
    ))
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
    CentralOffice(Authenticated {
        principal,
        token_id,
    }): CentralOffice,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let AggregateRequest {
        period,
        format,
        sep,
        min_count,
    } = AggregateRequest::parse_query(raw.as_deref().unwrap_or(""))?;
    let result = compute(&state, period, min_count).await?;
    audit_export(
        &state.store,
        &principal,
        &token_id,
        format!(
            "aggregates period={} min_count={} cells={}",
            period.as_str(),
            result.min_count,
            result.cells.len()
        ),
    )
    .await?;
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
