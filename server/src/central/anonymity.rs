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
//! (full-domain generalisation), by Sweeney's Datafly heuristic: while any record sits
//! in a class smaller than k, coarsen the field group with the most distinct values.
//! Datafly proper stops when at most k records are left in small classes and
//! suppresses those; we do not, because the aggregates are published beside the feed:
//! a published quarter minus the feed's counts of its months would then count the
//! withheld records of a hidden month. Only records that cannot be generalised (a wijk
//! with fewer than k plans, every field group at "none") are *withheld*: sent with
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

use super::aggregate::{period_label, Period, Released};
use super::record::{Body, Facts, Month, PlanFacts};

/// A group of exported fields that is generalised as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
        0 => period_label(Period::Month, m),
        1 => period_label(Period::Quarter, m),
        _ => period_label(Period::Year, m),
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

/// The field group whose time gives the period of an aggregate metric's cells, if any.
fn family(metric: &str) -> Option<Attr> {
    match metric {
        "plans_new" => Some(Attr::Created),
        "plans_closed" => Some(Attr::Changed),
        "handovers" => Some(Attr::Handover),
        "outcome.aanmeldingen"
        | "outcome.started"
        | "outcome.planned"
        | "outcome.closed"
        | "outcome.reopened" => Some(Attr::History),
        m if m.starts_with("plans_status.")
            || m.starts_with("goals_leefdomein.")
            || m.starts_with("goals_status.") =>
        {
            Some(Attr::Changed)
        }
        m if m.starts_with("contacts.") => Some(Attr::Contacts),
        _ => None,
    }
}

/// The finest level each field group may have in each wijk, given the aggregates'
/// release: the feed's counts at a level are sums of that level's aggregate cells, so
/// a time field stays at a period length only when no cell of its metrics is
/// suppressed at that length in the wijk. When even a year is hidden, the field group
/// goes to its first level without time that gives no all-time count of those metrics
/// (contacts: a band; the others: not sent), and a snapshot field group (`changed`)
/// without time takes `status` and `goals` with it (their all-time counts are the sum
/// of the hidden years).
pub fn floors(release: &[Released]) -> HashMap<WijkId, [usize; 9]> {
    // (wijk, field group) → hidden at month, quarter, year.
    let mut hidden: HashMap<(WijkId, Attr), [bool; 3]> = HashMap::new();
    for r in release.iter().filter(|r| r.cell.suppressed) {
        let Some(attr) = family(&r.cell.metric) else {
            continue;
        };
        let length = match r.period {
            Period::Month => 0,
            Period::Quarter => 1,
            Period::Year => 2,
        };
        hidden.entry((r.cell.wijk.clone(), attr)).or_default()[length] = true;
    }
    let mut out: HashMap<WijkId, [usize; 9]> = HashMap::new();
    for ((wijk, attr), h) in hidden {
        let floor = match h.iter().position(|hidden| !hidden) {
            Some(length) => length,
            None => match attr {
                Attr::Contacts => 3,
                other => other.levels().len() - 1,
            },
        };
        let levels = out.entry(wijk).or_default();
        let i = Attr::ALL
            .iter()
            .position(|a| *a == attr)
            .unwrap_or_default();
        levels[i] = levels[i].max(floor);
        if attr == Attr::Changed && floor == Attr::Changed.levels().len() - 1 {
            for a in [Attr::Status, Attr::Goals] {
                let j = Attr::ALL.iter().position(|x| *x == a).unwrap_or_default();
                levels[j] = a.levels().len() - 1;
            }
        }
    }
    out
}

/// Generalises the plan records of every current document so that each class of equal
/// exported fields holds at least `k` records (see the module documentation), each
/// field group at least as coarse as `floors` says for its wijk.
pub fn generalise<'a>(
    facts: impl IntoIterator<Item = &'a Facts>,
    k: u64,
    floors: &HashMap<WijkId, [usize; 9]>,
) -> Generalisation {
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
        let mut levels = floors.get(&wijk).copied().unwrap_or_default();
        let small = loop {
            let classes = classes(&values, &levels);
            let small: Vec<usize> = (0..plans.len())
                .filter(|&i| classes[&key(&values[i], &levels)] < k)
                .collect();
            if small.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::partition::DocumentKind;
    use sync_core::schema::plan::{ContactKind, GoalStatus, Leefdomein, PlanStatus};

    fn month(s: &str) -> Month {
        Month::parse_prefix(s).expect("month")
    }

    /// A plan in `wijk`; `vary` picks its status, goals and contacts, `handover` its
    /// hand-over month.
    fn plan(wijk: &str, vary: usize, handover: Option<&str>) -> Facts {
        let statuses = [
            PlanStatus::Intake,
            PlanStatus::Uitvoering,
            PlanStatus::Afgesloten,
        ];
        Facts {
            id: DocumentId::random(),
            seq: 1,
            kind: DocumentKind::Plan,
            wijk: WijkId::new(wijk).expect("wijk"),
            created: Some(month("2024-03")),
            changed: Some(month(["2024-04", "2024-05"][vary % 2])),
            body: Body::Plan(PlanFacts {
                household: format!("hh-{vary}"),
                status: statuses[vary % 3],
                goals: vec![(
                    [Leefdomein::Financien, Leefdomein::Wonen][vary % 2],
                    GoalStatus::Bezig,
                    None,
                )],
                actions: (vary % 4) as u64,
                actions_done: 0,
                contacts: vec![(
                    month(["2024-03", "2024-06"][vary % 2]),
                    ContactKind::ALL[vary % 5],
                )],
                consents_active: 1,
                handed_over: handover.is_some(),
                handover_month: handover.map(month),
                history: Vec::new(),
                zrm: Vec::new(),
                ladder: Vec::new(),
                outcome: Default::default(),
            }),
        }
    }

    /// The level names of `wijk`, by field group.
    fn names(g: &Generalisation, wijk: &str) -> Vec<&'static str> {
        let levels = g.levels(&WijkId::new(wijk).expect("wijk"));
        Attr::ALL
            .iter()
            .zip(levels)
            .map(|(a, l)| a.levels()[l])
            .collect()
    }

    /// Every class of equal exported fields (identifiers aside) holds at least k.
    fn assert_k_anonymous(facts: &[Facts], g: &Generalisation, k: usize) {
        let mut classes: HashMap<String, usize> = HashMap::new();
        for f in facts {
            let Body::Plan(p) = &f.body else { continue };
            if g.withheld(&f.id) {
                continue;
            }
            let mut fields = g.plan_fields(f, p);
            fields.insert("wijk".into(), json!(f.wijk));
            *classes
                .entry(Value::Object(fields).to_string())
                .or_default() += 1;
        }
        for (class, n) in classes {
            assert!(n >= k, "{n} records share {class}");
        }
    }

    /// Which field groups are coarsened and which records withheld, as a table.
    #[test]
    fn generalisation_tables() {
        let finest = vec![
            "month", "month", "status", "goals", "count", "month", "count", "month", "month",
        ];
        let check = |facts: Vec<Facts>, k: u64, wijk: &str, expected: &[&str], withheld: usize| {
            let g = generalise(&facts, k, &HashMap::new());
            assert_eq!(names(&g, wijk), expected, "k = {k}");
            assert_eq!(facts.iter().filter(|f| g.withheld(&f.id)).count(), withheld);
            assert_k_anonymous(&facts, &g, usize::try_from(k).expect("k"));
        };
        // k = 1: nothing to do.
        let varied: Vec<Facts> = (0..6).map(|i| plan("noord", i, None)).collect();
        check(varied, 1, "noord", &finest, 0);
        // Six equal plans, one handed over in March: only the hand-over goes, all the
        // way (the flag alone would still single it out).
        let mut six: Vec<Facts> = (0..5).map(|_| plan("noord", 0, None)).collect();
        six.push(plan("noord", 0, Some("2024-03")));
        let mut expected = finest.clone();
        expected[7] = "none";
        check(six, 5, "noord", &expected, 0);
        // A wijk of two plans cannot be generalised into a class of five: withheld.
        let two: Vec<Facts> = (0..2).map(|_| plan("west", 0, None)).collect();
        check(two, 5, "west", &["none"; 9], 2);
        // Wijken are generalised apart: equal zuid plans keep every field.
        let mut both: Vec<Facts> = (0..6).map(|i| plan("noord", i, None)).collect();
        both.extend((0..5).map(|_| plan("zuid", 1, None)));
        check(both, 5, "zuid", &finest, 0);
    }

    /// The aggregates' suppression sets how fine a field group may be: the finest
    /// period length with no hidden cell of its metrics, else no time at all.
    #[test]
    fn floors_follow_the_aggregates() {
        let cell = |wijk: &str, period: Period, label: &str, metric: &str, hidden: bool| Released {
            period,
            cell: crate::central::aggregate::Cell {
                wijk: WijkId::new(wijk).expect("wijk"),
                period: label.into(),
                metric: metric.into(),
                value: (!hidden).then_some(6.0),
                suppressed: hidden,
            },
        };
        let check = |release: Vec<Released>, wijk: &str, expected: &[&str]| {
            let floors = floors(&release);
            let levels = floors
                .get(&WijkId::new(wijk).expect("wijk"))
                .copied()
                .unwrap_or_default();
            let got: Vec<&str> = Attr::ALL
                .iter()
                .zip(levels)
                .map(|(a, l)| a.levels()[l])
                .collect();
            assert_eq!(got, expected);
        };
        let finest = [
            "month", "month", "status", "goals", "count", "month", "count", "month", "month",
        ];
        // Nothing hidden: nothing to follow.
        check(
            vec![cell("noord", Period::Month, "2024-03", "plans_new", false)],
            "noord",
            &finest,
        );
        // A hidden month of plans_new: created goes to quarters; other wijken keep months.
        let month_hidden = vec![
            cell("noord", Period::Month, "2024-03", "plans_new", true),
            cell("noord", Period::Quarter, "2024-Q1", "plans_new", false),
        ];
        let mut expected = finest;
        expected[0] = "quarter";
        check(month_hidden.clone(), "noord", &expected);
        check(month_hidden, "zuid", &finest);
        // Hidden months and quarters of a contact kind: contacts by year.
        let mut expected = finest;
        expected[5] = "year";
        check(
            vec![
                cell("noord", Period::Month, "2024-03", "contacts.telefoon", true),
                cell(
                    "noord",
                    Period::Quarter,
                    "2024-Q1",
                    "contacts.telefoon",
                    true,
                ),
            ],
            "noord",
            &expected,
        );
        // A hidden year of a snapshot metric: changed, status and goals are not sent;
        // a hidden year of hand-overs: not even the flag.
        let mut expected = finest;
        for i in [1, 2, 3, 7] {
            expected[i] = "none";
        }
        check(
            vec![
                cell(
                    "noord",
                    Period::Month,
                    "2024-03",
                    "plans_status.intake",
                    true,
                ),
                cell(
                    "noord",
                    Period::Quarter,
                    "2024-Q1",
                    "plans_status.intake",
                    true,
                ),
                cell("noord", Period::Year, "2024", "plans_status.intake", true),
                cell("noord", Period::Month, "2024-03", "handovers", true),
                cell("noord", Period::Quarter, "2024-Q1", "handovers", true),
                cell("noord", Period::Year, "2024", "handovers", true),
            ],
            "noord",
            &expected,
        );
    }

    /// Generalisation starts from the floors and only coarsens.
    #[test]
    fn generalisation_respects_floors() {
        let facts: Vec<Facts> = (0..6).map(|_| plan("noord", 0, None)).collect();
        let mut floor = [0; 9];
        floor[0] = 1;
        let floors = HashMap::from([(WijkId::new("noord").expect("wijk"), floor)]);
        let g = generalise(&facts, 5, &floors);
        assert_eq!(names(&g, "noord")[0], "quarter");
        assert_k_anonymous(&facts, &g, 5);
    }

    /// A larger, varied population: every class holds at least k, and nothing that can
    /// be generalised is withheld.
    #[test]
    fn varied_population_is_k_anonymous() {
        let facts: Vec<Facts> = (0..200)
            .map(|i| {
                let handover = (i % 7 == 0).then_some(["2024-01", "2024-02", "2024-03"][i % 3]);
                plan(["noord", "zuid"][i % 2], i * 7 % 13, handover)
            })
            .collect();
        let g = generalise(&facts, 5, &HashMap::new());
        assert_k_anonymous(&facts, &g, 5);
        assert!(facts.iter().all(|f| !g.withheld(&f.id)));
    }
}
