//! The access policy: the one place that decides who may read or write which document.
//!
//! Pure code over an authenticated [`Principal`] and the facts of a document (its
//! partition and whether it is a plan's hand-over copy for the gemeente). Every server path — sync,
//! request, ephemeral, remote-heads, listings, exports — asks [`decide`]; nothing else
//! compares roles to partitions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::partition::{DocumentKind, Partition, WijkId};

/// A role a user holds in one wijk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WijkRole {
    /// Buurtteam professional: plans and activiteiten of the wijk.
    Professional,
    /// Volunteer: activiteiten of the wijk only, never plans.
    Volunteer,
    /// Coordinator / teamleider: as professional (hand-overs and moves come on top).
    Coordinator,
}

/// A role that is not tied to a wijk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalRole {
    /// Gemeente consulent: reads only plans explicitly handed over, never writes.
    Consulent,
    /// Central office: pseudonymised feeds and aggregates, never document content.
    CentralOffice,
    /// Operator: manages users, grants and tokens; reads no document.
    Admin,
}

macro_rules! spelled {
    ($ty:ty, $err:literal, $($variant:path => $name:literal),+) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($variant),)+
                    other => Err(format!(concat!("unknown ", $err, " {:?} (expected one of: {})"), other, [$($name),+].join(", "))),
                }
            }
        }
    };
}

spelled!(WijkRole, "wijk role",
    WijkRole::Professional => "professional",
    WijkRole::Volunteer => "volunteer",
    WijkRole::Coordinator => "coordinator");
spelled!(GlobalRole, "global role",
    GlobalRole::Consulent => "consulent",
    GlobalRole::CentralOffice => "central_office",
    GlobalRole::Admin => "admin");

/// A role in a wijk, as stored in the grants table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub wijk: WijkId,
    pub role: WijkRole,
}

/// The authenticated identity bound to a connection at the websocket upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: String,
    pub grants: Vec<Grant>,
    pub global_roles: Vec<GlobalRole>,
}

/// What a principal wants to do with a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receive the document's content (sync, request, ephemeral, remote heads).
    Read,
    /// Have changes stored and relayed (including creating the document).
    Write,
}

/// The facts of a document the policy needs, both fixed at creation: partition, and
/// whether the document is a hand-over copy.
#[derive(Clone, Copy, Debug)]
pub struct DocFacts<'a> {
    pub partition: &'a Partition,
    /// A plan's hand-over copy (issue 16, item 5): the document the server builds from
    /// a plan's current state when it is handed over to the gemeente for a maatwerk
    /// decision, without the plan's history. The consulent reads the copy, never the
    /// plan; nobody writes it but the server, and the team has the plan itself.
    pub handover_copy: bool,
}

/// Why access was refused; kept for the log and the audit trail, never told to the
/// peer for reads (denied and missing look the same on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no grant in this wijk")]
    NoGrantInWijk,
    #[error("volunteers never receive plans")]
    VolunteerPlan,
    #[error("the role only allows reading")]
    ReadOnlyRole,
    #[error("a consulent reads hand-over copies only, never a plan itself")]
    NotHandedOver,
    #[error("a hand-over copy is for the gemeente only")]
    HandOverCopy,
    #[error("the role has no access to document content")]
    NoContentAccess,
    #[error("only a coordinator of the wijk may do this")]
    NotCoordinator,
    #[error("only the central office receives feeds and aggregates")]
    NotCentralOffice,
}

/// The decision. Allow if any of the principal's roles allows; otherwise the most
/// specific reason among the refusals.
pub fn decide(principal: &Principal, doc: DocFacts<'_>, access: Access) -> Result<(), Denied> {
    if doc.handover_copy {
        let consulent = principal.global_roles.contains(&GlobalRole::Consulent)
            && doc.partition.kind == DocumentKind::Plan;
        return match (consulent, access) {
            (true, Access::Read) => Ok(()),
            (true, Access::Write) => Err(Denied::ReadOnlyRole),
            (false, _) => Err(Denied::HandOverCopy),
        };
    }
    let mut reason = Denied::NoGrantInWijk;
    for grant in principal
        .grants
        .iter()
        .filter(|g| g.wijk == doc.partition.wijk)
    {
        match (grant.role, doc.partition.kind) {
            (WijkRole::Professional | WijkRole::Coordinator, _) => return Ok(()),
            (WijkRole::Volunteer, DocumentKind::Activiteit) => return Ok(()),
            (WijkRole::Volunteer, DocumentKind::Plan) => reason = Denied::VolunteerPlan,
        }
    }
    for role in &principal.global_roles {
        match role {
            GlobalRole::Consulent if doc.partition.kind == DocumentKind::Plan => {
                if reason == Denied::NoGrantInWijk {
                    reason = Denied::NotHandedOver;
                }
            }
            GlobalRole::Consulent | GlobalRole::CentralOffice | GlobalRole::Admin => {
                if reason == Denied::NoGrantInWijk {
                    reason = Denied::NoContentAccess;
                }
            }
        }
    }
    Err(reason)
}

/// May the principal create a document in this partition? Same as writing to it.
pub fn may_create(principal: &Principal, partition: &Partition) -> Result<(), Denied> {
    decide(
        principal,
        DocFacts {
            partition,
            handover_copy: false,
        },
        Access::Write,
    )
}

/// May the principal receive the central office's pseudonymised feed, exports and
/// aggregates? Only the `central_office` role; a wijk grant or another global role
/// adds nothing (professionals have the documents themselves, admins see no content).
pub fn may_receive_central(principal: &Principal) -> Result<(), Denied> {
    if principal.global_roles.contains(&GlobalRole::CentralOffice) {
        Ok(())
    } else {
        Err(Denied::NotCentralOffice)
    }
}

/// May the principal move a household plan out of its wijk (verhuizing)? Only a
/// coordinator of the plan's current wijk, and only plans.
pub fn may_move(principal: &Principal, from: &Partition) -> Result<(), Denied> {
    if from.kind != DocumentKind::Plan {
        return Err(Denied::NoContentAccess);
    }
    let coordinator = principal
        .grants
        .iter()
        .any(|g| g.wijk == from.wijk && g.role == WijkRole::Coordinator);
    if coordinator {
        Ok(())
    } else if principal.grants.iter().any(|g| g.wijk == from.wijk) {
        Err(Denied::NotCoordinator)
    } else {
        Err(Denied::NoGrantInWijk)
    }
}

/// Where the documents a principal may read can be, so that a listing asks the store
/// for exactly those instead of scanning the catalog: whole partitions from wijk
/// grants, and for a consulent every hand-over copy. Derived from [`decide`], and a
/// listing still asks [`decide`] per document: this narrows the search, never allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadScope {
    /// Partitions readable whole (but for hand-over copies), without duplicates.
    pub partitions: Vec<Partition>,
    /// Hand-over copies of plans of any wijk are readable too.
    pub handover_copies: bool,
}

/// The [`ReadScope`] of a principal.
pub fn read_scope(principal: &Principal) -> ReadScope {
    let mut partitions: Vec<Partition> = Vec::new();
    for grant in &principal.grants {
        for kind in [DocumentKind::Plan, DocumentKind::Activiteit] {
            let partition = Partition {
                wijk: grant.wijk.clone(),
                kind,
            };
            let facts = DocFacts {
                partition: &partition,
                handover_copy: false,
            };
            if decide(principal, facts, Access::Read).is_ok() && !partitions.contains(&partition) {
                partitions.push(partition);
            }
        }
    }
    ReadScope {
        partitions,
        handover_copies: principal.global_roles.contains(&GlobalRole::Consulent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wijk(s: &str) -> WijkId {
        WijkId::new(s).expect("valid wijk")
    }

    fn user(grants: &[(&str, WijkRole)], global: &[GlobalRole]) -> Principal {
        Principal {
            user_id: "u".into(),
            grants: grants
                .iter()
                .map(|(w, role)| Grant {
                    wijk: wijk(w),
                    role: *role,
                })
                .collect(),
            global_roles: global.to_vec(),
        }
    }

    /// The policy table of BRIEF.md §2/§5: who may read and write what.
    #[test]
    fn policy_table() {
        use Access::{Read, Write};
        use DocumentKind::{Activiteit, Plan};
        use WijkRole::{Coordinator, Professional, Volunteer};
        let prof_a = user(&[("a", Professional)], &[]);
        let vol_a = user(&[("a", Volunteer)], &[]);
        let coord_b = user(&[("b", Coordinator)], &[]);
        let vol_a_prof_b = user(&[("a", Volunteer), ("b", Professional)], &[]);
        let consulent = user(&[], &[GlobalRole::Consulent]);
        let office = user(&[], &[GlobalRole::CentralOffice]);
        let admin = user(&[], &[GlobalRole::Admin]);
        let nobody = user(&[], &[]);

        let check = |who: &Principal,
                     w: &str,
                     kind: DocumentKind,
                     copy: bool,
                     access: Access,
                     expected: Result<(), Denied>| {
            let partition = Partition {
                wijk: wijk(w),
                kind,
            };
            let got = decide(
                who,
                DocFacts {
                    partition: &partition,
                    handover_copy: copy,
                },
                access,
            );
            assert_eq!(got, expected, "{who:?} {w} {kind} copy={copy} {access:?}");
        };
        let ok = Ok(());
        check(&prof_a, "a", Plan, false, Read, ok);
        check(&prof_a, "a", Plan, false, Write, ok);
        check(&prof_a, "a", Activiteit, false, Write, ok);
        check(&prof_a, "b", Plan, false, Read, Err(Denied::NoGrantInWijk));
        check(
            &prof_a,
            "b",
            Activiteit,
            false,
            Read,
            Err(Denied::NoGrantInWijk),
        );
        check(&vol_a, "a", Activiteit, false, Read, ok);
        check(&vol_a, "a", Activiteit, false, Write, ok);
        check(&vol_a, "a", Plan, false, Read, Err(Denied::VolunteerPlan));
        check(&vol_a, "a", Plan, true, Read, Err(Denied::HandOverCopy));
        check(
            &vol_a,
            "b",
            Activiteit,
            false,
            Read,
            Err(Denied::NoGrantInWijk),
        );
        check(&coord_b, "b", Plan, false, Write, ok);
        check(&coord_b, "a", Plan, false, Read, Err(Denied::NoGrantInWijk));
        check(
            &vol_a_prof_b,
            "a",
            Plan,
            false,
            Read,
            Err(Denied::VolunteerPlan),
        );
        check(&vol_a_prof_b, "b", Plan, false, Read, ok);
        check(&consulent, "a", Plan, true, Read, ok);
        // The copy is the gemeente's: the team reads and writes the plan itself.
        check(&prof_a, "a", Plan, true, Read, Err(Denied::HandOverCopy));
        check(&coord_b, "b", Plan, true, Write, Err(Denied::HandOverCopy));
        check(
            &consulent,
            "a",
            Plan,
            true,
            Write,
            Err(Denied::ReadOnlyRole),
        );
        check(
            &consulent,
            "a",
            Plan,
            false,
            Read,
            Err(Denied::NotHandedOver),
        );
        check(
            &consulent,
            "a",
            Activiteit,
            false,
            Read,
            Err(Denied::NoContentAccess),
        );
        check(&office, "a", Plan, true, Read, Err(Denied::HandOverCopy));
        check(
            &office,
            "a",
            Activiteit,
            false,
            Read,
            Err(Denied::NoContentAccess),
        );
        check(&admin, "a", Plan, false, Read, Err(Denied::NoContentAccess));
        check(
            &admin,
            "a",
            Activiteit,
            false,
            Write,
            Err(Denied::NoContentAccess),
        );
        check(
            &nobody,
            "a",
            Activiteit,
            false,
            Read,
            Err(Denied::NoGrantInWijk),
        );
    }

    /// Creating is writing: volunteers cannot create plans, nobody creates outside their wijk.
    #[test]
    fn creation_follows_write() {
        let vol = user(&[("a", WijkRole::Volunteer)], &[]);
        let plan_a = Partition {
            wijk: wijk("a"),
            kind: DocumentKind::Plan,
        };
        let act_a = Partition {
            wijk: wijk("a"),
            kind: DocumentKind::Activiteit,
        };
        let act_b = Partition {
            wijk: wijk("b"),
            kind: DocumentKind::Activiteit,
        };
        assert_eq!(may_create(&vol, &plan_a), Err(Denied::VolunteerPlan));
        assert_eq!(may_create(&vol, &act_a), Ok(()));
        assert_eq!(may_create(&vol, &act_b), Err(Denied::NoGrantInWijk));
    }

    /// Only a coordinator of the plan's own wijk may move it; activiteiten do not move.
    #[test]
    fn moving_needs_a_coordinator_of_the_wijk() {
        let plan = |w: &str| Partition {
            wijk: wijk(w),
            kind: DocumentKind::Plan,
        };
        let check = |who: &Principal, from: Partition, expected: Result<(), Denied>| {
            assert_eq!(may_move(who, &from), expected, "{who:?} {from}");
        };
        let coord_a = user(&[("a", WijkRole::Coordinator)], &[]);
        let prof_a = user(&[("a", WijkRole::Professional)], &[]);
        check(&coord_a, plan("a"), Ok(()));
        check(&coord_a, plan("b"), Err(Denied::NoGrantInWijk));
        check(&prof_a, plan("a"), Err(Denied::NotCoordinator));
        check(
            &user(&[], &[GlobalRole::Admin]),
            plan("a"),
            Err(Denied::NoGrantInWijk),
        );
        check(
            &coord_a,
            Partition {
                wijk: wijk("a"),
                kind: DocumentKind::Activiteit,
            },
            Err(Denied::NoContentAccess),
        );
    }

    /// Only the central office role receives the central feed, whatever else one holds.
    #[test]
    fn central_feed_is_for_the_central_office_only() {
        let check = |who: Principal, expected: Result<(), Denied>| {
            assert_eq!(may_receive_central(&who), expected, "{who:?}");
        };
        let no = Err(Denied::NotCentralOffice);
        check(user(&[], &[GlobalRole::CentralOffice]), Ok(()));
        check(
            user(&[("a", WijkRole::Volunteer)], &[GlobalRole::CentralOffice]),
            Ok(()),
        );
        check(user(&[("a", WijkRole::Professional)], &[]), no);
        check(user(&[("a", WijkRole::Coordinator)], &[]), no);
        check(user(&[("a", WijkRole::Volunteer)], &[]), no);
        check(user(&[], &[GlobalRole::Admin]), no);
        check(user(&[], &[GlobalRole::Consulent]), no);
        check(user(&[], &[]), no);
    }

    /// Role names parse from their stored spelling and nothing else.
    #[test]
    fn role_spelling() {
        for role in [
            WijkRole::Professional,
            WijkRole::Volunteer,
            WijkRole::Coordinator,
        ] {
            assert_eq!(role.as_str().parse::<WijkRole>(), Ok(role));
        }
        for role in [
            GlobalRole::Consulent,
            GlobalRole::CentralOffice,
            GlobalRole::Admin,
        ] {
            assert_eq!(role.as_str().parse::<GlobalRole>(), Ok(role));
        }
        assert!("Professional".parse::<WijkRole>().is_err());
    }

    /// The read scope lists exactly the partitions and hand-overs `decide` allows reading.
    #[test]
    fn read_scope_follows_decide() {
        let part = |w: &str, kind| Partition {
            wijk: wijk(w),
            kind,
        };
        let check = |principal: Principal, partitions: Vec<Partition>, handover_copies| {
            assert_eq!(
                read_scope(&principal),
                ReadScope {
                    partitions,
                    handover_copies
                },
                "{principal:?}"
            );
        };
        check(
            user(&[("noord", WijkRole::Professional)], &[]),
            vec![
                part("noord", DocumentKind::Plan),
                part("noord", DocumentKind::Activiteit),
            ],
            false,
        );
        check(
            user(
                &[
                    ("noord", WijkRole::Volunteer),
                    ("zuid", WijkRole::Coordinator),
                ],
                &[],
            ),
            vec![
                part("noord", DocumentKind::Activiteit),
                part("zuid", DocumentKind::Plan),
                part("zuid", DocumentKind::Activiteit),
            ],
            false,
        );
        check(
            user(
                &[
                    ("noord", WijkRole::Volunteer),
                    ("noord", WijkRole::Professional),
                ],
                &[],
            ),
            vec![
                part("noord", DocumentKind::Plan),
                part("noord", DocumentKind::Activiteit),
            ],
            false,
        );
        check(user(&[], &[GlobalRole::Consulent]), vec![], true);
        check(
            user(&[], &[GlobalRole::Admin, GlobalRole::CentralOffice]),
            vec![],
            false,
        );
    }
}
