//! A panic inside automerge on a hostile payload never reaches a connection (issue 20):
//! the peer gets an `error`, the same socket keeps syncing, nothing stored changes, and
//! `buurtsync_panics_caught_total` moves.

use std::time::Duration;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use sync_core::protocol::Message;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// The finding of the `apply` fuzz target that panics in automerge 0.12's decoder
/// (hexane `decode_delta_int` unwrap); first byte is the target's mode byte.
const CRASH: &[u8] = include_bytes!("../../fuzz/regressions/apply/hexane-decode-delta-int-unwrap");

/// The value of one series on `/metrics` (0 when absent).
async fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let response = http::get(addr, "/metrics", None).await;
    String::from_utf8_lossy(&response.body)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The crashing sync for a writable plan: `error` to the peer, the same connection then
/// syncs another document, stored heads unchanged, the panic counter moved.
#[tokio::test]
async fn automerge_panic_is_an_error_and_the_connection_lives_on() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut device = Client::connect("device", &server.url(), &t.prof_noord)
        .await
        .expect("connect");
    let target = device.create_plan("noord", "HH-PANIC-1").await;
    let other = device.create_plan("noord", "HH-PANIC-2").await;
    let stored_before = fx.doc_info(&target.to_string());
    let panics = r#"buurtsync_panics_caught_total{site="receive"}"#;
    let panics_before = metric(server.metrics(), panics).await;
    let connections_before = metric(server.metrics(), "buurtsync_connections_total").await;

    let (&mode, payload) = CRASH.split_first().expect("non-empty");
    assert_eq!(mode & 1, 1, "the finding is a bare sync payload");
    device
        .send(&Message::Sync {
            sender_id: "device".into(),
            target_id: "server".into(),
            document_id: target,
            data: payload.to_vec(),
        })
        .await;
    let answered = device
        .pump_until(Duration::from_secs(10), |c| !c.errors().is_empty())
        .await;
    assert_eq!(
        fx.doc_info(&target.to_string()),
        stored_before,
        "the crashing payload changed the stored document"
    );
    assert!(answered, "no error message for the crashing payload");
    let error = device.errors()[0].to_owned();
    assert!(error.contains(&target.to_string()), "{error}");
    assert!(
        !error.contains(".rs:"),
        "library internals leak to the peer: {error}"
    );
    assert!(device.is_online(), "the socket was dropped");

    // The same socket syncs another document, and a change to the target itself.
    for id in [other, target] {
        device
            .edit(id, |doc| {
                schema::update::<Plan>(doc, |p| {
                    p.goals
                        .push(Goal::new(Leefdomein::Financien, "na de paniek"));
                })
                .expect("edit plan");
            })
            .await;
        assert!(
            device.sync_acked(id).await,
            "{id} not synced after the panic"
        );
    }
    assert!(device.is_online());
    assert_eq!(
        metric(server.metrics(), "buurtsync_connections_total").await,
        connections_before,
        "the device had to reconnect"
    );
    assert_ne!(
        fx.doc_info(&target.to_string()),
        stored_before,
        "the later good change was not stored"
    );
    assert!(
        metric(server.metrics(), panics).await > panics_before,
        "the panic metric did not move"
    );
}
