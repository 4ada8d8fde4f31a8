//! The attack suite: hostile peers over real websockets against a real server. Each
//! case asserts that nothing of another partition leaks.

use std::time::Duration;

use automerge::sync::SyncDoc;
use buurtsync_e2e::client::{Client, RawPeer, Seen};
use buurtsync_e2e::server::Fixture;
use buurtsync_e2e::WAIT;
use sync_core::protocol::{DocumentId, HeadsAtTime, Message, PeerMetadata};
use sync_core::schema::{self, Plan};

fn empty_payload() -> Vec<u8> {
    let mut state = automerge::sync::State::new();
    automerge::Automerge::new()
        .generate_sync_message(&mut state)
        .expect("message")
        .encode()
}

/// Drains a raw peer for a while and returns every message it got.
async fn drain(peer: &mut RawPeer, d: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + d;
    while std::time::Instant::now() < deadline {
        match peer.next_within(Duration::from_millis(100)).await {
            Seen::Message(m) => out.push(m),
            Seen::Closed(_) => break,
            Seen::Nothing => {}
        }
    }
    out
}

/// Messages that carry data of document `id`: a sync message with heads (an empty
/// document's reply has none), or any ephemeral / remote-heads message about it.
fn leaks(messages: &[Message], id: DocumentId) -> Vec<&Message> {
    messages
        .iter()
        .filter(|m| match m {
            Message::Sync {
                document_id, data, ..
            } => *document_id == id && sync_heads(data) > 0,
            Message::Ephemeral { document_id, .. }
            | Message::RemoteHeadsChanged { document_id, .. } => *document_id == id,
            _ => false,
        })
        .collect()
}

fn sync_heads(data: &[u8]) -> usize {
    automerge::sync::Message::decode(data)
        .map(|m| m.heads.len())
        .unwrap_or(0)
}

/// Guessed and enumerated ids, an admin token, a forged senderId, cross-partition
/// ephemeral and remote-heads traffic: nothing of a noord plan reaches anyone else.
#[tokio::test]
async fn hostile_peers_learn_nothing() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "operator"]);
    fx.admin(&["grant", "operator", "admin"]);
    let admin = fx.token("operator");
    let server = fx.start(&[]);

    // The victim: a plan held open by two noord professionals.
    let mut a = Client::connect("device-a", &server.url(), &t.prof_noord)
        .await
        .expect("a");
    let mut b = Client::connect("device-b", &server.url(), &t.prof2_noord)
        .await
        .expect("b");
    let plan = a.create_plan("noord", "HH-X").await;
    assert!(b.fetch(plan).await);

    // 1. Enumerating ids: every guess (and the real id, for the wrong users) answers
    //    doc-unavailable, the same as a missing document.
    for token in [&t.vol_noord, &t.prof_zuid, &admin] {
        let mut raw = RawPeer::joined(&server.url(), token).await;
        let mut ids: Vec<DocumentId> = (0..25).map(|_| DocumentId::random()).collect();
        ids.push(plan);
        for id in &ids {
            raw.send(&Message::Request {
                sender_id: "raw".into(),
                target_id: "s".into(),
                document_id: *id,
                data: empty_payload(),
            })
            .await;
        }
        let answers = drain(&mut raw, Duration::from_millis(800)).await;
        let unavailable = answers
            .iter()
            .filter(|m| matches!(m, Message::DocUnavailable { .. }))
            .count();
        assert_eq!(unavailable, ids.len(), "token {token:.8}: {answers:?}");
        assert!(leaks(&answers, plan).is_empty());
    }

    // 2. A forged senderId: a volunteer claims to be device-a. It gets nothing of
    //    device-a's documents, and device-a keeps syncing undisturbed.
    let mut forger = RawPeer::open(&server.url(), &t.vol_noord).await;
    forger
        .send(&Message::Join {
            sender_id: "device-a".into(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("storage-device-a".into()),
                is_ephemeral: Some(false),
                capabilities: None,
            }),
            supported_protocol_versions: vec!["1".into()],
        })
        .await;
    assert!(matches!(
        forger.next().await,
        Seen::Message(Message::Peer { .. })
    ));
    forger
        .send(&Message::Sync {
            sender_id: "device-a".into(),
            target_id: "s".into(),
            document_id: plan,
            data: empty_payload(),
        })
        .await;
    let seen = drain(&mut forger, Duration::from_millis(500)).await;
    assert!(
        leaks(&seen, plan).is_empty(),
        "forged senderId received the plan: {seen:?}"
    );

    // 3. Cross-partition ephemeral and remote-heads traffic is not relayed.
    let mut zuid = RawPeer::joined(&server.url(), &t.prof_zuid).await;
    let mut vol = RawPeer::joined(&server.url(), &t.vol_noord).await;
    for peer in [&mut zuid, &mut vol] {
        peer.send(&Message::Ephemeral {
            sender_id: "x".into(),
            target_id: "s".into(),
            count: 1,
            session_id: "s".into(),
            document_id: plan,
            data: vec![0xa0],
        })
        .await;
        let mut heads = std::collections::BTreeMap::new();
        heads.insert(
            "storage-x".to_string(),
            HeadsAtTime {
                heads: vec![],
                timestamp: 1,
            },
        );
        peer.send(&Message::RemoteHeadsChanged {
            sender_id: "x".into(),
            target_id: "s".into(),
            document_id: plan,
            new_heads: heads,
        })
        .await;
    }
    b.pump_for(Duration::from_millis(600)).await;
    assert_eq!(
        b.ephemeral.get(&plan),
        None,
        "foreign ephemeral reached a plan holder"
    );

    // 4. Live changes of the plan never reach the other peers.
    a.edit(plan, |d| {
        schema::update::<Plan>(d, |p| p.regiehouder = Some("prof-noord".into())).expect("edit");
    })
    .await;
    assert!(a.sync_acked(plan).await);
    assert!(
        b.pump_until(WAIT, |b| b.heads_hex(plan) == a.heads_hex(plan))
            .await,
        "positive control"
    );
    for (name, peer) in [
        ("zuid", &mut zuid),
        ("volunteer", &mut vol),
        ("forger", &mut forger),
    ] {
        let seen = drain(peer, Duration::from_millis(400)).await;
        assert!(
            leaks(&seen, plan).is_empty(),
            "{name} received plan traffic: {seen:?}"
        );
    }
}
