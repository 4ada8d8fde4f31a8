//! The store against a real database, on both engines (a SQLite file and a fresh
//! PostgreSQL database): documents, chunks and compaction, sync states, accounts and
//! tokens, erasure, and what several nodes on one store rely on (catching up with
//! another node's commits, compaction races, the change feed).

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use buurtsync_server::audit::{AuditAction, AuditEvent};
use buurtsync_server::hub::Hub;
use buurtsync_server::store::changes::FeedEvent;
use buurtsync_server::store::crypto::DocKey;
use buurtsync_server::store::{heads_text, CatalogEntry, Provenance, Store};
use buurtsync_server::Error;
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::policy::{GlobalRole, WijkRole};
use sync_core::protocol::DocumentId;

mod backends;
use backends::Backend;

on_both_backends!(
    chunks_compact_and_reload,
    ids_are_unique_and_chunks_idempotent,
    sync_states_round_trip,
    sync_states_belong_to_their_user,
    sync_states_are_capped_per_user_and_expire,
    tokens_and_grants,
    erasure_destroys_key_and_leaves_tombstone,
    listing_and_hand_over_flag,
    listing_by_read_scope,
    another_node_catches_up,
    stale_compaction_keeps_other_nodes_chunks,
    concurrent_compactions_lose_nothing,
    change_feed_reports_other_nodes_commits,
    change_numbers_feed_the_cursor,
    change_numbers_follow_commit_order,
    commit_records_authors_and_audit_together,
    cache_budget_evicts_and_reloads,
    catalog_heads_follow_commits,
);

async fn open(backend: Backend) -> (backends::Db, Store) {
    let db = backends::database(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    (db, store)
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
async fn chunks_compact_and_reload(backend: Backend) {
    let (_db, store) = open(backend).await;
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
            .documents()
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
async fn ids_are_unique_and_chunks_idempotent(backend: Backend) {
    let (_db, store) = open(backend).await;
    let id = DocumentId::random();
    let key = DocKey::random();
    store
        .documents()
        .create_document(&entry(id), b"x", &key)
        .await
        .expect("create");
    assert!(matches!(
        store
            .documents()
            .create_document(&entry(id), b"y", &DocKey::random())
            .await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.documents().catalog(&id).await.expect("catalog"),
        Some(entry(id))
    );
    // Chunk keys are content hashes: the same chunk twice is stored once.
    store
        .documents()
        .append_chunk(&id, &key, b"chunk", &[])
        .await
        .expect("append");
    store
        .documents()
        .append_chunk(&id, &key, b"chunk", &[])
        .await
        .expect("append again");
    assert_eq!(
        store
            .documents()
            .load_document(&id)
            .await
            .expect("load")
            .expect("doc")
            .chunks,
        2
    );
}

/// Sync states persist per (peer storage, document) and are overwritten in place.
async fn sync_states_round_trip(backend: Backend) {
    let (_db, store) = open(backend).await;
    let id = DocumentId::random();
    store
        .documents()
        .create_document(&entry(id), b"x", &DocKey::random())
        .await
        .expect("create");
    assert_eq!(
        store
            .sync_states()
            .get("peer", "u", &id)
            .await
            .expect("get"),
        None
    );
    store
        .sync_states()
        .put(
            "peer",
            "u",
            &[(id, vec![1, 2])],
            16,
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("put");
    store
        .sync_states()
        .put(
            "peer",
            "u",
            &[(id, vec![3])],
            16,
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("put");
    assert_eq!(
        store
            .sync_states()
            .get("peer", "u", &id)
            .await
            .expect("get"),
        Some(vec![3])
    );
    assert_eq!(
        store
            .sync_states()
            .get("other", "u", &id)
            .await
            .expect("get"),
        None
    );
}

/// A client announcing a new storageId on every run (samod does) cannot grow the sync
/// states without bound: each user keeps the most recent `per_user` peer stores, and
/// states older than the TTL go.
async fn sync_states_are_capped_per_user_and_expire(backend: Backend) {
    let (_db, store) = open(backend).await;
    let id = DocumentId::random();
    store
        .documents()
        .create_document(&entry(id), b"x", &DocKey::random())
        .await
        .expect("create");
    let day = std::time::Duration::from_secs(24 * 3600);
    for run in 0..40 {
        store
            .sync_states()
            .put(
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
        .sync_states()
        .put("joop-phone", "joop", &[(id, vec![2])], 16, day)
        .await
        .expect("put");
    assert_eq!(
        store
            .sync_states()
            .storages(Some("fatima"))
            .await
            .expect("count"),
        16
    );
    assert_eq!(
        store
            .sync_states()
            .storages(Some("joop"))
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        store
            .sync_states()
            .get("samod-run-39", "fatima", &id)
            .await
            .expect("get"),
        Some(vec![1]),
        "the newest run keeps its state"
    );
    // Expiry: after a second has passed, a zero TTL drops every older state.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    store
        .sync_states()
        .put(
            "fresh",
            "other",
            &[(id, vec![3])],
            16,
            std::time::Duration::ZERO,
        )
        .await
        .expect("put");
    assert_eq!(store.sync_states().storages(None).await.expect("count"), 1);
    assert_eq!(
        store
            .sync_states()
            .get("fresh", "other", &id)
            .await
            .expect("get"),
        Some(vec![3])
    );
}

/// Tokens authenticate until revoked or expired; only hashes are stored; principals
/// carry exactly the granted roles.
async fn tokens_and_grants(backend: Backend) {
    let (_db, store) = open(backend).await;
    let noord = WijkId::new("noord").expect("wijk");
    store
        .accounts()
        .add_wijk(&noord, "Noord")
        .await
        .expect("wijk");
    assert!(matches!(
        store.accounts().add_wijk(&noord, "Noord").await,
        Err(Error::Conflict(_))
    ));
    store.accounts().add_user("ann", "Ann").await.expect("user");
    assert!(store.accounts().add_user("has space", "x").await.is_err());
    store
        .accounts()
        .grant("ann", &noord, WijkRole::Volunteer)
        .await
        .expect("grant");
    store
        .accounts()
        .grant_global("ann", GlobalRole::Consulent)
        .await
        .expect("grant");
    assert!(matches!(
        store
            .accounts()
            .grant("nobody", &noord, WijkRole::Volunteer)
            .await,
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

    let listed = store
        .accounts()
        .list_tokens(Some("ann"))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(!serde_json::to_string(&listed)
        .expect("json")
        .contains(&issued.secret));

    assert_eq!(
        store
            .accounts()
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
            .accounts()
            .revoke_token(Some(&issued.id), None)
            .await
            .expect("again"),
        None
    );

    // Expired: a token whose expiry is in the past does not authenticate.
    let hash = buurtsync_server::auth::hash_secret("bst_expired");
    store
        .accounts()
        .insert_token("tok_old", "ann", &hash, 1)
        .await
        .expect("insert");
    assert!(store
        .accounts()
        .token_user(&hash)
        .await
        .expect("lookup")
        .is_none());
}

/// Erasure removes every row of the document, destroys its key, leaves a tombstone
/// that refuses re-creation, and records provenance until then.
async fn erasure_destroys_key_and_leaves_tombstone(backend: Backend) {
    let (_db, store) = open(backend).await;
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
    let authors = store
        .documents()
        .change_authors(&id)
        .await
        .expect("authors");
    assert_eq!(authors.len(), 2);
    let mut who: Vec<(&str, &str)> = authors
        .iter()
        .map(|(_, user, device, _)| (user.as_str(), device.as_str()))
        .collect();
    who.sort();
    assert_eq!(who, vec![("ann", "tok/phone"), ("bob", "tok2/tablet")]);
    store
        .sync_states()
        .put(
            "peer",
            "u",
            &[(id, vec![1])],
            16,
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("state");

    let tomb = store
        .documents()
        .erase(&id, "privacy-officer")
        .await
        .expect("erase");
    assert_eq!(tomb.erased_by, "privacy-officer");
    assert!(store
        .documents()
        .catalog(&id)
        .await
        .expect("catalog")
        .is_none());
    assert!(store
        .documents()
        .load_document(&id)
        .await
        .expect("load")
        .is_none());
    assert!(
        store.documents().doc_key(&id).await.expect("key").is_none(),
        "key survived erasure"
    );
    assert_eq!(
        store
            .sync_states()
            .get("peer", "u", &id)
            .await
            .expect("state"),
        None
    );
    assert!(store
        .documents()
        .change_authors(&id)
        .await
        .expect("authors")
        .is_empty());
    assert!(store
        .documents()
        .tombstone(&id)
        .await
        .expect("tombstone")
        .is_some());
    assert!(matches!(
        store
            .documents()
            .create_document(&entry(id), b"again", &DocKey::random())
            .await,
        Err(Error::Erased(_))
    ));
    // Erasing again is harmless; erasing the unknown is NotFound.
    store
        .documents()
        .erase(&id, "again")
        .await
        .expect("idempotent");
    assert!(matches!(
        store.documents().erase(&DocumentId::random(), "x").await,
        Err(Error::NotFound(_))
    ));
}

/// The catalog listing filters by wijk, kind and time on both engines, carries the
/// hand-over flag, and `erased_among` finds exactly the erased ids.
async fn listing_and_hand_over_flag(backend: Backend) {
    let (_db, store) = open(backend).await;
    let a = DocumentId::random();
    let b = DocumentId::random();
    store
        .documents()
        .create_document(&entry(a), b"x", &DocKey::random())
        .await
        .expect("create");
    let mut zuid = entry(b);
    zuid.partition.wijk = WijkId::new("zuid").expect("wijk");
    zuid.created_at = 5;
    store
        .documents()
        .create_document(&zuid, b"y", &DocKey::random())
        .await
        .expect("create");
    store
        .documents()
        .set_handed_over(&a, true)
        .await
        .expect("flag");
    let all = store
        .documents()
        .list_catalog(None, None, 0)
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|(e, h)| (e.id, *h)).collect::<Vec<_>>(),
        vec![(a, true), (b, false)]
    );
    let noord = WijkId::new("noord").expect("wijk");
    let only_noord = store
        .documents()
        .list_catalog(Some(&noord), Some(DocumentKind::Plan), 0)
        .await
        .expect("list");
    assert_eq!(only_noord.len(), 1);
    assert_eq!(only_noord[0].0.id, a);
    let since = store
        .documents()
        .list_catalog(None, None, 2)
        .await
        .expect("list");
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].0.id, b);
    store.documents().erase(&b, "officer").await.expect("erase");
    assert_eq!(
        store
            .documents()
            .erased_among(&[a, b, DocumentId::random()])
            .await
            .expect("erased"),
        vec![b]
    );
}

/// `list_readable` returns exactly the scope's partitions (and handed-over plans for a
/// consulent's scope), each once; `since` keeps only creations and hand-over flips at
/// or after it, and a flip moves `changed_at`.
async fn listing_by_read_scope(backend: Backend) {
    use sync_core::policy::ReadScope;
    let (_db, store) = open(backend).await;
    let part = |wijk: &str, kind| Partition {
        wijk: WijkId::new(wijk).expect("wijk"),
        kind,
    };
    let mut made = Vec::new();
    for partition in [
        part("noord", DocumentKind::Plan),
        part("noord", DocumentKind::Activiteit),
        part("zuid", DocumentKind::Plan),
    ] {
        let mut e = entry(DocumentId::random());
        e.partition = partition;
        store
            .documents()
            .create_document(&e, b"x", &DocKey::random())
            .await
            .expect("create");
        made.push(e.id);
    }
    let [noord_plan, noord_act, zuid_plan] = made[..] else {
        unreachable!()
    };
    let ids = |listed: Vec<buurtsync_server::store::listing::Listed>| {
        let mut ids: Vec<DocumentId> = listed.iter().map(|l| l.entry.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<DocumentId>| {
        v.sort();
        v
    };
    let professional = ReadScope {
        partitions: vec![
            part("noord", DocumentKind::Plan),
            part("noord", DocumentKind::Activiteit),
        ],
        handed_over_plans: false,
    };
    let list = |scope: &ReadScope, since| {
        let (store, scope) = (store.clone(), scope.clone());
        async move {
            store
                .documents()
                .list_readable(&scope, None, None, since)
                .await
                .expect("list")
        }
    };
    assert_eq!(
        ids(list(&professional, 0).await),
        sorted(vec![noord_plan, noord_act])
    );
    let consulent = ReadScope {
        partitions: Vec::new(),
        handed_over_plans: true,
    };
    assert!(list(&consulent, 0).await.is_empty());
    let created_at = list(&professional, 0).await[0].changed_at;
    store
        .documents()
        .set_handed_over(&zuid_plan, true)
        .await
        .expect("flag");
    store
        .documents()
        .set_handed_over(&noord_plan, true)
        .await
        .expect("flag");
    assert_eq!(
        ids(list(&consulent, 0).await),
        sorted(vec![noord_plan, zuid_plan])
    );
    // Both a partition and a hand-over: listed once.
    let both = ReadScope {
        partitions: professional.partitions.clone(),
        handed_over_plans: true,
    };
    assert_eq!(
        ids(list(&both, 0).await),
        sorted(vec![noord_plan, noord_act, zuid_plan])
    );
    let flipped = list(&consulent, 0).await;
    assert!(flipped.iter().all(|l| l.changed_at >= created_at));
    let later = flipped.iter().map(|l| l.changed_at).max().expect("two") + 1;
    assert!(list(&both, later).await.is_empty());
    let noord = WijkId::new("noord").expect("wijk");
    let filtered = store
        .documents()
        .list_readable(&both, Some(&noord), Some(DocumentKind::Plan), 0)
        .await
        .expect("list");
    assert_eq!(ids(filtered), vec![noord_plan]);
}

/// Two nodes on one store: a commit through node 1 reaches node 2's loaded copy with
/// `catch_up` (told the heads, or not), and becomes node 2's committed heads.
async fn another_node_catches_up(backend: Backend) {
    let (db, store1) = open(backend).await;
    let store2 = Store::open(&db.url).await.expect("second node");
    let (hub1, hub2) = (
        Hub::new(store1.clone(), 1, u64::MAX),
        Hub::new(store2.clone(), 1, u64::MAX),
    );
    let id = DocumentId::random();
    let mut doc = Automerge::new();
    put(&mut doc, 0);
    let on1 = hub1
        .create(entry(id), doc, ("u", "d"))
        .await
        .expect("create");
    let on2 = hub2.get(id).await.expect("get").expect("found");

    let heads = {
        let mut state = on1.state.lock().await;
        put(&mut state.doc, 1);
        hub1.persist(&id, &mut state, None).await.expect("persist");
        state.doc.get_heads()
    };
    assert!(hub2.catch_up(id, &heads).await.expect("catch up"));
    assert_eq!(on2.state.lock().await.saved_heads, heads);
    assert!(
        !hub2.catch_up(id, &heads).await.expect("again"),
        "nothing new the second time"
    );

    // Both nodes commit on their own copies, through appends and compactions; each
    // catches up without being told the heads; both end with every change.
    for i in 2..40 {
        for (hub, on) in [(&hub1, &on1), (&hub2, &on2)] {
            let mut state = on.state.lock().await;
            put(
                &mut state.doc,
                i * 2 + usize::from(std::ptr::eq(hub, &hub2)),
            );
            hub.persist(&id, &mut state, None).await.expect("persist");
        }
    }
    hub1.catch_up(id, &[]).await.expect("catch up");
    hub2.catch_up(id, &[]).await.expect("catch up");
    let h1 = on1.state.lock().await.doc.get_heads();
    let h2 = on2.state.lock().await.doc.get_heads();
    assert_eq!(h1, h2);
    let stored = store1
        .documents()
        .load_document(&id)
        .await
        .expect("load")
        .expect("doc");
    let reloaded = Automerge::load(&stored.bytes).expect("loads");
    assert_eq!(reloaded.get_heads(), h1);
    assert_eq!(
        reloaded.length(ROOT),
        2 + 2 * 38,
        "every change of both nodes"
    );
}

/// A copy of `base` with its own actor (another node's view).
fn fork_of(base: &Automerge) -> Automerge {
    base.fork()
}

/// Compaction with a copy that lacks another node's committed chunk keeps that chunk's
/// changes: it folds in what is stored instead of overwriting it.
async fn stale_compaction_keeps_other_nodes_chunks(backend: Backend) {
    let (db, a) = open(backend).await;
    let b = Store::open(&db.url).await.expect("second node");
    let id = DocumentId::random();
    let mut base = Automerge::new();
    put(&mut base, 0);
    let key = a
        .documents()
        .create_document(&entry(id), &base.save(), &DocKey::random())
        .await
        .expect("create");
    let mut on_a = fork_of(&base);
    let mut on_b = fork_of(&base);
    put(&mut on_a, 1);
    put(&mut on_b, 2);
    a.documents()
        .append_chunk(
            &id,
            &key,
            &on_a.save_after(&base.get_heads()),
            &on_a.get_heads(),
        )
        .await
        .expect("append a");
    b.documents()
        .append_chunk(
            &id,
            &key,
            &on_b.save_after(&base.get_heads()),
            &on_b.get_heads(),
        )
        .await
        .expect("append b");
    // Node a never heard of b's change, and compacts.
    a.documents()
        .compact(&id, &key, |stored| merge_and_save(&mut on_a, stored))
        .await
        .expect("compact");
    let stored = a
        .documents()
        .load_document(&id)
        .await
        .expect("load")
        .expect("doc");
    assert_eq!(stored.chunks, 1, "one snapshot replaced the chunks");
    let doc = Automerge::load(&stored.bytes).expect("loads");
    for k in ["k0", "k1", "k2"] {
        assert!(doc.get(ROOT, k).expect("get").is_some(), "{k} lost");
    }
}

fn merge_and_save(
    doc: &mut Automerge,
    stored: &[u8],
) -> Result<(Vec<u8>, Vec<automerge::ChangeHash>), Error> {
    doc.load_incremental(stored)
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok((doc.save(), doc.get_heads()))
}

/// Two nodes compacting the same document at the same moment, round after round,
/// each right after committing a change the other has not seen: nothing is lost.
async fn concurrent_compactions_lose_nothing(backend: Backend) {
    let (db, a) = open(backend).await;
    let b = Store::open(&db.url).await.expect("second node");
    let id = DocumentId::random();
    let mut base = Automerge::new();
    put(&mut base, 0);
    let key = a
        .documents()
        .create_document(&entry(id), &base.save(), &DocKey::random())
        .await
        .expect("create");
    let mut on_a = fork_of(&base);
    let mut on_b = fork_of(&base);
    let mut expected = vec!["k0".to_string()];
    for round in 1..=12 {
        let (ka, kb) = (round * 2, round * 2 + 1);
        for (store, doc, k) in [(&a, &mut on_a, ka), (&b, &mut on_b, kb)] {
            let before = doc.get_heads();
            put(doc, k);
            store
                .documents()
                .append_chunk(&id, &key, &doc.save_after(&before), &doc.get_heads())
                .await
                .expect("append");
            expected.push(format!("k{k}"));
        }
        let (ra, rb) = tokio::join!(
            a.documents()
                .compact(&id, &key, |stored| merge_and_save(&mut on_a, stored)),
            b.documents()
                .compact(&id, &key, |stored| merge_and_save(&mut on_b, stored)),
        );
        ra.expect("compact a");
        rb.expect("compact b");
        let stored = b
            .documents()
            .load_document(&id)
            .await
            .expect("load")
            .expect("doc");
        let doc = Automerge::load(&stored.bytes).expect("loads");
        for k in &expected {
            assert!(
                doc.get(ROOT, k.as_str()).expect("get").is_some(),
                "round {round}: {k} lost"
            );
        }
    }
}

/// On PostgreSQL a commit through one node is announced to the others with its
/// document and heads, and a node does not hear its own; SQLite has no feed.
async fn change_feed_reports_other_nodes_commits(backend: Backend) {
    let (db, a) = open(backend).await;
    let b = Store::open(&db.url).await.expect("second node");
    let feed = b.change_feed().await.expect("feed");
    let Some(mut feed) = feed else {
        assert_eq!(backend, Backend::Sqlite, "only SQLite has no feed");
        return;
    };
    let id = DocumentId::random();
    let mut doc = Automerge::new();
    put(&mut doc, 0);
    let key = a
        .documents()
        .create_document(&entry(id), &doc.save(), &DocKey::random())
        .await
        .expect("create");
    let before = doc.get_heads();
    put(&mut doc, 1);
    // b's own commit first: b must skip it and report a's.
    b.documents()
        .append_chunk(&id, &key, b"own", &before)
        .await
        .expect("own append");
    a.documents()
        .append_chunk(&id, &key, &doc.save_after(&before), &doc.get_heads())
        .await
        .expect("append");
    let event = tokio::time::timeout(std::time::Duration::from_secs(20), feed.next())
        .await
        .expect("a notification within the wait")
        .expect("feed");
    match event {
        FeedEvent::Change(change) => {
            assert_eq!(change.doc, id);
            assert_eq!(change.heads, doc.get_heads());
        }
        FeedEvent::Erased(_) => panic!("a commit reported as an erasure"),
        FeedEvent::Lost => panic!("lost the connection"),
    }
    // Another node's erasure reaches this node on the feed too (item 2 of issue 16).
    a.documents()
        .erase(&id, "privacy-officer")
        .await
        .expect("erase");
    let event = tokio::time::timeout(std::time::Duration::from_secs(20), feed.next())
        .await
        .expect("a notification within the wait")
        .expect("feed");
    assert!(
        matches!(event, FeedEvent::Erased(erased) if erased == id),
        "{event:?}"
    );
}

/// Every commit and erasure takes the next change number in order; `changes_after`
/// returns each document once, with its last change, and erasures as erased rows; the
/// pseudonym secret is created once and survives reopening the store.
async fn change_numbers_feed_the_cursor(backend: Backend) {
    let (db, store) = open(backend).await;
    let hub = Hub::new(store.clone(), 1, u64::MAX);
    let (a, b) = (DocumentId::random(), DocumentId::random());
    let mut entries = Vec::new();
    for id in [a, b] {
        let mut doc = Automerge::new();
        put(&mut doc, 0);
        entries.push(
            hub.create(entry(id), doc, ("u", "d"))
                .await
                .expect("create"),
        );
    }
    let all = store.central().changes_after(0, 100).await.expect("feed");
    assert_eq!(
        all.iter().map(|r| (r.id, r.seq)).collect::<Vec<_>>(),
        [(a, 1), (b, 2)]
    );
    assert!(all.iter().all(|r| !r.erased && r.created_at == Some(1)));

    {
        let mut state = entries[0].state.lock().await;
        put(&mut state.doc, 1);
        hub.persist(&a, &mut state, None).await.expect("persist");
    }
    let after = store.central().changes_after(2, 100).await.expect("feed");
    assert_eq!(
        after.iter().map(|r| (r.id, r.seq)).collect::<Vec<_>>(),
        [(a, 3)]
    );
    assert_eq!(
        store.central().changes_after(0, 1).await.expect("limit")[0].id,
        b
    );

    drop(entries);
    store.documents().erase(&b, "admin").await.expect("erase");
    let after = store.central().changes_after(3, 100).await.expect("feed");
    assert_eq!(after.len(), 1);
    assert!(after[0].erased && after[0].id == b && after[0].seq == 4);
    assert_eq!(store.central().last_change_seq().await.expect("last"), 4);

    let secret = store.central().pseudonym_secret().await.expect("secret");
    assert_eq!(
        store.central().pseudonym_secret().await.expect("again"),
        secret
    );
    store.close().await;
    let reopened = Store::open(&db.url).await.expect("reopen");
    assert_eq!(
        reopened.central().pseudonym_secret().await.expect("kept"),
        secret
    );
    assert_ne!(secret, [0u8; 32]);
}

/// Two nodes commit to several documents at once while a reader follows the feed with
/// its cursor: every number is handed out once, and the reader ends having seen every
/// document's last commit — a number that became visible after the cursor passed it
/// would be skipped for good.
async fn change_numbers_follow_commit_order(backend: Backend) {
    const DOCS: usize = 6;
    const APPENDS: usize = 15;
    let (db, a) = open(backend).await;
    let b = Store::open(&db.url).await.expect("second node");
    let mut docs = Vec::new();
    for _ in 0..DOCS {
        let id = DocumentId::random();
        let key = a
            .documents()
            .create_document(&entry(id), b"first", &DocKey::random())
            .await
            .expect("create");
        docs.push((id, key));
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (a.clone(), done.clone());
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen = std::collections::HashMap::new();
            loop {
                // Read the flag first: a poll after the writers finished sees all.
                let last_round = done.load(std::sync::atomic::Ordering::SeqCst);
                for row in store
                    .central()
                    .changes_after(cursor, 1000)
                    .await
                    .expect("feed")
                {
                    assert!(row.seq > cursor, "the feed went backwards");
                    cursor = row.seq;
                    seen.insert(row.id, row.seq);
                }
                if last_round {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut writers = Vec::new();
    for (n, (id, key)) in docs.iter().cloned().enumerate() {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                let chunk = format!("{id} {i}");
                store
                    .documents()
                    .append_chunk(&id, &key, chunk.as_bytes(), &[])
                    .await
                    .expect("append")
                    .expect("a new chunk");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    let all = a.central().changes_after(0, 1000).await.expect("feed");
    assert_eq!(all.len(), DOCS);
    for row in &all {
        assert_eq!(
            seen.get(&row.id),
            Some(&row.seq),
            "last commit of {} skipped",
            row.id
        );
    }
    let total = i64::try_from(DOCS * (1 + APPENDS)).expect("small");
    assert_eq!(a.central().last_change_seq().await.expect("last"), total);
    assert_eq!(all.last().map(|r| r.seq), Some(total));
    // A chunk stored already is no change: no number.
    let (id, key) = &docs[0];
    b.documents()
        .append_chunk(id, key, b"first", &[])
        .await
        .expect("again");
    assert_eq!(a.central().last_change_seq().await.expect("last"), total);
}

/// A relayed change is one commit: chunk, change authors, the write's audit entry and
/// the change number land together, on both paths (incremental chunk and compaction),
/// and the audit chain stays intact.
async fn commit_records_authors_and_audit_together(backend: Backend) {
    let (_db, store) = open(backend).await;
    let hub = Hub::new(store.clone(), 1, u64::MAX);
    let id = DocumentId::random();
    let mut doc = Automerge::new();
    put(&mut doc, 0);
    let entry_ = hub
        .create(entry(id), doc, ("u", "device"))
        .await
        .expect("create");
    let mut saw_compaction = false;
    for i in 1..30 {
        let mut state = entry_.state.lock().await;
        put(&mut state.doc, i);
        let hash = state.doc.get_heads()[0].to_string();
        let event = AuditEvent::new("bob", "tok/phone", AuditAction::Write)
            .on(&id, Some(&entry_.catalog.partition));
        let seq_before = store.central().last_change_seq().await.expect("seq");
        assert!(hub
            .persist_with(
                &id,
                &mut state,
                Some(("bob", "tok/phone")),
                std::slice::from_ref(&event)
            )
            .await
            .expect("persist"));
        drop(state);
        let stored = store
            .documents()
            .load_document(&id)
            .await
            .expect("load")
            .expect("doc");
        saw_compaction |= stored.chunks == 1;
        let authors = store
            .documents()
            .change_authors(&id)
            .await
            .expect("authors");
        assert!(
            authors
                .iter()
                .any(|(h, user, device, _)| *h == hash && user == "bob" && device == "tok/phone"),
            "commit {i}: author of {hash} recorded"
        );
        let writes = store
            .audit()
            .for_document(&id.to_string())
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.event.action == AuditAction::Write)
            .count();
        assert_eq!(writes, i, "one write entry per commit");
        assert!(
            store.central().last_change_seq().await.expect("seq") > seq_before,
            "commit {i} took a new change number"
        );
    }
    assert!(saw_compaction, "the compaction path was exercised");
    let report = store.audit().verify().await.expect("verify");
    assert!(report.is_ok(), "audit chain intact: {report:?}");
    assert_eq!(report.entries, 29);
}

/// With a cache budget the hub evicts documents nobody is working on and reloads them
/// on next use with exactly what was committed; edits after a reload commit as usual; a
/// document being worked on is never evicted; evicted documents count nothing.
async fn cache_budget_evicts_and_reloads(backend: Backend) {
    let (_db, store) = open(backend).await;
    // A budget of one byte: everything not locked goes as soon as the hub checks.
    let hub = Hub::new(store.clone(), 1, u64::MAX).with_cache_budget(1);
    let mut entries = Vec::new();
    let mut committed = Vec::new();
    for _ in 0..5 {
        let mut doc = Automerge::new();
        for i in 0..3 {
            put(&mut doc, i);
        }
        committed.push(doc.get_heads());
        entries.push(
            hub.create(entry(DocumentId::random()), doc, ("u", "device"))
                .await
                .expect("create"),
        );
    }
    assert!(hub.evictions() >= 5, "evictions: {}", hub.evictions());
    assert_eq!(hub.cache_bytes(), 0, "evicted documents count nothing");
    for (e, heads) in entries.iter().zip(&committed) {
        let state = e.state.lock().await;
        assert!(!state.is_resident());
        assert_eq!(
            &state.saved_heads, heads,
            "acknowledged heads survive eviction"
        );
    }
    for (e, heads) in entries.iter().zip(&committed) {
        let id = e.id();
        let mut state = hub.lock(e).await.expect("reload");
        assert!(state.is_resident());
        assert_eq!(&state.doc.get_heads(), heads, "reloaded = committed");
        assert!(hub.cache_bytes() > 0, "a reloaded document counts again");
        put(&mut state.doc, 10);
        assert!(hub
            .persist(&id, &mut state, Some(("u", "device")))
            .await
            .expect("persist after reload"));
        let now = state.doc.get_heads();
        drop(state);
        let stored = store
            .documents()
            .load_document(&id)
            .await
            .expect("load")
            .expect("there");
        assert_eq!(
            Automerge::load(&stored.bytes).expect("loads").get_heads(),
            now
        );
    }
    // Work in progress is never evicted.
    let guard = hub.lock(&entries[0]).await.expect("lock");
    hub.enforce_budget();
    assert!(guard.is_resident(), "a locked document stays");
    drop(guard);
    hub.enforce_budget();
    assert_eq!(hub.cache_bytes(), 0);
    // Without a budget nothing is evicted.
    let unbounded = Hub::new(store.clone(), 1, u64::MAX);
    let e = unbounded
        .get(entries[1].id())
        .await
        .expect("get")
        .expect("there");
    unbounded.enforce_budget();
    assert!(e.state.lock().await.is_resident());
    assert_eq!(unbounded.evictions(), 0);
}

/// The catalog's committed heads (what a connect-time summary compares against) are
/// written by creation, by an append from the heads it started at, and by compaction;
/// an append whose starting heads are not the catalog's (another node appended
/// meanwhile) makes them unknown rather than wrong; one summary query reads many.
async fn catalog_heads_follow_commits(backend: Backend) {
    let (_db, store) = open(backend).await;
    let heads_of = |facts: &std::collections::HashMap<DocumentId, _>, id: &DocumentId| {
        facts
            .get(id)
            .map(|f: &buurtsync_server::store::SummaryFacts| f.heads.clone())
    };
    let id = DocumentId::random();
    let mut doc = Automerge::new();
    put(&mut doc, 0);
    let key = store
        .documents()
        .create_document_with_heads(
            &entry(id),
            &doc.save(),
            Some(&doc.get_heads()),
            &DocKey::random(),
        )
        .await
        .expect("create");
    let unknown = DocumentId::random();
    let facts = store.summary().facts(&[id, unknown]).await.expect("facts");
    assert_eq!(
        heads_of(&facts, &id),
        Some(Some(heads_text(&doc.get_heads())))
    );
    assert!(!facts.contains_key(&unknown), "unknown ids are absent");
    assert_eq!(facts[&id].partition, entry(id).partition);

    // An append from the catalog's heads moves them.
    let base = doc.get_heads();
    put(&mut doc, 1);
    store
        .documents()
        .append_chunk_with(
            &id,
            &key,
            &doc.save_after(&base),
            Some(&base),
            &doc.get_heads(),
            &Provenance::default(),
        )
        .await
        .expect("append");
    let facts = store.summary().facts(&[id]).await.expect("facts");
    assert_eq!(
        heads_of(&facts, &id),
        Some(Some(heads_text(&doc.get_heads())))
    );

    // A writer whose copy started elsewhere cannot prove the stored heads: unknown.
    let mut other = doc.fork();
    put(&mut other, 2);
    store
        .documents()
        .append_chunk_with(
            &id,
            &key,
            &other.save_after(&base),
            Some(&base),
            &other.get_heads(),
            &Provenance::default(),
        )
        .await
        .expect("stale append");
    let facts = store.summary().facts(&[id]).await.expect("facts");
    assert_eq!(
        heads_of(&facts, &id),
        Some(None),
        "a stale base leaves heads unknown"
    );

    // Compaction reads every chunk under the lock: its heads are the stored ones.
    let merged = store
        .documents()
        .compact(&id, &key, |stored| {
            let mut all = Automerge::load(stored).map_err(|e| Error::Corrupt(e.to_string()))?;
            all.merge(&mut other)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok((all.save(), all.get_heads()))
        })
        .await
        .expect("compact");
    assert!(merged.snapshot_bytes > 0);
    let stored = store
        .documents()
        .load_document(&id)
        .await
        .expect("load")
        .expect("doc");
    let all = Automerge::load(&stored.bytes).expect("loads");
    let facts = store.summary().facts(&[id]).await.expect("facts");
    assert_eq!(
        heads_of(&facts, &id),
        Some(Some(heads_text(&all.get_heads())))
    );
}

/// A storageId is self-described: another user announcing a device's storageId
/// neither reads nor overwrites that device's sync states.
async fn sync_states_belong_to_their_user(backend: Backend) {
    let (_db, store) = open(backend).await;
    let id = DocumentId::random();
    store
        .documents()
        .create_document(&entry(id), b"x", &DocKey::random())
        .await
        .expect("create");
    let day = std::time::Duration::from_secs(86_400);
    store
        .sync_states()
        .put("phone-1", "ann", &[(id, vec![1])], 16, day)
        .await
        .expect("put");
    store
        .sync_states()
        .put("phone-1", "mallory", &[(id, vec![9])], 16, day)
        .await
        .expect("put");
    assert_eq!(
        store
            .sync_states()
            .get("phone-1", "mallory", &id)
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store
            .sync_states()
            .get("phone-1", "ann", &id)
            .await
            .expect("get"),
        Some(vec![1])
    );
}
