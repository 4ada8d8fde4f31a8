//! `serve`, `demo` and `config check`: the relay's own commands.

use serde_json::json;
use sync_core::partition::WijkId;
use sync_core::policy::WijkRole;
use sync_core::protocol::DocumentId;

use super::output::print;
use crate::config::ServeSettings;
use crate::error::Error;
use crate::store::Store;

pub async fn serve(store: Store, args: ServeSettings) -> Result<(), Error> {
    let setup = crate::serve::Setup {
        limits: args.limits()?,
        tls: args.tls()?,
        web_app_dir: args.web_app_dir()?,
        identity: args.identity.build()?,
        listener: tokio::net::TcpListener::bind(args.listen).await?,
        metrics: crate::serve::bind_metrics(args.metrics_listen).await?,
    };
    crate::serve::serve_until(store, setup, crate::serve::shutdown_signal()).await
}

/// `config check`: every setting parsed and checked, TLS files loaded, nothing served.
pub async fn config_check(
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
    args.identity.build()?;
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
        "central_disclosure": limits.central_disclosure,
        "listen": args.listen.to_string(),
        "metrics_listen": args
            .metrics_listen
            .map_or_else(|| crate::serve::DEFAULT_METRICS_LISTEN.to_owned(), |a| a.to_string()),
        "tls": tls.as_ref().map(|t| json!({"cert": t.cert.display().to_string(), "key": t.key.display().to_string()})),
        "max_frame_bytes": limits.max_frame_bytes,
        "max_document_bytes": limits.max_document_bytes,
        "max_document_ops": limits.max_document_ops,
        "max_queued_bytes_per_user": limits.max_queued_bytes_per_user,
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
pub async fn demo(store: &Store, args: &ServeSettings, json_out: bool) -> Result<(), Error> {
    let wijk = WijkId::new("demo-centrum")?;
    let ignore_conflict = |r: Result<(), Error>| match r {
        Err(Error::Conflict(_)) => Ok(()),
        other => other,
    };
    ignore_conflict(store.accounts().add_wijk(&wijk, "Demo Centrum").await)?;
    ignore_conflict(
        store
            .accounts()
            .add_user("fatima", "Fatima (professional)")
            .await,
    )?;
    ignore_conflict(
        store
            .accounts()
            .add_user("joop", "Joop (vrijwilliger)")
            .await,
    )?;
    store
        .accounts()
        .grant("fatima", &wijk, WijkRole::Professional)
        .await?;
    store
        .accounts()
        .grant("joop", &wijk, WijkRole::Volunteer)
        .await?;
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
        if let Some(existing) = store
            .documents()
            .list_documents(Some(&partition))
            .await?
            .first()
        {
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
            handover_of: None,
        };
        store
            .documents()
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
