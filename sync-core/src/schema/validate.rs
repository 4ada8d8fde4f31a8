//! The checks: [`validate`] (a whole document, the check every document passes) and
//! [`validate_changes`] (only what new changes touched, the relay's per-change check).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{Automerge, Change, ChangeHash, ObjId, ObjType, PatchAction, Prop, Value};
use autosurgeon::ReadDoc;

use super::*;
use crate::partition::DocumentKind;

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
/// which items and what of each (`None`: the whole field).
type Touched = BTreeMap<String, Option<Items>>;

/// Checks a document after changes were applied to it, reading only what those changes
/// touched: each top-level field a change wrote to, as the type `kind` names; of a list
/// field (goals, contacts, sessions, ...) only the items written to, and of an item
/// that existed before only the keys written to (a new item is read whole).
///
/// `before` are heads at which the document was valid (the relay commits nothing
/// else), and `changes` every change the document has beyond them: what
/// `doc.get_changes(before)` gives, which the relay takes from the received message
/// (`engine::Applied::new_changes`) rather than have automerge encode them again.
/// `kind` is the document's `meta.kind` at `before` (the relay's: its partition's,
/// which `meta` was checked against at every commit); changes that write to `meta`
/// have the whole document read, `meta` first. A
/// schema has no rule across fields or list items, and no item type checked by key has
/// one across its keys ([`KeyCheck`]), so a part no change touched is as valid as it
/// was. Reading a whole plan costs milliseconds in automerge 0.12 (a map lookup is
/// microseconds), which made validation nearly all of a relayed change's CPU; this
/// makes it proportional to the change. Where the touched parts cannot be told it reads
/// more: a whole field (a scalar put straight into a list), a whole item (written to
/// other than by a key of its map), or the whole document ([`validate`]: an object no
/// longer in the document, `meta` changed), so it never accepts what [`validate`]
/// would refuse.
pub fn validate_changes(
    doc: &Automerge,
    before: &[ChangeHash],
    changes: &[Change],
    kind: DocumentKind,
) -> Result<Checked, SchemaError> {
    let whole = |doc| {
        validate(doc).map(|meta| Checked {
            meta: Some(meta),
            fields: None,
        })
    };
    if before.is_empty() {
        return whole(doc);
    }
    // A changed `meta` may change the kind, and with it what every field must be.
    let Some(touched) = touched(doc, before, changes).filter(|t| !t.contains_key("meta")) else {
        return whole(doc);
    };
    let root = MapReader::new(doc, automerge::ROOT, Path::root(kind.as_str()));
    for (key, items) in &touched {
        match kind {
            DocumentKind::Plan => Plan::check_field(&root, key, items.as_ref())?,
            DocumentKind::Activiteit => Activiteit::check_field(&root, key, items.as_ref())?,
        };
    }
    Ok(Checked {
        meta: None,
        fields: Some(touched.into_keys().collect()),
    })
}

/// What [`validate_changes`] found valid: the document's `meta` when it was read, and
/// which top-level fields the changes wrote to, so a caller that derives something from
/// a field (the relay's hand-over flag) reads it again only when it may have moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Read with the whole document (see `fields`); `None` when the changes did not
    /// write to `meta`, which is then as it was at `before`.
    pub meta: Option<Meta>,
    /// The top-level fields the changes wrote to, at any depth; `None` when the whole
    /// document was read instead (the first changes, `meta` changed, or what they
    /// touched could not be told), so any field may have moved.
    pub fields: Option<BTreeSet<String>>,
}

impl Checked {
    /// May the changes have moved top-level `field`? Yes unless they are known to have
    /// written nothing to it.
    pub fn may_have_changed(&self, field: &str) -> bool {
        self.fields
            .as_ref()
            .is_none_or(|fields| fields.contains(field))
    }
}

/// What one op makes [`validate_changes`] read again, within its top-level field.
enum Read {
    /// The whole field.
    Field,
    /// The item at this index of a list field, whole.
    Item(usize),
    /// This key of the item at this index of a list field.
    Key(usize, String),
}

/// The top-level fields, list items and keys of items `changes` (all the document has
/// since `before`) wrote to; `None` if that cannot be told cheaply and exactly.
fn touched(doc: &Automerge, before: &[ChangeHash], changes: &[Change]) -> Option<Touched> {
    use automerge::legacy::{ElementId, Key, ObjectId, OpType};
    let mut touched = Touched::new();
    // List fields where an element lost a value: another one may show now.
    let mut revealing: HashMap<ObjId, String> = HashMap::new();
    // Paths of objects already looked up: a change writes many keys of one object.
    let mut paths: HashMap<ObjId, Option<Vec<(ObjId, Prop)>>> = HashMap::new();
    let mut path_of = |obj: ObjId| -> Option<Option<Vec<(ObjId, Prop)>>> {
        if let Some(p) = paths.get(&obj) {
            return Some(p.clone());
        }
        // Not visible any more (deleted, or lost a conflict): nothing of it can be read,
        // so nothing of it needs checking. An object automerge does not know: unclear.
        let path = doc.parents(&obj).ok()?.visible_path();
        paths.insert(obj, path.clone());
        Some(path)
    };
    for change in changes {
        let expanded = change.decode();
        for (n, op) in expanded.operations.iter().enumerate() {
            let parent = match &op.obj {
                ObjectId::Root => {
                    let Key::Map(key) = &op.key else {
                        return None;
                    };
                    touched.insert(key.to_string(), None);
                    continue;
                }
                ObjectId::Id(id) => object(id.counter(), id.actor()),
            };
            let Some(path) = path_of(parent.clone())? else {
                continue;
            };
            let Some((_, Prop::Map(field))) = path.first() else {
                return None;
            };
            let read = match (path.get(1), path.get(2)) {
                // The item itself: the key of its map that the op writes (a value, an
                // object, a delete). An op on an element (of an item that is text or
                // a list) has no key: the whole item.
                (Some((_, Prop::Seq(i))), None) => match &op.key {
                    Key::Map(key) => Read::Key(*i, key.to_string()),
                    Key::Seq(_) => Read::Item(*i),
                },
                // Deeper inside an item (the text of a description, a session's list
                // of signals): the key of the item it hangs under, read whole.
                (Some((_, Prop::Seq(i))), Some((_, Prop::Map(key)))) => Read::Key(*i, key.clone()),
                (Some((_, Prop::Seq(i))), Some((_, Prop::Seq(_)))) => Read::Item(*i),
                // Straight into a list field: removing items breaks nothing; a new
                // object is found by its own id (the op's), anything else is checked
                // with the whole field. A delete or a new value of an existing item
                // may leave another value of it visible (a concurrent one that lost
                // before, when the change names only the winner among what it
                // replaces): what shows there now is read, below.
                (None, _) => match (&op.action, &op.key) {
                    (OpType::Delete | OpType::Make(_), Key::Seq(ElementId::Id(_)))
                        if automerge::ReadDoc::object_type(doc, &parent).ok()? == ObjType::List =>
                    {
                        let made = match &op.action {
                            OpType::Make(_) => {
                                let own = expanded.start_op.get() + n as u64;
                                path_of(object(own, change.actor_id()))?
                            }
                            _ => None,
                        };
                        match made {
                            Some(p) => match p.get(1) {
                                Some((_, Prop::Seq(i))) => Read::Item(*i),
                                _ => Read::Field,
                            },
                            // An inserted element has no other value.
                            None if op.insert => continue,
                            None => {
                                revealing.insert(parent, field.clone());
                                continue;
                            }
                        }
                    }
                    // Anything else: the whole field. A text field (title) too:
                    // deleted characters may leave it empty.
                    _ => Read::Field,
                },
                // A map field (household, handover, ...): read it whole; they are small.
                (Some((_, Prop::Map(_))), _) => Read::Field,
            };
            note(&mut touched, field, read);
        }
    }
    // What an element shows that it did not show before: automerge's diff of the list
    // between the heads (rare: deletes and replaced items), whose values' paths say
    // where they are now. A scalar: the whole field.
    if !revealing.is_empty() {
        let heads = doc.get_heads();
        for (list, field) in revealing {
            for patch in doc.diff_obj(&list, before, &heads, false).ok()? {
                // The contents of a value shown (read with it, whole) come as patches
                // of their own.
                if patch.obj != list {
                    continue;
                }
                let shown: Vec<(Value<'_>, ObjId)> = match patch.action {
                    PatchAction::DeleteSeq { .. } => continue,
                    PatchAction::PutSeq { value, .. } => vec![value],
                    PatchAction::Insert { values, .. } => values
                        .iter()
                        .map(|(v, id, _)| (v.clone(), id.clone()))
                        .collect(),
                    _ => {
                        note(&mut touched, &field, Read::Field);
                        continue;
                    }
                };
                for (value, id) in shown {
                    let read = match value {
                        Value::Object(_) => match path_of(id)? {
                            None => continue,
                            Some(p) => match (p.get(1), p.get(2)) {
                                (Some((_, Prop::Seq(i))), None) => Read::Item(*i),
                                _ => Read::Field,
                            },
                        },
                        Value::Scalar(_) => Read::Field,
                    };
                    note(&mut touched, &field, read);
                }
            }
        }
    }
    Some(touched)
}

/// Adds what one op makes [`validate_changes`] read of top-level `field`.
fn note(touched: &mut Touched, field: &str, read: Read) {
    let entry = touched
        .entry(field.to_owned())
        .or_insert_with(|| Some(Items::new()));
    match (entry.as_mut(), read) {
        (None, _) => {}
        (Some(_), Read::Field) => *entry = None,
        (Some(items), Read::Item(i)) => {
            items.insert(i, ItemReads::Whole);
        }
        (Some(items), Read::Key(i, key)) => {
            items.entry(i).or_insert_with(ItemReads::none).add(&key)
        }
    }
}

/// The object made by op `counter@actor`, without spelling it out as text for
/// `Automerge::import`. The actor's index in the document is a hint automerge checks
/// (and looks the actor up when it is wrong), so 0 will do.
fn object(counter: u64, actor: &automerge::ActorId) -> ObjId {
    ObjId::Id(counter, actor.clone(), 0)
}
