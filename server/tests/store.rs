//! The SQLite store against a real file: documents, chunks and compaction, sync
//! states, accounts and tokens.

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use buurtsync_server::hub::Hub;
use buurtsync_server::store::crypto::DocKey;
use buurtsync_server::store::{CatalogEntry, Store};
use buurtsync_server::Error;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::policy::{GlobalRole, WijkRole};
use sync_core::protocol::DocumentId;

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/nested/db.sqlite3", dir.path().display());
    let store = Store::open(&url).await.expect("open");
    (dir, store)
}

fn entry(id: DocumentId) -> CatalogEntry {
    CatalogEntry {
        id,
        partition: Partition {
            wijk: WijkId::new("noord").expect("wijk"),
            kind: DocumentKind::Plan,
        },
        created_at: 1,
        created_by: "u".into(),
    }
}

fn put(doc: &mut Automerge, i: usize) {
    let mut tx = doc.transaction();
    tx.put(ROOT, format!("k{i}"), "x".repeat(50)).expect("put");
    tx.commit();
}

/// Commits append incremental chunks, compact into a snapshot once they outgrow it,
/// and a reload (one concatenated load) gives back exactly the committed document.
#[tokio::test]
async fn chunks_compact_and_reload() {
    let (_dir, store) = open().await;
    let hub = Hub::new(store.clone(), 1, u64::MAX);
    let id = DocumentId::random();
    let mut doc = Automerge::new();
    put(&mut doc, 0);
    let entry_ = hub
        .create(entry(id), doc, ("u", "device"))
        .await
        .expect("create");
    let mut saw_incremental = false;
    let mut saw_compaction = false;
    for i in 1..60 {
        let mut state = entry_.state.lock().await;
        put(&mut state.doc, i);
        assert!(hub
            .persist(&id, &mut state, Some(("u", "device")))
            .await
            .expect("persist"));
        assert!(
            !hub.persist(&id, &mut state, None).await.expect("persist"),
            "nothing new, nothing written"
        );
        let stored = store
            .load_document(&id)
            .await
            .expect("load")
            .expect("exists");
        if stored.chunks > 1 {
            saw_incremental = true;
        } else if i > 1 {
            saw_compaction = true;
            assert_eq!(stored.incremental_bytes, 0);
        }
        let reloaded = Automerge::load(&stored.bytes).expect("loads");
        assert_eq!(
            reloaded.get_heads(),
            state.doc.get_heads(),
            "after commit {i}"
        );
    }
    assert!(
        saw_incremental && saw_compaction,
        "incremental={saw_incremental} compaction={saw_compaction}"
    );
    // A fresh hub loads it from the store.
    let fresh = Hub::new(store.clone(), 1, u64::MAX);
    let loaded = fresh.get(id).await.expect("get").expect("found");
    assert_eq!(
        loaded.state.lock().await.doc.get_heads(),
        entry_.state.lock().await.doc.get_heads()
    );
    assert!(fresh
        .get(DocumentId::random())
        .await
        .expect("get")
        .is_none());
}

/// An id is created once, and writing the same chunk twice stores it once.
#[tokio::test]
async fn ids_are_unique_and_chunks_idempotent() {
    let (_dir, store) = open().await;
    let id = DocumentId::random();
    let key = DocKey::random();
    store
        .create_document(&entry(id), b"x", &key)
        .await
        .expect("create");
    assert!(matches!(
        store
            .create_document(&entry(id), b"y", &DocKey::random())
            .await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.catalog(&id).await.expect("catalog"), Some(entry(id)));
    // Chunk keys are content hashes: the same chunk twice is stored once.
    store
        .append_chunk(&id, &key, b"chunk")
        .await
        .expect("append");
    store
        .append_chunk(&id, &key, b"chunk")
        .await
        .expect("append again");
    assert_eq!(
        store
            .load_document(&id)
            .await
            .expect("load")
            .expect("doc")
            .chunks,
        2
    );
}

/// Sync states persist per (peer storage, document) and are overwritten in place.
#[tokio::test]
async fn sync_states_round_trip() {
    let (_dir, store) = open().await;
    let id = DocumentId::random();
    store
        .create_document(&entry(id), b"x", &DocKey::random())
        .await
        .expect("create");
    assert_eq!(store.sync_state("peer", &id).await.expect("get"), None);
    store
        .put_sync_states(
            "peer",
            "u",
            &[(id, vec![1, 2])],
            16,
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("put");
    store
        .put_sync_states(
            "peer",
            "u",
            &[(id, vec![3])],
            16,
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("put");
    assert_eq!(
        store.sync_state("peer", &id).await.expect("get"),
        Some(vec![3])
    );
    assert_eq!(store.sync_state("other", &id).await.expect("get"), None);
}

/// A client announcing a new storageId on every run (samod does) cannot grow the sync
/// states without bound: each user keeps the most recent `per_user` peer stores, and
/// states older than the TTL go.
#[tokio::test]
async fn sync_states_are_capped_per_user_and_expire() {
    let (_dir, store) = open().await;
    let id = DocumentId::random();
    store
        .create_document(&entry(id), b"x", &DocKey::random())
        .await
        .expect("create");
    let day = std::time::Duration::from_secs(24 * 3600);
    for run in 0..40 {
        store
            .put_sync_states(
                &format!("samod-run-{run}"),
                "fatima",
                &[(id, vec![1])],
                16,
                day,
            )
            .await
            .expect("put");
    }
    store
        .put_sync_states("joop-phone", "joop", &[(id, vec![2])], 16, day)
        .await
        .expect("put");
    assert_eq!(
        store
            .sync_state_storages(Some("fatima"))
            .await
            .expect("count"),
        16
    );
    assert_eq!(
        store
            .sync_state_storages(Some("joop"))
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        store.sync_state("samod-run-39", &id).await.expect("get"),
        Some(vec![1]),
        "the newest run keeps its state"
    );
    // Expiry: after a second has passed, a zero TTL drops every older state.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    store
        .put_sync_states(
            "fresh",
            "other",
            &[(id, vec![3])],
            16,
            std::time::Duration::ZERO,
        )
        .await
        .expect("put");
    assert_eq!(store.sync_state_storages(None).await.expect("count"), 1);
    assert_eq!(
        store.sync_state("fresh", &id).await.expect("get"),
        Some(vec![3])
    );
}

/// Tokens authenticate until revoked or expired; only hashes are stored; principals
/// carry exactly the granted roles.
#[tokio::test]
async fn tokens_and_grants() {
    let (_dir, store) = open().await;
    let noord = WijkId::new("noord").expect("wijk");
    store.add_wijk(&noord, "Noord").await.expect("wijk");
    assert!(matches!(
        store.add_wijk(&noord, "Noord").await,
        Err(Error::Conflict(_))
    ));
    store.add_user("ann", "Ann").await.expect("user");
    assert!(store.add_user("has space", "x").await.is_err());
    store
        .grant("ann", &noord, WijkRole::Volunteer)
        .await
        .expect("grant");
    store
        .grant_global("ann", GlobalRole::Consulent)
        .await
        .expect("grant");
    assert!(matches!(
        store.grant("nobody", &noord, WijkRole::Volunteer).await,
        Err(Error::NotFound(_))
    ));

    let issued = buurtsync_server::auth::issue(&store, "ann", 3600)
        .await
        .expect("issue");
    let (principal, token_id) = buurtsync_server::auth::authenticate(&store, &issued.secret)
        .await
        .expect("authenticates");
    assert_eq!(token_id, issued.id);
    assert_eq!(principal.user_id, "ann");
    assert_eq!(principal.grants.len(), 1);
    assert_eq!(principal.grants[0].role, WijkRole::Volunteer);
    assert_eq!(principal.global_roles, vec![GlobalRole::Consulent]);

    let listed = store.list_tokens(Some("ann")).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(!serde_json::to_string(&listed)
        .expect("json")
        .contains(&issued.secret));

    assert_eq!(
        store
            .revoke_token(Some(&issued.id), None)
            .await
            .expect("revoke"),
        Some(issued.id.clone())
    );
    assert!(matches!(
        buurtsync_server::auth::authenticate(&store, &issued.secret).await,
        Err(Error::Unauthorized)
    ));
    assert_eq!(
        store
            .revoke_token(Some(&issued.id), None)
            .await
            .expect("again"),
        None
    );

    // Expired: a token whose expiry is in the past does not authenticate.
    let hash = buurtsync_server::auth::hash_secret("bst_expired");
    store
        .insert_token("tok_old", "ann", &hash, 1)
        .await
        .expect("insert");
    assert!(store.token_user(&hash).await.expect("lookup").is_none());
}

/// Erasure removes every row of the document, destroys its key, leaves a tombstone
/// that refuses re-creation, and records provenance until then.
#[tokio::test]
async fn erasure_destroys_key_and_leaves_tombstone() {
    let (_dir, store) = open().await;
    let hub = Hub::new(store.clone(), 1, u64::MAX);
    let id = DocumentId::random();
    let mut doc = Automerge::new();
    put(&mut doc, 0);
    let e = hub
        .create(entry(id), doc, ("ann", "tok/phone"))
        .await
        .expect("create");
    {
        let mut state = e.state.lock().await;
        put(&mut state.doc, 1);
        hub.persist(&id, &mut state, Some(("bob", "tok2/tablet")))
            .await
            .expect("persist");
    }
    let authors = store.change_authors(&id).await.expect("authors");
    assert_eq!(authors.len(), 2);
    let mut who: Vec<(&str, &str)> = authors
        .iter()
        .map(|(_, user, device, _)| (user.as_str(), device.as_str()))
        .collect();
    who.sort();
    assert_eq!(who, vec![("ann", "tok/phone"), ("bob", "tok2/tablet")]);
    store
        .put_sync_states(
            "peer",
            "u",
            &[(id, vec![1])],
            16,
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("state");

    let tomb = store.erase(&id, "privacy-officer").await.expect("erase");
    assert_eq!(tomb.erased_by, "privacy-officer");
    assert!(store.catalog(&id).await.expect("catalog").is_none());
    assert!(store.load_document(&id).await.expect("load").is_none());
    assert!(
        store.doc_key(&id).await.expect("key").is_none(),
        "key survived erasure"
    );
    assert_eq!(store.sync_state("peer", &id).await.expect("state"), None);
    assert!(store.change_authors(&id).await.expect("authors").is_empty());
    assert!(store.tombstone(&id).await.expect("tombstone").is_some());
    assert!(matches!(
        store
            .create_document(&entry(id), b"again", &DocKey::random())
            .await,
        Err(Error::Erased(_))
    ));
    // Erasing again is harmless; erasing the unknown is NotFound.
    store.erase(&id, "again").await.expect("idempotent");
    assert!(matches!(
        store.erase(&DocumentId::random(), "x").await,
        Err(Error::NotFound(_))
    ));
}
