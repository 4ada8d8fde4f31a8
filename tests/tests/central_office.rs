//! The central office: a pseudonymised incremental feed, aggregates with small counts
//! suppressed, and the dashboard in real headless Chromium — over the real server,
//! with data seeded by real clients (professionals and a volunteer) in three wijken.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use autosurgeon::Text;
use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::{Fixture, ServerProcess};
use serde_json::Value;
use sync_core::partition::WijkId;
use sync_core::protocol::DocumentId;
use sync_core::schema::{
    self, Activiteit, Consent, ContactKind, ContactMoment, Date, Goal, GoalStatus, Leefdomein,
    Plan, PlanStatus, Session,
};

/// Known personal data written into the documents; none of it may reach the central
/// office in any form.
const NAME: &str = "Karel Jansen-Vermeulen";
const PHONE: &str = "06-12345678";
const ADDRESS: &str = "Dorpsstraat 12, Assen";
const NOTE: &str = "Vertelde over schulden bij de Woonbond";
const FORBIDDEN: &[&str] = &[
    NAME,
    "Jansen",
    PHONE,
    "12345678",
    ADDRESS,
    "Dorpsstraat",
    NOTE,
    "Woonbond",
    "gezin-",
    "Henk",
    "Koffieochtend",
    "Taalcafé",
];

fn date(s: &str) -> Date {
    Date::parse(s).expect("date")
}

fn wijk(s: &str) -> WijkId {
    WijkId::new(s).expect("wijk")
}

/// What the test seeded, kept to compute the expected aggregates independently.
struct World {
    fx: Fixture,
    server: ServerProcess,
    office_a: String,
    office_b: String,
    /// (token, role) of users that must be refused.
    others: Vec<(String, &'static str)>,
    plans: Vec<(DocumentId, String, Plan)>,
    acts: Vec<(DocumentId, String, Activiteit)>,
    clients: BTreeMap<String, Client>,
}

/// Plans in three wijken (6 in noord, 5 in zuid, 2 in west), each with the known name,
/// phone, address and note in contact details, goals, contact summaries and consents;
/// a hand-over; activiteiten with sessions, notes, signals and named participants.
async fn seed() -> World {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["wijk", "add", "west"]);
    for (user, role) in [
        ("prof-west", Some("west")),
        ("office-a", None),
        ("office-b", None),
        ("admin-1", None),
        ("consulent-1", None),
    ] {
        fx.admin(&["user", "add", user]);
        match role {
            Some(w) => {
                fx.admin(&["grant", user, "professional", "--wijk", w]);
            }
            None => {
                let global = match user {
                    "admin-1" => "admin",
                    "consulent-1" => "consulent",
                    _ => "central_office",
                };
                fx.admin(&["grant", user, global]);
            }
        }
    }
    let prof_west = fx.token("prof-west");
    let server = fx.start(&[]);
    let url = server.url();
    let mut clients = BTreeMap::new();
    for (w, token) in [
        ("noord", &t.prof_noord),
        ("zuid", &t.prof_zuid),
        ("west", &prof_west),
    ] {
        let client = Client::connect(w, &url, token).await.expect("connect");
        clients.insert(w.to_owned(), client);
    }

    let mut plans = Vec::new();
    for (w, count, month) in [
        ("noord", 6, "2024-03"),
        ("zuid", 5, "2024-04"),
        ("west", 2, "2024-03"),
    ] {
        for i in 0..count {
            let mut plan = Plan::new(wijk(w), format!("gezin-{w}-{i}"));
            plan.household.contact.name = Some(NAME.into());
            plan.household.contact.phone = Some(PHONE.into());
            plan.household.contact.address = Some(ADDRESS.into());
            plan.household.contact.email = Some("karel@example.nl".into());
            plan.regiehouder = Some(format!("prof-{w}"));
            plan.status = [
                PlanStatus::Intake,
                PlanStatus::Uitvoering,
                PlanStatus::Afgesloten,
            ][i % 3];
            let mut money = Goal::new(Leefdomein::Financien, format!("{NOTE}; bel {PHONE}"));
            if i % 2 == 0 {
                money.status = GoalStatus::Behaald;
            }
            plan.goals.push(money);
            plan.goals.push(Goal::new(
                [Leefdomein::Wonen, Leefdomein::SociaalNetwerk][i % 2],
                format!("Samen met {NAME}"),
            ));
            plan.contacts.push(ContactMoment::new(
                date(&format!("{month}-{:02}", 3 + i)),
                ContactKind::Huisbezoek,
                format!("Bij {NAME} thuis, {ADDRESS}. {NOTE}"),
            ));
            if i % 2 == 0 {
                plan.contacts.push(ContactMoment::new(
                    date(&format!("{month}-{:02}", 20 + i)),
                    ContactKind::Telefoon,
                    format!("Gebeld op {PHONE}"),
                ));
            }
            plan.consents.push(Consent::new(
                format!("gegevens van {NAME} delen met de huisarts"),
                date(&format!("{month}-03")),
            ));
            if w == "noord" && i == 0 {
                plan.handover.requested = true;
                plan.handover.requested_at = Some("2024-03-20T10:00:00Z".into());
                plan.handover.reason = Some(Text::with_value(NOTE));
            }
            let client = clients.get_mut(w).expect("client");
            let id = client
                .add_document(schema::new_document(&plan).expect("plan"))
                .await;
            assert!(client.sync_acked(id).await, "plan not stored");
            plans.push((id, w.to_owned(), plan));
        }
    }

    // The noord activiteit is logged by a volunteer, as in the field.
    let mut volunteer = Client::connect("vol-noord", &url, &t.vol_noord)
        .await
        .expect("volunteer");
    let mut koffie = Activiteit::new(wijk("noord"), format!("Koffieochtend bij {NAME}"));
    koffie.location = Some(ADDRESS.into());
    koffie.activity_type = Some("ontmoeting".into());
    koffie.organisers = vec!["vol-noord".into()];
    koffie.volunteers = ["Henk", "Ria", "Kees", "Anja", "Piet", "Fatma"]
        .map(str::to_owned)
        .to_vec();
    koffie.schedule = Some("wekelijks dinsdag 10:00".into());
    for i in 0..6u64 {
        let mut s = Session::new(date(&format!("2024-03-{:02}", 5 + i)), 10 + i, 2.5);
        s.participants = vec![NAME.into()];
        s.notes = Some(Text::with_value(NOTE));
        s.signals = vec![Text::with_value(format!("{NAME} belt niet terug: {PHONE}"))];
        koffie.sessions.push(s);
    }
    let mut taal = Activiteit::new(wijk("zuid"), "Taalcafé");
    taal.volunteers = vec!["Henk".into()];
    for d in ["2024-04-02", "2024-04-09"] {
        taal.sessions.push(Session::new(date(d), 4, 1.5));
    }
    let mut acts = Vec::new();
    for (w, act, client) in [
        ("noord", koffie, &mut volunteer),
        ("zuid", taal, clients.get_mut("zuid").expect("zuid")),
    ] {
        let id = client
            .add_document(schema::new_document(&act).expect("act"))
            .await;
        assert!(client.sync_acked(id).await, "activiteit not stored");
        acts.push((id, w.to_owned(), act));
    }

    let others = vec![
        (t.vol_noord.clone(), "volunteer"),
        (t.prof_noord.clone(), "professional"),
        (fx.token("admin-1"), "admin"),
        (fx.token("consulent-1"), "consulent"),
    ];
    World {
        office_a: fx.token("office-a"),
        office_b: fx.token("office-b"),
        fx,
        server,
        others,
        plans,
        acts,
        clients,
    }
}

/// A feed page: the records and the next cursor.
async fn feed(addr: SocketAddr, token: &str, cursor: i64) -> (Vec<Value>, i64, String) {
    let r = http::get(
        addr,
        &format!("/api/v1/central/feed?cursor={cursor}"),
        Some(token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/x-ndjson; charset=utf-8")
    );
    let next: i64 = r
        .header("buurtsync-next-cursor")
        .and_then(|v| v.parse().ok())
        .expect("next cursor header");
    let text = r.text();
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect();
    (records, next, text)
}

fn assert_clean(what: &str, text: &str, ids: &[String]) {
    for word in FORBIDDEN {
        assert!(!text.contains(word), "{what} contains {word:?}:\n{text}");
    }
    for id in ids {
        assert!(
            !text.contains(id.as_str()),
            "{what} contains document id {id}"
        );
    }
}

/// record pseudonym → household pseudonym, for the plans of a feed page (a withheld
/// record, which carries no household, maps to `withheld`).
fn households(records: &[Value]) -> BTreeMap<String, String> {
    records
        .iter()
        .filter(|r| r["kind"] == "plan" && r.get("erased").is_none())
        .map(|r| {
            (
                r["record"].as_str().expect("record").to_owned(),
                r["household"].as_str().unwrap_or("withheld").to_owned(),
            )
        })
        .collect()
}

#[derive(Default, Debug)]
struct Expected {
    value: f64,
    units: BTreeSet<String>,
}

/// The aggregates, computed here from what the test seeded, with the definitions of
/// docs/central-office.md: `now` is the month the server stored (and last changed) the
/// documents.
fn expected_aggregates(w: &World, now: &str) -> BTreeMap<(String, String, String), Expected> {
    let mut out: BTreeMap<(String, String, String), Expected> = BTreeMap::new();
    let mut add = |wijk: &str, period: &str, metric: String, value: f64, unit: String| {
        let e = out
            .entry((wijk.to_owned(), period.to_owned(), metric))
            .or_default();
        e.value += value;
        e.units.insert(unit);
    };
    for (_, wk, plan) in &w.plans {
        let hh = plan.household.pseudonym.clone();
        add(wk, now, "plans_new".into(), 1.0, hh.clone());
        if plan.status == PlanStatus::Afgesloten {
            add(wk, now, "plans_closed".into(), 1.0, hh.clone());
        }
        add(
            wk,
            now,
            format!("plans_status.{}", plan.status.as_str()),
            1.0,
            hh.clone(),
        );
        for g in &plan.goals {
            add(
                wk,
                now,
                format!("goals_leefdomein.{}", g.leefdomein.as_str()),
                1.0,
                hh.clone(),
            );
            add(
                wk,
                now,
                format!("goals_status.{}", g.status.as_str()),
                1.0,
                hh.clone(),
            );
        }
        for c in &plan.contacts {
            add(
                wk,
                &c.date.as_str()[..7],
                format!("contacts.{}", c.kind.as_str()),
                1.0,
                hh.clone(),
            );
        }
        if plan.handover.requested {
            add(wk, "2024-03", "handovers".into(), 1.0, hh.clone());
        }
    }
    for (id, wk, act) in &w.acts {
        let mut months = BTreeSet::new();
        for (i, s) in act.sessions.iter().enumerate() {
            let m = &s.date.as_str()[..7];
            months.insert(m.to_owned());
            let unit = format!("{id}/{i}");
            add(wk, m, "sessions".into(), 1.0, unit.clone());
            add(
                wk,
                m,
                "participants".into(),
                s.attendance as f64,
                unit.clone(),
            );
            add(wk, m, "volunteer_hours".into(), s.volunteer_hours, unit);
        }
        for m in months {
            add(wk, &m, "activiteiten".into(), 1.0, id.to_string());
            for v in &act.volunteers {
                add(wk, &m, "unique_volunteers".into(), 0.0, v.to_lowercase());
            }
        }
    }
    for ((_, _, metric), e) in out.iter_mut() {
        if metric == "unique_volunteers" {
            e.value = e.units.len() as f64;
        }
    }
    out
}

/// The feed and every export carry no name, phone, address, note or free text;
/// pseudonyms are stable per recipient (across calls and restarts) and differ between
/// recipients; the cursor returns only what changed since; aggregates equal counts
/// computed here, with wijk-months under the threshold suppressed; erasures reach the
/// feed; every other role gets 403.
#[tokio::test]
async fn central_office_feed_exports_and_aggregates() {
    let mut w = seed().await;
    let addr = w.server.addr;
    let ids: Vec<String> = w
        .plans
        .iter()
        .map(|p| p.0.to_string())
        .chain(w.acts.iter().map(|a| a.0.to_string()))
        .collect();

    // Everything, for recipient A, twice; and for recipient B.
    let (all, c1, text) = feed(addr, &w.office_a, 0).await;
    assert_clean("feed", &text, &ids);
    assert_eq!(all.len(), 15, "13 plans and 2 activiteiten");
    let plans = households(&all);
    assert_eq!(plans.len(), 13);
    let distinct: BTreeSet<&String> = plans.values().filter(|h| *h != "withheld").collect();
    assert_eq!(distinct.len(), 11, "one household pseudonym per household");
    let per_wijk = |wk: &str| all.iter().filter(|r| r["wijk"] == wk).count();
    // West's two plans are fewer than k = 5: withheld, with no wijk (issue 16, item 9).
    assert_eq!(
        (per_wijk("noord"), per_wijk("zuid"), per_wijk("west")),
        (7, 6, 0)
    );
    assert_eq!(all.iter().filter(|r| r["withheld"] == true).count(), 2);
    for r in all
        .iter()
        .filter(|r| r["kind"] == "plan" && r["wijk"] == "noord")
    {
        assert!(r["generalised"].is_object(), "{r}");
        for c in r["contacts"].as_array().into_iter().flatten() {
            assert!(c.get("summary").is_none(), "{c}");
        }
    }
    let koffie = all
        .iter()
        .find(|r| r["kind"] == "activiteit" && r["wijk"] == "noord")
        .expect("noord activiteit");
    assert_eq!(koffie["sessions"].as_array().map(Vec::len), Some(6));
    assert_eq!(koffie["volunteers"], 6);

    let (again, c1_again, _) = feed(addr, &w.office_a, 0).await;
    assert_eq!(c1_again, c1);
    assert_eq!(households(&again), plans, "stable for one recipient");
    let (for_b, _, text_b) = feed(addr, &w.office_b, 0).await;
    assert_clean("feed for B", &text_b, &ids);
    let b = households(&for_b);
    let a_values: BTreeSet<&String> = plans.values().collect();
    assert!(
        b.keys().all(|r| !plans.contains_key(r)),
        "records differ per recipient"
    );
    assert!(
        b.values().all(|h| h == "withheld" || !a_values.contains(h)),
        "households differ per recipient"
    );

    // CSV: BOM, header row, one row per record, CRLF.
    let csv = http::get(addr, "/api/v1/central/feed?format=csv", Some(&w.office_a)).await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(csv.body.starts_with(b"\xEF\xBB\xBFseq,record,kind,wijk,"));
    let csv_text = csv.text();
    assert_clean("feed csv", &csv_text, &ids);
    assert_eq!(csv_text.matches("\r\n").count(), 16, "header and 15 rows");
    for record in plans.keys() {
        assert!(csv_text.contains(record.as_str()), "csv lacks {record}");
    }

    // The cursor: nothing new, then exactly the plan that changed.
    let (none, c_same, _) = feed(addr, &w.office_a, c1).await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(c_same, c1);
    let (edited, _, edited_plan) = &mut w.plans[1];
    let edited = *edited;
    let extra = ContactMoment::new(
        date("2024-03-28"),
        ContactKind::Wijkcentrum,
        format!("Gesprek met {NAME}"),
    );
    edited_plan.contacts.push(extra.clone());
    let client = w.clients.get_mut("noord").expect("noord");
    client
        .edit(edited, |doc| {
            schema::update::<Plan>(doc, |p| p.contacts.push(extra)).expect("edit");
        })
        .await;
    assert!(client.sync_acked(edited).await);
    let (changed, c2, text) = feed(addr, &w.office_a, c1).await;
    assert_clean("feed after cursor", &text, &ids);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(c2 > c1);
    let record = changed[0]["record"].as_str().expect("record");
    assert!(plans.contains_key(record), "the same record, changed");
    assert!(changed[0]["seq"].as_i64() > Some(c1), "{changed:?}");
    assert!(feed(addr, &w.office_a, c2).await.0.is_empty());

    // Aggregates against counts computed here; suppression below 5.
    let r = http::get(
        addr,
        "/api/v1/central/aggregates?period=month",
        Some(&w.office_a),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_clean("aggregates", &r.text(), &ids);
    let agg: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(agg["min_count"], 5);
    let cells = agg["cells"].as_array().expect("cells");
    let now = cells
        .iter()
        .find(|c| c["metric"] == "plans_new")
        .and_then(|c| c["period"].as_str())
        .expect("plans_new cell")
        .to_owned();
    let expected = expected_aggregates(&w, &now);
    let got: BTreeMap<(String, String, String), &Value> = cells
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().expect(k).to_owned();
            ((s("wijk"), s("period"), s("metric")), c)
        })
        .collect();
    for key in got.keys() {
        assert!(
            expected.contains_key(key) || got[key]["suppressed"] == true,
            "{key:?}: only secondary suppressions may be cells with nothing in them"
        );
    }
    for (key, e) in &expected {
        let cell = got[key];
        if e.units.len() < 5 {
            assert_eq!(cell["suppressed"], true, "{key:?} {e:?}");
            assert!(cell["value"].is_null(), "{key:?} leaks {cell}");
        } else if cell["suppressed"] == true {
            // A secondary suppression (docs/central-office.md): hidden, never zero.
            assert!(cell["value"].is_null(), "{key:?} leaks {cell}");
        } else {
            assert_eq!(cell["value"].as_f64(), Some(e.value), "{key:?}");
        }
    }
    let cell =
        |wk: &str, period: &str, metric: &str| got[&(wk.into(), period.into(), metric.into())];
    assert_eq!(cell("noord", &now, "plans_new")["value"], 6.0);
    assert_eq!(
        cell("noord", "2024-03", "contacts.huisbezoek")["value"],
        6.0
    );
    assert_eq!(cell("noord", "2024-03", "unique_volunteers")["value"], 6.0);
    assert_eq!(
        cell("west", &now, "plans_new")["suppressed"],
        true,
        "2 plans"
    );
    assert_eq!(
        cell("zuid", "2024-04", "sessions")["suppressed"],
        true,
        "2 sessions"
    );
    assert_eq!(
        cell("noord", "2024-03", "handovers")["suppressed"],
        true,
        "1 household"
    );

    // Quarters and years, JSON and CSV; a higher threshold may be asked, not a lower.
    let q = http::get(
        addr,
        "/api/v1/central/aggregates?period=quarter&min_count=2",
        Some(&w.office_a),
    )
    .await;
    let q: Value = serde_json::from_slice(&q.body).expect("json");
    assert_eq!(q["min_count"], 5, "the server's threshold is a floor");
    assert!(q["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .any(|c| c["wijk"] == "noord"
            && c["period"] == "2024-Q1"
            && c["metric"] == "contacts.huisbezoek"
            && c["value"] == 6.0));
    let y = http::get(
        addr,
        "/api/v1/central/aggregates?period=year&min_count=7",
        Some(&w.office_a),
    )
    .await;
    let y: Value = serde_json::from_slice(&y.body).expect("json");
    assert!(y["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .any(|c| c["wijk"] == "noord"
            && c["period"] == "2024"
            && c["metric"] == "contacts.huisbezoek"
            && c["suppressed"] == true));
    let csv = http::get(
        addr,
        "/api/v1/central/aggregates?period=quarter&format=csv&sep=semicolon",
        Some(&w.office_a),
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv
        .body
        .starts_with(b"\xEF\xBB\xBFwijk;period;metric;value;suppressed\r\n"));
    assert!(
        csv.text()
            .contains("noord;2024-Q1;contacts.huisbezoek;6;false\r\n"),
        "{}",
        csv.text()
    );
    assert_clean("aggregates csv", &csv.text(), &ids);

    // Erasure reaches the feed: the central office is told to drop the record.
    let erased = w.plans[12].0.to_string();
    w.fx.admin(&["erase", &erased, "--by", "admin-1"]);
    let (gone, _, _) = feed(addr, &w.office_a, c2).await;
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0]["erased"], true);
    assert_eq!(gone[0]["wijk"], "west");
    assert!(plans.contains_key(gone[0]["record"].as_str().expect("record")));
    assert!(gone[0].get("household").is_none());

    // Every other role: 403 everywhere; no token: 401.
    let endpoints = [
        "/api/v1/central/feed",
        "/api/v1/central/feed?format=csv",
        "/api/v1/central/aggregates",
        "/api/v1/central/aggregates?format=csv",
        "/dashboard",
        "/dashboard/aggregates.csv",
    ];
    for (token, role) in &w.others {
        for path in endpoints {
            let r = http::get(addr, path, Some(token)).await;
            assert_eq!(r.status, 403, "{role} on {path}: {}", r.text());
            assert_clean("refusal", &r.text(), &ids);
        }
        let form = format!("token={token}");
        let r = http::send(
            addr,
            "POST",
            "/dashboard/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 403, "{role} logging in to the dashboard");
        assert!(r.header("set-cookie").is_none(), "{role} got a session");
    }
    for path in &endpoints[..4] {
        assert_eq!(http::get(addr, path, None).await.status, 401, "{path}");
    }

    // Stable across restarts: the secret is kept server-side.
    let WorldParts {
        fx,
        server,
        office_a,
    } = WorldParts {
        fx: w.fx,
        server: w.server,
        office_a: w.office_a,
    };
    assert!(server.stop(), "clean shutdown");
    let server = fx.start(&[]);
    let (after_restart, _, _) = feed(server.addr, &office_a, 0).await;
    let mut before = plans.clone();
    before.retain(|r, _| r != gone[0]["record"].as_str().unwrap_or_default());
    assert_eq!(
        households(&after_restart),
        before,
        "pseudonyms survive a restart"
    );
    assert!(server.stop());
}

/// Issue 16, item 9: noord's one hand-over of March 2024 is a hidden aggregate cell,
/// and the same recipient's feed does not single that household out: either no record
/// can be it or at least k (5) can, and no combination of a plan record's exported
/// fields occurs fewer than k times (withheld records carry no field at all), and no
/// field group is as fine as a hidden aggregate cell of its metrics.
#[tokio::test]
async fn feed_does_not_single_out_a_hidden_household() {
    let w = seed().await;
    let addr = w.server.addr;
    let r = http::get(
        addr,
        "/api/v1/central/aggregates?period=month",
        Some(&w.office_a),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    let cell = body["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["wijk"] == "noord" && c["period"] == "2024-03" && c["metric"] == "handovers")
        .expect("noord's hand-over cell");
    assert_eq!(cell["suppressed"], true, "one household: hidden");

    let (records, _, _) = feed(addr, &w.office_a, 0).await;
    let plans: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "plan" && r.get("erased").is_none())
        .collect();
    assert_eq!(plans.len(), 13, "every plan has a record");
    // The attack: which records could be the household behind the hidden cell?
    let could_be = plans
        .iter()
        .filter(|r| {
            r.get("withheld").is_none()
                && r["wijk"] == "noord"
                && r["handed_over"] != false
                && matches!(
                    r["handover_month"].as_str(),
                    None | Some("2024-03" | "2024-Q1" | "2024")
                )
        })
        .count();
    assert!(
        could_be == 0 || could_be >= 5,
        "the feed singles out the household behind the hidden cell: {could_be} candidates"
    );
    // k-anonymity of the whole release.
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for r in &plans {
        let mut fields = r.as_object().expect("object").clone();
        if fields.contains_key("withheld") {
            let keys: BTreeSet<&str> = fields.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["seq", "record", "kind", "withheld"]),
                "a withheld record carries nothing else"
            );
            continue;
        }
        for identifier in ["seq", "record", "household"] {
            fields.remove(identifier);
        }
        *classes
            .entry(serde_json::to_string(&fields).expect("json"))
            .or_default() += 1;
    }
    for (class, n) in &classes {
        assert!(*n >= 5, "{n} records share {class}");
    }
    // The feed's counts at its levels are sums of aggregate cells of that period
    // length: no field group of a wijk is as fine as a hidden cell of its metrics.
    let levels = |wijk: &str, group: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["wijk"] == wijk && r["kind"] == "plan")
            .filter_map(|r| r["generalised"][group].as_str().map(str::to_owned))
            .collect()
    };
    let order = ["month", "quarter", "year"];
    for period in order {
        let r = http::get(
            addr,
            &format!("/api/v1/central/aggregates?period={period}"),
            Some(&w.office_a),
        )
        .await;
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        for c in body["cells"].as_array().expect("cells") {
            if c["suppressed"] != true {
                continue;
            }
            let metric = c["metric"].as_str().expect("metric");
            let group = match metric {
                "plans_new" => "created_month",
                "handovers" => "handover",
                m if m.starts_with("contacts.") => "contacts",
                m if m.starts_with("plans_status.") || m.starts_with("goals_") => "changed_month",
                _ => continue,
            };
            let wijk = c["wijk"].as_str().expect("wijk");
            for level in levels(wijk, group) {
                let finer = order.iter().position(|o| *o == level);
                let cell = order.iter().position(|o| *o == period);
                assert!(
                    finer.is_none() || finer > cell,
                    "{wijk}'s {group} at {level} counts the hidden {metric} {}",
                    c["period"]
                );
            }
        }
    }
    // The CSV is made from the same generalised records.
    let csv = http::get(addr, "/api/v1/central/feed?format=csv", Some(&w.office_a)).await;
    assert!(
        !csv.text().contains(",2024-03,"),
        "no month of a plan in the CSV: {}",
        csv.text()
    );
}

struct WorldParts {
    fx: Fixture,
    server: ServerProcess,
    office_a: String,
}

/// The dashboard in Debian's headless Chromium: log in with the token form, one
/// section of rendered charts per wijk, no personal data on the page, an HttpOnly
/// SameSite=Strict session cookie no script can read, the CSV downloads with a BOM;
/// a screenshot is kept under target/test-output/.
#[tokio::test]
async fn dashboard_in_headless_chromium() {
    let w = seed().await;
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = here.join("browser/dashboard.mjs");
    assert!(
        here.join("browser/node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/browser` and `bash scripts/ensure-chromium.sh` first (scripts/test.sh does)"
    );
    let bin = buurtsync_e2e::server::binary();
    let target = bin
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let out = target.join("test-output/central-dashboard");
    let _ = std::fs::remove_dir_all(&out);
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{}", w.server.addr))
        .arg(&w.office_a)
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

    let sections = seen["sections"].as_array().expect("sections");
    let wijken: BTreeSet<&str> = sections.iter().filter_map(|s| s["wijk"].as_str()).collect();
    assert_eq!(wijken, BTreeSet::from(["noord", "west", "zuid"]));
    for s in sections {
        assert_eq!(
            s["charts"], 6,
            "four activity charts and two outcome charts: {s}"
        );
        assert_eq!(s["rendered"], true, "{s}");
    }
    let noord = sections
        .iter()
        .find(|s| s["wijk"] == "noord")
        .expect("noord");
    assert!(noord["bars"].as_u64().unwrap_or(0) >= 3, "{noord}");
    let west = sections.iter().find(|s| s["wijk"] == "west").expect("west");
    assert!(west["suppressed"].as_u64().unwrap_or(0) >= 1, "{west}");
    let text = seen["pageText"].as_str().unwrap_or_default();
    for word in FORBIDDEN {
        assert!(!text.contains(word), "the page shows {word:?}");
    }
    assert_eq!(seen["cookie"]["httpOnly"], true);
    assert_eq!(seen["cookie"]["sameSite"], "Strict");
    assert_eq!(seen["scriptSeesCookie"], false);
    assert_eq!(seen["scriptErrors"], serde_json::json!([]));
    assert_eq!(seen["csvBom"], true);
    let csv = std::fs::read_to_string(seen["csvFile"].as_str().expect("csv path")).expect("csv");
    assert!(csv.starts_with("\u{feff}wijk,period,metric,value,suppressed\r\n"));
    assert!(
        csv.contains("noord,2024-03,contacts.huisbezoek,6,false\r\n"),
        "{csv}"
    );
    for word in FORBIDDEN {
        assert!(!csv.contains(word), "the CSV holds {word:?}");
    }
    let shot = std::fs::metadata(seen["screenshot"].as_str().expect("screenshot")).expect("png");
    assert!(shot.len() > 10_000, "screenshot of {} bytes", shot.len());
}
