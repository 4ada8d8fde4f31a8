//! The report of a run (JSON, one file per run) and the comparison of runs against
//! two servers with the targets of the performance issue.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::{lock, Percentiles, Probe, ServerUse};
use crate::run::Settings;

/// One phase's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    pub secs: f64,
    pub changes_made: u64,
    pub changes_committed: u64,
    pub committed_per_s: f64,
    pub deliveries: u64,
    pub fanned_out_per_s: f64,
    pub propagation_ms: Percentiles,
    pub commit_ms: Percentiles,
    pub catchup_ms: Percentiles,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Documents re-synced after their sync stalled with work outstanding.
    pub resyncs: u64,
    /// Tracked changes that did not reach a device holding their document.
    pub undelivered: u64,
    /// Documents whose holders ended with different heads.
    pub diverged_documents: u64,
    pub server: ServerUse,
}

impl PhaseReport {
    pub fn from_probe(name: &str, took: Duration, probe: &Probe, server: ServerUse) -> Self {
        let secs = took.as_secs_f64();
        let committed = Probe::get(&probe.changes_committed);
        let deliveries = Probe::get(&probe.deliveries);
        PhaseReport {
            name: name.to_owned(),
            secs,
            changes_made: Probe::get(&probe.changes_made),
            changes_committed: committed,
            committed_per_s: committed as f64 / secs.max(1e-9),
            deliveries,
            fanned_out_per_s: deliveries as f64 / secs.max(1e-9),
            propagation_ms: Percentiles::of(&lock(&probe.propagation_us), 1000.0),
            commit_ms: Percentiles::of(&lock(&probe.commit_us), 1000.0),
            catchup_ms: Percentiles::of(&lock(&probe.catchup_ms), 1.0),
            bytes_sent: Probe::get(&probe.bytes_sent),
            bytes_received: Probe::get(&probe.bytes_received),
            frames_sent: Probe::get(&probe.frames_sent),
            frames_received: Probe::get(&probe.frames_received),
            errors: Probe::get(&probe.errors),
            error_samples: probe.error_samples(),
            resyncs: Probe::get(&probe.resyncs),
            undelivered: 0,
            diverged_documents: 0,
            server,
        }
    }
}

/// Target 3's measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CatchupProbe {
    pub held: usize,
    pub changed: usize,
    /// Median reconnect-until-in-sync of the device holding `held` documents.
    pub all_ms: f64,
    /// The same for a device holding only the `changed` documents.
    pub changed_only_ms: f64,
    pub ratio: f64,
    pub errors: u64,
}

/// automerge's own work to relay one change to `fanout` peers, in this process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Floor {
    pub fanout: usize,
    pub history: usize,
    pub us_per_change: f64,
    /// What `us_per_change` counts: "thread CPU time" (comparable with the server's
    /// CPU time); empty in reports made before it was (wall time).
    #[serde(default)]
    pub clock: String,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub sizes: serde_json::Value,
    pub settings: serde_json::Value,
    pub phases: Vec<PhaseReport>,
    pub catchup: Option<CatchupProbe>,
    pub floor: Floor,
    /// Every holder of every document ended with the same heads, and every tracked
    /// change reached every other holder.
    pub converged: bool,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

impl Report {
    pub fn new(
        s: &Settings,
        phases: Vec<PhaseReport>,
        catchup: Option<CatchupProbe>,
        floor: Floor,
        converged: bool,
        errors: u64,
        error_samples: Vec<String>,
    ) -> Report {
        Report {
            label: s.label.clone(),
            url: s.url.clone(),
            sizes: serde_json::to_value(s.sizes).unwrap_or_default(),
            settings: serde_json::json!({
                "history": s.history,
                "visits": s.visits,
                "edits_per_visit": s.edits_per_visit,
                "volunteer_edits": s.volunteer_edits,
                "storm_secs": s.storm_secs,
                "live_secs": s.live_secs,
                "window": s.window,
                "think_ms": s.think.as_millis() as u64,
                "catchup_held": s.catchup_held,
                "catchup_changed": s.catchup_changed,
                "seed": s.seed,
                "authenticated": s.tokens.is_some(),
                "summary": s.summary,
            }),
            phases,
            catchup,
            floor,
            converged,
            errors,
            error_samples,
        }
    }

    pub fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// Server CPU microseconds per committed change in the live phase.
    pub fn cpu_us_per_change(&self) -> f64 {
        self.phase("live").map_or(0.0, |p| {
            p.server.cpu_s * 1e6 / (p.changes_committed.max(1) as f64)
        })
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.phases
            .iter()
            .map(|p| p.server.peak_rss_mib)
            .fold(0.0, f64::max)
    }

    /// A human summary of one run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: converged={} errors={} sizes={}",
            self.label, self.converged, self.errors, self.sizes
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "  {:<12} {:>6.1}s  committed {:>6} ({:>7.1}/s)  fanned out {:>7} ({:>8.1}/s)  prop p50/p95/p99 {:.1}/{:.1}/{:.1} ms  catch-up p50/p95/max {:.0}/{:.0}/{:.0} ms  wire {:.1}/{:.1} MiB  server cpu {:.2}s peak {:.0} MiB  errors {}  resyncs {}",
                p.name,
                p.secs,
                p.changes_committed,
                p.committed_per_s,
                p.deliveries,
                p.fanned_out_per_s,
                p.propagation_ms.p50,
                p.propagation_ms.p95,
                p.propagation_ms.p99,
                p.catchup_ms.p50,
                p.catchup_ms.p95,
                p.catchup_ms.max,
                p.bytes_sent as f64 / 1048576.0,
                p.bytes_received as f64 / 1048576.0,
                p.server.cpu_s,
                p.server.peak_rss_mib,
                p.errors,
                p.resyncs
            );
        }
        if let Some(c) = &self.catchup {
            let _ = writeln!(
                out,
                "  catch-up probe: {} held, {} changed each side: {:.0} ms vs {:.0} ms for the {} alone (ratio {:.2})",
                c.held, c.changed, c.all_ms, c.changed_only_ms, c.changed, c.ratio
            );
        }
        let _ = writeln!(
            out,
            "  automerge floor: {:.0} µs per change relayed to {} peers; server used {:.0} µs per change",
            self.floor.us_per_change,
            self.floor.fanout,
            self.cpu_us_per_change()
        );
        for e in &self.error_samples {
            let _ = writeln!(out, "  error: {e}");
        }
        out
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// The comparison table: medians over rounds, ratios, each target met or not.
pub fn compare(ours: &[Report], reference: &[Report], cache_budget_mib: Option<f64>) -> String {
    let m = |rs: &[Report], f: &dyn Fn(&Report) -> f64| median(rs.iter().map(f).collect());
    let live = |f: fn(&PhaseReport) -> f64| move |r: &Report| r.phase("live").map_or(0.0, f);
    let tp = (
        m(ours, &live(|p| p.committed_per_s)),
        m(reference, &live(|p| p.committed_per_s)),
    );
    let p99 = (
        m(ours, &live(|p| p.propagation_ms.p99)),
        m(reference, &live(|p| p.propagation_ms.p99)),
    );
    let cpu = (
        m(ours, &|r| r.cpu_us_per_change() / 1000.0),
        m(reference, &|r| r.cpu_us_per_change() / 1000.0),
    );
    let rss = (
        m(ours, &Report::peak_rss_mib),
        m(reference, &Report::peak_rss_mib),
    );
    let floor = m(ours, &|r| r.floor.us_per_change);
    let catchup = (
        m(ours, &|r| r.catchup.as_ref().map_or(0.0, |c| c.ratio)),
        m(reference, &|r| r.catchup.as_ref().map_or(0.0, |c| c.ratio)),
    );
    let storm = (
        m(ours, &|r| {
            r.phase("storm").map_or(0.0, |p| p.catchup_ms.p95)
        }),
        m(reference, &|r| {
            r.phase("storm").map_or(0.0, |p| p.catchup_ms.p95)
        }),
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rounds: {} buurtsync, {} reference (medians)",
        ours.len(),
        reference.len()
    );
    let _ = writeln!(
        out,
        "{:<44} {:>12} {:>12} {:>8}  target",
        "figure", "buurtsync", "reference", "ratio"
    );
    let mut row = |name: &str, a: f64, b: f64, target: String| {
        let _ = writeln!(
            out,
            "{name:<44} {a:>12.2} {b:>12.2} {:>8.2}  {target}",
            ratio(a, b)
        );
    };
    let tp_ratio = ratio(tp.0, tp.1);
    row(
        "live throughput (changes committed/s)",
        tp.0,
        tp.1,
        format!("≥ 5× reference: {}", verdict(tp_ratio >= 5.0)),
    );
    row(
        "live propagation p99 (ms)",
        p99.0,
        p99.1,
        format!("≤ reference: {}", verdict(p99.0 <= p99.1)),
    );
    row(
        "server CPU s per 1,000 changes",
        cpu.0,
        cpu.1,
        String::from("(lower is better)"),
    );
    row(
        "server peak RSS (MiB)",
        rss.0,
        rss.1,
        match cache_budget_mib {
            Some(b) => format!(
                "≤ cache budget {b:.0} + 100 MiB: {}",
                verdict(rss.0 <= b + 100.0)
            ),
            None => String::from("(lower is better)"),
        },
    );
    let cpu_floor = ratio(cpu.0 * 1000.0, floor);
    row(
        "server CPU µs per change vs automerge floor",
        cpu.0 * 1000.0,
        floor,
        format!("≤ 2× floor: {}", verdict(cpu_floor <= 2.0)),
    );
    row(
        "catch-up ratio (held vs changed only)",
        catchup.0,
        catchup.1,
        format!(
            "buurtsync ≤ 3: {}",
            verdict(catchup.0 > 0.0 && catchup.0 <= 3.0)
        ),
    );
    row(
        "storm catch-up p95 per device (ms)",
        storm.0,
        storm.1,
        String::from("(lower is better)"),
    );
    let ok = ours.iter().chain(reference).all(|r| r.converged);
    let errors: u64 = ours.iter().chain(reference).map(|r| r.errors).sum();
    let _ = writeln!(out, "all runs converged: {ok}; errors: {errors}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, per_s: f64, p99: f64, cpu_s: f64, committed: u64) -> Report {
        Report {
            label: label.into(),
            url: String::new(),
            sizes: serde_json::Value::Null,
            settings: serde_json::Value::Null,
            phases: vec![PhaseReport {
                name: "live".into(),
                committed_per_s: per_s,
                changes_committed: committed,
                propagation_ms: Percentiles {
                    p99,
                    ..Percentiles::default()
                },
                server: ServerUse {
                    cpu_s,
                    peak_rss_mib: 50.0,
                    end_rss_mib: 40.0,
                },
                ..PhaseReport::default()
            }],
            catchup: None,
            floor: Floor {
                fanout: 3,
                history: 10,
                us_per_change: 100.0,
                ..Floor::default()
            },
            converged: true,
            errors: 0,
            error_samples: Vec::new(),
        }
    }

    /// The comparison takes medians and says met / not met against each target.
    #[test]
    fn compare_reports_targets() {
        let ours = vec![
            report("a", 600.0, 10.0, 0.1, 1000),
            report("a", 500.0, 12.0, 0.1, 1000),
        ];
        let reference = vec![report("b", 100.0, 20.0, 1.0, 1000)];
        let out = compare(&ours, &reference, Some(64.0));
        assert!(out.contains("≥ 5× reference: met"), "{out}");
        assert!(out.contains("≤ reference: met"), "{out}");
        // 100 µs per change against a 100 µs floor.
        assert!(out.contains("≤ 2× floor: met"), "{out}");
        assert!(out.contains("all runs converged: true"), "{out}");
        let slow = vec![report("a", 150.0, 30.0, 1.0, 1000)];
        let out = compare(&slow, &reference, None);
        assert!(out.contains("≥ 5× reference: NOT met"), "{out}");
        assert!(out.contains("≤ reference: NOT met"), "{out}");
    }
}
