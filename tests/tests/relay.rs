//! The relay end to end: offline edits merge, live changes fan out, and everything
//! acknowledged survives a restart — through the real binary, websocket and SQLite file.

use buurtsync_e2e::client::{converge, Client};
use buurtsync_e2e::server::Fixture;
use sync_core::partition::WijkId;
use sync_core::schema::{self, ContactKind, ContactMoment, Date, Goal, Leefdomein, Plan};

fn noord() -> WijkId {
    WijkId::new("noord").expect("wijk")
}

fn date(s: &str) -> Date {
    Date::parse(s).expect("date")
}

fn add_goal_and_contact(doc: &mut automerge::Automerge, goal: &str, contact: &str) {
    schema::update::<Plan>(doc, |p| {
        p.goals.push(Goal::new(Leefdomein::Financien, goal));
        p.contacts.push(ContactMoment::new(
            date("2026-11-20"),
            ContactKind::Huisbezoek,
            contact,
        ));
    })
    .expect("edit plan");
}

fn goals_and_contacts(
    client: &Client,
    id: sync_core::protocol::DocumentId,
) -> (Vec<String>, Vec<String>) {
    let plan = Plan::read(&client.docs[&id]).expect("valid plan");
    let mut goals: Vec<String> = plan
        .goals
        .iter()
        .map(|g| g.description.as_str().to_owned())
        .collect();
    let mut contacts: Vec<String> = plan
        .contacts
        .iter()
        .map(|c| c.summary.as_str().to_owned())
        .collect();
    goals.sort();
    contacts.sort();
    (goals, contacts)
}

/// Two professionals edit the same plan offline during separate huisbezoeken; after
/// reconnecting both keep every goal and note, and the server stored exactly that.
#[tokio::test]
async fn offline_edits_merge_through_the_server() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut a = Client::connect("device-a", &server.url(), &t.prof_noord)
        .await
        .expect("a connects");
    let mut b = Client::connect("device-b", &server.url(), &t.prof2_noord)
        .await
        .expect("b connects");

    let doc = schema::new_document(&Plan::new(noord(), "HH-0001")).expect("plan");
    let id = a.add_document(doc).await;
    assert!(
        a.sync_acked(id).await,
        "server never acknowledged the new plan: {:?}",
        a.notices
    );
    assert!(
        b.fetch(id).await,
        "b could not fetch the plan: {:?}",
        b.notices
    );

    a.disconnect().await;
    b.disconnect().await;
    a.edit(id, |d| {
        add_goal_and_contact(d, "Schulden in kaart brengen", "Keukentafelgesprek A")
    })
    .await;
    b.edit(id, |d| {
        add_goal_and_contact(d, "Dagbesteding vinden", "Keukentafelgesprek B")
    })
    .await;
    assert_ne!(
        a.heads_hex(id),
        b.heads_hex(id),
        "offline edits must differ before the merge"
    );

    a.reconnect().await.expect("a reconnects");
    b.reconnect().await.expect("b reconnects");
    assert!(
        converge(&mut [&mut a, &mut b], id).await,
        "did not converge: {:?} {:?}",
        a.notices,
        b.notices
    );

    let expected = (
        vec![
            "Dagbesteding vinden".to_string(),
            "Schulden in kaart brengen".to_string(),
        ],
        vec![
            "Keukentafelgesprek A".to_string(),
            "Keukentafelgesprek B".to_string(),
        ],
    );
    assert_eq!(goals_and_contacts(&a, id), expected);
    assert_eq!(goals_and_contacts(&b, id), expected);

    // The server's stored document has exactly the clients' heads...
    let info = fx.doc_info(&id.to_string());
    let mut stored: Vec<String> = info["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .map(|h| h.as_str().expect("hex").to_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, a.heads_hex(id));
    assert_eq!(info["wijk"], "noord");
    assert_eq!(info["kind"], "plan");
    // ...and a fresh device receives that same content.
    let mut c = Client::connect("device-c", &server.url(), &t.prof_noord)
        .await
        .expect("c connects");
    assert!(c.fetch(id).await);
    assert!(
        c.pump_until(buurtsync_e2e::WAIT, |c| c.heads_hex(id) == stored)
            .await
    );
    assert_eq!(c.json(id), a.json(id));
}

/// A change from one connected device reaches another connected device without a
/// reconnect, and the writer gets a durability acknowledgement.
#[tokio::test]
async fn live_changes_fan_out() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut a = Client::connect("a", &server.url(), &t.prof_noord)
        .await
        .expect("a");
    let mut b = Client::connect("b", &server.url(), &t.prof2_noord)
        .await
        .expect("b");
    let id = a.create_plan("noord", "HH-0002").await;
    assert!(b.fetch(id).await);

    for round in 0..3 {
        let goal = format!("Doel {round}");
        let g = goal.clone();
        a.edit(id, move |d| add_goal_and_contact(d, &g, "contact"))
            .await;
        assert!(a.sync_acked(id).await, "round {round}: no ack");
        let arrived = b
            .pump_until(buurtsync_e2e::WAIT, |b| {
                Plan::read(&b.docs[&id])
                    .map(|p| p.goals.iter().any(|x| x.description.as_str() == goal))
                    .unwrap_or(false)
            })
            .await;
        assert!(arrived, "round {round}: change did not reach b live");
    }
    assert_eq!(a.heads_hex(id), b.heads_hex(id));
}

/// Stop the server (SIGKILL, then SIGTERM) after clients synced, start it again on the
/// same file: everything acknowledged is there.
#[tokio::test]
async fn acknowledged_changes_survive_restarts() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut a = Client::connect("a", &server.url(), &t.prof_noord)
        .await
        .expect("a");
    let id = a
        .add_document(schema::new_document(&Plan::new(noord(), "HH-0003")).expect("plan"))
        .await;
    for i in 0..20 {
        let goal = format!("Doel {i}");
        a.edit(id, move |d| add_goal_and_contact(d, &goal, "contact"))
            .await;
        assert!(a.sync_acked(id).await, "edit {i} not acknowledged");
    }
    let acked = a.heads_hex(id);
    server.kill();

    let server = fx.start(&[]);
    let mut c = Client::connect("c", &server.url(), &t.prof_noord)
        .await
        .expect("c");
    assert!(
        c.fetch(id).await,
        "plan lost after SIGKILL: {:?}",
        c.notices
    );
    assert!(
        c.pump_until(buurtsync_e2e::WAIT, |c| c.heads_hex(id) == acked)
            .await
    );
    assert_eq!(goals_and_contacts(&c, id).0.len(), 20);

    // A graceful stop exits cleanly and keeps everything too.
    a.set_url(&server.url());
    a.reconnect().await.expect("a reconnects");
    a.edit(id, |d| add_goal_and_contact(d, "Na herstart", "contact"))
        .await;
    assert!(a.sync_acked(id).await);
    let acked = a.heads_hex(id);
    a.disconnect().await;
    c.disconnect().await;
    assert!(server.stop(), "SIGTERM did not give a clean exit");
    let server = fx.start(&[]);
    let mut d = Client::connect("d", &server.url(), &t.prof_noord)
        .await
        .expect("d");
    assert!(d.fetch(id).await);
    assert!(
        d.pump_until(buurtsync_e2e::WAIT, |d| d.heads_hex(id) == acked)
            .await
    );
}
