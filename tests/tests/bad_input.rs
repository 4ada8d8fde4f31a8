//! Hostile and broken input: clear errors or clean closes, never a crash, the server
//! keeps serving others, and nothing stored changes.

use std::time::Duration;

use buurtsync_e2e::client::{Client, ConnectError, RawPeer, Seen};
use buurtsync_e2e::server::{Fixture, ServerProcess};
use sync_core::partition::WijkId;
use sync_core::protocol::Message;
use sync_core::schema::{self, Plan};

/// Connecting needs a live token: none, a wrong one, or a revoked one get HTTP 401.
#[tokio::test]
async fn upgrade_requires_a_live_token() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let url = server.url();
    let wrong = format!("bst_{}", "0".repeat(64));
    for token in ["", "garbage", wrong.as_str()] {
        match Client::connect("x", &url, token).await {
            Err(ConnectError::Http(401)) => {}
            Err(e) => panic!("token {token:?}: expected 401, got {e}"),
            Ok(_) => panic!("token {token:?} was accepted"),
        }
    }
    // ?token= works for browsers, and the same token stops working once revoked.
    let query_url = format!("{url}?token={}", t.prof_noord);
    let (ws, _) = tokio_tungstenite::connect_async(query_url.as_str())
        .await
        .expect("?token= accepted");
    drop(ws);
    Client::connect("ok", &url, &t.prof_noord)
        .await
        .expect("live token works");
    fx.admin(&["token", "revoke", &t.prof_noord]);
    assert!(matches!(
        Client::connect("x", &url, &t.prof_noord).await,
        Err(ConnectError::Http(401))
    ));
    assert!(matches!(
        tokio_tungstenite::connect_async(query_url.as_str()).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401
    ));
}

struct Setup {
    fx: Fixture,
    server: ServerProcess,
    token: String,
    good: Client,
    id: sync_core::protocol::DocumentId,
}

async fn setup(extra: &[&str]) -> Setup {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(extra);
    let mut good = Client::connect("good", &server.url(), &t.prof2_noord)
        .await
        .expect("good");
    let id = good
        .add_document(
            schema::new_document(&Plan::new(WijkId::new("noord").expect("wijk"), "HH-9"))
                .expect("plan"),
        )
        .await;
    assert!(good.sync_acked(id).await);
    Setup {
        fx,
        server,
        token: t.prof_noord,
        good,
        id,
    }
}

/// After the abuse: the process lives, another client still syncs, the document is as
/// it was.
async fn still_serving(s: &mut Setup, heads_before: &serde_json::Value) {
    assert!(s.server.running(), "server died");
    assert_eq!(
        &s.fx.doc_info(&s.id.to_string())["heads"],
        heads_before,
        "stored document changed"
    );
    s.good
        .edit(s.id, |d| {
            schema::update::<Plan>(d, |p| p.regiehouder = Some("prof2-noord".into()))
                .expect("edit");
        })
        .await;
    assert!(
        s.good.sync_acked(s.id).await,
        "server stopped serving a well-behaved client"
    );
}

/// Malformed CBOR, unknown message types and invalid automerge bytes each get an
/// `error` answer naming the problem, and the connection stays usable.
#[tokio::test]
async fn bad_frames_get_error_answers() {
    let mut s = setup(&[]).await;
    let heads = s.fx.doc_info(&s.id.to_string())["heads"].clone();
    let mut raw = RawPeer::joined(&s.server.url(), &s.token).await;

    raw.send_raw(vec![0xff, 0x00, 0x13, 0x37]).await;
    assert!(raw.expect_error().await.contains("malformed message"));

    let mut unknown = Vec::new();
    ciborium::ser::into_writer(
        &ciborium::Value::Map(vec![
            (
                ciborium::Value::Text("type".into()),
                ciborium::Value::Text("teleport".into()),
            ),
            (
                ciborium::Value::Text("senderId".into()),
                ciborium::Value::Text("raw".into()),
            ),
        ]),
        &mut unknown,
    )
    .expect("cbor");
    raw.send_raw(unknown).await;
    assert!(raw
        .expect_error()
        .await
        .contains("unknown message type \"teleport\""));

    for garbage in [
        vec![0x42, 0xff, 0xff, 0xff, 0xff, 0x0f],
        b"not automerge".to_vec(),
    ] {
        raw.send(&Message::Sync {
            sender_id: "raw".into(),
            target_id: "server".into(),
            document_id: s.id,
            data: garbage,
        })
        .await;
        let text = raw.expect_error().await;
        assert!(text.contains("invalid automerge sync message"), "{text}");
    }
    // Deeply nested CBOR is refused by the nesting cap, not by a stack overflow.
    let mut deep = vec![0x81; 50_000];
    deep.push(0);
    raw.send_raw(deep).await;
    assert!(raw.expect_error().await.contains("malformed message"));

    // Still usable: a proper request is answered with the document.
    raw.send(&Message::Request {
        sender_id: "raw".into(),
        target_id: "server".into(),
        document_id: s.id,
        data: {
            use automerge::sync::SyncDoc;
            let mut st = automerge::sync::State::new();
            automerge::Automerge::new()
                .generate_sync_message(&mut st)
                .expect("msg")
                .encode()
        },
    })
    .await;
    assert!(matches!(
        raw.next().await,
        Seen::Message(Message::Sync { .. })
    ));
    still_serving(&mut s, &heads).await;
}

/// A frame over the configured limit closes that connection with 1009; others go on.
#[tokio::test]
async fn oversized_frames_close_the_connection() {
    let mut s = setup(&["--max-frame-bytes", "65536"]).await;
    let heads = s.fx.doc_info(&s.id.to_string())["heads"].clone();
    let mut raw = RawPeer::joined(&s.server.url(), &s.token).await;
    raw.send(&Message::Sync {
        sender_id: "raw".into(),
        target_id: "server".into(),
        document_id: s.id,
        data: vec![0x42; 200_000],
    })
    .await;
    loop {
        match raw.next().await {
            Seen::Closed(code) => {
                assert_eq!(code, Some(1009), "closed without 'message too big'");
                break;
            }
            Seen::Message(_) => {}
            Seen::Nothing => panic!("oversized frame did not close the connection"),
        }
    }
    still_serving(&mut s, &heads).await;
}

/// Protocol order is enforced: nothing before `join`, and only version 1.
#[tokio::test]
async fn handshake_is_enforced() {
    let mut s = setup(&[]).await;
    let heads = s.fx.doc_info(&s.id.to_string())["heads"].clone();

    let mut early = RawPeer::open(&s.server.url(), &s.token).await;
    early
        .send(&Message::DocUnavailable {
            sender_id: "raw".into(),
            target_id: "server".into(),
            document_id: s.id,
        })
        .await;
    assert!(early.expect_error().await.contains("join"));
    assert!(matches!(early.next().await, Seen::Closed(_)));

    let mut future = RawPeer::open(&s.server.url(), &s.token).await;
    future
        .send(&Message::Join {
            sender_id: "raw".into(),
            peer_metadata: None,
            supported_protocol_versions: vec!["2".into()],
        })
        .await;
    assert_eq!(future.expect_error().await, "unsupported protocol version");
    assert!(matches!(future.next().await, Seen::Closed(_)));

    // Floods of bad frames end in a close rather than an endless stream of errors.
    let mut flood = RawPeer::joined(&s.server.url(), &s.token).await;
    let mut closed = false;
    for _ in 0..40 {
        flood.send_raw(vec![0xff]).await;
    }
    for _ in 0..60 {
        match flood.next_within(Duration::from_secs(5)).await {
            Seen::Closed(code) => {
                // 1008, or no code when the peer's own unread garbage made the
                // server's close end in a TCP reset before the close frame was read.
                assert!(matches!(code, Some(1008) | None), "closed with {code:?}");
                closed = true;
                break;
            }
            Seen::Message(_) => {}
            Seen::Nothing => break,
        }
    }
    assert!(closed, "a peer sending only garbage was never disconnected");
    still_serving(&mut s, &heads).await;
}
