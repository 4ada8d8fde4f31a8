//! The `buurtsync` binary: parse the command line, set up logging, run.

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc's malloc: the relay allocates and frees many short-lived
/// buffers per change on two threads, where glibc's arenas cost 6 % of the CPU more at
/// the same peak RSS (issue 18; docs/performance.md, "CPU per change, session 9").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let matches = buurtsync_server::cli::Cli::command().get_matches();
    let mut cli =
        buurtsync_server::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = buurtsync_server::cli::apply_config(&mut cli, &matches) {
        eprintln!("buurtsync: {e}");
        std::process::exit(1);
    }
    let filter =
        EnvFilter::try_from_env("BUURTSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    // issue 20: panics caught by sync_core::guard are logged as one bounded line by the
    // caller (metrics::panic_caught), not printed with a backtrace per hostile frame.
    sync_core::guard::install_panic_hook();
    if let Err(e) = buurtsync_server::cli::run(cli).await {
        eprintln!("buurtsync: {e}");
        std::process::exit(1);
    }
    Ok(())
}
