//! Document schemas: the typed shape of the two kinds of automerge document (`plan` and
//! `activiteit`) and the one check, [`validate`], that every document passes.
//!
//! The key names are a contract shared with JavaScript clients, which write the same
//! documents with plain automerge calls. Reading is therefore lenient where automerge-js
//! and Rust differ in representation (any string may be a scalar or a collaborative text
//! object; a whole number may be an int, a uint or a float) and strict about meaning
//! (unknown enum values, impossible dates, negative counts and missing identifiers are
//! refused). Every refusal names the path of the offending value, e.g.
//! `plan.goals[2].leefdomein`, because whoever reads the message is a client developer.
//!
//! Reading is done by hand (`FromDoc` and `MapReader`) rather than by autosurgeon's
//! derive, because the derive cannot say *where* a value was wrong; the schema types still
//! implement autosurgeon's `Hydrate` on top of it. Writing is autosurgeon's `Reconcile`,
//! written by hand for the same reasons: list items are keyed by their `id` (a scalar or a
//! text object) so a peer that pushes its own goal never overwrites goals another peer
//! added concurrently; absent optional values are deleted instead of written as `null`;
//! a string keeps the representation (scalar or text) it already has in the document, so
//! reconciling an unchanged document writes nothing; and collections are always written,
//! even when empty, so two peers adding the first item do not each create a competing list.

pub mod activiteit;
mod date;
pub mod meta;
pub mod plan;
mod read;
mod validate;
mod write;

use autosurgeon::{HydrateError, ReconcileError};

pub use activiteit::{Activiteit, Session};
pub use meta::{read_meta, Meta, SCHEMA_VERSION};
pub use plan::{
    is_handed_over, Action, ActionWho, Consent, ContactDetails, ContactKind, ContactMoment, Goal,
    GoalStatus, Handover, Household, LadderMeasurement, Leefdomein, Moment, Plan, PlanStatus,
    PositiveHealth, StatusChange, ZrmDomein, ZrmMeasurement,
};

/// Why a document does not match its schema, or could not be written.
///
/// The messages are meant for the developer of the client that wrote the document: they
/// name the path of the offending value and, for closed sets, the allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A required value is absent (or `null`).
    #[error("{path} is missing")]
    Missing { path: String },
    /// A value of the wrong automerge type, e.g. a number where a list belongs.
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A string outside a closed set of values.
    #[error("{path}: unknown value {value:?} (expected one of {allowed})")]
    UnknownValue {
        path: String,
        value: String,
        allowed: String,
    },
    /// A value of the right type that breaks a rule: a date, a sign, a spelling, a version.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// automerge failed while reading; only a corrupt document or a bug gets here.
    #[error("cannot read the document: {0}")]
    Read(String),
    /// autosurgeon or automerge failed while writing a value into a new document.
    #[error("cannot write the document: {0}")]
    Write(String),
}

impl SchemaError {
    /// The path of the offending value, when the error is about one.
    pub fn path(&self) -> Option<&str> {
        match self {
            SchemaError::Missing { path }
            | SchemaError::WrongType { path, .. }
            | SchemaError::UnknownValue { path, .. }
            | SchemaError::Invalid { path, .. } => Some(path),
            SchemaError::Read(_) | SchemaError::Write(_) => None,
        }
    }

    /// Carries this error through autosurgeon's `Hydrate`, whose error type has no path.
    pub(crate) fn into_hydrate_error(self) -> HydrateError {
        HydrateError::unexpected("a document matching the buurtsync schema", self.to_string())
    }

    fn from_hydrate(path: &Path, err: HydrateError) -> SchemaError {
        match err {
            HydrateError::Automerge(e) => SchemaError::Read(e.to_string()),
            other => SchemaError::Invalid {
                path: path.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

impl From<automerge::AutomergeError> for SchemaError {
    fn from(err: automerge::AutomergeError) -> Self {
        SchemaError::Read(err.to_string())
    }
}

impl From<ReconcileError> for SchemaError {
    fn from(err: ReconcileError) -> Self {
        SchemaError::Write(err.to_string())
    }
}

pub use date::{Date, InvalidDate};
pub(crate) use read::*;
pub(crate) use read::{hydrate_with_schema, schema_enum};
pub use validate::{validate, validate_changes, Checked};
pub(crate) use write::keyed_by_id;
pub(crate) use write::*;
pub use write::{current_state_only, mirror_current_state, new_document, update};

/// Builders for documents written with raw automerge calls, as a JavaScript client would.
#[cfg(test)]
pub(crate) mod testing {
    use automerge::transaction::{Transactable, Transaction};
    use automerge::{Automerge, AutomergeError, ObjId, ObjType, ROOT};

    /// One change built by `build`.
    pub(crate) fn raw_doc(
        build: impl FnOnce(&mut Transaction<'_>) -> Result<(), AutomergeError>,
    ) -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        build(&mut tx).expect("the raw document builds");
        tx.commit();
        doc
    }

    /// Writes `meta` with scalar strings and an int schema version.
    pub(crate) fn meta(
        tx: &mut Transaction<'_>,
        kind: &str,
        wijk: &str,
    ) -> Result<(), AutomergeError> {
        let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
        tx.put(&meta, "kind", kind)?;
        tx.put(&meta, "wijk", wijk)?;
        tx.put(&meta, "schema", 1i64)?;
        Ok(())
    }

    /// Writes a string as a text object, as automerge-js 3 does for every string.
    pub(crate) fn text(
        tx: &mut Transaction<'_>,
        obj: &ObjId,
        key: &str,
        value: &str,
    ) -> Result<ObjId, AutomergeError> {
        let text = tx.put_object(obj, key, ObjType::Text)?;
        tx.splice_text(&text, 0, 0, value)?;
        Ok(text)
    }

    /// A minimal valid plan: meta and a household pseudonym.
    pub(crate) fn plan(tx: &mut Transaction<'_>) -> Result<ObjId, AutomergeError> {
        meta(tx, "plan", "assen-noord")?;
        let household = tx.put_object(ROOT, "household", ObjType::Map)?;
        tx.put(&household, "pseudonym", "gezin-17")?;
        Ok(household)
    }

    /// A minimal valid activiteit: meta and a title.
    pub(crate) fn activiteit(tx: &mut Transaction<'_>) -> Result<(), AutomergeError> {
        meta(tx, "activiteit", "assen-noord")?;
        tx.put(ROOT, "title", "Koffieochtend")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{activiteit, meta, plan, raw_doc};
    use super::*;
    use automerge::transaction::{Transactable, Transaction};
    use automerge::{Automerge, AutomergeError, ObjType, ROOT};

    type Build = fn(&mut Transaction<'_>) -> Result<(), AutomergeError>;

    /// Broken documents are refused with a message that names the offending path.
    #[test]
    fn rejections_name_the_path() {
        let check = |build: Build, expected: &str| {
            let doc = raw_doc(build);
            match validate(&doc) {
                Ok(meta) => panic!("expected {expected:?}, got Ok({meta:?})"),
                Err(err) => assert_eq!(err.to_string(), expected),
            }
        };
        check(
            |tx| {
                tx.put(ROOT, "title", "Koffieochtend")?;
                Ok(())
            },
            "meta is missing",
        );
        check(
            |tx| {
                tx.put(ROOT, "meta", "plan")?;
                Ok(())
            },
            "meta: expected a map, found a string",
        );
        check(
            |tx| {
                let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
                tx.put(&meta, "wijk", "assen-noord")?;
                tx.put(&meta, "schema", 1i64)?;
                Ok(())
            },
            "meta.kind is missing",
        );
        check(
            |tx| meta(tx, "foo", "assen-noord"),
            "meta.kind: unknown value \"foo\" (expected one of plan, activiteit)",
        );
        check(
            |tx| meta(tx, "plan", "Bad Wijk"),
            "meta.wijk: invalid wijk id \"Bad Wijk\": use 1-64 lowercase letters, digits or dashes",
        );
        check(
            |tx| {
                activiteit(tx)?;
                let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
                tx.put(&meta, "kind", "activiteit")?;
                tx.put(&meta, "wijk", "assen-noord")?;
                tx.put(&meta, "schema", 3i64)?;
                Ok(())
            },
            "meta.schema: unsupported schema version 3 (this build understands 1 to 2)",
        );
        check(
            |tx| meta(tx, "plan", "assen-noord"),
            "plan.household is missing",
        );
        check(
            |tx| {
                meta(tx, "plan", "assen-noord")?;
                tx.put_object(ROOT, "household", ObjType::Map)?;
                Ok(())
            },
            "plan.household.pseudonym is missing",
        );
        check(
            |tx| {
                plan(tx)?;
                let goals = tx.put_object(ROOT, "goals", ObjType::List)?;
                let goal = tx.insert_object(&goals, 0, ObjType::Map)?;
                tx.put(&goal, "id", "g1")?;
                tx.put(&goal, "leefdomein", "geld")?;
                tx.put(&goal, "description", "Schulden op orde")?;
                tx.put(&goal, "status", "open")?;
                Ok(())
            },
            "plan.goals[0].leefdomein: unknown value \"geld\" (expected one of financien, \
             wonen, opvoeding, gezondheid, sociaal_netwerk, dagbesteding, veiligheid, \
             werk_en_inkomen, zorg, overig)",
        );
        check(
            |tx| {
                plan(tx)?;
                let goals = tx.put_object(ROOT, "goals", ObjType::List)?;
                let goal = tx.insert_object(&goals, 0, ObjType::Map)?;
                tx.put(&goal, "leefdomein", "wonen")?;
                tx.put(&goal, "description", "Een eigen huis")?;
                tx.put(&goal, "status", "open")?;
                Ok(())
            },
            "plan.goals[0].id is missing",
        );
        check(
            |tx| {
                plan(tx)?;
                tx.put(ROOT, "goals", "geen")?;
                Ok(())
            },
            "plan.goals: expected a list, found a string",
        );
        check(
            |tx| {
                plan(tx)?;
                let contacts = tx.put_object(ROOT, "contacts", ObjType::List)?;
                let contact = tx.insert_object(&contacts, 0, ObjType::Map)?;
                tx.put(&contact, "id", "c1")?;
                tx.put(&contact, "date", "2024-13-40")?;
                tx.put(&contact, "kind", "huisbezoek")?;
                tx.put(&contact, "summary", "Kennismaking")?;
                Ok(())
            },
            "plan.contacts[0].date: invalid date \"2024-13-40\": use YYYY-MM-DD with a real \
             month and day",
        );
        check(
            |tx| {
                plan(tx)?;
                tx.put(ROOT, "status", "klaar")?;
                Ok(())
            },
            "plan.status: unknown value \"klaar\" (expected one of aanmelding, intake, plan, \
             uitvoering, evaluatie, afgesloten)",
        );
        check(
            |tx| meta(tx, "activiteit", "assen-noord"),
            "activiteit.title is missing",
        );
        check(
            |tx| {
                activiteit(tx)?;
                let sessions = tx.put_object(ROOT, "sessions", ObjType::List)?;
                let session = tx.insert_object(&sessions, 0, ObjType::Map)?;
                tx.put(&session, "id", "s1")?;
                tx.put(&session, "date", "2024-03-05")?;
                tx.put(&session, "attendance", -3i64)?;
                tx.put(&session, "volunteer_hours", 2i64)?;
                Ok(())
            },
            "activiteit.sessions[0].attendance: must not be negative (found -3)",
        );
        check(
            |tx| {
                activiteit(tx)?;
                let sessions = tx.put_object(ROOT, "sessions", ObjType::List)?;
                let session = tx.insert_object(&sessions, 0, ObjType::Map)?;
                tx.put(&session, "id", "s1")?;
                tx.put(&session, "date", "2024-03-05")?;
                tx.put(&session, "attendance", 12i64)?;
                tx.put(&session, "volunteer_hours", -0.5f64)?;
                Ok(())
            },
            "activiteit.sessions[0].volunteer_hours: must not be negative (found -0.5)",
        );
    }

    /// Dates must have the YYYY-MM-DD shape and name a day that exists.
    #[test]
    fn date_spelling() {
        let check = |input: &str, ok: bool| assert_eq!(Date::parse(input).is_ok(), ok, "{input:?}");
        check("2024-03-05", true);
        check("2024-02-29", true);
        check("2023-02-29", false);
        check("1900-02-29", false);
        check("2000-02-29", true);
        check("2024-04-31", false);
        check("2024-12-31", true);
        check("2024-13-40", false);
        check("2024-00-10", false);
        check("2024-01-00", false);
        check("2024-1-5", false);
        check("2024/01/05", false);
        check("24-01-2024", false);
        check("0000-01-01", false);
        check("２０２４-01-01", false);
        check("", false);
        assert_eq!(
            Date::from_ymd(2024, 3, 5).map(|d| d.to_string()),
            Ok("2024-03-05".into())
        );
    }

    /// A document whose first change does not carry `meta` cannot be created.
    #[test]
    fn new_document_refuses_values_without_meta() {
        let err = new_document(&vec![1u64, 2]).expect_err("a list is not a document");
        assert!(matches!(err, SchemaError::Write(_)), "{err:?}");
    }

    /// A value hydrated from one document and reconciled into a new one is an error,
    /// not a panic (autosurgeon panics on the stale heads of hydrated Text).
    #[test]
    fn new_document_from_a_hydrated_value_does_not_panic() {
        let wijk = crate::partition::WijkId::new("noord").expect("wijk");
        let mut plan = Plan::new(wijk, "HH");
        plan.goals.push(Goal::new(Leefdomein::Wonen, "woning"));
        let doc = new_document(&plan).expect("doc");
        let hydrated = Plan::read(&doc).expect("read");
        match new_document(&hydrated) {
            Ok(copy) => assert!(validate(&copy).is_ok()),
            Err(e) => assert!(matches!(e, SchemaError::Write(_)), "{e:?}"),
        }
    }

    /// Everything a document's history holds as text (every state at every change),
    /// for "was this ever readable from it?".
    fn every_state(doc: &Automerge) -> String {
        let mut all = String::new();
        for change in doc.get_changes(&[]) {
            if let Ok(earlier) = doc.fork_at(&[change.hash()]) {
                let json = serde_json::to_string(&automerge::AutoSerde::from(&earlier));
                all.push_str(&json.expect("json"));
            }
        }
        all
    }

    fn json(doc: &Automerge) -> serde_json::Value {
        serde_json::to_value(automerge::AutoSerde::from(doc)).expect("json")
    }

    /// A hand-over copy starts from the current state only and follows later edits of
    /// every kind (text, lists shrinking and growing, scalars, removed keys) to equal
    /// the source; what was deleted before the copy never enters it.
    #[test]
    fn a_mirrored_copy_equals_the_source_without_its_earlier_history() {
        let wijk = crate::partition::WijkId::new("noord").expect("wijk");
        let date = Date::from_ymd(2028, 3, 1).expect("date");
        let mut plan = Plan::new(wijk, "HH");
        plan.goals.push(Goal::new(Leefdomein::Wonen, "woning"));
        plan.goals
            .push(Goal::new(Leefdomein::Financien, "schulden"));
        plan.contacts.push(ContactMoment::new(
            date.clone(),
            ContactKind::Huisbezoek,
            "GEHEIME NOTITIE",
        ));
        let mut source = new_document(&plan).expect("doc");
        update::<Plan>(&mut source, |p| p.contacts.clear()).expect("delete the note");
        let mut copy = current_state_only(&source).expect("copy");
        assert_eq!(json(&copy), json(&source));
        assert!(!mirror_current_state(&source, &mut copy).expect("mirror"));
        // Later edits: a text change with non-ASCII, a goal removed at the front, new
        // items at the end, a scalar set.
        update::<Plan>(&mut source, |p| {
            p.goals.remove(0);
            p.goals[0] = Goal::new(Leefdomein::Financien, "schulden → budgetcoach ✓");
            p.goals.push(Goal::new(Leefdomein::Gezondheid, "huisarts"));
            p.contacts.push(ContactMoment::new(
                date.clone(),
                ContactKind::Telefoon,
                "gebeld",
            ));
            p.status = PlanStatus::Intake;
        })
        .expect("edit");
        assert!(mirror_current_state(&source, &mut copy).expect("mirror"));
        assert_eq!(json(&copy), json(&source));
        assert!(validate(&copy).is_ok());
        assert!(!mirror_current_state(&source, &mut copy).expect("mirror"));
        assert!(
            !every_state(&copy).contains("GEHEIME NOTITIE"),
            "the note deleted before the copy is in its history"
        );
        assert!(every_state(&source).contains("GEHEIME NOTITIE"));
    }

    /// Quoted client data in error messages is cut short.
    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(500);
        let doc = raw_doc(|tx| meta(tx, &long, "assen-noord"));
        let message = validate(&doc).expect_err("unknown kind").to_string();
        assert!(message.len() < 200, "{message}");
    }
}
