//! The `meta` map every document carries from its first change: its kind, its wijk and
//! the schema version it was written for.
//!
//! `meta` decides a document's partition, so it is read on its own and cheaply
//! ([`read_meta`] touches nothing else) before anything is known about the rest.

use automerge::{Automerge, ROOT};
use autosurgeon::reconcile::NoKey;
use autosurgeon::{ReadDoc, Reconcile, Reconciler};

use super::{put_str, put_u64, FromMap, MapReader, Path, SchemaError};
use crate::partition::{DocumentKind, Partition, WijkId};

/// The schema version this build writes and the newest it reads.
///
/// Version 2 added the plan's outcome lists (`zelfredzaamheid`, `participatieladder`,
/// `status_history`); every v2 field is optional, so a v1 document reads as v2 with
/// those lists empty. `schema` names the version a document was *created* with and is
/// never rewritten: a v1 plan gains v2 fields by an ordinary write and keeps
/// `schema: 1`. Rewriting `meta` would make every such write touch the map that decides
/// the partition (and the relay re-check the whole document), for no reader's benefit.
pub const SCHEMA_VERSION: u64 = 2;

/// The `meta` map: `{"kind": "plan", "wijk": "assen-noord", "schema": 1}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Stored as the string `plan` or `activiteit`.
    pub kind: DocumentKind,
    /// Stored as the wijk id string.
    pub wijk: WijkId,
    /// The schema version the document was created with.
    pub schema: u64,
}

impl Meta {
    /// Meta for a new document of the current schema version.
    pub fn new(kind: DocumentKind, wijk: WijkId) -> Meta {
        Meta {
            kind,
            wijk,
            schema: SCHEMA_VERSION,
        }
    }

    /// Where the document lives.
    pub fn partition(&self) -> Partition {
        Partition {
            wijk: self.wijk.clone(),
            kind: self.kind,
        }
    }

    /// Refuses a document of another kind than the type reading it expects.
    pub(crate) fn expect_kind(&self, kind: DocumentKind) -> Result<(), SchemaError> {
        if self.kind == kind {
            return Ok(());
        }
        Err(SchemaError::Invalid {
            path: "meta.kind".to_owned(),
            reason: format!(
                "expected {:?}, found {:?}",
                kind.as_str(),
                self.kind.as_str()
            ),
        })
    }

    /// Reads the `meta` map at the root of any document, reporting paths as `meta.…`.
    pub(crate) fn read_from<D: ReadDoc>(doc: &D) -> Result<Meta, SchemaError> {
        MapReader::new(doc, ROOT, Path::default()).req("meta")
    }
}

/// Reads the `meta` map of a document, and only that.
pub fn read_meta(doc: &Automerge) -> Result<Meta, SchemaError> {
    Meta::read_from(doc)
}

impl FromMap for Meta {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        let kind_slot = map.field("kind");
        let kind: String = kind_slot.req()?;
        let kind = kind.parse::<DocumentKind>().map_err(|_| {
            kind_slot.unknown_value(
                &kind,
                [DocumentKind::Plan, DocumentKind::Activiteit].map(DocumentKind::as_str),
            )
        })?;

        let wijk_slot = map.field("wijk");
        let wijk = WijkId::new(wijk_slot.req::<String>()?)
            .map_err(|e| wijk_slot.invalid(e.to_string()))?;

        let schema_slot = map.field("schema");
        let schema: u64 = schema_slot.req()?;
        if !(1..=SCHEMA_VERSION).contains(&schema) {
            return Err(schema_slot.invalid(format!(
                "unsupported schema version {schema} (this build understands 1 to {SCHEMA_VERSION})"
            )));
        }
        Ok(Meta { kind, wijk, schema })
    }
}

super::hydrate_with_schema!(Meta, "meta", map);

impl Reconcile for Meta {
    type Key<'k> = NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "kind", self.kind.as_str())?;
        put_str(&mut map, "wijk", self.wijk.as_str())?;
        put_u64(&mut map, "schema", self.schema)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::testing::{meta, raw_doc, text};
    use automerge::transaction::Transactable;
    use automerge::ObjType;

    fn wijk(id: &str) -> WijkId {
        WijkId::new(id).expect("a valid wijk id")
    }

    /// `meta` is read whether JavaScript wrote its strings as scalars or as text, and its
    /// version as an int, a uint or a whole float.
    #[test]
    fn reads_meta_in_every_representation() {
        let expected = Meta {
            schema: 1,
            ..Meta::new(DocumentKind::Activiteit, wijk("assen-noord"))
        };
        let check = |doc: Automerge| assert_eq!(read_meta(&doc), Ok(expected.clone()));
        check(raw_doc(|tx| meta(tx, "activiteit", "assen-noord")));
        check(raw_doc(|tx| {
            let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
            text(tx, &meta, "kind", "activiteit")?;
            text(tx, &meta, "wijk", "assen-noord")?;
            tx.put(&meta, "schema", 1u64)?;
            Ok(())
        }));
        check(raw_doc(|tx| {
            let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
            tx.put(&meta, "kind", "activiteit")?;
            tx.put(&meta, "wijk", "assen-noord")?;
            tx.put(&meta, "schema", 1.0f64)?;
            Ok(())
        }));
    }

    /// Reading `meta` does not read the rest: a broken body is `validate`'s business.
    #[test]
    fn read_meta_ignores_the_body() {
        let doc = raw_doc(|tx| {
            meta(tx, "plan", "assen-noord")?;
            tx.put(ROOT, "goals", 42i64)?;
            Ok(())
        });
        let meta = read_meta(&doc).expect("meta is fine");
        assert_eq!(
            meta.partition(),
            Partition {
                wijk: wijk("assen-noord"),
                kind: DocumentKind::Plan
            }
        );
        assert!(crate::schema::validate(&doc).is_err());
    }

    /// Meta refuses versions it does not know and kinds outside the two.
    #[test]
    fn refuses_bad_meta() {
        let check = |schema: f64, kind: &str, expected: &str| {
            let doc = raw_doc(|tx| {
                let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
                tx.put(&meta, "kind", kind)?;
                tx.put(&meta, "wijk", "assen-noord")?;
                tx.put(&meta, "schema", schema)?;
                Ok(())
            });
            let err = read_meta(&doc).expect_err("meta is broken");
            assert_eq!(err.to_string(), expected);
        };
        check(
            0.0,
            "plan",
            "meta.schema: unsupported schema version 0 (this build understands 1 to 2)",
        );
        check(
            1.5,
            "plan",
            "meta.schema: must be a whole number (found 1.5)",
        );
        check(
            1.0,
            "Plan",
            "meta.kind: unknown value \"Plan\" (expected one of plan, activiteit)",
        );
    }

    /// Meta round-trips through autosurgeon as plain strings and a number.
    #[test]
    fn meta_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let meta = Meta::new(DocumentKind::Plan, wijk("wijk7"));
        let mut doc = automerge::AutoCommit::new();
        autosurgeon::reconcile_prop(&mut doc, ROOT, "meta", &meta)?;
        let back: Meta = autosurgeon::hydrate_prop(&doc, ROOT, "meta")?;
        assert_eq!(back, meta);
        let kind = automerge::ReadDoc::get(&doc, &back_obj(&doc)?, "kind")?;
        assert!(
            matches!(&kind, Some((automerge::Value::Scalar(s), _)) if s.as_str() == Some("plan")),
            "{kind:?}"
        );
        Ok(())
    }

    fn back_obj(
        doc: &automerge::AutoCommit,
    ) -> Result<automerge::ObjId, Box<dyn std::error::Error>> {
        match automerge::ReadDoc::get(doc, ROOT, "meta")? {
            Some((_, id)) => Ok(id),
            None => Err("no meta".into()),
        }
    }
}
