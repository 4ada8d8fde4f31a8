//! Payloads that break automerge never reach a connection (issue 20): the peer gets an
//! `error`, the same socket keeps syncing, and nothing stored changes. The known ones
//! are refused before automerge parses them (`sync_core::chunks`); what automerge still
//! panics on is caught by `sync_core::guard` (its unit tests, and the `apply`,
//! `stateful` fuzz targets) and counted in `buurtsync_panics_caught_total`.

use std::time::Duration;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use sync_core::protocol::Message;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// The finding of the `apply` fuzz target that panics in automerge 0.12's decoder
/// (hexane `decode_delta_int` unwrap); first byte is the target's mode byte.
const CRASH: &[u8] = include_bytes!("../../fuzz/regressions/apply/hexane-decode-delta-int-unwrap");

/// The `apply` fuzz target's finding that made automerge 0.12 expand a bundle chunk's
/// column into more than 4 GiB (an allocator abort, which no panic guard catches).
const EXPANSION: &[u8] = include_bytes!("../../fuzz/regressions/apply/bundle-delta-column-oom");

/// Sends a fuzz finding of the `apply` target (mode byte, then a bare sync payload)
/// as a `sync` for `target`.
async fn send_finding(
    device: &mut Client,
    target: sync_core::protocol::DocumentId,
    finding: &[u8],
) {
    let (&mode, payload) = finding.split_first().expect("non-empty");
    assert_eq!(mode & 1, 1, "the finding is a bare sync payload");
    device
        .send(&Message::Sync {
            sender_id: "device".into(),
            target_id: "server".into(),
            document_id: target,
            data: payload.to_vec(),
        })
        .await;
}

/// The sum of a metric over all its label sets on the metrics listener's `/metrics`
/// (0 when absent).
async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let response = http::get(addr, "/metrics", None).await;
    assert_eq!(response.status, 200, "no /metrics at {addr}");
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !rest.starts_with([' ', '{']) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Both findings of the `apply` fuzz target that broke automerge 0.12 through a bundle
/// chunk (a panic in hexane's decoder; an expansion into more than 4 GiB, which no
/// panic guard catches) are refused before automerge parses them
/// (`sync_core::chunks`): the peer gets an `error` naming the document, nothing stored
/// changes, automerge's guard is not even reached (the panic counter stays), and the
/// same connection then syncs another document and the target itself.
#[tokio::test]
async fn automerge_breaking_chunks_are_errors_and_the_connection_lives_on() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut device = Client::connect("device", &server.url(), &t.prof_noord)
        .await
        .expect("connect");
    let target = device.create_plan("noord", "HH-PANIC-1").await;
    let other = device.create_plan("noord", "HH-PANIC-2").await;
    let stored_before = fx.doc_info(&target.to_string());
    let panics = "buurtsync_panics_caught_total";
    let panics_before = metric(server.metrics(), panics).await;
    let connections_before = metric(server.metrics(), "buurtsync_connections_total").await;
    let rejected_before = metric(server.metrics(), "buurtsync_rejected_total").await;

    for (n, finding) in [CRASH, EXPANSION].into_iter().enumerate() {
        send_finding(&mut device, target, finding).await;
        let answered = device
            .pump_until(Duration::from_secs(10), |c| c.errors().len() > n)
            .await;
        assert!(answered, "no error message for finding {n}");
        let error = device.errors()[n].to_owned();
        assert!(
            error.contains(&target.to_string()) && error.contains("bundle"),
            "{error}"
        );
        assert!(
            !error.contains(".rs:"),
            "library internals leak to the peer: {error}"
        );
        assert_eq!(
            fx.doc_info(&target.to_string()),
            stored_before,
            "finding {n} changed the stored document"
        );
        assert!(device.is_online(), "the socket was dropped");
    }
    assert_eq!(
        metric(server.metrics(), panics).await,
        panics_before,
        "a finding reached automerge"
    );
    assert!(
        metric(server.metrics(), "buurtsync_rejected_total").await >= rejected_before + 2.0,
        "the refusals were not counted"
    );

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
            "{id} not synced after the findings"
        );
    }
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
}
