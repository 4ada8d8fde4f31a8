//! The `buurtsync` command line: `serve`, `demo`, and admin commands that work on the
//! same database as a running server. Admin commands print a human line, or one JSON
//! document with `--json`.
//!
//! Here: the configuration file's layering and [`run`], which opens the store once and
//! hands it to the command's function (definitions in `args`, output in `output`):
//! [`serve`] (`serve`, `demo`, `config check`), [`accounts`] (wijken, users, grants,
//! tokens), [`documents`] (`doc`, `erase`), [`audit`] and [`backup`] (with `restore`).

mod accounts;
mod args;
mod audit;
mod backup;
mod documents;
mod output;
mod serve;

use clap::ArgMatches;

use crate::config::defaulted;
use crate::error::Error;
use crate::store::Store;
pub use args::{
    AuditCmd, Cli, Command, ConfigCmd, DocCmd, ExportFormat, GrantArgs, TokenCmd, UserCmd, WijkCmd,
};

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
    settings
        .identity
        .apply_file(|id| defaulted(sub, id), file.identity, file.oidc)?;
    settings.layer(sub, file.serve, &path)
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let json_out = cli.json;
    let keys = cli.keys.as_deref();
    match cli.command {
        Command::Serve(settings) => {
            // Refuse bad settings before touching the database.
            settings.limits()?;
            settings.tls()?;
            let store = Store::open_with_keys(&cli.database, keys).await?;
            serve::serve(store, settings).await
        }
        Command::Demo(mut settings) => {
            // The demo runs on loopback for one person; plain unless TLS files are given.
            if settings.tls_cert.is_none() {
                settings.insecure_plain_http = true;
            }
            let store = Store::open_with_keys(&cli.database, keys).await?;
            serve::demo(&store, &settings, json_out).await?;
            serve::serve(store, settings).await
        }
        Command::Config(ConfigCmd::Check { serve }) => {
            let file = cli.config.as_deref();
            serve::config_check(&cli.database, keys, file, &serve, json_out).await
        }
        Command::Restore {
            file,
            keys_from,
            erasures,
            force,
        } => {
            let files = backup::RestoreFiles {
                backup: &file,
                keys_from: keys_from.as_deref(),
                erasures: erasures.as_deref(),
            };
            backup::restore(&cli.database, keys, files, force, json_out).await
        }
        command => {
            if let Command::Backup { .. } = command {
                // PostgreSQL: refuse before connecting, pointing to pg_dump / PITR.
                crate::store::sqlite_path(&cli.database)?;
            }
            let store = Store::open_with_keys(&cli.database, keys).await?;
            admin(&store, command, json_out).await
        }
    }
}

/// An admin command against the store, opened once by [`run`].
async fn admin(store: &Store, command: Command, json_out: bool) -> Result<(), Error> {
    match command {
        Command::Wijk(cmd) => accounts::wijk(store, cmd, json_out).await,
        Command::User(cmd) => accounts::user(store, cmd, json_out).await,
        Command::Grant(args) => accounts::grant(store, args, json_out).await,
        Command::Ungrant(args) => accounts::ungrant(store, args, json_out).await,
        Command::Token(cmd) => accounts::token(store, cmd, json_out).await,
        Command::Doc(cmd) => documents::doc(store, cmd, json_out).await,
        Command::Erase { document, by } => documents::erase(store, document, by, json_out).await,
        Command::Audit(cmd) => audit::audit(store, cmd, json_out).await,
        Command::Backup {
            file,
            keys_to,
            no_keys: _,
        } => backup::backup(store, &file, keys_to.as_deref(), json_out).await,
        Command::Serve(_) | Command::Demo(_) | Command::Config(_) | Command::Restore { .. } => {
            Err(Error::Invalid("not an admin command".into()))
        }
    }
}
