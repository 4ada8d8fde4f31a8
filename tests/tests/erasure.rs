//! Erasure (AVG art. 17) end to end: crypto-shredding defeats old backups, connected
//! devices are told to purge, and a stale offline device cannot bring the plan back.

use std::path::Path;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::server::Fixture;
use buurtsync_e2e::WAIT;
use sync_core::partition::WijkId;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

const SECRET: &str = "Schulden bij de buurman Pietersen";

/// Does any file in `dir` contain `needle`?
fn found_in(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

/// Back up the database, erase a plan: its content is found neither in the live store
/// nor, through the server's own decryption path, in the old backup; devices purge it.
#[tokio::test]
async fn erasure_shreds_live_store_and_old_backups() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let mut plan = Plan::new(WijkId::new("noord").expect("wijk"), "HH-E1");
    plan.goals.push(Goal::new(Leefdomein::Financien, SECRET));
    let id = prof
        .add_document(schema::new_document(&plan).expect("plan"))
        .await;
    assert!(prof.sync_acked(id).await);
    assert!(server.stop(), "clean stop before the backup");

    // The backup: a copy of the main database files (the key store is kept apart).
    let backup = tempfile::tempdir().expect("backup dir");
    for entry in std::fs::read_dir(fx.dir.path()).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("buurtsync.sqlite3") && !name.contains(".keys") {
            std::fs::copy(entry.path(), backup.path().join(&name)).expect("copy");
        }
    }
    assert!(
        found_in(fx.dir.path(), SECRET).is_empty(),
        "plaintext at rest before erasure"
    );
    let keys = format!("{}/buurtsync.sqlite3.keys", fx.dir.path().display());
    let backup_url = format!("sqlite://{}/buurtsync.sqlite3", backup.path().display());
    let read_backup = || {
        std::process::Command::new(buurtsync_e2e::server::binary())
            .args([
                "--database",
                &backup_url,
                "--keys",
                &keys,
                "--json",
                "doc",
                "info",
                &id.to_string(),
            ])
            .output()
            .expect("run")
    };
    assert!(
        read_backup().status.success(),
        "the backup is readable through the server before erasure"
    );

    let server = fx.start(&[]);
    prof.set_url(&server.url());
    prof.reconnect().await.expect("prof");
    let mut colleague = Client::connect("colleague", &server.url(), &t.prof2_noord)
        .await
        .expect("colleague");
    assert!(colleague.fetch(id).await);

    // The stale device goes offline and keeps editing.
    prof.disconnect().await;
    prof.edit(id, |d| {
        schema::update::<Plan>(d, |p| {
            p.goals.push(Goal::new(Leefdomein::Wonen, "nog een doel"))
        })
        .expect("edit");
    })
    .await;

    let erased = fx.admin(&["erase", &id.to_string(), "--by", "privacy-officer"]);
    assert_eq!(erased["erased"], id.to_string());
    assert!(
        colleague
            .pump_until(WAIT, |c| c.unavailable.contains(&id))
            .await,
        "connected device was not told to purge"
    );

    // Live store: gone, and the backup no longer decrypts through the server's path.
    assert!(!fx
        .admin_raw(&["doc", "info", &id.to_string()])
        .status
        .success());
    let out = read_backup();
    assert!(
        !out.status.success(),
        "old backup still readable after erasure"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("key is gone"));
    assert!(found_in(fx.dir.path(), SECRET).is_empty());
    assert!(found_in(backup.path(), SECRET).is_empty());

    // The stale device comes back online and pushes: refused, told to purge.
    prof.reconnect().await.expect("prof back");
    assert!(
        prof.pump_until(WAIT, |c| c.unavailable.contains(&id)
            && c.errors()
                .iter()
                .any(|e| e.contains("was erased or is taken")))
            .await,
        "stale push not refused: {:?}",
        prof.notices
    );
    assert!(
        !fx.admin_raw(&["doc", "info", &id.to_string()])
            .status
            .success(),
        "erased plan came back"
    );
    let mut fresh = Client::connect("fresh", &server.url(), &t.prof_noord)
        .await
        .expect("fresh");
    assert!(!fresh.fetch(id).await, "erased plan is served again");
}
