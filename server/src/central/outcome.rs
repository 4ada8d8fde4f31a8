//! Outcomes of one plan, derived from its status history and measurements (schema 2):
//! the dates that matter (aanmelding, intake, plan, afgesloten, reopenings), the times
//! between them in days, and the change in zelfredzaamheid and on the
//! participatieladder between intake and eindevaluatie.
//!
//! Every date here is the one the professional *entered* (a status change made offline
//! on 3 March is dated 3 March, whenever it reached the server). Beside it the server
//! keeps the "known at" time: the commit time of the change that added the history
//! entry, looked up in `change_authors` (the store's record of who delivered each
//! change, and when) through the automerge change that created the entry's map
//! ([`known_at`]). No extra write is needed: the store already keeps that time.

use std::collections::HashMap;

use automerge::{Automerge, ObjId, ReadDoc, Value, ROOT};
use sync_core::schema::plan::{Moment, PlanStatus, ZrmDomein};
use sync_core::schema::Date;

/// One status history entry as the central office may know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryFact {
    pub status: PlanStatus,
    /// The date the professional entered.
    pub date: Date,
    /// Unix seconds of the server's commit of the change that added the entry (None
    /// when the store has no author row for it, e.g. a document imported by an admin).
    pub known_at: Option<i64>,
}

/// Change between two measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Movement {
    Improved,
    Same,
    Worse,
}

impl Movement {
    fn of(before: u64, after: u64) -> Movement {
        match after.cmp(&before) {
            std::cmp::Ordering::Greater => Movement::Improved,
            std::cmp::Ordering::Equal => Movement::Same,
            std::cmp::Ordering::Less => Movement::Worse,
        }
    }

    /// `improved`, `same`, `worse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Movement::Improved => "improved",
            Movement::Same => "same",
            Movement::Worse => "worse",
        }
    }

    pub const ALL: [Movement; 3] = [Movement::Improved, Movement::Same, Movement::Worse];
}

/// The outcome of one plan (all empty for a plan without history or measurements,
/// such as every schema-1 plan).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The earliest `aanmelding` entry.
    pub aanmelding: Option<Date>,
    /// The earliest `intake` entry: support starts.
    pub intake: Option<Date>,
    /// The earliest `plan` entry.
    pub plan: Option<Date>,
    /// The date of the last entry, when it is `afgesloten`.
    pub closed: Option<Date>,
    /// The first reopening: an entry after an `afgesloten` one that is not `afgesloten`.
    pub reopened: Option<Date>,
    /// Days from aanmelding to intake.
    pub waiting_days: Option<i64>,
    /// Days from aanmelding to plan.
    pub plan_days: Option<i64>,
    /// Days from intake (else aanmelding) to afgesloten.
    pub duration_days: Option<i64>,
    /// Per zrm domain: the eindevaluatie date and the movement since intake.
    pub zrm: Vec<(ZrmDomein, Date, Movement)>,
    /// The participatieladder's eindevaluatie date and movement since intake.
    pub ladder: Option<(Date, Movement)>,
}

/// Derives the outcome. Entries are ordered by entered date, then by their order in
/// the list (which merges deterministically), so concurrent offline entries of two
/// professionals give the same outcome on every server.
pub fn derive(
    history: &[HistoryFact],
    zrm: &[(ZrmDomein, u64, Date, Moment)],
    ladder: &[(u64, Date, Moment)],
) -> Outcome {
    let mut sorted: Vec<&HistoryFact> = history.iter().collect();
    sorted.sort_by(|a, b| a.date.cmp(&b.date));
    let first = |s: PlanStatus| {
        sorted
            .iter()
            .find(|h| h.status == s)
            .map(|h| h.date.clone())
    };
    let aanmelding = first(PlanStatus::Aanmelding);
    let intake = first(PlanStatus::Intake);
    let plan = first(PlanStatus::Plan);
    let closed = sorted
        .last()
        .filter(|h| h.status == PlanStatus::Afgesloten)
        .map(|h| h.date.clone());
    let reopened = sorted
        .windows(2)
        .find(|w| w[0].status == PlanStatus::Afgesloten && w[1].status != PlanStatus::Afgesloten)
        .map(|w| w[1].date.clone());
    let between = |from: &Option<Date>, to: &Option<Date>| match (from, to) {
        (Some(a), Some(b)) => Some(days(b) - days(a)).filter(|d| *d >= 0),
        _ => None,
    };
    let mut zrm_out = Vec::new();
    for domain in ZrmDomein::ALL {
        let of = |m: Moment| zrm.iter().filter(move |z| z.0 == *domain && z.3 == m);
        let start = of(Moment::Intake).min_by(|a, b| a.2.cmp(&b.2));
        let end = of(Moment::Eindevaluatie).max_by(|a, b| a.2.cmp(&b.2));
        if let (Some(s), Some(e)) = (start, end) {
            zrm_out.push((*domain, e.2.clone(), Movement::of(s.1, e.1)));
        }
    }
    let start = ladder
        .iter()
        .filter(|l| l.2 == Moment::Intake)
        .min_by(|a, b| a.1.cmp(&b.1));
    let end = ladder
        .iter()
        .filter(|l| l.2 == Moment::Eindevaluatie)
        .max_by(|a, b| a.1.cmp(&b.1));
    Outcome {
        waiting_days: between(&aanmelding, &intake),
        plan_days: between(&aanmelding, &plan),
        duration_days: between(&intake.clone().or(aanmelding.clone()), &closed),
        aanmelding,
        intake,
        plan,
        closed,
        reopened,
        zrm: zrm_out,
        ladder: start
            .zip(end)
            .map(|(s, e)| (e.1.clone(), Movement::of(s.0, e.0))),
    }
}

/// Days since 1970-01-01 of a schema date (proleptic Gregorian; Howard Hinnant's
/// `days_from_civil`).
pub fn days(date: &Date) -> i64 {
    let s = date.as_str();
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The known-at time of each `status_history` entry, by entry id: the commit time
/// (`authors`: change hash → unix seconds) of the automerge change whose operation
/// created the entry's map. An entry's map is created once, by the change that added
/// it; later edits of its fields do not move its known-at date.
pub fn known_at(doc: &Automerge, authors: &HashMap<String, i64>) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    let Ok(Some((Value::Object(_), list))) = doc.get(ROOT, "status_history") else {
        return out;
    };
    let changes = doc.get_changes_meta(&[]);
    for i in 0..doc.length(&list) {
        let Ok(Some((Value::Object(_), item))) = doc.get(&list, i) else {
            continue;
        };
        let ObjId::Id(counter, actor, _) = &item else {
            continue;
        };
        let Some(hash) = changes
            .iter()
            .find(|c| c.actor.as_ref() == actor && c.start_op <= *counter && *counter <= c.max_op)
            .map(|c| c.hash.to_string())
        else {
            continue;
        };
        let id = match doc.get(&item, "id") {
            Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
            Ok(Some((Value::Object(automerge::ObjType::Text), text))) => doc.text(&text).ok(),
            _ => None,
        };
        if let (Some(id), Some(at)) = (id, authors.get(&hash)) {
            out.insert(id, *at);
        }
    }
    out
}

/// The `p` quantile (0 < p ≤ 1) by nearest rank: the smallest value with at least
/// `p` of the values at or below it. None for no values.
pub fn quantile(values: &[i64], p: f64) -> Option<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        Date::parse(s).expect("date")
    }

    fn h(status: PlanStatus, d: &str) -> HistoryFact {
        HistoryFact {
            status,
            date: date(d),
            known_at: None,
        }
    }

    /// (waiting, plan, duration in days; closed and reopened dates).
    type Expected<'a> = (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<&'a str>,
        Option<&'a str>,
    );

    /// Dates, waiting times and reopenings follow the entered dates, in date order.
    #[test]
    fn outcome_tables() {
        use PlanStatus::*;
        let check = |history: Vec<HistoryFact>, expected: Expected<'_>| {
            let o = derive(&history, &[], &[]);
            let got = (
                o.waiting_days,
                o.plan_days,
                o.duration_days,
                o.closed.as_ref().map(Date::as_str),
                o.reopened.as_ref().map(Date::as_str),
            );
            assert_eq!(got, expected, "{history:?}");
        };
        check(vec![], (None, None, None, None, None));
        check(
            vec![h(Aanmelding, "2024-02-20"), h(Intake, "2024-03-03")],
            (Some(12), None, None, None, None),
        );
        // Entered out of order (two devices): sorted by date.
        check(
            vec![
                h(Afgesloten, "2024-06-30"),
                h(Intake, "2024-03-01"),
                h(Aanmelding, "2024-02-01"),
                h(Plan, "2024-03-15"),
            ],
            (Some(29), Some(43), Some(121), Some("2024-06-30"), None),
        );
        // Closed and reopened: not closed now, one reopening.
        check(
            vec![
                h(Aanmelding, "2024-01-01"),
                h(Afgesloten, "2024-02-01"),
                h(Intake, "2024-03-01"),
            ],
            (Some(60), None, None, None, Some("2024-03-01")),
        );
        // An intake dated before the aanmelding is a typo: no negative waiting time.
        check(
            vec![h(Aanmelding, "2024-03-05"), h(Intake, "2024-03-01")],
            (None, None, None, None, None),
        );
    }

    /// Movement between the first intake and the last eindevaluatie, per domain.
    #[test]
    fn measurement_movement() {
        let z = |d: ZrmDomein, s: u64, when: &str, m: Moment| (d, s, date(when), m);
        let zrm = [
            z(ZrmDomein::Financien, 2, "2024-03-01", Moment::Intake),
            z(
                ZrmDomein::Financien,
                3,
                "2024-04-01",
                Moment::Tussenevaluatie,
            ),
            z(ZrmDomein::Financien, 4, "2024-06-01", Moment::Eindevaluatie),
            z(ZrmDomein::Huisvesting, 3, "2024-03-01", Moment::Intake),
            z(
                ZrmDomein::Huisvesting,
                3,
                "2024-06-01",
                Moment::Eindevaluatie,
            ),
            z(ZrmDomein::Justitie, 4, "2024-03-01", Moment::Intake),
            z(ZrmDomein::Justitie, 2, "2024-06-01", Moment::Eindevaluatie),
            z(ZrmDomein::Middelengebruik, 4, "2024-03-01", Moment::Intake),
        ];
        let ladder = [
            (2, date("2024-03-01"), Moment::Intake),
            (4, date("2024-06-02"), Moment::Eindevaluatie),
        ];
        let o = derive(&[], &zrm, &ladder);
        assert_eq!(
            o.zrm,
            vec![
                (ZrmDomein::Financien, date("2024-06-01"), Movement::Improved),
                (ZrmDomein::Huisvesting, date("2024-06-01"), Movement::Same),
                (ZrmDomein::Justitie, date("2024-06-01"), Movement::Worse),
            ]
        );
        assert_eq!(o.ladder, Some((date("2024-06-02"), Movement::Improved)));
    }

    /// Day numbers and nearest-rank quantiles.
    #[test]
    fn days_and_quantiles() {
        assert_eq!(days(&date("1970-01-01")), 0);
        assert_eq!(days(&date("2024-03-01")) - days(&date("2024-02-28")), 2);
        assert_eq!(days(&date("2000-03-01")) - days(&date("2000-02-28")), 2);
        assert_eq!(days(&date("2025-01-01")) - days(&date("2024-01-01")), 366);
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7, 1, 3, 9, 5], 0.5), Some(5));
        assert_eq!(quantile(&[7, 1, 3, 9, 5], 0.75), Some(7));
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), Some(2));
    }
}
