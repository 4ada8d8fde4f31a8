//! Settings: the one definition of every serve setting, and the configuration file.
//!
//! [`ServeSettings`] lists each setting once, typed, with its default in
//! [`ServeSettings::default`]: clap parses it (flag and `BUURTSYNC_…` environment
//! variable, with that default), serde reads it from the file's `[serve]` table, and
//! [`ServeSettings::limits`] turns it into the runtime [`Limits`]. The order is flags,
//! then environment, then the file, then the defaults: clap does the first two and the
//! defaults, and [`ServeSettings::layer`] lets the file fill exactly the settings
//! clap took from its defaults. File keys are the long flag names with `_` for `-`
//! (`docs/buurtsync.example.toml` documents every one). Unknown keys are an error, so
//! a typo is never silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::state::Limits;

/// The whole file: the global keys and the `[serve]` table (read into
/// [`ServeSettings`] by [`ServeSettings::layer`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub database: Option<String>,
    pub keys: Option<String>,
    pub log_json: Option<bool>,
    #[serde(default)]
    pub serve: toml::Table,
    /// `[identity]` and `[oidc]`: see `identity::settings`.
    #[serde(default)]
    pub identity: crate::identity::settings::IdentitySection,
    #[serde(default)]
    pub oidc: crate::identity::settings::OidcSection,
}

/// Reads and parses a configuration file; errors name the file and the bad key.
pub fn read(path: &Path) -> Result<ConfigFile, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
}

/// Did the value of `id` come from clap's default (so the file may set it)? An id
/// clap does not know counts as defaulted: the file's key then meets serde's
/// unknown-field check.
pub fn defaulted(m: &ArgMatches, id: &str) -> bool {
    m.try_get_raw(id).is_err()
        || !matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
}

/// Documents a connection may be creating at once (not an operator setting).
const MAX_PENDING_CREATIONS: usize = 256;

fn defaults() -> ServeSettings {
    ServeSettings::default()
}

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Address to listen on.
    #[arg(long, env = "BUURTSYNC_LISTEN", default_value_t = defaults().listen)]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM). Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "BUURTSYNC_TLS_CERT", requires = "tls_key")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BUURTSYNC_TLS_KEY", requires = "tls_cert")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP/ws:// without TLS: only behind a TLS-terminating proxy or on
    /// loopback. Without TLS files the server refuses to start unless this is given.
    #[arg(long, env = "BUURTSYNC_INSECURE_PLAIN_HTTP")]
    pub insecure_plain_http: bool,
    /// Largest websocket message accepted, in bytes.
    #[arg(long, env = "BUURTSYNC_MAX_FRAME_BYTES", default_value_t = defaults().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Largest stored size of one document, in bytes.
    #[arg(long, env = "BUURTSYNC_MAX_DOCUMENT_BYTES", default_value_t = defaults().max_document_bytes)]
    pub max_document_bytes: u64,
    /// Most operations one document may hold, and so one sync message may bring.
    /// automerge's run-length encoding lets a few bytes say millions of operations,
    /// each of which costs memory and time to apply; a message declaring more is
    /// refused before automerge parses it, and a change that would take a document
    /// beyond is refused.
    #[arg(long, env = "BUURTSYNC_MAX_DOCUMENT_OPS", default_value_t = defaults().max_document_ops)]
    pub max_document_ops: u64,
    /// Bytes of changes waiting for missing dependencies (automerge's queue) that one
    /// user may keep in memory across all documents; more are refused.
    #[arg(long, env = "BUURTSYNC_MAX_QUEUED_BYTES_PER_USER", default_value_t = defaults().max_queued_bytes_per_user)]
    pub max_queued_bytes_per_user: u64,
    /// Memory budget of the document cache in MiB (estimated resident memory of the
    /// documents held in memory); the least recently used are evicted beyond it. 0 keeps
    /// only documents being worked on at this moment.
    #[arg(long, env = "BUURTSYNC_CACHE_BUDGET_MIB", default_value_t = defaults().cache_budget_mib)]
    pub cache_budget_mib: u64,
    /// Messages per second per connection (bursts of twice that); faster peers are slowed.
    #[arg(long, env = "BUURTSYNC_MAX_MESSAGES_PER_SEC", default_value_t = defaults().max_messages_per_sec)]
    pub max_messages_per_sec: u32,
    /// Websocket connections one user may hold at once.
    #[arg(long, env = "BUURTSYNC_MAX_CONNECTIONS_PER_USER", default_value_t = defaults().max_connections_per_user)]
    pub max_connections_per_user: usize,
    /// How often idle peers are pinged.
    #[arg(long, env = "BUURTSYNC_PING_INTERVAL", default_value_t = defaults().ping_interval)]
    #[serde(with = "duration_text")]
    pub ping_interval: humantime::Duration,
    /// A peer silent (no pong either) for this long is closed as half-open.
    #[arg(long, env = "BUURTSYNC_IDLE_TIMEOUT", default_value_t = defaults().idle_timeout)]
    #[serde(with = "duration_text")]
    pub idle_timeout: humantime::Duration,
    /// Time for a new connection's TLS handshake, HTTP upgrade request and `join`.
    #[arg(long, env = "BUURTSYNC_HANDSHAKE_TIMEOUT", default_value_t = defaults().handshake_timeout)]
    #[serde(with = "duration_text")]
    pub handshake_timeout: humantime::Duration,
    /// A peer that does not take its messages for this long is dropped.
    #[arg(long, env = "BUURTSYNC_SEND_TIMEOUT", default_value_t = defaults().send_timeout)]
    #[serde(with = "duration_text")]
    pub send_timeout: humantime::Duration,
    /// Connections of one wijk doing automerge work at once (fairness between wijken).
    #[arg(long, env = "BUURTSYNC_MAX_BUSY_PER_WIJK", default_value_t = defaults().max_busy_per_wijk)]
    pub max_busy_per_wijk: usize,
    /// Peer stores (storageIds) per user whose sync states are kept.
    #[arg(long, env = "BUURTSYNC_SYNC_STATES_PER_USER", default_value_t = defaults().sync_states_per_user)]
    pub sync_states_per_user: usize,
    /// Persisted sync states unused this long are deleted.
    #[arg(long, env = "BUURTSYNC_SYNC_STATE_TTL", default_value_t = defaults().sync_state_ttl)]
    #[serde(with = "duration_text")]
    pub sync_state_ttl: humantime::Duration,
    /// Central-office aggregates backed by fewer households (or sessions, activiteiten,
    /// volunteers) than this are suppressed.
    #[arg(long, env = "BUURTSYNC_CENTRAL_MIN_COUNT", default_value_t = defaults().central_min_count, value_parser = clap::value_parser!(u64).range(1..))]
    pub central_min_count: u64,
    /// How the aggregates are protected: `suppression` (primary and secondary, kept
    /// consistent across releases) or `cell-key` (every count with consistent noise,
    /// docs/central-office.md).
    #[arg(long, env = "BUURTSYNC_CENTRAL_DISCLOSURE", value_enum, default_value_t = defaults().central_disclosure)]
    #[serde(default)]
    pub central_disclosure: crate::central::cellkey::Disclosure,
    /// Directory of the built volunteer web app, served at `/app/` (default:
    /// `mobile-examples/web-volunteer/dist` when it exists in the working directory).
    #[arg(long, env = "BUURTSYNC_WEB_APP_DIR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_app_dir: Option<PathBuf>,
    /// Address of the metrics listener (`/metrics`, Prometheus), apart from the public
    /// one (default 127.0.0.1:9464; when that port is taken the server starts without
    /// metrics and logs a warning). Use a loopback or monitoring-network address.
    #[arg(long, env = "BUURTSYNC_METRICS_LISTEN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Token lifetimes, enrolment and the OIDC issuer (`identity::settings`); the file
    /// gives them in `[identity]` and `[oidc]`, not in `[serve]`.
    #[command(flatten)]
    #[serde(skip)]
    pub identity: crate::identity::IdentityArgs,
}

impl Default for ServeSettings {
    /// The one place the defaults are written.
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        ServeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            insecure_plain_http: false,
            max_frame_bytes: 32 * 1024 * 1024,
            max_document_bytes: 64 * 1024 * 1024,
            max_document_ops: sync_core::chunks::MAX_OPS,
            max_queued_bytes_per_user: 16 * 1024 * 1024,
            cache_budget_mib: 512,
            max_messages_per_sec: 500,
            max_connections_per_user: 32,
            ping_interval: Duration::from_secs(15).into(),
            idle_timeout: Duration::from_secs(45).into(),
            handshake_timeout: Duration::from_secs(10).into(),
            send_timeout: Duration::from_secs(30).into(),
            max_busy_per_wijk: workers.saturating_sub(1).max(1),
            sync_states_per_user: 16,
            sync_state_ttl: Duration::from_secs(90 * 24 * 3600).into(),
            central_min_count: 5,
            central_disclosure: crate::central::cellkey::Disclosure::Suppression,
            web_app_dir: None,
            metrics_listen: None,
            identity: crate::identity::IdentityArgs::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        ServeSettings::default().to_limits()
    }
}

/// Where `scripts/demo.sh` (and `npm run build`) put the built web app.
const DEFAULT_WEB_APP_DIR: &str = "mobile-examples/web-volunteer/dist";

impl ServeSettings {
    /// Fills the settings clap took from its defaults with the file's `[serve]`
    /// values: the settings as they stand, the file's keys laid over those, read back
    /// through serde (which refuses unknown keys and ill-typed values).
    pub fn layer(
        &mut self,
        matches: &ArgMatches,
        file: toml::Table,
        path: &Path,
    ) -> Result<(), Error> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::Config(format!("config file {}: [serve] {e}", path.display()))
        };
        let identity = self.identity.clone();
        let mut merged = toml::Table::try_from(&*self).map_err(|e| bad(&e))?;
        for (key, value) in file {
            if defaulted(matches, &key) {
                merged.insert(key, value);
            }
        }
        *self = merged.try_into().map_err(|e| bad(&e))?;
        self.identity = identity;
        Ok(())
    }

    /// The limits these settings ask for, unchecked.
    fn to_limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_document_bytes: self.max_document_bytes,
            max_document_ops: self.max_document_ops,
            max_queued_bytes_per_user: self.max_queued_bytes_per_user,
            cache_budget_mib: self.cache_budget_mib,
            max_messages_per_sec: self.max_messages_per_sec,
            max_connections_per_user: self.max_connections_per_user,
            ping_interval: *self.ping_interval,
            idle_timeout: *self.idle_timeout,
            handshake_timeout: *self.handshake_timeout,
            send_timeout: *self.send_timeout,
            max_busy_per_wijk: self.max_busy_per_wijk,
            sync_states_per_user: self.sync_states_per_user,
            sync_state_ttl: *self.sync_state_ttl,
            central_min_count: self.central_min_count,
            central_disclosure: self.central_disclosure,
            max_pending_creations: MAX_PENDING_CREATIONS,
        }
    }

    /// The limits these settings ask for; refuses nonsense (zero timeouts, an idle
    /// timeout shorter than the ping interval).
    pub fn limits(&self) -> Result<Limits, Error> {
        let limits = self.to_limits();
        let zero = [
            ("max_frame_bytes", limits.max_frame_bytes == 0),
            ("max_document_bytes", limits.max_document_bytes == 0),
            ("max_document_ops", limits.max_document_ops == 0),
            (
                "max_queued_bytes_per_user",
                limits.max_queued_bytes_per_user == 0,
            ),
            ("max_messages_per_sec", limits.max_messages_per_sec == 0),
            (
                "max_connections_per_user",
                limits.max_connections_per_user == 0,
            ),
            ("ping_interval", limits.ping_interval.is_zero()),
            ("handshake_timeout", limits.handshake_timeout.is_zero()),
            ("send_timeout", limits.send_timeout.is_zero()),
            ("max_busy_per_wijk", limits.max_busy_per_wijk == 0),
            ("sync_states_per_user", limits.sync_states_per_user == 0),
            // 0 would publish every cell: no suppression at all (the flag refuses it too).
            ("central_min_count", limits.central_min_count == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(Error::Config(format!("{name} must be greater than zero")));
        }
        if limits.idle_timeout <= limits.ping_interval {
            return Err(Error::Config(
                "idle_timeout must be longer than ping_interval (a peer needs a ping to answer)"
                    .into(),
            ));
        }
        Ok(limits)
    }

    /// TLS files, or `None` for plain HTTP when that was asked for explicitly.
    pub fn tls(&self) -> Result<Option<crate::serve::TlsFiles>, Error> {
        match (&self.tls_cert, &self.tls_key, self.insecure_plain_http) {
            (Some(cert), Some(key), false) => Ok(Some(crate::serve::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None, true) => Ok(None),
            (Some(_), Some(_), true) => Err(Error::Config(
                "both TLS files and --insecure-plain-http given: choose one".into(),
            )),
            (Some(_), None, _) | (None, Some(_), _) => Err(Error::Config(
                "give both --tls-cert and --tls-key".into(),
            )),
            (None, None, false) => Err(Error::Config(
                "no TLS configured: give --tls-cert and --tls-key (PEM), or --insecure-plain-http to serve plain HTTP behind a TLS proxy".into(),
            )),
        }
    }

    /// The web app directory to serve: the flag, else the default build if present.
    pub fn web_app_dir(&self) -> Result<Option<PathBuf>, Error> {
        match &self.web_app_dir {
            Some(dir) if dir.join("index.html").is_file() => Ok(Some(dir.clone())),
            Some(dir) => Err(Error::Invalid(format!(
                "--web-app-dir {}: no index.html there (build the app with `npm run build`)",
                dir.display()
            ))),
            None => {
                let default = PathBuf::from(DEFAULT_WEB_APP_DIR);
                Ok(default.join("index.html").is_file().then_some(default))
            }
        }
    }
}

/// Durations as text in the file (`15s`, `90days`), as on the command line.
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &humantime::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<humantime::Duration, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}
