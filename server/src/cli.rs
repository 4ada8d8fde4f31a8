//! The `buurtsync` command line: `serve`, `demo`, and admin commands that work on the
//! same database as a running server. Admin commands print a human line, or one JSON
//! document with `--json`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use sync_core::partition::WijkId;
use sync_core::policy::{GlobalRole, WijkRole};
use sync_core::protocol::DocumentId;

use crate::app::Limits;
use crate::audit::{AuditAction, AuditAnchor, AuditEvent};
use crate::error::Error;
use crate::store::Store;

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
    Serve(ServeArgs),
    /// Seed a demo wijk, users and tokens into the database, print them, and serve.
    Demo(ServeArgs),
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
        serve: ServeArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BUURTSYNC_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM). Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "BUURTSYNC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BUURTSYNC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP/ws:// without TLS: only behind a TLS-terminating proxy or on
    /// loopback. Without TLS files the server refuses to start unless this is given.
    #[arg(long, env = "BUURTSYNC_INSECURE_PLAIN_HTTP")]
    pub insecure_plain_http: bool,
    /// Largest websocket message accepted, in bytes.
    #[arg(long, env = "BUURTSYNC_MAX_FRAME_BYTES", default_value_t = Limits::default().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Largest stored size of one document, in bytes.
    #[arg(long, env = "BUURTSYNC_MAX_DOCUMENT_BYTES", default_value_t = Limits::default().max_document_bytes)]
    pub max_document_bytes: u64,
    /// Memory budget of the document cache in MiB (estimated resident memory of the
    /// documents held in memory); the least recently used are evicted beyond it. 0 keeps
    /// only documents being worked on at this moment.
    #[arg(long, env = "BUURTSYNC_CACHE_BUDGET_MIB", default_value_t = Limits::default().cache_budget_mib)]
    pub cache_budget_mib: u64,
    /// Messages per second per connection (bursts of twice that); faster peers are slowed.
    #[arg(long, env = "BUURTSYNC_MAX_MESSAGES_PER_SEC", default_value_t = Limits::default().max_messages_per_sec)]
    pub max_messages_per_sec: u32,
    /// Websocket connections one user may hold at once.
    #[arg(long, env = "BUURTSYNC_MAX_CONNECTIONS_PER_USER", default_value_t = Limits::default().max_connections_per_user)]
    pub max_connections_per_user: usize,
    /// How often idle peers are pinged.
    #[arg(long, env = "BUURTSYNC_PING_INTERVAL", default_value = "15s")]
    pub ping_interval: humantime::Duration,
    /// A peer silent (no pong either) for this long is closed as half-open.
    #[arg(long, env = "BUURTSYNC_IDLE_TIMEOUT", default_value = "45s")]
    pub idle_timeout: humantime::Duration,
    /// Time for a new connection's TLS handshake, HTTP upgrade request and `join`.
    #[arg(long, env = "BUURTSYNC_HANDSHAKE_TIMEOUT", default_value = "10s")]
    pub handshake_timeout: humantime::Duration,
    /// A peer that does not take its messages for this long is dropped.
    #[arg(long, env = "BUURTSYNC_SEND_TIMEOUT", default_value = "30s")]
    pub send_timeout: humantime::Duration,
    /// Connections of one wijk doing automerge work at once (fairness between wijken).
    #[arg(long, env = "BUURTSYNC_MAX_BUSY_PER_WIJK", default_value_t = Limits::default().max_busy_per_wijk)]
    pub max_busy_per_wijk: usize,
    /// Peer stores (storageIds) per user whose sync states are kept.
    #[arg(long, env = "BUURTSYNC_SYNC_STATES_PER_USER", default_value_t = Limits::default().sync_states_per_user)]
    pub sync_states_per_user: usize,
    /// Persisted sync states unused this long are deleted.
    #[arg(long, env = "BUURTSYNC_SYNC_STATE_TTL", default_value = "90days")]
    pub sync_state_ttl: humantime::Duration,
    /// Central-office aggregates backed by fewer households (or sessions, activiteiten,
    /// volunteers) than this are suppressed.
    #[arg(long, env = "BUURTSYNC_CENTRAL_MIN_COUNT", default_value_t = Limits::default().central_min_count, value_parser = clap::value_parser!(u64).range(1..))]
    pub central_min_count: u64,
    /// Address of the metrics listener (`/metrics`, Prometheus), apart from the public
    /// one (default 127.0.0.1:9464; when that port is taken the server starts without
    /// metrics and logs a warning). Use a loopback or monitoring-network address.
    #[arg(long, env = "BUURTSYNC_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the built volunteer web app, served at `/app/` (default:
    /// `mobile-examples/web-volunteer/dist` when it exists in the working directory).
    #[arg(long, env = "BUURTSYNC_WEB_APP_DIR")]
    pub web_app_dir: Option<PathBuf>,
    /// Token lifetimes, enrolment and the OIDC issuer (`identity::settings`).
    #[command(flatten)]
    pub identity: crate::identity::IdentityArgs,
}

/// Where `scripts/demo.sh` (and `npm run build`) put the built web app.
const DEFAULT_WEB_APP_DIR: &str = "mobile-examples/web-volunteer/dist";

impl ServeArgs {
    /// The limits these settings ask for; refuses nonsense (zero timeouts, an idle
    /// timeout shorter than the ping interval).
    pub fn limits(&self) -> Result<Limits, Error> {
        let limits = Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_document_bytes: self.max_document_bytes,
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
            ..Limits::default()
        };
        let zero = [
            ("max_frame_bytes", limits.max_frame_bytes == 0),
            ("max_document_bytes", limits.max_document_bytes == 0),
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
    fn web_app_dir(&self) -> Result<Option<PathBuf>, Error> {
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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let json_out = cli.json;
    match cli.command {
        Command::Serve(args) => {
            // Refuse bad settings before touching the database.
            args.limits()?;
            args.tls()?;
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            serve(store, args).await
        }
        Command::Demo(mut args) => {
            // The demo runs on loopback for one person; plain unless TLS files are given.
            if args.tls_cert.is_none() {
                args.insecure_plain_http = true;
            }
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            demo(&store, &args, json_out).await?;
            serve(store, args).await
        }
        Command::Wijk(cmd) => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            match cmd {
                WijkCmd::Add { id, name } => {
                    let wijk = WijkId::new(id)?;
                    let name = name.unwrap_or_else(|| wijk.to_string());
                    store.add_wijk(&wijk, &name).await?;
                    print(
                        json_out,
                        json!({"wijk": wijk, "name": name}),
                        &format!("added wijk {wijk}"),
                    );
                }
                WijkCmd::List => {
                    let list = store.list_wijken().await?;
                    let text = list
                        .iter()
                        .map(|(id, n)| format!("{id}\t{n}"))
                        .collect::<Vec<_>>()
                        .join("\n");
                    let value = list
                        .iter()
                        .map(|(id, n)| json!({"wijk": id, "name": n}))
                        .collect::<Vec<_>>();
                    print(json_out, json!(value), &text);
                }
            }
            Ok(())
        }
        Command::User(cmd) => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            match cmd {
                UserCmd::Add { id, name } => {
                    let name = name.unwrap_or_else(|| id.clone());
                    store.add_user(&id, &name).await?;
                    print(
                        json_out,
                        json!({"user": id, "name": name}),
                        &format!("added user {id}"),
                    );
                }
                UserCmd::LinkOidc { user, subject } => {
                    store.link_oidc(&user, &subject).await?;
                    store
                        .audit(
                            &admin_event(AuditAction::GrantAdded)
                                .with_detail(format!("oidc subject {subject:?} linked to {user}")),
                        )
                        .await?;
                    print(
                        json_out,
                        json!({"user": user, "subject": subject, "linked": true}),
                        &format!("linked {subject:?} to {user}"),
                    );
                }
                UserCmd::UnlinkOidc { subject } => {
                    let removed = store.unlink_oidc(&subject).await?;
                    if removed {
                        store
                            .audit(
                                &admin_event(AuditAction::GrantRemoved)
                                    .with_detail(format!("oidc subject {subject:?} unlinked")),
                            )
                            .await?;
                    }
                    print(
                        json_out,
                        json!({"subject": subject, "unlinked": removed}),
                        &if removed {
                            format!("unlinked {subject:?}")
                        } else {
                            "no such link".into()
                        },
                    );
                }
                UserCmd::List => {
                    let users = store.list_users().await?;
                    let text = users
                        .iter()
                        .map(|u| {
                            let grants: Vec<String> = u
                                .grants
                                .iter()
                                .map(|g| format!("{}@{}", g.role, g.wijk))
                                .chain(u.global_roles.iter().map(ToString::to_string))
                                .collect();
                            format!("{}\t{}\t{}", u.id, u.name, grants.join(","))
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    print(json_out, json!(users), &text);
                }
            }
            Ok(())
        }
        Command::Grant(args) => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            grant(&store, &args, true).await?;
            store
                .audit(&admin_event(AuditAction::GrantAdded).with_detail(grant_detail(&args)))
                .await?;
            print(
                json_out,
                json!({"user": args.user, "role": args.role, "wijk": args.wijk, "granted": true}),
                &format!(
                    "granted {} to {}{}",
                    args.role,
                    args.user,
                    args.wijk
                        .as_ref()
                        .map(|w| format!(" in {w}"))
                        .unwrap_or_default()
                ),
            );
            Ok(())
        }
        Command::Ungrant(args) => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            let removed = grant(&store, &args, false).await?;
            if removed {
                store
                    .audit(&admin_event(AuditAction::GrantRemoved).with_detail(grant_detail(&args)))
                    .await?;
            }
            print(
                json_out,
                json!({"user": args.user, "role": args.role, "wijk": args.wijk, "removed": removed}),
                &if removed {
                    format!("removed {} from {}", args.role, args.user)
                } else {
                    "no such grant".into()
                },
            );
            Ok(())
        }
        Command::Token(cmd) => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            match cmd {
                TokenCmd::Issue { user, expires_in } => {
                    let secs = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX);
                    let issued = crate::auth::issue(&store, &user, secs).await?;
                    let detail = format!(
                        "user={user} token={} expires={}",
                        issued.id,
                        rfc3339(issued.expires_at)
                    );
                    store
                        .audit(&admin_event(AuditAction::TokenIssued).with_detail(detail))
                        .await?;
                    print(
                        json_out,
                        json!({"token_id": issued.id, "token": issued.secret, "user": user, "expires_at": issued.expires_at}),
                        &format!(
                            "{}\n(token id {}, user {user}, expires {})",
                            issued.secret,
                            issued.id,
                            rfc3339(issued.expires_at)
                        ),
                    );
                }
                TokenCmd::Revoke { token } if token.starts_with("ses_") => {
                    let Some(session) = store
                        .revoke_device_session(&token, "revoked by an admin")
                        .await?
                    else {
                        return Err(Error::NotFound("no live device session matches".into()));
                    };
                    store
                        .audit(&admin_event(AuditAction::TokenRevoked).with_detail(format!(
                            "device session {} of {}",
                            session.id, session.user_id
                        )))
                        .await?;
                    print(
                        json_out,
                        json!({"session": session.id, "revoked": true}),
                        &format!("ended device session {}", session.id),
                    );
                }
                TokenCmd::Revoke { token } => {
                    let revoked = if crate::auth::is_secret(&token) {
                        store
                            .revoke_token(None, Some(&crate::auth::hash_secret(&token)))
                            .await?
                    } else {
                        store.revoke_token(Some(&token), None).await?
                    };
                    let Some(id) = revoked else {
                        return Err(Error::NotFound("no live token matches".into()));
                    };
                    store
                        .audit(
                            &admin_event(AuditAction::TokenRevoked)
                                .with_detail(format!("token={id}")),
                        )
                        .await?;
                    print(
                        json_out,
                        json!({"token_id": id, "revoked": true}),
                        &format!("revoked {id}"),
                    );
                }
                TokenCmd::List { user } => {
                    let tokens = store.list_tokens(user.as_deref()).await?;
                    let text = tokens
                        .iter()
                        .map(|t| {
                            let status = if t.revoked_at.is_some() {
                                "revoked"
                            } else if t.expires_at <= crate::store::now() {
                                "expired"
                            } else {
                                "live"
                            };
                            format!(
                                "{}\t{}\tservice\t{}\texpires {}",
                                t.id,
                                t.user_id,
                                status,
                                rfc3339(t.expires_at)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    let (text, listed) = crate::identity::device_session::list_with_sessions(
                        &store,
                        user.as_deref(),
                        text,
                        json!(tokens),
                    )
                    .await?;
                    print(json_out, listed, &text);
                }
            }
            Ok(())
        }
        Command::Erase { document, by } => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            let id: DocumentId = document.parse().map_err(sync_core::Error::from)?;
            let tomb = store.erase(&id, &by).await?;
            store
                .audit(
                    &AuditEvent::new(by.as_str(), "cli", AuditAction::Erase)
                        .on(&id, Some(&tomb.partition)),
                )
                .await?;
            print(
                json_out,
                json!({"erased": id.to_string(), "partition": tomb.partition, "erased_at": tomb.erased_at, "erased_by": tomb.erased_by}),
                &format!("erased {id} ({}); its key is destroyed", tomb.partition),
            );
            Ok(())
        }
        Command::Backup {
            file,
            keys_to,
            no_keys: _,
        } => {
            // PostgreSQL: refuse before connecting, pointing to pg_dump / PITR.
            crate::store::sqlite_path(&cli.database)?;
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            let report = store.backup(&file, keys_to.as_deref()).await?;
            let keys = report.keys.as_ref().map_or_else(
                || "no key store copy (--no-keys)".to_owned(),
                |k| format!("key store {}; keep them apart", k.display()),
            );
            print(
                json_out,
                json!(report),
                &format!(
                    "backup written: {} ({} documents, {} bytes), {keys}",
                    report.database.display(),
                    report.documents,
                    report.bytes,
                ),
            );
            Ok(())
        }
        Command::Restore {
            file,
            keys_from,
            erasures,
            force,
        } => {
            let files = RestoreFiles {
                backup: &file,
                keys_from: keys_from.as_deref(),
                erasures: erasures.as_deref(),
            };
            restore(&cli.database, cli.keys.as_deref(), files, force, json_out).await
        }
        Command::Config(ConfigCmd::Check { serve }) => {
            config_check(
                &cli.database,
                cli.keys.as_deref(),
                cli.config.as_deref(),
                &serve,
                json_out,
            )
            .await
        }
        Command::Audit(cmd) => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            audit(&store, cmd, json_out).await
        }
        Command::Doc(cmd) => {
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            match cmd {
                DocCmd::Info { id } => {
                    let id: DocumentId = id.parse().map_err(sync_core::Error::from)?;
                    let stored = store
                        .load_document(&id)
                        .await?
                        .ok_or_else(|| Error::NotFound(format!("document {id}")))?;
                    let doc = automerge::Automerge::load(&stored.bytes)
                        .map_err(|e| Error::Corrupt(format!("document {id} does not load: {e}")))?;
                    store
                        .audit(
                            &admin_event(AuditAction::Inspect)
                                .on(&id, Some(&stored.entry.partition))
                                .with_detail("doc info"),
                        )
                        .await?;
                    let heads: Vec<String> =
                        doc.get_heads().iter().map(ToString::to_string).collect();
                    // The heads the catalog holds for connect-time summaries.
                    let catalog_heads = store
                        .summary_facts(&[id])
                        .await?
                        .remove(&id)
                        .and_then(|f| f.heads);
                    let value = json!({
                        "id": id.to_string(),
                        "kind": stored.entry.partition.kind,
                        "wijk": stored.entry.partition.wijk,
                        "created_at": stored.entry.created_at,
                        "created_by": stored.entry.created_by,
                        "chunks": stored.chunks,
                        "bytes": stored.bytes.len(),
                        "heads": heads,
                        "catalog_heads": catalog_heads,
                    });
                    let text = format!(
                        "{id}\t{}\t{} chunks, {} bytes\theads {}",
                        stored.entry.partition,
                        stored.chunks,
                        stored.bytes.len(),
                        heads.join(",")
                    );
                    print(json_out, value, &text);
                }
                DocCmd::Authors { id } => {
                    let id: DocumentId = id.parse().map_err(sync_core::Error::from)?;
                    let rows = store.change_authors(&id).await?;
                    let partition = store.catalog(&id).await?.map(|e| e.partition);
                    store
                        .audit(
                            &admin_event(AuditAction::Inspect)
                                .on(&id, partition.as_ref())
                                .with_detail("doc authors"),
                        )
                        .await?;
                    let text = rows
                        .iter()
                        .map(|(h, u, d, at)| format!("{}\t{h}\t{u}\t{d}", rfc3339(*at)))
                        .collect::<Vec<_>>()
                        .join("\n");
                    let value: Vec<_> = rows
                        .iter()
                        .map(|(h, u, d, at)| json!({"change": h, "user": u, "device": d, "at": at}))
                        .collect();
                    print(json_out, json!(value), &text);
                }
                DocCmd::List { wijk, kind } => {
                    let partition = match (wijk, kind) {
                        (Some(w), Some(k)) => Some(sync_core::partition::Partition {
                            wijk: WijkId::new(w)?,
                            kind: k.parse().map_err(sync_core::Error::from)?,
                        }),
                        (None, None) => None,
                        _ => {
                            return Err(Error::Invalid(
                                "give both --wijk and --kind, or neither".into(),
                            ))
                        }
                    };
                    let docs = store.list_documents(partition.as_ref()).await?;
                    let filter =
                        partition.map_or_else(|| "all".to_owned(), |p| format!("partition={p}"));
                    store
                        .audit(
                            &admin_event(AuditAction::List)
                                .with_detail(format!("doc list {filter} count={}", docs.len())),
                        )
                        .await?;
                    let text = docs
                        .iter()
                        .map(|d| format!("{}\t{}\t{}", d.id, d.partition, rfc3339(d.created_at)))
                        .collect::<Vec<_>>()
                        .join("\n");
                    print(json_out, json!(docs), &text);
                }
            }
            Ok(())
        }
    }
}

/// The files a restore reads.
struct RestoreFiles<'a> {
    backup: &'a std::path::Path,
    keys_from: Option<&'a std::path::Path>,
    erasures: Option<&'a std::path::Path>,
}

/// `restore`: copy the backup into place, open it (running newer migrations, so an
/// old backup serves on a new binary), and re-apply the erasure journal, so nothing
/// erased since the backup comes back (issue 16, item 4).
async fn restore(
    database: &str,
    keys_store: Option<&str>,
    files: RestoreFiles<'_>,
    force: bool,
    json_out: bool,
) -> Result<(), Error> {
    let db = crate::store::sqlite_path(database)?;
    let keys = crate::store::keys_path(db, keys_store);
    let journal = files.erasures.map_or_else(
        || crate::store::erasures::journal_path(std::path::Path::new(db)),
        std::path::Path::to_owned,
    );
    let report = crate::store::backup::restore(
        files.backup,
        files.keys_from,
        std::path::Path::new(db),
        std::path::Path::new(&keys),
        force,
    )
    .await?;
    let store = Store::open_with_keys(database, keys_store).await?;
    let reapplied = store.reapply_erasures(&journal).await?;
    store.close().await;
    let mut value = json!(report);
    value["erasures"] = json!(reapplied);
    value["erasure_journal"] = json!(journal.display().to_string());
    print(
        json_out,
        value,
        &format!(
            "restored {} documents into {} (keys {}); re-applied {} erasures from {} \
             ({} erased again, {} tombstoned{})",
            report.documents,
            report.database.display(),
            keys,
            reapplied.journaled,
            journal.display(),
            reapplied.erased,
            reapplied.tombstoned,
            if reapplied.unreadable > 0 {
                format!(", {} unreadable lines skipped", reapplied.unreadable)
            } else {
                String::new()
            }
        ),
    );
    Ok(())
}

async fn grant(store: &Store, args: &GrantArgs, add: bool) -> Result<bool, Error> {
    if let Ok(role) = args.role.parse::<WijkRole>() {
        let wijk = args
            .wijk
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("role {role} needs --wijk")))?;
        let wijk = WijkId::new(wijk.clone())?;
        if add {
            store.grant(&args.user, &wijk, role).await?;
            Ok(true)
        } else {
            store.revoke_grant(&args.user, &wijk, role).await
        }
    } else if let Ok(role) = args.role.parse::<GlobalRole>() {
        if args.wijk.is_some() {
            return Err(Error::Invalid(format!(
                "role {role} is global; drop --wijk"
            )));
        }
        if !add {
            return store.revoke_global(&args.user, role).await;
        }
        store.grant_global(&args.user, role).await?;
        Ok(true)
    } else {
        Err(Error::Invalid(format!(
            "unknown role {:?}: use professional, volunteer, coordinator (with --wijk) or consulent, central_office, admin",
            args.role
        )))
    }
}

/// `grant`/`ungrant` as audit detail: `role=… wijk=… user=…`.
fn grant_detail(args: &GrantArgs) -> String {
    match &args.wijk {
        Some(wijk) => format!("role={} wijk={wijk} user={}", args.role, args.user),
        None => format!("role={} user={}", args.role, args.user),
    }
}

/// An audit event by whoever runs the CLI: `$USER`, else `admin-cli`; device `cli`.
fn admin_event(action: AuditAction) -> AuditEvent {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "admin-cli".into());
    AuditEvent::new(user, "cli", action)
}

async fn audit(store: &Store, cmd: AuditCmd, json_out: bool) -> Result<(), Error> {
    match cmd {
        AuditCmd::Verify {
            expect_entries,
            expect_head,
        } => {
            let anchor = match (expect_entries, expect_head) {
                (Some(entries), Some(head)) => Some(AuditAnchor::new(entries, &head)?),
                (None, None) => None,
                _ => {
                    return Err(Error::Invalid(
                        "give both --expect-entries and --expect-head, or neither".into(),
                    ))
                }
            };
            let report = store.audit_verify_against(anchor.as_ref()).await?;
            let ok = report.is_ok();
            let mut value = json!(report);
            value["ok"] = json!(ok);
            let text = if ok {
                format!(
                    "audit log intact: {} entries, head {}",
                    report.entries, report.head_hash
                )
            } else {
                report
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .chain(
                        (report.problems_omitted > 0)
                            .then(|| format!("… and {} more", report.problems_omitted)),
                    )
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(json_out, value, &text);
            if ok {
                Ok(())
            } else {
                let count = u64::try_from(report.problems.len())
                    .unwrap_or(u64::MAX)
                    .saturating_add(report.problems_omitted);
                Err(Error::Corrupt(format!(
                    "the audit log does not verify: {count} problem(s) in {} entries: entries were altered, removed or reordered",
                    report.entries
                )))
            }
        }
        AuditCmd::Export { document, format } => {
            let document = document.strip_prefix("automerge:").unwrap_or(&document);
            // Recorded before anything leaves: who exported whose trail (fails closed).
            let mut event =
                admin_event(AuditAction::AuditExport).with_detail("audit export".to_owned());
            event.document = Some(document.chars().take(64).collect());
            store.audit(&event).await?;
            let entries = store.audit_for_document(document).await?;
            let format = format.unwrap_or(if json_out {
                ExportFormat::Json
            } else {
                ExportFormat::Csv
            });
            match format {
                ExportFormat::Csv => print!("{}", crate::audit::export_csv(&entries)),
                ExportFormat::Json => println!("{}", crate::audit::export_json(&entries)),
            }
            Ok(())
        }
    }
}

async fn serve(store: Store, args: ServeArgs) -> Result<(), Error> {
    let limits = args.limits()?;
    let tls = args.tls()?;
    let web_app_dir = args.web_app_dir()?;
    let identity = args.identity.build(tls.is_some())?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let metrics = crate::serve::bind_metrics(args.metrics_listen).await?;
    crate::serve::serve_until(
        listener,
        store,
        limits,
        tls,
        web_app_dir,
        metrics,
        identity,
        crate::serve::shutdown_signal(),
    )
    .await
}

/// `config check`: every setting parsed and checked, TLS files loaded, nothing served.
async fn config_check(
    database: &str,
    keys: Option<&str>,
    file: Option<&std::path::Path>,
    args: &ServeArgs,
    json_out: bool,
) -> Result<(), Error> {
    // PostgreSQL URLs may carry a password: show the engine, not the URL.
    let (db, keys) = if crate::store::is_postgres_url(database) {
        let keys = match keys {
            Some(_) => "another PostgreSQL database (--keys)".to_owned(),
            None => format!("schema {}", crate::store::PG_KEYS_SCHEMA),
        };
        ("postgres".to_owned(), keys)
    } else {
        let db = crate::store::sqlite_path(database)?;
        (db.to_owned(), crate::store::keys_path(db, keys))
    };
    let limits = args.limits()?;
    let tls = args.tls()?;
    args.identity.build(tls.is_some())?;
    if let Some(files) = &tls {
        crate::serve::load_tls(files).await?;
    }
    let web_app_dir = args.web_app_dir()?;
    let value = json!({
        "ok": true,
        "config_file": file.map(|f| f.display().to_string()),
        "database": db,
        "keys": keys,
        "web_app_dir": web_app_dir.map(|d| d.display().to_string()),
        "central_min_count": limits.central_min_count,
        "listen": args.listen.to_string(),
        "metrics_listen": args
            .metrics_listen
            .map_or_else(|| crate::serve::DEFAULT_METRICS_LISTEN.to_owned(), |a| a.to_string()),
        "tls": tls.as_ref().map(|t| json!({"cert": t.cert.display().to_string(), "key": t.key.display().to_string()})),
        "max_frame_bytes": limits.max_frame_bytes,
        "max_document_bytes": limits.max_document_bytes,
        "cache_budget_mib": limits.cache_budget_mib,
        "max_messages_per_sec": limits.max_messages_per_sec,
        "max_connections_per_user": limits.max_connections_per_user,
        "ping_interval": humantime::format_duration(limits.ping_interval).to_string(),
        "idle_timeout": humantime::format_duration(limits.idle_timeout).to_string(),
        "handshake_timeout": humantime::format_duration(limits.handshake_timeout).to_string(),
        "send_timeout": humantime::format_duration(limits.send_timeout).to_string(),
        "max_busy_per_wijk": limits.max_busy_per_wijk,
        "sync_states_per_user": limits.sync_states_per_user,
        "sync_state_ttl": humantime::format_duration(limits.sync_state_ttl).to_string(),
    });
    let text = format!(
        "configuration ok: listen {} ({}), database {db}",
        args.listen,
        if tls.is_some() { "TLS" } else { "plain HTTP" }
    );
    print(json_out, value, &text);
    Ok(())
}

/// Seeds the demo (idempotent: an existing demo is reused, fresh tokens are issued).
async fn demo(store: &Store, args: &ServeArgs, json_out: bool) -> Result<(), Error> {
    let wijk = WijkId::new("demo-centrum")?;
    let ignore_conflict = |r: Result<(), Error>| match r {
        Err(Error::Conflict(_)) => Ok(()),
        other => other,
    };
    ignore_conflict(store.add_wijk(&wijk, "Demo Centrum").await)?;
    ignore_conflict(store.add_user("fatima", "Fatima (professional)").await)?;
    ignore_conflict(store.add_user("joop", "Joop (vrijwilliger)").await)?;
    store.grant("fatima", &wijk, WijkRole::Professional).await?;
    store.grant("joop", &wijk, WijkRole::Volunteer).await?;
    let samples = seed_samples(store, &wijk).await?;
    let day = 24 * 3600;
    let fatima = crate::auth::issue(store, "fatima", 30 * day).await?;
    let joop = crate::auth::issue(store, "joop", 30 * day).await?;
    // The web app signs in with an enrolment code (a coordinator makes them on
    // /beheer); the demo makes one for joop that lasts a day.
    let joop_code = crate::identity::enrolment::demo_code(store, "joop", &wijk, day).await?;
    let url = format!("ws://{}/sync", args.listen);
    if json_out {
        println!(
            "{}",
            json!({"wijk": wijk, "url": url, "tokens": {"fatima": fatima.secret, "joop": joop.secret},
                   "enrolment_codes": {"joop": joop_code},
                   "samples": samples.iter().map(|(k, id)| json!({"kind": k, "id": id.to_string()})).collect::<Vec<_>>()})
        );
    } else {
        println!("buurtsync demo — wijk {wijk}");
        println!("  sync URL:  {url}");
        println!(
            "  fatima (professional: plans and activiteiten): {}",
            fatima.secret
        );
        println!(
            "  joop (vrijwilliger: activiteiten only):        {}",
            joop.secret
        );
        println!("  joop's code for the web app at /app/ (one use, 24 h): {joop_code}");
        for (kind, id) in &samples {
            println!("  sample {kind}: automerge:{id}");
        }
        if let Some((_, plan)) = samples.iter().find(|(k, _)| *k == "plan") {
            println!("  try it (run `npm ci --prefix tests/js` once):");
            println!(
                "    node tests/js/show.mjs '{url}?token={}' automerge:{plan}",
                fatima.secret
            );
            println!("      -> the plan as JSON, through an unmodified automerge-repo client");
            println!(
                "    node tests/js/show.mjs '{url}?token={}' automerge:{plan}",
                joop.secret
            );
            println!("      -> unavailable: volunteers never receive plans");
        }
        if args.web_app_dir()?.is_some() {
            println!(
                "  volunteer web app: http://{}/app/  (log in with joop's token)",
                args.listen
            );
        } else {
            println!("  volunteer web app: not built (bash scripts/demo.sh builds it)");
        }
        println!("  health:  curl http://{}/healthz", args.listen);
    }
    Ok(())
}

/// A sample plan and activiteit in the demo wijk, created once.
async fn seed_samples(
    store: &Store,
    wijk: &WijkId,
) -> Result<Vec<(&'static str, DocumentId)>, Error> {
    use sync_core::partition::{DocumentKind, Partition};
    use sync_core::schema::{self, Activiteit, Goal, Leefdomein, Plan};
    let mut out = Vec::new();
    for kind in [DocumentKind::Plan, DocumentKind::Activiteit] {
        let partition = Partition {
            wijk: wijk.clone(),
            kind,
        };
        if let Some(existing) = store.list_documents(Some(&partition)).await?.first() {
            out.push((kind.as_str(), existing.id));
            continue;
        }
        let doc = match kind {
            DocumentKind::Plan => {
                let mut plan = Plan::new(wijk.clone(), "HH-DEMO-1");
                plan.goals.push(Goal::new(
                    Leefdomein::Financien,
                    "Overzicht van de schulden maken",
                ));
                schema::new_document(&plan)
            }
            DocumentKind::Activiteit => {
                schema::new_document(&Activiteit::new(wijk.clone(), "Koffieochtend"))
            }
        }
        .map_err(sync_core::Error::from)?;
        let id = DocumentId::random();
        let entry = crate::store::CatalogEntry {
            id,
            partition,
            created_at: crate::store::now(),
            created_by: "demo".into(),
        };
        store
            .create_document_with_heads(
                &entry,
                &doc.save(),
                Some(&doc.get_heads()),
                &crate::store::crypto::DocKey::random(),
            )
            .await?;
        out.push((kind.as_str(), id));
    }
    Ok(out)
}

fn print(json_out: bool, value: serde_json::Value, text: &str) {
    if json_out {
        println!("{value}");
    } else if !text.is_empty() {
        println!("{text}");
    }
}

fn rfc3339(secs: i64) -> String {
    // humantime cannot format years past 9999; clamp rather than panic.
    const MAX: u64 = 253_402_300_799;
    let secs = u64::try_from(secs).unwrap_or(0).min(MAX);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}
