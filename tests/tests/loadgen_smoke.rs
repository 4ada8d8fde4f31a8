//! The load generator's smoke configuration against the real server: a few seconds of
//! the "assen" workload (seeding through the admin CLI, creation, initial sync, offline
//! edits, reconnect storm, live edits, catch-up probe). Asserts correctness only —
//! everything converged, no errors — never speed.

use std::process::Command;

use buurtsync_e2e::server::{binary, Fixture, ServerProcess};
use serde_json::Value;

/// The smoke workload converges on our server without a single error, and every
/// phase did real work (changes committed and fanned out, devices caught up).
#[test]
fn loadgen_smoke_converges_without_errors() {
    let fx = Fixture::new();
    smoke(&fx, &[]);
}

/// The same workload with a zero cache budget: every document nobody is working on is
/// evicted at once and reloaded from the store on its next use. Everything still
/// converges without an error, and the server really did evict and reload.
#[test]
fn loadgen_smoke_converges_with_a_zero_cache_budget() {
    let fx = Fixture::new();
    let server = smoke(&fx, &["--cache-budget-mib", "0"]);
    let addr = server.metrics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let metrics = rt.block_on(buurtsync_e2e::http::get(addr, "/metrics", None));
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let counter = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        counter("buurtsync_cache_evictions_total") > 0.0,
        "no evictions: {text}"
    );
    assert!(
        counter("buurtsync_cache_reloads_total") > 0.0,
        "no reloads: {text}"
    );
}

/// A recorded live phase replayed against a fresh server delivers every recorded change:
/// all of them committed, every holder other than the writer received each one, and
/// every connection ends at its documents' last recorded change (issue 18, item 1).
#[test]
fn replay_delivers_every_recorded_change() {
    let fx = Fixture::new();
    let loadgen = loadgen();
    let tokens = seed(&fx, &loadgen);
    let recording = fx.dir.path().join("recording.json");
    let recorded = Command::new(&loadgen)
        .args(["record", "--wijken", "2", "--professionals", "4"])
        .args(["--volunteers", "2", "--plans", "6", "--activiteiten", "2"])
        .args(["--history", "3", "--changes", "60", "--out"])
        .arg(&recording)
        .output()
        .expect("run loadgen record");
    assert!(
        recorded.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&recorded.stderr)
    );
    let server = fx.start(&["--max-connections-per-user", "100000"]);
    let report_path = fx.dir.path().join("replay.json");
    let run = Command::new(&loadgen)
        .args(["replay", "--url", &server.url(), "--label", "smoke"])
        .arg("--tokens")
        .arg(&tokens)
        .arg("--recording")
        .arg(&recording)
        .args(["--rate", "60", "--secs", "1", "--floor-rounds", "0"])
        .args(["--drain-secs", "60", "--check", "--pid"])
        .arg(server.pid().to_string())
        .arg("--out")
        .arg(&report_path)
        .output()
        .expect("run loadgen replay");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "replay failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report written"))
            .expect("report is JSON");
    assert_eq!(report["changes_scheduled"], 60, "{stdout}");
    assert_eq!(report["changes_sent"], 60, "{stdout}");
    assert_eq!(report["changes_committed"], 60, "{stdout}");
    assert!(report["expected_deliveries"].as_u64() > Some(0), "{stdout}");
    assert_eq!(
        report["deliveries"], report["expected_deliveries"],
        "{stdout}"
    );
    assert_eq!(report["heads_mismatched"], 0, "{stdout}");
    assert_eq!(report["errors"], 0, "{stdout}");
}

fn loadgen() -> std::path::PathBuf {
    let loadgen = binary().with_file_name("buurtsync-loadgen");
    assert!(
        loadgen.exists(),
        "{} not found: run `cargo build --bins` first",
        loadgen.display()
    );
    loadgen
}

/// Seeds two wijken through the admin CLI; returns the tokens file.
fn seed(fx: &Fixture, loadgen: &std::path::Path) -> std::path::PathBuf {
    let tokens = fx.dir.path().join("tokens.json");
    let seeded = Command::new(loadgen)
        .args([
            "seed",
            "--wijken",
            "2",
            "--database",
            &fx.db_url,
            "--buurtsync",
        ])
        .arg(binary())
        .arg("--out")
        .arg(&tokens)
        .output()
        .expect("run loadgen seed");
    assert!(
        seeded.status.success(),
        "seed failed: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    tokens
}

/// Seeds, starts the server with `extra` flags, runs the smoke workload against it and
/// asserts correctness; returns the (still running) server.
fn smoke(fx: &Fixture, extra: &[&str]) -> ServerProcess {
    let loadgen = loadgen();
    let tokens = seed(fx, &loadgen);

    // The seed shares one token per role per wijk among many devices: lift the
    // per-user connection cap, as bench/compare.sh does.
    let mut args = vec!["--max-connections-per-user", "100000"];
    args.extend_from_slice(extra);
    let server = fx.start(&args);
    let report_path = fx.dir.path().join("report.json");
    let run = Command::new(&loadgen)
        .args(["run", "--url", &server.url(), "--label", "smoke"])
        .arg("--tokens")
        .arg(&tokens)
        .args(["--wijken", "2", "--professionals", "4", "--volunteers", "2"])
        .args(["--plans", "6", "--activiteiten", "2", "--history", "3"])
        .args([
            "--visits",
            "1",
            "--edits-per-visit",
            "3",
            "--volunteer-edits",
            "2",
        ])
        .args([
            "--storm-secs",
            "0.5",
            "--live-secs",
            "1.5",
            "--think-ms",
            "20",
        ])
        .args([
            "--catchup-held",
            "12",
            "--catchup-changed",
            "3",
            "--catchup-rounds",
            "1",
        ])
        .args([
            "--floor-rounds",
            "5",
            "--phase-limit-secs",
            "60",
            "--check",
            "--pid",
        ])
        .arg(server.pid().to_string())
        .arg("--out")
        .arg(&report_path)
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report written"))
            .expect("report is JSON");
    assert_eq!(report["converged"], true, "{stdout}");
    assert_eq!(report["errors"], 0, "{stdout}");
    let phase = |name: &str| {
        report["phases"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} phase: {stdout}"))
    };
    let live = phase("live");
    assert!(live["changes_committed"].as_u64() > Some(0), "{stdout}");
    assert!(live["deliveries"].as_u64() > Some(0), "{stdout}");
    assert_eq!(live["undelivered"], 0, "{stdout}");
    assert_eq!(live["diverged_documents"], 0, "{stdout}");
    // Every device (4 professionals, 2 volunteers) caught up after the storm.
    assert_eq!(phase("storm")["catchup_ms"]["count"], 6, "{stdout}");
    assert!(report["catchup"]["all_ms"].as_f64() > Some(0.0), "{stdout}");
    server
}
