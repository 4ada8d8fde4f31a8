//! The `summary` fuzz target's driver: the connect-time summary extension decoded and
//! decided (`sync_core::summary::verdict`) against catalogs the input invents.
//!
//! Only sync_core is used, so `sync-core/tests/fuzz_regressions.rs` includes this very
//! file (`#[path]`) to replay the corpus in the ordinary test run.

use sync_core::partition::{Partition, WijkId};
use sync_core::protocol::{self, Message};

/// The summary extension: a decoded `Summary` frame, each document decided against a
/// catalog the input invents (known or not, partition, hand-over, committed heads equal
/// to the device's, reordered, or different), for a principal the first byte picks.
/// Oracles: unknown → unavailable; unreadable under `policy::decide` → denied; "in sync"
/// only for a readable document whose committed heads are exactly the device's
/// (non-empty) heads, and always then. Re-splitting into frames loses no document.
pub fn summary(data: &[u8]) {
    use sync_core::partition::DocumentKind;
    use sync_core::policy::{self, Access, DocFacts, Grant, Principal, WijkRole};
    use sync_core::summary::{verdict, Catalog, Verdict};

    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let Ok(Message::Summary { documents, .. }) = protocol::decode(rest) else {
        return;
    };
    let noord = WijkId::new("noord").expect("wijk");
    let zuid = WijkId::new("zuid").expect("wijk");
    let role = match shape % 4 {
        0 => WijkRole::Professional,
        1 => WijkRole::Volunteer,
        _ => WijkRole::Coordinator,
    };
    let principal = Principal {
        user_id: "fuzz".into(),
        grants: vec![Grant {
            wijk: noord.clone(),
            role,
        }],
        global_roles: if shape & 4 != 0 {
            vec![policy::GlobalRole::Consulent]
        } else {
            Vec::new()
        },
    };
    for (id, theirs) in &documents {
        let bits = id.as_bytes()[0] ^ shape;
        let partition = Partition {
            wijk: if bits & 4 == 0 {
                noord.clone()
            } else {
                zuid.clone()
            },
            kind: if bits & 2 == 0 {
                DocumentKind::Plan
            } else {
                DocumentKind::Activiteit
            },
        };
        let facts = DocFacts {
            partition: &partition,
            handover_copy: bits & 8 != 0,
        };
        let mut hex: Vec<String> = theirs.iter().map(ToString::to_string).collect();
        let committed = match (bits >> 4) % 4 {
            0 => None,
            1 => {
                hex.sort();
                Some(hex.join(","))
            }
            2 => {
                hex.sort();
                hex.reverse();
                Some(hex.join(","))
            }
            _ => Some(format!("{:064x}", u64::from(bits))),
        };
        let equal = matches!((bits >> 4) % 4, 1 | 2)
            || committed.as_deref().is_some_and(|c| {
                let mut h: Vec<String> = theirs.iter().map(ToString::to_string).collect();
                h.sort();
                h.dedup();
                h.join(",") == c
            });
        let known = bits & 1 == 0;
        let catalog = known.then_some(Catalog {
            facts,
            committed_heads: committed.as_deref(),
        });
        let v = verdict(&principal, catalog, theirs);
        let readable = policy::decide(&principal, facts, Access::Read).is_ok();
        match v {
            Verdict::Unavailable => assert!(!known, "a known document called unavailable"),
            Verdict::Denied(_) => assert!(known && !readable, "a readable document denied"),
            Verdict::InSync => assert!(
                known && readable && !theirs.is_empty() && equal,
                "in sync without equal heads"
            ),
            Verdict::Changed => assert!(
                known && readable && (theirs.is_empty() || !equal),
                "equal heads not recognised as in sync"
            ),
        }
    }
    let frames = protocol::summary_frames("a", "b", documents.clone());
    let mut again = std::collections::BTreeMap::new();
    for frame in &frames {
        match protocol::decode(&protocol::encode(frame)).expect("our frame decodes") {
            Message::Summary { documents, .. } => again.extend(documents),
            other => panic!("summary_frames made {other:?}"),
        }
    }
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        documents.keys().collect::<Vec<_>>(),
        "re-splitting a summary lost or added documents"
    );
}
