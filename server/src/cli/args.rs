//! The command line's definitions (clap): global options, commands and their arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ServeSettings;

#[derive(Parser, Debug)]
#[command(
    name = "buurtsync",
    version,
    about = "Offline-first sync relay for buurtteam apps"
)]
pub struct Cli {
    /// Configuration file (TOML); flags and environment variables override it.
    /// See docs/buurtsync.example.toml.
    #[arg(long, global = true, env = "BUURTSYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Key store with the per-document keys. SQLite: a file (default
    /// `<database path>.keys`). PostgreSQL: a `postgres://` URL of another database
    /// (default: the schema `buurtsync_keys` of the same database). Keep it out of
    /// database backups; back it up separately.
    #[arg(long, global = true, env = "BUURTSYNC_KEYS")]
    pub keys: Option<String>,
    /// Database URL: `sqlite://PATH` (one node), or `postgres://USER@HOST/DB` (several
    /// nodes may serve one PostgreSQL database).
    #[arg(
        long,
        global = true,
        env = "BUURTSYNC_DATABASE",
        default_value = "sqlite://buurtsync.sqlite3"
    )]
    pub database: String,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "BUURTSYNC_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay.
    Serve(ServeSettings),
    /// Seed a demo wijk, users and tokens into the database, print them, and serve.
    Demo(ServeSettings),
    /// Manage wijken.
    #[command(subcommand)]
    Wijk(WijkCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Give a user a role: in a wijk (professional, volunteer, coordinator) or global
    /// (consulent, central_office, admin).
    Grant(GrantArgs),
    /// Take a role away: in a wijk (with --wijk) or global. Open connections lose
    /// what it gave at once.
    Ungrant(GrantArgs),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Inspect stored documents (catalog and heads only, never content).
    #[command(subcommand)]
    Doc(DocCmd),
    /// Erase a document (AVG art. 17): every stored byte goes, its key is destroyed
    /// (older backups cannot be decrypted), a tombstone keeps stale devices from
    /// bringing it back, and connected devices are told to purge it.
    Erase {
        document: String,
        /// Who asked for the erasure (recorded with the tombstone).
        #[arg(long, env = "USER", default_value = "admin")]
        by: String,
    },
    /// The audit log: check its hash chain, or export one document's entries
    /// ("who looked at my file").
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Online backup while serving: the database to FILE and the key store to
    /// --keys-to (both are needed to restore; keep them apart, see
    /// docs/operations.md). Files are owner-only (0600).
    Backup {
        file: PathBuf,
        /// Where the key store copy goes: not beside the database backups, with a
        /// short retention. Required unless --no-keys.
        #[arg(long, required_unless_present = "no_keys", conflicts_with = "no_keys")]
        keys_to: Option<PathBuf>,
        /// Back up the database only (the key store is backed up another way).
        #[arg(long)]
        no_keys: bool,
    },
    /// Restore a backup (FILE and its key store copy) as the database and key store,
    /// then re-apply every erasure in the erasure journal. Stop the server first.
    Restore {
        file: PathBuf,
        /// The key store copy (default: FILE.keys).
        #[arg(long)]
        keys_from: Option<PathBuf>,
        /// The erasure journal to re-apply (default: <database path>.erasures).
        #[arg(long)]
        erasures: Option<PathBuf>,
        /// Replace an existing database and key store.
        #[arg(long)]
        force: bool,
    },
    /// Configuration: check a file (with flags and environment) before using it.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Parse the configuration (--config, environment, flags), check the TLS files and
    /// the settings, and print the effective serve settings.
    Check {
        #[command(flatten)]
        serve: ServeSettings,
    },
}

#[derive(Subcommand, Debug)]
pub enum WijkCmd {
    /// Add a wijk (id: lowercase letters, digits, dashes).
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    List,
    /// Link an identity provider's subject (the value of the configured `[oidc]
    /// user_claim`) to a user: that person can then sign in with their employer's account.
    LinkOidc {
        user: String,
        #[arg(long)]
        subject: String,
    },
    /// Remove a subject's link (the person can no longer sign in with it).
    UnlinkOidc {
        #[arg(long)]
        subject: String,
    },
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    pub user: String,
    pub role: String,
    /// The wijk, for wijk roles.
    #[arg(long)]
    pub wijk: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Issue a token; the secret is printed once and stored only as a hash.
    Issue {
        user: String,
        /// Lifetime, e.g. `90d`, `12h`.
        #[arg(long, default_value = "90d")]
        expires_in: humantime::Duration,
    },
    /// Revoke a token by id (`tok_…`) or by its secret (`bst_…`), or end a device
    /// session (`ses_…`: a lost phone).
    Revoke { token: String },
    List {
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DocCmd {
    /// Catalog row, chunk count and heads of a document.
    Info { id: String },
    /// Who delivered each change of a document (user, device, time): provenance.
    Authors { id: String },
    /// Catalog rows, optionally of one partition.
    List {
        #[arg(long)]
        wijk: Option<String>,
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check the whole hash chain; print the entry count and head hash (keep them
    /// somewhere else: only they reveal removed newest entries later). Exits with 1
    /// and lists the problems when entries were altered, removed or reordered.
    Verify {
        /// Entry count of a head kept earlier (with --expect-head).
        #[arg(long, requires = "expect_head")]
        expect_entries: Option<u64>,
        /// Head hash (hex) of a head kept earlier (with --expect-entries).
        #[arg(long, requires = "expect_entries")]
        expect_head: Option<String>,
    },
    /// One document's entries: time, user, device, action, partition, detail.
    Export {
        #[arg(long)]
        document: String,
        /// Output format (default: json with --json, else csv).
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}
