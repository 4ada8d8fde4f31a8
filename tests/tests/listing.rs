//! Discovery: `GET /api/v1/documents` lists exactly the documents the caller may read.

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use sync_core::partition::WijkId;
use sync_core::schema::{self, Activiteit, Plan};

async fn list(addr: std::net::SocketAddr, token: &str, query: &str) -> Vec<String> {
    let (status, body) = http::request(
        addr,
        "GET",
        &format!("/api/v1/documents{query}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut ids: Vec<String> = value["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The listing obeys the access policy: volunteers get no plan ids, other wijken get
/// nothing, a consulent only hand-over copies; filters and the `since` cursor work.
#[tokio::test]
async fn listing_obeys_the_access_policy() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "consulent-1"]);
    fx.admin(&["grant", "consulent-1", "consulent"]);
    let consulent = fx.token("consulent-1");
    let server = fx.start(&[]);
    let addr = server.addr;

    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let plan = prof.create_plan("noord", "HH-L1").await;
    let act = prof
        .add_document(
            schema::new_document(&Activiteit::new(
                WijkId::new("noord").expect("wijk"),
                "Taalcafé",
            ))
            .expect("act"),
        )
        .await;
    assert!(prof.sync_acked(act).await);
    let (plan_s, act_s) = (plan.to_string(), act.to_string());
    let mut both = vec![plan_s.clone(), act_s.clone()];
    both.sort();

    assert_eq!(list(addr, &t.prof_noord, "").await, both);
    assert_eq!(
        list(addr, &t.prof_noord, "?wijk=noord&kind=plan").await,
        vec![plan_s.clone()]
    );
    assert_eq!(
        list(addr, &t.vol_noord, "").await,
        vec![act_s.clone()],
        "volunteer saw a plan id"
    );
    assert_eq!(
        list(addr, &t.vol_noord, "?kind=plan").await,
        Vec::<String>::new()
    );
    assert!(
        list(addr, &t.prof_zuid, "").await.is_empty(),
        "other wijk listed noord documents"
    );
    assert!(list(addr, &consulent, "").await.is_empty());
    assert!(list(addr, &t.prof_noord, "?since=99999999999")
        .await
        .is_empty());

    prof.edit(plan, |d| {
        schema::update::<Plan>(d, |p| p.handover.requested = true).expect("edit");
    })
    .await;
    assert!(prof.sync_acked(plan).await);
    // The consulent is listed the plan's hand-over copy, never the plan (issue 16,
    // item 5); the team is listed the plan, never the copy.
    let copies = list(addr, &consulent, "").await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_ne!(copies[0], plan_s);
    assert_eq!(
        list(addr, &t.prof_noord, "?kind=plan").await,
        vec![plan_s],
        "the team was listed the hand-over copy"
    );

    let (status, _) = http::request(addr, "GET", "/api/v1/documents", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = http::request(
        addr,
        "GET",
        "/api/v1/documents?kind=geheim",
        Some(&t.prof_noord),
        None,
    )
    .await;
    assert_eq!(status, 400);
}

/// One listing: ids with their `changed_at`, and the response's `now` and `cursor`.
async fn listing(
    addr: std::net::SocketAddr,
    token: &str,
    query: &str,
) -> (Vec<(String, i64)>, i64, i64) {
    let (status, body) = http::request(
        addr,
        "GET",
        &format!("/api/v1/documents{query}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut docs: Vec<(String, i64)> = value["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| {
            (
                d["id"].as_str().expect("id").to_owned(),
                d["changed_at"].as_i64().expect("changed_at"),
            )
        })
        .collect();
    docs.sort();
    let now = value["now"].as_i64().expect("now");
    let cursor = value["cursor"].as_i64().expect("cursor");
    (docs, now, cursor)
}

fn ids(docs: &[(String, i64)]) -> Vec<String> {
    docs.iter().map(|(id, _)| id.clone()).collect()
}

/// `since` returns only documents created or handed over at or after it (per reader:
/// a consulent gets the new hand-over copy, a volunteer no plans), the full
/// listing still returns everything readable, and `cursor` is never after `now`.
#[tokio::test]
async fn incremental_listing_returns_what_changed_since_the_cursor() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "consulent-1"]);
    fx.admin(&["grant", "consulent-1", "consulent"]);
    let consulent = fx.token("consulent-1");
    let server = fx.start(&[]);
    let addr = server.addr;
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let old_plan = prof.create_plan("noord", "HH-I1").await;
    let old_act = prof
        .add_document(
            schema::new_document(&Activiteit::new(
                WijkId::new("noord").expect("wijk"),
                "Repaircafé",
            ))
            .expect("act"),
        )
        .await;
    assert!(prof.sync_acked(old_act).await);
    let mut zuid = Client::connect("zuid", &server.url(), &t.prof_zuid)
        .await
        .expect("zuid");
    let other_wijk = zuid.create_plan("zuid", "HH-I2").await;

    let (before, now, cursor) = listing(addr, &t.prof_noord, "").await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(cursor <= now);
    // A `since` after everything so far: wait (bounded) for the server's clock to pass
    // it, so what follows is stamped later. A wait for the clock, not a timed assertion.
    let since = before.iter().map(|(_, at)| *at).max().expect("two") + 1;
    let deadline = std::time::Instant::now() + buurtsync_e2e::WAIT;
    while listing(addr, &t.prof_noord, "").await.1 < since {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock did not move"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let query = format!("?since={since}");
    assert!(listing(addr, &t.prof_noord, &query).await.0.is_empty());

    let new_plan = prof.create_plan("noord", "HH-I3").await;
    let (changed, _, _) = listing(addr, &t.prof_noord, &query).await;
    assert_eq!(ids(&changed), vec![new_plan.to_string()]);
    assert!(changed.iter().all(|(_, at)| *at >= since));

    prof.edit(old_plan, |d| {
        schema::update::<Plan>(d, |p| p.handover.requested = true).expect("edit");
    })
    .await;
    assert!(prof.sync_acked(old_plan).await);
    let mut expected = vec![old_plan.to_string(), new_plan.to_string()];
    expected.sort();
    assert_eq!(ids(&listing(addr, &t.prof_noord, &query).await.0), expected);
    let copies = ids(&listing(addr, &consulent, &query).await.0);
    assert_eq!(
        copies.len(),
        1,
        "the consulent's incremental listing lacks the new hand-over copy"
    );
    assert_ne!(copies[0], old_plan.to_string());
    assert!(
        listing(addr, &t.vol_noord, &query).await.0.is_empty(),
        "a volunteer's listing named plans"
    );
    assert!(
        !ids(&listing(addr, &t.prof_zuid, "").await.0).contains(&old_plan.to_string()),
        "another wijk listed a noord plan"
    );

    // Without `since`: the whole readable set, old and new.
    let mut all = vec![
        old_plan.to_string(),
        old_act.to_string(),
        new_plan.to_string(),
    ];
    all.sort();
    assert_eq!(ids(&listing(addr, &t.prof_noord, "").await.0), all);
    assert_eq!(
        ids(&listing(addr, &t.prof_zuid, "").await.0),
        vec![other_wijk.to_string()]
    );
}
