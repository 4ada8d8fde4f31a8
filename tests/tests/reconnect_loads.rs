//! What a reconnect costs the server: a device holding many documents of which few
//! changed makes the server load (`buurtsync_document_loads_total`) about the changed
//! ones only, thanks to the connect-time summary.

use std::net::SocketAddr;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use buurtsync_e2e::WAIT;
use sync_core::partition::WijkId;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// The server's `buurtsync_document_loads_total` (0 before the first load).
async fn document_loads(addr: SocketAddr) -> u64 {
    let (status, body) = http::request(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix("buurtsync_document_loads_total "))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
}

/// A device holding 600 plans of which it changed 20 offline reconnects to a server
/// with a cold cache: the server loads at most 25 documents, and the 20 are committed.
#[tokio::test]
async fn reconnect_loads_only_the_changed_documents() {
    const HELD: usize = 600;
    const CHANGED: usize = 20;
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut device = Client::connect_with_summary("device", &server.url(), &t.prof_noord)
        .await
        .expect("device");
    let wijk = WijkId::new("noord").expect("wijk");
    let mut ids = Vec::with_capacity(HELD);
    // In batches below the server's limit of documents being created at once.
    for batch in 0..HELD / 100 {
        let mut created = Vec::new();
        for n in 0..100 {
            let pseudonym = format!("HH-{batch}-{n:03}");
            let doc = schema::new_document(&Plan::new(wijk.clone(), pseudonym)).expect("plan");
            created.push(device.add_document(doc).await);
        }
        let waiting = created.clone();
        let committed = device
            .pump_until(WAIT, move |c| waiting.iter().all(|id| c.is_acked(*id)))
            .await;
        assert!(committed, "plans not committed: {:?}", device.errors());
        ids.extend(created);
    }
    device.disconnect().await;
    assert!(server.stop(), "server did not stop cleanly");

    for id in &ids[..CHANGED] {
        device
            .edit(*id, |d| {
                schema::update::<Plan>(d, |p| {
                    p.goals.push(Goal::new(Leefdomein::Wonen, "offline"));
                })
                .expect("edit");
            })
            .await;
    }
    let server = fx.start(&[]);
    let before = document_loads(server.metrics()).await;
    device.set_url(&server.url());
    device.reconnect().await.expect("reconnect");
    let changed = ids[..CHANGED].to_vec();
    assert!(
        device
            .pump_until(WAIT, move |c| changed.iter().all(|id| c.is_acked(*id)))
            .await,
        "the offline edits were not committed"
    );
    let in_sync = ids[CHANGED..].to_vec();
    assert!(
        device
            .pump_until(WAIT, move |c| in_sync.iter().all(|id| c.settled(*id)))
            .await,
        "the unchanged plans were not settled"
    );
    let loads = document_loads(server.metrics()).await - before;
    eprintln!("document loads during the reconnect: {loads}");
    assert!(
        loads <= 25,
        "the server loaded {loads} documents for {CHANGED} changed of {HELD}"
    );
    assert!(
        loads >= CHANGED as u64,
        "the metric did not count the loads ({loads})"
    );
}
