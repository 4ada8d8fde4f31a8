//! Calibrates the document cache's memory estimate: how many bytes of resident memory
//! a loaded automerge document costs per byte it occupies in the store.
//!
//! It builds plans shaped like the "assen" workload (`HISTORY` changes each: contact
//! moments and goals, as home visits add), saves them, then loads `N` copies from their
//! saved bytes and reads this process's `VmRSS` (/proc/self/status) before and after.
//! The ratio is what `hub::MEMORY_PER_STORED_BYTE` should be at least.
//!
//! `cargo run --release -p buurtsync-server --example doc_memory -- 1000`

use automerge::Automerge;
use sync_core::partition::WijkId;
use sync_core::schema::{self, ContactKind, ContactMoment, Date, Goal, Leefdomein, Plan};

const HISTORY: usize = 150;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn plan(n: usize) -> Result<Automerge, Box<dyn std::error::Error>> {
    let wijk = WijkId::new("assen-noord")?;
    let mut doc = schema::new_document(&Plan::new(wijk, format!("huishouden-{n:05}")))?;
    for i in 0..HISTORY {
        let date = Date::from_ymd(2028, (i % 12) as u8 + 1, (i % 28) as u8 + 1)?;
        schema::update::<Plan>(&mut doc, |p| {
            if i % 10 == 0 {
                p.goals
                    .push(Goal::new(Leefdomein::Financien, "Schulden op orde"));
            } else {
                p.contacts.push(ContactMoment::new(
                    date,
                    ContactKind::Huisbezoek,
                    "Huisbezoek: gesprek over de week, afspraken gemaakt",
                ));
            }
        })?;
    }
    Ok(doc)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    // A few distinct plans, saved once; loading is what the relay does per document.
    let saved: Vec<Vec<u8>> = (0..8)
        .map(|i| plan(i).map(|d| d.save()))
        .collect::<Result<_, _>>()?;
    let stored: u64 = (0..n).map(|i| saved[i % saved.len()].len() as u64).sum();
    let before = rss_bytes();
    let mut docs = Vec::with_capacity(n);
    for i in 0..n {
        docs.push(Automerge::load(&saved[i % saved.len()])?);
    }
    let after = rss_bytes();
    let per_doc = (after.saturating_sub(before)) as f64 / n as f64;
    let per_stored = (after.saturating_sub(before)) as f64 / stored as f64;
    println!(
        "{n} plans of {HISTORY} changes: stored {:.1} KiB each, resident {:.1} KiB each, {per_stored:.1} resident bytes per stored byte",
        stored as f64 / n as f64 / 1024.0,
        per_doc / 1024.0
    );
    drop(docs);
    Ok(())
}
