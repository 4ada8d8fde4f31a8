//! What the fuzz targets exercise, as plain functions so `seed-corpus` and the
//! regression test in `sync-core/tests/fuzz_regressions.rs` run the very same steps.
//!
//! - [`codec`] (`src/codec.rs`): decode any bytes; the fast path for `sync`/`request`
//!   frames declines or agrees with the general decoder, and whatever decodes
//!   re-encodes to bytes that decode to the same message.
//! - [`apply`]: the server's handling of a decoded message against a document:
//!   sync-core's engine applies the payload under the server's check (partition
//!   unchanged, schema valid) and generates the answer. No I/O, as on the server.
//!   First the ops counted from the payload's headers (where the server applies it)
//!   must be the screen's count of the decoded message (`src/header_ops.rs`).
//! - [`stateful`]: two peers drive a sequence of messages through that check; a refused
//!   message must leave no trace, not even in automerge's queue of changes waiting for
//!   dependencies.
//! - [`summary`]: the summary extension decoded and decided against invented catalogs.
//! - [`http`]: the HTTP API's request parsing (listing, move, feed, aggregates, ids).

mod codec;
mod header_ops;
mod http;
mod stateful;
mod summary;

pub use codec::codec;
pub use http::http;
pub use stateful::stateful;
pub use summary::summary;

use automerge::Automerge;
use sync_core::engine::{PeerSync, Rejected};
use sync_core::partition::{Partition, WijkId};
use sync_core::protocol::{self, DocumentId, Message};
use sync_core::schema::{self, Plan};

/// The stored plan the fuzzed peer syncs against: fixed bytes (written by
/// `seed-corpus`), so the corpus's changes build on the very same history.
pub const SEED_PLAN: &[u8] = include_bytes!("../seed_plan.automerge");

/// A fresh plan in wijk `noord`, as `seed-corpus` writes it to `seed_plan.automerge`.
pub fn new_seed_plan() -> Automerge {
    let wijk = WijkId::new("noord").expect("wijk");
    schema::new_document(&Plan::new(wijk, "HH-FUZZ")).expect("plan")
}

/// The stored plan, loaded.
pub fn seed_document() -> Automerge {
    Automerge::load(SEED_PLAN).expect("fuzz/seed_plan.automerge loads")
}

/// The server's path for one incoming frame: the first byte chooses whether the rest
/// is a whole protocol frame (decoded first) or a bare automerge sync payload.
pub fn apply(data: &[u8]) {
    // libfuzzer-sys's hook aborts on every panic, caught or not; a panic the guard
    // catches is handled (and checked below like any refusal), so keep it quiet.
    sync_core::guard::install_panic_hook();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let payload: Vec<u8> = if mode & 1 == 0 {
        match protocol::decode(rest) {
            Ok(Message::Sync { data, .. } | Message::Request { data, .. }) => data,
            _ => return,
        }
    } else {
        rest.to_vec()
    };
    header_ops::agrees_with_screen(&payload);
    let mut doc = seed_document();
    let partition = Partition {
        wijk: WijkId::new("noord").expect("wijk"),
        kind: sync_core::partition::DocumentKind::Plan,
    };
    let id = DocumentId::from_bytes([7; 16]);
    let mut engine = PeerSync::new();
    let before = doc.get_heads();
    let result = engine.receive_checked(id, &mut doc, &payload, |doc, applied| {
        let meta = schema::meta::read_meta(doc).map_err(|e| e.to_string())?;
        if meta.partition() != partition {
            return Err("meta changed".to_string());
        }
        // The relay's check: only what the changes touched. The whole-document
        // `validate` below is the oracle it must never be more lenient than.
        schema::validate_changes(
            doc,
            &applied.heads_before,
            applied.new_changes(doc),
            partition.kind,
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    });
    match result {
        // A refused or broken payload leaves the document exactly as it was.
        Err(Rejected::Check(_) | Rejected::Sync(_)) => {
            assert_eq!(doc.get_heads(), before, "a refused payload left a trace");
        }
        Ok(_) => {
            // What was accepted is valid and can be answered, saved and loaded.
            schema::validate(&doc).expect("accepted document validates");
            let _ = engine.generate(id, &doc);
            Automerge::load(&doc.save()).expect("accepted document reloads");
        }
    }
}
