//! Operating the server: TLS (verified, refused with a wrong CA, reloaded without a
//! restart), `/metrics` and `/readyz`, backup while serving and restore, and the
//! configuration file with `config check`.

use std::sync::Arc;
use std::time::Duration;

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use sync_core::protocol::{self, Message, PeerMetadata};
use sync_core::schema::{self, Goal, Leefdomein, Plan};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca cert");
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes a server certificate for `localhost` signed by `ca` into cert.pem/key.pem.
fn write_server_cert(ca: &Ca, dir: &std::path::Path) {
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    // Write-then-rename: the server never reads a half-written pair.
    std::fs::write(dir.join("key.pem.tmp"), key.serialize_pem()).expect("key");
    std::fs::write(dir.join("cert.pem.tmp"), cert.pem()).expect("cert");
    std::fs::rename(dir.join("key.pem.tmp"), dir.join("key.pem")).expect("rename");
    std::fs::rename(dir.join("cert.pem.tmp"), dir.join("cert.pem")).expect("rename");
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Opens wss://localhost:<port>/sync trusting `ca`, joins, and returns the server's
/// storageId from its `peer` answer; Err with the reason when TLS or the upgrade fails.
async fn wss_join(port: u16, ca: &Ca, token: &str) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(client_config(ca));
    let tls = tokio::time::timeout(
        buurtsync_e2e::WAIT,
        connector.connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS: {e}"))?;
    let mut request = format!("wss://localhost:{port}/sync")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let join = Message::Join {
        sender_id: "tls-device".into(),
        peer_metadata: Some(PeerMetadata::default()),
        supported_protocol_versions: vec!["1".into()],
    };
    ws.send(WsMessage::Binary(protocol::encode(&join).into()))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(buurtsync_e2e::WAIT, ws.next()).await {
        Ok(Some(Ok(WsMessage::Binary(b)))) => match protocol::decode(&b) {
            Ok(Message::Peer { peer_metadata, .. }) => {
                Ok(peer_metadata.and_then(|m| m.storage_id).unwrap_or_default())
            }
            other => Err(format!("expected peer, got {other:?}")),
        },
        other => Err(format!("no peer message: {other:?}")),
    }
}

/// A client that verifies the test CA syncs over TLS; one trusting another CA is
/// refused; after the certificate is replaced and SIGHUP sent, clients trusting the
/// new CA connect without a restart.
#[tokio::test]
async fn tls_verifies_refuses_a_wrong_ca_and_reloads() {
    let fx = Fixture::new();
    let t = fx.seed();
    let ca = new_ca("buurtsync test CA");
    let other_ca = new_ca("someone else's CA");
    let dir = fx.dir.path();
    write_server_cert(&ca, dir);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let server = fx.start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    let port = server.addr.port();

    let storage = wss_join(port, &ca, &t.prof_noord)
        .await
        .expect("a client trusting the test CA connects");
    assert!(!storage.is_empty(), "peer message carries the storageId");
    let refused = wss_join(port, &other_ca, &t.prof_noord).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("TLS")),
        "a client trusting another CA must be refused: {refused:?}"
    );
    // Plain ws:// on the TLS port gets nowhere either.
    assert!(Client::connect("plain", &server.url(), &t.prof_noord)
        .await
        .is_err());

    // Rotate: a certificate from the other CA, then SIGHUP. No restart.
    write_server_cert(&other_ca, dir);
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(server.pid().to_string())
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let mut rotated = false;
    for _ in 0..100 {
        if wss_join(port, &other_ca, &t.prof_noord).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new certificate was not picked up");
    assert!(
        wss_join(port, &ca, &t.prof_noord).await.is_err(),
        "the old certificate is still served"
    );
}

/// Serving without TLS files needs --insecure-plain-http: the default is refused.
#[test]
fn plain_http_must_be_asked_for() {
    let fx = Fixture::new();
    let out = std::process::Command::new(buurtsync_e2e::server::binary())
        .args(["--database", &fx.db_url, "serve", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-plain-http"), "{err}");
}

/// `backup` and `restore` are for SQLite files: on a PostgreSQL store (a real, reachable
/// one) they refuse with an error that points to pg_dump/PITR and write nothing.
#[test]
fn backup_and_restore_on_postgres_point_to_pg_dump() {
    let fx = Fixture::postgres();
    fx.admin(&["wijk", "add", "noord"]);
    let target = fx.dir.path().join("pg-backup.sqlite3");
    let target = target.to_str().expect("utf-8 path");
    for args in [
        vec!["backup", target, "--no-keys"],
        vec!["restore", target, "--force"],
    ] {
        let out = fx.admin_raw(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("pg_dump") && err.contains("docs/operations.md"),
            "{args:?}: {err}"
        );
    }
    assert!(!std::path::Path::new(target).exists(), "nothing written");
    // The store is untouched and still serves admin commands.
    let wijken = fx.admin(&["wijk", "list"]);
    assert!(wijken.to_string().contains("noord"), "{wijken}");
}

/// Reads one series' value (sum over its label sets matching `labels`) from a scrape.
fn series(scrape: &str, name: &str, labels: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n == name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `/metrics` (on the metrics listener) has the key series and they move with
/// traffic; `/readyz` says ready.
#[tokio::test]
async fn metrics_move_with_traffic() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let (status, body) = http::request(server.addr, "GET", "/readyz", None, None).await;
    assert_eq!((status, body.trim()), (200, "ready"));

    let (status, before) = http::request(server.metrics(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let mut c = Client::connect("m", &server.url(), &t.prof_noord)
        .await
        .expect("connect");
    let id = c.create_plan("noord", "HH-METRIEK").await;
    for i in 0..3 {
        let goal = format!("Doel {i}");
        c.edit(id, move |d| {
            schema::update::<Plan>(d, |p| p.goals.push(Goal::new(Leefdomein::Wonen, &goal)))
                .expect("edit");
        })
        .await;
        assert!(c.sync_acked(id).await);
    }
    // One refused message, counted by reason.
    c.send_raw(vec![0xff, 0x00]).await;
    c.pump_until(buurtsync_e2e::WAIT, |c| !c.errors().is_empty())
        .await;
    let (_, after) = http::request(server.metrics(), "GET", "/metrics", None, None).await;

    assert_eq!(series(&after, "buurtsync_connections", ""), 1.0, "{after}");
    assert!(series(&after, "buurtsync_connections_total", "") >= 1.0);
    assert!(series(&after, "buurtsync_documents_loaded", "") >= 1.0);
    assert!(series(&after, "buurtsync_cache_bytes", "") > 0.0);
    for (name, labels) in [
        ("buurtsync_messages_in_total", "type=\"sync\""),
        (
            "buurtsync_messages_out_total",
            "type=\"remote-heads-changed\"",
        ),
        ("buurtsync_bytes_in_total", ""),
        ("buurtsync_bytes_out_total", ""),
        ("buurtsync_sync_latency_seconds_count", ""),
        ("buurtsync_store_latency_seconds_count", "op=\"commit\""),
        ("buurtsync_rejected_total", "reason=\"malformed\""),
        ("buurtsync_commits_total", "kind=\"plan\""),
        ("buurtsync_documents_created_total", "kind=\"plan\""),
    ] {
        let (was, now) = (series(&before, name, labels), series(&after, name, labels));
        assert!(
            now > was,
            "{name}{{{labels}}} did not move: {was} -> {now}\n{after}"
        );
    }
    assert_eq!(
        series(&after, "buurtsync_commits_total", "kind=\"plan\""),
        3.0,
        "three committed edits"
    );
    // No personal data in labels: no user names, token ids or document ids.
    // Nor wijk ids: per-wijk activity counts are not for the monitoring network.
    for secret in ["prof-noord", "tok_", &id.to_string(), "noord"] {
        assert!(!after.contains(secret), "/metrics leaks {secret}");
    }
}

/// A backup taken while devices write restores into a server that serves every
/// document acknowledged before the backup began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writing_restores_everything_acknowledged() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&[]);
    let mut a = Client::connect("a", &server.url(), &t.prof_noord)
        .await
        .expect("a");
    let mut acked = Vec::new();
    for i in 0..5 {
        let id = a.create_plan("noord", &format!("HH-BACKUP-{i}")).await;
        acked.push((id, a.heads_hex(id)));
    }
    // Writers keep going during the backup.
    let url = server.url();
    let token = t.prof2_noord.clone();
    let writer = tokio::spawn(async move {
        let mut b = Client::connect("b", &url, &token).await.expect("b");
        for i in 0..15 {
            b.create_plan("noord", &format!("HH-DURING-{i}")).await;
        }
    });
    let backup = fx.dir.path().join("backups").join("nightly.sqlite3");
    let keys_backup = fx.dir.path().join("key-backups").join("nightly.keys");
    let backup_s = backup.to_str().expect("utf-8").to_owned();
    let keys_s = keys_backup.to_str().expect("utf-8").to_owned();
    let db_url = fx.db_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(buurtsync_e2e::server::binary())
            .args(["--database", &db_url, "--json", "backup", &backup_s])
            .args(["--keys-to", &keys_s])
            .output()
            .expect("run backup")
    })
    .await
    .expect("backup task");
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(report["documents"].as_u64().expect("count") >= 5);
    assert!(keys_backup.exists(), "key store backup");
    writer.await.expect("writer");
    drop(server);

    // Restore into a fresh place and serve from it.
    let restored = tempfile::tempdir().expect("tempdir");
    let restored_url = format!(
        "sqlite://{}",
        restored.path().join("buurtsync.sqlite3").display()
    );
    let out = std::process::Command::new(buurtsync_e2e::server::binary())
        .args([
            "--database",
            &restored_url,
            "--json",
            "restore",
            backup.to_str().expect("utf-8"),
            "--keys-from",
            keys_backup.to_str().expect("utf-8"),
        ])
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring over an existing database needs --force.
    let again = std::process::Command::new(buurtsync_e2e::server::binary())
        .args([
            "--database",
            &restored_url,
            "restore",
            backup.to_str().expect("utf-8"),
            "--keys-from",
            keys_backup.to_str().expect("utf-8"),
        ])
        .output()
        .expect("restore again");
    assert!(!again.status.success());

    let fx2 = Fixture {
        dir: restored,
        db_url: restored_url,
    };
    let server = fx2.start(&[]);
    let mut c = Client::connect("c", &server.url(), &t.prof_noord)
        .await
        .expect("tokens are in the backup too");
    for (id, heads) in &acked {
        assert!(c.fetch(*id).await, "document {id} missing after restore");
        let h = heads.clone();
        assert!(
            c.pump_until(buurtsync_e2e::WAIT, |c| c.heads_hex(*id) == h)
                .await,
            "document {id} restored with other heads"
        );
        let plan = Plan::read(&c.docs[id]).expect("decrypts with the restored keys");
        assert!(plan.household.pseudonym.starts_with("HH-BACKUP-"));
    }
}

/// A configuration file sets what flags and environment leave open; `config check`
/// reports the effective settings and refuses unknown keys, zero limits and bad TLS
/// files.
#[test]
fn config_file_and_check() {
    let fx = Fixture::new();
    let dir = fx.dir.path();
    let file = dir.join("buurtsync.toml");
    std::fs::write(
        &file,
        "database = \"sqlite:///tmp/from-file.sqlite3\"\n[serve]\nlisten = \"127.0.0.1:9443\"\ninsecure_plain_http = true\nmax_messages_per_sec = 77\nping_interval = \"20s\"\n",
    )
    .expect("write");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(buurtsync_e2e::server::binary())
            .args(args)
            .envs(env.iter().copied())
            .env_remove("BUURTSYNC_DATABASE")
            .output()
            .expect("run")
    };
    let file_s = file.to_str().expect("utf-8");
    let out = run(
        &[
            "--config",
            file_s,
            "--json",
            "config",
            "check",
            "--ping-interval",
            "30s",
        ],
        &[
            ("BUURTSYNC_MAX_CONNECTIONS_PER_USER", "5"),
            ("BUURTSYNC_MAX_DOCUMENT_OPS", "250000"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["database"], "/tmp/from-file.sqlite3", "file");
    assert_eq!(v["listen"], "127.0.0.1:9443", "file");
    assert_eq!(v["max_messages_per_sec"], 77, "file");
    assert_eq!(v["ping_interval"], "30s", "flag beats file");
    assert_eq!(v["max_connections_per_user"], 5, "environment");
    assert_eq!(v["max_document_ops"], 250_000, "environment");
    assert_eq!(v["tls"], serde_json::Value::Null);

    std::fs::write(&file, "[serve]\nmax_mesages_per_sec = 1\n").expect("write");
    let out = run(&["--config", file_s, "config", "check"], &[]);
    assert!(!out.status.success(), "a typo must not pass");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_mesages_per_sec"));

    // A file cannot switch off small-count suppression (the flag refuses 0 as well).
    std::fs::write(&file, "[serve]\ncentral_min_count = 0\n").expect("write");
    let out = run(&["--config", file_s, "config", "check"], &[]);
    assert!(!out.status.success(), "central_min_count = 0 must not pass");
    assert!(String::from_utf8_lossy(&out.stderr).contains("central_min_count"));

    // Nor allow no operations at all in a document.
    std::fs::write(&file, "[serve]\nmax_document_ops = 0\n").expect("write");
    let out = run(&["--config", file_s, "config", "check"], &[]);
    assert!(!out.status.success(), "max_document_ops = 0 must not pass");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_document_ops"));

    // The documented example file parses; only its certificate is missing here.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/buurtsync.example.toml"
    );
    let out = run(&["--config", example, "config", "check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("fullchain.pem"),
        "{err}"
    );

    std::fs::write(dir.join("bad.pem"), "not a certificate").expect("write");
    let bad = dir.join("bad.pem");
    let bad = bad.to_str().expect("utf-8");
    let out = run(
        &["config", "check", "--tls-cert", bad, "--tls-key", bad],
        &[],
    );
    assert!(!out.status.success(), "bad TLS files must not pass");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.pem"));
}
