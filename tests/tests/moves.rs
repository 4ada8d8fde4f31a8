//! Wijk move (verhuizing): a coordinator moves a plan; it reappears as a new document
//! in the target wijk and the old one is erased and purged from old-wijk devices.

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use buurtsync_e2e::WAIT;
use serde_json::json;
use sync_core::partition::WijkId;
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// Only a coordinator of the plan's wijk may move it; the move creates the current
/// state in the target wijk, erases the old document and old-wijk devices purge it.
#[tokio::test]
async fn coordinator_moves_a_plan_to_another_wijk() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "coord-noord"]);
    fx.admin(&["grant", "coord-noord", "coordinator", "--wijk", "noord"]);
    let coordinator = fx.token("coord-noord");
    let server = fx.start(&[]);

    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let mut plan = Plan::new(WijkId::new("noord").expect("wijk"), "HH-M1");
    plan.goals
        .push(Goal::new(Leefdomein::Wonen, "Passende woning in zuid"));
    let id = prof
        .add_document(schema::new_document(&plan).expect("plan"))
        .await;
    assert!(prof.sync_acked(id).await);
    let path = format!("/api/v1/documents/{id}/move");
    let body = json!({"wijk": "zuid"});

    // A professional, a token of the other wijk, no token, a missing id: refused, and
    // denied looks like missing.
    for token in [Some(t.prof_noord.as_str()), Some(t.prof_zuid.as_str())] {
        let (status, _) = http::request(server.addr, "POST", &path, token, Some(&body)).await;
        assert_eq!(status, 404, "move allowed for a non-coordinator");
    }
    let (status, _) = http::request(server.addr, "POST", &path, None, Some(&body)).await;
    assert_eq!(status, 401);
    let missing = format!("/api/v1/documents/{}/move", DocumentId::random());
    let (status, _) = http::request(
        server.addr,
        "POST",
        &missing,
        Some(&coordinator),
        Some(&body),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        fx.doc_info(&id.to_string())["wijk"],
        "noord",
        "a refused move changed something"
    );

    let (status, answer) =
        http::request(server.addr, "POST", &path, Some(&coordinator), Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let new_id: DocumentId = answer["new"].as_str().expect("new id").parse().expect("id");
    assert_eq!(answer["old"], id.to_string());

    // Old wijk devices purge it; the old document is gone for good.
    assert!(
        prof.pump_until(WAIT, |c| c.unavailable.contains(&id)).await,
        "old-wijk device not told to purge"
    );
    assert!(!fx
        .admin_raw(&["doc", "info", &id.to_string()])
        .status
        .success());
    assert!(
        !prof.fetch(new_id).await,
        "noord professional reads the moved plan"
    );

    // The zuid professional has it, with its content and the new partition.
    let info = fx.doc_info(&new_id.to_string());
    assert_eq!(
        (info["wijk"].as_str(), info["kind"].as_str()),
        (Some("zuid"), Some("plan"))
    );
    let mut zuid = Client::connect("zuid", &server.url(), &t.prof_zuid)
        .await
        .expect("zuid");
    assert!(zuid.fetch(new_id).await);
    let moved = Plan::read(&zuid.docs[&new_id]).expect("plan");
    assert_eq!(moved.meta.wijk.as_str(), "zuid");
    assert_eq!(moved.household.pseudonym, "HH-M1");
    assert_eq!(
        moved.goals[0].description.as_str(),
        "Passende woning in zuid"
    );
}
