//! Measures start-up time against the number of stored documents (issue 7 target:
//! 50,000 documents start within 1.5× of the time for 5,000).
//!
//! For each count it seeds a fresh SQLite store with that many schema-valid plans
//! (through `Hub::create`, as the relay stores them), then starts the given `buurtsync`
//! binary on it `RUNS` times and times spawn → "buurtsync listening" in its log, and
//! prints the median per count and the ratio of the last to the first.
//!
//! `cargo run --release -p buurtsync-server --example startup -- target/release/buurtsync 5000 50000`
//!
//! The store goes in `$STARTUP_DIR` (default: the system temp dir); `/dev/shm` makes
//! seeding 50,000 documents take seconds instead of minutes of fsyncs. Figures go to
//! docs/performance.md.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buurtsync_server::hub::Hub;
use buurtsync_server::store::{now, CatalogEntry, Store};
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, Plan};

const RUNS: usize = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .ok_or("usage: startup <path to buurtsync> <count>...")?;
    let counts: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    if counts.is_empty() {
        return Err("give at least one document count".into());
    }
    let base =
        std::env::var("STARTUP_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let mut medians = Vec::new();
    for &n in &counts {
        let dir = tempfile::tempdir_in(&base)?;
        let url = format!("sqlite://{}/db.sqlite3", dir.path().display());
        let seeded = Instant::now();
        seed(&url, n).await?;
        println!(
            "{n} documents seeded in {:.1} s",
            seeded.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        for _ in 0..RUNS {
            times.push(time_start(&bin, &url)?);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{n} documents: start-up median {median:.1} ms (runs: {})",
            times
                .iter()
                .map(|t| format!("{t:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        medians.push(median);
    }
    if let (Some(first), Some(last)) = (medians.first(), medians.last()) {
        println!(
            "ratio {} vs {} documents: {:.2} (target ≤ 1.5)",
            counts[counts.len() - 1],
            counts[0],
            last / first
        );
    }
    Ok(())
}

/// Stores `n` small schema-valid plans spread over 8 wijken.
async fn seed(url: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(url).await?;
    let hub = Hub::new(store.clone(), 1, u64::MAX);
    let wijken: Vec<WijkId> = (0..8)
        .map(|i| WijkId::new(format!("wijk-{i}")))
        .collect::<Result<_, _>>()?;
    for i in 0..n {
        let wijk = wijken[i % wijken.len()].clone();
        let plan = Plan::new(wijk.clone(), format!("gezin-{i}"));
        let id = DocumentId::random();
        let catalog = CatalogEntry {
            id,
            partition: Partition {
                wijk,
                kind: DocumentKind::Plan,
            },
            created_at: now(),
            created_by: "bench".into(),
            handover_of: None,
        };
        hub.create(catalog, schema::new_document(&plan)?, ("bench", "bench"))
            .await?;
        hub.release(id);
    }
    store.close().await;
    Ok(())
}

/// Milliseconds from spawning `buurtsync serve` until it logs that it listens.
fn time_start(bin: &str, url: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["--database", url, "serve", "--listen", "127.0.0.1:0"])
        .env("BUURTSYNC_LOG", "warn,buurtsync_server::serve=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut listening = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if line.contains("listening") {
            listening = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let took = listening.ok_or("the server did not report listening")?;
    Ok(took.as_secs_f64() * 1e3)
}
