//! Reading documents: path-aware, lenient about representation, strict about meaning
//! (`FromDoc`, `FromMap`, `MapReader`, and the macros that hydrate schema types).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

use automerge::{ObjId, ObjType, ScalarValue, Value};
use autosurgeon::{ReadDoc, Text};

use super::*;

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

/// Every key of one map with the value that shows there (the winner of any conflict),
/// as `ReadDoc::get` of each key gives it: read at once by [`Slot::map_whole`].
type Keys = HashMap<String, (Value<'static>, ObjId)>;

/// One value in a document: a key of a map or an index of a list, with its path.
pub(crate) struct Slot<'d, D> {
    doc: &'d D,
    obj: ObjId,
    prop: automerge::Prop,
    path: Path,
    /// `obj`'s keys, when its map was read whole: the value is looked up here.
    keys: Option<Rc<Keys>>,
}

impl<'d, D: ReadDoc> Slot<'d, D> {
    pub(crate) fn new(doc: &'d D, obj: ObjId, prop: automerge::Prop, path: Path) -> Self {
        Slot {
            doc,
            obj,
            prop,
            path,
            keys: None,
        }
    }

    /// The value here, with `null` treated as absent.
    fn value(&self) -> Result<Option<(Value<'d>, ObjId)>, SchemaError> {
        let value = match (&self.keys, &self.prop) {
            (Some(keys), automerge::Prop::Map(key)) => keys.get(key).cloned(),
            _ => self.doc.get(&self.obj, self.prop.clone())?,
        };
        match value {
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
        self.opt()?.ok_or_else(|| self.missing())
    }

    fn missing(&self) -> SchemaError {
        SchemaError::Missing {
            path: self.path.to_string(),
        }
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

    /// [`Self::map`] for a reader that reads every key (a type's `from_map`): its keys
    /// are read at once, in one walk over the map's ops (`map_range`), where each
    /// key's `get` would look up the object and seek its key in the op set again
    /// (automerge 0.12; most of validating a new list item).
    pub(crate) fn map_whole(&self) -> Result<Option<MapReader<'d, D>>, SchemaError> {
        let Some(mut map) = self.map()? else {
            return Ok(None);
        };
        let keys: Keys = self
            .doc
            .map_range(&map.obj, ..)
            .map(|item| {
                let id = item.id();
                (item.key.into_owned(), (item.value.into_value(), id))
            })
            .collect();
        map.keys = Some(Rc::new(keys));
        Ok(Some(map))
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

/// What [`super::validate_changes`] reads again of one list item its changes wrote to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ItemReads {
    /// All of it: the changes made the item (a new item is read whole), wrote to it
    /// where no key of its map says what (its elements, when it is text or a list),
    /// or its type is read whole anyway ([`ItemCheck`]).
    Whole,
    /// These keys of its map: the keys the changes wrote (a value, an object, a
    /// delete) and the keys under which they wrote deeper (into a text or a list the
    /// item holds). The rest of the item is as valid as it was.
    Keys(BTreeSet<String>),
}

impl ItemReads {
    /// Nothing yet; [`Self::add`] adds keys.
    pub(crate) fn none() -> ItemReads {
        ItemReads::Keys(BTreeSet::new())
    }

    /// Reads `key` of the item too.
    pub(crate) fn add(&mut self, key: &str) {
        if let ItemReads::Keys(keys) = self {
            if !keys.contains(key) {
                keys.insert(key.to_owned());
            }
        }
    }
}

/// The items of a list field to read again, by index, and what of each.
pub(crate) type Items = BTreeMap<usize, ItemReads>;

/// A list item type as [`MapReader::check_items`] checks it. By default the item is
/// read whole, as [`FromDoc`] reads it, whatever its [`ItemReads`] say.
pub(crate) trait ItemCheck: FromDoc {
    /// Checks the item at `slot`, reading what `reads` says where the type allows.
    fn check_item<D: ReadDoc>(slot: &Slot<'_, D>, _reads: &ItemReads) -> Result<(), SchemaError> {
        slot.req::<Self>().map(drop)
    }
}

/// A list item type (a map) whose keys can be checked one at a time, each exactly as
/// its `from_map` reads it, so an edit of one field of an existing item reads that
/// field only (automerge 0.12 spends microseconds on each key).
///
/// Only for a type none of whose rules spans two keys: that is what makes the keys
/// nobody wrote as valid as they were. A type with such a rule (a score range that
/// depends on the domain, a date that must follow another) implements [`ItemCheck`]
/// alone, and is read whole. Keep `check_key` in step with `from_map`
/// (`tests/validate_changes.rs` checks every key a full item holds is known).
pub(crate) trait KeyCheck: FromMap + FromDoc {
    /// Checks `key` of the item's map as `from_map` reads it. Returns whether the type
    /// reads that key; others are ignored, as `from_map` ignores them.
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError>;
}

impl<T: KeyCheck> ItemCheck for T {
    fn check_item<D: ReadDoc>(slot: &Slot<'_, D>, reads: &ItemReads) -> Result<(), SchemaError> {
        let ItemReads::Keys(keys) = reads else {
            return slot.req::<Self>().map(drop);
        };
        // As `req` reads the item: absent or null is missing, anything but a map is
        // of the wrong type.
        let map = slot.map()?.ok_or_else(|| slot.missing())?;
        for key in keys {
            T::check_key(&map, key)?;
        }
        Ok(())
    }
}

/// Names in a list (organisers, volunteers): a string or text, read whole.
impl ItemCheck for String {}

/// A map of a document, read field by field.
pub(crate) struct MapReader<'d, D> {
    doc: &'d D,
    obj: ObjId,
    path: Path,
    /// Its keys, read at once ([`Slot::map_whole`]); `None`: each is read when asked.
    keys: Option<Rc<Keys>>,
}

impl<'d, D: ReadDoc> MapReader<'d, D> {
    pub(crate) fn new(doc: &'d D, obj: ObjId, path: Path) -> Self {
        MapReader {
            doc,
            obj,
            path,
            keys: None,
        }
    }

    /// The same map, reporting errors under another path.
    pub(crate) fn with_path(&self, path: Path) -> Self {
        MapReader {
            doc: self.doc,
            obj: self.obj.clone(),
            path,
            keys: self.keys.clone(),
        }
    }

    pub(crate) fn field(&self, key: &str) -> Slot<'d, D> {
        Slot {
            keys: self.keys.clone(),
            ..Slot::new(
                self.doc,
                self.obj.clone(),
                automerge::Prop::Map(key.to_owned()),
                self.path.key(key),
            )
        }
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
    /// the indexes of `items` (past the end: gone, skipped), each as far as its
    /// [`ItemReads`] says; or all of them, whole, with `None`.
    pub(crate) fn check_items<T: ItemCheck>(
        &self,
        key: &str,
        items: Option<&Items>,
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
        for (&index, reads) in items.range(..len) {
            let item = Slot::new(
                self.doc,
                list.clone(),
                automerge::Prop::Seq(index),
                slot.path.index(index),
            );
            T::check_item(&item, reads)?;
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
pub(super) fn shorten(s: &str) -> String {
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
                match slot.map_whole()? {
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
