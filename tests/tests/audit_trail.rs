//! The audit trail of real traffic: every create, read, write, denial and hand-over of a
//! plan shows up in `buurtsync audit export`, and the chain verifies.

use std::time::Duration;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::server::Fixture;
use sync_core::partition::WijkId;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// A resident asks "who looked at my file": the export names the professional who
/// created and changed the plan, the colleague who received it, the volunteer who was
/// refused, the hand-over and the consulent who then read it (through the plan's
/// hand-over copy, whose entries the plan's export includes).
#[tokio::test]
async fn who_looked_at_my_file() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "consulent-1"]);
    fx.admin(&["grant", "consulent-1", "consulent"]);
    let consulent_token = fx.token("consulent-1");
    let server = fx.start(&[]);

    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let id = prof
        .add_document(
            schema::new_document(&Plan::new(WijkId::new("noord").expect("wijk"), "HH-A"))
                .expect("plan"),
        )
        .await;
    assert!(prof.sync_acked(id).await);
    let mut colleague = Client::connect("colleague", &server.url(), &t.prof2_noord)
        .await
        .expect("c");
    assert!(colleague.fetch(id).await);
    let mut vol = Client::connect("vol", &server.url(), &t.vol_noord)
        .await
        .expect("vol");
    assert!(!vol.fetch(id).await);
    prof.edit(id, |d| {
        schema::update::<Plan>(d, |p| {
            p.goals.push(Goal::new(Leefdomein::Financien, "budgetplan"));
            p.handover.requested = true;
        })
        .expect("edit");
    })
    .await;
    assert!(prof.sync_acked(id).await);
    // The consulent reads the plan's hand-over copy (issue 16, item 5); the plan's
    // trail includes the copy's entries.
    let copy = buurtsync_e2e::http::handover_copy(server.addr, &consulent_token).await;
    let mut consulent = Client::connect("gemeente", &server.url(), &consulent_token)
        .await
        .expect("consulent");
    assert!(consulent.fetch(copy).await);
    colleague.pump_for(Duration::from_millis(300)).await;

    let rows = fx.admin(&[
        "audit",
        "export",
        "--document",
        &id.to_string(),
        "--format",
        "json",
    ]);
    let rows = rows.as_array().expect("rows");
    let has = |user: &str, action: &str| {
        rows.iter()
            .any(|r| r["user"] == user && r["action"] == action && r["partition"] == "noord/plan")
    };
    assert!(has("prof-noord", "create"), "{rows:#?}");
    assert!(has("prof-noord", "write"), "{rows:#?}");
    assert!(has("prof-noord", "hand_over"), "{rows:#?}");
    assert!(has("prof2-noord", "read"), "{rows:#?}");
    assert!(has("vol-noord", "denied"), "{rows:#?}");
    assert!(has("consulent-1", "read"), "{rows:#?}");
    let copy_text = copy.to_string();
    assert!(
        rows.iter().any(|r| r["action"] == "create"
            && r["document"] == copy_text.as_str()
            && r["detail"] == format!("hand-over copy of {id}").as_str()),
        "{rows:#?}"
    );
    assert!(!rows
        .iter()
        .any(|r| r["user"] == "vol-noord" && r["action"] == "read"));
    // Devices are named by token id and announced peerId; no content in the trail.
    assert!(rows.iter().all(|r| !r.to_string().contains("budgetplan")));
    assert!(rows.iter().any(|r| r["device"]
        .as_str()
        .is_some_and(|d| d.ends_with("/colleague"))));

    let report = fx.admin(&["audit", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
}

/// Reads are audited per connection, document and minute (issue 18, item 3): a
/// colleague who receives a plan three times gets one opening entry before the first
/// delivery and, when the connection ends, one summary with the first and last
/// delivery (to the second) and how often. Altering or removing that summary fails
/// `audit verify`.
#[tokio::test]
async fn reads_are_audited_per_connection_and_minute() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let id = prof
        .add_document(
            schema::new_document(&Plan::new(WijkId::new("noord").expect("wijk"), "HH-B"))
                .expect("plan"),
        )
        .await;
    assert!(prof.sync_acked(id).await);
    let mut colleague = Client::connect("colleague", &server.url(), &t.prof2_noord)
        .await
        .expect("colleague");
    assert!(colleague.fetch(id).await);
    for goal in ["werk", "wonen"] {
        prof.edit(id, |d| {
            schema::update::<Plan>(d, |p| {
                p.goals.push(Goal::new(Leefdomein::Financien, goal));
            })
            .expect("edit");
        })
        .await;
        assert!(prof.sync_acked(id).await);
        assert!(
            colleague
                .pump_until(Duration::from_secs(10), |c| c
                    .json(id)
                    .to_string()
                    .contains(goal))
                .await
        );
    }
    colleague.disconnect().await;

    let export = || {
        fx.admin(&[
            "audit",
            "export",
            "--document",
            &id.to_string(),
            "--format",
            "json",
        ])
    };
    let reads = |rows: &serde_json::Value| -> Vec<serde_json::Value> {
        rows.as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["user"] == "prof2-noord" && r["action"] == "read")
            .cloned()
            .collect()
    };
    // The summary is written when the server sees the connection end.
    let mut rows = export();
    for _ in 0..100 {
        if reads(&rows).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        rows = export();
    }
    let reads = reads(&rows);
    assert_eq!(reads.len(), 2, "{rows:#?}");
    let detail = |r: &serde_json::Value| r["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail(&reads[0]).starts_with("window=open first="),
        "{reads:#?}"
    );
    let summary = detail(&reads[1]);
    let field = |name: &str| {
        summary
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(summary.starts_with("window=closed "), "{summary}");
    // Three deliveries with content: the fetch and the two goals.
    assert_eq!(field("count="), "3", "{summary}");
    let (first, last) = (field("first="), field("last="));
    assert!(first.ends_with('Z') && first.len() == 20, "{summary}");
    assert!(last.ends_with('Z') && first <= last, "{summary}");
    for r in &reads {
        assert!(r["device"]
            .as_str()
            .is_some_and(|d| d.ends_with("/colleague")));
        assert_eq!(r["partition"], "noord/plan");
    }
    assert_eq!(fx.admin(&["audit", "verify"])["ok"], true);

    // Someone with the file alters the summary, then removes it: both are found.
    drop(server);
    let seq = reads[1]["seq"].as_i64().expect("seq");
    let db = fx.db_url.trim_start_matches("sqlite://").to_owned();
    let sql = |statement: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(format!(
                "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete; {statement}"
            ))
            .output()
            .expect("sqlite3 (the SQLite command-line tool) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sql(&format!(
        "UPDATE audit_log SET detail = replace(detail, 'count=3', 'count=1') WHERE seq = {seq};"
    ));
    assert!(!fx.admin_raw(&["audit", "verify"]).status.success());
    sql(&format!(
        "UPDATE audit_log SET detail = replace(detail, 'count=1', 'count=3') WHERE seq = {seq};"
    ));
    assert_eq!(fx.admin(&["audit", "verify"])["ok"], true);
    sql(&format!("DELETE FROM audit_log WHERE seq = {seq};"));
    assert!(!fx.admin_raw(&["audit", "verify"]).status.success());
}
