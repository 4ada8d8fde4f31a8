//! Group commit (SQLite: `store::group`) and many concurrent writers on both engines:
//! every write lands with its own outcome, a failing write fails only itself, the audit
//! chain and the change numbers stay in commit order, and on SQLite concurrent writes
//! really share transactions.

use std::sync::Arc;

use buurtsync_server::audit::{AuditAction, AuditEvent};
use buurtsync_server::store::crypto::DocKey;
use buurtsync_server::store::{CatalogEntry, Provenance, Store};
use sqlx::{Connection, SqliteConnection};
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

mod backends;
use backends::Backend;

on_both_backends!(
    concurrent_writes_land_each_with_its_own_outcome,
    a_failing_write_fails_only_itself,
);

fn entry(id: DocumentId) -> CatalogEntry {
    CatalogEntry {
        id,
        partition: Partition {
            wijk: WijkId::new("noord").expect("wijk"),
            kind: DocumentKind::Plan,
        },
        created_at: 1,
        created_by: "u".into(),
        handover_of: None,
    }
}

fn write_event(id: &DocumentId, user: &str) -> AuditEvent {
    AuditEvent::new(user, "tok/phone", AuditAction::Write).on(id, None)
}

/// Appends one chunk with its author and write entry, as `Hub::persist_with` does.
async fn append(
    store: &Store,
    id: &DocumentId,
    key: &DocKey,
    chunk: &str,
    user: &str,
) -> Result<Option<i64>, buurtsync_server::Error> {
    let changes = [format!("hash of {chunk}")];
    let audit = [write_event(id, user)];
    store
        .documents()
        .append_chunk_with(
            id,
            key,
            chunk.as_bytes(),
            None,
            &[],
            &Provenance {
                changes: &changes,
                author: Some((user, "tok/phone")),
                audit: &audit,
                handed_over: None,
                token: None,
            },
        )
        .await
}

async fn create_docs(store: &Store, n: usize) -> Vec<(DocumentId, DocKey)> {
    let mut docs = Vec::new();
    for _ in 0..n {
        let id = DocumentId::random();
        let key = store
            .documents()
            .create_document(&entry(id), b"first", &DocKey::random())
            .await
            .expect("create");
        docs.push((id, key));
    }
    docs
}

/// Holds SQLite's write lock from another connection, so the group writer's next
/// transaction waits and every job submitted meanwhile queues up behind it.
async fn hold_write_lock(url: &str) -> SqliteConnection {
    let mut conn = SqliteConnection::connect(url).await.expect("connect");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("lock");
    conn
}

/// Waits (bounded) until `n` jobs were handed to the writer (one per task: each task
/// waits for its answer before its next write), then lets the writer write.
async fn release_after_submitted(store: &Store, mut lock: SqliteConnection, n: u64) {
    for _ in 0..2000 {
        if store.group_stats().expect("sqlite").submitted >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        store.group_stats().expect("sqlite").submitted,
        n,
        "every task's first job reached the writer's queue"
    );
    sqlx::query("COMMIT")
        .execute(&mut lock)
        .await
        .expect("unlock");
}

/// Many tasks append to many documents (and write audit-only entries) at once: every
/// append lands with its own chunk seq, two tasks racing to store the same chunk get
/// one `Some` and one `None`, the audit chain verifies, and every commit took exactly
/// one change number, in commit order.
async fn concurrent_writes_land_each_with_its_own_outcome(backend: Backend) {
    const DOCS: usize = 8;
    const TASKS_PER_DOC: usize = 3;
    const APPENDS: usize = 10;
    const AUDITORS: usize = 4;
    const AUDITS: usize = 10;
    let db = backends::database(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    let docs = create_docs(&store, DOCS).await;
    let appends = DOCS * TASKS_PER_DOC * APPENDS;
    // Two racers per document store the same chunk.
    let jobs = appends + 2 * DOCS + AUDITORS * AUDITS;
    let lock = match backend {
        Backend::Sqlite => Some(hold_write_lock(&db.url).await),
        Backend::Postgres => None,
    };
    let mut tasks = Vec::new();
    for (d, (id, key)) in docs.iter().cloned().enumerate() {
        for t in 0..TASKS_PER_DOC {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..APPENDS {
                    let seq = append(&store, &id, &key, &format!("{d}/{t}/{i}"), "bob")
                        .await
                        .expect("append")
                        .expect("a new chunk has a seq");
                    seqs.push(seq);
                }
                seqs
            }));
        }
        for _ in 0..2 {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                append(&store, &id, &key, "the same chunk", "ann")
                    .await
                    .expect("append")
                    .into_iter()
                    .collect()
            }));
        }
    }
    let audit_doc = docs[0].0;
    for a in 0..AUDITORS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..AUDITS {
                let read = AuditEvent::new(format!("reader{a}"), "tok/phone", AuditAction::Read)
                    .on(&audit_doc, None);
                store
                    .audit()
                    .append_many(&[read.clone(), read])
                    .await
                    .expect("audit");
            }
            Vec::new()
        }));
    }
    let task_count = tasks.len();
    if let Some(lock) = lock {
        release_after_submitted(&store, lock, task_count as u64).await;
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.expect("task"));
    }
    // Each caller got its own seq: all distinct; the racing pairs stored their chunk once.
    let distinct: std::collections::HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), seqs.len(), "every append got its own seq");
    assert_eq!(
        seqs.len(),
        appends + DOCS,
        "each racing pair: one Some, one None"
    );
    for (id, _) in &docs {
        let stored = store
            .documents()
            .load_document(id)
            .await
            .expect("load")
            .expect("doc");
        assert_eq!(
            stored.chunks as usize,
            1 + TASKS_PER_DOC * APPENDS + 1,
            "every chunk of {id} landed"
        );
        let authors = store.documents().change_authors(id).await.expect("authors");
        assert_eq!(authors.len(), TASKS_PER_DOC * APPENDS + 1);
    }
    let report = store.audit().verify().await.expect("verify");
    assert!(report.is_ok(), "audit chain intact: {report:?}");
    assert_eq!(
        report.entries as usize,
        appends + 2 * DOCS + AUDITORS * AUDITS * 2,
        "every write and read entry recorded (a chunk stored already still records its write)"
    );
    // One change number per commit that stored something, none skipped or repeated.
    let total = i64::try_from(DOCS + appends + DOCS).expect("small");
    assert_eq!(
        store.central().last_change_seq().await.expect("last"),
        total
    );
    let feed = store.central().changes_after(0, 1000).await.expect("feed");
    assert_eq!(feed.len(), DOCS);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(feed.last().map(|r| r.seq), Some(total));
    if backend == Backend::Sqlite {
        let stats = store.group_stats().expect("sqlite has a writer");
        assert_eq!(stats.jobs, jobs as u64);
        // The lock held the first job of every task back until all were queued: they
        // took two transactions (the one blocked by the lock, then the rest), not one
        // each. Every later job takes at most one more.
        let most = 2 + (jobs - task_count) as u64;
        assert!(
            stats.batches <= most,
            "{} jobs took {} transactions (at most {most} expected)",
            stats.jobs,
            stats.batches
        );
    }
}

/// Appends to an erased document (its catalog row is gone, so the chunk's foreign key
/// refuses it) fail with an error reaching exactly their callers, while the appends to
/// a live document in the very same batch commit; the audit chain holds exactly the
/// committed writes.
async fn a_failing_write_fails_only_itself(backend: Backend) {
    const EACH: usize = 20;
    let db = backends::database(backend).await;
    let store = Arc::new(Store::open(&db.url).await.expect("open"));
    let docs = create_docs(&store, 2).await;
    let ((live, live_key), (gone, gone_key)) = (docs[0].clone(), docs[1].clone());
    store
        .documents()
        .erase(&gone, "privacy-officer")
        .await
        .expect("erase");
    let seq_before = store.central().last_change_seq().await.expect("seq");
    let lock = match backend {
        Backend::Sqlite => Some(hold_write_lock(&db.url).await),
        Backend::Postgres => None,
    };
    let mut tasks = Vec::new();
    for i in 0..EACH {
        for (id, key, user) in [(live, &live_key, "bob"), (gone, &gone_key, "eve")] {
            let (store, key) = (store.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let outcome = append(&store, &id, &key, &format!("chunk {i}"), user).await;
                (id, outcome)
            }));
        }
    }
    if let Some(lock) = lock {
        release_after_submitted(&store, lock, 2 * EACH as u64).await;
    }
    for task in tasks {
        let (id, outcome) = task.await.expect("task");
        if id == live {
            assert!(
                matches!(outcome, Ok(Some(_))),
                "live append committed: {outcome:?}"
            );
        } else {
            assert!(outcome.is_err(), "append to the erased document refused");
        }
    }
    let stored = store
        .documents()
        .load_document(&live)
        .await
        .expect("load")
        .expect("doc");
    assert_eq!(stored.chunks as usize, 1 + EACH);
    assert!(store
        .documents()
        .load_document(&gone)
        .await
        .expect("load")
        .is_none());
    let report = store.audit().verify().await.expect("verify");
    assert!(report.is_ok(), "audit chain intact: {report:?}");
    assert_eq!(report.entries as usize, EACH, "only the committed writes");
    let entries = store
        .audit()
        .for_document(&gone.to_string())
        .await
        .expect("audit");
    assert!(entries.is_empty(), "no write entry of a refused append");
    assert_eq!(
        store.central().last_change_seq().await.expect("seq"),
        seq_before + i64::try_from(EACH).expect("small")
    );
    if backend == Backend::Sqlite {
        let stats = store.group_stats().expect("sqlite has a writer");
        assert!(
            stats.batches < stats.jobs,
            "the failing and the good appends shared transactions: {stats:?}"
        );
    }
}

/// An idle writer commits a lone write in a batch of its own, without waiting for
/// company.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_write_is_one_batch() {
    let db = backends::database(Backend::Sqlite).await;
    let store = Store::open(&db.url).await.expect("open");
    let docs = create_docs(&store, 1).await;
    let (id, key) = &docs[0];
    append(&store, id, key, "alone", "bob")
        .await
        .expect("append")
        .expect("new");
    let stats = store.group_stats().expect("sqlite has a writer");
    assert_eq!((stats.submitted, stats.jobs, stats.batches), (1, 1, 1));
}

/// A job that fails *after* its audit entry was written (here: a trigger refuses the
/// document's change number) is rolled back with that entry, and the jobs after it in
/// the same batch chain from the last committed entry: the writer reads the chain's
/// tail once per batch and must forget what a rolled-back job appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_after_its_audit_entry_leaves_the_chain_whole() {
    const EACH: usize = 10;
    let db = backends::database(Backend::Sqlite).await;
    let store = Arc::new(Store::open(&db.url).await.expect("open"));
    let docs = create_docs(&store, 2).await;
    let ((good, good_key), (bad, bad_key)) = (docs[0].clone(), docs[1].clone());
    let mut side = SqliteConnection::connect(&db.url).await.expect("connect");
    sqlx::query(&format!(
        "CREATE TRIGGER refuse_bad BEFORE UPDATE OF change_seq ON documents \
         WHEN NEW.id = '{bad}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ))
    .execute(&mut side)
    .await
    .expect("trigger");
    drop(side);
    let lock = hold_write_lock(&db.url).await;
    let mut tasks = Vec::new();
    for i in 0..EACH {
        for (id, key, user) in [(good, &good_key, "bob"), (bad, &bad_key, "eve")] {
            let (store, key) = (store.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let outcome = append(&store, &id, &key, &format!("chunk {i}"), user).await;
                (id, outcome)
            }));
        }
    }
    release_after_submitted(&store, lock, 2 * EACH as u64).await;
    for task in tasks {
        let (id, outcome) = task.await.expect("task");
        if id == good {
            assert!(matches!(outcome, Ok(Some(_))), "good append: {outcome:?}");
        } else {
            assert!(
                outcome.is_err(),
                "the trigger refused the append: {outcome:?}"
            );
        }
    }
    let stats = store.group_stats().expect("sqlite has a writer");
    assert!(
        stats.batches < stats.jobs,
        "the refused and the good appends shared transactions: {stats:?}"
    );
    let report = store.audit().verify().await.expect("verify");
    assert!(report.is_ok(), "audit chain intact: {report:?}");
    assert_eq!(report.entries as usize, EACH, "only the committed writes");
    let entries = store
        .audit()
        .for_document(&bad.to_string())
        .await
        .expect("audit");
    assert!(entries.is_empty(), "no write entry of a refused append");
}
