//! Payloads that break automerge never reach a connection (issue 20): the peer gets an
//! `error`, the same socket keeps syncing, and nothing stored changes. A panic inside
//! automerge is caught by `sync_core::guard` and counted in
//! `buurtsync_panics_caught_total`; payloads that would make automerge expand beyond
//! any bound (an abort, not a panic) are refused before it parses them
//! (`sync_core::chunks`), and so are changes whose run lengths declare more operations
//! than a document may hold.

use std::time::Duration;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use sync_core::protocol::Message;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// The finding of the `apply` fuzz target that panics in automerge 0.12's decoder
/// (hexane `decode_delta_int` unwrap); first byte is the target's mode byte.
const CRASH: &[u8] = include_bytes!("../../fuzz/regressions/apply/hexane-decode-delta-int-unwrap");

/// A version 2 sync message carrying a whole document whose value column is cut short:
/// automerge 0.12 panics loading it (hexane `RawColumnIter::take`, "would cross slab
/// boundary"). Found by mutating a saved document's columns.
const PANICS: &[u8] =
    include_bytes!("../../fuzz/regressions/apply/hexane-raw-column-take-v2-document");

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

const PANICS_CAUGHT: &str = "buurtsync_panics_caught_total";
const CONNECTIONS: &str = "buurtsync_connections_total";

/// A server, a device connected as a professional with two plans of its wijk (the
/// target and another), and what the store and the metrics said before the attack.
struct Setup {
    fx: Fixture,
    server: buurtsync_e2e::server::ServerProcess,
    device: Client,
    target: sync_core::protocol::DocumentId,
    other: sync_core::protocol::DocumentId,
    stored_before: serde_json::Value,
    panics_before: f64,
    connections_before: f64,
}

impl Setup {
    async fn new() -> Setup {
        let fx = Fixture::new();
        let t = fx.seed();
        let server = fx.start(&[]);
        let mut device = Client::connect("device", &server.url(), &t.prof_noord)
            .await
            .expect("connect");
        let target = device.create_plan("noord", "HH-PANIC-1").await;
        let other = device.create_plan("noord", "HH-PANIC-2").await;
        let stored_before = fx.doc_info(&target.to_string());
        let panics_before = metric(server.metrics(), PANICS_CAUGHT).await;
        let connections_before = metric(server.metrics(), CONNECTIONS).await;
        Setup {
            fx,
            server,
            device,
            target,
            other,
            stored_before,
            panics_before,
            connections_before,
        }
    }
}

/// The panicking sync for a writable plan: `error` to the peer, stored heads unchanged,
/// the panic counter moved, and the same connection then syncs another document and a
/// change to the target itself.
#[tokio::test]
async fn automerge_panic_is_an_error_and_the_connection_lives_on() {
    let Setup {
        fx,
        server,
        mut device,
        target,
        other,
        stored_before,
        panics_before,
        connections_before,
    } = Setup::new().await;

    send_finding(&mut device, target, PANICS).await;
    let answered = device
        .pump_until(Duration::from_secs(10), |c| !c.errors().is_empty())
        .await;
    assert!(answered, "no error message for the panicking payload");
    let error = device.errors()[0].to_owned();
    assert!(error.contains(&target.to_string()), "{error}");
    assert!(
        !error.contains(".rs:"),
        "library internals leak to the peer: {error}"
    );
    assert_eq!(
        fx.doc_info(&target.to_string()),
        stored_before,
        "the panicking payload changed the stored document"
    );
    assert!(
        metric(server.metrics(), PANICS_CAUGHT).await > panics_before,
        "the panic metric did not move"
    );
    assert!(device.is_online(), "the socket was dropped");
    lives_on(
        &fx,
        &server,
        &mut device,
        [other, target],
        &stored_before,
        connections_before,
    )
    .await;
}

/// After a refused payload: the same socket, without reconnecting, syncs another
/// document and then a change to the target itself, which is stored.
async fn lives_on(
    fx: &Fixture,
    server: &buurtsync_e2e::server::ServerProcess,
    device: &mut Client,
    [other, target]: [sync_core::protocol::DocumentId; 2],
    stored_before: &serde_json::Value,
    connections_before: f64,
) {
    edit_both_and_sync(device, [other, target]).await;
    assert_eq!(
        metric(server.metrics(), CONNECTIONS).await,
        connections_before,
        "the device had to reconnect"
    );
    assert_ne!(
        &fx.doc_info(&target.to_string()),
        stored_before,
        "the later good change was not stored"
    );
}

/// Edits each document and waits until the server acknowledged it.
async fn edit_both_and_sync(device: &mut Client, ids: [sync_core::protocol::DocumentId; 2]) {
    for id in ids {
        device
            .edit(id, |doc| {
                schema::update::<Plan>(doc, |p| {
                    p.goals
                        .push(Goal::new(Leefdomein::Financien, "na de paniek"));
                })
                .expect("edit plan");
            })
            .await;
        assert!(device.sync_acked(id).await, "{id} not synced afterwards");
    }
}

/// Both findings of the `apply` fuzz target that broke automerge 0.12 through a bundle
/// chunk (a panic in hexane's decoder; an expansion into more than 4 GiB, which no
/// panic guard catches) are refused before automerge parses them
/// (`sync_core::chunks`): the peer gets an `error` naming the document, nothing stored
/// changes, automerge's guard is not even reached (the panic counter stays), and the
/// same connection then syncs another document and the target itself.
#[tokio::test]
async fn bundle_chunks_are_refused_before_automerge() {
    let Setup {
        fx,
        server,
        mut device,
        target,
        other,
        stored_before,
        panics_before,
        connections_before,
    } = Setup::new().await;
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
        metric(server.metrics(), PANICS_CAUGHT).await,
        panics_before,
        "a finding reached automerge"
    );
    assert!(
        metric(server.metrics(), "buurtsync_rejected_total").await >= rejected_before + 2.0,
        "the refusals were not counted"
    );

    lives_on(
        &fx,
        &server,
        &mut device,
        [other, target],
        &stored_before,
        connections_before,
    )
    .await;
}

/// The change of `fuzz/regressions/apply/op-run-length-bomb`: 124 bytes whose
/// run-length-encoded columns declare a billion ops (a list and its nulls, no
/// dependencies, so it applies to any document). automerge 0.12 trusts the run lengths:
/// minutes of CPU, then an allocator abort that no panic guard catches.
const OP_BOMB: &[u8] = include_bytes!("../../fuzz/regressions/apply/op-run-length-bomb");

/// A writer's op bomb for a plan it may write is refused before automerge parses it
/// (`sync_core::chunks` counts the declared ops against `--max-document-ops`): the
/// peer gets an `error` that names the limit, nothing stored changes, the refusal is
/// counted as `too-many-ops`, and the server and the same connection live on to sync
/// another document and the target itself.
#[tokio::test]
async fn op_bombs_are_refused_before_automerge() {
    let Setup {
        fx,
        mut server,
        mut device,
        target,
        other,
        stored_before,
        panics_before,
        connections_before,
    } = Setup::new().await;
    const TOO_MANY_OPS: &str = "buurtsync_rejected_total{reason=\"too-many-ops\"}";
    assert_eq!(metric(server.metrics(), TOO_MANY_OPS).await, 0.0);

    send_finding(&mut device, target, OP_BOMB).await;
    let answered = device
        .pump_until(Duration::from_secs(10), |c| !c.errors().is_empty())
        .await;
    assert!(answered, "no error message for the op bomb");
    let error = device.errors()[0].to_owned();
    assert!(
        error.contains(&target.to_string())
            && error.contains("declare more than 1000000 operations"),
        "{error}"
    );
    assert!(server.running(), "the server died");
    assert_eq!(
        fx.doc_info(&target.to_string()),
        stored_before,
        "the op bomb changed the stored document"
    );
    assert_eq!(metric(server.metrics(), TOO_MANY_OPS).await, 1.0);
    assert_eq!(
        metric(server.metrics(), PANICS_CAUGHT).await,
        panics_before,
        "the op bomb reached automerge"
    );
    assert!(device.is_online(), "the socket was dropped");
    lives_on(
        &fx,
        &server,
        &mut device,
        [other, target],
        &stored_before,
        connections_before,
    )
    .await;
}
