//! The activiteit (groepsactiviteit in de wijk): one automerge document per group
//! activity, with its organisers and volunteers and a log of sessions.
//!
//! This module owns the activiteit's Rust types, how they are read from a document
//! (attendance and volunteer hours may arrive as any automerge number from JavaScript)
//! and how they are written back so that sessions logged on several phones merge.

use automerge::ROOT;
use autosurgeon::reconcile::{MapReconciler, NoKey};
use autosurgeon::{ReadDoc, Reconcile, Reconciler, Text};

use super::{
    hydrate_with_schema, keyed_by_id, new_id, put_f64, put_opt, put_opt_str, put_str, put_u64,
    Date, FromMap, Items, KeyCheck, MapReader, Meta, Path, SchemaError, StrList,
};
use crate::partition::{DocumentKind, WijkId};

/// An activiteit document.
#[derive(Clone, Debug, PartialEq)]
pub struct Activiteit {
    /// Kind `activiteit`, the wijk and the schema version; fixed at creation.
    pub meta: Meta,
    pub title: String,
    /// What sort of activity (`type` in the document), e.g. `ontmoeting`.
    pub activity_type: Option<String>,
    pub location: Option<String>,
    pub organisers: Vec<String>,
    pub volunteers: Vec<String>,
    /// When it usually takes place, in words: "wekelijks dinsdag 10:00".
    pub schedule: Option<String>,
    pub sessions: Vec<Session>,
}

impl Activiteit {
    /// A new activiteit with only a title.
    pub fn new(wijk: WijkId, title: impl Into<String>) -> Activiteit {
        Activiteit {
            meta: Meta::new(DocumentKind::Activiteit, wijk),
            title: title.into(),
            activity_type: None,
            location: None,
            organisers: Vec::new(),
            volunteers: Vec::new(),
            schedule: None,
            sessions: Vec::new(),
        }
    }

    /// Reads a whole activiteit document; errors name the path of the offending value.
    pub fn read<D: ReadDoc>(doc: &D) -> Result<Activiteit, SchemaError> {
        Activiteit::from_map(&MapReader::new(doc, ROOT, Path::root("activiteit")))
    }
}

impl Activiteit {
    /// Checks one top-level field as [`FromMap::from_map`] reads it (of a list field only
    /// `items`, as far as each says, or all with `None`), for [`super::validate_changes`]. Returns whether
    /// the field is part of the schema; other keys are ignored, as `from_map` does.
    /// Keep in step with `from_map` (a test checks every field an activiteit has is known).
    pub(crate) fn check_field<D: ReadDoc>(
        map: &MapReader<'_, D>,
        key: &str,
        items: Option<&Items>,
    ) -> Result<bool, SchemaError> {
        match key {
            "meta" => {
                let meta: Meta = map.with_path(Path::default()).req("meta")?;
                meta.expect_kind(DocumentKind::Activiteit)?;
            }
            "title" => drop(map.non_empty("title")?),
            "type" => drop(map.opt::<String>("type")?),
            "location" => drop(map.opt::<String>("location")?),
            "organisers" => map.check_items::<String>("organisers", items)?,
            "volunteers" => map.check_items::<String>("volunteers", items)?,
            "schedule" => drop(map.opt::<String>("schedule")?),
            "sessions" => map.check_items::<Session>("sessions", items)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl FromMap for Activiteit {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        let meta: Meta = map.with_path(Path::default()).req("meta")?;
        meta.expect_kind(DocumentKind::Activiteit)?;
        Ok(Activiteit {
            meta,
            title: map.non_empty("title")?,
            activity_type: map.opt("type")?,
            location: map.opt("location")?,
            organisers: map.list("organisers")?,
            volunteers: map.list("volunteers")?,
            schedule: map.opt("schedule")?,
            sessions: map.list("sessions")?,
        })
    }
}

hydrate_with_schema!(Activiteit, "activiteit", map);

impl Reconcile for Activiteit {
    type Key<'k> = NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        map.put("meta", &self.meta)?;
        put_str(&mut map, "title", &self.title)?;
        put_opt_str(&mut map, "type", self.activity_type.as_deref())?;
        put_opt_str(&mut map, "location", self.location.as_deref())?;
        map.put("organisers", StrList(&self.organisers))?;
        map.put("volunteers", StrList(&self.volunteers))?;
        put_opt_str(&mut map, "schedule", self.schedule.as_deref())?;
        map.put("sessions", &self.sessions)?;
        Ok(())
    }
}

/// One time the activity took place.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// Identifies the session across peers; the reconcile key of the `sessions` list.
    pub id: String,
    pub date: Date,
    /// How many people came.
    pub attendance: u64,
    /// Names, only when participants agreed to be named.
    pub participants: Vec<String>,
    /// Hours volunteers spent, for the gemeente's reports; never negative.
    pub volunteer_hours: f64,
    pub notes: Option<Text>,
    /// Things the buurtteam should know about, one text per signal.
    pub signals: Vec<Text>,
}

impl Session {
    /// A new session with a fresh id.
    pub fn new(date: Date, attendance: u64, volunteer_hours: f64) -> Session {
        Session {
            id: new_id(),
            date,
            attendance,
            participants: Vec::new(),
            volunteer_hours,
            notes: None,
            signals: Vec::new(),
        }
    }
}

impl FromMap for Session {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(Session {
            id: map.non_empty("id")?,
            date: map.req("date")?,
            attendance: map.req("attendance")?,
            participants: map.list("participants")?,
            volunteer_hours: map.req("volunteer_hours")?,
            notes: map.opt("notes")?,
            signals: map.list("signals")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys. A session's lists
/// (participants, signals) are read whole when anything in them was written.
impl KeyCheck for Session {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "date" => drop(map.req::<Date>("date")?),
            "attendance" => drop(map.req::<u64>("attendance")?),
            "participants" => drop(map.list::<String>("participants")?),
            "volunteer_hours" => drop(map.req::<f64>("volunteer_hours")?),
            "notes" => drop(map.opt::<Text>("notes")?),
            "signals" => drop(map.list::<Text>("signals")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(Session, "session", map);

impl Reconcile for Session {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_str(&mut map, "date", self.date.as_str())?;
        put_u64(&mut map, "attendance", self.attendance)?;
        map.put("participants", StrList(&self.participants))?;
        put_f64(&mut map, "volunteer_hours", self.volunteer_hours)?;
        put_opt(&mut map, "notes", self.notes.as_ref())?;
        map.put("signals", &self.signals)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::testing::{activiteit, meta, raw_doc, text};
    use crate::schema::{new_document, validate, SchemaError};
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ObjType, ScalarValue};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn wijk() -> WijkId {
        WijkId::new("assen-noord").expect("a valid wijk id")
    }

    fn date(s: &str) -> Date {
        Date::parse(s).expect("a valid date")
    }

    fn full_activiteit() -> Activiteit {
        let mut act = Activiteit::new(wijk(), "Koffieochtend De Kiem");
        act.activity_type = Some("ontmoeting".into());
        act.location = Some("Wijkcentrum De Kiem".into());
        act.organisers = vec!["user-fatima".into()];
        act.volunteers = vec!["Henk".into(), "Ria".into()];
        act.schedule = Some("wekelijks dinsdag 10:00".into());
        let mut session = Session::new(date("2024-03-05"), 14, 2.5);
        session.participants = vec!["Mevrouw de Vries".into()];
        session.notes = Some(Text::with_value("Gezellig"));
        session.signals = vec![Text::with_value("Meneer K. oogt eenzaam")];
        act.sessions.push(session);
        act.sessions.push(Session::new(date("2024-03-12"), 0, 0.0));
        act
    }

    /// Hydrates, lets `edit` change the activiteit, reconciles in one change.
    fn edit(doc: &mut Automerge, edit: impl FnOnce(&mut Activiteit)) -> TestResult {
        let mut act: Activiteit = autosurgeon::hydrate(&*doc)?;
        edit(&mut act);
        let mut tx = doc.transaction();
        autosurgeon::reconcile(&mut tx, &act)?;
        tx.commit();
        Ok(())
    }

    /// An activiteit written by `new_document` validates and reads back as written.
    #[test]
    fn round_trip() -> TestResult {
        let act = full_activiteit();
        let doc = new_document(&act)?;
        let meta = validate(&doc)?;
        assert_eq!(meta.kind, DocumentKind::Activiteit);
        assert_eq!(meta.wijk, wijk());
        assert_eq!(Activiteit::read(&doc)?, act);
        assert_eq!(autosurgeon::hydrate::<_, Activiteit>(&doc)?, act);
        Ok(())
    }

    /// Sessions logged on two phones offline are both kept.
    #[test]
    fn concurrent_sessions_both_survive() -> TestResult {
        let mut doc = new_document(&full_activiteit())?;
        let mut other = doc.fork();
        edit(&mut doc, |act| {
            act.sessions.push(Session::new(date("2024-03-19"), 9, 1.0))
        })?;
        edit(&mut other, |act| {
            act.sessions.push(Session::new(date("2024-03-26"), 11, 1.5));
            act.volunteers.push("Kees".into());
        })?;
        doc.merge(&mut other)?;
        let act = Activiteit::read(&doc)?;
        let dates: Vec<&str> = act.sessions.iter().map(|s| s.date.as_str()).collect();
        assert_eq!(dates.len(), 4, "{dates:?}");
        assert!(
            dates.contains(&"2024-03-19") && dates.contains(&"2024-03-26"),
            "{dates:?}"
        );
        assert_eq!(act.volunteers, ["Henk", "Ria", "Kees"]);
        Ok(())
    }

    /// `new_document` refuses values the schema refuses, such as negative hours.
    #[test]
    fn new_document_validates() {
        let mut act = Activiteit::new(wijk(), "Buurtmoestuin");
        act.sessions.push(Session::new(date("2024-03-05"), 3, -1.0));
        let err = new_document(&act).expect_err("negative hours");
        assert_eq!(err.path(), Some("activiteit.sessions[0].volunteer_hours"));
    }

    /// Attendance takes any whole automerge number and refuses the rest; hours take any
    /// number that is not negative.
    #[test]
    fn numbers_from_javascript() {
        let check =
            |attendance: ScalarValue, hours: ScalarValue, expected: Result<(u64, f64), &str>| {
                let doc = raw_doc(|tx| {
                    activiteit(tx)?;
                    let sessions = tx.put_object(ROOT, "sessions", ObjType::List)?;
                    let session = tx.insert_object(&sessions, 0, ObjType::Map)?;
                    tx.put(&session, "id", "s1")?;
                    tx.put(&session, "date", "2024-03-05")?;
                    tx.put(&session, "attendance", attendance.clone())?;
                    tx.put(&session, "volunteer_hours", hours.clone())?;
                    Ok(())
                });
                let got = Activiteit::read(&doc)
                    .map(|a| (a.sessions[0].attendance, a.sessions[0].volunteer_hours))
                    .map_err(|e| e.to_string());
                assert_eq!(
                    got,
                    expected.map_err(str::to_owned),
                    "{attendance:?} {hours:?}"
                );
            };
        check(ScalarValue::Int(12), ScalarValue::F64(2.5), Ok((12, 2.5)));
        check(ScalarValue::Uint(12), ScalarValue::Int(3), Ok((12, 3.0)));
        check(ScalarValue::F64(12.0), ScalarValue::Uint(3), Ok((12, 3.0)));
        check(ScalarValue::Int(0), ScalarValue::F64(0.0), Ok((0, 0.0)));
        check(
            ScalarValue::F64(12.5),
            ScalarValue::F64(1.0),
            Err("activiteit.sessions[0].attendance: must be a whole number (found 12.5)"),
        );
        check(
            ScalarValue::F64(-1.0),
            ScalarValue::F64(1.0),
            Err("activiteit.sessions[0].attendance: must not be negative (found -1)"),
        );
        check(
            ScalarValue::Str("twaalf".into()),
            ScalarValue::F64(1.0),
            Err("activiteit.sessions[0].attendance: expected a whole number, found a string"),
        );
        check(
            ScalarValue::Int(1),
            ScalarValue::F64(f64::NAN),
            Err("activiteit.sessions[0].volunteer_hours: must be a finite number (found NaN)"),
        );
        check(
            ScalarValue::Int(1),
            ScalarValue::Null,
            Err("activiteit.sessions[0].volunteer_hours is missing"),
        );
    }

    /// An activiteit written by JavaScript with scalar strings for text and float hours
    /// validates, and missing lists read as empty.
    #[test]
    fn js_shaped_activiteit_with_scalars_validates() -> TestResult {
        let doc = raw_doc(|tx| {
            meta(tx, "activiteit", "assen-noord")?;
            tx.put(ROOT, "title", "Repair café")?;
            let sessions = tx.put_object(ROOT, "sessions", ObjType::List)?;
            let session = tx.insert_object(&sessions, 0, ObjType::Map)?;
            tx.put(&session, "id", "s1")?;
            tx.put(&session, "date", "2024-03-05")?;
            tx.put(&session, "attendance", 7i64)?;
            tx.put(&session, "volunteer_hours", 3.75f64)?;
            tx.put(&session, "notes", "Drie lampen gemaakt")?;
            let signals = tx.put_object(&session, "signals", ObjType::List)?;
            tx.insert(&signals, 0, "Mevrouw B. vraagt naar schuldhulp")?;
            Ok(())
        });
        assert_eq!(validate(&doc)?.kind, DocumentKind::Activiteit);
        let act = Activiteit::read(&doc)?;
        assert!(act.organisers.is_empty() && act.volunteers.is_empty());
        let session = &act.sessions[0];
        assert_eq!(session.volunteer_hours, 3.75);
        assert_eq!(
            session.notes.as_ref().map(Text::as_str),
            Some("Drie lampen gemaakt")
        );
        assert_eq!(
            session.signals[0].as_str(),
            "Mevrouw B. vraagt naar schuldhulp"
        );
        assert!(session.participants.is_empty());
        Ok(())
    }

    /// An activiteit as automerge-js 3 writes it (every string a text object, whole numbers
    /// as ints) validates, and a Rust client reconciling it unchanged writes nothing.
    #[test]
    fn js_shaped_activiteit_with_text_is_left_alone() -> TestResult {
        let mut doc = raw_doc(|tx| {
            let meta = tx.put_object(ROOT, "meta", ObjType::Map)?;
            text(tx, &meta, "kind", "activiteit")?;
            text(tx, &meta, "wijk", "assen-noord")?;
            tx.put(&meta, "schema", 1i64)?;
            text(tx, &ROOT, "title", "Koffieochtend De Kiem")?;
            text(tx, &ROOT, "type", "ontmoeting")?;
            let organisers = tx.put_object(ROOT, "organisers", ObjType::List)?;
            let name = tx.insert_object(&organisers, 0, ObjType::Text)?;
            tx.splice_text(&name, 0, 0, "user-fatima")?;
            tx.put_object(ROOT, "volunteers", ObjType::List)?;
            let sessions = tx.put_object(ROOT, "sessions", ObjType::List)?;
            let session = tx.insert_object(&sessions, 0, ObjType::Map)?;
            text(tx, &session, "id", "s1")?;
            text(tx, &session, "date", "2024-03-05")?;
            tx.put(&session, "attendance", 7i64)?;
            tx.put(&session, "volunteer_hours", 2i64)?;
            text(tx, &session, "notes", "Gezellig")?;
            // Rust writes every collection, even empty, so that two peers adding the first
            // item do not create competing lists; a JS client should do the same.
            tx.put_object(&session, "participants", ObjType::List)?;
            let signals = tx.put_object(&session, "signals", ObjType::List)?;
            let signal = tx.insert_object(&signals, 0, ObjType::Text)?;
            tx.splice_text(&signal, 0, 0, "Vraagt naar de voedselbank")?;
            Ok(())
        });
        assert_eq!(validate(&doc)?.kind, DocumentKind::Activiteit);
        let heads = doc.get_heads();
        edit(&mut doc, |_| {})?;
        assert_eq!(
            doc.get_heads(),
            heads,
            "an unchanged document is not rewritten"
        );

        edit(&mut doc, |act| {
            act.sessions.push(Session::new(date("2024-03-12"), 5, 1.0));
        })?;
        let act = Activiteit::read(&doc)?;
        assert_eq!(act.sessions.len(), 2);
        assert_eq!(act.organisers, ["user-fatima"]);
        let title = automerge::ReadDoc::get(&doc, ROOT, "title")?
            .ok_or("title")?
            .0;
        assert_eq!(title, automerge::Value::Object(ObjType::Text));
        Ok(())
    }

    /// An activiteit cannot be read as a plan, and a plan not as an activiteit.
    #[test]
    fn kind_must_match() {
        let doc = raw_doc(|tx| crate::schema::testing::plan(tx).map(|_| ()));
        let err = Activiteit::read(&doc).expect_err("a plan is not an activiteit");
        assert_eq!(
            err,
            SchemaError::Invalid {
                path: "meta.kind".into(),
                reason: "expected \"activiteit\", found \"plan\"".into()
            }
        );
    }
}
