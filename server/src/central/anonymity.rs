//! k-anonymity of the record-level feed (issue 16, item 9): no combination of a plan
//! record's exported fields occurs fewer than k times in a release, so the feed cannot
//! single out the household behind a suppressed aggregate cell.
//!
//! A *release* of the feed is the record of every current plan, generalised together;
//! a feed page (any cursor) is a slice of it. The quasi-identifiers are every exported
//! field of a plan record but its identifiers (`seq`, `record`, `household`: keyed
//! pseudonyms, which the aggregates do not carry). Each field group ([`Attr`]) has a
//! ladder of ever coarser levels, ending in "not sent" (months → quarters → years;
//! lists → less detail → a band or nothing; counts → bands → nothing).
//!
//! The levels are chosen per wijk (records of two wijken never share a class, since
//! `wijk` is exported), one level per field group for every record of the wijk
//! (full-domain generalisation), by Sweeney's Datafly heuristic: while more than k
//! records sit in classes smaller than k, coarsen the field group with the most
//! distinct values (at most k records, and at most a tenth of the wijk's, may stay
//! behind). The records still in small classes are then *withheld*: sent with
//! their `seq`, `record` and `kind` only (no wijk), so the recipient can drop an older
//! copy and learns nothing else. (L. Sweeney, "Achieving k-anonymity privacy
//! protection using generalization and suppression", Int. J. Uncertainty, Fuzziness
//! and Knowledge-Based Systems 10(5), 2002; Hundepool et al., *Statistical Disclosure
//! Control*, Wiley 2012, §3.4.)
//!
//! Activiteiten are not generalised: no household is behind them (their aggregate
//! units are sessions, activiteiten and volunteers), see docs/central-office.md.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{json, Map, Value};
use sync_core::partition::WijkId;
use sync_core::protocol::DocumentId;
use sync_core::schema::plan::PositiveHealth;

use super::aggregate::Period;
use super::record::{Body, Facts, Month, PlanFacts};

/// A group of exported fields that is generalised as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attr {
    Created,
    Changed,
    Status,
    Goals,
    Actions,
    Contacts,
    Consents,
    Handover,
    History,
}

impl Attr {
    pub const ALL: [Attr; 9] = [
        Attr::Created,
        Attr::Changed,
        Attr::Status,
        Attr::Goals,
        Attr::Actions,
        Attr::Contacts,
        Attr::Consents,
        Attr::Handover,
        Attr::History,
    ];

    /// The name in a record's `generalised` object.
    pub fn as_str(self) -> &'static str {
        match self {
            Attr::Created => "created_month",
            Attr::Changed => "changed_month",
            Attr::Status => "status",
            Attr::Goals => "goals",
            Attr::Actions => "actions",
            Attr::Contacts => "contacts",
            Attr::Consents => "consents_active",
            Attr::Handover => "handover",
            Attr::History => "status_history",
        }
    }

    /// The levels, finest first; the last is always `none` (not sent).
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Attr::Created | Attr::Changed => &["month", "quarter", "year", "none"],
            Attr::Status => &["status", "none"],
            Attr::Goals => &["goals", "without_health", "leefdomeinen", "none"],
            Attr::Actions | Attr::Consents => &["count", "band", "none"],
            Attr::Contacts => &["month", "quarter", "year", "band", "none"],
            Attr::Handover => &["month", "quarter", "year", "flag", "none"],
            Attr::History => &["month", "quarter", "year", "statuses", "none"],
        }
    }
}

/// A count, coarsened: `0`, `1-2`, `3-5`, `6-10`, `11+`.
fn band(n: u64) -> &'static str {
    match n {
        0 => "0",
        1..=2 => "1-2",
        3..=5 => "3-5",
        6..=10 => "6-10",
        _ => "11+",
    }
}

/// A month at a time level: 0 month, 1 quarter, 2 year.
fn period(m: Month, level: usize) -> String {
    match level {
        0 => Period::Month.label(m),
        1 => Period::Quarter.label(m),
        _ => Period::Year.label(m),
    }
}

fn at(m: Option<Month>, level: usize) -> Value {
    match m {
        Some(m) if level < 3 => Value::String(period(m, level)),
        _ => Value::Null,
    }
}

/// The exported fields of one field group of a plan at one level.
pub fn fields(
    attr: Attr,
    level: usize,
    facts: &Facts,
    plan: &PlanFacts,
) -> Vec<(&'static str, Value)> {
    let none = level + 1 == attr.levels().len();
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|x| x.to_string());
        Value::Array(v)
    };
    match attr {
        Attr::Created => vec![("created_month", at(facts.created, level))],
        Attr::Changed => vec![("changed_month", at(facts.changed, level))],
        Attr::Status => vec![(
            "status",
            if none {
                Value::Null
            } else {
                json!(plan.status.as_str())
            },
        )],
        Attr::Goals => {
            let goals = match level {
                0 => sorted(
                    plan.goals
                        .iter()
                        .map(|(domain, status, health)| {
                            json!({
                                "leefdomein": domain.as_str(),
                                "status": status.as_str(),
                                "positive_health": health.map(PositiveHealth::as_str),
                            })
                        })
                        .collect(),
                ),
                1 => sorted(
                    plan.goals
                        .iter()
                        .map(|(domain, status, _)| {
                            json!({ "leefdomein": domain.as_str(), "status": status.as_str() })
                        })
                        .collect(),
                ),
                2 => {
                    let domains: BTreeSet<&str> =
                        plan.goals.iter().map(|(d, _, _)| d.as_str()).collect();
                    Value::Array(
                        domains
                            .into_iter()
                            .map(|d| json!({ "leefdomein": d }))
                            .collect(),
                    )
                }
                _ => Value::Null,
            };
            vec![("goals", goals)]
        }
        Attr::Actions | Attr::Consents => {
            let count = |n: u64| match level {
                0 => json!(n),
                1 => json!(band(n)),
                _ => Value::Null,
            };
            if attr == Attr::Actions {
                vec![
                    ("actions", count(plan.actions)),
                    ("actions_done", count(plan.actions_done)),
                ]
            } else {
                vec![("consents_active", count(plan.consents_active))]
            }
        }
        Attr::Contacts => {
            let contacts = match level {
                0..=2 => sorted(
                    plan.contacts
                        .iter()
                        .map(|(m, kind)| json!({ "month": period(*m, level), "kind": kind.as_str() }))
                        .collect(),
                ),
                3 => json!(band(plan.contacts.len() as u64)),
                _ => Value::Null,
            };
            vec![("contacts", contacts)]
        }
        Attr::Handover => {
            let month = if plan.handed_over && level < 3 {
                at(plan.handover_month, level)
            } else {
                Value::Null
            };
            let flag = if none {
                Value::Null
            } else {
                json!(plan.handed_over)
            };
            vec![("handed_over", flag), ("handover_month", month)]
        }
        Attr::History => {
            let history = match level {
                0..=2 => Value::Array(
                    plan.history
                        .iter()
                        .map(|h| {
                            json!({
                                "status": h.status.as_str(),
                                "month": at(Month::of_date(&h.date), level),
                                "known_month": at(h.known_at.and_then(Month::of_unix), level),
                            })
                        })
                        .collect(),
                ),
                3 => Value::Array(
                    plan.history
                        .iter()
                        .map(|h| json!({ "status": h.status.as_str() }))
                        .collect(),
                ),
                _ => Value::Null,
            };
            vec![("status_history", history)]
        }
    }
}

/// How the plan records of one release are generalised.
#[derive(Debug, Default)]
pub struct Generalisation {
    /// Per wijk, the level of each field group (index as in [`Attr::ALL`]).
    levels: HashMap<WijkId, [usize; 9]>,
    /// Plans sent with no field but their identifiers.
    withheld: HashSet<DocumentId>,
}

impl Generalisation {
    /// Is this plan's record withheld?
    pub fn withheld(&self, id: &DocumentId) -> bool {
        self.withheld.contains(id)
    }

    /// The level of each field group in `wijk` (the finest when the wijk is unknown).
    pub fn levels(&self, wijk: &WijkId) -> [usize; 9] {
        self.levels.get(wijk).copied().unwrap_or_default()
    }

    /// A plan's generalised fields, with the `generalised` object naming each level.
    pub fn plan_fields(&self, facts: &Facts, plan: &PlanFacts) -> Map<String, Value> {
        let levels = self.levels(&facts.wijk);
        let mut out = Map::new();
        let mut named = Map::new();
        for (i, attr) in Attr::ALL.into_iter().enumerate() {
            for (name, value) in fields(attr, levels[i], facts, plan) {
                out.insert(name.to_owned(), value);
            }
            named.insert(attr.as_str().to_owned(), json!(attr.levels()[levels[i]]));
        }
        out.insert("generalised".to_owned(), Value::Object(named));
        out
    }
}

/// Generalises the plan records of every current document so that each class of equal
/// exported fields holds at least `k` records (see the module documentation).
pub fn generalise<'a>(facts: impl IntoIterator<Item = &'a Facts>, k: u64) -> Generalisation {
    let k = usize::try_from(k.max(1)).unwrap_or(usize::MAX);
    let mut by_wijk: BTreeMap<WijkId, Vec<(&Facts, &PlanFacts)>> = BTreeMap::new();
    for f in facts {
        if let Body::Plan(plan) = &f.body {
            by_wijk.entry(f.wijk.clone()).or_default().push((f, plan));
        }
    }
    let mut out = Generalisation::default();
    for (wijk, plans) in by_wijk {
        // Every field group's value at every level, once: [record][attr][level].
        let values: Vec<Vec<Vec<String>>> = plans
            .iter()
            .map(|(f, p)| {
                Attr::ALL
                    .iter()
                    .map(|a| {
                        (0..a.levels().len())
                            .map(|l| {
                                Value::from_iter(fields(*a, l, f, p).into_iter().map(|x| x.1))
                                    .to_string()
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        // Records that may be withheld rather than coarsen everyone's fields further:
        // Datafly's k, but never more than a tenth of the wijk's plans.
        let budget = k.min(plans.len() / 10);
        let mut levels = [0usize; 9];
        let small = loop {
            let classes = classes(&values, &levels);
            let small: Vec<usize> = (0..plans.len())
                .filter(|&i| classes[&key(&values[i], &levels)] < k)
                .collect();
            if small.len() <= budget {
                break small;
            }
            // Datafly: coarsen the field group with the most distinct values.
            let widest = (0..Attr::ALL.len())
                .filter(|&a| levels[a] + 1 < Attr::ALL[a].levels().len())
                .max_by_key(|&a| {
                    let distinct: HashSet<&String> =
                        values.iter().map(|v| &v[a][levels[a]]).collect();
                    (distinct.len(), std::cmp::Reverse(a))
                });
            match widest {
                Some(a) => levels[a] += 1,
                None => break small,
            }
        };
        out.withheld
            .extend(small.into_iter().map(|i| plans[i].0.id));
        out.levels.insert(wijk, levels);
    }
    out
}

fn key(values: &[Vec<String>], levels: &[usize; 9]) -> String {
    values
        .iter()
        .zip(levels)
        .map(|(v, &l)| v[l].as_str())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

fn classes(values: &[Vec<Vec<String>>], levels: &[usize; 9]) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = HashMap::new();
    for v in values {
        *out.entry(key(v, levels)).or_default() += 1;
    }
    out
}
