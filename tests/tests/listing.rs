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
/// nothing, a consulent only handed-over plans; filters and the `since` cursor work.
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
    assert_eq!(list(addr, &consulent, "").await, vec![plan_s]);

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
