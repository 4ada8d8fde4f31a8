//! The connect-time summary (buurtsync extension, docs/protocol.md): a device that
//! announced the capability sends the heads of the documents it holds; the server
//! answers from its catalog which are in sync and syncs only the others, keeps the
//! in-sync ones watched for live changes, and treats every id exactly as a `request`
//! would for access and audit.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use automerge::ChangeHash;
use buurtsync_e2e::client::{Client, RawPeer, Seen};
use buurtsync_e2e::server::Fixture;
use buurtsync_e2e::WAIT;
use ciborium::Value;
use sync_core::protocol::{DocumentId, Message, PeerMetadata};
use sync_core::schema::{self, Goal, Leefdomein, Plan};

fn add_goal(doc: &mut automerge::Automerge, text: &str) {
    schema::update::<Plan>(doc, |p| p.goals.push(Goal::new(Leefdomein::Wonen, text)))
        .expect("edit");
}

/// Hex heads the server's store holds (as `buurtsync doc info` reads them).
fn stored_heads(fx: &Fixture, id: DocumentId) -> Vec<String> {
    let info = fx.doc_info(&id.to_string());
    let mut heads: Vec<String> = info["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .map(|h| h.as_str().expect("hex").to_owned())
        .collect();
    heads.sort();
    heads
}

/// A device that holds `n` plans created by `owner` and synced; offline afterwards.
async fn device_holding(
    url: &str,
    token: &str,
    owner: &mut Client,
    n: usize,
) -> (Client, Vec<DocumentId>) {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(owner.create_plan("noord", &format!("HH-S{i}")).await);
    }
    let mut dev = Client::connect_with_summary("dev", url, token)
        .await
        .expect("dev");
    for id in &ids {
        assert!(dev.fetch(*id).await, "dev could not fetch {id}");
    }
    // Let the server settle (and acknowledge) every session before going offline.
    dev.pump_for(Duration::from_millis(300)).await;
    dev.disconnect().await;
    (dev, ids)
}

/// A reconnecting device holding 12 plans of which 4 changed (3 on the server, 1 on
/// the device) gets sync traffic for those 4 only, is told the other 8 are in sync,
/// and ends with the server's heads everywhere.
#[tokio::test]
async fn summary_syncs_only_the_changed_documents() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let (mut dev, ids) = device_holding(&server.url(), &t.prof2_noord, &mut owner, 12).await;

    // Creation, append and compaction all keep the catalog's heads equal to the store's.
    for id in &ids {
        let info = fx.doc_info(&id.to_string());
        let mut hex = stored_heads(&fx, *id);
        hex.sort();
        assert_eq!(
            info["catalog_heads"],
            hex.join(","),
            "catalog heads of {id}"
        );
    }

    let server_changed = &ids[..3];
    for (i, id) in server_changed.iter().enumerate() {
        owner
            .edit(*id, |d| add_goal(d, &format!("nieuw {i}")))
            .await;
        assert!(owner.sync_acked(*id).await);
    }
    let device_changed = ids[3];
    dev.edit(device_changed, |d| add_goal(d, "onderweg")).await;

    dev.reconnect().await.expect("reconnect");
    let all: HashSet<DocumentId> = ids.iter().copied().collect();
    let changed: HashSet<DocumentId> = ids[..4].iter().copied().collect();
    assert!(
        dev.pump_until(WAIT, |c| c.summary_answers == 1
            && changed.iter().all(|id| c.is_acked(*id)))
            .await,
        "summary device did not catch up: {:?}",
        dev.notices
    );
    let expected_in_sync: HashSet<DocumentId> = all.difference(&changed).copied().collect();
    assert_eq!(dev.in_sync, expected_in_sync, "in-sync answer");
    let synced: HashSet<DocumentId> = dev.sync_received.keys().copied().collect();
    assert_eq!(
        synced, changed,
        "sync traffic for other than the changed documents"
    );
    assert!(dev.errors().is_empty(), "{:?}", dev.notices);
    for id in &ids {
        assert_eq!(dev.heads_hex(*id), stored_heads(&fx, *id), "heads of {id}");
    }
    // The device's own offline change reached the server and the owner.
    owner.push(device_changed).await;
    assert!(
        owner
            .pump_until(WAIT, |c| c.heads_hex(device_changed)
                == dev.heads_hex(device_changed))
            .await
    );
}

/// A document the summary found in sync (and so did not load) still receives a
/// change another device makes afterwards.
#[tokio::test]
async fn watched_document_receives_later_changes() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let (mut dev, ids) = device_holding(&server.url(), &t.prof2_noord, &mut owner, 2).await;
    dev.reconnect().await.expect("reconnect");
    assert!(dev.pump_until(WAIT, |c| c.summary_answers == 1).await);
    assert_eq!(dev.in_sync, ids.iter().copied().collect::<HashSet<_>>());
    assert!(
        dev.sync_received.is_empty(),
        "in-sync documents got sync traffic"
    );

    owner.edit(ids[1], |d| add_goal(d, "live na summary")).await;
    assert!(owner.sync_acked(ids[1]).await);
    let want = owner.heads_hex(ids[1]);
    assert!(
        dev.pump_until(WAIT, |c| c.heads_hex(ids[1]) == want).await,
        "live change did not reach the watched document"
    );
    // The device can write to it too (it is opened on demand).
    dev.edit(ids[0], |d| add_goal(d, "van het apparaat")).await;
    assert!(dev.sync_acked(ids[0]).await, "{:?}", dev.notices);
    assert_eq!(dev.heads_hex(ids[0]), stored_heads(&fx, ids[0]));
}

/// Naming a plan of another wijk or an unknown id in a summary gets `doc-unavailable`
/// for both, neither is called in sync, and the foreign plan's denial is audited
/// exactly like a `request`'s.
#[tokio::test]
async fn summary_of_foreign_and_unknown_ids_is_unavailable_and_audited() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut zuid = Client::connect("zuid", &server.url(), &t.prof_zuid)
        .await
        .expect("zuid");
    let foreign = zuid.create_plan("zuid", "HH-Z").await;
    let foreign_heads = zuid.docs[&foreign].get_heads();
    let unknown = DocumentId::random();

    // The request path, for comparison.
    let mut asker = Client::connect("asker", &server.url(), &t.prof_noord)
        .await
        .expect("asker");
    assert!(!asker.fetch(foreign).await);

    let mut peer = RawPeer::open(&server.url(), &t.prof_noord).await;
    peer.send(&Message::Join {
        sender_id: "summariser".into(),
        peer_metadata: Some(PeerMetadata::default().with_summary()),
        supported_protocol_versions: vec!["1".into()],
    })
    .await;
    assert!(matches!(
        peer.next().await,
        Seen::Message(Message::Peer { .. })
    ));
    let documents: BTreeMap<DocumentId, Vec<ChangeHash>> = [
        (foreign, foreign_heads),
        (unknown, vec![ChangeHash([7; 32])]),
    ]
    .into_iter()
    .collect();
    peer.send(&Message::Summary {
        sender_id: "summariser".into(),
        target_id: "server".into(),
        documents,
    })
    .await;
    let mut unavailable = HashSet::new();
    let mut answered = None;
    while unavailable.len() < 2 || answered.is_none() {
        match peer.next().await {
            Seen::Message(Message::DocUnavailable { document_id, .. }) => {
                unavailable.insert(document_id);
            }
            Seen::Message(Message::SummaryAnswer { in_sync, .. }) => answered = Some(in_sync),
            Seen::Message(other) => panic!("unexpected {other:?}"),
            other => panic!("expected answers, saw {other:?}"),
        }
    }
    assert_eq!(unavailable, [foreign, unknown].into_iter().collect());
    assert_eq!(answered, Some(vec![]), "nothing is in sync");

    let rows = fx.admin(&[
        "audit",
        "export",
        "--document",
        &foreign.to_string(),
        "--format",
        "json",
    ]);
    let denials: Vec<&serde_json::Value> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["user"] == "prof-noord" && r["action"] == "denied")
        .collect();
    assert_eq!(denials.len(), 2, "one denial per attempt: {rows:#}");
    assert_eq!(denials[0]["detail"], denials[1]["detail"], "{rows:#}");
    assert_eq!(denials[0]["partition"], denials[1]["partition"], "{rows:#}");
    assert!(
        denials[1]["device"]
            .as_str()
            .is_some_and(|d| d.ends_with("/summariser")),
        "{rows:#}"
    );
}

/// Removing a grant ends a watched document like an open one: `doc-unavailable`,
/// and later changes no longer reach the device.
#[tokio::test]
async fn revoked_grant_stops_watched_documents() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let (mut dev, ids) = device_holding(&server.url(), &t.prof2_noord, &mut owner, 1).await;
    let id = ids[0];
    dev.reconnect().await.expect("reconnect");
    assert!(dev.pump_until(WAIT, |c| c.in_sync.contains(&id)).await);

    fx.admin(&["ungrant", "prof2-noord", "professional", "--wijk", "noord"]);
    assert!(
        dev.pump_until(WAIT, |c| c.unavailable.contains(&id)).await,
        "revocation did not reach the watched document"
    );
    let before = dev.heads_hex(id);
    owner.edit(id, |d| add_goal(d, "na intrekking")).await;
    assert!(owner.sync_acked(id).await);
    dev.pump_for(Duration::from_millis(700)).await;
    assert_eq!(
        dev.heads_hex(id),
        before,
        "a change reached the revoked device"
    );
    assert!(!dev.sync_received.contains_key(&id));
}

/// A client that did not announce the capability sees automerge-repo's `peer`
/// unchanged and never a summary answer; a summary it sends anyway is refused with
/// a clear error.
#[tokio::test]
async fn clients_that_did_not_ask_never_see_the_extension() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let id = owner.create_plan("noord", "HH-P").await;
    let metadata = owner.server_metadata.clone().expect("peer metadata");
    assert_eq!(metadata.capabilities, None, "capabilities sent unasked");

    let summariser = Client::connect_with_summary("s", &server.url(), &t.prof2_noord)
        .await
        .expect("summariser");
    let caps = summariser
        .server_metadata
        .clone()
        .and_then(|m| m.capabilities)
        .expect("capabilities answered");
    assert_eq!(caps.get("summary"), Some(&1));

    let heads = owner.docs[&id].get_heads();
    owner
        .send(&Message::Summary {
            sender_id: "owner".into(),
            target_id: "server".into(),
            documents: [(id, heads)].into_iter().collect(),
        })
        .await;
    assert!(
        owner
            .pump_until(WAIT, |c| c
                .errors()
                .iter()
                .any(|e| e.contains("capability")))
            .await,
        "{:?}",
        owner.notices
    );
    owner.edit(id, |d| add_goal(d, "nog steeds gewoon")).await;
    assert!(owner.sync_acked(id).await);
    assert!(
        !owner.seen_types.contains(&"buurtsync-summary-answer"),
        "{:?}",
        owner.seen_types
    );
}

/// Malformed summaries get an `error` naming the problem, never a panic, and the
/// connection keeps working.
#[tokio::test]
async fn malformed_summaries_are_clear_errors() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let id = owner.create_plan("noord", "HH-M").await;
    let mut peer = RawPeer::open(&server.url(), &t.prof_noord).await;
    peer.send(&Message::Join {
        sender_id: "m".into(),
        peer_metadata: Some(PeerMetadata::default().with_summary()),
        supported_protocol_versions: vec!["1".into()],
    })
    .await;
    assert!(matches!(
        peer.next().await,
        Seen::Message(Message::Peer { .. })
    ));

    let frame = |documents: Value| {
        let map = Value::Map(vec![
            (
                Value::Text("type".into()),
                Value::Text("buurtsync-summary".into()),
            ),
            (Value::Text("senderId".into()), Value::Text("m".into())),
            (Value::Text("targetId".into()), Value::Text("server".into())),
            (Value::Text("documents".into()), documents),
        ]);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&map, &mut out).expect("cbor");
        out
    };
    let text = |s: &str| Value::Text(s.into());
    let too_many = Value::Map(
        (0..1001)
            .map(|_| {
                (
                    text(&DocumentId::random().to_string()),
                    Value::Array(vec![]),
                )
            })
            .collect(),
    );
    for (bad, expect) in [
        (text("not a map"), "documents"),
        (
            Value::Map(vec![(text("nope"), Value::Array(vec![]))]),
            "documentId",
        ),
        (
            Value::Map(vec![(
                text(&id.to_string()),
                Value::Array(vec![text("not-a-hash")]),
            )]),
            "change hashes",
        ),
        (too_many, "more than 1000"),
    ] {
        peer.send_raw(frame(bad)).await;
        let message = peer.expect_error().await;
        assert!(message.contains(expect), "{message:?} lacks {expect:?}");
    }
    // Still serving: a valid summary is answered.
    let heads = owner.docs[&id].get_heads();
    peer.send(&Message::Summary {
        sender_id: "m".into(),
        target_id: "server".into(),
        documents: [(id, heads)].into_iter().collect(),
    })
    .await;
    loop {
        match peer.next().await {
            Seen::Message(Message::SummaryAnswer { in_sync, .. }) => {
                assert_eq!(in_sync, vec![id]);
                break;
            }
            Seen::Message(_) => {}
            other => panic!("no answer after malformed frames: {other:?}"),
        }
    }
}
