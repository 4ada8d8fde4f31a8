//! What the central office may know of one document: [`Facts`], read from the merged
//! automerge document, and the pseudonymised record built from them per recipient.
//!
//! This is the one place that decides which fields leave for the central office
//! (docs/central-office.md explains each). Facts keep only structured values — enums,
//! counts, months — never a name, address, phone number, free text, note or signal.
//! Two values are kept only in the server's memory, to be transformed before they
//! leave: the household's own pseudonym (it becomes a keyed per-recipient pseudonym)
//! and hashes of volunteer entries (they only feed a distinct count).

use std::collections::BTreeSet;
use std::fmt;

use automerge::Automerge;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use sync_core::partition::{DocumentKind, WijkId};
use sync_core::protocol::DocumentId;
use sync_core::schema::plan::{
    ContactKind, GoalStatus, Leefdomein, Moment, PlanStatus, PositiveHealth, ZrmDomein,
};
use sync_core::schema::{Activiteit, Date, Plan};

use super::anonymity::Generalisation;
use super::outcome::{self, HistoryFact, Outcome};
use super::pseudonym::Pseudonymiser;
use crate::store::central::FeedRow;

/// A calendar month: the finest time the central office gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Month {
    pub year: u16,
    /// 1 to 12.
    pub month: u8,
}

impl Month {
    /// The month of a `YYYY-MM…` string (a schema date, or a client's timestamp).
    pub fn parse_prefix(s: &str) -> Option<Month> {
        let year: u16 = s.get(0..4)?.parse().ok()?;
        if s.get(4..5)? != "-" {
            return None;
        }
        let month: u8 = s.get(5..7)?.parse().ok()?;
        ((1..=12).contains(&month) && (1900..=2999).contains(&year))
            .then_some(Month { year, month })
    }

    /// The month of a schema date.
    pub fn of_date(date: &Date) -> Option<Month> {
        Month::parse_prefix(date.as_str())
    }

    /// The month (UTC) of a unix time in seconds.
    pub fn of_unix(secs: i64) -> Option<Month> {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).ok()?);
        Month::parse_prefix(&humantime::format_rfc3339_seconds(t).to_string())
    }

    /// 1 to 4.
    pub fn quarter(self) -> u8 {
        (self.month - 1) / 3 + 1
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The structured facts of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanFacts {
    /// The buurtteam's own household pseudonym. Never leaves as is: the record carries
    /// a keyed pseudonym of it, different per recipient.
    pub household: String,
    pub status: PlanStatus,
    pub goals: Vec<(Leefdomein, GoalStatus, Option<PositiveHealth>)>,
    pub actions: u64,
    pub actions_done: u64,
    /// Contact moments: month and kind only (no summary, no professional).
    pub contacts: Vec<(Month, ContactKind)>,
    /// Consents given and not withdrawn (no purpose: it is free text).
    pub consents_active: u64,
    pub handed_over: bool,
    /// The month of the hand-over request, if the client wrote a readable date.
    pub handover_month: Option<Month>,
    /// The status history (schema 2) with entered dates and the server's known-at time.
    /// Leaves only as months (feed) and through the aggregates.
    pub history: Vec<HistoryFact>,
    /// Zelfredzaamheidsmatrix scores (schema 2): domain, score, date, moment. Leave only
    /// through the suppressed aggregates, never per household.
    pub zrm: Vec<(ZrmDomein, u64, Date, Moment)>,
    /// Participatieladder steps (schema 2): step, date, moment. Aggregates only.
    pub ladder: Vec<(u64, Date, Moment)>,
    /// Derived from the three above, once, when the facts are read.
    pub outcome: Box<Outcome>,
}

/// The structured facts of an activiteit.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiviteitFacts {
    /// Sessions: month, attendance and volunteer hours (no names, notes or signals).
    pub sessions: Vec<(Month, u64, f64)>,
    /// SHA-256 of each volunteer entry, only to count unique volunteers; never exported.
    pub volunteers: BTreeSet<[u8; 32]>,
}

/// What a document is, as far as the central office may know.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Plan(PlanFacts),
    Activiteit(ActiviteitFacts),
    /// Erased (AVG art. 17): the central office must drop the record.
    Erased,
    /// Stored but not readable by this build's schema (a newer client?); counted nowhere.
    Unreadable,
}

/// One document's facts, with its catalog data.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    pub id: DocumentId,
    /// The change number of the document's last commit or its erasure.
    pub seq: i64,
    pub kind: DocumentKind,
    pub wijk: WijkId,
    /// When the server first stored it (unknown once erased).
    pub created: Option<Month>,
    /// The last commit, or the erasure.
    pub changed: Option<Month>,
    pub body: Body,
}

impl Facts {
    /// The facts of a feed row; `doc` is the merged document (None when erased or gone),
    /// `authors` the server's commit time of each of its changes (hash → unix seconds).
    pub fn extract(
        row: &FeedRow,
        doc: Option<&Automerge>,
        authors: &HashMap<String, i64>,
    ) -> Facts {
        let body = match (row.erased, doc, row.partition.kind) {
            (true, _, _) => Body::Erased,
            (false, None, _) => Body::Unreadable,
            (false, Some(doc), DocumentKind::Plan) => Plan::read(doc)
                .map_or(Body::Unreadable, |p| {
                    Body::Plan(plan_facts(&p, &outcome::known_at(doc, authors)))
                }),
            (false, Some(doc), DocumentKind::Activiteit) => Activiteit::read(doc)
                .map_or(Body::Unreadable, |a| Body::Activiteit(activiteit_facts(&a))),
        };
        Facts {
            id: row.id,
            seq: row.seq,
            kind: row.partition.kind,
            wijk: row.partition.wijk.clone(),
            created: row.created_at.and_then(Month::of_unix),
            changed: Month::of_unix(row.changed_at),
            body,
        }
    }
}

fn plan_facts(plan: &Plan, known_at: &HashMap<String, i64>) -> PlanFacts {
    let history: Vec<HistoryFact> = plan
        .status_history
        .iter()
        .map(|h| HistoryFact {
            status: h.status,
            date: h.date.clone(),
            known_at: known_at.get(&h.id).copied(),
        })
        .collect();
    let zrm: Vec<(ZrmDomein, u64, Date, Moment)> = plan
        .zelfredzaamheid
        .iter()
        .map(|z| (z.domain, z.score, z.date.clone(), z.moment))
        .collect();
    let ladder: Vec<(u64, Date, Moment)> = plan
        .participatieladder
        .iter()
        .map(|l| (l.step, l.date.clone(), l.moment))
        .collect();
    PlanFacts {
        outcome: Box::new(outcome::derive(&history, &zrm, &ladder)),
        history,
        zrm,
        ladder,
        household: plan.household.pseudonym.clone(),
        status: plan.status,
        goals: plan
            .goals
            .iter()
            .map(|g| (g.leefdomein, g.status, g.positive_health))
            .collect(),
        actions: plan.actions.len() as u64,
        actions_done: plan.actions.iter().filter(|a| a.done).count() as u64,
        contacts: plan
            .contacts
            .iter()
            .filter_map(|c| Some((Month::of_date(&c.date)?, c.kind)))
            .collect(),
        consents_active: plan
            .consents
            .iter()
            .filter(|c| c.withdrawn_at.is_none())
            .count() as u64,
        handed_over: plan.handover.requested,
        handover_month: plan
            .handover
            .requested
            .then(|| {
                plan.handover
                    .requested_at
                    .as_deref()
                    .and_then(Month::parse_prefix)
            })
            .flatten(),
    }
}

fn activiteit_facts(act: &Activiteit) -> ActiviteitFacts {
    ActiviteitFacts {
        sessions: act
            .sessions
            .iter()
            .filter_map(|s| Some((Month::of_date(&s.date)?, s.attendance, s.volunteer_hours)))
            .collect(),
        volunteers: act
            .volunteers
            .iter()
            .map(|v| Sha256::digest(v.trim().to_lowercase().as_bytes()).into())
            .collect(),
    }
}

fn month(m: Option<Month>) -> Value {
    m.map_or(Value::Null, |m| Value::String(m.to_string()))
}

/// The record one recipient receives: pseudonyms keyed for that recipient, a plan's
/// fields generalised as `g` decided for the whole release (`super::anonymity`).
pub fn record(facts: &Facts, p: &Pseudonymiser, g: &Generalisation) -> Value {
    let mut out = json!({
        "seq": facts.seq,
        "record": p.record(&facts.id),
        "kind": facts.kind,
    });
    let extra = match &facts.body {
        Body::Plan(_) if g.withheld(&facts.id) => json!({ "withheld": true }),
        Body::Plan(plan) => {
            let mut fields = g.plan_fields(facts, plan);
            fields.insert("wijk".into(), json!(facts.wijk));
            fields.insert("household".into(), json!(p.household(&plan.household)));
            Value::Object(fields)
        }
        Body::Erased => json!({ "erased": true }),
        Body::Unreadable => json!({ "unreadable": true }),
        Body::Activiteit(act) => json!({
            "sessions": act.sessions.iter().map(|(m, attendance, hours)| json!({
                "month": m.to_string(),
                "attendance": attendance,
                "volunteer_hours": hours,
            })).collect::<Vec<_>>(),
            "volunteers": act.volunteers.len(),
        }),
    };
    if !matches!(facts.body, Body::Plan(_)) {
        let common = json!({
            "wijk": facts.wijk,
            "created_month": month(facts.created),
            "changed_month": month(facts.changed),
        });
        if let (Value::Object(out), Value::Object(common)) = (&mut out, common) {
            out.extend(common);
        }
    }
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, extra) {
        out.extend(extra);
    }
    out
}

/// The columns of the records CSV: one row per record, lists flattened into counts.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "record",
    "kind",
    "wijk",
    "created_month",
    "changed_month",
    "erased",
    "withheld",
    "household",
    "status",
    "goals",
    "goals_behaald",
    "actions",
    "actions_done",
    "contacts",
    "contacts_huisbezoek",
    "contacts_wijkcentrum",
    "contacts_school",
    "contacts_telefoon",
    "contacts_digitaal",
    "consents_active",
    "handed_over",
    "handover_month",
    "status_changes",
    "sessions",
    "attendance",
    "volunteer_hours",
    "volunteers",
];

/// One CSV row of a [`record`], in the order of [`CSV_COLUMNS`]. Made from the record
/// itself, so every column is a function of what the NDJSON record sends (a
/// generalised field stays generalised; a field not sent is an empty column).
pub fn csv_row(r: &Value) -> Vec<String> {
    fn text(v: &Value) -> String {
        match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    // A list's length; a band or nothing as sent.
    let count = |k: &str| match &r[k] {
        Value::Array(a) => a.len().to_string(),
        other => text(other),
    };
    // How many entries of a list have `field` = `value`; empty when the list (or that
    // field of its entries) was not sent.
    let count_where = |k: &str, field: &str, value: &str| match &r[k] {
        Value::Array(a) if a.iter().all(|x| x.get(field).is_some()) => {
            a.iter().filter(|x| x[field] == value).count().to_string()
        }
        _ => String::new(),
    };
    let sessions = r["sessions"].as_array();
    let sum = |field: &str| {
        sessions.map_or(String::new(), |s| {
            let total: f64 = s.iter().filter_map(|x| x[field].as_f64()).sum();
            total.to_string()
        })
    };
    // The common columns, by name.
    let mut row: Vec<String> = CSV_COLUMNS[..6].iter().map(|k| text(&r[*k])).collect();
    row.push((r["erased"] == true).to_string());
    row.push((r["withheld"] == true).to_string());
    row.extend([
        text(&r["household"]),
        text(&r["status"]),
        count("goals"),
        count_where("goals", "status", GoalStatus::Behaald.as_str()),
        text(&r["actions"]),
        text(&r["actions_done"]),
        count("contacts"),
    ]);
    for kind in [
        ContactKind::Huisbezoek,
        ContactKind::Wijkcentrum,
        ContactKind::School,
        ContactKind::Telefoon,
        ContactKind::Digitaal,
    ] {
        row.push(count_where("contacts", "kind", kind.as_str()));
    }
    row.extend([
        text(&r["consents_active"]),
        text(&r["handed_over"]),
        text(&r["handover_month"]),
        count("status_history"),
        count("sessions"),
        sum("attendance"),
        sum("volunteer_hours"),
        text(&r["volunteers"]),
    ]);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Months are read from dates and timestamps, and nothing else passes as one.
    #[test]
    fn months() {
        let check = |s: &str, expected: Option<&str>| {
            assert_eq!(
                Month::parse_prefix(s).map(|m| m.to_string()).as_deref(),
                expected,
                "{s:?}"
            );
        };
        check("2024-03-05", Some("2024-03"));
        check("2024-12-06T10:00:00Z", Some("2024-12"));
        check("2024-13-01", None);
        check("2024/03/05", None);
        check("maart", None);
        check("", None);
        assert_eq!(
            Month::of_unix(0).map(|m| m.to_string()),
            Some("1970-01".into())
        );
        assert_eq!(
            Month::of_unix(1_709_640_000).map(|m| m.to_string()),
            Some("2024-03".into())
        );
        assert_eq!(
            Month {
                year: 2024,
                month: 11
            }
            .quarter(),
            4
        );
    }
}
