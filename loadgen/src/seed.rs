//! Seeding our server for a run: wijken, one professional and one volunteer user per
//! wijk, and a token each, through the `buurtsync` admin CLI on the server's database
//! (a separate process, so the load generator never links the server crate).
//!
//! All devices of one role in one wijk share that user's token; devices stay distinct
//! by their peerId and storageId, which is all the relay keys sync state on.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::run::Tokens;
use crate::workload::{wijk_id, Role};
use crate::Error;

fn admin(bin: &Path, database: &str, args: &[&str]) -> Result<serde_json::Value, Error> {
    let out = Command::new(bin)
        .arg("--database")
        .arg(database)
        .arg("--json")
        .args(args)
        .output()
        .map_err(|e| Error::Setup(format!("running {}: {e}", bin.display())))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "buurtsync {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Setup(format!("buurtsync {}: no JSON output: {e}", args.join(" "))))
}

/// Creates `wijken` wijken with a professional and a volunteer each; returns their tokens.
pub fn seed(bin: &Path, database: &str, wijken: usize) -> Result<Tokens, Error> {
    let mut tokens = Tokens::new();
    for w in 0..wijken {
        let wijk = wijk_id(w);
        admin(bin, database, &["wijk", "add", &wijk])?;
        let mut per_role = HashMap::new();
        for role in [Role::Professional, Role::Volunteer] {
            let user = format!("loadgen-{}-{wijk}", role.as_str());
            admin(bin, database, &["user", "add", &user])?;
            admin(
                bin,
                database,
                &["grant", &user, role.as_str(), "--wijk", &wijk],
            )?;
            let issued = admin(
                bin,
                database,
                &["token", "issue", &user, "--expires-in", "7d"],
            )?;
            let token = issued["token"]
                .as_str()
                .ok_or_else(|| Error::Setup("token issue printed no token".into()))?;
            per_role.insert(role.as_str().to_owned(), token.to_owned());
        }
        tokens.insert(wijk, per_role);
    }
    Ok(tokens)
}
