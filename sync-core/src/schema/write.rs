//! Writing documents: [`new_document`], [`current_state_only`] and [`update`], and the
//! small `Reconcile` helpers that keep each struct's `Reconcile` a list of its fields.

use std::borrow::Cow;

use automerge::{Automerge, ObjId, ObjType, ScalarValue, Value};
use autosurgeon::reconcile::{LoadKey, MapReconciler, NoKey, SeqReconciler, TextReconciler};
use autosurgeon::{HydrateError, ReadDoc, Reconcile, ReconcileError, Reconciler};

use super::*;

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

/// A new document holding `doc`'s current state and none of its history: what was
/// deleted or overwritten before (a contact note, an earlier goal) cannot be read from
/// it at any of its heads. One change, by a fresh actor; validated like `new_document`.
/// Used where a document's content goes to a new audience (a wijk move).
pub fn current_state_only(doc: &Automerge) -> Result<Automerge, SchemaError> {
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    fn copy(
        doc: &Automerge,
        from: &ObjId,
        kind: ObjType,
        tx: &mut automerge::transaction::Transaction<'_>,
        to: &ObjId,
    ) -> Result<(), automerge::AutomergeError> {
        match kind {
            ObjType::Text => {
                let text = automerge::ReadDoc::text(doc, from)?;
                tx.splice_text(to, 0, 0, &text)?;
            }
            ObjType::List => {
                for i in 0..automerge::ReadDoc::length(doc, from) {
                    match automerge::ReadDoc::get(doc, from, i)? {
                        Some((Value::Object(kind), id)) => {
                            let child = tx.insert_object(to, i, kind)?;
                            copy(doc, &id, kind, tx, &child)?;
                        }
                        Some((Value::Scalar(v), _)) => tx.insert(to, i, v.into_owned())?,
                        None => {}
                    }
                }
            }
            ObjType::Map | ObjType::Table => {
                for key in automerge::ReadDoc::keys(doc, from) {
                    match automerge::ReadDoc::get(doc, from, key.as_str())? {
                        Some((Value::Object(kind), id)) => {
                            let child = tx.put_object(to, key.as_str(), kind)?;
                            copy(doc, &id, kind, tx, &child)?;
                        }
                        Some((Value::Scalar(v), _)) => tx.put(to, key.as_str(), v.into_owned())?,
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }

    let mut out = Automerge::new();
    let mut tx = out.transaction();
    copy(doc, &ROOT, ObjType::Map, &mut tx, &ROOT)
        .map_err(|e| SchemaError::Write(format!("copying the current state: {e}")))?;
    tx.commit();
    validate(&out)?;
    Ok(out)
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
