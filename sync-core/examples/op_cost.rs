//! What applying one change of N operations costs automerge, for the default of
//! `--max-document-ops` (docs/performance.md, "Operations per document"). Two steps,
//! so `/usr/bin/time -v` measures the apply alone:
//!
//! ```sh
//! cargo build --release -p sync-core --example op_cost
//! target/release/examples/op_cost write nulls 1000000 /tmp/ops
//! /usr/bin/time -v target/release/examples/op_cost apply /tmp/ops
//! ```
//!
//! `write SHAPE N PREFIX` writes a document's first change (a list or a text) to
//! `PREFIX.0` and one change of N operations to `PREFIX.1`: `nulls` inserts N nulls into
//! the list (119 bytes, whatever N), `text` types N characters. `apply PREFIX` applies
//! both to an empty document and prints the time of the second, the document's
//! operations, and the time to save it and load it again.

use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, ObjType, ReadDoc, ScalarValue, ROOT};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", shape, n, prefix] => write(shape, n.parse().expect("N"), prefix),
        ["apply", prefix] => apply(prefix),
        _ => {
            eprintln!("usage: op_cost write nulls|text N PREFIX | op_cost apply PREFIX");
            std::process::exit(2);
        }
    }
}

fn write(shape: &str, n: usize, prefix: &str) {
    let mut doc = AutoCommit::new();
    let kind = if shape == "text" {
        ObjType::Text
    } else {
        ObjType::List
    };
    let obj = doc.put_object(ROOT, "x", kind).expect("object");
    doc.commit();
    if shape == "text" {
        let typed: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        doc.splice_text(&obj, 0, 0, &typed).expect("type");
    } else {
        for i in 0..n {
            doc.insert(&obj, i, ScalarValue::Null).expect("insert");
        }
    }
    doc.commit();
    let changes = doc.document().get_changes(&[]);
    for (i, change) in changes.iter().enumerate() {
        std::fs::write(format!("{prefix}.{i}"), change.raw_bytes()).expect("write");
    }
    println!(
        "{} ops in {} bytes",
        changes[1].len(),
        changes[1].raw_bytes().len()
    );
}

fn apply(prefix: &str) {
    let read = |i: usize| std::fs::read(format!("{prefix}.{i}")).expect("read");
    let (first, second) = (read(0), read(1));
    let mut doc = Automerge::new();
    doc.load_incremental(&first).expect("first change");
    let start = Instant::now();
    doc.load_incremental(&second).expect("the change");
    let applied = start.elapsed();
    let start = Instant::now();
    let saved = doc.save();
    let save = start.elapsed();
    let start = Instant::now();
    let loaded = Automerge::load(&saved).expect("load");
    let load = start.elapsed();
    assert_eq!(loaded.stats().num_ops, doc.stats().num_ops);
    println!(
        "apply {applied:?}, {} ops; save {save:?} ({} bytes), load {load:?}",
        doc.stats().num_ops,
        saved.len()
    );
}
