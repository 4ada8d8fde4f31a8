//! The `buurtsync` command line: `serve`, `demo`, and admin commands that work on the
//! same database as a running server. Admin commands print a human line, or one JSON
//! document with `--json`.

use std::path::PathBuf;

use clap::{ArgMatches, Args, Parser, Subcommand};
use serde_json::json;
use sync_core::partition::WijkId;
use sync_core::policy::{GlobalRole, WijkRole};
use sync_core::protocol::DocumentId;

use crate::audit::{AuditAction, AuditAnchor, AuditEvent};
use crate::config::{defaulted, ServeSettings};
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
    /// Take a role in a wijk away.
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
    /// FILE.keys (both are needed to restore).
    Backup { file: PathBuf },
    /// Restore a backup (FILE and FILE.keys) as the database and key store. Stop the
    /// server first.
    Restore {
        file: PathBuf,
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
    /// Revoke a token by id (`tok_…`) or by its secret (`bst_…`).
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

/// Layers the configuration file (`--config`) under flags and environment: the file
/// fills only what clap took from its defaults (see `config`).
pub fn apply_config(cli: &mut Cli, matches: &ArgMatches) -> Result<(), Error> {
    let Some(path) = cli.config.clone() else {
        return Ok(());
    };
    let file = crate::config::read(&path)?;
    if let Some(v) = file.database.filter(|_| defaulted(matches, "database")) {
        cli.database = v;
    }
    if let Some(v) = file.keys.filter(|_| defaulted(matches, "keys")) {
        cli.keys = Some(v);
    }
    if let Some(v) = file.log_json.filter(|_| defaulted(matches, "log_json")) {
        cli.log_json = v;
    }
    let (settings, sub) = match (&mut cli.command, matches.subcommand()) {
        (Command::Serve(settings) | Command::Demo(settings), Some((_, sub))) => (settings, sub),
        (Command::Config(ConfigCmd::Check { serve }), Some((_, sub))) => match sub.subcommand() {
            Some((_, check)) => (serve, check),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    settings.layer(sub, file.serve, &path)
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
                                "{}\t{}\t{}\texpires {}",
                                t.id,
                                t.user_id,
                                status,
                                rfc3339(t.expires_at)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    print(json_out, json!(tokens), &text);
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
        Command::Backup { file } => {
            // PostgreSQL: refuse before connecting, pointing to pg_dump / PITR.
            crate::store::sqlite_path(&cli.database)?;
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            let report = store.backup(&file).await?;
            print(
                json_out,
                json!(report),
                &format!(
                    "backup written: {} ({} documents, {} bytes) and key store {}; keep both",
                    report.database.display(),
                    report.documents,
                    report.bytes,
                    report.keys.display()
                ),
            );
            Ok(())
        }
        Command::Restore { file, force } => {
            let db = crate::store::sqlite_path(&cli.database)?;
            let keys = crate::store::keys_path(db, cli.keys.as_deref());
            let report = crate::store::backup::restore(
                &file,
                std::path::Path::new(db),
                std::path::Path::new(&keys),
                force,
            )
            .await?;
            // Opening runs any newer migrations, so an old backup serves on a new binary.
            let store = Store::open_with_keys(&cli.database, cli.keys.as_deref()).await?;
            store.close().await;
            print(
                json_out,
                json!(report),
                &format!(
                    "restored {} documents into {} (keys {})",
                    report.documents,
                    report.database.display(),
                    report.keys.display()
                ),
            );
            Ok(())
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
            return Err(Error::Invalid(
                "removing global roles is not supported yet".into(),
            ));
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

async fn serve(store: Store, args: ServeSettings) -> Result<(), Error> {
    let limits = args.limits()?;
    let tls = args.tls()?;
    let web_app_dir = args.web_app_dir()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    crate::serve::serve_until(
        listener,
        store,
        limits,
        tls,
        web_app_dir,
        crate::serve::shutdown_signal(),
    )
    .await
}

/// `config check`: every setting parsed and checked, TLS files loaded, nothing served.
async fn config_check(
    database: &str,
    keys: Option<&str>,
    file: Option<&std::path::Path>,
    args: &ServeSettings,
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
async fn demo(store: &Store, args: &ServeSettings, json_out: bool) -> Result<(), Error> {
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
    let url = format!("ws://{}/sync", args.listen);
    if json_out {
        println!(
            "{}",
            json!({"wijk": wijk, "url": url, "tokens": {"fatima": fatima.secret, "joop": joop.secret},
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
