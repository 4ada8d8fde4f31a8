//! Wijk partitions: who may read what, and that a refusal looks exactly like absence.

use automerge::sync::SyncDoc;
use automerge::Automerge;
use buurtsync_e2e::client::{Client, RawPeer, Seen};
use buurtsync_e2e::server::Fixture;
use sync_core::partition::WijkId;
use sync_core::protocol::{DocumentId, Message};
use sync_core::schema::{self, Activiteit, Plan};

fn wijk(s: &str) -> WijkId {
    WijkId::new(s).expect("wijk")
}

/// The first sync payload of a device that knows nothing of a document.
fn empty_payload() -> Vec<u8> {
    let doc = Automerge::new();
    let mut state = automerge::sync::State::new();
    doc.generate_sync_message(&mut state)
        .expect("message")
        .encode()
}

/// What the server answers a raw `request` or `sync` for `id`, with the id blanked so
/// answers about different ids can be compared.
async fn answer(peer: &mut RawPeer, id: DocumentId, as_request: bool) -> Message {
    let data = empty_payload();
    let msg = if as_request {
        Message::Request {
            sender_id: "raw".into(),
            target_id: "server".into(),
            document_id: id,
            data,
        }
    } else {
        Message::Sync {
            sender_id: "raw".into(),
            target_id: "server".into(),
            document_id: id,
            data,
        }
    };
    peer.send(&msg).await;
    let blank = DocumentId::from_bytes([0; 16]);
    match peer.next().await {
        Seen::Message(Message::DocUnavailable {
            sender_id,
            target_id,
            ..
        }) => Message::DocUnavailable {
            sender_id,
            target_id,
            document_id: blank,
        },
        Seen::Message(Message::Sync {
            sender_id,
            target_id,
            data,
            ..
        }) => Message::Sync {
            sender_id,
            target_id,
            document_id: blank,
            data,
        },
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Volunteers cannot read plans, professionals cannot read another wijk's documents
/// even knowing the id, and every refusal is indistinguishable from a missing document.
#[tokio::test]
async fn denied_reads_look_like_missing_documents() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let plan = prof
        .add_document(schema::new_document(&Plan::new(wijk("noord"), "HH-1")).expect("plan"))
        .await;
    let act = prof
        .add_document(
            schema::new_document(&Activiteit::new(wijk("noord"), "Taalcafé")).expect("act"),
        )
        .await;
    assert!(prof.sync_acked(plan).await && prof.sync_acked(act).await);
    let missing = DocumentId::random();

    // Positive control: the volunteer of noord does get the activiteit.
    let mut vol = Client::connect("vol", &server.url(), &t.vol_noord)
        .await
        .expect("vol");
    assert!(
        vol.fetch(act).await,
        "volunteer must read activiteiten of their wijk"
    );
    assert!(!vol.fetch(plan).await, "volunteer received a plan");
    assert!(vol.unavailable.contains(&plan));

    let mut other = Client::connect("zuid", &server.url(), &t.prof_zuid)
        .await
        .expect("zuid");
    assert!(
        !other.fetch(plan).await,
        "professional of zuid read a noord plan"
    );
    assert!(
        !other.fetch(act).await,
        "professional of zuid read a noord activiteit"
    );

    // Byte for byte the same answers for denied and missing, as request and as sync.
    for (token, denied) in [
        (&t.vol_noord, plan),
        (&t.prof_zuid, plan),
        (&t.prof_zuid, act),
    ] {
        let mut raw = RawPeer::joined(&server.url(), token).await;
        for as_request in [true, false] {
            let for_denied = answer(&mut raw, denied, as_request).await;
            let for_missing = answer(&mut raw, missing, as_request).await;
            assert_eq!(
                for_denied, for_missing,
                "request={as_request}: denial distinguishable from absence"
            );
            if as_request {
                assert!(matches!(for_denied, Message::DocUnavailable { .. }));
            }
        }
    }
    // Nothing of the plan ever reached the volunteer or the other wijk.
    assert!(vol.docs.get(&plan).is_none_or(|d| d.get_heads().is_empty()));
    assert!(other
        .docs
        .get(&plan)
        .is_none_or(|d| d.get_heads().is_empty()));
}

/// A new document's partition is checked against the writer's grants: volunteers
/// create activiteiten but never plans, nobody creates in a wijk they are not granted.
#[tokio::test]
async fn creation_is_checked_against_grants() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    // A volunteer may create an activiteit in their wijk...
    let mut vol = Client::connect("vol", &server.url(), &t.vol_noord)
        .await
        .expect("vol");
    let act = vol
        .add_document(
            schema::new_document(&Activiteit::new(wijk("noord"), "Buurtlunch")).expect("act"),
        )
        .await;
    assert!(vol.sync_acked(act).await, "{:?}", vol.notices);
    assert_eq!(fx.doc_info(&act.to_string())["kind"], "activiteit");
    // ...but not a plan, and nobody creates in a wijk they have no grant in.
    let plan = vol
        .add_document(schema::new_document(&Plan::new(wijk("noord"), "HH-2")).expect("plan"))
        .await;
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let foreign = prof
        .add_document(schema::new_document(&Activiteit::new(wijk("zuid"), "Elders")).expect("act"))
        .await;
    for (client, id) in [(&mut vol, plan), (&mut prof, foreign)] {
        let refused = client
            .pump_until(buurtsync_e2e::WAIT, |c| {
                c.errors().iter().any(|e| e.contains("may not create"))
            })
            .await;
        assert!(refused, "creation not refused: {:?}", client.notices);
        assert!(
            !fx.admin_raw(&["doc", "info", &id.to_string()])
                .status
                .success(),
            "refused document was stored"
        );
    }
}

/// A change that alters meta.wijk / meta.kind, or breaks the schema, is rejected as a
/// whole: not stored, not relayed, and the peer is told why.
#[tokio::test]
async fn rejected_changes_leave_the_stored_document_unchanged() {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;

    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut a = Client::connect("a", &server.url(), &t.prof_noord)
        .await
        .expect("a");
    let mut watcher = Client::connect("w", &server.url(), &t.prof2_noord)
        .await
        .expect("w");
    let id = a.create_plan("noord", "HH-3").await;
    assert!(watcher.fetch(id).await);
    let stored_before = fx.doc_info(&id.to_string());

    type Edit = fn(&mut Automerge);
    let edits: [(&str, Edit, &str); 3] = [
        (
            "move to zuid",
            |d| {
                let meta = d
                    .get(automerge::ROOT, "meta")
                    .expect("get")
                    .expect("meta")
                    .1;
                let mut tx = d.transaction();
                tx.put(&meta, "wijk", "zuid").expect("put");
                tx.commit();
            },
            "never change",
        ),
        (
            "turn into activiteit",
            |d| {
                let meta = d
                    .get(automerge::ROOT, "meta")
                    .expect("get")
                    .expect("meta")
                    .1;
                let mut tx = d.transaction();
                tx.put(&meta, "kind", "activiteit").expect("put");
                tx.commit();
            },
            "never change",
        ),
        (
            "break the schema",
            |d| {
                let mut tx = d.transaction();
                tx.put(automerge::ROOT, "status", "verdwenen").expect("put");
                tx.commit();
            },
            "status",
        ),
    ];
    for (what, edit, reason) in edits {
        // Each attempt starts from a fresh copy of the good document.
        let mut doc = a.docs[&id].fork();
        edit(&mut doc);
        let mut rogue = Client::connect("rogue", &server.url(), &t.prof_noord)
            .await
            .expect("rogue");
        assert!(rogue.fetch(id).await);
        rogue
            .edit(id, |d| {
                let mut fresh = doc.fork();
                d.merge(&mut fresh).expect("merge");
            })
            .await;
        let told = rogue
            .pump_until(buurtsync_e2e::WAIT, |c| {
                c.errors().iter().any(|e| e.contains(reason))
            })
            .await;
        assert!(
            told,
            "{what}: no error naming {reason:?}: {:?}",
            rogue.notices
        );
        assert_eq!(
            fx.doc_info(&id.to_string())["heads"],
            stored_before["heads"],
            "{what}: stored document changed"
        );
        rogue.disconnect().await;
    }
    // The watcher never saw any of it.
    watcher
        .pump_for(std::time::Duration::from_millis(300))
        .await;
    assert_eq!(watcher.heads_hex(id), a.heads_hex(id));
    let plan = Plan::read(&watcher.docs[&id]).expect("still a valid plan");
    assert_eq!(plan.meta.wijk, wijk("noord"));
}
