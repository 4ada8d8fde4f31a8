//! Measures the central office's export path at "assen" scale: N plans (default 5 000,
//! each with goals and contact moments) in a real SQLite store, then the cold facts
//! refresh (every document decrypted and read once), a warm refresh after one change,
//! the monthly aggregates, the release memory's write and read, the feed's
//! generalisation and the NDJSON records of one recipient.
//!
//! `cargo run -p buurtsync-server --example central_export -- 5000`
//! Figures go to docs/performance.md.

use std::time::Instant;

use buurtsync_server::central::{aggregate, anonymity, record, Central};
use buurtsync_server::hub::Hub;
use buurtsync_server::store::{now, CatalogEntry, Store};
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, ContactKind, ContactMoment, Date, Goal, Leefdomein, Plan};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(5000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&format!("sqlite://{}/db.sqlite3", dir.path().display())).await?;
    let hub = Hub::new(store.clone(), 1, u64::MAX);
    let wijken: Vec<WijkId> = (0..8)
        .map(|i| WijkId::new(format!("wijk-{i}")))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut first = None;
    for i in 0..n {
        let wijk = wijken[i % wijken.len()].clone();
        let mut plan = Plan::new(wijk.clone(), format!("gezin-{i}"));
        plan.household.contact.name = Some("Naam Achternaam".into());
        for d in [Leefdomein::Financien, Leefdomein::Wonen, Leefdomein::Zorg] {
            plan.goals.push(Goal::new(d, "Een doel in eigen woorden"));
        }
        for m in 1..=5 {
            plan.contacts.push(ContactMoment::new(
                Date::from_ymd(2024, m, 1 + (i % 27) as u8)?,
                ContactKind::ALL[i % ContactKind::ALL.len()],
                "Verslag van het gesprek",
            ));
        }
        let id = DocumentId::random();
        first.get_or_insert(id);
        let catalog = CatalogEntry {
            id,
            partition: Partition {
                wijk,
                kind: DocumentKind::Plan,
            },
            created_at: now(),
            created_by: "bench".into(),
        };
        hub.create(catalog, schema::new_document(&plan)?, ("bench", "bench"))
            .await?;
        hub.release(id);
    }
    println!(
        "seeded {n} plans in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let central = Central::default();
    let t = Instant::now();
    let view = central.facts.refresh(&store).await?;
    println!(
        "cold facts refresh: {:.0} ms ({} documents)",
        t.elapsed().as_secs_f64() * 1e3,
        view.all().len()
    );

    if let Some(id) = first {
        let entry = hub.get(id).await?.ok_or("first plan")?;
        let mut state = entry.state.lock().await;
        schema::update::<Plan>(&mut state.doc, |p| {
            p.goals.push(Goal::new(Leefdomein::Overig, "nog een"))
        })?;
        hub.persist(&id, &mut state, None).await?;
    }
    let t = Instant::now();
    let view = central.facts.refresh(&store).await?;
    println!(
        "warm facts refresh after one change: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let today = buurtsync_server::central::record::Month::of_unix(buurtsync_server::store::now())
        .ok_or("clock")?;
    let mut memory = buurtsync_server::central::disclosure::Memory::default();
    let agg = aggregate::aggregate(
        view.current(),
        aggregate::Period::Month,
        5,
        5,
        today,
        aggregate::Method::Suppression(Some(&mut memory)),
    );
    println!(
        "monthly aggregates, first release (secondary suppression included): {:.0} ms ({} cells)",
        t.elapsed().as_secs_f64() * 1e3,
        agg.cells.len()
    );
    let t = Instant::now();
    let agg = aggregate::aggregate(
        view.current(),
        aggregate::Period::Month,
        5,
        5,
        today,
        aggregate::Method::Suppression(Some(&mut memory)),
    );
    println!(
        "monthly aggregates, next release (against the first): {:.0} ms ({} cells)",
        t.elapsed().as_secs_f64() * 1e3,
        agg.cells.len()
    );

    let t = Instant::now();
    let changed = memory.changed();
    store.releases().record(0, &changed).await?;
    println!(
        "release memory, first release recorded: {:.0} ms ({} cells)",
        t.elapsed().as_secs_f64() * 1e3,
        changed.len()
    );
    let t = Instant::now();
    let loaded = store.releases().load().await?;
    println!(
        "release memory, loaded for the next release: {:.0} ms ({} cells)",
        t.elapsed().as_secs_f64() * 1e3,
        loaded.cells.len()
    );

    let t = Instant::now();
    let release = aggregate::release_all(view.current(), 5, today, None);
    let floors = anonymity::floors(&release);
    let g = anonymity::generalise(view.current(), 5, &floors);
    println!(
        "feed generalisation (k = 5, Datafly per wijk, floors from the whole release): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let levels: Vec<String> = anonymity::Attr::ALL
        .iter()
        .zip(g.levels(&wijken[0]))
        .map(|(a, l)| format!("{}={}", a.as_str(), a.levels()[l]))
        .collect();
    println!("  levels in {}: {}", wijken[0], levels.join(" "));
    let p = central.pseudonymiser(&store, "office").await?;
    let t = Instant::now();
    let mut bytes = 0;
    for f in view.after(0, usize::MAX) {
        bytes += serde_json::to_vec(&record::record(&f, &p, &g))?.len() + 1;
    }
    println!(
        "NDJSON records for one recipient: {:.0} ms ({} KiB)",
        t.elapsed().as_secs_f64() * 1e3,
        bytes / 1024
    );
    Ok(())
}
