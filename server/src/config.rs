//! The configuration file (TOML). Settings come from flags first, then environment
//! variables (`BUURTSYNC_…`), then this file, then built-in defaults; clap already does
//! flags, environment and defaults, so the file only fills what clap took from its
//! defaults. Its keys are the long flag names with `_` for `-`; `docs/buurtsync.example.toml`
//! documents every one. Unknown keys are an error, so a typo is never silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use crate::cli::{Cli, Command, ConfigCmd, ServeArgs};
use crate::error::Error;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub database: Option<String>,
    pub keys: Option<String>,
    pub log_json: Option<bool>,
    #[serde(default)]
    pub serve: ServeSection,
    /// `[identity]` and `[oidc]`: see `identity::settings`.
    #[serde(default)]
    pub identity: crate::identity::settings::IdentitySection,
    #[serde(default)]
    pub oidc: crate::identity::settings::OidcSection,
}

/// `[serve]`: the relay's settings (durations as text: `15s`, `90days`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_plain_http: Option<bool>,
    pub max_frame_bytes: Option<usize>,
    pub max_document_bytes: Option<u64>,
    pub cache_budget_mib: Option<u64>,
    pub max_messages_per_sec: Option<u32>,
    pub max_connections_per_user: Option<usize>,
    pub ping_interval: Option<String>,
    pub idle_timeout: Option<String>,
    pub handshake_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub max_busy_per_wijk: Option<usize>,
    pub sync_states_per_user: Option<usize>,
    pub sync_state_ttl: Option<String>,
    pub central_min_count: Option<u64>,
    pub web_app_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
}

/// Reads and parses a configuration file; errors name the file and the bad key.
pub fn read(path: &Path) -> Result<ConfigFile, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
}

/// Did this value come from clap's default (so the file may set it)?
fn defaulted(m: &ArgMatches, id: &str) -> bool {
    !matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn duration(key: &str, text: &str) -> Result<humantime::Duration, Error> {
    text.parse::<humantime::Duration>()
        .map_err(|e| Error::Config(format!("serve.{key} = {text:?}: {e}")))
}

/// Fills the settings clap took from its defaults with the file's values.
pub fn apply(cli: &mut Cli, matches: &ArgMatches) -> Result<(), Error> {
    let Some(path) = cli.config.clone() else {
        return Ok(());
    };
    let file = read(&path)?;
    if let Some(v) = file.database.filter(|_| defaulted(matches, "database")) {
        cli.database = v;
    }
    if let Some(v) = file.keys.filter(|_| defaulted(matches, "keys")) {
        cli.keys = Some(v);
    }
    if let Some(v) = file.log_json.filter(|_| defaulted(matches, "log_json")) {
        cli.log_json = v;
    }
    let (args, sub) = match (&mut cli.command, matches.subcommand()) {
        (Command::Serve(args) | Command::Demo(args), Some((_, sub))) => (args, sub),
        (Command::Config(ConfigCmd::Check { serve }), Some((_, sub))) => match sub.subcommand() {
            Some((_, check)) => (serve, check),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    args.identity.apply_file(sub, file.identity, file.oidc)?;
    apply_serve(args, sub, file.serve)
}

fn apply_serve(args: &mut ServeArgs, m: &ArgMatches, s: ServeSection) -> Result<(), Error> {
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(v) = s.$field.filter(|_| defaulted(m, stringify!($field))) {
                args.$field = v.into();
            }
        )*};
    }
    macro_rules! set_duration {
        ($($field:ident),*) => {$(
            if let Some(v) = s.$field.filter(|_| defaulted(m, stringify!($field))) {
                args.$field = duration(stringify!($field), &v)?;
            }
        )*};
    }
    set!(
        listen,
        max_frame_bytes,
        max_document_bytes,
        cache_budget_mib,
        max_messages_per_sec,
        max_connections_per_user,
        max_busy_per_wijk,
        sync_states_per_user,
        central_min_count
    );
    if let Some(v) = s.metrics_listen.filter(|_| defaulted(m, "metrics_listen")) {
        args.metrics_listen = Some(v);
    }
    if let Some(v) = s.web_app_dir.filter(|_| defaulted(m, "web_app_dir")) {
        args.web_app_dir = Some(v);
    }
    if let Some(v) = s.tls_cert.filter(|_| defaulted(m, "tls_cert")) {
        args.tls_cert = Some(v);
    }
    if let Some(v) = s.tls_key.filter(|_| defaulted(m, "tls_key")) {
        args.tls_key = Some(v);
    }
    if let Some(v) = s
        .insecure_plain_http
        .filter(|_| defaulted(m, "insecure_plain_http"))
    {
        args.insecure_plain_http = v;
    }
    set_duration!(
        ping_interval,
        idle_timeout,
        handshake_timeout,
        send_timeout,
        sync_state_ttl
    );
    Ok(())
}
