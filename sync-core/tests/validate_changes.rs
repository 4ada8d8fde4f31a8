//! `schema::validate_changes` (what the relay checks per change) against
//! `schema::validate` (the whole document): every change `validate` refuses is refused,
//! valid changes pass, every schema field is known to it, and it really reads only
//! what changed.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ScalarValue, ROOT};
use sync_core::partition::WijkId;
use sync_core::schema::{
    self, Action, ActionWho, Activiteit, Consent, ContactKind, ContactMoment, Date, Goal,
    GoalStatus, LadderMeasurement, Leefdomein, Moment, Plan, PlanStatus, PositiveHealth, Session,
    StatusChange, ZrmDomein, ZrmMeasurement,
};

/// The relay's check of what `doc` gained since `before`; the kind is the document's
/// at `before`, as the relay's is its partition's (it was valid then).
fn checked_since(
    doc: &Automerge,
    before: &[automerge::ChangeHash],
) -> Result<schema::Checked, schema::SchemaError> {
    let kind = doc
        .fork_at(before)
        .ok()
        .and_then(|at| schema::meta::read_meta(&at).ok())
        .map_or(sync_core::partition::DocumentKind::Plan, |meta| meta.kind);
    schema::validate_changes(doc, before, &doc.get_changes(before), kind)
}

fn wijk() -> WijkId {
    WijkId::new("assen-noord").expect("wijk")
}

fn date(d: u8) -> Date {
    Date::from_ymd(2028, 3, d).expect("date")
}

/// A plan with goals and contact moments, as a professional's device holds it.
fn plan() -> Automerge {
    let mut doc = schema::new_document(&Plan::new(wijk(), "huishouden-1")).expect("plan");
    for i in 0..6u8 {
        schema::update::<Plan>(&mut doc, |p| {
            p.goals
                .push(Goal::new(Leefdomein::Financien, format!("doel {i}")));
            p.contacts.push(ContactMoment::new(
                date(i + 1),
                ContactKind::Huisbezoek,
                "huisbezoek",
            ));
            p.change_status(PlanStatus::Intake, date(i + 1));
            p.zelfredzaamheid.extend(
                ZrmMeasurement::new(ZrmDomein::Financien, 2, date(i + 1), Moment::Intake).ok(),
            );
            p.participatieladder
                .extend(LadderMeasurement::new(2, date(i + 1), Moment::Intake).ok());
        })
        .expect("edit");
    }
    doc
}

fn activiteit() -> Automerge {
    let mut doc =
        schema::new_document(&Activiteit::new(wijk(), "Koffieochtend")).expect("activiteit");
    schema::update::<Activiteit>(&mut doc, |a| {
        a.activity_type = Some("ontmoeting".into());
        a.location = Some("wijkcentrum De Pit".into());
        a.schedule = Some("wekelijks dinsdag 10:00".into());
        a.organisers.push("prof-1".into());
    })
    .expect("edit");
    for i in 0..4u8 {
        schema::update::<Activiteit>(&mut doc, |a| {
            a.sessions.push(Session::new(date(i + 1), 12, 2.5));
            a.volunteers.push(format!("vrijwilliger-{i}"));
        })
        .expect("edit");
    }
    doc
}

/// The `list` field's object and the `i`th item's map.
fn item(doc: &Automerge, list: &str, i: usize) -> (automerge::ObjId, automerge::ObjId) {
    let Some((_, list_id)) = doc.get(ROOT, list).expect("get") else {
        panic!("no {list}");
    };
    let Some((_, item_id)) = doc.get(&list_id, i).expect("get") else {
        panic!("no {list}[{i}]");
    };
    (list_id, item_id)
}

type Edit = fn(&mut Automerge);
/// A named case: how the document is made, and the edit `validate` refuses.
type Case = (&'static str, fn() -> Automerge, Edit);

fn raw(doc: &mut Automerge, f: impl FnOnce(&mut automerge::transaction::Transaction<'_>)) {
    let mut tx = doc.transaction();
    f(&mut tx);
    tx.commit();
}

#[test]
fn every_change_validate_refuses_is_refused() {
    let cases: Vec<Case> = vec![
        ("bad date in one contact", plan, |d| {
            let (_, c) = item(d, "contacts", 3);
            raw(d, |tx| {
                tx.put(&c, "date", "2028-02-31").map(drop).expect("put")
            });
        }),
        ("unknown leefdomein in one goal", plan, |d| {
            let (_, g) = item(d, "goals", 0);
            raw(d, |tx| {
                tx.put(&g, "leefdomein", "geluk").map(drop).expect("put")
            });
        }),
        ("household deleted", plan, |d| {
            raw(d, |tx| tx.delete(ROOT, "household").expect("delete"));
        }),
        ("status a number", plan, |d| {
            raw(d, |tx| tx.put(ROOT, "status", 7).expect("put"));
        }),
        ("a scalar inserted into contacts", plan, |d| {
            let (list, _) = item(d, "contacts", 0);
            raw(d, |tx| tx.insert(&list, 2, "hallo").expect("insert"));
        }),
        ("a new contact without its fields", plan, |d| {
            let (list, _) = item(d, "contacts", 0);
            raw(d, |tx| {
                let m = tx.insert_object(&list, 6, ObjType::Map).expect("insert");
                tx.put(&m, "id", "c-new").expect("put");
            });
        }),
        ("a contact summary replaced by a number", plan, |d| {
            let (_, c) = item(d, "contacts", 2);
            raw(d, |tx| tx.put(&c, "summary", 3).expect("put"));
        }),
        ("contacts replaced by a map", plan, |d| {
            raw(d, |tx| {
                tx.put_object(ROOT, "contacts", ObjType::Map)
                    .map(drop)
                    .expect("put")
            });
        }),
        ("meta kind changed", plan, |d| {
            let Some((_, meta)) = d.get(ROOT, "meta").expect("get") else {
                panic!("meta")
            };
            raw(d, |tx| tx.put(&meta, "kind", "activiteit").expect("put"));
        }),
        ("a zrm score of 6", plan, |d| {
            let (_, z) = item(d, "zelfredzaamheid", 2);
            raw(d, |tx| tx.put(&z, "score", 6).expect("put"));
        }),
        ("a participatieladder step of 0", plan, |d| {
            let (_, l) = item(d, "participatieladder", 4);
            raw(d, |tx| tx.put(&l, "step", 0).expect("put"));
        }),
        ("an unknown status in the history", plan, |d| {
            let (_, h) = item(d, "status_history", 1);
            raw(d, |tx| tx.put(&h, "status", "klaar").expect("put"));
        }),
        ("a history entry without a date", plan, |d| {
            let (_, h) = item(d, "status_history", 3);
            raw(d, |tx| tx.delete(&h, "date").expect("delete"));
        }),
        ("negative volunteer hours in one session", activiteit, |d| {
            let (_, s) = item(d, "sessions", 1);
            raw(d, |tx| tx.put(&s, "volunteer_hours", -1.0).expect("put"));
        }),
        ("empty title", activiteit, |d| {
            raw(d, |tx| tx.put(ROOT, "title", " ").expect("put"));
        }),
        ("a volunteer that is a number", activiteit, |d| {
            let (list, _) = item(d, "volunteers", 0);
            raw(d, |tx| tx.put(&list, 1, ScalarValue::Int(5)).expect("put"));
        }),
    ];
    for (name, make, edit) in cases {
        let mut doc = make();
        let before = doc.get_heads();
        edit(&mut doc);
        assert!(
            schema::validate(&doc).is_err(),
            "{name}: validate accepts it"
        );
        assert!(
            checked_since(&doc, &before).is_err(),
            "{name}: validate_changes accepts what validate refuses"
        );
    }
}

#[test]
fn valid_changes_pass() {
    let mut doc = plan();
    let before = doc.get_heads();
    schema::update::<Plan>(&mut doc, |p| {
        p.contacts.push(ContactMoment::new(
            date(20),
            ContactKind::Telefoon,
            "gebeld",
        ));
        p.goals[2].description = "anders geformuleerd".into();
        p.contacts.remove(0);
        p.regiehouder = Some("prof-1".into());
    })
    .expect("edit");
    schema::validate(&doc).expect("valid");
    checked_since(&doc, &before).expect("valid changes pass");

    let mut doc = activiteit();
    let before = doc.get_heads();
    schema::update::<Activiteit>(&mut doc, |a| {
        a.sessions[1].attendance = 30;
        a.sessions.push(Session::new(date(9), 8, 1.0));
    })
    .expect("edit");
    checked_since(&doc, &before).expect("valid changes pass");
}

/// `meta` is read only when the changes wrote to it: an edit elsewhere is checked as
/// the kind the caller names, with nothing of `meta` read; a change to `meta` has the
/// whole document read, `meta` first, and tells what it now is.
#[test]
fn meta_is_read_only_when_written() {
    let mut doc = plan();
    let before = doc.get_heads();
    schema::update::<Plan>(&mut doc, |p| p.regiehouder = Some("prof-2".into())).expect("edit");
    let checked = checked_since(&doc, &before).expect("valid");
    assert_eq!(checked.meta, None, "meta was not read");
    assert!(checked.may_have_changed("regiehouder"));

    let before = doc.get_heads();
    let meta = doc.get(ROOT, "meta").expect("get").expect("meta").1;
    doc.transact(|tx| tx.put(&meta, "wijk", "assen-zuid").map(|_| ()))
        .expect("move");
    let checked = checked_since(&doc, &before).expect("a valid meta");
    let read = checked.meta.expect("meta was read");
    assert_eq!(read.wijk.as_str(), "assen-zuid");
    assert_eq!(checked.fields, None, "the whole document was read");
}

/// The relay relies on it: what no change touched is not read again, down to the keys
/// of an item that existed before. A document that was already broken before stays
/// unnoticed by a valid change elsewhere, while the whole-document check sees it.
#[test]
fn it_reads_only_what_changed() {
    let mut doc = plan();
    let (_, c) = item(&doc, "contacts", 4);
    raw(&mut doc, |tx| tx.put(&c, "kind", "duif").expect("put"));
    let before = doc.get_heads();
    raw(&mut doc, |tx| {
        tx.put(ROOT, "regiehouder", "prof-2").expect("put")
    });
    assert!(schema::validate(&doc).is_err());
    checked_since(&doc, &before).expect("only regiehouder was read");
    // Another key of the broken item: only that key is read.
    let before = doc.get_heads();
    raw(&mut doc, |tx| {
        tx.put(&c, "by", "prof-2").map(drop).expect("put")
    });
    checked_since(&doc, &before).expect("only the contact's by was read");
    // Deeper inside the broken item (the text of its summary): only that key.
    let Some((_, summary)) = doc.get(&c, "summary").expect("get") else {
        panic!("summary")
    };
    let before = doc.get_heads();
    raw(&mut doc, |tx| {
        tx.splice_text(&summary, 0, 0, "weer ").expect("splice")
    });
    checked_since(&doc, &before).expect("only the contact's summary was read");
    // The broken key itself is read, and refuses.
    let before = doc.get_heads();
    raw(&mut doc, |tx| tx.put(&c, "kind", "uil").expect("put"));
    assert!(checked_since(&doc, &before).is_err());
}

/// Every field a full plan and activiteit hold is one `validate_changes` knows, so a
/// field added to the schema cannot be skipped by it unnoticed.
#[test]
fn every_schema_field_is_known() {
    for doc in [plan(), activiteit()] {
        let keys: Vec<String> = doc.keys(ROOT).collect();
        assert!(keys.len() >= 8, "{keys:?}");
        for key in keys {
            let mut broken = doc.clone();
            let before = broken.get_heads();
            // A list put where the field wants something else (or an invalid list item):
            // every known field refuses it; an unknown field would be ignored.
            raw(&mut broken, |tx| {
                let l = tx
                    .put_object(ROOT, key.as_str(), ObjType::List)
                    .expect("put");
                tx.insert(&l, 0, 99).expect("insert");
            });
            assert!(
                checked_since(&broken, &before).is_err(),
                "field {key} is not checked by validate_changes"
            );
        }
    }
}

/// A title written as text (as automerge-js does) whose characters are all deleted is
/// empty, which `validate` refuses: deleting from a text field is no removal of items.
#[test]
fn emptying_a_text_title_is_refused() {
    let mut doc = activiteit();
    raw(&mut doc, |tx| {
        let t = tx.put_object(ROOT, "title", ObjType::Text).expect("text");
        tx.splice_text(&t, 0, 0, "Koffie").expect("splice");
    });
    let Some((_, title)) = doc.get(ROOT, "title").expect("get") else {
        panic!("title")
    };
    let before = doc.get_heads();
    raw(&mut doc, |tx| {
        tx.splice_text(&title, 0, 6, "").expect("splice")
    });
    assert!(schema::validate(&doc).is_err(), "validate accepts it");
    assert!(
        checked_since(&doc, &before).is_err(),
        "validate_changes accepts an empty title"
    );
}

/// A contact moment with two concurrent values (a valid one that wins, an invalid one
/// hidden behind it), and the document's heads then.
fn plan_with_a_hidden_contact() -> (Automerge, Vec<automerge::ChangeHash>) {
    let mut doc = plan();
    let mut other = doc.fork();
    let fill = |tx: &mut automerge::transaction::Transaction<'_>, m: &automerge::ObjId, kind| {
        tx.put(m, "id", "c-x").expect("put");
        tx.put(m, "date", "2028-03-01").expect("put");
        tx.put(m, "kind", kind).expect("put");
        tx.put(m, "summary", "samen").expect("put");
    };
    let (list, _) = item(&other, "contacts", 3);
    raw(&mut other, |tx| {
        let m = tx.put_object(&list, 3, ObjType::Map).expect("put");
        fill(tx, &m, "duif");
    });
    // An unrelated change first gives the valid value the higher op counter: it wins.
    raw(&mut doc, |tx| {
        tx.put(ROOT, "regiehouder", "prof-1").expect("put")
    });
    raw(&mut doc, |tx| {
        let m = tx.put_object(&list, 3, ObjType::Map).expect("put");
        fill(tx, &m, "telefoon");
    });
    doc.merge(&mut other).expect("merge");
    schema::validate(&doc).expect("the hidden value is not read");
    assert_eq!(doc.get_all(&list, 3).expect("get_all").len(), 2);
    let heads = doc.get_heads();
    (doc, heads)
}

/// A change (crafted, as any client may send) that removes only the winning value of a
/// list item shows the hidden one: the relay must read it, as `validate` does.
#[test]
fn a_delete_revealing_a_hidden_item_is_refused() {
    let (mut doc, before) = plan_with_a_hidden_contact();
    let (list, _) = item(&doc, "contacts", 3);
    let winner = doc.get_all(&list, 3).expect("get_all");
    let winner = winner
        .iter()
        .map(|(_, id)| id.clone())
        .max()
        .expect("two values");
    let mut fork = doc.fork();
    raw(&mut fork, |tx| tx.delete(&list, 3).expect("delete"));
    let honest = fork.get_changes(&before).pop().expect("the delete");
    let mut crafted = honest.decode();
    crafted.hash = None;
    for op in &mut crafted.operations {
        let keep: Vec<_> = op
            .pred
            .iter()
            .filter(|p| winner.to_string() == format!("{}@{}", p.counter(), p.actor()))
            .cloned()
            .collect();
        assert_eq!(keep.len(), 1, "the winner is a pred of the delete");
        op.pred = keep.into();
    }
    let crafted = automerge::Change::from(crafted);
    doc.apply_changes([crafted.clone()]).expect("apply");
    assert!(schema::validate(&doc).is_err(), "the hidden value shows");
    assert!(
        schema::validate_changes(
            &doc,
            &before,
            &[crafted],
            sync_core::partition::DocumentKind::Plan
        )
        .map(drop)
        .is_err(),
        "validate_changes accepts a revealed invalid item"
    );
}

/// A plan whose items of every list hold every field (struct literals: a field added to
/// an item type does not compile here until it is filled in), two of each.
fn full_plan() -> Automerge {
    let mut plan = Plan::new(wijk(), "huishouden-2");
    for i in 0..2u8 {
        plan.goals.push(Goal {
            id: format!("g{i}"),
            leefdomein: Leefdomein::Wonen,
            description: "een huis".into(),
            status: GoalStatus::Bezig,
            positive_health: Some(PositiveHealth::Meedoen),
        });
        plan.actions.push(Action {
            id: format!("a{i}"),
            goal_id: Some(format!("g{i}")),
            who: ActionWho::Netwerk,
            what: "bellen".into(),
            due: Some(date(9)),
            done: true,
        });
        plan.contacts.push(ContactMoment {
            id: format!("c{i}"),
            date: date(2),
            kind: ContactKind::School,
            summary: "gesprek".into(),
            by: Some("prof-1".into()),
        });
        plan.consents.push(Consent {
            id: format!("t{i}"),
            purpose: "delen met de huisarts".into(),
            given_at: date(2),
            given_by: Some("inwoner".into()),
            withdrawn_at: Some(date(8)),
        });
        plan.zelfredzaamheid.push(ZrmMeasurement {
            id: format!("z{i}"),
            domain: ZrmDomein::Huisvesting,
            score: 3,
            date: date(3),
            moment: Moment::Tussenevaluatie,
            by: Some("prof-1".into()),
        });
        plan.participatieladder.push(LadderMeasurement {
            id: format!("l{i}"),
            step: 4,
            date: date(3),
            moment: Moment::Eindevaluatie,
            by: Some("prof-1".into()),
        });
        plan.status_history.push(StatusChange {
            id: format!("h{i}"),
            status: PlanStatus::Uitvoering,
            date: date(4),
            by: Some("prof-1".into()),
        });
    }
    schema::new_document(&plan).expect("plan")
}

/// An activiteit whose sessions hold every field (a struct literal, as above).
fn full_activiteit() -> Automerge {
    let mut act = Activiteit::new(wijk(), "Repair café");
    for i in 0..2u8 {
        act.sessions.push(Session {
            id: format!("s{i}"),
            date: date(5),
            attendance: 9,
            participants: vec!["mevrouw De Vries".into()],
            volunteer_hours: 2.5,
            notes: Some("drie lampen".into()),
            signals: vec!["vraagt naar schuldhulp".into()],
        });
    }
    schema::new_document(&act).expect("activiteit")
}

/// How a test document is made.
type Make = fn() -> Automerge;

/// Every list of items checked key by key, with the document holding it.
fn item_lists() -> Vec<(Make, &'static str)> {
    let mut lists: Vec<(Make, &'static str)> = [
        "goals",
        "actions",
        "contacts",
        "consents",
        "zelfredzaamheid",
        "participatieladder",
        "status_history",
    ]
    .into_iter()
    .map(|list| (full_plan as Make, list))
    .collect();
    lists.push((full_activiteit, "sessions"));
    lists
}

/// A value a client may write to one key of an item.
#[derive(Clone, Debug)]
enum Write {
    Delete,
    Scalar(ScalarValue),
    Text(String),
    Map,
    /// A list with these items (ints or strings).
    List(Vec<ScalarValue>),
}

impl Write {
    fn apply(
        &self,
        tx: &mut automerge::transaction::Transaction<'_>,
        obj: &automerge::ObjId,
        key: &str,
    ) {
        match self {
            Write::Delete => tx.delete(obj, key).expect("delete"),
            Write::Scalar(v) => tx.put(obj, key, v.clone()).expect("put"),
            Write::Text(t) => {
                let text = tx.put_object(obj, key, ObjType::Text).expect("put");
                tx.splice_text(&text, 0, 0, t).expect("splice");
            }
            Write::Map => drop(tx.put_object(obj, key, ObjType::Map).expect("put")),
            Write::List(items) => {
                let list = tx.put_object(obj, key, ObjType::List).expect("put");
                for (i, v) in items.iter().enumerate() {
                    tx.insert(&list, i, v.clone()).expect("insert");
                }
            }
        }
    }

    /// What `key` of `obj` holds now, written again (a valid value, if it was).
    fn copy_of(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> Option<Write> {
        match doc.get(obj, key).expect("get")? {
            (automerge::Value::Scalar(v), _) => Some(Write::Scalar(v.into_owned())),
            (automerge::Value::Object(ObjType::Text), id) => {
                Some(Write::Text(doc.text(&id).expect("text")))
            }
            _ => None,
        }
    }
}

/// Every kind of automerge value, the spellings the schema cares about (empty, blank,
/// dates, numbers at the edges of the ranges) and a delete.
fn writes() -> Vec<Write> {
    use ScalarValue::*;
    let mut writes = vec![
        Write::Delete,
        Write::Map,
        Write::Text("x".into()),
        Write::Text(String::new()),
    ];
    writes.extend(
        [
            Null,
            Str("".into()),
            Str(" ".into()),
            Str("x".into()),
            Str("2028-02-31".into()),
            Str("2028-03-01".into()),
            Int(-1),
            Int(0),
            Int(1),
            Int(5),
            Int(6),
            Int(7),
            Uint(3),
            F64(1.5),
            F64(2.0),
            F64(-0.5),
            Boolean(true),
            Boolean(false),
            Timestamp(0),
        ]
        .map(Write::Scalar),
    );
    writes.push(Write::List(vec![Int(99)]));
    writes.push(Write::List(vec![Str("naam".into())]));
    writes.push(Write::List(Vec::new()));
    writes
}

fn verdict<T>(result: Result<T, schema::SchemaError>) -> Result<(), String> {
    result.map(drop).map_err(|e| e.to_string())
}

/// One key of an item that existed before, written with any value (or deleted), is
/// refused or accepted exactly as `validate` decides, with the same words: reading
/// only the keys a change wrote loses nothing.
#[test]
fn one_key_of_an_item_is_checked_as_validate_checks_it() {
    for (make, list) in item_lists() {
        let doc = make();
        let (_, first) = item(&doc, list, 0);
        let (_, second) = item(&doc, list, 1);
        let keys: Vec<String> = doc.keys(&second).collect();
        let (mut refused, mut accepted) = (0, 0);
        for key in &keys {
            let copy = Write::copy_of(&doc, &first, key);
            for write in writes().into_iter().chain(copy) {
                let mut doc = doc.clone();
                let before = doc.get_heads();
                raw(&mut doc, |tx| write.apply(tx, &second, key));
                let whole = verdict(schema::validate(&doc));
                refused += usize::from(whole.is_err());
                accepted += usize::from(whole.is_ok());
                assert_eq!(
                    verdict(checked_since(&doc, &before)),
                    whole,
                    "{list}[1].{key} = {write:?}"
                );
            }
        }
        // Each key refuses something and takes its own kind of value (the copy).
        assert!(refused > keys.len(), "{list}: hardly anything was refused");
        assert!(
            accepted >= keys.len(),
            "{list}: hardly anything was accepted"
        );
    }
}

/// Every key a full item holds is one its key-by-key check knows: a list where no key
/// takes one of numbers is refused, naming that key (an unknown key would be ignored).
#[test]
fn every_key_of_a_full_item_is_known() {
    for (make, list) in item_lists() {
        let doc = make();
        let (_, second) = item(&doc, list, 1);
        let keys: Vec<String> = doc.keys(&second).collect();
        assert!(keys.len() >= 4, "{list}: {keys:?}");
        for key in keys {
            let mut doc = doc.clone();
            let before = doc.get_heads();
            raw(&mut doc, |tx| {
                Write::List(vec![ScalarValue::Int(99)]).apply(tx, &second, &key)
            });
            let err =
                checked_since(&doc, &before).expect_err(&format!("{list}[1].{key} is not checked"));
            assert!(
                err.path()
                    .is_some_and(|p| p.contains(&format!("[1].{key}"))),
                "{list}[1].{key}: {err}"
            );
        }
    }
}

/// An edit of one key of an item reads that key, not the item: another key broken
/// before goes unnoticed (the whole-document check sees it), for every item type.
#[test]
fn an_edit_of_one_key_reads_only_that_key() {
    for (make, list) in item_lists() {
        let mut doc = make();
        let (_, first) = item(&doc, list, 0);
        let (_, second) = item(&doc, list, 1);
        let keys: Vec<String> = doc.keys(&second).collect();
        let (broken, edited) = (&keys[0], &keys[1]);
        raw(&mut doc, |tx| {
            Write::List(vec![ScalarValue::Int(99)]).apply(tx, &second, broken)
        });
        let before = doc.get_heads();
        let same = Write::copy_of(&doc, &first, edited).expect("a scalar or text");
        raw(&mut doc, |tx| same.apply(tx, &second, edited));
        assert!(
            schema::validate(&doc).is_err(),
            "{list}: validate reads it all"
        );
        checked_since(&doc, &before)
            .unwrap_or_else(|e| panic!("{list}[1].{edited} read more than that key: {e}"));
        // A new item is read whole, even if a change wrote only one key of it.
        let before = doc.get_heads();
        let (list_id, _) = item(&doc, list, 0);
        raw(&mut doc, |tx| {
            let new = tx.insert_object(&list_id, 2, ObjType::Map).expect("insert");
            same.apply(tx, &new, edited);
        });
        assert!(
            checked_since(&doc, &before).is_err(),
            "{list}: a new item was not read whole"
        );
    }
}

/// The caller learns which top-level fields the changes wrote to (the relay reads the
/// hand-over flag again only when `handover` is among them), and that any may have
/// moved when the whole document was read.
#[test]
fn it_says_which_fields_were_written() {
    let fields = |checked: &schema::Checked| {
        checked
            .fields
            .clone()
            .map(|f| f.into_iter().collect::<Vec<_>>())
    };
    let mut doc = plan();
    let before = doc.get_heads();
    schema::update::<Plan>(&mut doc, |p| {
        p.goals[1].status = GoalStatus::Behaald;
        p.regiehouder = Some("prof-1".into());
    })
    .expect("edit");
    let checked = checked_since(&doc, &before).expect("valid");
    assert_eq!(
        fields(&checked),
        Some(vec!["goals".into(), "regiehouder".into()])
    );
    assert!(checked.may_have_changed("goals") && !checked.may_have_changed("handover"));

    let before = doc.get_heads();
    schema::update::<Plan>(&mut doc, |p| p.handover.requested = true).expect("edit");
    assert!(checked_since(&doc, &before)
        .expect("valid")
        .may_have_changed("handover"));

    // The first changes of a document: read whole, anything may have moved.
    let checked = checked_since(&doc, &[]).expect("valid");
    assert_eq!(checked.fields, None);
    assert!(checked.may_have_changed("handover"));
}

/// Removing items reads none of the items left (a broken one stays unnoticed) and
/// none removed, whether one goes or all.
#[test]
fn removing_items_reads_none_of_the_rest() {
    let mut doc = plan();
    let (_, c) = item(&doc, "contacts", 4);
    raw(&mut doc, |tx| tx.put(&c, "kind", "duif").expect("put"));
    let before = doc.get_heads();
    let (contacts, _) = item(&doc, "contacts", 0);
    let (goals, _) = item(&doc, "goals", 0);
    raw(&mut doc, |tx| {
        tx.delete(&contacts, 1).expect("delete");
        while tx.length(&goals) > 0 {
            tx.delete(&goals, 0).expect("delete");
        }
    });
    assert!(schema::validate(&doc).is_err());
    checked_since(&doc, &before).expect("nothing left was read");
    // A list cleared as a client clears it (a cursor lookup of the removed elements
    // once tripped automerge 0.12's own debug checks here).
    let mut doc = plan();
    let before = doc.get_heads();
    schema::update::<Plan>(&mut doc, |p| p.contacts.clear()).expect("edit");
    checked_since(&doc, &before).expect("valid");
}
