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
//! last change — documents carry no status history, so these are snapshots of today.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde::Serialize;
use sync_core::partition::WijkId;
use sync_core::schema::plan::PlanStatus;

use super::record::{Body, Facts, Month};

/// The length of a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Quarter,
    Year,
}

impl Period {
    /// The period a month falls in, spelled `2024-03`, `2024-Q1` or `2024`.
    pub fn label(self, m: Month) -> String {
        match self {
            Period::Month => m.to_string(),
            Period::Quarter => format!("{:04}-Q{}", m.year, m.quarter()),
            Period::Year => format!("{:04}", m.year),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }
}

impl FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "month" => Ok(Period::Month),
            "quarter" => Ok(Period::Quarter),
            "year" => Ok(Period::Year),
            other => Err(format!(
                "unknown period {other:?} (expected month, quarter or year)"
            )),
        }
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

#[derive(Default)]
struct Acc {
    value: f64,
    units: BTreeSet<Unit>,
}

/// Every metric name, in the order the CSV and dashboard show them.
pub fn metric_names() -> Vec<String> {
    let mut names = vec!["plans_new".to_owned(), "plans_closed".to_owned()];
    names.extend(
        PlanStatus::ALL
            .iter()
            .map(|s| format!("plans_status.{}", s.as_str())),
    );
    names.extend(
        sync_core::schema::plan::Leefdomein::ALL
            .iter()
            .map(|d| format!("goals_leefdomein.{}", d.as_str())),
    );
    names.extend(
        sync_core::schema::plan::GoalStatus::ALL
            .iter()
            .map(|s| format!("goals_status.{}", s.as_str())),
    );
    names.extend(
        sync_core::schema::plan::ContactKind::ALL
            .iter()
            .map(|k| format!("contacts.{}", k.as_str())),
    );
    names.extend(
        [
            "handovers",
            "activiteiten",
            "sessions",
            "participants",
            "unique_volunteers",
            "volunteer_hours",
        ]
        .map(str::to_owned),
    );
    names
}

/// The aggregates of `facts` (erased and unreadable documents count nowhere).
pub fn aggregate<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
    period: Period,
    min_count: u64,
) -> Aggregates {
    let mut acc: BTreeMap<(WijkId, String, String), Acc> = BTreeMap::new();
    let mut add = |wijk: &WijkId, m: Month, metric: &str, value: f64, unit: Unit| {
        let cell = acc
            .entry((wijk.clone(), period.label(m), metric.to_owned()))
            .or_default();
        cell.value += value;
        cell.units.insert(unit);
    };
    for f in facts {
        let doc = f.id.to_string();
        match &f.body {
            Body::Plan(plan) => {
                let hh = || Unit::Household(plan.household.trim().to_owned());
                if let Some(m) = f.created {
                    add(&f.wijk, m, "plans_new", 1.0, hh());
                }
                if let Some(m) = f.changed {
                    if plan.status == PlanStatus::Afgesloten {
                        add(&f.wijk, m, "plans_closed", 1.0, hh());
                    }
                    add(
                        &f.wijk,
                        m,
                        &format!("plans_status.{}", plan.status.as_str()),
                        1.0,
                        hh(),
                    );
                    for (domain, status, _) in &plan.goals {
                        add(
                            &f.wijk,
                            m,
                            &format!("goals_leefdomein.{}", domain.as_str()),
                            1.0,
                            hh(),
                        );
                        add(
                            &f.wijk,
                            m,
                            &format!("goals_status.{}", status.as_str()),
                            1.0,
                            hh(),
                        );
                    }
                }
                for (m, kind) in &plan.contacts {
                    add(
                        &f.wijk,
                        *m,
                        &format!("contacts.{}", kind.as_str()),
                        1.0,
                        hh(),
                    );
                }
                if plan.handed_over {
                    if let Some(m) = plan.handover_month.or(f.changed) {
                        add(&f.wijk, m, "handovers", 1.0, hh());
                    }
                }
            }
            Body::Activiteit(act) => {
                let mut months: BTreeSet<Month> = BTreeSet::new();
                for (i, (m, attendance, hours)) in act.sessions.iter().enumerate() {
                    let session = || Unit::Session(doc.clone(), i);
                    months.insert(*m);
                    add(&f.wijk, *m, "sessions", 1.0, session());
                    add(&f.wijk, *m, "participants", *attendance as f64, session());
                    add(&f.wijk, *m, "volunteer_hours", *hours, session());
                }
                // Per period, not per month: a volunteer active in two months of a
                // quarter is one unique volunteer of that quarter.
                let periods: BTreeMap<String, Month> =
                    months.iter().map(|m| (period.label(*m), *m)).collect();
                for m in periods.values() {
                    add(
                        &f.wijk,
                        *m,
                        "activiteiten",
                        1.0,
                        Unit::Activiteit(doc.clone()),
                    );
                    for v in &act.volunteers {
                        add(&f.wijk, *m, "unique_volunteers", 0.0, Unit::Volunteer(*v));
                    }
                }
            }
            Body::Erased | Body::Unreadable => {}
        }
    }
    let cells = acc
        .into_iter()
        .map(|((wijk, period, metric), a)| {
            let value = if metric == "unique_volunteers" {
                a.units.len() as f64
            } else {
                a.value
            };
            let suppressed = (a.units.len() as u64) < min_count;
            Cell {
                wijk,
                period,
                metric,
                value: (!suppressed).then_some(round(value)),
                suppressed,
            }
        })
        .collect();
    Aggregates {
        period,
        min_count,
        cells,
    }
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
        let a = aggregate([&busy], Period::Month, 5);
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
        let a = aggregate(&five, Period::Quarter, 5);
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
        let a = aggregate(&five, Period::Year, 6);
        assert!(cell(&a, "2024", "plans_new").is_some_and(|c| c.suppressed));
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
        let a = aggregate([&a1, &a2], Period::Quarter, 1);
        let value = |m: &str| cell(&a, "2024-Q1", m).and_then(|c| c.value);
        assert_eq!(value("sessions"), Some(3.0));
        assert_eq!(value("participants"), Some(25.0));
        assert_eq!(value("volunteer_hours"), Some(4.5));
        assert_eq!(value("activiteiten"), Some(2.0));
        assert_eq!(value("unique_volunteers"), Some(1.0));
    }
}
