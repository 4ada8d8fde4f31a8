//! The write path under attack by token holders (issue 16): changes parked behind a
//! missing dependency, writes after revocation, erased documents served from memory,
//! concurrent moves, moves and hand-overs without history, creation answers, and what is
//! logged of unknown messages.

use std::time::Duration;

use automerge::sync;
use automerge::Automerge;
use buurtsync_e2e::client::Client;
use buurtsync_e2e::server::Fixture;
use buurtsync_e2e::WAIT;
use sync_core::partition::WijkId;
use sync_core::protocol::{DocumentId, Message};
use sync_core::schema::{self, Activiteit, ContactKind, ContactMoment, Goal, Leefdomein, Plan};

fn noord() -> WijkId {
    WijkId::new("noord").expect("wijk")
}

fn add_goal(doc: &mut Automerge, text: &str) {
    schema::update::<Plan>(doc, |p| p.goals.push(Goal::new(Leefdomein::Wonen, text)))
        .expect("edit");
}

/// Two new changes on top of `base`, as two `sync` frames: the first carries the
/// dependency, the second only the change that depends on it. Sent alone, the second
/// can only be queued by automerge; the first, sent later, lets it apply. `edit` makes
/// each change; the second carries `bytes` of text. Also returns the heads after both.
fn dependency_and_orphan(
    base: &Automerge,
    id: DocumentId,
    bytes: usize,
    edit: impl Fn(&mut Automerge, &str),
) -> (Message, Message, Vec<String>) {
    let mut ahead = base.fork();
    edit(&mut ahead, "withheld");
    let dependency = ahead.get_last_local_change().expect("change").clone();
    edit(&mut ahead, &noise(bytes));
    let orphan = ahead.get_last_local_change().expect("change").clone();
    let frame = |change: &automerge::Change| {
        let message = sync::Message {
            heads: ahead.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::from(vec![change.raw_bytes().to_vec()]),
            flags: None,
            version: sync::MessageVersion::V1,
        };
        Message::Sync {
            sender_id: "attacker".into(),
            target_id: "server".into(),
            document_id: id,
            data: message.encode(),
        }
    };
    let heads = ahead.get_heads().iter().map(ToString::to_string).collect();
    (frame(&dependency), frame(&orphan), heads)
}

/// A `sync` frame carrying only a change whose dependency is withheld, so automerge can
/// only queue what it receives (see [`dependency_and_orphan`]).
fn orphan_sync(
    base: &Automerge,
    id: DocumentId,
    bytes: usize,
    edit: impl Fn(&mut Automerge, &str),
) -> Message {
    dependency_and_orphan(base, id, bytes, edit).1
}

/// `len` letters that do not compress: queued bytes are measured as automerge stores
/// them, compressed.
fn noise(len: usize) -> String {
    buurtsync_e2e::incompressible(len, 0x9e37_79b9_7f4a_7c15)
}

async fn wait_for_error(client: &mut Client, words: &str) -> bool {
    client
        .pump_until(WAIT, |c| c.errors().iter().any(|e| e.contains(words)))
        .await
}

/// Item 1: changes whose dependency never arrives are refused for a reader (a
/// consulent on a plan's hand-over copy), for someone who may create nothing (an admin,
/// on an unknown id), and for a writer beyond `max_document_bytes` (a volunteer on an
/// activiteit). Before, all three were taken silently and kept in memory.
#[tokio::test]
async fn changes_parked_behind_a_missing_dependency_are_refused() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "consulent-1"]);
    fx.admin(&["grant", "consulent-1", "consulent"]);
    fx.admin(&["user", "add", "beheer"]);
    fx.admin(&["grant", "beheer", "admin"]);
    let consulent_token = fx.token("consulent-1");
    let admin_token = fx.token("beheer");
    let server = fx.start(&["--max-document-bytes", "200000"]);

    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let mut plan = Plan::new(noord(), "HH-Q1");
    plan.handover.requested = true;
    let handed = prof
        .add_document(schema::new_document(&plan).expect("plan"))
        .await;
    assert!(prof.sync_acked(handed).await);

    // The read-only consulent, on the plan's hand-over copy.
    let mut consulent = Client::connect("gemeente", &server.url(), &consulent_token)
        .await
        .expect("consulent");
    let copy = buurtsync_e2e::http::handover_copy(server.addr, &consulent_token).await;
    assert!(consulent.fetch(copy).await, "{:?}", consulent.notices);
    let base = consulent.docs[&copy].clone();
    consulent
        .send(&orphan_sync(&base, copy, 64 * 1024, add_goal))
        .await;
    assert!(
        wait_for_error(&mut consulent, "may not change").await,
        "a reader's queued change was taken: {:?}",
        consulent.notices
    );

    // The admin, who may create nothing, on an id the server does not know.
    let mut admin = Client::connect("beheer", &server.url(), &admin_token)
        .await
        .expect("admin");
    let fresh = schema::new_document(&Plan::new(noord(), "HH-Q2")).expect("plan");
    admin
        .send(&orphan_sync(
            &fresh,
            DocumentId::random(),
            64 * 1024,
            add_goal,
        ))
        .await;
    assert!(
        wait_for_error(&mut admin, "not sent").await,
        "a pending creation kept a queued change: {:?}",
        admin.notices
    );

    // The volunteer, who may write the activiteit, beyond the document limit.
    let mut volunteer = Client::connect("vol", &server.url(), &t.vol_noord)
        .await
        .expect("volunteer");
    let activiteit = volunteer
        .add_document(
            schema::new_document(&Activiteit::new(noord(), "Taalcafe")).expect("activiteit"),
        )
        .await;
    assert!(
        volunteer.sync_acked(activiteit).await,
        "{:?}",
        volunteer.notices
    );
    let base = volunteer.docs[&activiteit].clone();
    let rename = |doc: &mut Automerge, text: &str| {
        schema::update::<Activiteit>(doc, |a| a.title = text.to_owned()).expect("edit");
    };
    for _ in 0..4 {
        volunteer
            .send(&orphan_sync(&base, activiteit, 100 * 1024, rename))
            .await;
    }
    assert!(
        wait_for_error(&mut volunteer, "missing dependencies").await,
        "queued changes were not counted against the document limit: {:?}",
        volunteer.notices
    );
    // The writer's real changes still go through.
    volunteer
        .edit(activiteit, |d| rename(d, "Taalcafe Noord"))
        .await;
    assert!(
        volunteer.sync_acked(activiteit).await,
        "{:?}",
        volunteer.notices
    );
}

/// Item 1, per user: one writer's changes waiting for missing dependencies count
/// against one budget across all the documents they may write
/// (`--max-queued-bytes-per-user`), not the document limit in each. Parking in a
/// second activiteit is refused; once the first one's dependency arrives and its queue
/// drains, the budget is given back. Before, a volunteer could park up to the document
/// limit in every activiteit of their wijk.
#[tokio::test]
async fn queued_changes_count_against_one_budget_per_user() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&["--max-queued-bytes-per-user", "120000"]);
    let mut volunteer = Client::connect("vol", &server.url(), &t.vol_noord)
        .await
        .expect("volunteer");
    let rename = |doc: &mut Automerge, text: &str| {
        schema::update::<Activiteit>(doc, |a| a.title = text.to_owned()).expect("edit");
    };
    let mut activiteiten = Vec::new();
    for title in ["Taalcafe", "Moestuin"] {
        let id = volunteer
            .add_document(schema::new_document(&Activiteit::new(noord(), title)).expect("new"))
            .await;
        assert!(volunteer.sync_acked(id).await, "{:?}", volunteer.notices);
        activiteiten.push(id);
    }
    let (first, second) = (activiteiten[0], activiteiten[1]);
    let (first_dependency, first_orphan, first_heads) =
        dependency_and_orphan(&volunteer.docs[&first].clone(), first, 80 * 1024, rename);
    let (second_dependency, second_orphan, second_heads) =
        dependency_and_orphan(&volunteer.docs[&second].clone(), second, 80 * 1024, rename);

    // 80 KiB parked in the first activiteit: within the budget, taken silently.
    volunteer.send(&first_orphan).await;
    // 80 KiB more in the second: beyond the user's 120,000 bytes, refused.
    volunteer.send(&second_orphan).await;
    assert!(
        wait_for_error(&mut volunteer, "across your documents").await,
        "a second document's queued changes were taken beyond the user's budget: {:?}",
        volunteer.notices
    );
    let errors = volunteer.errors().join("\n");
    assert!(errors.contains(&second.to_string()), "{errors}");
    assert!(
        !errors.contains(&first.to_string()),
        "the first document's queued change was refused: {errors}"
    );

    // The dependency arrives: the first activiteit's queue drains into a commit of
    // both changes, and the budget is given back.
    volunteer.send(&first_dependency).await;
    assert!(
        heads_become(&fx, first, &first_heads).await,
        "the queued change did not apply when its dependency arrived"
    );
    // Now the second activiteit may park as much, and it applies with its dependency:
    // had the orphan been refused again, the stored heads would stop at the dependency.
    volunteer.send(&second_orphan).await;
    volunteer.send(&second_dependency).await;
    assert!(
        heads_become(&fx, second, &second_heads).await,
        "the budget was not given back when the first queue drained: {:?}",
        volunteer.notices
    );
}

/// Polls the store (`doc info`) until the document's stored heads are `heads`.
async fn heads_become(fx: &Fixture, id: DocumentId, heads: &[String]) -> bool {
    let mut want = heads.to_vec();
    want.sort();
    for _ in 0..50 {
        let info = fx.doc_info(&id.to_string());
        let mut stored: Vec<String> = info["heads"]
            .as_array()
            .expect("heads")
            .iter()
            .map(|h| h.as_str().expect("head").to_owned())
            .collect();
        stored.sort();
        if stored == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Item 12: writes sent right after `token revoke` returned are not committed, even
/// while the connection is still open (the access poll has not run yet).
#[tokio::test]
async fn writes_after_revocation_are_not_committed() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let mut colleague = Client::connect("colleague", &server.url(), &t.prof2_noord)
        .await
        .expect("colleague");
    let id = owner.create_plan("noord", "HH-R9").await;
    assert!(colleague.fetch(id).await);
    let stored = fx.doc_info(&id.to_string())["heads"].clone();

    fx.admin(&["token", "revoke", &t.prof2_noord]);
    for i in 0..4 {
        colleague
            .edit(id, |d| add_goal(d, &format!("na intrekking {i}")))
            .await;
    }
    colleague.pump_for(Duration::from_millis(1500)).await;
    assert_eq!(
        fx.doc_info(&id.to_string())["heads"],
        stored,
        "a write sent after the revocation returned was committed"
    );
}

/// Item 2: a document erased by `buurtsync erase` is not served from the server's
/// memory to a connection that asks after the erasure returned (before, the copy a
/// device held open was served until the next access poll).
#[tokio::test]
async fn erased_document_is_not_served_from_memory() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    // The owner keeps the plan open, so the server holds it in memory.
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let id = owner.create_plan("noord", "HH-E1").await;
    let erased = fx.admin(&["erase", &id.to_string(), "--by", "privacy-officer"]);
    assert_eq!(erased["erased"], id.to_string());
    let mut fresh = Client::connect("fresh", &server.url(), &t.prof2_noord)
        .await
        .expect("fresh");
    assert!(
        !fresh.fetch(id).await,
        "the erased plan was served from memory"
    );
    assert!(fresh.unavailable.contains(&id));
}

/// Item 8: three simultaneous moves of one plan make one copy: one move succeeds,
/// the others find the plan gone (404), and the target wijk holds one document.
#[tokio::test]
async fn concurrent_moves_make_one_copy() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "coord-noord"]);
    fx.admin(&["grant", "coord-noord", "coordinator", "--wijk", "noord"]);
    let coordinator = fx.token("coord-noord");
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let id = prof.create_plan("noord", "HH-M3").await;
    let path = format!("/api/v1/documents/{id}/move");
    let body = serde_json::json!({"wijk": "zuid"});
    let moves = (0..3).map(|_| {
        buurtsync_e2e::http::request(server.addr, "POST", &path, Some(&coordinator), Some(&body))
    });
    let mut statuses: Vec<u16> = futures_util::future::join_all(moves)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 404, 404]);
    let copies = fx.admin(&["doc", "list", "--wijk", "zuid", "--kind", "plan"]);
    assert_eq!(copies.as_array().map(Vec::len), Some(1), "{copies}");
}

/// Item 5 (move): the moved plan carries the current state only; a contact note
/// deleted before the move is not in the new document's history.
#[tokio::test]
async fn moved_plan_carries_no_history() {
    const NOTE: &str = "Geheime notitie over schulden";
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "coord-noord"]);
    fx.admin(&["grant", "coord-noord", "coordinator", "--wijk", "noord"]);
    let coordinator = fx.token("coord-noord");
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let id = prof.create_plan("noord", "HH-M4").await;
    prof.edit(id, |d| add_goal(d, NOTE)).await;
    assert!(prof.sync_acked(id).await);
    prof.edit(id, |d| {
        schema::update::<Plan>(d, |p| p.goals.clear()).expect("edit");
        add_goal(d, "Passende woning");
    })
    .await;
    assert!(prof.sync_acked(id).await);
    let path = format!("/api/v1/documents/{id}/move");
    let (status, answer) = buurtsync_e2e::http::request(
        server.addr,
        "POST",
        &path,
        Some(&coordinator),
        Some(&serde_json::json!({"wijk": "zuid"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let new_id: DocumentId = answer["new"].as_str().expect("new").parse().expect("id");
    let mut zuid = Client::connect("zuid", &server.url(), &t.prof_zuid)
        .await
        .expect("zuid");
    assert!(zuid.fetch(new_id).await);
    let moved = &zuid.docs[&new_id];
    assert_eq!(
        Plan::read(moved).expect("plan").goals[0]
            .description
            .as_str(),
        "Passende woning"
    );
    // Every earlier state the copy's history can be forked at.
    for change in moved.get_changes(&[]) {
        let Ok(earlier) = moved.fork_at(&[change.hash()]) else {
            continue;
        };
        if let Ok(plan) = Plan::read(&earlier) {
            assert!(
                plan.goals.iter().all(|g| g.description.as_str() != NOTE),
                "the deleted goal travelled with the move"
            );
        }
    }
}

/// Every state a document's history can be forked at, as JSON text: what anyone
/// holding the document can read, now or from its history.
fn readable_history(doc: &Automerge) -> String {
    let mut all = serde_json::to_string(&automerge::AutoSerde::from(doc)).expect("json");
    for change in doc.get_changes(&[]) {
        if let Ok(earlier) = doc.fork_at(&[change.hash()]) {
            let json = serde_json::to_string(&automerge::AutoSerde::from(&earlier));
            all.push_str(&json.expect("json"));
        }
    }
    all
}

/// Item 5: a contact note deleted before the hand-over cannot be read from anything
/// the consulent receives: not from its copy's history, and the plan itself (which has
/// the note in its history) is unavailable to it even by id. What the consulent does
/// get is the plan's current state, and the team's later edits.
#[tokio::test]
async fn hand_over_gives_the_consulent_no_history() {
    const NOTE: &str = "Huisbezoek: vermoeden van huiselijk geweld, niet delen";
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "consulent-1"]);
    fx.admin(&["grant", "consulent-1", "consulent"]);
    let consulent_token = fx.token("consulent-1");
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let plan = prof.create_plan("noord", "HH-O5").await;
    prof.edit(plan, |d| {
        let date = schema::Date::from_ymd(2028, 3, 14).expect("date");
        schema::update::<Plan>(d, |p| {
            p.contacts
                .push(ContactMoment::new(date, ContactKind::Huisbezoek, NOTE))
        })
        .expect("edit");
    })
    .await;
    assert!(prof.sync_acked(plan).await);
    // The note is deleted, then the plan is handed over.
    prof.edit(plan, |d| {
        schema::update::<Plan>(d, |p| p.contacts.clear()).expect("edit");
        add_goal(d, "Maatwerk: begeleiding thuis");
    })
    .await;
    assert!(prof.sync_acked(plan).await);
    prof.edit(plan, |d| {
        schema::update::<Plan>(d, |p| p.handover.requested = true).expect("edit");
    })
    .await;
    assert!(prof.sync_acked(plan).await);
    assert!(
        readable_history(&prof.docs[&plan]).contains(NOTE),
        "control"
    );

    // Everything the consulent is offered, and the plan's id on top.
    let mut consulent = Client::connect("gemeente", &server.url(), &consulent_token)
        .await
        .expect("consulent");
    let offered = buurtsync_e2e::http::listed(server.addr, &consulent_token).await;
    assert_eq!(offered.len(), 1, "{offered:?}");
    let mut received = Vec::new();
    for id in offered.iter().copied().chain([plan]) {
        if consulent.fetch(id).await {
            received.push(id);
        }
    }
    assert!(!received.is_empty(), "the consulent received nothing");
    for id in &received {
        let doc = &consulent.docs[id];
        let current = Plan::read(doc).expect("a plan");
        assert!(current.handover.requested);
        assert_eq!(
            current.goals[0].description.as_str(),
            "Maatwerk: begeleiding thuis"
        );
        assert!(
            !readable_history(doc).contains(NOTE),
            "the note deleted before the hand-over is readable from {id}, which the consulent received"
        );
    }
    assert!(
        !received.contains(&plan),
        "the consulent received the plan itself"
    );

    // While the hand-over lasts the consulent follows the plan's current state.
    let copy = received[0];
    prof.edit(plan, |d| add_goal(d, "Na de overdracht")).await;
    assert!(prof.sync_acked(plan).await);
    let followed = consulent
        .pump_until(WAIT, |c| {
            Plan::read(&c.docs[&copy]).is_ok_and(|p| {
                p.goals
                    .iter()
                    .any(|g| g.description.as_str() == "Na de overdracht")
            })
        })
        .await;
    assert!(followed, "a later edit did not reach the consulent's copy");
    assert!(!readable_history(&consulent.docs[&copy]).contains(NOTE));
}

/// Item 10: a denied peer's `request` for a stored plan is decided from the catalog:
/// the plan is not loaded (the load counter does not move), while a reader's fetch
/// does load it.
#[tokio::test]
async fn denied_request_does_not_load_the_document() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let first = owner.create_plan("noord", "HH-T1").await;
    let second = owner.create_plan("noord", "HH-T2").await;
    owner.disconnect().await;
    // A fresh process holds nothing in memory.
    assert!(server.stop(), "server did not stop cleanly");
    let server = fx.start(&[]);
    let loads = || async {
        let metrics = buurtsync_e2e::http::get(server.metrics(), "/metrics", None).await;
        assert_eq!(metrics.status, 200, "the metrics listener did not answer");
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("buurtsync_document_loads_total "))
            .map_or(0.0, |v| v.trim().parse::<f64>().expect("number"))
    };
    // Positive control: a reader's fetch of an unloaded plan loads it once.
    let before = loads().await;
    let mut colleague = Client::connect("colleague", &server.url(), &t.prof2_noord)
        .await
        .expect("colleague");
    assert!(colleague.fetch(first).await);
    assert_eq!(
        loads().await,
        before + 1.0,
        "a reader's fetch did not count"
    );
    let before = loads().await;
    let mut zuid = Client::connect("zuid", &server.url(), &t.prof_zuid)
        .await
        .expect("zuid");
    assert!(!zuid.fetch(second).await);
    assert!(zuid.unavailable.contains(&second));
    assert_eq!(loads().await, before, "a denied request loaded the plan");
}

/// Item 11: creating under an id that exists in another wijk and under an erased id
/// get the same answer (and both tell the device to purge).
#[tokio::test]
async fn creation_under_a_taken_or_erased_id_answers_alike() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut noord_prof = Client::connect("noord", &server.url(), &t.prof_noord)
        .await
        .expect("noord");
    let taken = noord_prof.create_plan("noord", "HH-C1").await;
    let mut zuid = Client::connect("zuid", &server.url(), &t.prof_zuid)
        .await
        .expect("zuid");
    let gone = zuid.create_plan("zuid", "HH-C2").await;
    fx.admin(&["erase", &gone.to_string(), "--by", "privacy-officer"]);
    assert!(
        zuid.pump_until(WAIT, |c| c.unavailable.contains(&gone))
            .await,
        "erasure not told"
    );
    let mut answers = Vec::new();
    for id in [taken, gone] {
        let mut attacker = Client::connect("attacker", &server.url(), &t.prof_zuid)
            .await
            .expect("attacker");
        let doc = schema::new_document(&Plan::new(WijkId::new("zuid").expect("wijk"), "HH-X"))
            .expect("plan");
        attacker.docs.insert(id, doc);
        attacker.push(id).await;
        assert!(
            attacker
                .pump_until(WAIT, |c| !c.errors().is_empty()
                    && c.unavailable.contains(&id))
                .await,
            "no refusal with purge for {id}: {:?}",
            attacker.notices
        );
        answers.push(attacker.errors()[0].replace(&id.to_string(), "ID"));
    }
    assert_eq!(
        answers[0], answers[1],
        "taken and erased ids answer differently"
    );
}

/// Item 15: an unknown message type is logged as a bounded, escaped prefix, not the
/// frame's megabyte of (control) characters.
#[tokio::test]
async fn unknown_message_types_are_logged_bounded_and_escaped() {
    let fx = Fixture::new();
    let t = fx.seed();
    let mut server = fx.start(&[]);
    let mut peer = buurtsync_e2e::client::RawPeer::joined(&server.url(), &t.prof_noord).await;
    let kind = format!("\u{1b}[31mevil\n{}", "A".repeat(1024 * 1024));
    let mut frame = Vec::new();
    ciborium::ser::into_writer(
        &ciborium::Value::Map(vec![
            ("type".into(), kind.as_str().into()),
            ("senderId".into(), "raw".into()),
        ]),
        &mut frame,
    )
    .expect("cbor");
    peer.send_raw(frame).await;
    let error = peer.expect_error().await;
    assert!(
        error.len() < 1024,
        "error echoes the frame: {} bytes",
        error.len()
    );
    assert!(
        !error.contains('\u{1b}'),
        "error carries raw control characters"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log().join("\n");
    let longest = server.log().iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(!log.contains('\u{1b}'), "raw control characters in the log");
    assert!(
        !log.contains(&"A".repeat(1024)),
        "the frame was logged verbatim"
    );
}

/// Suspected item: ephemeral messages sent right after `token revoke` returned are
/// not relayed (before, they were until the next access poll).
#[tokio::test]
async fn ephemeral_messages_after_revocation_are_not_relayed() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut owner = Client::connect("owner", &server.url(), &t.prof_noord)
        .await
        .expect("owner");
    let mut colleague = Client::connect("colleague", &server.url(), &t.prof2_noord)
        .await
        .expect("colleague");
    let id = owner.create_plan("noord", "HH-R8").await;
    assert!(colleague.fetch(id).await);
    colleague.send_ephemeral(id, 1).await;
    assert!(
        owner
            .pump_until(WAIT, |c| c.ephemeral.get(&id) == Some(&1))
            .await,
        "positive control: presence not relayed"
    );
    fx.admin(&["token", "revoke", &t.prof2_noord]);
    for count in 2..6 {
        colleague.send_ephemeral(id, count).await;
    }
    owner.pump_for(Duration::from_millis(1000)).await;
    assert_eq!(
        owner.ephemeral.get(&id),
        Some(&1),
        "ephemeral messages relayed after the revocation returned"
    );
}
