//! The audit log through the `buurtsync` command line: admin commands record
//! themselves, `audit verify` checks the chain (and a kept head), `audit export`
//! answers "who looked at my file".

use buurtsync_e2e::server::Fixture;

/// `grant` and `token issue` are recorded; `audit verify` passes and prints a head
/// that a later verify can be held to; a wrong head exits 1; `audit export` gives CSV
/// with a header row.
#[test]
fn admin_commands_are_audited_and_verifiable() {
    let fx = Fixture::new();
    fx.admin(&["wijk", "add", "noord"]);
    fx.admin(&["user", "add", "fatima"]);
    fx.admin(&["grant", "fatima", "professional", "--wijk", "noord"]);
    fx.token("fatima");

    let report = fx.admin(&["audit", "verify"]);
    assert_eq!(report["ok"], true, "{report}");
    let entries = report["entries"].as_u64().expect("entries");
    assert!(entries >= 2, "{report}");
    let head = report["head_hash"].as_str().expect("head").to_owned();
    assert_eq!(head.len(), 64, "{report}");
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(0));

    let entries_arg = entries.to_string();
    let held = fx.admin(&[
        "audit",
        "verify",
        "--expect-entries",
        &entries_arg,
        "--expect-head",
        &head,
    ]);
    assert_eq!(held["ok"], true, "{held}");

    let wrong = fx.admin_raw(&[
        "audit",
        "verify",
        "--expect-entries",
        &entries_arg,
        "--expect-head",
        &"ab".repeat(32),
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("the audit log does not verify"), "{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&wrong.stdout).expect("report as JSON");
    assert_eq!(printed["ok"], false);
    assert_eq!(printed["problems"][0]["kind"], "head_mismatch", "{printed}");

    let export = fx.admin_raw(&["audit", "export", "--document", "X", "--format", "csv"]);
    assert!(export.status.success());
    let csv = String::from_utf8_lossy(&export.stdout);
    assert_eq!(
        csv.lines().next(),
        Some("seq,time,user,device,action,document,partition,detail"),
        "{csv}"
    );
}
