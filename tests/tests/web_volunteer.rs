//! The volunteer web app (mobile-examples/web-volunteer) in real headless Chromium
//! against the real server, which serves it at `/app/`: a coordinator invites the
//! volunteer on `/beheer`, the app signs in with the enrolment code, records sessions
//! online and offline, survives a reload without network, sees them saved once the
//! server is back, and shows it is signed out when the coordinator switches it off. The browser is driven by `e2e/drive.mjs` (playwright-core) over JSON lines;
//! this test owns the server and checks what it stored with a Rust client.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use serde_json::{json, Value};
use sync_core::partition::WijkId;
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, Activiteit};

/// Longest a single browser step may take (the driver's own limit is 30 s per wait).
const STEP: Duration = Duration::from_secs(60);

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mobile-examples/web-volunteer")
}

/// `target/test-output/web-volunteer/`, beside the test executable's profile directory.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-output/web-volunteer")
}

/// The Playwright driver as a child process; killed (with its Chromium) on drop.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    fn start() -> Browser {
        let dir = app_dir();
        assert!(
            dir.join("node_modules/playwright-core").exists() && dir.join("dist/sw.js").exists(),
            "web app not built: run `npm ci && npm run build` in mobile-examples/web-volunteer \
             and `bash scripts/ensure-chromium.sh` (scripts/test.sh does both)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("e2e/drive.mjs"))
            .arg(screenshot_dir())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Browser {
            child,
            stdin,
            answers,
            stderr: log,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").join("\n")
    }

    /// Sends one command and returns its answer; fails the test if the step failed.
    fn run(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("driver stdin");
        let line = self.answers.recv_timeout(STEP).unwrap_or_else(|_| {
            panic!(
                "browser step {command} did not answer within {STEP:?}; driver log:\n{}",
                self.log()
            )
        });
        let answer: Value = serde_json::from_str(&line).expect("driver answers JSON");
        assert_eq!(
            answer["ok"],
            true,
            "browser step {command} failed: {}\ndriver log:\n{}",
            answer["error"],
            self.log()
        );
        answer
    }

    fn screenshot(&mut self, name: &str) {
        self.run(json!({"cmd": "screenshot", "name": name}));
    }

    /// (note, status) of every session on the open activiteit.
    fn sessions(&mut self) -> Vec<(String, String)> {
        let answer = self.run(json!({"cmd": "sessions"}));
        answer["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| {
                (
                    s["note"].as_str().unwrap_or_default().to_owned(),
                    s["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The activiteit as the server has stored it, read by a fresh Rust client.
async fn stored(url: &str, token: &str, id: DocumentId) -> Activiteit {
    let mut client = Client::connect("controle", url, token)
        .await
        .expect("rust client connects");
    assert!(client.fetch(id).await, "server does not have {id}");
    Activiteit::read(&client.docs[&id]).expect("a valid activiteit")
}

async fn get_json(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = http::request(addr, "GET", path, token, None).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A coordinator invites a volunteer on /beheer; the volunteer signs in in the browser
/// with the code, sees only their wijk's activiteit (a plan cannot be opened), records
/// a session that reaches the server, records another with the server down, still sees
/// it as "nog niet verzonden" after a reload, and sees it "opgeslagen" and stored once
/// the server is back on the same address. The coordinator then switches the device
/// off: the app shows it is signed out, and the code does not work a second time.
#[tokio::test]
async fn volunteer_web_app_online_offline_and_back() {
    let dist = app_dir().join("dist");
    let dist_arg = dist.to_str().expect("utf-8 path").to_owned();
    let serve_args = ["--web-app-dir", dist_arg.as_str()];
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "coord-noord"]);
    fx.admin(&["grant", "coord-noord", "coordinator", "--wijk", "noord"]);
    let coordinator = fx.token("coord-noord");
    let server = fx.start(&serve_args);
    let addr = server.addr;

    // A professional sets up an activiteit and a plan in noord.
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let plan = prof.create_plan("noord", "HH-WEB-1").await;
    let mut koffie = Activiteit::new(WijkId::new("noord").expect("wijk"), "Koffieochtend");
    koffie.location = Some("Wijkcentrum De Kiem".into());
    let act = prof
        .add_document(schema::new_document(&koffie).expect("activiteit"))
        .await;
    assert!(prof.sync_acked(act).await, "{:?}", prof.notices);
    prof.disconnect().await;

    // The API the app stands on: who am I, and no plan ids for a volunteer.
    let (status, me) = get_json(addr, "/api/v1/me", Some(&t.vol_noord)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], "vol-noord");
    assert_eq!(
        me["wijken"],
        json!([{"wijk": "noord", "name": "noord", "roles": ["volunteer"]}])
    );
    assert!(me["storage_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(get_json(addr, "/api/v1/me", None).await.0, 401);
    let (status, listing) = get_json(addr, "/api/v1/documents", Some(&t.vol_noord)).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = listing["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(listed, [act.to_string()], "a volunteer was listed a plan");

    // The app is served at /app/ with its manifest and service worker.
    let (status, html) = http::request(addr, "GET", "/app/", None, None).await;
    assert_eq!(status, 200);
    assert!(html.contains("manifest.webmanifest"), "{html}");
    for file in ["/app/sw.js", "/app/manifest.webmanifest"] {
        assert_eq!(http::request(addr, "GET", file, None, None).await.0, 200);
    }
    assert_eq!(http::request(addr, "GET", "/app", None, None).await.0, 308);

    let mut browser = Browser::start();
    let base = format!("http://{addr}");
    let login = browser.run(json!({"cmd": "beheer-login", "url": base, "token": coordinator}));
    assert_eq!(
        login["cookie"],
        json!({"httpOnly": true, "sameSite": "Strict", "path": "/beheer"}),
        "{login}"
    );
    assert_eq!(login["scriptSeesCookie"], false);
    let invited =
        browser.run(json!({"cmd": "beheer-invite", "name": "Vera de Vries", "user": "vol-noord"}));
    assert_eq!(invited["user"], "vol-noord", "{invited}");
    assert_eq!(invited["qr"], true, "no QR code: {invited}");
    let code = invited["code"].as_str().expect("code").to_owned();
    browser.run(json!({"cmd": "beheer-screenshot", "name": "beheer-1-uitnodiging"}));
    browser.run(json!({"cmd": "goto", "url": format!("http://{addr}/app/")}));
    browser.screenshot("1-inloggen");
    browser.run(json!({"cmd": "login", "code": code}));
    let list = browser.run(json!({"cmd": "list"}));
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], act.to_string());
    assert_eq!(items[0]["title"], "Koffieochtend");
    browser.screenshot("2-activiteiten");

    // A plan's id typed into the app does not open it.
    let opened = browser.run(json!({"cmd": "open", "id": plan.to_string()}));
    assert_eq!(opened["unavailable"], true, "{opened}");
    browser.screenshot("6-plan-niet-beschikbaar");

    let opened = browser.run(json!({"cmd": "open", "id": act.to_string()}));
    assert_eq!(opened["title"], "Koffieochtend");
    browser.run(json!({"cmd": "offline-ready"}));
    browser.run(json!({"cmd": "wait-online"}));

    // Online: recorded, acknowledged, stored.
    browser.run(
        json!({"cmd": "record", "date": "2026-11-17", "attendance": 12, "hours": "2,5",
        "note": "Online vastgelegd", "signal": "Mevrouw B. vraagt naar schuldhulp"}),
    );
    browser.run(json!({"cmd": "wait-status", "note": "Online vastgelegd", "status": "opgeslagen"}));
    browser.screenshot("3-bijeenkomst-opgeslagen");
    let on_server = stored(&server.url(), &t.prof_noord, act).await;
    let session = on_server
        .sessions
        .iter()
        .find(|s| s.notes.as_ref().map(|n| n.as_str()) == Some("Online vastgelegd"))
        .expect("the online session is on the server");
    assert_eq!(session.date.as_str(), "2026-11-17");
    assert_eq!(session.attendance, 12);
    assert_eq!(session.volunteer_hours, 2.5);
    assert_eq!(
        session
            .signals
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        ["Mevrouw B. vraagt naar schuldhulp"]
    );

    // Offline: the server is gone; the session is kept and marked as not yet sent,
    // also after a reload (the shell from the service worker, the document from
    // IndexedDB, the acknowledged heads from localStorage).
    assert!(server.stop(), "server did not stop cleanly");
    browser.run(json!({"cmd": "wait-offline"}));
    let recorded = browser.run(
        json!({"cmd": "record", "date": "2026-11-24", "attendance": 7,
        "hours": 3, "note": "Offline vastgelegd", "signal": ""}),
    );
    assert!(
        recorded["confirmation"]
            .as_str()
            .is_some_and(|c| c.contains("zodra er verbinding is")),
        "{recorded}"
    );
    browser.run(json!({"cmd": "reload"}));
    let after_reload = browser.sessions();
    assert_eq!(
        after_reload,
        [
            (
                "Offline vastgelegd".to_owned(),
                "nog-niet-verzonden".to_owned()
            ),
            ("Online vastgelegd".to_owned(), "opgeslagen".to_owned()),
        ],
        "after an offline reload"
    );
    browser.screenshot("4-offline-nog-niet-verzonden");

    // The server comes back where the page expects it: the session is sent, committed
    // and acknowledged.
    let server = fx.start_on(addr, &serve_args);
    browser.run(json!({"cmd": "wait-online"}));
    browser
        .run(json!({"cmd": "wait-status", "note": "Offline vastgelegd", "status": "opgeslagen"}));
    browser.screenshot("5-weer-opgeslagen");
    let on_server = stored(&server.url(), &t.prof_noord, act).await;
    let mut notes: Vec<&str> = on_server
        .sessions
        .iter()
        .filter_map(|s| s.notes.as_ref().map(|n| n.as_str()))
        .collect();
    notes.sort_unstable();
    assert_eq!(notes, ["Offline vastgelegd", "Online vastgelegd"]);
    let offline = on_server
        .sessions
        .iter()
        .find(|s| s.date.as_str() == "2026-11-24")
        .expect("offline session");
    assert_eq!((offline.attendance, offline.volunteer_hours), (7, 3.0));
    assert!(offline.signals.is_empty());

    // The coordinator (logged in again: logins live in the restarted server's memory)
    // sees the device and switches it off; the app says it is signed out.
    browser.run(json!({"cmd": "beheer-login", "url": base, "token": coordinator}));
    let devices = browser.run(json!({"cmd": "beheer-devices"}));
    let live: Vec<&Value> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["live"] == true && d["user"] == "vol-noord")
        .collect();
    assert_eq!(
        live.len(),
        1,
        "the volunteer's device is not listed: {devices}"
    );
    browser.run(json!({"cmd": "beheer-screenshot", "name": "beheer-2-apparaten"}));
    let after = browser.run(json!({"cmd": "beheer-switch-off", "user": "vol-noord"}));
    assert!(
        after["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .all(|d| d["user"] != "vol-noord" || d["live"] == false),
        "{after}"
    );
    let signed_out = browser.run(json!({"cmd": "wait-signed-out"}));
    assert!(
        signed_out["message"]
            .as_str()
            .is_some_and(|m| m.contains("afgemeld")),
        "{signed_out}"
    );
    browser.screenshot("7-afgemeld");
    browser.run(json!({"cmd": "beheer-screenshot", "name": "beheer-3-uitgeschakeld"}));
    let again = browser.run(json!({"cmd": "enrol-again", "code": code}));
    assert_eq!(again["signedIn"], false, "{again}");
    assert!(
        again["error"]
            .as_str()
            .is_some_and(|e| e.contains("al gebruikt")),
        "a used code signed in again: {again}"
    );
    // The app runs whole under the server's Content-Security-Policy (issue 16, item
    // 16): Chromium reports every refused script, wasm, style or connection.
    let log = browser.log();
    assert!(
        !log.contains("Content Security Policy"),
        "the app broke the CSP: {log}"
    );
    drop(browser);
}

/// A web app directory without a built app is refused at start with a clear message,
/// instead of a server that answers 404 for the whole app.
#[test]
fn serve_refuses_a_web_app_dir_without_index_html() {
    let fx = Fixture::new();
    let empty = fx.dir.path().join("leeg");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = Command::new(buurtsync_e2e::server::binary())
        .arg("--database")
        .arg(&fx.db_url)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-plain-http",
            "--web-app-dir",
        ])
        .arg(&empty)
        .output()
        .expect("run buurtsync");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no index.html"), "{stderr}");
}
