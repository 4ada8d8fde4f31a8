//! The audit log against a real SQLite file: the hash chain holds under many and
//! concurrent appends, the table refuses changes, and tampering done the way someone
//! with the file would do it (drop the triggers, then edit) is reported.

use buurtsync_server::audit::{
    AuditAction, AuditAnchor, AuditEvent, AuditProblemKind, AuditReport,
};
use buurtsync_server::store::Store;
use buurtsync_server::Error;
use sqlx::{Connection, SqliteConnection};

mod backends;
use backends::Backend;

on_both_backends!(
    chain_verifies_after_many_appends,
    concurrent_appends_keep_the_chain,
    entries_for_one_document,
);

struct Db {
    _dir: Option<tempfile::TempDir>,
    _db: Option<backends::Db>,
    url: String,
    store: Store,
}

async fn open() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/audit.sqlite3", dir.path().display());
    let store = Store::open(&url).await.expect("open");
    Db {
        _dir: Some(dir),
        _db: None,
        url,
        store,
    }
}

/// A store on either engine (for the tests that need no raw SQL).
async fn open_on(backend: Backend) -> Db {
    let db = backends::database(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    Db {
        _dir: None,
        url: db.url.clone(),
        _db: Some(db),
        store,
    }
}

fn event(i: usize, document: &str) -> AuditEvent {
    AuditEvent {
        user_id: format!("user-{}", i % 3),
        device: format!("tok_{}/peer-{}", i % 2, i % 5),
        document: Some(document.to_owned()),
        partition: Some("noord/plan".into()),
        action: if i.is_multiple_of(2) {
            AuditAction::Read
        } else {
            AuditAction::Write
        },
        detail: String::new(),
    }
}

async fn append(store: &Store, n: usize) {
    for i in 0..n {
        store
            .audit()
            .append(&event(i, "doc-a"))
            .await
            .expect("audit");
    }
}

/// A second, raw connection to the same file, as an attacker with file access has,
/// with the append-only triggers dropped.
async fn attacker(url: &str) -> SqliteConnection {
    let mut conn = SqliteConnection::connect(url).await.expect("raw connect");
    for trigger in [
        "audit_log_no_update",
        "audit_log_no_delete",
        "audit_log_no_replace",
    ] {
        sqlx::query(&format!("DROP TRIGGER {trigger}"))
            .execute(&mut conn)
            .await
            .expect("drop trigger");
    }
    conn
}

async fn exec(conn: &mut SqliteConnection, sql: &str) {
    sqlx::query(sql).execute(&mut *conn).await.expect(sql);
}

fn kinds_at(report: &AuditReport, seq: i64) -> Vec<AuditProblemKind> {
    report
        .problems
        .iter()
        .filter(|p| p.seq == seq)
        .map(|p| p.kind)
        .collect()
}

/// Many appends (more than one verification page) form a chain that verifies, with
/// seqs 1..=n and the last entry's hash as the head.
async fn chain_verifies_after_many_appends(backend: Backend) {
    let db = open_on(backend).await;
    let empty = db.store.audit().verify().await.expect("verify");
    assert!(empty.is_ok());
    assert_eq!(
        (empty.entries, empty.head_hash.as_str()),
        (0, "0".repeat(64).as_str())
    );

    let first = db
        .store
        .audit()
        .append(&event(0, "doc-a"))
        .await
        .expect("audit");
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, "0".repeat(64));
    let batch: Vec<AuditEvent> = (1..1500).map(|i| event(i, "doc-a")).collect();
    db.store
        .audit()
        .append_many(&batch)
        .await
        .expect("audit_many");
    let last = db
        .store
        .audit()
        .append(&event(7, "doc-b"))
        .await
        .expect("audit");
    assert_eq!(last.seq, 1501);

    let report = db.store.audit().verify().await.expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 1501);
    assert_eq!(report.head_hash, last.hash);
}

/// Appends from many tasks and from a second store on the same database (as the CLI
/// and a running server do, or two relay nodes) serialise: no problems, seqs contiguous.
async fn concurrent_appends_keep_the_chain(backend: Backend) {
    let db = open_on(backend).await;
    let other = Store::open(&db.url).await.expect("second store");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 {
            db.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..40 {
                if i % 10 == 9 {
                    let events = [event(i, "doc-a"), event(i + 1, "doc-b")];
                    store
                        .audit()
                        .append_many(&events)
                        .await
                        .expect("audit_many");
                } else {
                    seqs.push(
                        store
                            .audit()
                            .append(&event(i, "doc-a"))
                            .await
                            .expect("audit")
                            .seq,
                    );
                }
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.expect("task"));
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 8 * 36, "every single append got its own seq");

    let report = db.store.audit().verify().await.expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 8 * (36 + 2 * 4));
    let per_doc = db
        .store
        .audit()
        .for_document("doc-a")
        .await
        .expect("for doc");
    let all = db
        .store
        .audit()
        .for_document("doc-b")
        .await
        .expect("for doc");
    let mut every: Vec<i64> = per_doc.iter().chain(&all).map(|e| e.seq).collect();
    every.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(report.entries).expect("fits")).collect();
    assert_eq!(every, expected, "seqs are contiguous");
}

/// UPDATE, DELETE and INSERT OR REPLACE through ordinary SQL fail with the
/// append-only error.
#[tokio::test]
async fn table_refuses_changes() {
    let db = open().await;
    append(&db.store, 3).await;
    let mut conn = SqliteConnection::connect(&db.url).await.expect("connect");
    for sql in [
        "UPDATE audit_log SET detail = 'x' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 3",
        "DELETE FROM audit_log",
        "INSERT OR REPLACE INTO audit_log (seq, at_ms, user_id, device, action, prev_hash, hash) \
         VALUES (2, 0, 'u', 'd', 'read', x'00', x'00')",
    ] {
        let err = sqlx::query(sql)
            .execute(&mut conn)
            .await
            .expect_err("must be refused");
        assert!(
            err.to_string().contains("the audit log is append-only"),
            "{sql}: {err}"
        );
    }
    let report = db.store.audit().verify().await.expect("verify");
    assert!(report.is_ok());
    assert_eq!(report.entries, 3);
}

/// An edited detail is reported as an altered entry at exactly that seq.
#[tokio::test]
async fn altered_entry_is_detected() {
    let db = open().await;
    append(&db.store, 10).await;
    let mut conn = attacker(&db.url).await;
    exec(
        &mut conn,
        "UPDATE audit_log SET detail = 'nothing to see' WHERE seq = 4",
    )
    .await;

    let report = db.store.audit().verify().await.expect("verify");
    assert_eq!(kinds_at(&report, 4), [AuditProblemKind::Altered]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.entries, 10);
}

/// A deleted middle entry breaks the link of the one after it.
#[tokio::test]
async fn removed_entry_is_detected() {
    let db = open().await;
    append(&db.store, 10).await;
    let mut conn = attacker(&db.url).await;
    exec(&mut conn, "DELETE FROM audit_log WHERE seq = 5").await;

    let report = db.store.audit().verify().await.expect("verify");
    let at6 = kinds_at(&report, 6);
    assert!(at6.contains(&AuditProblemKind::BrokenLink), "{at6:?}");
    assert!(at6.contains(&AuditProblemKind::SeqGap), "{at6:?}");
    assert!(!report.is_ok());
}

/// Swapping the contents of two entries (a reordering that keeps the seqs) is caught:
/// the seq is inside each hash.
#[tokio::test]
async fn swapped_entries_are_detected() {
    let db = open().await;
    append(&db.store, 10).await;
    let mut conn = attacker(&db.url).await;
    let cols = "at_ms, user_id, device, document, partition, action, detail, prev_hash, hash";
    exec(
        &mut conn,
        &format!("CREATE TEMP TABLE t AS SELECT seq, {cols} FROM audit_log WHERE seq IN (3, 4)"),
    )
    .await;
    for (to, from) in [(3, 4), (4, 3)] {
        let set = cols
            .split(", ")
            .map(|c| format!("{c} = (SELECT {c} FROM t WHERE seq = {from})"))
            .collect::<Vec<_>>()
            .join(", ");
        exec(
            &mut conn,
            &format!("UPDATE audit_log SET {set} WHERE seq = {to}"),
        )
        .await;
    }

    let report = db.store.audit().verify().await.expect("verify");
    assert!(
        kinds_at(&report, 3).contains(&AuditProblemKind::Altered),
        "{:?}",
        report.problems
    );
    assert!(
        kinds_at(&report, 4).contains(&AuditProblemKind::Altered),
        "{:?}",
        report.problems
    );
}

/// Removing the newest entry leaves a consistent chain: only a head kept outside the
/// database reveals it (and the next append leaves a seq gap).
#[tokio::test]
async fn truncation_needs_an_external_head() {
    let db = open().await;
    append(&db.store, 10).await;
    let kept = db.store.audit().verify().await.expect("verify");
    assert!(kept.is_ok());
    let anchor = AuditAnchor::new(kept.entries, &kept.head_hash).expect("anchor");
    let intact = db
        .store
        .audit()
        .verify_against(Some(&anchor))
        .await
        .expect("verify");
    assert!(intact.is_ok(), "{:?}", intact.problems);

    let mut conn = attacker(&db.url).await;
    exec(&mut conn, "DELETE FROM audit_log WHERE seq = 10").await;

    let without = db.store.audit().verify().await.expect("verify");
    assert!(without.is_ok(), "the chain alone cannot see it");
    assert_eq!(without.entries, 9);
    let with = db
        .store
        .audit()
        .verify_against(Some(&anchor))
        .await
        .expect("verify");
    assert_eq!(with.problems.len(), 1, "{:?}", with.problems);
    assert_eq!(with.problems[0].kind, AuditProblemKind::Truncated);

    // Truncated and then appended to: the kept head no longer matches entry 10, and
    // the new entry skips the seq that was handed out before.
    let next = db
        .store
        .audit()
        .append(&event(0, "doc-a"))
        .await
        .expect("audit");
    assert_eq!(next.seq, 11);
    let with = db
        .store
        .audit()
        .verify_against(Some(&anchor))
        .await
        .expect("verify");
    assert!(
        kinds_at(&with, 11).contains(&AuditProblemKind::HeadMismatch),
        "{:?}",
        with.problems
    );
    assert!(
        kinds_at(&with, 11).contains(&AuditProblemKind::SeqGap),
        "{:?}",
        with.problems
    );
}

/// A column tampered into another type is reported, not a failure of verification.
#[tokio::test]
async fn unreadable_entry_is_reported() {
    let db = open().await;
    append(&db.store, 3).await;
    let mut conn = attacker(&db.url).await;
    exec(
        &mut conn,
        "UPDATE audit_log SET at_ms = 'yesterday', hash = 'x' WHERE seq = 2",
    )
    .await;

    let report = db.store.audit().verify().await.expect("verify");
    assert_eq!(kinds_at(&report, 2), [AuditProblemKind::Altered]);
    let err = db
        .store
        .audit()
        .for_document("doc-a")
        .await
        .expect_err("corrupt");
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    // Appends still work after a damaged entry.
    db.store
        .audit()
        .append(&event(0, "doc-a"))
        .await
        .expect("audit");
}

/// `store.audit().for_document` returns exactly that document's entries, in order.
async fn entries_for_one_document(backend: Backend) {
    let db = open_on(backend).await;
    for i in 0..12 {
        let doc = if i % 3 == 0 { "doc-b" } else { "doc-a" };
        db.store
            .audit()
            .append(&event(i, doc))
            .await
            .expect("audit");
    }
    db.store
        .audit()
        .append(
            &AuditEvent::new("admin", "cli", AuditAction::GrantAdded).with_detail("role=volunteer"),
        )
        .await
        .expect("audit");
    let b = db
        .store
        .audit()
        .for_document("doc-b")
        .await
        .expect("for doc");
    assert_eq!(b.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 4, 7, 10]);
    assert!(b
        .iter()
        .all(|e| e.event.document.as_deref() == Some("doc-b")));
    assert_eq!(b[1].event.action, AuditAction::Write);
    assert_eq!(b[1].event.user_id, "user-0");
    assert_eq!(
        db.store
            .audit()
            .for_document("doc-a")
            .await
            .expect("for doc")
            .len(),
        8
    );
    assert!(db
        .store
        .audit()
        .for_document("nope")
        .await
        .expect("for doc")
        .is_empty());
}
