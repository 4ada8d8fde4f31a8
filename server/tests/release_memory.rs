//! The central office's release memory (`store.releases()`) on both engines: it
//! survives reopening the store, and of two nodes that decided a release from the same
//! memory exactly one records it, also when both record at once.

use buurtsync_server::store::releases::Released;
use buurtsync_server::store::Store;

mod backends;
use backends::Backend;

on_both_backends!(
    memory_survives_reopening,
    one_of_two_nodes_records_a_release,
    concurrent_releases_record_one,
);

fn cells(list: &[(&str, f64, bool)]) -> Vec<(String, Released)> {
    list.iter()
        .map(|(k, value, suppressed)| {
            (
                (*k).to_owned(),
                Released {
                    value: *value,
                    suppressed: *suppressed,
                },
            )
        })
        .collect()
}

/// A recorded release is what the next store handle (a restarted server) loads; a
/// later release overwrites only the cells it changed.
async fn memory_survives_reopening(backend: Backend) {
    let db = backends::database(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    let empty = store.releases().load().await.expect("load");
    assert_eq!((empty.seq, empty.cells.len()), (0, 0));
    let first = cells(&[
        ("noord|2025-02|x", 2.0, true),
        ("noord|2025-03|x", 6.0, false),
    ]);
    assert!(store.releases().record(0, &first).await.expect("record"));
    drop(store);
    let store = Store::open(&db.url).await.expect("reopen");
    let loaded = store.releases().load().await.expect("load");
    assert_eq!(loaded.seq, 1);
    assert_eq!(loaded.cells["noord|2025-02|x"], first[0].1);
    assert_eq!(loaded.cells["noord|2025-03|x"], first[1].1);
    let second = cells(&[("noord|2025-03|x", 7.0, true)]);
    assert!(store.releases().record(1, &second).await.expect("record"));
    let loaded = store.releases().load().await.expect("load");
    assert_eq!(loaded.seq, 2);
    assert_eq!(loaded.cells["noord|2025-02|x"], first[0].1, "untouched");
    assert_eq!(loaded.cells["noord|2025-03|x"], second[0].1, "overwritten");
}

/// Two nodes load the same memory; the first to record wins, the second is told so
/// and writes nothing (it must decide again from the winner's memory).
async fn one_of_two_nodes_records_a_release(backend: Backend) {
    let db = backends::database(backend).await;
    let a = Store::open(&db.url).await.expect("node a");
    let b = Store::open(&db.url).await.expect("node b");
    let seen_a = a.releases().load().await.expect("load a");
    let seen_b = b.releases().load().await.expect("load b");
    assert_eq!(seen_a.seq, seen_b.seq);
    let mine = cells(&[("c", 1.0, true)]);
    let theirs = cells(&[("c", 9.0, false), ("d", 3.0, true)]);
    assert!(a.releases().record(seen_a.seq, &mine).await.expect("a"));
    assert!(!b.releases().record(seen_b.seq, &theirs).await.expect("b"));
    let now = b.releases().load().await.expect("load");
    assert_eq!(now.seq, 1);
    assert_eq!(now.cells.len(), 1, "b wrote nothing: {:?}", now.cells);
    assert_eq!(now.cells["c"], mine[0].1);
    // Decided again from the new memory, b records the next release.
    assert!(b
        .releases()
        .record(now.seq, &theirs)
        .await
        .expect("b again"));
    assert_eq!(a.releases().load().await.expect("load").seq, 2);
}

/// Many releases recorded at once from the same memory: exactly one is recorded, and
/// the memory holds its cells and no other's.
async fn concurrent_releases_record_one(backend: Backend) {
    let db = backends::database(backend).await;
    let nodes: Vec<Store> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(Store::open(&db.url).await.expect("node"));
        }
        v
    };
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let store = store.clone();
            tokio::spawn(async move {
                let release = cells(&[("shared", i as f64, false)]);
                let won = store.releases().record(0, &release).await.expect("record");
                (i, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.expect("task");
        if won {
            winners.push(i);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one release recorded: {winners:?}"
    );
    let memory = nodes[0].releases().load().await.expect("load");
    assert_eq!(memory.seq, 1);
    assert_eq!(memory.cells["shared"].value, winners[0] as f64);
}
