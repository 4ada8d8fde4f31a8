//! `buurtsync-loadgen`: replays the "assen" workload against any server speaking
//! automerge-repo's websocket protocol v1 (ours, or the automerge-repo reference sync
//! server in bench/reference), and compares runs.
//!
//! Layout:
//! - [`workload`]: the population, the documents each device holds, schema-valid edits.
//! - [`device`]: one simulated device on sync-core's codec and engine.
//! - [`run`]: the phases of a run and the catch-up probe and automerge floor.
//! - [`metrics`]: counters, percentiles, `/proc/<pid>` CPU and RSS of the server.
//! - [`report`]: the JSON report and the comparison against the targets.
//! - [`seed`]: users and tokens on our server through its admin CLI.
//! - [`idle`]: many idle connections, to weigh what one costs the server.
//! - [`record`]: the live phase's documents and writer frames, recorded once.
//! - [`replay`]: a recording replayed against a fresh server at a chosen rate.
//! - [`capacity`]: replays at several rates as a curve per server, its knee, targets.

mod capacity;
mod device;
mod idle;
mod metrics;
mod record;
mod replay;
mod report;
mod run;
mod seed;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Everything that can stop the load generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Json(String, serde_json::Error),
    #[error("the run did not converge or had errors ({0} errors)")]
    Failed(u64),
}

#[derive(Parser, Debug)]
#[command(
    name = "buurtsync-loadgen",
    version,
    about = "Load generator for the \"assen\" workload"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the workload against one server and print (and optionally save) the report.
    Run(Box<RunArgs>),
    /// Seed our server's database with wijken, users and tokens; print the tokens file.
    Seed(SeedArgs),
    /// Compare reports of runs against buurtsync and the reference server.
    Compare(CompareArgs),
    /// Open many idle connections and weigh them in the server's RSS.
    Idle(idle::IdleArgs),
    /// Record the live phase's documents and writer frames once (no server needed).
    Record(RecordArgs),
    /// Replay a recording against a fresh server at a chosen rate.
    Replay(Box<replay::ReplayArgs>),
    /// Print capacity curves of replay reports against both servers, with the targets.
    Capacity(CapacityArgs),
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Fraction of full "assen" (as `run --scale`).
    #[arg(long, default_value_t = 0.05)]
    scale: f64,
    #[arg(long)]
    wijken: Option<usize>,
    #[arg(long)]
    professionals: Option<usize>,
    #[arg(long)]
    volunteers: Option<usize>,
    #[arg(long)]
    plans: Option<usize>,
    #[arg(long)]
    activiteiten: Option<usize>,
    /// Changes each document has before the replay starts.
    #[arg(long, default_value_t = 20)]
    history: usize,
    /// Changes to record (a replay sends min(this, rate × secs)).
    #[arg(long, default_value_t = 8000)]
    changes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the recording here.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct CapacityArgs {
    /// Replay reports against buurtsync (one per rate).
    #[arg(long, num_args = 1.., required = true)]
    ours: Vec<PathBuf>,
    /// Replay reports against the reference server (one per rate).
    #[arg(long, num_args = 1.., required = true)]
    reference: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Websocket URL of the server, e.g. ws://127.0.0.1:8080/sync.
    #[arg(long)]
    url: String,
    /// Tokens file (`seed` writes it): {"<wijk>": {"professional": "...", "volunteer": "..."}}.
    /// Without it, devices connect without a token (the reference server has no auth).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Name in the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Fraction of full "assen" (8 wijken, 120 professionals, 300 volunteers, 5,000
    /// plans, 600 activiteiten).
    #[arg(long, default_value_t = 0.05)]
    scale: f64,
    /// Number of wijken (at most 8 make sense for "assen"; the tokens file must have them).
    #[arg(long)]
    wijken: Option<usize>,
    #[arg(long)]
    professionals: Option<usize>,
    #[arg(long)]
    volunteers: Option<usize>,
    #[arg(long)]
    plans: Option<usize>,
    #[arg(long)]
    activiteiten: Option<usize>,
    /// Changes each document already has when the run starts.
    #[arg(long, default_value_t = 20)]
    history: usize,
    /// Home visits per professional while offline.
    #[arg(long, default_value_t = 4)]
    visits: usize,
    /// Edits per home visit.
    #[arg(long, default_value_t = 20)]
    edits_per_visit: usize,
    /// Edits per volunteer while offline.
    #[arg(long, default_value_t = 5)]
    volunteer_edits: usize,
    /// Every device reconnects within this many seconds.
    #[arg(long, default_value_t = 10.0)]
    storm_secs: f64,
    /// Length of the live-editing phase.
    #[arg(long, default_value_t = 10.0)]
    live_secs: f64,
    /// Uncommitted changes a device may have at once in the live phase.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Pause between a device's live edits, milliseconds.
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Documents the catch-up probe device holds.
    #[arg(long, default_value_t = 600)]
    catchup_held: usize,
    /// Of those, changed on each side while offline (0 skips the probe).
    #[arg(long, default_value_t = 20)]
    catchup_changed: usize,
    #[arg(long, default_value_t = 3)]
    catchup_rounds: usize,
    /// Server process to read CPU and RSS of, from /proc.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Changes timed for the automerge floor.
    #[arg(long, default_value_t = 200)]
    floor_rounds: usize,
    /// Longest any phase may wait, seconds.
    #[arg(long, default_value_t = 300)]
    phase_limit_secs: u64,
    /// Write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit with an error unless everything converged without errors (for tests).
    #[arg(long)]
    check: bool,
    /// Devices do not announce the connect-time summary: every reconnect offers every
    /// document (the path third-party clients take; measures the difference).
    #[arg(long)]
    no_summary: bool,
}

#[derive(Args, Debug)]
struct SeedArgs {
    /// The `buurtsync` binary.
    #[arg(long, default_value = "buurtsync")]
    buurtsync: PathBuf,
    /// The server's database URL.
    #[arg(long)]
    database: String,
    #[arg(long, default_value_t = 8)]
    wijken: usize,
    /// Write the tokens file here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// Reports of runs against buurtsync.
    #[arg(long, num_args = 1.., required = true)]
    ours: Vec<PathBuf>,
    /// Reports of runs against the reference server.
    #[arg(long, num_args = 1.., required = true)]
    reference: Vec<PathBuf>,
    /// Our server's document cache budget, for the memory target.
    #[arg(long)]
    cache_budget_mib: Option<f64>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T, Error> {
    let text = std::fs::read(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
    serde_json::from_slice(&text).map_err(|e| Error::Json(path.display().to_string(), e))
}

fn write(path: &PathBuf, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::Io(path.display().to_string(), e))
}

/// "assen" at `scale`, with any count set on its own.
fn sizes(
    scale: f64,
    wijken: Option<usize>,
    professionals: Option<usize>,
    volunteers: Option<usize>,
    plans: Option<usize>,
    activiteiten: Option<usize>,
) -> workload::Sizes {
    let mut sizes = workload::Sizes::scaled(scale);
    sizes.wijken = wijken.unwrap_or(sizes.wijken).max(1);
    sizes.professionals = professionals.unwrap_or(sizes.professionals);
    sizes.volunteers = volunteers.unwrap_or(sizes.volunteers);
    sizes.plans = plans.unwrap_or(sizes.plans).max(sizes.wijken);
    sizes.activiteiten = activiteiten.unwrap_or(sizes.activiteiten).max(sizes.wijken);
    sizes
}

fn record(args: RecordArgs) -> Result<(), Error> {
    let settings = record::RecordSettings {
        sizes: sizes(
            args.scale,
            args.wijken,
            args.professionals,
            args.volunteers,
            args.plans,
            args.activiteiten,
        ),
        history: args.history,
        changes: args.changes,
        seed: args.seed,
    };
    let rec = record::record(&settings)?;
    let json = serde_json::to_string(&rec).map_err(|e| Error::Json("recording".into(), e))?;
    write(&args.out, &json)?;
    eprintln!(
        "recorded {} documents, {} devices, {} changes to {}",
        rec.documents.len(),
        rec.devices.len(),
        rec.changes.len(),
        args.out.display()
    );
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), Error> {
    let sizes = sizes(
        args.scale,
        args.wijken,
        args.professionals,
        args.volunteers,
        args.plans,
        args.activiteiten,
    );
    let tokens = match &args.tokens {
        Some(path) => Some(read_json(path)?),
        None => None,
    };
    let settings = run::Settings {
        label: args.label,
        url: args.url,
        tokens,
        sizes,
        history: args.history,
        visits: args.visits,
        edits_per_visit: args.edits_per_visit,
        volunteer_edits: args.volunteer_edits,
        storm_secs: args.storm_secs,
        live_secs: args.live_secs,
        window: args.window.max(1),
        think: Duration::from_millis(args.think_ms),
        catchup_held: args.catchup_held.max(args.catchup_changed),
        catchup_changed: args.catchup_changed,
        catchup_rounds: args.catchup_rounds,
        pid: args.pid,
        seed: args.seed,
        floor_rounds: args.floor_rounds,
        phase_limit: Duration::from_secs(args.phase_limit_secs),
        summary: !args.no_summary,
    };
    let report = run::run(settings).await?;
    print!("{}", report.summary());
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| Error::Json("report".into(), e))?;
    if let Some(out) = &args.out {
        write(out, &json)?;
    }
    if args.check && (!report.converged || report.errors > 0) {
        return Err(Error::Failed(report.errors));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(args) => run(*args).await?,
        Cmd::Seed(args) => {
            let tokens = seed::seed(&args.buurtsync, &args.database, args.wijken)?;
            let json = serde_json::to_string_pretty(&tokens)?;
            match &args.out {
                Some(out) => write(out, &json)?,
                None => println!("{json}"),
            }
        }
        Cmd::Compare(args) => {
            let ours = args
                .ours
                .iter()
                .map(read_json)
                .collect::<Result<Vec<_>, _>>()?;
            let reference = args
                .reference
                .iter()
                .map(read_json)
                .collect::<Result<Vec<_>, _>>()?;
            print!(
                "{}",
                report::compare(&ours, &reference, args.cache_budget_mib)
            );
        }
        Cmd::Idle(args) => idle::run(args).await?,
        Cmd::Record(args) => tokio::task::block_in_place(|| record(args))?,
        Cmd::Replay(args) => replay::run(*args).await?,
        Cmd::Capacity(args) => {
            let read = |paths: &[PathBuf]| {
                paths
                    .iter()
                    .map(read_json)
                    .collect::<Result<Vec<replay::ReplayReport>, _>>()
            };
            print!(
                "{}",
                capacity::compare(&read(&args.ours)?, &read(&args.reference)?)
            );
        }
    }
    Ok(())
}
