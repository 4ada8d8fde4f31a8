//! What a phase measures: counters shared by every device of the run, latency samples,
//! and the server process's CPU time and resident memory read from `/proc/<pid>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use serde::Serialize;

/// Locks a std mutex, recovering from poisoning (no code panics while holding these).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A change being followed from its writer to the devices that should see it.
#[derive(Debug, Clone, Copy)]
pub struct Tracked {
    pub at: Instant,
    pub writer: usize,
}

/// Counters of one phase, shared by all devices.
#[derive(Debug, Default)]
pub struct Probe {
    /// Changes made by devices in this phase.
    pub changes_made: AtomicU64,
    /// Changes the server reported holding (its heads cover them).
    pub changes_committed: AtomicU64,
    /// (change, other device) pairs where the device received the change.
    pub deliveries: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub errors: AtomicU64,
    /// Documents re-synced after their sync went quiet with work outstanding.
    pub resyncs: AtomicU64,
    error_samples: Mutex<Vec<String>>,
    /// Live changes being followed, by hash.
    pub tracked: Mutex<HashMap<ChangeHash, Tracked>>,
    /// Edit on one device until visible on another, microseconds.
    pub propagation_us: Mutex<Vec<u64>>,
    /// Edit until the server's heads cover it, microseconds.
    pub commit_us: Mutex<Vec<u64>>,
    /// Connect until every held document is in sync, milliseconds, per device.
    pub catchup_ms: Mutex<Vec<u64>>,
}

impl Probe {
    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = lock(&self.error_samples);
        if samples.len() < 10 {
            samples.push(what);
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn error_samples(&self) -> Vec<String> {
        lock(&self.error_samples).clone()
    }
}

/// p50/p95/p99/max of samples, in the samples' unit scaled by `div`.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &[u64], div: f64) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let at = |q: f64| {
            let i = ((s.len() as f64 - 1.0) * q).round() as usize;
            s[i.min(s.len() - 1)] as f64 / div
        };
        Percentiles {
            count: s.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Times work in this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so the automerge
/// floor compares with the server's CPU time, not with wall time that grows when other
/// processes share the cores. What reading the clock itself costs is measured once and
/// taken off every span.
pub struct CpuStopwatch {
    overhead: Duration,
}

impl CpuStopwatch {
    pub fn new() -> Self {
        let mut watch = CpuStopwatch {
            overhead: Duration::ZERO,
        };
        // The cheapest of a few empty spans is the reading's own cost.
        watch.overhead = (0..16)
            .map(|_| watch.time(|| ()).1)
            .min()
            .unwrap_or_default();
        watch
    }

    /// Runs `work`; its result and the CPU time it took.
    pub fn time<R>(&self, work: impl FnOnce() -> R) -> (R, Duration) {
        let before = thread_cpu();
        let out = work();
        let after = thread_cpu();
        (
            out,
            after.saturating_sub(before).saturating_sub(self.overhead),
        )
    }

    /// What the spans measure, for reports.
    pub fn clock(&self) -> &'static str {
        "thread CPU time"
    }
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// CPU time and resident memory of one process, from `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub cpu: Duration,
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status` (VmRSS).
pub fn proc_stat(pid: u32, ticks_per_s: u64) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ticks = utime + stime;
    Some(ProcStat {
        cpu: Duration::from_millis(ticks * 1000 / ticks_per_s.max(1)),
        rss_kib,
    })
}

/// Clock ticks per second for `/proc` times (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Samples a server process while a phase runs: CPU seconds used and the peak RSS.
#[derive(Debug)]
pub struct ServerWatch {
    pid: Option<u32>,
    ticks: u64,
    start: Option<ProcStat>,
    peak_kib: std::sync::Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What [`ServerWatch`] saw.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct ServerUse {
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    pub end_rss_mib: f64,
}

impl ServerUse {
    /// Several processes (nodes) as one: CPU and memory added up (peaks as if they
    /// coincided, an upper bound).
    pub fn sum(uses: impl IntoIterator<Item = ServerUse>) -> ServerUse {
        uses.into_iter()
            .fold(ServerUse::default(), |a, b| ServerUse {
                cpu_s: a.cpu_s + b.cpu_s,
                peak_rss_mib: a.peak_rss_mib + b.peak_rss_mib,
                end_rss_mib: a.end_rss_mib + b.end_rss_mib,
            })
    }
}

impl ServerWatch {
    pub fn start(pid: Option<u32>, ticks: u64) -> ServerWatch {
        let peak = std::sync::Arc::new(AtomicU64::new(0));
        let start = pid.and_then(|p| proc_stat(p, ticks));
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        if let Some(pid) = pid {
            let peak = peak.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = &mut rx => return,
                    }
                    match proc_stat(pid, ticks) {
                        Some(s) => {
                            peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                        }
                        None => return,
                    }
                }
            });
        }
        ServerWatch {
            pid,
            ticks,
            start,
            peak_kib: peak,
            stop: Some(tx),
        }
    }

    pub fn finish(mut self) -> ServerUse {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let end = self.pid.and_then(|p| proc_stat(p, self.ticks));
        match (self.start, end) {
            (Some(start), Some(end)) => {
                let peak = self.peak_kib.load(Ordering::Relaxed).max(end.rss_kib);
                ServerUse {
                    cpu_s: end.cpu.saturating_sub(start.cpu).as_secs_f64(),
                    peak_rss_mib: peak as f64 / 1024.0,
                    end_rss_mib: end.rss_kib as f64 / 1024.0,
                }
            }
            _ => ServerUse::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles pick the right ranks and scale them.
    #[test]
    fn percentiles() {
        let samples: Vec<u64> = (1..=100).collect();
        let p = Percentiles::of(&samples, 1.0);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 51.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&[], 1.0).count, 0);
        assert_eq!(Percentiles::of(&[2000], 1000.0).p50, 2.0);
    }

    /// Our own process is readable in /proc: CPU and RSS come out non-zero.
    #[test]
    fn reads_own_process() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        let s = proc_stat(std::process::id(), ticks_per_second()).expect("own /proc");
        assert!(s.rss_kib > 0, "{x}");
    }
}
