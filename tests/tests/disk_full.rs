//! A full disk under the server's SQLite database (issue 20): writes are refused with
//! an `error` and never acknowledged, reads keep working as far as their audit entries
//! can be stored (a read is never delivered without one: refused with "try again later"
//! instead), and once space returns the same change is committed and acknowledged.
//!
//! The database lives on a small tmpfs mounted for the test (the suite runs as root, as
//! CI does); filling it with a file and deleting that file makes "disk full" and "space
//! returns" exact, with no hook in the server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::server::Fixture;
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// A tmpfs of `size` mounted on a fresh directory; unmounted (lazily) when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let path = tempfile::tempdir().expect("tempdir").keep();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (as in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { path }
    }

    /// Writes zeros into `file` until the file system is full.
    fn fill(&self, file: &Path) {
        let mut f = std::fs::File::create(file).expect("filler");
        for size in [64 * 1024, 4096, 1] {
            let block = vec![0u8; size];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn stored_heads(fx: &Fixture, id: &str) -> serde_json::Value {
    fx.doc_info(id)["heads"].clone()
}

/// The stored heads while the disk is full: `doc info` writes its own audit entry (an
/// inspection is audited, and refused when it cannot be), so it reads a copy of the
/// files taken on the ordinary disk. No write commits while the disk is full, so the
/// copy is what the server holds.
fn stored_heads_on_full_disk(fx: &Fixture, id: &str) -> serde_json::Value {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fx.dir.path()).expect("read db dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
        }
    }
    let db = copy.path().join("buurtsync.sqlite3");
    let copied = Fixture {
        db_url: format!("sqlite://{}", db.display()),
        dir: copy,
    };
    copied.doc_info(id)["heads"].clone()
}

/// Disk full: the change gets an `error` and no acknowledgement, nothing is stored,
/// reads and the listing are served or refused, never without their audit entry, and
/// after space returns the change is committed and the refused read served.
#[tokio::test]
async fn full_disk_refuses_writes_cleanly_and_recovers() {
    let disk = SmallDisk::mount("24m");
    let dir = tempfile::tempdir_in(&disk.path).expect("dir on the small disk");
    let db_url = format!(
        "sqlite://{}",
        dir.path().join("buurtsync.sqlite3").display()
    );
    let fx = Fixture { dir, db_url };
    let t = fx.seed();
    let mut server = fx.start(&[]);
    let mut writer = Client::connect("writer", &server.url(), &t.prof_noord)
        .await
        .expect("writer");
    let id = writer.create_plan("noord", "HH-DISK").await;
    let other = writer.create_plan("noord", "HH-DISK-2").await;
    let heads_before = stored_heads(&fx, &id.to_string());

    let filler = disk.path.join("filler");
    disk.fill(&filler);

    // One goal of 300 k random letters: the commit must grow the WAL (a small database
    // is never checkpointed, so its WAL only grows), and there is no byte left.
    let text = buurtsync_e2e::incompressible(300_000, 7);
    writer
        .edit(id, move |doc| {
            schema::update::<Plan>(doc, |p| {
                p.goals.push(Goal::new(Leefdomein::Wonen, &text));
            })
            .expect("edit plan");
        })
        .await;
    let refused = writer
        .pump_until(buurtsync_e2e::WAIT, |c| !c.errors().is_empty())
        .await;
    assert!(
        refused,
        "no error for a write on a full disk (acknowledged: {}); server log: {:#?}",
        writer.is_acked(id),
        server.log().iter().rev().take(8).collect::<Vec<_>>()
    );
    assert!(
        !writer.is_acked(id),
        "a change that was not stored was acknowledged"
    );
    assert_eq!(
        stored_heads_on_full_disk(&fx, &id.to_string()),
        heads_before,
        "the stored document changed on a full disk"
    );

    // Reads go on where they can be audited. A sync message with content leaves only
    // after its `read` entry is stored (issue 16), so on a full disk a fetch either
    // arrives (the entry fit in space SQLite already holds) or is refused with "try
    // again later" and no content; never content without its audit entry.
    let mut reader = Client::connect("reader", &server.url(), &t.prof2_noord)
        .await
        .expect("reader connects on a full disk");
    let read_on_full_disk = reader.fetch(other).await;
    if !read_on_full_disk {
        assert!(
            reader
                .errors()
                .iter()
                .any(|e| e.contains("try again later")),
            "a refused read did not say why: {:?}",
            reader.errors()
        );
    }
    let listing = buurtsync_e2e::http::get(
        server.addr,
        "/api/v1/documents",
        Some(t.prof2_noord.as_str()),
    )
    .await;
    // A listing is audited before its ids leave (issue 16): on a full disk it answers
    // when its audit entry fits in space SQLite already holds (the refused write's WAL
    // frames), and is refused otherwise; never ids without their audit entry.
    let body = String::from_utf8_lossy(&listing.body);
    if listing.status == 200 {
        assert!(
            body.contains(&other.to_string()),
            "the listing lost a document"
        );
    } else {
        assert!(!body.contains(&other.to_string()), "ids left with an error");
    }

    // Space returns: the same change is committed and acknowledged.
    // Space returns. The device still holds the change; like any app that got the
    // "retried" error, it sends it again on its next connection (on this one its
    // automerge sync state counts the change as sent already).
    std::fs::remove_file(&filler).expect("free the disk");
    writer.disconnect().await;
    writer.reconnect().await.expect("reconnect");
    let acked = writer.sync_acked(id).await;
    assert!(
        acked,
        "not acknowledged after space returned: {:?}; server log: {:#?}",
        writer.notices,
        server.log().iter().rev().take(12).collect::<Vec<_>>()
    );
    let mut stored: Vec<String> = stored_heads(&fx, &id.to_string())
        .as_array()
        .expect("heads")
        .iter()
        .map(|h| h.as_str().expect("hex").to_owned())
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        writer.heads_hex(id),
        "acknowledged heads are not stored"
    );
    // And a read refused on the full disk is served now.
    if !read_on_full_disk {
        reader.disconnect().await;
        reader.reconnect().await.expect("reader reconnects");
        assert!(
            reader.fetch(other).await,
            "a read failed after space returned"
        );
    }
    drop(server);
}
