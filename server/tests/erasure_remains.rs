//! What an erasure leaves in the SQLite files (issue 16, item 3): a copy of the key
//! store taken after `erase` must not hold the destroyed key (it would decrypt any
//! older database backup), and the main database must not keep the erased
//! document's change hashes, in the files or in their write-ahead logs.

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use buurtsync_server::hub::Hub;
use buurtsync_server::store::{CatalogEntry, Store};
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

/// The files of a SQLite store at `db` (database, key store, both logs) holding `needle`.
fn files_holding(db: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let name = db.file_name().and_then(|n| n.to_str()).expect("name");
    let dir = db.parent().expect("dir");
    [
        name.to_owned(),
        format!("{name}-wal"),
        format!("{name}.keys"),
        format!("{name}.keys-wal"),
    ]
    .into_iter()
    .filter(|f| {
        std::fs::read(dir.join(f))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
    .collect()
}

/// After `erase`, neither the key bytes nor any change hash of the document (raw or
/// hex) is left in the database, the key store or their `-wal` files, while the
/// server's pools are still open (so nothing is tidied by closing them).
#[tokio::test]
async fn erased_key_and_change_hashes_leave_no_remains_in_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db.sqlite3");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    let hub = Hub::new(store.clone(), 1, u64::MAX);
    let id = DocumentId::random();
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "note", "x".repeat(100)).expect("put");
    tx.commit();
    let entry = CatalogEntry {
        id,
        partition: Partition {
            wijk: WijkId::new("noord").expect("wijk"),
            kind: DocumentKind::Plan,
        },
        created_at: 1,
        created_by: "ann".into(),
    };
    let e = hub
        .create(entry, doc, ("ann", "tok/phone"))
        .await
        .expect("create");
    {
        let mut state = e.state.lock().await;
        for i in 0..3 {
            let mut tx = state.doc.transaction();
            tx.put(ROOT, format!("k{i}"), "y".repeat(50)).expect("put");
            tx.commit();
            hub.persist(&id, &mut state, Some(("bob", "tok2/tablet")))
                .await
                .expect("persist");
        }
    }
    let hashes: Vec<automerge::ChangeHash> = {
        let state = e.state.lock().await;
        state
            .doc
            .get_changes(&[])
            .iter()
            .map(|c| c.hash())
            .collect()
    };
    drop(e);
    let key = store
        .documents()
        .doc_key(&id)
        .await
        .expect("key")
        .expect("a key")
        .0;
    // Positive controls: before the erasure both are in the files.
    assert!(
        !files_holding(&db, &key).is_empty(),
        "the key is stored where the scan looks"
    );
    let hex = hashes[0].to_string();
    assert!(
        !files_holding(&db, hex.as_bytes()).is_empty(),
        "change hashes are stored where the scan looks"
    );

    store
        .documents()
        .erase(&id, "privacy-officer")
        .await
        .expect("erase");

    let hits = files_holding(&db, &key);
    assert!(hits.is_empty(), "the destroyed key is still in {hits:?}");
    for hash in &hashes {
        for needle in [hash.to_string().into_bytes(), hash.0.to_vec()] {
            let hits = files_holding(&db, &needle);
            assert!(hits.is_empty(), "change hash {hash} is still in {hits:?}");
        }
    }
    store.close().await;
}
