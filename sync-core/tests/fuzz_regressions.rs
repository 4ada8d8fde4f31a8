//! Replays the fuzz corpus and every saved fuzz finding (`fuzz/corpus/<target>`,
//! `fuzz/regressions/<target>`) through the same steps as the fuzz targets in
//! `fuzz/src/lib.rs`, so a fixed finding stays fixed in the ordinary test run.

use std::path::{Path, PathBuf};

use automerge::Automerge;
use sync_core::engine::{PeerSync, Rejected};
use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::{self, DocumentId, Message};
use sync_core::schema;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) {
            files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    files.sort();
    files
}

/// The codec target's driver, the very file the fuzz target runs.
#[path = "../../fuzz/src/codec.rs"]
mod codec;

/// Every codec input decodes or is refused as the general decoder decides (the fast path
/// declines or agrees), and what decodes round-trips (the driver asserts it).
#[test]
fn codec_corpus_and_findings() {
    let files = inputs("codec");
    assert!(!files.is_empty(), "fuzz/corpus/codec is missing");
    let mut fast = 0;
    for file in files {
        let data = std::fs::read(&file).expect("read input");
        codec::codec(&data);
        fast += usize::from(protocol::codec::decode_fast(&data).is_some());
    }
    assert!(fast > 0, "no codec input takes the fast path");
}

/// The `apply` target's oracle for the header count (`engine::runs_inline`).
#[path = "../../fuzz/src/header_ops.rs"]
mod header_ops;

/// Every apply input is applied under the server's check without a panic; refused
/// payloads leave no trace and accepted ones leave a valid, reloadable document.
#[test]
fn apply_corpus_and_findings() {
    let seed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seed_plan.automerge"))
            .expect("fuzz/seed_plan.automerge");
    let files = inputs("apply");
    assert!(!files.is_empty(), "fuzz/corpus/apply is missing");
    let partition = Partition {
        wijk: WijkId::new("noord").expect("wijk"),
        kind: DocumentKind::Plan,
    };
    let mut accepted = 0;
    for file in files {
        let data = std::fs::read(&file).expect("read input");
        let Some((&mode, rest)) = data.split_first() else {
            continue;
        };
        let payload = if mode & 1 == 0 {
            match protocol::decode(rest) {
                Ok(Message::Sync { data, .. } | Message::Request { data, .. }) => data,
                _ => continue,
            }
        } else {
            rest.to_vec()
        };
        header_ops::agrees_with_screen(&payload);
        let mut doc = Automerge::load(&seed).expect("seed loads");
        let before = doc.get_heads();
        let mut engine = PeerSync::new();
        let id = DocumentId::from_bytes([7; 16]);
        let result = engine.receive_checked(id, &mut doc, &payload, |doc, _| {
            let meta = schema::meta::read_meta(doc).map_err(|e| e.to_string())?;
            if meta.partition() != partition {
                return Err("meta changed".to_string());
            }
            schema::validate(doc).map(|_| ()).map_err(|e| e.to_string())
        });
        match result {
            Err(Rejected::Check(_) | Rejected::Sync(_)) => {
                assert_eq!(
                    doc.get_heads(),
                    before,
                    "{}: refused but changed",
                    file.display()
                );
            }
            Ok(applied) => {
                if applied.changed() {
                    accepted += 1;
                }
                schema::validate(&doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let _ = engine.generate(id, &doc);
                Automerge::load(&doc.save()).expect("reloads");
            }
        }
    }
    assert!(
        accepted > 0,
        "the corpus must hold at least one accepted change"
    );
}

/// The stateful target's driver, the very file the fuzz target runs.
#[path = "../../fuzz/src/stateful.rs"]
mod stateful;

/// Every stateful input replays through both peers without a panic, and every refused
/// message leaves no trace (the driver asserts it).
#[test]
fn stateful_corpus_and_findings() {
    sync_core::guard::install_panic_hook();
    let files = inputs("stateful");
    assert!(!files.is_empty(), "fuzz/corpus/stateful is missing");
    for file in files {
        let data = std::fs::read(&file).expect("read input");
        stateful::stateful(&data);
    }
}

/// The summary target's driver, the very file the fuzz target runs.
#[path = "../../fuzz/src/summary.rs"]
mod summary;

/// Every summary input is decided as the policy says (the driver asserts it).
#[test]
fn summary_corpus_and_findings() {
    let files = inputs("summary");
    assert!(!files.is_empty(), "fuzz/corpus/summary is missing");
    for file in files {
        let data = std::fs::read(&file).expect("read input");
        summary::summary(&data);
    }
}

/// The http target's driver, the very file the fuzz target runs.
#[path = "../../fuzz/src/http.rs"]
mod http;

/// Every http input parses or is refused without a panic, and what parses writes back
/// to the same request (the driver asserts it); the seeds reach every parser.
#[test]
fn http_corpus_and_findings() {
    let files = inputs("http");
    assert!(!files.is_empty(), "fuzz/corpus/http is missing");
    let mut parsers = std::collections::BTreeSet::new();
    for file in files {
        let data = std::fs::read(&file).expect("read input");
        if let Some(&which) = data.first() {
            parsers.insert(which % 5);
        }
        http::http(&data);
    }
    assert_eq!(
        parsers.len(),
        5,
        "the http corpus must reach all five parsers"
    );
}
