//! `/dashboard`: the central office's web page, rendered on the server. Per wijk, bar
//! charts over time (server-side SVG, see `chart`) of the aggregates, and a button that
//! downloads them as CSV. No scripts at all: the Content-Security-Policy forbids them.
//!
//! Login: a form posts the token once; the answer sets a session cookie (see
//! `session` for why this beats keeping the token in the browser). A bearer header
//! works too (scripts). Any role but the central office gets 403.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use sync_core::schema::plan::ZrmDomein;

use super::aggregate::{Aggregates, Cell, Period};
use super::api::{aggregates_csv, csv_response, release};
use super::chart::{bars, Series};
use super::session;
use crate::error::Error;
use crate::extract::{self, Authenticated, CentralOffice, Credential};
use crate::html::{escape, Login, LoginForm, Page, Referrer};
use crate::state::AppState;
use crate::web_security::{is_cross_site, Transport};
use sync_core::api::AggregateRequest;

/// Who is looking: a bearer token, or a session cookie whose token is still live.
/// `None`: nobody logged in. 401 for a bad bearer token, 403 for a logged-in user of
/// another role.
pub struct Viewer(Option<CentralOffice>);

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(credential) = extract::presented(parts, false) {
            let who = extract::principal_for(state, &credential).await?;
            return CentralOffice::check(&state.store, who)
                .await
                .map(|c| Viewer(Some(c)));
        }
        let transport = Transport::of(parts);
        let Some(cookie) = session::DASHBOARD.read(&parts.headers, transport) else {
            return Ok(Viewer(None));
        };
        let Some(s) = state.central.sessions.get(&cookie) else {
            return Ok(Viewer(None));
        };
        // The token may have been revoked or expired since the login.
        if state
            .store
            .accounts()
            .live_token_user(&s.token_id)
            .await?
            .as_deref()
            != Some(s.user_id.as_str())
        {
            state.central.sessions.end(&cookie);
            return Ok(Viewer(None));
        }
        let who = Authenticated {
            principal: state.store.accounts().principal(&s.user_id).await?,
            token_id: s.token_id,
        };
        CentralOffice::check(&state.store, who)
            .await
            .map(|c| Viewer(Some(c)))
    }
}

/// Every dashboard page.
const PAGE: Page<'static> = Page {
    title: "buurtsync — dashboard centraal bureau",
    style: STYLE,
    referrer: Referrer::Never,
};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}\
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}\
.wijk{margin-bottom:1.5rem}.charts{display:flex;flex-wrap:wrap;gap:1rem}\
figure{margin:0}figcaption{font-size:.9rem;color:#444}\
.button{display:inline-block;padding:.5rem 1rem;background:#0b5394;color:#fff;border-radius:4px;text-decoration:none;border:0;font-size:1rem;cursor:pointer}\
nav a{margin-right:1rem}.note{color:#555;font-size:.9rem}.error{color:#a00}";

const LOGIN: Login<'static> = Login {
    heading: "buurtsync — dashboard centraal bureau",
    action: "/dashboard/login",
    label: "Token",
    size: 70,
    note: "Alleen voor het centraal bureau: geaggregeerde, gepseudonimiseerde gegevens. \
           Kleine aantallen (minder dan de drempel) worden niet getoond.",
};

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    Page {
        title: "buurtsync — centraal bureau",
        ..PAGE
    }
    .respond(status, &LOGIN.body(message))
}

/// `POST /dashboard/login` (form field `token`): a session cookie and a redirect to the
/// dashboard; 401 with the form again for a bad token, 403 for another role.
pub async fn login(
    State(state): State<Arc<AppState>>,
    transport: Transport,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, Error> {
    if is_cross_site(&headers) {
        tracing::info!("dashboard login refused: cross-site post");
        return Ok(login_page(
            StatusCode::FORBIDDEN,
            Some("Inloggen kan alleen vanaf deze pagina."),
        ));
    }
    let credential = Credential::Bearer(form.token.trim().to_owned());
    let who = match extract::principal_for(&state, &credential).await {
        Ok(found) => found,
        Err(Error::Unauthorized) => {
            return Ok(login_page(
                StatusCode::UNAUTHORIZED,
                Some("Onbekende, verlopen of ingetrokken token."),
            ))
        }
        Err(e) => return Err(e),
    };
    let Authenticated {
        principal,
        token_id,
    } = match CentralOffice::check(&state.store, who).await {
        Ok(CentralOffice(who)) => who,
        Err(Error::Forbidden(_)) => {
            return Ok(login_page(
                StatusCode::FORBIDDEN,
                Some("Deze token hoort niet bij het centraal bureau."),
            ))
        }
        Err(e) => return Err(e),
    };
    let cookie = state.central.sessions.start(&principal.user_id, &token_id);
    // Secure (and `__Host-`) when the server serves TLS itself or sits behind a TLS
    // proxy that says so (`Transport`).
    let set_cookie = session::DASHBOARD.set(&cookie, transport, session::LIFETIME.as_secs());
    tracing::info!(user = %principal.user_id, token = %token_id, "dashboard login");
    PAGE.redirect("/dashboard", Some(&set_cookie))
}

/// `POST /dashboard/logout`: ends the session and clears the cookie.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    transport: Transport,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if is_cross_site(&headers) {
        return Ok(login_page(StatusCode::FORBIDDEN, None));
    }
    if let Some(cookie) = session::DASHBOARD.read(&headers, transport) {
        state.central.sessions.end(&cookie);
    }
    PAGE.redirect(
        "/dashboard",
        Some(&session::DASHBOARD.set("", transport, 0)),
    )
}

/// `GET /dashboard/aggregates.csv?period=&sep=`: the download button.
pub async fn download(
    State(state): State<Arc<AppState>>,
    Viewer(viewer): Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let query = AggregateRequest::parse_query(raw.as_deref().unwrap_or(""))?;
    let Some(CentralOffice(who)) = viewer else {
        return Err(Error::Unauthorized);
    };
    let result = release(&state, &who, query.period, query.min_count, "dashboard csv").await?;
    csv_response(
        aggregates_csv(&result, query.sep)?,
        &format!("buurtsync-aggregaten-{}.csv", result.period.as_str()),
    )
}

/// How many periods the charts show, most recent last.
fn shown(period: Period) -> usize {
    match period {
        Period::Month => 12,
        Period::Quarter => 8,
        Period::Year => 6,
    }
}

/// Series colours, in the order of a chart's series.
const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// One series of a chart: (metric, label).
type Metric = (&'static str, &'static str);

/// The charts of one wijk: (id suffix, title, its series); the series take the
/// [`PALETTE`]'s colours in order.
const CHARTS: &[(&str, &str, &[Metric])] = &[
    (
        "plannen",
        "Plannen: nieuw, afgesloten en overdrachten aan de gemeente",
        &[
            ("plans_new", "nieuw"),
            ("plans_closed", "afgesloten"),
            ("handovers", "overdracht"),
        ],
    ),
    (
        "contacten",
        "Contactmomenten per soort",
        &[
            ("contacts.huisbezoek", "huisbezoek"),
            ("contacts.wijkcentrum", "wijkcentrum"),
            ("contacts.school", "school"),
            ("contacts.telefoon", "telefoon"),
            ("contacts.digitaal", "digitaal"),
        ],
    ),
    (
        "activiteiten",
        "Activiteiten: bijeenkomsten, deelnemers, vrijwilligers en uren",
        &[
            ("sessions", "bijeenkomsten"),
            ("participants", "deelnemers"),
            ("unique_volunteers", "vrijwilligers"),
            ("volunteer_hours", "vrijwilligersuren"),
        ],
    ),
    (
        "doelen",
        "Doelen per leefdomein (stand bij laatste wijziging)",
        &[
            ("goals_leefdomein.financien", "financiën"),
            ("goals_leefdomein.wonen", "wonen"),
            ("goals_leefdomein.opvoeding", "opvoeding"),
            ("goals_leefdomein.gezondheid", "gezondheid"),
            ("goals_leefdomein.sociaal_netwerk", "sociaal netwerk"),
            ("goals_leefdomein.werk_en_inkomen", "werk en inkomen"),
        ],
    ),
];

/// One wijk's cells by (period, metric).
type WijkCells<'a> = BTreeMap<(&'a str, &'a str), &'a Cell>;

/// A metric's value in a period: a cell's value (`None`: suppressed), or zero where
/// no cell was sent (nothing happened).
fn value(cells: &WijkCells<'_>, period: &str, metric: &str) -> Option<f64> {
    match cells.get(&(period, metric)) {
        Some(cell) => cell.value,
        None => Some(0.0),
    }
}

/// Writes one chart with its caption.
fn figure(
    body: &mut String,
    id: &str,
    title: &str,
    groups: &[String],
    series: &[Series<'_>],
    min_count: u64,
) {
    let _ = write!(
        body,
        "<figure>{}<figcaption>{}</figcaption></figure>",
        bars(id, title, groups, series, min_count),
        escape(title)
    );
}

/// The outcome charts of one wijk (schema 2): waiting time and duration over the
/// periods, and the movement in zelfredzaamheid per domain (and on the
/// participatieladder) between intake and eindevaluatie in the latest period that has
/// any. A suppressed cell is drawn as suppressed, never as zero.
fn outcome_charts(
    body: &mut String,
    wijk: &str,
    cells: &WijkCells<'_>,
    periods: &[String],
    min_count: u64,
) {
    let waiting = [
        (
            "outcome.waiting_days.median",
            "wachttijd mediaan",
            "#1f77b4",
        ),
        ("outcome.waiting_days.p75", "wachttijd p75", "#aec7e8"),
        (
            "outcome.duration_days.median",
            "duur ondersteuning mediaan",
            "#2ca02c",
        ),
    ];
    let series: Vec<Series<'_>> = waiting
        .iter()
        .map(|(metric, label, color)| Series {
            label,
            color,
            values: periods.iter().map(|p| value(cells, p, metric)).collect(),
        })
        .collect();
    figure(
        body,
        &format!("chart-{}-wachttijd", escape(wijk)),
        "Wachttijd (aanmelding → intake) en duur van de ondersteuning, in dagen",
        periods,
        &series,
        min_count,
    );

    // The latest period with any zrm or participatieladder cell.
    let moved = |metric: &str| metric.starts_with("zrm.") || metric.starts_with("ladder.");
    let latest = periods
        .iter()
        .rev()
        .find(|p| cells.keys().any(|(cp, m)| cp == p && moved(m)));
    let mut rows: Vec<(String, [&str; 3])> = Vec::new();
    if let Some(period) = latest {
        for domain in ZrmDomein::ALL {
            let d = domain.as_str();
            if cells
                .keys()
                .any(|(cp, m)| cp == period && m.starts_with(&format!("zrm.{d}.")))
            {
                rows.push((d.replace('_', " "), ["improved", "same", "worse"]));
            }
        }
        if cells
            .keys()
            .any(|(cp, m)| cp == period && m.starts_with("ladder."))
        {
            rows.push(("participatieladder".into(), ["up", "same", "down"]));
        }
    }
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let series: Vec<Series<'_>> = [
        ("vooruit", "#2ca02c"),
        ("gelijk", "#7f7f7f"),
        ("achteruit", "#d62728"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (label, color))| Series {
        label,
        color,
        values: rows
            .iter()
            .map(|(name, moves)| {
                let metric = if name == "participatieladder" {
                    format!("ladder.{}", moves[i])
                } else {
                    format!("zrm.{}.{}", name.replace(' ', "_"), moves[i])
                };
                latest.and_then(|p| value(cells, p, &metric))
            })
            .collect(),
    })
    .collect();
    let title = format!(
        "Zelfredzaamheid per domein en participatieladder: intake → eindevaluatie ({})",
        latest.map_or("geen metingen", String::as_str)
    );
    figure(
        body,
        &format!("chart-{}-zelfredzaamheid", escape(wijk)),
        &title,
        &labels,
        &series,
        min_count,
    );
}

/// `GET /dashboard?period=month|quarter|year`: the login form, or the charts.
pub async fn page(
    State(state): State<Arc<AppState>>,
    Viewer(viewer): Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let query = AggregateRequest::parse_query(raw.as_deref().unwrap_or(""))?;
    let Some(CentralOffice(who)) = viewer else {
        return Ok(login_page(StatusCode::OK, None));
    };
    let result = release(
        &state,
        &who,
        query.period,
        query.min_count,
        "dashboard view",
    )
    .await?;
    let wijken = state.store.accounts().list_wijken().await?;
    Ok(PAGE.respond(StatusCode::OK, &render(&result, &wijken)))
}

fn render(result: &Aggregates, wijken: &[(String, String)]) -> String {
    let periods: BTreeSet<&str> = result.cells.iter().map(|c| c.period.as_str()).collect();
    let skip = periods.len().saturating_sub(shown(result.period));
    let periods: Vec<String> = periods.into_iter().skip(skip).map(str::to_owned).collect();
    let mut by_wijk: BTreeMap<&str, WijkCells<'_>> = BTreeMap::new();
    for c in &result.cells {
        by_wijk
            .entry(c.wijk.as_str())
            .or_default()
            .insert((c.period.as_str(), c.metric.as_str()), c);
    }
    let p = result.period.as_str();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>buurtsync — dashboard centraal bureau</h1>\
         <nav>Periode: <a href=\"/dashboard?period=month\">maand</a>\
         <a href=\"/dashboard?period=quarter\">kwartaal</a>\
         <a href=\"/dashboard?period=year\">jaar</a>\
         <a class=\"button\" id=\"download-csv\" href=\"/dashboard/aggregates.csv?period={p}\" download>CSV downloaden</a>\
         <form method=\"post\" action=\"/dashboard/logout\" style=\"display:inline\"><button type=\"submit\">Uitloggen</button></form></nav>\
         <p class=\"note\">Per {}. Aantallen gebaseerd op minder dan {} huishoudens (of bijeenkomsten, \
         activiteiten, vrijwilligers) worden niet getoond: grijs streepje. Ook cellen waaruit zo'n \
         aantal af te leiden is (via maand, kwartaal, jaar of een eerdere levering) zijn onderdrukt.</p>",
        match result.period {
            Period::Month => "maand",
            Period::Quarter => "kwartaal",
            Period::Year => "jaar",
        },
        result.min_count
    );
    let empty = BTreeMap::new();
    for (id, name) in wijken {
        let cells = by_wijk.get(id.as_str()).unwrap_or(&empty);
        let _ = write!(
            body,
            "<section class=\"wijk\" data-wijk=\"{id}\"><h2>{name} <small>({id})</small></h2><div class=\"charts\">",
            id = escape(id),
            name = escape(name)
        );
        for (suffix, title, metrics) in CHARTS {
            let series: Vec<Series<'_>> = metrics
                .iter()
                .zip(PALETTE)
                .map(|((metric, label), color)| Series {
                    label,
                    color,
                    values: periods.iter().map(|p| value(cells, p, metric)).collect(),
                })
                .collect();
            let chart_id = format!("chart-{id}-{suffix}");
            figure(
                &mut body,
                &chart_id,
                title,
                &periods,
                &series,
                result.min_count,
            );
        }
        outcome_charts(&mut body, id, cells, &periods, result.min_count);
        body.push_str("</div></section>");
    }
    body
}
