//! Outcome monitoring for the central office (issue 19), over the real server with real
//! clients: measurements and dated status changes made offline by two professionals
//! merge without loss; aggregates count households in the month of the entered date;
//! the known-at month is the server's; version-1 plans still sync and aggregate; and an
//! attacker holding every table of two consecutive releases recovers no suppressed cell
//! (while the same attack on plain primary suppression does).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use automerge::transaction::Transactable;
use buurtsync_e2e::client::{converge, Client};
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use serde_json::Value;
use sync_core::partition::WijkId;
use sync_core::protocol::DocumentId;
use sync_core::schema::{
    self, Date, LadderMeasurement, Moment, Plan, PlanStatus, ZrmDomein, ZrmMeasurement,
};

const NAME: &str = "Karel Jansen-Vermeulen";
const PHONE: &str = "06-12345678";
const ADDRESS: &str = "Dorpsstraat 12, Assen";

fn date(s: &str) -> Date {
    Date::parse(s).expect("date")
}

/// Days since the epoch, by the standard library (independent of the server's code).
fn day(s: &str) -> i64 {
    let parse = |s: &str| -> i64 {
        let (y, rest) = s.split_at(4);
        let y: i64 = y.parse().expect("year");
        let m: i64 = rest[1..3].parse().expect("month");
        let d: i64 = rest[4..6].parse().expect("day");
        // Count days month by month from 1970: slow and obviously right.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut n = 0;
        for year in 1970..y {
            n += if leap(year) { 366 } else { 365 };
        }
        let len = [
            31,
            if leap(y) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        n += len[..(m - 1) as usize].iter().sum::<i64>();
        n + d - 1
    };
    parse(s)
}

/// What one household's professionals enter, and when.
struct Household {
    aanmelding: String,
    intake: String,
    /// Device B's offline work: eindevaluatie (financien score, ladder step) and closing.
    end: Option<(String, u64, u64)>,
}

/// 13 noord households: intakes 5 in January, 2 in February, 6 in March 2025 (one of
/// them the "3 March" one); 9 closed in June with an eindevaluatie. Intake scores:
/// financien 2, huisvesting 3, ladder step 2.
fn noord() -> Vec<Household> {
    (0..13)
        .map(|i| {
            let intake = match i {
                0..5 => format!("2025-01-{:02}", 20 + i),
                5..7 => format!("2025-02-{:02}", 10 + i),
                _ => format!("2025-03-{:02}", 3 + (i - 7)),
            };
            Household {
                aanmelding: format!("2025-01-{:02}", 2 + i),
                intake,
                end: (i < 9).then(|| {
                    (
                        format!("2025-06-{:02}", 10 + i),
                        [1, 2, 3, 4][i % 4],
                        [2, 3, 1][i % 3],
                    )
                }),
            }
        })
        .collect()
}

/// Zuid: three households with intakes in February (a small wijk).
fn zuid(n: usize) -> Vec<Household> {
    (0..n)
        .map(|i| Household {
            aanmelding: format!("2025-02-{:02}", 1 + i),
            intake: format!("2025-02-{:02}", 14 + i),
            end: None,
        })
        .collect()
}

/// Device A's offline work: the aanmelding and intake, with intake measurements.
fn intake(p: &mut Plan, h: &Household) {
    p.change_status(PlanStatus::Aanmelding, date(&h.aanmelding));
    p.change_status(PlanStatus::Intake, date(&h.intake));
    for (domain, score) in [(ZrmDomein::Financien, 2), (ZrmDomein::Huisvesting, 3)] {
        let mut z =
            ZrmMeasurement::new(domain, score, date(&h.intake), Moment::Intake).expect("score");
        z.by = Some("prof-noord".into());
        p.zelfredzaamheid.push(z);
    }
    p.participatieladder
        .push(LadderMeasurement::new(2, date(&h.intake), Moment::Intake).expect("step"));
}

/// Device B's offline work: eindevaluatie and closing.
fn close(p: &mut Plan, (when, financien, step): &(String, u64, u64)) {
    for (domain, score) in [
        (ZrmDomein::Financien, *financien),
        (ZrmDomein::Huisvesting, 3),
    ] {
        let z = ZrmMeasurement::new(domain, score, date(when), Moment::Eindevaluatie);
        p.zelfredzaamheid.push(z.expect("score"));
    }
    p.participatieladder
        .push(LadderMeasurement::new(*step, date(when), Moment::Eindevaluatie).expect("step"));
    p.change_status(PlanStatus::Afgesloten, date(when));
}

fn month(s: &str) -> String {
    s[..7].to_owned()
}

/// The outcome cells, computed here from what the test entered: (wijk, month, metric)
/// → (value, households).
fn expected(wijken: &[(&str, &[Household])]) -> BTreeMap<(String, String, String), (f64, u64)> {
    let mut out: BTreeMap<(String, String, String), (f64, u64)> = BTreeMap::new();
    let mut add = |w: &str, m: String, metric: &str| {
        let e = out.entry((w.to_owned(), m, metric.to_owned())).or_default();
        e.0 += 1.0;
        e.1 += 1;
    };
    for (w, households) in wijken {
        for h in households.iter() {
            add(w, month(&h.aanmelding), "outcome.aanmeldingen");
            add(w, month(&h.intake), "outcome.started");
            if let Some((when, financien, step)) = &h.end {
                add(w, month(when), "outcome.closed");
                let fin = match financien.cmp(&2) {
                    std::cmp::Ordering::Greater => "improved",
                    std::cmp::Ordering::Equal => "same",
                    std::cmp::Ordering::Less => "worse",
                };
                add(w, month(when), &format!("zrm.financien.{fin}"));
                add(w, month(when), "zrm.huisvesting.same");
                let ladder = match step.cmp(&2) {
                    std::cmp::Ordering::Greater => "ladder.up",
                    std::cmp::Ordering::Equal => "ladder.same",
                    std::cmp::Ordering::Less => "ladder.down",
                };
                add(w, month(when), ladder);
            }
        }
    }
    out
}

/// Every table the central office can fetch now: month, quarter and year.
async fn fetch_all(addr: SocketAddr, token: &str) -> Vec<Value> {
    let mut cells = Vec::new();
    for period in ["month", "quarter", "year"] {
        let r = http::get(
            addr,
            &format!("/api/v1/central/aggregates?period={period}"),
            Some(token),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        cells.extend(body["cells"].as_array().expect("cells").iter().cloned());
    }
    cells
}

/// One published table: (wijk, period label, metric, value or None when suppressed).
type Table = Vec<(String, String, String, Option<f64>)>;

/// A cell of the attacker's system: (release, wijk, period label, metric).
type Key = (usize, String, String, String);

/// Which cells (wijk, period label, metric) the attacker knows a change did not touch.
type Untouched = dyn Fn(&str, &str, &str) -> bool;

/// Is this metric a sum over months (so quarter = Σ months, year = Σ quarters)?
fn additive(metric: &str) -> bool {
    !(metric == "activiteiten"
        || metric == "unique_volunteers"
        || metric.ends_with(".median")
        || metric.ends_with(".p75"))
}

/// The attacker, written here independently of the server: every published value is
/// known, an absent cell is 0, a hidden cell is an unknown whole number ≥ 0. Equations:
/// quarter = its months, year = its quarters, `plans_closed` = `plans_status.afgesloten`,
/// Σ goals per leefdomein = Σ goals per status, and across releases a cell of a wijk
/// the change did not touch is the same in both. Returns the hidden cells whose exact
/// value follows (by elimination, or because bounds meet).
fn attack(releases: &[Table], untouched: &Untouched, today: &str) -> BTreeSet<Key> {
    let mut value: HashMap<Key, Option<f64>> = HashMap::new();
    let mut groups: BTreeSet<(usize, String, String, String)> = BTreeSet::new();
    for (r, cells) in releases.iter().enumerate() {
        for (w, p, m, v) in cells {
            value.insert((r, w.clone(), p.clone(), m.clone()), *v);
            groups.insert((r, w.clone(), m.clone(), p[..4].to_owned()));
        }
    }
    // Absent cells of a year with data are 0; months after today do not exist yet.
    let get = |k: &Key| -> Option<Option<f64>> {
        match value.get(k) {
            Some(v) => Some(*v),
            None => Some(Some(0.0)),
        }
    };
    let mut equations: Vec<(Vec<(Key, f64)>, f64)> = Vec::new();
    let mut eq = |terms: Vec<(Key, f64)>| {
        let mut unknown = Vec::new();
        let mut constant = 0.0;
        for (k, c) in terms {
            match get(&k).flatten() {
                Some(v) => constant -= c * v,
                None => unknown.push((k, c)),
            }
        }
        if !unknown.is_empty() {
            equations.push((unknown, constant));
        }
    };
    for (r, w, m, year) in &groups {
        if !additive(m) {
            continue;
        }
        let key = |p: String| (*r, w.clone(), p, m.clone());
        let mut quarters = Vec::new();
        for q in 1..=4 {
            let months: Vec<String> = (3 * q - 2..=3 * q)
                .map(|mm| format!("{year}-{mm:02}"))
                .filter(|mm| mm.as_str() <= today)
                .collect();
            if months.is_empty() {
                continue;
            }
            let qk = key(format!("{year}-Q{q}"));
            let mut terms = vec![(qk.clone(), 1.0)];
            terms.extend(months.into_iter().map(|mm| (key(mm), -1.0)));
            eq(terms);
            quarters.push(qk);
        }
        let mut terms = vec![(key(year.clone()), 1.0)];
        terms.extend(quarters.into_iter().map(|q| (q, -1.0)));
        eq(terms);
    }
    let labels: BTreeSet<(usize, String, String)> = value
        .keys()
        .map(|(r, w, p, _)| (*r, w.clone(), p.clone()))
        .collect();
    for (r, w, p) in &labels {
        let k = |m: &str| (*r, w.clone(), p.clone(), m.to_owned());
        eq(vec![
            (k("plans_closed"), 1.0),
            (k("plans_status.afgesloten"), -1.0),
        ]);
        let mut goals: Vec<(Key, f64)> = Vec::new();
        for (m, _) in value
            .iter()
            .filter(|(kk, _)| kk.0 == *r && kk.1 == *w && kk.2 == *p)
        {
            if m.3.starts_with("goals_leefdomein.") {
                goals.push((m.clone(), 1.0));
            } else if m.3.starts_with("goals_status.") {
                goals.push((m.clone(), -1.0));
            }
        }
        if !goals.is_empty() {
            eq(goals);
        }
    }
    // Differencing: an untouched cell is the same in every release.
    for (r, w, p, m) in value.keys() {
        if *r > 0 && untouched(w, p, m) {
            eq(vec![
                ((0, w.clone(), p.clone(), m.clone()), 1.0),
                ((*r, w.clone(), p.clone(), m.clone()), -1.0),
            ]);
        }
    }
    solve(&equations)
}

/// Elimination to reduced row echelon form, then interval propagation with x ≥ 0.
fn solve(equations: &[(Vec<(Key, f64)>, f64)]) -> BTreeSet<Key> {
    let vars: Vec<Key> = equations
        .iter()
        .flat_map(|(t, _)| t.iter().map(|(k, _)| k.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let col: HashMap<&Key, usize> = vars.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut rows: Vec<Vec<f64>> = equations
        .iter()
        .map(|(t, c)| {
            let mut row = vec![0.0; vars.len() + 1];
            for (k, v) in t {
                row[col[k]] += v;
            }
            row[vars.len()] = *c;
            row
        })
        .collect();
    let mut found = BTreeSet::new();
    let mut lead = 0;
    for j in 0..vars.len() {
        let Some(p) = (lead..rows.len()).find(|&r| rows[r][j].abs() > 1e-9) else {
            continue;
        };
        rows.swap(lead, p);
        let f = rows[lead][j];
        rows[lead].iter_mut().for_each(|v| *v /= f);
        for r in 0..rows.len() {
            if r != lead && rows[r][j].abs() > 1e-12 {
                let g = rows[r][j];
                let pivot = rows[lead].clone();
                rows[r]
                    .iter_mut()
                    .zip(pivot)
                    .for_each(|(v, pv)| *v -= g * pv);
            }
        }
        lead += 1;
    }
    for row in &rows {
        let nz: Vec<usize> = (0..vars.len()).filter(|&j| row[j].abs() > 1e-9).collect();
        if nz.len() == 1 {
            found.insert(vars[nz[0]].clone());
        }
    }
    // Bounds: x ≥ 0; each original equation narrows each unknown.
    let mut lo: HashMap<&Key, f64> = vars.iter().map(|k| (k, 0.0)).collect();
    let mut hi: HashMap<&Key, f64> = vars.iter().map(|k| (k, f64::INFINITY)).collect();
    for _ in 0..30 {
        for (terms, c) in equations {
            for (x, cx) in terms {
                let (mut min, mut max) = (*c, *c);
                for (y, cy) in terms.iter().filter(|(y, _)| y != x) {
                    let (a, b) = (cy * lo[y], cy * hi[y]);
                    let (a, b) = (
                        if a.is_nan() { 0.0 } else { a },
                        if b.is_nan() { 0.0 } else { b },
                    );
                    min -= a.max(b);
                    max -= a.min(b);
                }
                let (l, h) = if *cx > 0.0 {
                    (min / cx, max / cx)
                } else {
                    (max / cx, min / cx)
                };
                let (l, h) = (l.ceil(), h.floor());
                if l > lo[x] {
                    lo.insert(x, l);
                }
                if h < hi[x] {
                    hi.insert(x, h);
                }
            }
        }
    }
    for k in &vars {
        if (hi[k] - lo[k]).abs() < 1e-9 {
            found.insert(k.clone());
        }
    }
    found
}

fn table(cells: &[Value]) -> Table {
    cells
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().expect(k).to_owned();
            (s("wijk"), s("period"), s("metric"), c["value"].as_f64())
        })
        .collect()
}

/// The same tables under plain primary suppression, from the test's own counts.
fn primary_only(expected: &BTreeMap<(String, String, String), (f64, u64)>) -> Table {
    let mut by: BTreeMap<(String, String, String), (f64, u64)> = BTreeMap::new();
    for ((w, m, metric), (v, n)) in expected {
        let q = format!(
            "{}-Q{}",
            &m[..4],
            (m[5..7].parse::<u32>().expect("month") - 1) / 3 + 1
        );
        for p in [m.clone(), q, m[..4].to_owned()] {
            let e = by.entry((w.clone(), p, metric.clone())).or_default();
            e.0 += v;
            e.1 += n;
        }
    }
    by.into_iter()
        .map(|((w, p, m), (v, n))| (w, p, m, (n >= 5).then_some(v)))
        .collect()
}

/// The whole acceptance of issue 19 over one server: offline merges, dates, known-at,
/// independent counts, v1 plans, no personal data, and the differencing attack.
#[tokio::test]
async fn outcomes_merge_count_and_resist_differencing() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "office"]);
    fx.admin(&["grant", "office", "central_office"]);
    let office = fx.token("office");
    let server = fx.start(&[]);
    let url = server.url();
    let addr = server.addr;
    let mut a = Client::connect("device-a", &url, &t.prof_noord)
        .await
        .expect("a");
    let mut b = Client::connect("device-b", &url, &t.prof2_noord)
        .await
        .expect("b");
    let mut z = Client::connect("device-z", &url, &t.prof_zuid)
        .await
        .expect("z");

    // Plans are created online; then both professionals work offline on each.
    let households = noord();
    let mut ids: Vec<DocumentId> = Vec::new();
    for (i, _) in households.iter().enumerate() {
        let mut plan = Plan::new(WijkId::new("noord").expect("wijk"), format!("gezin-{i}"));
        plan.household.contact.name = Some(NAME.into());
        plan.household.contact.phone = Some(PHONE.into());
        plan.household.contact.address = Some(ADDRESS.into());
        let id = a
            .add_document(schema::new_document(&plan).expect("plan"))
            .await;
        assert!(a.sync_acked(id).await);
        assert!(b.fetch(id).await, "device B holds the plan");
        ids.push(id);
    }
    a.disconnect().await;
    b.disconnect().await;
    for (id, h) in ids.iter().zip(&households) {
        a.edit(*id, |doc| {
            schema::update::<Plan>(doc, |p| intake(p, h)).expect("intake")
        })
        .await;
        if let Some(end) = &h.end {
            b.edit(*id, |doc| {
                schema::update::<Plan>(doc, |p| close(p, end)).expect("close")
            })
            .await;
        }
    }
    // Synced "on 10 March": today, whatever today is; the entered dates decide.
    let before = now_month();
    a.reconnect().await.expect("a back");
    b.reconnect().await.expect("b back");
    for id in &ids {
        assert!(converge(&mut [&mut a, &mut b], *id).await, "{id} converges");
    }
    let after = now_month();
    for (id, h) in ids.iter().zip(&households) {
        let doc = a.json(*id);
        let n = |k: &str| doc[k].as_array().map_or(0, Vec::len);
        let closed = usize::from(h.end.is_some());
        assert_eq!(n("status_history"), 2 + closed, "nothing lost: {doc}");
        assert_eq!(n("zelfredzaamheid"), 2 + 2 * closed, "nothing lost: {doc}");
        assert_eq!(n("participatieladder"), 1 + closed, "nothing lost: {doc}");
    }

    // A version-1 plan, written as an old client would: meta.schema 1, no lists.
    let mut v1 = automerge::Automerge::new();
    let mut tx = v1.transaction();
    let meta = tx
        .put_object(automerge::ROOT, "meta", automerge::ObjType::Map)
        .expect("meta");
    tx.put(&meta, "kind", "plan").expect("kind");
    tx.put(&meta, "wijk", "noord").expect("wijk");
    tx.put(&meta, "schema", 1i64).expect("schema");
    let hh = tx
        .put_object(automerge::ROOT, "household", automerge::ObjType::Map)
        .expect("hh");
    tx.put(&hh, "pseudonym", "gezin-v1").expect("pseudonym");
    tx.put(automerge::ROOT, "status", "uitvoering")
        .expect("status");
    tx.commit();
    assert_eq!(schema::validate(&v1).expect("v1 validates").schema, 1);
    let v1_id = a.add_document(v1).await;
    assert!(a.sync_acked(v1_id).await, "a version-1 plan syncs");

    // Zuid: three small households.
    let small = zuid(3);
    for (i, h) in small.iter().enumerate() {
        let mut plan = Plan::new(WijkId::new("zuid").expect("wijk"), format!("gezin-z{i}"));
        plan.change_status(PlanStatus::Aanmelding, date(&h.aanmelding));
        plan.change_status(PlanStatus::Intake, date(&h.intake));
        let id = z
            .add_document(schema::new_document(&plan).expect("plan"))
            .await;
        assert!(z.sync_acked(id).await);
    }

    // The feed at k = 5: no personal data; a record for every plan, generalised so that
    // no combination of its fields is shared by fewer than 5 (issue 16, item 9).
    let r = http::get(addr, "/api/v1/central/feed", Some(&office)).await;
    assert_eq!(r.status, 200);
    let feed = r.text();
    for word in [
        NAME,
        "Jansen",
        PHONE,
        ADDRESS,
        "Dorpsstraat",
        "gezin-",
        "prof-noord",
    ] {
        assert!(!feed.contains(word), "the feed holds {word:?}");
    }
    let plan_records = feed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|r| r["kind"] == "plan")
        .count();
    assert_eq!(plan_records, households.len() + 1 + small.len());

    // Release 1: every table. Compare with counts computed here.
    let release1 = fetch_all(addr, &office).await;
    let text = serde_json::to_string(&release1).expect("json");
    for word in [NAME, PHONE, ADDRESS, "gezin-", "prof-noord"] {
        assert!(!text.contains(word), "the aggregates hold {word:?}");
    }
    let want = expected(&[("noord", &households), ("zuid", &small)]);
    let got: HashMap<(String, String, String), &Value> = release1
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().expect(k).to_owned();
            ((s("wijk"), s("period"), s("metric")), c)
        })
        .collect();
    let mut published = 0;
    for (key, (value, units)) in &want {
        let cell = got.get(key).unwrap_or_else(|| panic!("no cell {key:?}"));
        if *units < 5 {
            assert_eq!(cell["suppressed"], true, "{key:?}");
        }
        if cell["suppressed"] == true {
            assert!(cell["value"].is_null(), "{key:?}");
        } else {
            assert_eq!(cell["value"].as_f64(), Some(*value), "{key:?}");
            published += 1;
        }
    }
    assert!(
        published >= 4,
        "most outcome cells are published ({published})"
    );
    let cell = |p: &str, m: &str| got[&("noord".to_owned(), p.to_owned(), m.to_owned())];
    assert_eq!(cell("2025-03", "outcome.started")["value"], 6.0);
    // Waiting times from the entered dates: aanmelding 9..14 January, intake 3..8 March.
    let mut waits: Vec<i64> = households[7..]
        .iter()
        .map(|h| day(&h.intake) - day(&h.aanmelding))
        .collect();
    waits.sort_unstable();
    assert_eq!(
        cell("2025-03", "outcome.waiting_days.median")["value"].as_f64(),
        Some(waits[2] as f64)
    );
    assert_eq!(
        cell("2025-03", "outcome.waiting_days.p75")["value"].as_f64(),
        Some(waits[4] as f64)
    );
    // Durations of the nine closed plans, all closed in June: a quarter-2 cell.
    let mut durations: Vec<i64> = households
        .iter()
        .filter_map(|h| h.end.as_ref().map(|e| day(&e.0) - day(&h.intake)))
        .collect();
    durations.sort_unstable();
    assert_eq!(cell("2025-06", "outcome.closed")["value"], 9.0);
    assert_eq!(
        cell("2025-06", "outcome.duration_days.median")["value"].as_f64(),
        Some(durations[4] as f64)
    );
    // Zuid is small everywhere: its median waiting time is hidden, not shown.
    let zuid_wait = &got[&(
        "zuid".to_owned(),
        "2025-02".to_owned(),
        "outcome.waiting_days.median".to_owned(),
    )];
    assert_eq!(zuid_wait["suppressed"], true);

    // Release 2, the next night: one more zuid household (so zuid's cells change).
    let more = zuid(4);
    let h = &more[3];
    let mut plan = Plan::new(WijkId::new("zuid").expect("wijk"), "gezin-z3");
    plan.change_status(PlanStatus::Aanmelding, date(&h.aanmelding));
    plan.change_status(PlanStatus::Intake, date(&h.intake));
    let id = z
        .add_document(schema::new_document(&plan).expect("plan"))
        .await;
    assert!(z.sync_acked(id).await);
    let release2 = fetch_all(addr, &office).await;

    // The attack on everything the central office holds recovers nothing hidden.
    let today = now_month();
    let untouched = |w: &str, _: &str, _: &str| w != "zuid";
    let releases = [table(&release1), table(&release2)];
    let hidden = releases.iter().flatten().filter(|c| c.3.is_none()).count();
    assert!(hidden >= 5, "the test needs hidden cells ({hidden})");
    let recovered = attack(&releases, &untouched, &today);
    assert!(
        recovered.is_empty(),
        "recovered hidden cells: {recovered:?}"
    );
    // The same attack on plain primary suppression of the same counts recovers some.
    let want2 = expected(&[("noord", &households), ("zuid", &more)]);
    let naive = [primary_only(&want), primary_only(&want2)];
    let recovered = attack(&naive, &untouched, &today);
    assert!(
        recovered
            .iter()
            .any(|k| k.2 == "2025-02" && k.3 == "outcome.started" && k.1 == "noord"),
        "primary suppression alone gives away noord's February intakes: {recovered:?}"
    );

    // The feed at k = 1 (no generalisation), on the same database: the "3 March"
    // intake is entered in March and known in the month it synced. The release memory
    // is wiped first: it holds the k = 5 releases, whose hidden cells would keep the
    // feed's months coarse (a test-only setting: nothing is protected at k = 1).
    assert!(server.stop(), "clean shutdown");
    wipe_release_memory(&fx);
    let server = fx.start(&["--central-min-count", "1"]);
    let r = http::get(server.addr, "/api/v1/central/feed", Some(&office)).await;
    assert_eq!(r.status, 200);
    let feed = r.text();
    let records: Vec<Value> = feed
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let march: Vec<&Value> = records
        .iter()
        .flat_map(|r| r["status_history"].as_array().into_iter().flatten())
        .filter(|h| h["status"] == "intake" && h["month"] == "2025-03")
        .collect();
    assert_eq!(march.len(), 6, "six intakes entered in March 2025");
    for h in march {
        let known = h["known_month"].as_str().expect("known month");
        assert!(
            known == before || known == after,
            "known at {known}, synced {before}..{after}"
        );
    }
    let v1_record = records
        .iter()
        .filter(|r| r["kind"] == "plan" && r["status"] == "uitvoering");
    assert!(
        v1_record
            .clone()
            .any(|r| r["status_history"] == serde_json::json!([])),
        "the v1 plan is in the feed with no history"
    );
}

/// Empties the release memory of a stopped server's SQLite database.
fn wipe_release_memory(fx: &Fixture) {
    let path = fx.db_url.trim_start_matches("sqlite://");
    let out = std::process::Command::new("sqlite3")
        .arg(path)
        .arg("DELETE FROM central_release_cells; DELETE FROM central_releases;")
        .output()
        .expect("run sqlite3 (Debian package sqlite3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the second release of [`second_release`] is made.
enum Second {
    /// The same server's database after a restart, with the release memory kept or
    /// wiped (wiped: what a restart did before the memory was the store's).
    Restart { wipe: bool },
    /// Another node on the same PostgreSQL database, while the first keeps running.
    OtherNode,
}

/// Noord plans through `client`: aanmelding and intake on the given dates.
async fn intakes(client: &mut Client, households: &[Household], tag: &str) {
    for (i, h) in households.iter().enumerate() {
        let mut plan = Plan::new(
            WijkId::new("noord").expect("wijk"),
            format!("gezin-{tag}{i}"),
        );
        plan.change_status(PlanStatus::Aanmelding, date(&h.aanmelding));
        plan.change_status(PlanStatus::Intake, date(&h.intake));
        let id = client
            .add_document(schema::new_document(&plan).expect("plan"))
            .await;
        assert!(client.sync_acked(id).await, "plan {tag}{i} synced");
    }
}

/// Release 1: noord's intakes of 2025 are 5 in January, 2 in February, 6 in March, so
/// February is hidden with January (the smaller neighbour) beside it. Then two more
/// January intakes and release 2 (`second` says where). Without the memory of release
/// 1, release 2 hides February with March (now the smaller neighbour); March was
/// published in release 1 and did not change, so February follows. Returns what the
/// attacker recovers from both releases.
async fn second_release(fx: Fixture, second: Second) -> BTreeSet<Key> {
    let t = fx.seed();
    fx.admin(&["user", "add", "office"]);
    fx.admin(&["grant", "office", "central_office"]);
    let office = fx.token("office");
    let first = fx.start(&[]);
    let mut a = Client::connect("device-a", &first.url(), &t.prof_noord)
        .await
        .expect("a");
    let households: Vec<Household> = noord()
        .into_iter()
        .map(|h| Household { end: None, ..h })
        .collect();
    intakes(&mut a, &households, "").await;
    let release1 = fetch_all(first.addr, &office).await;
    let cell = |cells: &[Value], p: &str| {
        cells
            .iter()
            .find(|c| c["wijk"] == "noord" && c["period"] == p && c["metric"] == "outcome.started")
            .map(|c| c["value"].clone())
            .unwrap_or_else(|| panic!("no outcome.started {p}"))
    };
    assert_eq!(
        cell(&release1, "2025-02"),
        Value::Null,
        "February is hidden"
    );
    assert_eq!(cell(&release1, "2025-03"), 6.0, "March is published");
    a.disconnect().await;

    let january = [
        Household {
            aanmelding: "2025-01-15".into(),
            intake: "2025-01-27".into(),
            end: None,
        },
        Household {
            aanmelding: "2025-01-16".into(),
            intake: "2025-01-28".into(),
            end: None,
        },
    ];
    let (release2, _servers) = match second {
        Second::Restart { wipe } => {
            assert!(first.stop(), "the server stops cleanly");
            if wipe {
                wipe_release_memory(&fx);
            }
            let server = fx.start(&[]);
            let mut a = Client::connect("device-a2", &server.url(), &t.prof_noord)
                .await
                .expect("a after restart");
            intakes(&mut a, &january, "j").await;
            (fetch_all(server.addr, &office).await, vec![server])
        }
        Second::OtherNode => {
            let node2 = fx.start(&[]);
            let mut a = Client::connect("device-a2", &first.url(), &t.prof_noord)
                .await
                .expect("a on node 1");
            intakes(&mut a, &january, "j").await;
            (fetch_all(node2.addr, &office).await, vec![first, node2])
        }
    };
    assert_eq!(cell(&release2, "2025-Q1"), 15.0, "both new intakes counted");
    // The change touched January 2025 (and its quarter and year) and this year's
    // snapshot cells; the attacker knows every other cell stayed the same.
    let today = now_month();
    let this_year = today[..4].to_owned();
    let untouched = move |_: &str, p: &str, _: &str| {
        !(p.starts_with("2025-01") || p == "2025-Q1" || p == "2025" || p.starts_with(&this_year))
    };
    attack(&[table(&release1), table(&release2)], &untouched, &today)
}

/// The release memory is the store's: a release, a restart, a second release, and the
/// attacker holding both recovers nothing; with the memory wiped at the restart the
/// same attack recovers February's intakes (so the stored memory is what protects).
#[tokio::test]
async fn release_memory_survives_a_restart() {
    let kept = second_release(Fixture::new(), Second::Restart { wipe: false }).await;
    assert!(kept.is_empty(), "recovered hidden cells: {kept:?}");
    let wiped = second_release(Fixture::new(), Second::Restart { wipe: true }).await;
    assert!(
        wiped
            .iter()
            .any(|k| k.1 == "noord" && k.2 == "2025-02" && k.3 == "outcome.started"),
        "without the stored memory, February's intakes follow: {wiped:?}"
    );
}

/// Two nodes on one PostgreSQL database share the release memory: node 2's release
/// after node 1's is consistent with it, and the attacker holding both recovers nothing.
#[tokio::test]
async fn two_nodes_share_the_release_memory() {
    let recovered = second_release(Fixture::postgres(), Second::OtherNode).await;
    assert!(
        recovered.is_empty(),
        "recovered hidden cells: {recovered:?}"
    );
}

/// `--central-disclosure cell-key`: every count is published (nothing suppressed but
/// small magnitudes and quantiles), no count of 1 to 4 appears (zuid's small cells are 0
/// or 5), every count is within 2 of the truth from 5 on, and a second release of the
/// same data is identical (so differencing gives nothing).
#[tokio::test]
async fn cell_key_perturbation_through_the_server() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "office"]);
    fx.admin(&["grant", "office", "central_office"]);
    let office = fx.token("office");
    let server = fx.start(&["--central-disclosure", "cell-key"]);
    let mut a = Client::connect("device-a", &server.url(), &t.prof_noord)
        .await
        .expect("a");
    let mut z = Client::connect("device-z", &server.url(), &t.prof_zuid)
        .await
        .expect("z");
    let households: Vec<Household> = noord()
        .into_iter()
        .map(|h| Household { end: None, ..h })
        .collect();
    intakes(&mut a, &households, "").await;
    let small = zuid(3);
    for (i, h) in small.iter().enumerate() {
        let mut plan = Plan::new(WijkId::new("zuid").expect("wijk"), format!("gezin-z{i}"));
        plan.change_status(PlanStatus::Aanmelding, date(&h.aanmelding));
        plan.change_status(PlanStatus::Intake, date(&h.intake));
        let id = z
            .add_document(schema::new_document(&plan).expect("plan"))
            .await;
        assert!(z.sync_acked(id).await);
    }
    let r = http::get(
        server.addr,
        "/api/v1/central/aggregates?period=month",
        Some(&office),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(body["method"], "cell-key");
    let first = fetch_all(server.addr, &office).await;
    let want = expected(&[("noord", &households), ("zuid", &small)]);
    let got: HashMap<(String, String, String), &Value> = first
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().expect(k).to_owned();
            ((s("wijk"), s("period"), s("metric")), c)
        })
        .collect();
    for ((w, m, metric), (value, _)) in &want {
        let key = (w.clone(), m.clone(), metric.clone());
        let cell = got.get(&key).unwrap_or_else(|| panic!("no cell {key:?}"));
        assert_eq!(cell["suppressed"], false, "{key:?}");
        let v = cell["value"].as_f64().expect("a value");
        if *value < 5.0 {
            assert!(v == 0.0 || v == 5.0, "{key:?}: {value} published as {v}");
        } else {
            assert!(
                (v - value).abs() <= 2.0 && v >= 5.0,
                "{key:?}: {value} as {v}"
            );
        }
    }
    for c in &first {
        let metric = c["metric"].as_str().unwrap_or_default();
        if let Some(v) = c["value"].as_f64() {
            if !metric.ends_with(".median") && !metric.ends_with(".p75") {
                assert!(v == 0.0 || v >= 5.0, "a small count published: {c}");
            }
        }
    }
    assert_eq!(
        fetch_all(server.addr, &office).await,
        first,
        "the same data, the same release"
    );
}

/// The outcome charts in headless Chromium: for a seeded wijk the waiting-time and
/// zelfredzaamheid charts render with bars, the small wijk's show suppressed marks
/// (not zeros); screenshots are kept under target/test-output/ (docs/central-outcomes.png is one, copied by hand).
#[tokio::test]
async fn outcome_charts_in_headless_chromium() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "office"]);
    fx.admin(&["grant", "office", "central_office"]);
    let office = fx.token("office");
    let server = fx.start(&[]);
    let url = server.url();
    let mut a = Client::connect("device-a", &url, &t.prof_noord)
        .await
        .expect("a");
    let mut z = Client::connect("device-z", &url, &t.prof_zuid)
        .await
        .expect("z");
    for (i, h) in noord().iter().enumerate() {
        let mut plan = Plan::new(WijkId::new("noord").expect("wijk"), format!("gezin-{i}"));
        plan.household.contact.name = Some(NAME.into());
        intake(&mut plan, h);
        if let Some(end) = &h.end {
            close(&mut plan, end);
        }
        let id = a
            .add_document(schema::new_document(&plan).expect("plan"))
            .await;
        assert!(a.sync_acked(id).await);
    }
    for (i, h) in zuid(3).iter().enumerate() {
        let mut plan = Plan::new(WijkId::new("zuid").expect("wijk"), format!("gezin-z{i}"));
        intake(&mut plan, h);
        close(&mut plan, &(format!("2025-06-{:02}", 2 + i), 3, 3));
        let id = z
            .add_document(schema::new_document(&plan).expect("plan"))
            .await;
        assert!(z.sync_acked(id).await);
    }

    let here = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        here.join("browser/node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/browser` and `bash scripts/ensure-chromium.sh` first"
    );
    let bin = buurtsync_e2e::server::binary();
    let target = bin
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let out = target.join("test-output/central-outcomes");
    let _ = std::fs::remove_dir_all(&out);
    let child = tokio::process::Command::new("node")
        .arg(here.join("browser/dashboard.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(&office)
        .arg(&out)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), child)
        .await
        .expect("browser test timed out")
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dashboard.mjs failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON from dashboard.mjs ({e}): {stdout}\n{stderr}"));
    let section = |w: &str| {
        seen["sections"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["wijk"] == w))
            .unwrap_or_else(|| panic!("no section {w}: {seen}"))
            .clone()
    };
    let noord = section("noord");
    assert_eq!(noord["rendered"], true, "{noord}");
    let chart = |s: &Value, id: &str| s["byChart"][id].clone();
    let wait = chart(&noord, "chart-noord-wachttijd");
    assert!(
        wait["bars"].as_u64().unwrap_or(0) >= 2,
        "waiting time bars: {noord}"
    );
    let zrm = chart(&noord, "chart-noord-zelfredzaamheid");
    assert!(
        zrm["bars"].as_u64().unwrap_or(0) >= 3,
        "zelfredzaamheid bars: {noord}"
    );
    let zuid = section("zuid");
    let zuid_zrm = chart(&zuid, "chart-zuid-zelfredzaamheid");
    // Zuid's three households moved in financien, huisvesting and on the ladder: three
    // hidden cells, drawn as suppressed marks (the other bars are the zeros beside them).
    assert!(
        zuid_zrm["suppressed"].as_u64().unwrap_or(0) >= 3,
        "hidden, not zero: {zuid}"
    );
    let zrm_suppressed = zrm["suppressed"].as_u64().unwrap_or(0);
    assert!(
        zrm_suppressed >= 1,
        "noord's small movements are hidden: {noord}"
    );
    let text = seen["pageText"].as_str().unwrap_or_default();
    assert!(
        !text.contains(NAME) && !text.contains("gezin-"),
        "personal data on the page"
    );
    let csv = std::fs::read_to_string(seen["csvFile"].as_str().expect("csv")).expect("csv");
    assert!(
        csv.contains("noord,2025-03,outcome.started,6,false\r\n"),
        "{csv}"
    );
    assert!(
        csv.contains("zuid,2025-02,outcome.started,,true\r\n"),
        "{csv}"
    );
    assert!(
        csv.contains("noord,2025-06,zrm.huisvesting.same,9,false\r\n"),
        "{csv}"
    );
    assert!(
        csv.contains("noord,2025-06,zrm.financien.improved,,true\r\n"),
        "{csv}"
    );
    let shot = std::fs::metadata(seen["screenshot"].as_str().expect("png")).expect("png");
    assert!(shot.len() > 10_000);
}

/// The current UTC month, `YYYY-MM`.
fn now_month() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let days = secs / 86_400;
    // Walk months from 1970: the inverse of `day`.
    let mut y = 1970;
    let mut d = days;
    loop {
        let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        };
        if d < len {
            break;
        }
        d -= len;
        y += 1;
    }
    let mut m = 1;
    for mm in 1..=12 {
        let next = if mm == 12 {
            format!("{}-01-01", y + 1)
        } else {
            format!("{y}-{:02}-01", mm + 1)
        };
        if days < day(&next) {
            m = mm;
            break;
        }
    }
    format!("{y}-{m:02}")
}
