//! Issue 16 (an outside security review), the items away from the write path, each
//! reproduced as the reviewer attacked the released server: oversized peer ids in the
//! audit log (6), public metrics (7), cross-site dashboard logins and cookies without
//! `Secure` (13), global roles that cannot be removed (14), dotfiles and missing
//! security headers (16), erased plans that a restore brings back (4), and reads of
//! the catalog and the audit trail that were not audited (suspected). Item 3 (remains
//! in the SQLite files) is `server/tests/erasure_remains.rs`.

use std::sync::Arc;

use buurtsync_e2e::client::{Client, RawPeer, Seen};
use buurtsync_e2e::http;
use buurtsync_e2e::server::{binary, Fixture};
use buurtsync_e2e::WAIT;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use sync_core::partition::WijkId;
use sync_core::protocol::{Message, PeerMetadata};
use sync_core::schema::{self, Plan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Item 6: a `join` whose senderId is 1 MiB is refused at decode, and the peer id
/// that reaches the audit log stays short: the reviewer's 1 MiB ids grew the
/// append-only log by 24 MiB.
#[tokio::test]
async fn oversized_sender_id_is_refused_and_never_audited() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let huge = "x".repeat(1 << 20);
    let mut peer = RawPeer::open(&server.url(), &t.prof_noord).await;
    peer.send(&Message::Join {
        sender_id: huge.clone(),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some(huge.clone()),
            ..PeerMetadata::default()
        }),
        supported_protocol_versions: vec!["1".into()],
    })
    .await;
    let answer = peer.next().await;
    assert!(
        matches!(&answer, Seen::Message(Message::Error { message, .. }) if message.contains("senderId")),
        "a 1 MiB senderId was accepted: {:?}",
        match answer {
            Seen::Message(m) => m.type_name().to_owned(),
            other => format!("{other:?}"),
        }
    );
    // The same peer goes on to write with its huge id: nothing it sends is stored.
    let id = sync_core::protocol::DocumentId::random();
    let doc = schema::new_document(&Plan::new(WijkId::new("noord").expect("wijk"), "HH-BIG"))
        .expect("plan");
    let mut state = automerge::sync::State::new();
    let data = automerge::sync::SyncDoc::generate_sync_message(&doc, &mut state)
        .expect("message")
        .encode();
    peer.send(&Message::Sync {
        sender_id: huge.clone(),
        target_id: "server".into(),
        document_id: id,
        data,
    })
    .await;
    let _ = peer.next_within(std::time::Duration::from_secs(1)).await;
    let trail = fx.admin(&["audit", "export", "--document", &id.to_string()]);
    for entry in trail.as_array().expect("entries") {
        let device = entry["device"].as_str().unwrap_or_default();
        assert!(
            device.len() <= 256,
            "an audit entry holds a {}-byte device",
            device.len()
        );
    }
    assert!(
        !fx.db_file_contains(&huge.as_bytes()[..4096]),
        "the oversized id reached the database"
    );
}

/// Item 7: the public listener serves no `/metrics`, `/healthz` shows only a status,
/// and the metrics (on their own listener) carry no wijk label on activity counts.
#[tokio::test]
async fn metrics_and_health_tell_the_public_nothing() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut c = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("connect");
    c.create_plan("noord", "HH-METRICS").await;

    let public = http::get(server.addr, "/metrics", None).await;
    assert_eq!(public.status, 404, "metrics on the public listener");
    let health = http::get(server.addr, "/healthz", None).await;
    assert_eq!(health.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&health.body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"status": "ok"}),
        "healthz says more"
    );

    let metrics = http::get(server.metrics(), "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains("buurtsync_documents_created_total{kind=\"plan\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("wijk=") && !text.contains("noord"),
        "per-wijk activity in /metrics: {text}"
    );
}

/// The central-office user's token, on a fixture seeded with one.
fn office(fx: &Fixture) -> String {
    fx.admin(&["user", "add", "office"]);
    fx.admin(&["grant", "office", "central_office"]);
    fx.token("office")
}

/// Item 13: a login form posted from another site is refused (no session cookie);
/// the same post from the dashboard's own page logs in.
#[tokio::test]
async fn dashboard_login_refuses_cross_site_posts() {
    let fx = Fixture::new();
    let token = office(&fx);
    let server = fx.start(&[]);
    let form = format!("token={token}");
    let host = server.addr.to_string();
    let own_origin = format!("http://{host}");
    for (what, headers) in [
        (
            "Sec-Fetch-Site: cross-site",
            vec![
                ("Sec-Fetch-Site", "cross-site"),
                ("Origin", "https://evil.example"),
            ],
        ),
        ("a foreign Origin", vec![("Origin", "https://evil.example")]),
        ("Origin: null", vec![("Origin", "null")]),
    ] {
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        h.extend(headers);
        let r = http::send(server.addr, "POST", "/dashboard/login", &h, form.as_bytes()).await;
        assert_eq!(r.status, 403, "{what}: a cross-site login was accepted");
        assert!(r.header("set-cookie").is_none(), "{what}: got a session");
    }
    let r = http::send(
        server.addr,
        "POST",
        "/dashboard/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", &own_origin),
        ],
        form.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 303, "a same-origin login: {}", r.text());
    let cookie = r.header("set-cookie").expect("a session cookie");
    assert!(cookie.starts_with("buurtsync_dashboard="), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
}

/// A test certificate authority and a `localhost` certificate it signed, written as
/// cert.pem/key.pem into `dir`.
fn tls_files(dir: &std::path::Path) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_der = params.self_signed(&ca_key).expect("ca").der().clone();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("sign");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
    ca_der
}

/// One HTTPS request (HTTP/1.1, `Connection: close`) trusting `ca`; the raw answer.
async fn https(port: u16, ca: &CertificateDer<'static>, request: String) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// Item 13: when the server itself serves TLS, the dashboard cookie is `Secure`,
/// named `__Host-…` with `Path=/`, and that cookie (only) opens the dashboard.
#[tokio::test]
async fn dashboard_cookie_is_secure_and_host_prefixed_under_tls() {
    let fx = Fixture::new();
    let token = office(&fx);
    let ca = tls_files(fx.dir.path());
    let cert = fx.dir.path().join("cert.pem");
    let key = fx.dir.path().join("key.pem");
    let server = fx.start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    let port = server.addr.port();
    let form = format!("token={token}");
    let answer = https(
        port,
        &ca,
        format!(
            "POST /dashboard/login HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nSec-Fetch-Site: same-origin\r\n\
             Content-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    let set_cookie = answer
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no cookie: {answer}"));
    assert!(
        set_cookie.starts_with("__Host-buurtsync_dashboard="),
        "{set_cookie}"
    );
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    for wanted in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            attributes.contains(&wanted),
            "{wanted} missing: {set_cookie}"
        );
    }
    let pair = attributes[0];
    let page = https(
        port,
        &ca,
        format!(
            "GET /dashboard HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nCookie: {pair}\r\n\r\n"
        ),
    )
    .await;
    assert!(
        page.starts_with("HTTP/1.1 200") && !page.contains("id=\"login\""),
        "the __Host- cookie does not open the dashboard: {}",
        &page[..page.len().min(300)]
    );
}

/// Item 14: `ungrant … consulent` removes the global role: the consulent's open
/// hand-over copy becomes unavailable on the live connection, a new token reads
/// nothing, and the removal is in the audit log.
#[tokio::test]
async fn ungrant_removes_a_global_role_live_and_audited() {
    let fx = Fixture::new();
    let t = fx.seed();
    fx.admin(&["user", "add", "consulent-1"]);
    fx.admin(&["grant", "consulent-1", "consulent"]);
    let consulent_token = fx.token("consulent-1");
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let id = prof.create_plan("noord", "HH-UNGRANT").await;
    prof.edit(id, |d| {
        schema::update::<Plan>(d, |p| p.handover.requested = true).expect("edit");
    })
    .await;
    assert!(prof.sync_acked(id).await);
    // The consulent reads the plan's hand-over copy (issue 16, item 5).
    let id = buurtsync_e2e::http::handover_copy(server.addr, &consulent_token).await;
    let mut consulent = Client::connect("gemeente", &server.url(), &consulent_token)
        .await
        .expect("consulent");
    assert!(consulent.fetch(id).await, "positive control: handed over");
    let entries_before = fx.admin(&["audit", "verify"])["entries"]
        .as_u64()
        .expect("entries");

    let out = fx.admin_raw(&["ungrant", "consulent-1", "consulent"]);
    assert!(
        out.status.success(),
        "ungrant of a global role failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let removed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(removed["removed"], true);
    assert!(
        consulent
            .pump_until(WAIT, |c| c.unavailable.contains(&id))
            .await,
        "the departed consulent keeps the plan on the live connection"
    );
    let fresh = fx.token("consulent-1");
    let mut again = Client::connect("again", &server.url(), &fresh)
        .await
        .expect("connect");
    assert!(!again.fetch(id).await, "a new token still reads the plan");
    let users = fx.admin(&["user", "list"]);
    let row = users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["id"] == "consulent-1")
        .expect("user");
    assert_eq!(row["global_roles"], serde_json::json!([]), "{row}");
    // The removal is audited (verify counts it, and the chain still holds).
    let after = fx.admin(&["audit", "verify"]);
    assert!(after["entries"].as_u64().expect("entries") > entries_before);
    assert_eq!(
        fx.admin(&["ungrant", "consulent-1", "consulent"])["removed"],
        false
    );
}

/// Item 16: `/app/` answers 404 for dotfiles however spelled, and `/app/`, the API
/// and the dashboard carry CSP, `nosniff`, `DENY` framing and `no-referrer`.
#[tokio::test]
async fn app_refuses_dotfiles_and_every_face_sends_security_headers() {
    let fx = Fixture::new();
    let t = fx.seed();
    let web = fx.dir.path().join("web");
    std::fs::create_dir_all(web.join(".git")).expect("dir");
    std::fs::write(web.join("index.html"), "<!doctype html><title>app</title>").expect("index");
    std::fs::write(web.join(".env"), "SECRET_TOKEN=bst_leaked").expect("env");
    std::fs::write(web.join(".git").join("config"), "[core]").expect("git");
    let server = fx.start(&["--web-app-dir", web.to_str().expect("utf-8")]);
    for path in [
        "/app/.env",
        "/app/%2eenv",
        "/app/%2Eenv",
        "/app/.git/config",
    ] {
        let r = http::get(server.addr, path, None).await;
        assert_eq!(r.status, 404, "{path} answered {}", r.status);
        assert!(!r.text().contains("bst_leaked"), "{path} leaked");
    }
    let app = http::get(server.addr, "/app/", None).await;
    assert_eq!(app.status, 200);
    let csp = app.header("content-security-policy").unwrap_or_default();
    for wanted in [
        "frame-ancestors 'none'",
        "script-src 'self'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(wanted), "/app/ CSP lacks {wanted}: {csp:?}");
    }
    let api = http::get(server.addr, "/api/v1/me", Some(&t.prof_noord)).await;
    assert_eq!(api.status, 200);
    let dashboard = http::get(server.addr, "/dashboard", None).await;
    for (face, r) in [
        ("/app/", &app),
        ("/api/v1/me", &api),
        ("/dashboard", &dashboard),
    ] {
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(r.header(name), Some(value), "{face}: {name}");
        }
        assert!(
            r.header("content-security-policy")
                .is_some_and(|c| c.contains("frame-ancestors 'none'")),
            "{face}: no CSP"
        );
    }
}

/// Owner-only permissions of a file.
#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Item 4: backup → erase → restore no longer brings the erased plan back (nor one
/// created and erased after the backup); backups are owner-only and the key store
/// copy goes only where the operator says.
#[tokio::test]
async fn restore_reapplies_erasures_and_backups_are_private() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let before = prof.create_plan("noord", "HH-BEFORE").await;
    let kept = prof.create_plan("noord", "HH-KEPT").await;

    let backups = fx.dir.path().join("backups");
    let keys = fx.dir.path().join("key-backups").join("nightly.keys");
    let db_backup = backups.join("nightly.sqlite3");
    let db_s = db_backup.to_str().expect("utf-8");
    let keys_s = keys.to_str().expect("utf-8");
    let refused = fx.admin_raw(&["backup", db_s]);
    assert!(
        !refused.status.success(),
        "backup without a key store choice"
    );
    assert!(!db_backup.exists(), "a refused backup wrote nothing");
    fx.admin(&["backup", db_s, "--keys-to", keys_s]);
    assert!(
        !backups.join("nightly.sqlite3.keys").exists(),
        "the key store copy lies beside the database backup"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&db_backup), 0o600, "database backup mode");
        assert_eq!(mode(&keys), 0o600, "key store backup mode");
    }

    let after = prof.create_plan("noord", "HH-AFTER").await;
    // The device goes offline and keeps editing both plans (a stale device).
    prof.disconnect().await;
    for id in [before, after] {
        prof.edit(id, |d| {
            schema::update::<Plan>(d, |p| p.household.pseudonym = "HH-STALE".into()).expect("edit");
        })
        .await;
    }
    for id in [before, after] {
        fx.admin(&["erase", &id.to_string(), "--by", "privacy-officer"]);
    }
    assert!(server.stop(), "clean stop before the restore");
    let restored = fx.admin(&["restore", db_s, "--keys-from", keys_s, "--force"]);
    assert_eq!(restored["erasures"]["erased"], 1, "{restored}");
    assert_eq!(restored["erasures"]["tombstoned"], 1, "{restored}");

    let server = fx.start(&[]);
    let mut colleague = Client::connect("colleague", &server.url(), &t.prof2_noord)
        .await
        .expect("colleague");
    assert!(
        colleague.fetch(kept).await,
        "positive control: kept plan restored"
    );
    assert!(
        !colleague.fetch(before).await,
        "the erased plan is served again after restore"
    );
    // Both tombstones hold: the stale device pushing either plan is told to purge it.
    prof.unavailable.clear();
    prof.set_url(&server.url());
    prof.reconnect().await.expect("reconnect");
    for id in [before, after] {
        prof.push(id).await;
        assert!(
            prof.pump_until(WAIT, |c| c.unavailable.contains(&id)).await,
            "the erased plan {id} was accepted again after restore"
        );
    }
    let info = fx.admin_raw(&["doc", "info", &before.to_string()]);
    assert!(
        !info.status.success(),
        "the restored database holds the erased plan"
    );
}

/// Suspected item: a listing over the API, `doc info` and `audit export` are each an
/// audit entry, so a privacy officer can see who listed, inspected or exported what.
#[tokio::test]
async fn listings_inspections_and_audit_exports_are_audited() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut prof = Client::connect("prof", &server.url(), &t.prof_noord)
        .await
        .expect("prof");
    let id = prof.create_plan("noord", "HH-AUDIT").await;
    prof.disconnect().await;
    // Let the connection's last read entries land before counting.
    let count = || {
        fx.admin(&["audit", "verify"])["entries"]
            .as_u64()
            .expect("entries")
    };
    let mut entries = count();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = count();
        if now == entries {
            break;
        }
        entries = now;
    }
    let listing = http::get(
        server.addr,
        "/api/v1/documents?wijk=noord",
        Some(&t.prof_noord),
    )
    .await;
    assert_eq!(listing.status, 200);
    assert!(listing.text().contains(&id.to_string()));
    assert_eq!(count(), entries + 1, "the listing left no audit entry");

    fx.admin(&["doc", "info", &id.to_string()]);
    let out = std::process::Command::new(binary())
        .args(["--database", &fx.db_url, "audit", "export", "--document"])
        .arg(id.to_string())
        .args(["--format", "json"])
        .output()
        .expect("export");
    assert!(out.status.success());
    let trail = fx.admin(&["audit", "export", "--document", &id.to_string()]);
    let actions: Vec<&str> = trail
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"inspect"),
        "doc info not audited: {actions:?}"
    );
    assert!(
        actions.contains(&"audit_export"),
        "audit export not audited: {actions:?}"
    );
    drop(server);
}

trait DbFile {
    /// Does the SQLite database (or its log) contain these bytes?
    fn db_file_contains(&self, needle: &[u8]) -> bool;
}

impl DbFile for Fixture {
    fn db_file_contains(&self, needle: &[u8]) -> bool {
        ["buurtsync.sqlite3", "buurtsync.sqlite3-wal"]
            .iter()
            .any(|f| {
                std::fs::read(self.dir.path().join(f))
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            })
    }
}
