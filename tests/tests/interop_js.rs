//! Interop with an unmodified third-party client: automerge-repo 2.5 (JavaScript, from
//! the npm registry) run with Node against the real server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use buurtsync_e2e::client::Client;
use buurtsync_e2e::server::Fixture;
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, Activiteit, Date, Session};

/// Kills the Node process if the test fails half-way.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// The JS client creates an activiteit through our server with `?token=`, a Rust client
/// finds it, and a change made by the Rust client reaches the JS client.
#[tokio::test]
async fn automerge_repo_js_client_syncs_both_ways() {
    assert!(
        js_dir()
            .join("node_modules/@automerge/automerge-repo")
            .exists(),
        "JS dependencies missing: run `npm ci --prefix tests/js` (the README test command does)"
    );
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let url = format!("{}?token={}", server.url(), t.vol_noord);

    let mut child = Command::new("node")
        .arg(js_dir().join("interop.mjs"))
        .arg(&url)
        .arg("noord")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let node = NodeProcess(child);
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (etx, elines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let stderr_so_far = || elines.try_iter().collect::<Vec<_>>().join("\n");

    let created: serde_json::Value = serde_json::from_str(
        &lines
            .recv_timeout(buurtsync_e2e::WAIT)
            .unwrap_or_else(|_| panic!("JS client printed nothing: {}", stderr_so_far())),
    )
    .expect("JSON line");
    assert_eq!(created["event"], "created");
    let id: DocumentId = created["documentId"]
        .as_str()
        .expect("id")
        .parse()
        .expect("valid id");

    // The Rust client finds it (retrying while the JS client is still uploading).
    let mut rust = Client::connect("rust", &server.url(), &t.prof_noord)
        .await
        .expect("rust");
    let deadline = Instant::now() + buurtsync_e2e::WAIT;
    while !rust.fetch(id).await {
        assert!(
            Instant::now() < deadline,
            "JS document never reached the server: {}",
            stderr_so_far()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let act = Activiteit::read(&rust.docs[&id]).expect("JS wrote a valid activiteit");
    assert_eq!(act.title, "Koffieochtend De Kiem");
    assert_eq!(act.meta.wijk.as_str(), "noord");
    assert_eq!(fx.doc_info(&id.to_string())["created_by"], "vol-noord");

    // A change made in Rust reaches the JS client through the server.
    rust.edit(id, |d| {
        schema::update::<Activiteit>(d, |a| {
            let mut session = Session::new(Date::parse("2026-11-24").expect("date"), 12, 3.5);
            session.notes = Some(autosurgeon::Text::with_value("door rust toegevoegd"));
            a.sessions.push(session);
        })
        .expect("edit");
    })
    .await;
    assert!(rust.sync_acked(id).await, "{:?}", rust.notices);

    let mut node = node;
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = node.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "JS client did not finish: {}",
            stderr_so_far()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        status.success() && rest.iter().any(|l| l.contains("\"saw-rust-change\"")),
        "JS client did not see the Rust change (exit {status}): stdout {rest:?}, stderr {}",
        stderr_so_far()
    );
}
