//! The server's decision on one document of a connect-time summary, without I/O.
//!
//! A device that announced the summary capability names, at connect, each document it
//! holds with its heads (`Message::Summary`). For each, the server reads its catalog
//! (partition, hand-over flag, committed heads) and answers as a `request` would for a
//! document it does not have or the device may not read, and otherwise says "in sync"
//! (watch it, send nothing) or "changed" (open a sync session). This module is that
//! decision, so the connection only does the reading and the sending, and the `summary`
//! fuzz target can drive it with arbitrary summaries and catalogs.

use automerge::ChangeHash;

use crate::policy::{self, Access, Denied, DocFacts, Principal};

/// What the catalog says about one document; `None` for an unknown or erased id.
#[derive(Debug, Clone, Copy)]
pub struct Catalog<'a> {
    pub facts: DocFacts<'a>,
    /// The committed heads as the catalog keeps them: sorted lowercase hex joined by
    /// `,` (the store's `heads_text`); `None` when not known (an older row).
    pub committed_heads: Option<&'a str>,
}

/// The answer for one summarised document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not there: `doc-unavailable`, exactly as for a `request`.
    Unavailable,
    /// There, but this principal may not read it: `doc-unavailable` too (denied and
    /// missing look the same on the wire); the reason goes to the log and the audit.
    Denied(Denied),
    /// The device holds exactly the committed heads: watch it, send nothing now.
    InSync,
    /// Readable and different (or unknown heads): open a sync session.
    Changed,
}

/// Decides one document of a summary. `theirs` are the heads the device reported.
/// Empty heads are never "in sync": a device with nothing must be sent the document.
pub fn verdict(
    principal: &Principal,
    catalog: Option<Catalog<'_>>,
    theirs: &[ChangeHash],
) -> Verdict {
    let Some(catalog) = catalog else {
        return Verdict::Unavailable;
    };
    if let Err(reason) = policy::decide(principal, catalog.facts, Access::Read) {
        return Verdict::Denied(reason);
    }
    match catalog.committed_heads {
        Some(committed) if !theirs.is_empty() && same_heads(committed, theirs) => Verdict::InSync,
        _ => Verdict::Changed,
    }
}

/// Do the catalog's heads (text) name exactly `theirs`?
fn same_heads(committed: &str, theirs: &[ChangeHash]) -> bool {
    let mut ours: Vec<&str> = committed.split(',').filter(|h| !h.is_empty()).collect();
    let mut theirs: Vec<String> = theirs.iter().map(ToString::to_string).collect();
    ours.sort_unstable();
    ours.dedup();
    theirs.sort_unstable();
    theirs.dedup();
    ours.len() == theirs.len() && ours.iter().zip(&theirs).all(|(a, b)| *a == b.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{DocumentKind, Partition, WijkId};
    use crate::policy::{Grant, WijkRole};

    fn hash(b: u8) -> ChangeHash {
        ChangeHash([b; 32])
    }

    fn check(
        role: Option<WijkRole>,
        kind: DocumentKind,
        known: bool,
        committed: Option<&str>,
        theirs: &[ChangeHash],
        expected: Verdict,
    ) {
        let partition = Partition {
            wijk: WijkId::new("noord").expect("wijk"),
            kind,
        };
        let principal = Principal {
            user_id: "u".into(),
            grants: role
                .map(|role| Grant {
                    wijk: partition.wijk.clone(),
                    role,
                })
                .into_iter()
                .collect(),
            global_roles: Vec::new(),
        };
        let catalog = known.then_some(Catalog {
            facts: DocFacts {
                partition: &partition,
                handover_copy: false,
            },
            committed_heads: committed,
        });
        assert_eq!(
            verdict(&principal, catalog, theirs),
            expected,
            "{role:?} {kind:?} known={known} committed={committed:?} theirs={theirs:?}"
        );
    }

    /// The summary table: unknown, denied, in sync (same heads in any order), changed.
    #[test]
    fn summary_verdicts() {
        use DocumentKind::{Activiteit, Plan};
        use WijkRole::{Professional, Volunteer};
        let (a, b) = (hash(1), hash(2));
        let both = format!("{a},{b}");
        let only_a = a.to_string();
        check(
            Some(Professional),
            Plan,
            false,
            None,
            &[a],
            Verdict::Unavailable,
        );
        check(
            None,
            Plan,
            true,
            Some(&only_a),
            &[a],
            Verdict::Denied(Denied::NoGrantInWijk),
        );
        assert!(matches!(
            verdict_for_volunteer_plan(&only_a, a),
            Verdict::Denied(_)
        ));
        check(
            Some(Professional),
            Plan,
            true,
            Some(&both),
            &[b, a],
            Verdict::InSync,
        );
        check(
            Some(Volunteer),
            Activiteit,
            true,
            Some(&only_a),
            &[a],
            Verdict::InSync,
        );
        check(
            Some(Professional),
            Plan,
            true,
            Some(&only_a),
            &[b],
            Verdict::Changed,
        );
        check(
            Some(Professional),
            Plan,
            true,
            Some(&both),
            &[a],
            Verdict::Changed,
        );
        check(Some(Professional), Plan, true, None, &[a], Verdict::Changed);
        check(
            Some(Professional),
            Plan,
            true,
            Some(""),
            &[],
            Verdict::Changed,
        );
    }

    fn verdict_for_volunteer_plan(committed: &str, theirs: ChangeHash) -> Verdict {
        let partition = Partition {
            wijk: WijkId::new("noord").expect("wijk"),
            kind: DocumentKind::Plan,
        };
        let principal = Principal {
            user_id: "v".into(),
            grants: vec![Grant {
                wijk: partition.wijk.clone(),
                role: WijkRole::Volunteer,
            }],
            global_roles: Vec::new(),
        };
        let catalog = Catalog {
            facts: DocFacts {
                partition: &partition,
                handover_copy: false,
            },
            committed_heads: Some(committed),
        };
        verdict(&principal, Some(catalog), &[theirs])
    }
}
