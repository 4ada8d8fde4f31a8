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
pub mod meta;
pub mod plan;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ScalarValue, Value};
use autosurgeon::reconcile::{LoadKey, MapReconciler, NoKey, SeqReconciler, TextReconciler};
use autosurgeon::{HydrateError, ReadDoc, Reconcile, ReconcileError, Reconciler, Text};

use crate::partition::DocumentKind;

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

/// Checks a whole document: reads `meta`, then reads the rest as the type `meta.kind`
/// names, checking enums, dates, numbers and required fields. Returns the meta.
pub fn validate(doc: &Automerge) -> Result<Meta, SchemaError> {
    let meta = read_meta(doc)?;
    match meta.kind {
        DocumentKind::Plan => {
            Plan::read(doc)?;
        }
        DocumentKind::Activiteit => {
            Activiteit::read(doc)?;
        }
    }
    Ok(meta)
}

/// Which top-level fields of a document some changes touched, and for list fields
/// which items (`None`: the whole field).
type Touched = std::collections::BTreeMap<String, Option<std::collections::BTreeSet<usize>>>;

/// Checks a document after changes were applied to it, reading only what those changes
/// touched: `meta` always, then each top-level field a change wrote to, and of a list
/// field (goals, contacts, sessions, ...) only the items written to.
///
/// `before` are heads at which the document was valid (the relay commits nothing
/// else). A schema has no rule across fields or list items, so a part no change touched
/// is as valid as it was. Reading a whole plan costs milliseconds in automerge 0.12 (a
/// map lookup is microseconds), which made validation nearly all of a relayed change's
/// CPU; this makes it proportional to the change. When the touched parts cannot be told
/// (an object no longer in the document, a scalar put straight into a list) it falls
/// back to [`validate`], so it never accepts what [`validate`] would refuse.
pub fn validate_changes(doc: &Automerge, before: &[ChangeHash]) -> Result<Meta, SchemaError> {
    let meta = read_meta(doc)?;
    if before.is_empty() {
        return validate(doc);
    }
    // A changed `meta` may change the kind, and with it what every field must be.
    let Some(touched) = touched(doc, before).filter(|t| !t.contains_key("meta")) else {
        return validate(doc);
    };
    let root = MapReader::new(doc, automerge::ROOT, Path::root(meta.kind.as_str()));
    for (key, items) in &touched {
        match meta.kind {
            DocumentKind::Plan => Plan::check_field(&root, key, items.as_ref())?,
            DocumentKind::Activiteit => Activiteit::check_field(&root, key, items.as_ref())?,
        };
    }
    Ok(meta)
}

/// The top-level fields and list items the changes after `before` wrote to; `None` if
/// that cannot be told cheaply and exactly.
fn touched(doc: &Automerge, before: &[ChangeHash]) -> Option<Touched> {
    use automerge::legacy::{Key, ObjectId, OpType};
    let mut touched = Touched::new();
    // Paths of objects already looked up: a change writes many keys of one object.
    let mut paths: std::collections::HashMap<String, Option<Vec<(ObjId, automerge::Prop)>>> =
        std::collections::HashMap::new();
    let mut path_of = |id: String| -> Option<Option<Vec<(ObjId, automerge::Prop)>>> {
        if let Some(p) = paths.get(&id) {
            return Some(p.clone());
        }
        let (obj, _) = doc.import(&id).ok()?;
        // Not visible any more (deleted, or lost a conflict): nothing of it can be read,
        // so nothing of it needs checking.
        let path = doc.parents(&obj).ok()?.visible_path();
        paths.insert(id, path.clone());
        Some(path)
    };
    for change in doc.get_changes(before) {
        let expanded = change.decode();
        let actor = expanded.actor_id.to_hex_string();
        for (n, op) in expanded.operations.iter().enumerate() {
            let parent = match &op.obj {
                ObjectId::Root => {
                    let Key::Map(key) = &op.key else {
                        return None;
                    };
                    touched.insert(key.to_string(), None);
                    continue;
                }
                ObjectId::Id(id) => format!("{}@{}", id.0, id.1.to_hex_string()),
            };
            let Some(path) = path_of(parent)? else {
                continue;
            };
            let Some((_, automerge::Prop::Map(field))) = path.first() else {
                return None;
            };
            let item = match (path.get(1), &op.action, &op.key) {
                // Inside an item of a list field: that item.
                (Some((_, automerge::Prop::Seq(i))), _, _) => Some(*i),
                // Straight into a list field: removing items breaks nothing; a new
                // object is found by its own id (the op's), anything else is checked
                // with the whole field.
                (None, OpType::Delete, Key::Seq(_)) => continue,
                (None, OpType::Make(_), Key::Seq(_)) => {
                    let own = format!("{}@{actor}", expanded.start_op.get() + n as u64);
                    match path_of(own)? {
                        None => continue,
                        Some(p) => match p.get(1) {
                            Some((_, automerge::Prop::Seq(i))) => Some(*i),
                            _ => None,
                        },
                    }
                }
                // A map field (household, handover, ...): read it whole; they are small.
                _ => None,
            };
            let entry = touched
                .entry(field.clone())
                .or_insert_with(|| Some(Default::default()));
            match (entry.as_mut(), item) {
                (Some(items), Some(i)) => {
                    items.insert(i);
                }
                (Some(_), None) => *entry = None,
                (None, _) => {}
            }
        }
    }
    Some(touched)
}

/// Creates a document whose first change holds all of `value`, `meta` included, so the
/// document's partition is known from its first change on.
///
/// The result is validated: a value that [`validate`] would refuse (say, a negative
/// number of volunteer hours) is refused here too.
///
/// Build `value` fresh: a value hydrated from another document carries that document's
/// heads in its `Text` fields, and autosurgeon 0.14 panics reconciling those into an
/// empty document. That panic is caught here and returned as an error.
pub fn new_document<T: Reconcile>(value: &T) -> Result<Automerge, SchemaError> {
    let build = || -> Result<Automerge, SchemaError> {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        // On error the transaction is dropped, which rolls it back.
        autosurgeon::reconcile(&mut tx, value)?;
        let (_hash, _patches) = tx.commit();
        Ok(doc)
    };
    let doc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)).map_err(|_| {
        SchemaError::Write(
            "autosurgeon panicked; was the value hydrated from another document?".into(),
        )
    })??;
    validate(&doc)?;
    Ok(doc)
}

/// Edits a typed document the way every client should: hydrate the current state, let
/// `edit` change it, reconcile the difference as one change. Only what `edit` changed is
/// written, so concurrent edits of other fields and other list items merge.
///
/// Hydrating and reconciling both go through the one transaction, so they see the same
/// heads. They must: autosurgeon's `Text` remembers the heads it was read at and
/// refuses to reconcile ("the data to be reconciled is stale") when the reconciler's
/// heads differ. A transaction's heads are its change's dependencies, which automerge
/// makes the document's heads *plus this actor's previous change* when that is no
/// longer a head (a peer's change built on it arrived, as after every sync with
/// concurrent edits) — so heads read from the document itself would differ.
pub fn update<T>(doc: &mut Automerge, edit: impl FnOnce(&mut T)) -> Result<(), SchemaError>
where
    T: autosurgeon::Hydrate + Reconcile,
{
    // On error the transaction is dropped, which rolls it back.
    let mut tx = doc.transaction();
    let mut value: T =
        autosurgeon::hydrate(&tx).map_err(|e: HydrateError| SchemaError::Read(e.to_string()))?;
    edit(&mut value);
    autosurgeon::reconcile(&mut tx, &value)?;
    tx.commit();
    Ok(())
}

/// A calendar date written `YYYY-MM-DD`, the only date format in the documents.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(String);

impl Date {
    /// Checks the shape and that the month and day exist (leap years included); years
    /// outside 1900-2999 are refused as typos.
    pub fn parse(s: &str) -> Result<Date, InvalidDate> {
        let invalid = || InvalidDate(shorten(s));
        let bytes = s.as_bytes();
        let shaped = bytes.len() == 10
            && bytes.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shaped {
            return Err(invalid());
        }
        let number = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .unwrap_or_default()
                .iter()
                .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'))
        };
        let (year, month, day) = (number(0..4), number(5..7), number(8..10));
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(invalid()),
        };
        if !(1900..=2999).contains(&year) || day == 0 || day > days_in_month {
            return Err(invalid());
        }
        Ok(Date(s.to_owned()))
    }

    /// The date with these numbers, if it exists.
    pub fn from_ymd(year: u16, month: u8, day: u8) -> Result<Date, InvalidDate> {
        Date::parse(&format!("{year:04}-{month:02}-{day:02}"))
    }

    /// The `YYYY-MM-DD` spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Date {
    type Err = InvalidDate;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s)
    }
}

/// A string that is not a `YYYY-MM-DD` date of a real day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date {0:?}: use YYYY-MM-DD with a real month and day")]
pub struct InvalidDate(pub String);

impl Reconcile for Date {
    type Key<'k> = NoKey;
    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        reconciler.str(self.as_str())
    }
}

impl FromDoc for Date {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        match slot.opt::<String>()? {
            None => Ok(None),
            Some(s) => Date::parse(&s)
                .map(Some)
                .map_err(|e| slot.invalid(e.to_string())),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading: path-aware, lenient about representation, strict about meaning.
// ---------------------------------------------------------------------------------------

/// Where a value sits in a document, for error messages: `plan.goals[2].leefdomein`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root(name: &str) -> Path {
        Path(name.to_owned())
    }

    pub(crate) fn key(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A type read from one value of a document. `Ok(None)` means absent or `null`; the
/// caller decides whether that is an error ([`Slot::req`]) or a default.
pub(crate) trait FromDoc: Sized {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError>;
}

/// A type read from a map of a document.
pub(crate) trait FromMap: Sized {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError>;
}

/// One value in a document: a key of a map or an index of a list, with its path.
pub(crate) struct Slot<'d, D> {
    doc: &'d D,
    obj: ObjId,
    prop: automerge::Prop,
    path: Path,
}

impl<'d, D: ReadDoc> Slot<'d, D> {
    pub(crate) fn new(doc: &'d D, obj: ObjId, prop: automerge::Prop, path: Path) -> Self {
        Slot {
            doc,
            obj,
            prop,
            path,
        }
    }

    /// The value here, with `null` treated as absent.
    fn value(&self) -> Result<Option<(Value<'d>, ObjId)>, SchemaError> {
        let doc: &'d D = self.doc;
        match doc.get(&self.obj, self.prop.clone())? {
            Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => Ok(None),
            other => Ok(other),
        }
    }

    /// The value as a `T`, if present.
    pub(crate) fn opt<T: FromDoc>(&self) -> Result<Option<T>, SchemaError> {
        T::from_doc(self)
    }

    /// The value as a `T`; absence is an error.
    pub(crate) fn req<T: FromDoc>(&self) -> Result<T, SchemaError> {
        self.opt()?.ok_or_else(|| SchemaError::Missing {
            path: self.path.to_string(),
        })
    }

    /// The value as a map, if present.
    pub(crate) fn map(&self) -> Result<Option<MapReader<'d, D>>, SchemaError> {
        match self.value()? {
            None => Ok(None),
            Some((Value::Object(ObjType::Map | ObjType::Table), id)) => {
                Ok(Some(MapReader::new(self.doc, id, self.path.clone())))
            }
            Some((other, _)) => Err(self.wrong_type("a map", &other)),
        }
    }

    pub(crate) fn wrong_type(&self, expected: &'static str, found: &Value<'_>) -> SchemaError {
        SchemaError::WrongType {
            path: self.path.to_string(),
            expected,
            found: describe(found),
        }
    }

    pub(crate) fn invalid(&self, reason: impl Into<String>) -> SchemaError {
        SchemaError::Invalid {
            path: self.path.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unknown_value<'a>(
        &self,
        value: &str,
        allowed: impl IntoIterator<Item = &'a str>,
    ) -> SchemaError {
        SchemaError::UnknownValue {
            path: self.path.to_string(),
            value: shorten(value),
            allowed: allowed.into_iter().collect::<Vec<_>>().join(", "),
        }
    }
}

/// A map of a document, read field by field.
pub(crate) struct MapReader<'d, D> {
    doc: &'d D,
    obj: ObjId,
    path: Path,
}

impl<'d, D: ReadDoc> MapReader<'d, D> {
    pub(crate) fn new(doc: &'d D, obj: ObjId, path: Path) -> Self {
        MapReader { doc, obj, path }
    }

    /// The same map, reporting errors under another path.
    pub(crate) fn with_path(&self, path: Path) -> Self {
        MapReader::new(self.doc, self.obj.clone(), path)
    }

    pub(crate) fn field(&self, key: &str) -> Slot<'d, D> {
        Slot::new(
            self.doc,
            self.obj.clone(),
            automerge::Prop::Map(key.to_owned()),
            self.path.key(key),
        )
    }

    /// A required field.
    pub(crate) fn req<T: FromDoc>(&self, key: &str) -> Result<T, SchemaError> {
        self.field(key).req()
    }

    /// An optional field.
    pub(crate) fn opt<T: FromDoc>(&self, key: &str) -> Result<Option<T>, SchemaError> {
        self.field(key).opt()
    }

    /// A list field; a missing list is an empty one.
    pub(crate) fn list<T: FromDoc>(&self, key: &str) -> Result<Vec<T>, SchemaError> {
        Ok(self.opt::<Vec<T>>(key)?.unwrap_or_default())
    }

    /// Checks items of a list field as [`list`](Self::list) reads them: only those at
    /// `items` (indexes past the end are gone and skipped), or all with `None`.
    pub(crate) fn check_items<T: FromDoc>(
        &self,
        key: &str,
        items: Option<&std::collections::BTreeSet<usize>>,
    ) -> Result<(), SchemaError> {
        let Some(items) = items else {
            self.list::<T>(key)?;
            return Ok(());
        };
        let slot = self.field(key);
        let list = match slot.value()? {
            None => return Ok(()),
            Some((Value::Object(ObjType::List), id)) => id,
            Some((other, _)) => return Err(slot.wrong_type("a list", &other)),
        };
        let len = self.doc.length(&list);
        for &index in items.iter().filter(|&&i| i < len) {
            Slot::new(
                self.doc,
                list.clone(),
                automerge::Prop::Seq(index),
                slot.path.index(index),
            )
            .req::<T>()?;
        }
        Ok(())
    }

    /// A required string that must not be empty: identifiers, names, titles.
    pub(crate) fn non_empty(&self, key: &str) -> Result<String, SchemaError> {
        let slot = self.field(key);
        let value: String = slot.req()?;
        if value.trim().is_empty() {
            return Err(slot.invalid("must not be empty"));
        }
        Ok(value)
    }
}

/// How a value is named in an error message.
fn describe(value: &Value<'_>) -> &'static str {
    match value {
        Value::Object(ObjType::Map | ObjType::Table) => "a map",
        Value::Object(ObjType::List) => "a list",
        Value::Object(ObjType::Text) => "text",
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(_) => "a string",
            ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::F64(_) => "a number",
            ScalarValue::Boolean(_) => "a boolean",
            ScalarValue::Null => "null",
            ScalarValue::Bytes(_) => "bytes",
            ScalarValue::Counter(_) => "a counter",
            ScalarValue::Timestamp(_) => "a timestamp",
            ScalarValue::Unknown { .. } => "a value of an unknown type",
        },
    }
}

/// Quotes of client data in error messages stay short.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", s.get(..end).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// Any string: a scalar string or a text object (automerge-js 3 writes text by default).
impl FromDoc for String {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        match slot.value()? {
            None => Ok(None),
            Some((Value::Object(ObjType::Text), id)) => Ok(Some(slot.doc.text(&id)?)),
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(Some(s.to_string())),
                _ => Err(slot.wrong_type("a string", &Value::Scalar(s))),
            },
            Some((other, _)) => Err(slot.wrong_type("a string", &other)),
        }
    }
}

/// Collaborative text; a scalar string is accepted and becomes text when next written.
impl FromDoc for Text {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        match slot.value()? {
            None => Ok(None),
            Some((Value::Object(ObjType::Text), id)) => {
                <Text as autosurgeon::Hydrate>::hydrate_text(slot.doc, &id)
                    .map(Some)
                    .map_err(|e| SchemaError::from_hydrate(&slot.path, e))
            }
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(Some(Text::with_value(s.as_str()))),
                _ => Err(slot.wrong_type("text or a string", &Value::Scalar(s))),
            },
            Some((other, _)) => Err(slot.wrong_type("text or a string", &other)),
        }
    }
}

impl FromDoc for bool {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        match slot.value()? {
            None => Ok(None),
            Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Boolean(_)) => {
                Ok(Some(matches!(s.as_ref(), ScalarValue::Boolean(true))))
            }
            Some((other, _)) => Err(slot.wrong_type("a boolean", &other)),
        }
    }
}

/// Every integer in these documents is a count or a version: whole and not negative. A
/// float is accepted when it is whole, because JavaScript has only one number type.
impl FromDoc for u64 {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        let value = match slot.value()? {
            None => return Ok(None),
            Some((Value::Scalar(s), _)) => s.into_owned(),
            Some((other, _)) => return Err(slot.wrong_type("a whole number", &other)),
        };
        match value {
            ScalarValue::Uint(u) => Ok(Some(u)),
            ScalarValue::Int(i) => u64::try_from(i)
                .map(Some)
                .map_err(|_| slot.invalid(format!("must not be negative (found {i})"))),
            ScalarValue::F64(f) if f.is_finite() && f < 0.0 => {
                Err(slot.invalid(format!("must not be negative (found {f})")))
            }
            // 2^53: beyond it a float no longer holds every whole number.
            ScalarValue::F64(f)
                if f.is_finite() && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0 =>
            {
                Ok(Some(f as u64))
            }
            ScalarValue::F64(f) => Err(slot.invalid(format!("must be a whole number (found {f})"))),
            other => Err(slot.wrong_type("a whole number", &Value::Scalar(Cow::Owned(other)))),
        }
    }
}

/// Every fractional number in these documents is an amount (hours): finite and not
/// negative. Integers are accepted as they are what JavaScript writes for whole amounts.
impl FromDoc for f64 {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        let value = match slot.value()? {
            None => return Ok(None),
            Some((Value::Scalar(s), _)) => s.into_owned(),
            Some((other, _)) => return Err(slot.wrong_type("a number", &other)),
        };
        let number = match value {
            ScalarValue::Uint(u) => u as f64,
            ScalarValue::Int(i) => i as f64,
            ScalarValue::F64(f) if f.is_finite() => f,
            ScalarValue::F64(f) => {
                return Err(slot.invalid(format!("must be a finite number (found {f})")))
            }
            other => return Err(slot.wrong_type("a number", &Value::Scalar(Cow::Owned(other)))),
        };
        if number < 0.0 {
            return Err(slot.invalid(format!("must not be negative (found {number})")));
        }
        Ok(Some(number))
    }
}

/// A list whose every item must be present and valid.
impl<T: FromDoc> FromDoc for Vec<T> {
    fn from_doc<D: ReadDoc>(slot: &Slot<'_, D>) -> Result<Option<Self>, SchemaError> {
        let list = match slot.value()? {
            None => return Ok(None),
            Some((Value::Object(ObjType::List), id)) => id,
            Some((other, _)) => return Err(slot.wrong_type("a list", &other)),
        };
        let len = slot.doc.length(&list);
        let mut items = Vec::with_capacity(len);
        for index in 0..len {
            let item = Slot::new(
                slot.doc,
                list.clone(),
                automerge::Prop::Seq(index),
                slot.path.index(index),
            );
            items.push(item.req()?);
        }
        Ok(Some(items))
    }
}

/// Implements autosurgeon's `Hydrate` for a schema type on top of [`FromDoc`], so
/// `autosurgeon::hydrate` gives the same answers (and refusals) as [`validate`]. With
/// `map`, also implements [`FromDoc`] for a [`FromMap`] type and hydration from the root.
macro_rules! hydrate_with_schema {
    ($ty:ty, $name:literal) => {
        impl ::autosurgeon::Hydrate for $ty {
            fn hydrate<D: ::autosurgeon::ReadDoc>(
                doc: &D,
                obj: &::automerge::ObjId,
                prop: ::autosurgeon::Prop<'_>,
            ) -> ::std::result::Result<Self, ::autosurgeon::HydrateError> {
                $crate::schema::Slot::new(
                    doc,
                    obj.clone(),
                    ::automerge::Prop::from(&prop),
                    $crate::schema::Path::root($name),
                )
                .req::<Self>()
                .map_err($crate::schema::SchemaError::into_hydrate_error)
            }
        }
    };
    ($ty:ty, $name:literal, map) => {
        impl ::autosurgeon::Hydrate for $ty {
            fn hydrate<D: ::autosurgeon::ReadDoc>(
                doc: &D,
                obj: &::automerge::ObjId,
                prop: ::autosurgeon::Prop<'_>,
            ) -> ::std::result::Result<Self, ::autosurgeon::HydrateError> {
                $crate::schema::Slot::new(
                    doc,
                    obj.clone(),
                    ::automerge::Prop::from(&prop),
                    $crate::schema::Path::root($name),
                )
                .req::<Self>()
                .map_err($crate::schema::SchemaError::into_hydrate_error)
            }

            fn hydrate_map<D: ::autosurgeon::ReadDoc>(
                doc: &D,
                obj: &::automerge::ObjId,
            ) -> ::std::result::Result<Self, ::autosurgeon::HydrateError> {
                let map = $crate::schema::MapReader::new(
                    doc,
                    obj.clone(),
                    $crate::schema::Path::root($name),
                );
                <Self as $crate::schema::FromMap>::from_map(&map)
                    .map_err($crate::schema::SchemaError::into_hydrate_error)
            }
        }

        impl $crate::schema::FromDoc for $ty {
            fn from_doc<D: ::autosurgeon::ReadDoc>(
                slot: &$crate::schema::Slot<'_, D>,
            ) -> ::std::result::Result<::std::option::Option<Self>, $crate::schema::SchemaError>
            {
                match slot.map()? {
                    ::std::option::Option::Some(map) => {
                        <Self as $crate::schema::FromMap>::from_map(&map).map(Some)
                    }
                    ::std::option::Option::None => ::std::result::Result::Ok(None),
                }
            }
        }
    };
}
pub(crate) use hydrate_with_schema;

hydrate_with_schema!(Date, "date");

/// Declares an enum stored as one of a closed set of strings, with its reading (unknown
/// strings are refused with the allowed list), writing and `Hydrate`.
macro_rules! schema_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $label:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order of the document contract.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling stored in the document.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value spelled `s`, if there is one.
            pub fn from_name(s: &str) -> ::std::option::Option<Self> {
                match s {
                    $($text => ::std::option::Option::Some($name::$variant),)+
                    _ => ::std::option::Option::None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::autosurgeon::Reconcile for $name {
            type Key<'k> = ::autosurgeon::reconcile::NoKey;
            fn reconcile<R: ::autosurgeon::Reconciler>(
                &self,
                mut reconciler: R,
            ) -> ::std::result::Result<(), R::Error> {
                ::autosurgeon::Reconciler::str(&mut reconciler, self.as_str())
            }
        }

        impl $crate::schema::FromDoc for $name {
            fn from_doc<D: ::autosurgeon::ReadDoc>(
                slot: &$crate::schema::Slot<'_, D>,
            ) -> ::std::result::Result<::std::option::Option<Self>, $crate::schema::SchemaError>
            {
                let ::std::option::Option::Some(s) = slot.opt::<::std::string::String>()? else {
                    return ::std::result::Result::Ok(::std::option::Option::None);
                };
                match Self::from_name(&s) {
                    ::std::option::Option::Some(v) => ::std::result::Result::Ok(Some(v)),
                    ::std::option::Option::None => ::std::result::Result::Err(
                        slot.unknown_value(&s, Self::ALL.iter().map(|v| v.as_str())),
                    ),
                }
            }
        }

        $crate::schema::hydrate_with_schema!($name, $label);
    };
}
pub(crate) use schema_enum;

// ---------------------------------------------------------------------------------------
// Writing: small helpers so each struct's `Reconcile` stays a list of its fields.
// ---------------------------------------------------------------------------------------

/// Writes a string, keeping a text object a text object (editing it only if the content
/// differs) so that strings written by automerge-js stay as the client wrote them.
pub(crate) fn put_str<M: MapReconciler>(
    map: &mut M,
    key: &str,
    value: &str,
) -> Result<(), M::Error> {
    if matches!(map.entry(key), Some(Value::Object(ObjType::Text))) {
        map.put(key, KeepText(value))
    } else {
        map.put(key, value)
    }
}

/// Writes an optional string; `None` removes the key.
pub(crate) fn put_opt_str<M: MapReconciler>(
    map: &mut M,
    key: &str,
    value: Option<&str>,
) -> Result<(), M::Error> {
    match value {
        Some(value) => put_str(map, key, value),
        None => delete_key(map, key),
    }
}

/// Writes an optional value; `None` removes the key rather than writing `null`.
pub(crate) fn put_opt<M: MapReconciler, T: Reconcile>(
    map: &mut M,
    key: &str,
    value: Option<&T>,
) -> Result<(), M::Error> {
    match value {
        Some(value) => map.put(key, value),
        None => delete_key(map, key),
    }
}

fn delete_key<M: MapReconciler>(map: &mut M, key: &str) -> Result<(), M::Error> {
    if map.entry(key).is_some() {
        map.delete(key)?;
    }
    Ok(())
}

/// Writes a count, unless the document already holds the same number (perhaps as an int
/// or a float written by JavaScript). Written as a signed int, as JavaScript writes
/// integers: automerge-js hands an unsigned int to apps as a BigInt, which breaks
/// ordinary JS code (JSON.stringify, arithmetic with numbers).
pub(crate) fn put_u64<M: MapReconciler>(
    map: &mut M,
    key: &str,
    value: u64,
) -> Result<(), M::Error> {
    let same = match map.entry(key) {
        Some(Value::Scalar(s)) => match s.as_ref() {
            ScalarValue::Uint(u) => *u == value,
            ScalarValue::Int(i) => u64::try_from(*i) == Ok(value),
            ScalarValue::F64(f) => f.fract() == 0.0 && *f == value as f64,
            _ => false,
        },
        _ => false,
    };
    if same {
        return Ok(());
    }
    match i64::try_from(value) {
        Ok(signed) => map.put(key, signed),
        Err(_) => map.put(key, value),
    }
}

/// Writes an amount, unless the document already holds the same number.
pub(crate) fn put_f64<M: MapReconciler>(
    map: &mut M,
    key: &str,
    value: f64,
) -> Result<(), M::Error> {
    let same = match map.entry(key) {
        Some(Value::Scalar(s)) => match s.as_ref() {
            ScalarValue::F64(f) => *f == value,
            ScalarValue::Int(i) => *i as f64 == value,
            ScalarValue::Uint(u) => *u as f64 == value,
            _ => false,
        },
        _ => false,
    };
    if same {
        return Ok(());
    }
    map.put(key, value)
}

/// Reconciles into an existing text object by diffing, for [`put_str`].
struct KeepText<'a>(&'a str);

impl Reconcile for KeepText<'_> {
    type Key<'k> = ();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        reconciler.text()?.update(self.0)
    }

    // Claiming the same key as any text object makes autosurgeon reuse that object
    // instead of replacing it.
    fn hydrate_key<'k, D: ReadDoc>(
        doc: &D,
        obj: &ObjId,
        prop: autosurgeon::Prop<'_>,
    ) -> Result<LoadKey<Self::Key<'k>>, ReconcileError> {
        Ok(match doc.get(obj, &prop)? {
            Some((Value::Object(ObjType::Text), _)) => LoadKey::Found(()),
            _ => LoadKey::KeyNotFound,
        })
    }

    fn key(&self) -> LoadKey<()> {
        LoadKey::Found(())
    }
}

/// A list of plain strings (names). Left untouched when the document already holds the
/// same strings, scalar or text; otherwise diffed item by item.
pub(crate) struct StrList<'a>(pub(crate) &'a [String]);

impl Reconcile for StrList<'_> {
    type Key<'k> = NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        {
            let seq = reconciler.seq()?;
            let mut unchanged = seq.len()? == self.0.len();
            for (index, value) in self.0.iter().enumerate() {
                if !unchanged {
                    break;
                }
                unchanged = matches!(
                    seq.hydrate_item_key::<StrItem<'_>>(index)?,
                    LoadKey::Found(found) if found == value.as_str()
                );
            }
            if unchanged {
                return Ok(());
            }
        }
        let items: Vec<StrItem<'_>> = self.0.iter().map(|s| StrItem(s)).collect();
        items.reconcile(reconciler)
    }
}

/// One item of a [`StrList`], keyed by its content whether scalar or text.
struct StrItem<'a>(&'a str);

impl Reconcile for StrItem<'_> {
    type Key<'k> = Cow<'k, str>;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        reconciler.str(self.0)
    }

    fn hydrate_key<'k, D: ReadDoc>(
        doc: &D,
        obj: &ObjId,
        prop: autosurgeon::Prop<'_>,
    ) -> Result<LoadKey<Cow<'k, str>>, ReconcileError> {
        Ok(match read_any_str(doc, doc.get(obj, &prop)?)? {
            Some(s) => LoadKey::Found(Cow::Owned(s)),
            None => LoadKey::KeyNotFound,
        })
    }

    fn key(&self) -> LoadKey<Cow<'_, str>> {
        LoadKey::Found(Cow::Borrowed(self.0))
    }
}

/// The string in a value, if it is a scalar string or a text object.
fn read_any_str<D: ReadDoc>(
    doc: &D,
    value: Option<(Value<'_>, ObjId)>,
) -> Result<Option<String>, automerge::AutomergeError> {
    Ok(match value {
        Some((Value::Object(ObjType::Text), id)) => Some(doc.text(&id)?),
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// The reconcile key of a list item: its `id`, whether a scalar or a text object.
pub(crate) fn hydrate_id_key<'k, D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    prop: autosurgeon::Prop<'_>,
) -> Result<LoadKey<Cow<'k, str>>, ReconcileError> {
    let Some((Value::Object(ObjType::Map | ObjType::Table), item)) = doc.get(obj, &prop)? else {
        return Ok(LoadKey::KeyNotFound);
    };
    Ok(match read_any_str(doc, doc.get(&item, "id")?)? {
        Some(id) => LoadKey::Found(Cow::Owned(id)),
        None => LoadKey::KeyNotFound,
    })
}

/// The `Reconcile` key items of a list: their `id` field. Use inside `impl Reconcile`.
macro_rules! keyed_by_id {
    () => {
        type Key<'k> = ::std::borrow::Cow<'k, str>;

        fn hydrate_key<'k, D: ::autosurgeon::ReadDoc>(
            doc: &D,
            obj: &::automerge::ObjId,
            prop: ::autosurgeon::Prop<'_>,
        ) -> ::std::result::Result<
            ::autosurgeon::reconcile::LoadKey<::std::borrow::Cow<'k, str>>,
            ::autosurgeon::ReconcileError,
        > {
            $crate::schema::hydrate_id_key(doc, obj, prop)
        }

        fn key(&self) -> ::autosurgeon::reconcile::LoadKey<::std::borrow::Cow<'_, str>> {
            ::autosurgeon::reconcile::LoadKey::Found(::std::borrow::Cow::Borrowed(self.id.as_str()))
        }
    };
}
pub(crate) use keyed_by_id;

/// A fresh identifier for a list item.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

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
    use automerge::{AutomergeError, ROOT};

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

    /// Quoted client data in error messages is cut short.
    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(500);
        let doc = raw_doc(|tx| meta(tx, &long, "assen-noord"));
        let message = validate(&doc).expect_err("unknown kind").to_string();
        assert!(message.len() < 200, "{message}");
    }
}
