//! Aggregates per wijk per period (month, quarter, year), with small counts suppressed.
//!
//! Pure: [`aggregate`] turns the facts of every current document into cells. A cell
//! counts something in one wijk and period, and remembers the *units* behind its value:
//! the households for anything from plans, the sessions, activiteiten or volunteers for
//! activities. A cell backed by fewer units than the threshold (default 5) is
//! suppressed — its value is withheld, so no household can be singled out, however
//! many contact moments or goals one household has.
//!
//! Time: contact moments, sessions and hand-overs count in the month of their own date;
//! `plans_new` in the month the server first stored the plan; the status and goal
//! snapshots (`plans_status.*`, `goals_*`) and `plans_closed` in the month of the plan's
//! last change. The outcome metrics (`outcome.*`, `zrm.*`, `ladder.*`, schema 2) count
//! each household once, in the month of the *entered* date of its status change or
//! measurement (see [`super::outcome`]), never in the month of the plan's last change.
//!
//! Suppression is [`disclosure`]'s: primary, secondary over the month/quarter/year
//! equations, consistent with earlier releases. Quantiles (median, p75 of days) are
//! suppressed when fewer than k households are behind them or their count is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use sync_core::partition::WijkId;
use sync_core::schema::plan::{PlanStatus, ZrmDomein};

use super::cellkey::{self, CellKeys, Disclosure};
use super::disclosure::{self, Input, Memory, Protection, Relation};
use super::outcome::{self, Movement};
use super::record::{Body, Facts, Month};

/// The length of a period (`month`, `quarter`, `year`), parsed by the API's requests.
pub use sync_core::api::Period;

/// The period a month falls in, spelled `2024-03`, `2024-Q1` or `2024`.
pub fn period_label(period: Period, m: Month) -> String {
    match period {
        Period::Month => m.to_string(),
        Period::Quarter => format!("{:04}-Q{}", m.year, m.quarter()),
        Period::Year => format!("{:04}", m.year),
    }
}

/// One number: a metric in one wijk and period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub wijk: WijkId,
    pub period: String,
    pub metric: String,
    /// `None` when suppressed.
    pub value: Option<f64>,
    pub suppressed: bool,
}

/// All cells, sorted by wijk, period, metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Aggregates {
    pub period: Period,
    /// Cells backed by fewer units than this are suppressed.
    pub min_count: u64,
    /// Suppression, or cell-key perturbation (`--central-disclosure`).
    pub method: Disclosure,
    pub cells: Vec<Cell>,
}

/// The unit a cell's value rests on: suppression counts distinct units.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Household(String),
    Session(String, usize),
    Activiteit(String),
    Volunteer([u8; 32]),
}

impl Unit {
    /// The unit as bytes for its cell-key record key: a tag, then its identity.
    fn bytes(&self) -> Vec<u8> {
        let (tag, rest): (u8, Vec<u8>) = match self {
            Unit::Household(h) => (b'h', h.as_bytes().to_vec()),
            Unit::Session(doc, i) => (b's', format!("{doc}/{i}").into_bytes()),
            Unit::Activiteit(doc) => (b'a', doc.as_bytes().to_vec()),
            Unit::Volunteer(hash) => (b'v', hash.to_vec()),
        };
        let mut out = vec![tag];
        out.extend(rest);
        out
    }
}

#[derive(Default, Clone)]
struct Acc {
    value: f64,
    units: BTreeSet<Unit>,
    /// Days, for the quantile metrics.
    samples: Vec<i64>,
}

impl Acc {
    fn absorb(&mut self, other: &Acc) {
        self.value += other.value;
        self.units.extend(other.units.iter().cloned());
        self.samples.extend(other.samples.iter().copied());
    }
}

/// How a metric's value is made from what was added.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// A sum: additive over months, so quarter = Σ months and year = Σ quarters, and
    /// those equations are protected by secondary suppression.
    Sum,
    /// A count of distinct units in the period (not additive over months).
    Distinct,
    /// A quantile of the days collected under `base`; suppressed with its count
    /// metric `companion`.
    Quantile {
        base: &'static str,
        p: f64,
        companion: &'static str,
    },
}

/// The quantile metrics: (metric, samples under, p, the household count it goes with).
const QUANTILES: &[(&str, &str, f64, &str)] = &[
    (
        "outcome.waiting_days.median",
        "outcome.waiting_days",
        0.5,
        "outcome.started",
    ),
    (
        "outcome.waiting_days.p75",
        "outcome.waiting_days",
        0.75,
        "outcome.started",
    ),
    (
        "outcome.plan_days.median",
        "outcome.plan_days",
        0.5,
        "outcome.planned",
    ),
    (
        "outcome.plan_days.p75",
        "outcome.plan_days",
        0.75,
        "outcome.planned",
    ),
    (
        "outcome.duration_days.median",
        "outcome.duration_days",
        0.5,
        "outcome.closed",
    ),
    (
        "outcome.duration_days.p75",
        "outcome.duration_days",
        0.75,
        "outcome.closed",
    ),
];

fn kind(metric: &str) -> Kind {
    if let Some((_, base, p, companion)) = QUANTILES.iter().find(|q| q.0 == metric) {
        return Kind::Quantile {
            base,
            p: *p,
            companion,
        };
    }
    match metric {
        "activiteiten" | "unique_volunteers" => Kind::Distinct,
        _ => Kind::Sum,
    }
}

/// The outcome metric names (schema 2), in the order the CSV and dashboard show them.
pub fn outcome_metric_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "outcome.aanmeldingen",
        "outcome.started",
        "outcome.planned",
        "outcome.closed",
        "outcome.reopened",
    ]
    .map(str::to_owned)
    .to_vec();
    names.extend(QUANTILES.iter().map(|q| q.0.to_owned()));
    for domain in ZrmDomein::ALL {
        for m in Movement::ALL {
            names.push(format!("zrm.{}.{}", domain.as_str(), m.as_str()));
        }
    }
    names.extend(["ladder.up", "ladder.same", "ladder.down"].map(str::to_owned));
    names
}

fn ladder_name(m: Movement) -> &'static str {
    match m {
        Movement::Improved => "ladder.up",
        Movement::Same => "ladder.same",
        Movement::Worse => "ladder.down",
    }
}

/// Adds every fact to month-level accumulators per (wijk, metric).
fn accumulate<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
) -> BTreeMap<(WijkId, String), BTreeMap<Month, Acc>> {
    let mut acc: BTreeMap<(WijkId, String), BTreeMap<Month, Acc>> = BTreeMap::new();
    let mut add =
        |wijk: &WijkId, m: Month, metric: &str, value: f64, unit: Unit, sample: Option<i64>| {
            let cell = acc
                .entry((wijk.clone(), metric.to_owned()))
                .or_default()
                .entry(m)
                .or_default();
            cell.value += value;
            cell.units.insert(unit);
            cell.samples.extend(sample);
        };
    for f in facts {
        let doc = f.id.to_string();
        match &f.body {
            Body::Plan(plan) => {
                let hh = || Unit::Household(plan.household.trim().to_owned());
                let mut count = |m: Month, metric: &str| add(&f.wijk, m, metric, 1.0, hh(), None);
                if let Some(m) = f.created {
                    count(m, "plans_new");
                }
                if let Some(m) = f.changed {
                    if plan.status == PlanStatus::Afgesloten {
                        count(m, "plans_closed");
                    }
                    count(m, &format!("plans_status.{}", plan.status.as_str()));
                    for (domain, status, _) in &plan.goals {
                        count(m, &format!("goals_leefdomein.{}", domain.as_str()));
                        count(m, &format!("goals_status.{}", status.as_str()));
                    }
                }
                for (m, kind) in &plan.contacts {
                    count(*m, &format!("contacts.{}", kind.as_str()));
                }
                if plan.handed_over {
                    if let Some(m) = plan.handover_month.or(f.changed) {
                        count(m, "handovers");
                    }
                }
                // Outcomes: each in the month of its entered date, once per household.
                let o = &plan.outcome;
                let month =
                    |d: &Option<sync_core::schema::Date>| d.as_ref().and_then(Month::of_date);
                for (date, metric, days) in [
                    (&o.aanmelding, "outcome.aanmeldingen", None),
                    (
                        &o.intake,
                        "outcome.started",
                        Some(("outcome.waiting_days", o.waiting_days)),
                    ),
                    (
                        &o.plan,
                        "outcome.planned",
                        Some(("outcome.plan_days", o.plan_days)),
                    ),
                    (
                        &o.closed,
                        "outcome.closed",
                        Some(("outcome.duration_days", o.duration_days)),
                    ),
                    (&o.reopened, "outcome.reopened", None),
                ] {
                    let Some(m) = month(date) else { continue };
                    add(&f.wijk, m, metric, 1.0, hh(), None);
                    if let Some((base, Some(d))) = days {
                        add(&f.wijk, m, base, 0.0, hh(), Some(d));
                    }
                }
                for (domain, date, movement) in &o.zrm {
                    if let Some(m) = Month::of_date(date) {
                        let metric = format!("zrm.{}.{}", domain.as_str(), movement.as_str());
                        add(&f.wijk, m, &metric, 1.0, hh(), None);
                    }
                }
                if let Some((date, movement)) = &o.ladder {
                    if let Some(m) = Month::of_date(date) {
                        add(&f.wijk, m, ladder_name(*movement), 1.0, hh(), None);
                    }
                }
            }
            Body::Activiteit(act) => {
                for (i, (m, attendance, hours)) in act.sessions.iter().enumerate() {
                    let session = || Unit::Session(doc.clone(), i);
                    add(&f.wijk, *m, "sessions", 1.0, session(), None);
                    add(
                        &f.wijk,
                        *m,
                        "participants",
                        *attendance as f64,
                        session(),
                        None,
                    );
                    add(&f.wijk, *m, "volunteer_hours", *hours, session(), None);
                    // Distinct per period: a volunteer active in two months of a quarter
                    // is one unique volunteer of that quarter.
                    add(
                        &f.wijk,
                        *m,
                        "activiteiten",
                        0.0,
                        Unit::Activiteit(doc.clone()),
                        None,
                    );
                    for v in &act.volunteers {
                        add(
                            &f.wijk,
                            *m,
                            "unique_volunteers",
                            0.0,
                            Unit::Volunteer(*v),
                            None,
                        );
                    }
                }
            }
            Body::Erased | Body::Unreadable => {}
        }
    }
    acc
}

/// A cell of the full release: every granularity at once.
struct Full {
    wijk: WijkId,
    metric: String,
    period: Period,
    label: String,
    acc: Acc,
}

/// The aggregates of `facts` (erased and unreadable documents count nowhere) for one
/// period length, protected as part of the release of *all* period lengths: the
/// month, quarter and year tables are slices of one table whose suppression pattern
/// is computed once (see [`disclosure`]). `today` bounds the months that exist;
/// `memory` (when given) makes the server's release (threshold `base`) consistent with
/// every earlier one, and is updated with it. A stricter export (`min_count` > `base`)
/// starts from that release and hides more: it publishes a subset of what the server's
/// release publishes, and is itself safe at its own threshold; it is not remembered.
pub fn aggregate<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
    period: Period,
    min_count: u64,
    base: u64,
    today: Month,
    method: Method<'_>,
) -> Aggregates {
    let disclosure = match method {
        Method::Suppression(_) => Disclosure::Suppression,
        Method::CellKey(_) => Disclosure::CellKey,
    };
    let release = release(facts, min_count, base.min(min_count), today, method);
    let cells = release
        .into_iter()
        .filter(|c| c.period == period)
        .map(|c| c.cell)
        .collect();
    Aggregates {
        period,
        min_count,
        method: disclosure,
        cells,
    }
}

/// How a release is protected.
pub enum Method<'a> {
    /// Primary and secondary suppression, consistent with the memory of earlier
    /// releases when one is given (and updated with this one).
    Suppression(Option<&'a mut Memory>),
    /// Cell-key perturbation with these record keys.
    CellKey(&'a CellKeys),
}

/// A cell with the period length it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Released {
    pub period: Period,
    pub cell: Cell,
}

/// The server's whole release at threshold `base`: every cell of every period length,
/// consistent with `memory` (when given), which is updated with it.
pub fn release_all<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
    base: u64,
    today: Month,
    memory: Option<&mut Memory>,
) -> Vec<Released> {
    release(facts, base, base, today, Method::Suppression(memory))
}

fn release<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
    min_count: u64,
    base: u64,
    today: Month,
    method: Method<'_>,
) -> Vec<Released> {
    let acc = accumulate(facts);
    let mut full: Vec<Full> = Vec::new();
    let mut relations: Vec<Relation> = Vec::new();
    let mut index: HashMap<(WijkId, String, String), usize> = HashMap::new();
    let mut push =
        |full: &mut Vec<Full>, wijk: &WijkId, metric: &str, period: Period, m: Month, acc: Acc| {
            let label = period_label(period, m);
            index.insert((wijk.clone(), metric.to_owned(), label.clone()), full.len());
            full.push(Full {
                wijk: wijk.clone(),
                metric: metric.to_owned(),
                period,
                label,
                acc,
            });
            full.len() - 1
        };
    for ((wijk, metric), months) in &acc {
        if matches!(kind(metric), Kind::Quantile { .. }) {
            continue;
        }
        let base_for_quantiles = QUANTILES.iter().any(|q| q.1 == metric);
        let years: BTreeSet<u16> = months.keys().map(|m| m.year).collect();
        for year in years {
            // The frame: every month of the year up to today, and any with data.
            let frame: Vec<Month> = (1..=12u8)
                .map(|month| Month { year, month })
                .filter(|m| *m <= today || months.contains_key(m))
                .collect();
            let mut year_acc = Acc::default();
            let mut quarter_ids = Vec::new();
            for q in 1..=4u8 {
                let in_q: Vec<Month> = frame.iter().copied().filter(|m| m.quarter() == q).collect();
                if in_q.is_empty() {
                    continue;
                }
                let mut q_acc = Acc::default();
                let mut month_ids = Vec::new();
                for m in &in_q {
                    let a = months.get(m).cloned().unwrap_or_default();
                    q_acc.absorb(&a);
                    if base_for_quantiles {
                        continue;
                    }
                    month_ids.push(push(&mut full, wijk, metric, Period::Month, *m, a));
                }
                year_acc.absorb(&q_acc);
                if base_for_quantiles {
                    push(&mut full, wijk, metric, Period::Quarter, in_q[0], q_acc);
                    continue;
                }
                let qid = push(&mut full, wijk, metric, Period::Quarter, in_q[0], q_acc);
                quarter_ids.push(qid);
                if kind(metric) == Kind::Sum {
                    relations.push(Relation {
                        left: vec![qid],
                        right: month_ids,
                    });
                }
            }
            let first = Month { year, month: 1 };
            let yid = push(&mut full, wijk, metric, Period::Year, first, year_acc);
            if kind(metric) == Kind::Sum && !base_for_quantiles {
                relations.push(Relation {
                    left: vec![yid],
                    right: quarter_ids,
                });
            }
            if base_for_quantiles {
                // The sample months too, for the monthly quantiles.
                for m in &frame {
                    let a = months.get(m).cloned().unwrap_or_default();
                    push(&mut full, wijk, metric, Period::Month, *m, a);
                }
            }
        }
    }
    // Equal metrics, and goals counted twice (per leefdomein and per status).
    let groups: BTreeSet<(WijkId, String)> = full
        .iter()
        .map(|c| (c.wijk.clone(), c.label.clone()))
        .collect();
    for (wijk, label) in &groups {
        let at = |metric: &str| {
            index
                .get(&(wijk.clone(), metric.to_owned(), label.clone()))
                .copied()
        };
        if let (Some(a), Some(b)) = (at("plans_closed"), at("plans_status.afgesloten")) {
            relations.push(Relation {
                left: vec![a],
                right: vec![b],
            });
        }
        let domains: Vec<usize> = sync_core::schema::plan::Leefdomein::ALL
            .iter()
            .filter_map(|d| at(&format!("goals_leefdomein.{}", d.as_str())))
            .collect();
        let statuses: Vec<usize> = sync_core::schema::plan::GoalStatus::ALL
            .iter()
            .filter_map(|s| at(&format!("goals_status.{}", s.as_str())))
            .collect();
        if !domains.is_empty() || !statuses.is_empty() {
            relations.push(Relation {
                left: domains,
                right: statuses,
            });
        }
    }
    let inputs: Vec<Input> = full
        .iter()
        .map(|c| Input {
            value: match kind(&c.metric) {
                Kind::Distinct => c.acc.units.len() as f64,
                _ => round(c.acc.value),
            },
            units: c.acc.units.len() as u64,
        })
        .collect();
    let keys: Vec<String> = full
        .iter()
        .map(|c| format!("{}|{}|{}", c.wijk, c.label, c.metric))
        .collect();
    if let Method::CellKey(keys) = method {
        return perturbed(&full, &inputs, &index, min_count, base, keys);
    }
    let memory = match method {
        Method::Suppression(memory) => memory,
        Method::CellKey(_) => None,
    };
    let server_release = match memory {
        Some(memory) => {
            let how = Protection {
                min_count: base,
                keys: Some((&keys, &*memory)),
                floor: None,
            };
            let s = disclosure::protect_all(&inputs, &relations, how);
            memory.remember(
                keys.iter()
                    .zip(&inputs)
                    .zip(&s)
                    .map(|((k, i), s)| (k.as_str(), i.value, *s)),
            );
            s
        }
        None => disclosure::protect_all(&inputs, &relations, Protection::alone(base)),
    };
    let suppressed = if min_count > base {
        let how = Protection {
            floor: Some(&server_release),
            ..Protection::alone(min_count)
        };
        disclosure::protect_all(&inputs, &relations, how)
    } else {
        server_release
    };
    let published: Vec<Option<f64>> = inputs
        .iter()
        .zip(&suppressed)
        .map(|(i, s)| (!s).then_some(i.value))
        .collect();
    cells_of(&full, &published, &index, min_count)
}

/// Cell-key perturbation (`super::cellkey`): every count with its cell's noise (the
/// server's threshold `base` as js, whatever a request asks: a threshold per request
/// would let one cell be perturbed many ways); magnitudes backed by fewer than
/// `min_count` units suppressed.
fn perturbed(
    full: &[Full],
    inputs: &[Input],
    index: &HashMap<(WijkId, String, String), usize>,
    min_count: u64,
    base: u64,
    keys: &CellKeys,
) -> Vec<Released> {
    let published: Vec<Option<f64>> = full
        .iter()
        .zip(inputs)
        .map(|(c, i)| {
            if MAGNITUDES.contains(&c.metric.as_str()) {
                return (i.units == 0 || i.units >= min_count).then_some(i.value);
            }
            let ck = cellkey::cell_key(c.acc.units.iter().map(|u| keys.record_key(&u.bytes())));
            // Counts are whole numbers; the cast cannot lose anything that matters.
            Some(cellkey::perturb(i.value.max(0.0) as u64, ck, base) as f64)
        })
        .collect();
    cells_of(full, &published, index, min_count)
}

/// Metrics that sum magnitudes, not units: suppressed, never perturbed.
const MAGNITUDES: &[&str] = &["participants", "volunteer_hours"];

/// The released cells: `published[i]` is cell i's value, `None` when suppressed.
fn cells_of(
    full: &[Full],
    published: &[Option<f64>],
    index: &HashMap<(WijkId, String, String), usize>,
    min_count: u64,
) -> Vec<Released> {
    let suppressed: Vec<bool> = published.iter().map(Option::is_none).collect();
    let mut out: Vec<Released> = Vec::new();
    for (i, c) in full.iter().enumerate() {
        if QUANTILES.iter().any(|q| q.1 == c.metric) {
            // The samples' own cells are not released; their quantiles are.
            for (name, _, p, companion) in QUANTILES.iter().filter(|q| q.1 == c.metric) {
                let companion_hidden = index
                    .get(&(c.wijk.clone(), (*companion).to_owned(), c.label.clone()))
                    .is_none_or(|&j| suppressed[j]);
                if c.acc.samples.is_empty() {
                    continue;
                }
                let hidden = (c.acc.units.len() as u64) < min_count || companion_hidden;
                out.push(Released {
                    period: c.period,
                    cell: Cell {
                        wijk: c.wijk.clone(),
                        period: c.label.clone(),
                        metric: (*name).to_owned(),
                        value: if hidden {
                            None
                        } else {
                            outcome::quantile(&c.acc.samples, *p).map(|d| d as f64)
                        },
                        suppressed: hidden,
                    },
                });
            }
            continue;
        }
        if c.acc.units.is_empty() && !suppressed[i] {
            // A frame cell: zero, left out as before.
            continue;
        }
        out.push(Released {
            period: c.period,
            cell: Cell {
                wijk: c.wijk.clone(),
                period: c.label.clone(),
                metric: c.metric.clone(),
                value: published[i],
                suppressed: suppressed[i],
            },
        });
    }
    out.sort_by(|a, b| {
        (&a.cell.wijk, &a.cell.period, &a.cell.metric).cmp(&(
            &b.cell.wijk,
            &b.cell.period,
            &b.cell.metric,
        ))
    });
    out
}

/// Hours summed from floats: two decimals are plenty and hide float noise.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The aggregates as CSV columns: wijk, period, metric, value, suppressed.
pub const CSV_COLUMNS: &[&str] = &["wijk", "period", "metric", "value", "suppressed"];

/// One CSV row of a cell; a suppressed value is an empty field.
pub fn csv_row(cell: &Cell) -> Vec<String> {
    vec![
        cell.wijk.to_string(),
        cell.period.clone(),
        cell.metric.clone(),
        cell.value.map(|v| v.to_string()).unwrap_or_default(),
        cell.suppressed.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::central::record::{ActiviteitFacts, PlanFacts};
    use sync_core::partition::DocumentKind;
    use sync_core::protocol::DocumentId;
    use sync_core::schema::plan::ContactKind;

    fn month(s: &str) -> Month {
        Month::parse_prefix(s).expect("month")
    }

    fn plan(household: &str, contacts: &[(&str, ContactKind)]) -> Facts {
        Facts {
            id: DocumentId::random(),
            seq: 1,
            kind: DocumentKind::Plan,
            wijk: WijkId::new("noord").expect("wijk"),
            created: Some(month("2024-03")),
            changed: Some(month("2024-04")),
            body: Body::Plan(PlanFacts {
                household: household.into(),
                status: PlanStatus::Intake,
                goals: Vec::new(),
                actions: 0,
                actions_done: 0,
                contacts: contacts.iter().map(|(m, k)| (month(m), *k)).collect(),
                consents_active: 0,
                handed_over: false,
                handover_month: None,
                history: Vec::new(),
                zrm: Vec::new(),
                ladder: Vec::new(),
                outcome: Default::default(),
            }),
        }
    }

    fn cell<'a>(a: &'a Aggregates, period: &str, metric: &str) -> Option<&'a Cell> {
        a.cells
            .iter()
            .find(|c| c.period == period && c.metric == metric)
    }

    /// Suppression counts households, not contact moments: one household with six
    /// huisbezoeken stays hidden, five households with one each are shown.
    #[test]
    fn suppression_counts_households() {
        let busy = plan("hh-1", &[("2024-03-01", ContactKind::Huisbezoek); 6]);
        let a = aggregate(
            [&busy],
            Period::Month,
            5,
            1,
            month("2024-12"),
            Method::Suppression(None),
        );
        let c = cell(&a, "2024-03", "contacts.huisbezoek").expect("cell");
        assert!(c.suppressed && c.value.is_none(), "{c:?}");

        let five: Vec<Facts> = (0..5)
            .map(|i| {
                plan(
                    &format!("hh-{i}"),
                    &[("2024-03-09", ContactKind::Huisbezoek)],
                )
            })
            .collect();
        let a = aggregate(
            &five,
            Period::Quarter,
            5,
            1,
            month("2024-12"),
            Method::Suppression(None),
        );
        assert_eq!(
            cell(&a, "2024-Q1", "contacts.huisbezoek").and_then(|c| c.value),
            Some(5.0)
        );
        assert_eq!(
            cell(&a, "2024-Q1", "plans_new").and_then(|c| c.value),
            Some(5.0)
        );
        assert_eq!(
            cell(&a, "2024-Q2", "plans_status.intake").and_then(|c| c.value),
            Some(5.0)
        );
        let a = aggregate(
            &five,
            Period::Year,
            6,
            1,
            month("2024-12"),
            Method::Suppression(None),
        );
        assert!(cell(&a, "2024", "plans_new").is_some_and(|c| c.suppressed));
    }

    /// Cell-key perturbation: no count of 1 to k-1 is published (a lone household's
    /// cell is 0 or k), nothing is suppressed but small magnitudes, and the same units
    /// give the same values again.
    #[test]
    fn cell_key_perturbation() {
        let keys = CellKeys::new(&[3; 32]);
        let lone = plan("hh-1", &[("2024-03-01", ContactKind::Huisbezoek)]);
        let many: Vec<Facts> = (0..12)
            .map(|i| plan(&format!("hh-{i}"), &[("2024-03-09", ContactKind::Telefoon)]))
            .collect();
        let all: Vec<&Facts> = std::iter::once(&lone).chain(&many).collect();
        let run = || {
            let method = Method::CellKey(&keys);
            aggregate(
                all.iter().copied(),
                Period::Month,
                5,
                5,
                month("2024-12"),
                method,
            )
        };
        let a = run();
        assert_eq!(a.method, Disclosure::CellKey);
        assert_eq!(a, run(), "the same units, the same noise");
        for c in &a.cells {
            assert!(!c.suppressed, "{c:?}");
            let v = c.value.expect("published");
            assert!(v == 0.0 || v >= 5.0, "{c:?}");
        }
        let phone = cell(&a, "2024-03", "contacts.telefoon").and_then(|c| c.value);
        assert!(
            phone.is_some_and(|v| (10.0..=14.0).contains(&v)),
            "{phone:?}"
        );
    }

    /// Sessions count per month; a volunteer counts once per period however many
    /// activiteiten and sessions they helped at.
    #[test]
    fn activities_and_unique_volunteers() {
        let henk: [u8; 32] = [1; 32];
        let act = |sessions: Vec<(Month, u64, f64)>| Facts {
            id: DocumentId::random(),
            seq: 1,
            kind: DocumentKind::Activiteit,
            wijk: WijkId::new("noord").expect("wijk"),
            created: None,
            changed: None,
            body: Body::Activiteit(ActiviteitFacts {
                sessions,
                volunteers: [henk].into(),
            }),
        };
        let a1 = act(vec![
            (month("2024-01"), 10, 2.0),
            (month("2024-02"), 8, 1.5),
        ]);
        let a2 = act(vec![(month("2024-02"), 7, 1.0)]);
        let a = aggregate(
            [&a1, &a2],
            Period::Quarter,
            1,
            1,
            month("2024-12"),
            Method::Suppression(None),
        );
        let value = |m: &str| cell(&a, "2024-Q1", m).and_then(|c| c.value);
        assert_eq!(value("sessions"), Some(3.0));
        assert_eq!(value("participants"), Some(25.0));
        assert_eq!(value("volunteer_hours"), Some(4.5));
        assert_eq!(value("activiteiten"), Some(2.0));
        assert_eq!(value("unique_volunteers"), Some(1.0));
    }
}
