//! Capacity as a curve: replay reports at several offered rates, per server, printed as
//! one table each, with the knee (the highest offered rate whose propagation p99 stays
//! under a second with every change committed and delivered and no error), the ratio
//! of the two servers' capacities and the targets, met or not.

use std::fmt::Write as _;

use crate::replay::ReplayReport;

/// Propagation p99 a rate must stay under to count as within capacity.
pub const KNEE_P99_MS: f64 = 1000.0;

/// Whether a replay stayed within capacity.
pub fn within(r: &ReplayReport) -> bool {
    r.complete() && r.propagation_ms.p99 < KNEE_P99_MS
}

/// The knee of a curve: the report of the highest rate within capacity.
pub fn knee(curve: &[ReplayReport]) -> Option<&ReplayReport> {
    curve
        .iter()
        .filter(|r| within(r))
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

fn sorted(reports: &[ReplayReport]) -> Vec<ReplayReport> {
    let mut v = reports.to_vec();
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    v
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn table(out: &mut String, name: &str, curve: &[ReplayReport]) {
    let _ = writeln!(out, "{name}:");
    let _ = writeln!(
        out,
        "  {:>8} {:>11} {:>9} {:>9} {:>12} {:>12} {:>8} {:>7} {:>6}",
        "offered/s",
        "committed/s",
        "p50 ms",
        "p99 ms",
        "server µs/ch",
        "client µs/ch",
        "RSS MiB",
        "errors",
        "knee"
    );
    let k = knee(curve).map(|r| r.rate);
    for r in curve {
        let mark = if Some(r.rate) == k {
            "<- knee"
        } else if within(r) {
            "ok"
        } else {
            "over"
        };
        let _ = writeln!(
            out,
            "  {:>8.0} {:>11.1} {:>9.1} {:>9.1} {:>12.0} {:>12.0} {:>8.1} {:>7} {:>6}",
            r.rate,
            r.committed_per_s,
            r.propagation_ms.p50,
            r.propagation_ms.p99,
            r.server_cpu_us_per_change,
            r.client_cpu_us_per_change,
            r.server.peak_rss_mib,
            r.errors
                + r.undelivered
                + r.heads_mismatched
                + (r.changes_scheduled - r.changes_committed.min(r.changes_scheduled)),
            mark
        );
    }
}

/// Both curves, the capacities and their ratio, and the two capacity targets.
pub fn compare(ours: &[ReplayReport], reference: &[ReplayReport]) -> String {
    let (ours, reference) = (sorted(ours), sorted(reference));
    let mut out = String::new();
    table(&mut out, "buurtsync", &ours);
    table(&mut out, "reference", &reference);
    let cap = |k: Option<&ReplayReport>| k.map_or(0.0, |r| r.committed_per_s);
    let (ko, kr) = (knee(&ours), knee(&reference));
    let (co, cr) = (cap(ko), cap(kr));
    let ratio = if cr > 0.0 { co / cr } else { f64::NAN };
    let _ = writeln!(
        out,
        "capacity (knee: highest offered rate with p99 < {KNEE_P99_MS:.0} ms, all committed and delivered, no errors):"
    );
    let _ = writeln!(
        out,
        "  buurtsync {co:.1} changes/s, reference {cr:.1} changes/s, ratio {ratio:.2}: ≥ 5× reference: {}",
        verdict(cr > 0.0 && ratio >= 5.0)
    );
    if cr == 0.0 {
        let _ = writeln!(
            out,
            "  (the reference has no rate within capacity: run lower rates to find its knee)"
        );
    }
    match (ko, run_floor(&ours, &reference)) {
        (Some(r), Some(floor)) => {
            let x = r.server_cpu_us_per_change / floor.median.max(1e-9);
            let _ = writeln!(
                out,
                "server CPU per relayed change at the knee: {:.0} µs vs automerge floor {:.0} µs at fan-out {} ({x:.2}×): ≤ 2× floor: {}",
                r.server_cpu_us_per_change,
                floor.median,
                r.floor.fanout,
                verdict(x <= 2.0)
            );
            let _ = writeln!(
                out,
                "  (the floor: median of the {} measured in this run, {:.0} to {:.0} µs; the one after the knee's replay: {:.0} µs, {:.2}×)",
                floor.count,
                floor.low,
                floor.high,
                r.floor.us_per_change,
                r.server_cpu_us_per_change / r.floor.us_per_change.max(1e-9),
            );
            let _ = writeln!(
                out,
                "load generator CPU per change at the knee: {:.0} µs ({:.2}× the server's)",
                r.client_cpu_us_per_change,
                r.client_cpu_us_per_change / r.server_cpu_us_per_change.max(1e-9)
            );
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "server CPU per relayed change: no knee for buurtsync: ≤ 2× floor: NOT met"
            );
        }
        (Some(_), None) => {
            let _ = writeln!(
                out,
                "server CPU per relayed change: no automerge floor measured: ≤ 2× floor: NOT met"
            );
        }
    }
    out
}

/// The automerge floors measured in one run: one after every replay, of both servers,
/// each of the same plan at the same fan-out, so each measures the same work.
struct RunFloor {
    median: f64,
    low: f64,
    high: f64,
    count: usize,
}

/// The run's floor: the median of every floor its replays measured. The server's CPU
/// is a mean over a replay's whole window, a floor about a second of CPU; the median
/// of the run's floors is less at the mercy of one busy moment than the one floor next
/// to the knee. `None` if no replay measured one.
fn run_floor(ours: &[ReplayReport], reference: &[ReplayReport]) -> Option<RunFloor> {
    let mut floors: Vec<f64> = ours
        .iter()
        .chain(reference)
        .map(|r| r.floor.us_per_change)
        .filter(|us| *us > 0.0)
        .collect();
    floors.sort_by(f64::total_cmp);
    let (&low, &high) = (floors.first()?, floors.last()?);
    let n = floors.len();
    let median = if n % 2 == 1 {
        floors[n / 2]
    } else {
        (floors[n / 2 - 1] + floors[n / 2]) / 2.0
    };
    Some(RunFloor {
        median,
        low,
        high,
        count: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Percentiles;
    use crate::report::Floor;

    fn point(rate: f64, per_s: f64, p99: f64, errors: u64) -> ReplayReport {
        ReplayReport {
            rate,
            committed_per_s: per_s,
            changes_scheduled: 100,
            changes_committed: 100,
            propagation_ms: Percentiles {
                p99,
                ..Percentiles::default()
            },
            errors,
            server_cpu_us_per_change: 900.0,
            client_cpu_us_per_change: 90.0,
            floor: Floor {
                fanout: 8,
                history: 20,
                us_per_change: 500.0,
                ..Floor::default()
            },
            ..ReplayReport::default()
        }
    }

    /// The knee is the highest rate under a second at p99 without errors; the ratio of
    /// the knees decides the capacity target, and the CPU target compares with the floor.
    #[test]
    fn knee_and_targets() {
        let ours = vec![
            point(100.0, 100.0, 50.0, 0),
            point(400.0, 398.0, 400.0, 0),
            point(800.0, 500.0, 4000.0, 0),
            point(600.0, 590.0, 900.0, 2),
        ];
        let reference = vec![point(50.0, 50.0, 100.0, 0), point(100.0, 70.0, 3000.0, 0)];
        assert_eq!(knee(&ours).map(|r| r.rate), Some(400.0));
        let out = compare(&ours, &reference);
        assert!(out.contains("ratio 7.96: ≥ 5× reference: met"), "{out}");
        assert!(out.contains("(1.80×): ≤ 2× floor: met"), "{out}");
        let out = compare(&ours[..1], &reference);
        assert!(out.contains("≥ 5× reference: NOT met"), "{out}");
        let out = compare(&ours, &[point(50.0, 50.0, 2000.0, 0)]);
        assert!(
            out.contains("the reference has no rate within capacity"),
            "{out}"
        );
    }

    /// The CPU target compares with the median of every floor the run measured, not
    /// the one next to the knee alone, and says both.
    #[test]
    fn the_cpu_target_takes_the_runs_median_floor() {
        let with_floor = |rate: f64, p99: f64, floor: f64| {
            let mut r = point(rate, rate, p99, 0);
            r.floor.us_per_change = floor;
            r
        };
        // The knee (400/s, 900 µs) had a low floor next to it; the run's median is 480.
        let ours = vec![
            with_floor(100.0, 50.0, 470.0),
            with_floor(400.0, 400.0, 420.0),
            with_floor(800.0, 4000.0, 600.0),
        ];
        let reference = vec![
            with_floor(50.0, 100.0, 480.0),
            with_floor(100.0, 3000.0, 490.0),
        ];
        let out = compare(&ours, &reference);
        assert!(
            out.contains("900 µs vs automerge floor 480 µs at fan-out 8 (1.88×): ≤ 2× floor: met"),
            "{out}"
        );
        assert!(
            out.contains("median of the 5 measured in this run, 420 to 600 µs; the one after the knee's replay: 420 µs, 2.14×"),
            "{out}"
        );
        // A run that measured no floor cannot meet the target.
        let unmeasured: Vec<_> = ours
            .iter()
            .map(|r| with_floor(r.rate, r.propagation_ms.p99, 0.0))
            .collect();
        let out = compare(&unmeasured, &[]);
        assert!(
            out.contains("no automerge floor measured: ≤ 2× floor: NOT met"),
            "{out}"
        );
    }
}
