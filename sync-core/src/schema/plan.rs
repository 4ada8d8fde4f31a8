//! The household plan (gezinsplan / ondersteuningsplan): one automerge document per
//! household, with its goals per leefdomein, actions, contact log, consents and the
//! hand-over flag for a maatwerk request to the gemeente; since schema version 2 also
//! its outcome measurements (zelfredzaamheidsmatrix, participatieladder) and its status
//! history with the dates the professional entered.
//!
//! Version 2 only adds list fields, each optional, so a version-1 document is a valid
//! version-2 document with empty lists; a v1 document gains them by an ordinary write
//! and keeps `meta.schema = 1` (meta is fixed at creation; see [`super::meta`]).
//!
//! This module owns the plan's Rust types, how they are read from a document (leniently
//! about representation, strictly about meaning) and how they are written back with
//! autosurgeon so that concurrent edits by several professionals merge without loss.

use automerge::ROOT;
use autosurgeon::reconcile::{MapReconciler, NoKey};
use autosurgeon::{ReadDoc, Reconcile, Reconciler, Text};

use super::{
    hydrate_with_schema, keyed_by_id, new_id, put_opt, put_opt_str, put_str, put_u64, schema_enum,
    Date, FromMap, Items, KeyCheck, MapReader, Meta, Path, SchemaError,
};
use crate::partition::{DocumentKind, WijkId};

schema_enum! {
    /// Where a plan is in its lifecycle.
    #[derive(Default)]
    pub enum PlanStatus as "status" {
        /// Registered, not yet seen (the status of a plan that names none).
        #[default]
        Aanmelding = "aanmelding",
        Intake = "intake",
        /// The plan is being drawn up.
        Plan = "plan",
        Uitvoering = "uitvoering",
        Evaluatie = "evaluatie",
        Afgesloten = "afgesloten",
    }
}

schema_enum! {
    /// The life domain a goal belongs to.
    pub enum Leefdomein as "leefdomein" {
        Financien = "financien",
        Wonen = "wonen",
        Opvoeding = "opvoeding",
        Gezondheid = "gezondheid",
        SociaalNetwerk = "sociaal_netwerk",
        Dagbesteding = "dagbesteding",
        Veiligheid = "veiligheid",
        WerkEnInkomen = "werk_en_inkomen",
        Zorg = "zorg",
        Overig = "overig",
    }
}

schema_enum! {
    /// How far a goal has come.
    #[derive(Default)]
    pub enum GoalStatus as "status" {
        #[default]
        Open = "open",
        Bezig = "bezig",
        Behaald = "behaald",
        Gestopt = "gestopt",
    }
}

schema_enum! {
    /// The dimension of Positieve Gezondheid a goal serves.
    pub enum PositiveHealth as "positive_health" {
        Lichaamsfuncties = "lichaamsfuncties",
        MentaalWelbevinden = "mentaal_welbevinden",
        Zingeving = "zingeving",
        KwaliteitVanLeven = "kwaliteit_van_leven",
        Meedoen = "meedoen",
        DagelijksFunctioneren = "dagelijks_functioneren",
    }
}

schema_enum! {
    /// Who carries out an action.
    pub enum ActionWho as "who" {
        Inwoner = "inwoner",
        Netwerk = "netwerk",
        Buurtteam = "buurtteam",
        Partner = "partner",
    }
}

schema_enum! {
    /// Where or how a contact took place.
    pub enum ContactKind as "kind" {
        Huisbezoek = "huisbezoek",
        Wijkcentrum = "wijkcentrum",
        School = "school",
        Telefoon = "telefoon",
        Digitaal = "digitaal",
    }
}

schema_enum! {
    /// When in the support a measurement was taken.
    pub enum Moment as "moment" {
        Intake = "intake",
        Tussenevaluatie = "tussenevaluatie",
        Eindevaluatie = "eindevaluatie",
    }
}

schema_enum! {
    /// The domains of the zelfredzaamheidsmatrix (ZRM 2017).
    pub enum ZrmDomein as "domain" {
        Financien = "financien",
        WerkEnOpleiding = "werk_en_opleiding",
        Tijdsbesteding = "tijdsbesteding",
        Huisvesting = "huisvesting",
        HuiselijkeRelaties = "huiselijke_relaties",
        GeestelijkeGezondheid = "geestelijke_gezondheid",
        LichamelijkeGezondheid = "lichamelijke_gezondheid",
        Middelengebruik = "middelengebruik",
        BasaleAdl = "basale_adl",
        InstrumenteleAdl = "instrumentele_adl",
        SociaalNetwerk = "sociaal_netwerk",
        MaatschappelijkeParticipatie = "maatschappelijke_participatie",
        Justitie = "justitie",
    }
}

/// A household plan document.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Kind `plan`, the wijk and the schema version; fixed at creation.
    pub meta: Meta,
    pub household: Household,
    /// User id of the one contact person (regiehouder), once there is one.
    pub regiehouder: Option<String>,
    pub status: PlanStatus,
    pub goals: Vec<Goal>,
    pub actions: Vec<Action>,
    /// The contact log (`contacts` in the document).
    pub contacts: Vec<ContactMoment>,
    pub consents: Vec<Consent>,
    pub handover: Handover,
    /// Zelfredzaamheidsmatrix scores (`zelfredzaamheid`, schema 2): a list, so two
    /// professionals' offline measurements both survive the merge.
    pub zelfredzaamheid: Vec<ZrmMeasurement>,
    /// Participatieladder steps (`participatieladder`, schema 2), a list for the same reason.
    pub participatieladder: Vec<LadderMeasurement>,
    /// Every status change with the date the professional means (`status_history`,
    /// schema 2). `status` stays the current stage; this list says when each stage began.
    pub status_history: Vec<StatusChange>,
}

impl Plan {
    /// A new plan at `aanmelding` for the household known as `pseudonym`.
    pub fn new(wijk: WijkId, pseudonym: impl Into<String>) -> Plan {
        Plan {
            meta: Meta::new(DocumentKind::Plan, wijk),
            household: Household {
                pseudonym: pseudonym.into(),
                contact: ContactDetails::default(),
            },
            regiehouder: None,
            status: PlanStatus::Aanmelding,
            goals: Vec::new(),
            actions: Vec::new(),
            contacts: Vec::new(),
            consents: Vec::new(),
            handover: Handover::default(),
            zelfredzaamheid: Vec::new(),
            participatieladder: Vec::new(),
            status_history: Vec::new(),
        }
    }

    /// Moves the plan to `status` as of `date`: sets the current status and appends a
    /// dated history entry (the way every client should change the status).
    pub fn change_status(&mut self, status: PlanStatus, date: Date) -> &StatusChange {
        self.status = status;
        self.status_history.push(StatusChange::new(status, date));
        &self.status_history[self.status_history.len() - 1]
    }

    /// Reads a whole plan document; errors name the path of the offending value.
    pub fn read<D: ReadDoc>(doc: &D) -> Result<Plan, SchemaError> {
        Plan::from_map(&MapReader::new(doc, ROOT, Path::root("plan")))
    }
}

impl Plan {
    /// Checks one top-level field as [`FromMap::from_map`] reads it (of a list field only
    /// `items`, as far as each says, or all with `None`), for [`super::validate_changes`]. Returns whether
    /// the field is part of the schema; other keys are ignored, as `from_map` does.
    /// Keep in step with `from_map` (a test checks every field a plan has is known).
    pub(crate) fn check_field<D: ReadDoc>(
        map: &MapReader<'_, D>,
        key: &str,
        items: Option<&Items>,
    ) -> Result<bool, SchemaError> {
        match key {
            "meta" => {
                let meta: Meta = map.with_path(Path::default()).req("meta")?;
                meta.expect_kind(DocumentKind::Plan)?;
            }
            "household" => drop(map.req::<Household>("household")?),
            "regiehouder" => drop(map.opt::<String>("regiehouder")?),
            "status" => drop(map.opt::<PlanStatus>("status")?),
            "goals" => map.check_items::<Goal>("goals", items)?,
            "actions" => map.check_items::<Action>("actions", items)?,
            "contacts" => map.check_items::<ContactMoment>("contacts", items)?,
            "consents" => map.check_items::<Consent>("consents", items)?,
            "handover" => drop(map.opt::<Handover>("handover")?),
            "zelfredzaamheid" => map.check_items::<ZrmMeasurement>("zelfredzaamheid", items)?,
            "participatieladder" => {
                map.check_items::<LadderMeasurement>("participatieladder", items)?
            }
            "status_history" => map.check_items::<StatusChange>("status_history", items)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl FromMap for Plan {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        let meta: Meta = map.with_path(Path::default()).req("meta")?;
        meta.expect_kind(DocumentKind::Plan)?;
        Ok(Plan {
            meta,
            household: map.req("household")?,
            regiehouder: map.opt("regiehouder")?,
            status: map.opt("status")?.unwrap_or_default(),
            goals: map.list("goals")?,
            actions: map.list("actions")?,
            contacts: map.list("contacts")?,
            consents: map.list("consents")?,
            handover: map.opt("handover")?.unwrap_or_default(),
            zelfredzaamheid: map.list("zelfredzaamheid")?,
            participatieladder: map.list("participatieladder")?,
            status_history: map.list("status_history")?,
        })
    }
}

hydrate_with_schema!(Plan, "plan", map);

impl Reconcile for Plan {
    type Key<'k> = NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        map.put("meta", &self.meta)?;
        map.put("household", &self.household)?;
        put_opt_str(&mut map, "regiehouder", self.regiehouder.as_deref())?;
        put_str(&mut map, "status", self.status.as_str())?;
        map.put("goals", &self.goals)?;
        map.put("actions", &self.actions)?;
        map.put("contacts", &self.contacts)?;
        map.put("consents", &self.consents)?;
        map.put("handover", &self.handover)?;
        map.put("zelfredzaamheid", &self.zelfredzaamheid)?;
        map.put("participatieladder", &self.participatieladder)?;
        map.put("status_history", &self.status_history)?;
        Ok(())
    }
}

/// A whole number in `range`, else an error naming the field.
fn in_range<D: ReadDoc>(
    map: &MapReader<'_, D>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, SchemaError> {
    let slot = map.field(key);
    let value: u64 = slot.req()?;
    if range.contains(&value) {
        return Ok(value);
    }
    Err(slot.invalid(format!(
        "must be {} to {} (found {value})",
        range.start(),
        range.end()
    )))
}

/// One zelfredzaamheidsmatrix score: a domain scored 1 (acute problematiek) to 5
/// (volledig zelfredzaam) on a date, at a moment of the support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZrmMeasurement {
    /// Identifies the measurement across peers; the reconcile key of the list.
    pub id: String,
    pub domain: ZrmDomein,
    /// 1 to 5.
    pub score: u64,
    pub date: Date,
    pub moment: Moment,
    /// User id of who scored it.
    pub by: Option<String>,
}

impl ZrmMeasurement {
    /// A new score with a fresh id; `score` outside 1 to 5 is refused.
    pub fn new(
        domain: ZrmDomein,
        score: u64,
        date: Date,
        moment: Moment,
    ) -> Result<ZrmMeasurement, SchemaError> {
        if !(1..=5).contains(&score) {
            return Err(SchemaError::Invalid {
                path: "zelfredzaamheid.score".into(),
                reason: format!("must be 1 to 5 (found {score})"),
            });
        }
        Ok(ZrmMeasurement {
            id: new_id(),
            domain,
            score,
            date,
            moment,
            by: None,
        })
    }
}

impl FromMap for ZrmMeasurement {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(ZrmMeasurement {
            id: map.non_empty("id")?,
            domain: map.req("domain")?,
            score: in_range(map, "score", 1..=5)?,
            date: map.req("date")?,
            moment: map.req("moment")?,
            by: map.opt("by")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys.
impl KeyCheck for ZrmMeasurement {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "domain" => drop(map.req::<ZrmDomein>("domain")?),
            "score" => drop(in_range(map, "score", 1..=5)?),
            "date" => drop(map.req::<Date>("date")?),
            "moment" => drop(map.req::<Moment>("moment")?),
            "by" => drop(map.opt::<String>("by")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(ZrmMeasurement, "zrm measurement", map);

impl Reconcile for ZrmMeasurement {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_str(&mut map, "domain", self.domain.as_str())?;
        put_u64(&mut map, "score", self.score)?;
        put_str(&mut map, "date", self.date.as_str())?;
        put_str(&mut map, "moment", self.moment.as_str())?;
        put_opt_str(&mut map, "by", self.by.as_deref())?;
        Ok(())
    }
}

/// One participatieladder step: 1 (geïsoleerd) to 6 (betaald werk), on a date, at a
/// moment of the support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LadderMeasurement {
    /// Identifies the measurement across peers; the reconcile key of the list.
    pub id: String,
    /// 1 to 6.
    pub step: u64,
    pub date: Date,
    pub moment: Moment,
    /// User id of who measured it.
    pub by: Option<String>,
}

impl LadderMeasurement {
    /// A new step with a fresh id; `step` outside 1 to 6 is refused.
    pub fn new(step: u64, date: Date, moment: Moment) -> Result<LadderMeasurement, SchemaError> {
        if !(1..=6).contains(&step) {
            return Err(SchemaError::Invalid {
                path: "participatieladder.step".into(),
                reason: format!("must be 1 to 6 (found {step})"),
            });
        }
        Ok(LadderMeasurement {
            id: new_id(),
            step,
            date,
            moment,
            by: None,
        })
    }
}

impl FromMap for LadderMeasurement {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(LadderMeasurement {
            id: map.non_empty("id")?,
            step: in_range(map, "step", 1..=6)?,
            date: map.req("date")?,
            moment: map.req("moment")?,
            by: map.opt("by")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys.
impl KeyCheck for LadderMeasurement {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "step" => drop(in_range(map, "step", 1..=6)?),
            "date" => drop(map.req::<Date>("date")?),
            "moment" => drop(map.req::<Moment>("moment")?),
            "by" => drop(map.opt::<String>("by")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(LadderMeasurement, "ladder measurement", map);

impl Reconcile for LadderMeasurement {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_u64(&mut map, "step", self.step)?;
        put_str(&mut map, "date", self.date.as_str())?;
        put_str(&mut map, "moment", self.moment.as_str())?;
        put_opt_str(&mut map, "by", self.by.as_deref())?;
        Ok(())
    }
}

/// One status change: the stage the plan entered and the date the professional means
/// (entered offline; may be before the day it reached the server, which keeps its own
/// commit time beside it as the "known at" date).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// Identifies the entry across peers; the reconcile key of `status_history`.
    pub id: String,
    pub status: PlanStatus,
    pub date: Date,
    /// User id of who made the change.
    pub by: Option<String>,
}

impl StatusChange {
    /// A new history entry with a fresh id.
    pub fn new(status: PlanStatus, date: Date) -> StatusChange {
        StatusChange {
            id: new_id(),
            status,
            date,
            by: None,
        }
    }
}

impl FromMap for StatusChange {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(StatusChange {
            id: map.non_empty("id")?,
            status: map.req("status")?,
            date: map.req("date")?,
            by: map.opt("by")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys.
impl KeyCheck for StatusChange {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "status" => drop(map.req::<PlanStatus>("status")?),
            "date" => drop(map.req::<Date>("date")?),
            "by" => drop(map.opt::<String>("by")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(StatusChange, "status change", map);

impl Reconcile for StatusChange {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_str(&mut map, "status", self.status.as_str())?;
        put_str(&mut map, "date", self.date.as_str())?;
        put_opt_str(&mut map, "by", self.by.as_deref())?;
        Ok(())
    }
}

/// Who the plan is for. Only a pseudonym is required; contact details are optional.
#[derive(Clone, Debug, PartialEq)]
pub struct Household {
    pub pseudonym: String,
    /// Always written as a map (perhaps empty) so concurrent first edits merge.
    pub contact: ContactDetails,
}

impl FromMap for Household {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(Household {
            pseudonym: map.non_empty("pseudonym")?,
            contact: map.opt("contact")?.unwrap_or_default(),
        })
    }
}

hydrate_with_schema!(Household, "household", map);

impl Reconcile for Household {
    type Key<'k> = NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "pseudonym", &self.pseudonym)?;
        map.put("contact", &self.contact)?;
        Ok(())
    }
}

/// How to reach the household; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactDetails {
    pub name: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
}

impl FromMap for ContactDetails {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(ContactDetails {
            name: map.opt("name")?,
            address: map.opt("address")?,
            phone: map.opt("phone")?,
            email: map.opt("email")?,
        })
    }
}

hydrate_with_schema!(ContactDetails, "contact", map);

impl Reconcile for ContactDetails {
    type Key<'k> = NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_opt_str(&mut map, "name", self.name.as_deref())?;
        put_opt_str(&mut map, "address", self.address.as_deref())?;
        put_opt_str(&mut map, "phone", self.phone.as_deref())?;
        put_opt_str(&mut map, "email", self.email.as_deref())?;
        Ok(())
    }
}

/// A goal in one leefdomein.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    /// Identifies the goal across peers; the reconcile key of the `goals` list.
    pub id: String,
    pub leefdomein: Leefdomein,
    pub description: Text,
    pub status: GoalStatus,
    pub positive_health: Option<PositiveHealth>,
}

impl Goal {
    /// A new open goal with a fresh id.
    pub fn new(leefdomein: Leefdomein, description: impl AsRef<str>) -> Goal {
        Goal {
            id: new_id(),
            leefdomein,
            description: Text::with_value(description),
            status: GoalStatus::Open,
            positive_health: None,
        }
    }
}

impl FromMap for Goal {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(Goal {
            id: map.non_empty("id")?,
            leefdomein: map.req("leefdomein")?,
            description: map.req("description")?,
            status: map.req("status")?,
            positive_health: map.opt("positive_health")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys.
impl KeyCheck for Goal {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "leefdomein" => drop(map.req::<Leefdomein>("leefdomein")?),
            "description" => drop(map.req::<Text>("description")?),
            "status" => drop(map.req::<GoalStatus>("status")?),
            "positive_health" => drop(map.opt::<PositiveHealth>("positive_health")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(Goal, "goal", map);

impl Reconcile for Goal {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_str(&mut map, "leefdomein", self.leefdomein.as_str())?;
        map.put("description", &self.description)?;
        put_str(&mut map, "status", self.status.as_str())?;
        put_opt_str(
            &mut map,
            "positive_health",
            self.positive_health.map(PositiveHealth::as_str),
        )?;
        Ok(())
    }
}

/// Something someone will do, perhaps towards a goal.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    /// Identifies the action across peers; the reconcile key of the `actions` list.
    pub id: String,
    /// The [`Goal::id`] this action serves, if any.
    pub goal_id: Option<String>,
    pub who: ActionWho,
    pub what: Text,
    pub due: Option<Date>,
    pub done: bool,
}

impl Action {
    /// A new action, not done, with a fresh id.
    pub fn new(who: ActionWho, what: impl AsRef<str>) -> Action {
        Action {
            id: new_id(),
            goal_id: None,
            who,
            what: Text::with_value(what),
            due: None,
            done: false,
        }
    }
}

impl FromMap for Action {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(Action {
            id: map.non_empty("id")?,
            goal_id: map.opt("goal_id")?,
            who: map.req("who")?,
            what: map.req("what")?,
            due: map.opt("due")?,
            done: map.req("done")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys.
impl KeyCheck for Action {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "goal_id" => drop(map.opt::<String>("goal_id")?),
            "who" => drop(map.req::<ActionWho>("who")?),
            "what" => drop(map.req::<Text>("what")?),
            "due" => drop(map.opt::<Date>("due")?),
            "done" => drop(map.req::<bool>("done")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(Action, "action", map);

impl Reconcile for Action {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_opt_str(&mut map, "goal_id", self.goal_id.as_deref())?;
        put_str(&mut map, "who", self.who.as_str())?;
        map.put("what", &self.what)?;
        put_opt_str(&mut map, "due", self.due.as_ref().map(Date::as_str))?;
        map.put("done", self.done)?;
        Ok(())
    }
}

/// One entry of the contact log (`contacts` in the document).
#[derive(Clone, Debug, PartialEq)]
pub struct ContactMoment {
    /// Identifies the entry across peers; the reconcile key of the `contacts` list.
    pub id: String,
    pub date: Date,
    pub kind: ContactKind,
    pub summary: Text,
    /// User id of who made the contact.
    pub by: Option<String>,
}

impl ContactMoment {
    /// A new log entry with a fresh id.
    pub fn new(date: Date, kind: ContactKind, summary: impl AsRef<str>) -> ContactMoment {
        ContactMoment {
            id: new_id(),
            date,
            kind,
            summary: Text::with_value(summary),
            by: None,
        }
    }
}

impl FromMap for ContactMoment {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(ContactMoment {
            id: map.non_empty("id")?,
            date: map.req("date")?,
            kind: map.req("kind")?,
            summary: map.req("summary")?,
            by: map.opt("by")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys.
impl KeyCheck for ContactMoment {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "date" => drop(map.req::<Date>("date")?),
            "kind" => drop(map.req::<ContactKind>("kind")?),
            "summary" => drop(map.req::<Text>("summary")?),
            "by" => drop(map.opt::<String>("by")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(ContactMoment, "contact", map);

impl Reconcile for ContactMoment {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_str(&mut map, "date", self.date.as_str())?;
        put_str(&mut map, "kind", self.kind.as_str())?;
        map.put("summary", &self.summary)?;
        put_opt_str(&mut map, "by", self.by.as_deref())?;
        Ok(())
    }
}

/// A consent (toestemming) the household gave, and perhaps withdrew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    /// Identifies the consent across peers; the reconcile key of the `consents` list.
    pub id: String,
    /// What the consent is for, e.g. sharing the plan with the huisarts.
    pub purpose: String,
    pub given_at: Date,
    pub given_by: Option<String>,
    pub withdrawn_at: Option<Date>,
}

impl Consent {
    /// A new consent with a fresh id.
    pub fn new(purpose: impl Into<String>, given_at: Date) -> Consent {
        Consent {
            id: new_id(),
            purpose: purpose.into(),
            given_at,
            given_by: None,
            withdrawn_at: None,
        }
    }
}

impl FromMap for Consent {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(Consent {
            id: map.non_empty("id")?,
            purpose: map.non_empty("purpose")?,
            given_at: map.req("given_at")?,
            given_by: map.opt("given_by")?,
            withdrawn_at: map.opt("withdrawn_at")?,
        })
    }
}

/// Each key as `from_map` reads it: no rule spans two keys.
impl KeyCheck for Consent {
    fn check_key<D: ReadDoc>(map: &MapReader<'_, D>, key: &str) -> Result<bool, SchemaError> {
        match key {
            "id" => drop(map.non_empty("id")?),
            "purpose" => drop(map.non_empty("purpose")?),
            "given_at" => drop(map.req::<Date>("given_at")?),
            "given_by" => drop(map.opt::<String>("given_by")?),
            "withdrawn_at" => drop(map.opt::<Date>("withdrawn_at")?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

hydrate_with_schema!(Consent, "consent", map);

impl Reconcile for Consent {
    keyed_by_id!();

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        put_str(&mut map, "id", &self.id)?;
        put_str(&mut map, "purpose", &self.purpose)?;
        put_str(&mut map, "given_at", self.given_at.as_str())?;
        put_opt_str(&mut map, "given_by", self.given_by.as_deref())?;
        put_opt_str(
            &mut map,
            "withdrawn_at",
            self.withdrawn_at.as_ref().map(Date::as_str),
        )?;
        Ok(())
    }
}

/// The hand-over flag: a maatwerk request to the gemeente.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Handover {
    pub requested: bool,
    /// When it was requested, as the client wrote it.
    pub requested_at: Option<String>,
    pub reason: Option<Text>,
}

impl FromMap for Handover {
    fn from_map<D: ReadDoc>(map: &MapReader<'_, D>) -> Result<Self, SchemaError> {
        Ok(Handover {
            requested: map.req("requested")?,
            requested_at: map.opt("requested_at")?,
            reason: map.opt("reason")?,
        })
    }
}

hydrate_with_schema!(Handover, "handover", map);

/// Is the plan marked for hand-over to the gemeente? Reads only `handover.requested`
/// (cheap: the server asks after every commit); anything but a literal `true` is no.
pub fn is_handed_over(doc: &automerge::Automerge) -> bool {
    use automerge::{ScalarValue, Value};
    let Ok(Some((Value::Object(_), handover))) = automerge::ReadDoc::get(doc, ROOT, "handover")
    else {
        return false;
    };
    matches!(
        automerge::ReadDoc::get(doc, &handover, "requested"),
        Ok(Some((Value::Scalar(v), _))) if matches!(v.as_ref(), ScalarValue::Boolean(true))
    )
}

impl Reconcile for Handover {
    type Key<'k> = NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        map.put("requested", self.requested)?;
        put_opt_str(&mut map, "requested_at", self.requested_at.as_deref())?;
        put_opt(&mut map, "reason", self.reason.as_ref())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::testing::{plan, raw_doc, text};
    use crate::schema::{new_document, validate};
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ObjType};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn wijk() -> WijkId {
        WijkId::new("assen-noord").expect("a valid wijk id")
    }

    fn date(s: &str) -> Date {
        Date::parse(s).expect("a valid date")
    }

    /// A plan with something in every part.
    fn full_plan() -> Plan {
        let mut plan = Plan::new(wijk(), "gezin-17");
        plan.household.contact.phone = Some("0592-123456".into());
        plan.regiehouder = Some("user-anouk".into());
        plan.status = PlanStatus::Uitvoering;
        let mut goal = Goal::new(Leefdomein::Financien, "Schulden in beeld");
        goal.positive_health = Some(PositiveHealth::Meedoen);
        let mut action = Action::new(ActionWho::Buurtteam, "Afspraak bij schuldhulp maken");
        action.goal_id = Some(goal.id.clone());
        action.due = Some(date("2024-04-01"));
        plan.goals.push(goal);
        plan.goals
            .push(Goal::new(Leefdomein::SociaalNetwerk, "Oma betrekken"));
        plan.actions.push(action);
        let mut contact = ContactMoment::new(date("2024-03-05"), ContactKind::Huisbezoek, "Intake");
        contact.by = Some("user-anouk".into());
        plan.contacts.push(contact);
        plan.consents.push(Consent::new(
            "gegevens delen met de huisarts",
            date("2024-03-05"),
        ));
        plan.handover = Handover {
            requested: true,
            requested_at: Some("2024-03-06T10:00:00Z".into()),
            reason: Some(Text::with_value("Beschermd wonen nodig")),
        };
        plan
    }

    /// Hydrates, lets `edit` change the plan, reconciles in one change: what a client does.
    fn edit(doc: &mut Automerge, edit: impl FnOnce(&mut Plan)) -> TestResult {
        let mut plan: Plan = autosurgeon::hydrate(&*doc)?;
        edit(&mut plan);
        let mut tx = doc.transaction();
        autosurgeon::reconcile(&mut tx, &plan)?;
        tx.commit();
        Ok(())
    }

    /// An item read whole (its keys at once, `Slot::map_whole`) shows what automerge's
    /// `get` shows key by key: the winner of concurrent writes to one key, and a key
    /// set to null as absent.
    #[test]
    fn an_item_read_whole_shows_what_get_shows() -> TestResult {
        use automerge::ReadDoc as _;
        let get = automerge::ReadDoc::get::<_, automerge::Prop>;
        let base = new_document(&full_plan())?;
        let goals = match get(&base, &automerge::ROOT, "goals".into())? {
            Some((_, id)) => id,
            None => return Err("no goals".into()),
        };
        let goal = match get(&base, &goals, 0.into())? {
            Some((_, id)) => id,
            None => return Err("no first goal".into()),
        };
        // Two devices set the first goal's status at once; one also clears its health.
        let mut merged = base.fork().with_actor(automerge::ActorId::from([1; 16]));
        let mut other = base.fork().with_actor(automerge::ActorId::from([2; 16]));
        for (doc, status) in [(&mut merged, "bezig"), (&mut other, "behaald")] {
            let mut tx = doc.transaction();
            tx.put(&goal, "status", status)?;
            tx.commit();
        }
        let mut tx = other.transaction();
        tx.put(&goal, "positive_health", automerge::ScalarValue::Null)?;
        tx.commit();
        merged.merge(&mut other)?;
        let (winner, _) = get(&merged, &goal, "status".into())?.ok_or("no status")?;
        assert_eq!(merged.get_all(&goal, "status")?.len(), 2, "a conflict");

        let plan: Plan = autosurgeon::hydrate(&merged)?;
        assert_eq!(
            winner.as_str(),
            Some(plan.goals[0].status.as_str()),
            "the value get shows"
        );
        assert_eq!(plan.goals[0].positive_health, None, "null reads as absent");
        validate(&merged)?;
        Ok(())
    }

    /// The hand-over flag is read from `handover.requested` and nothing else.
    #[test]
    fn hand_over_flag() -> TestResult {
        let mut plan = Plan::new(WijkId::new("noord")?, "HH");
        let doc = new_document(&plan)?;
        assert!(!is_handed_over(&doc));
        plan.handover.requested = true;
        let doc = new_document(&plan)?;
        assert!(is_handed_over(&doc));
        assert!(!is_handed_over(&automerge::Automerge::new()));
        Ok(())
    }

    /// A plan written by `new_document` validates and reads back exactly as written.
    #[test]
    fn round_trip() -> TestResult {
        let plan = full_plan();
        let doc = new_document(&plan)?;
        let meta = validate(&doc)?;
        assert_eq!(meta.kind, DocumentKind::Plan);
        assert_eq!(meta.wijk, wijk());
        assert_eq!(
            doc.get_changes(&[]).len(),
            1,
            "everything is in the first change"
        );
        assert_eq!(Plan::read(&doc)?, plan);
        assert_eq!(autosurgeon::hydrate::<_, Plan>(&doc)?, plan);
        Ok(())
    }

    /// Two professionals each adding a goal offline both keep their goal after merging.
    #[test]
    fn concurrent_goals_both_survive() -> TestResult {
        let mut doc = new_document(&full_plan())?;
        let mut other = doc.fork();
        let mine = Goal::new(Leefdomein::Wonen, "Woning zoeken");
        let theirs = Goal::new(Leefdomein::Opvoeding, "Rust in huis");
        let (mine_id, theirs_id) = (mine.id.clone(), theirs.id.clone());
        edit(&mut doc, |plan| plan.goals.push(mine))?;
        edit(&mut other, |plan| plan.goals.push(theirs))?;
        doc.merge(&mut other)?;

        validate(&doc)?;
        let ids: Vec<String> = Plan::read(&doc)?.goals.into_iter().map(|g| g.id).collect();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(
            ids.contains(&mine_id) && ids.contains(&theirs_id),
            "{ids:?}"
        );
        Ok(())
    }

    /// Concurrent edits to one goal (text, status) and removal of another all merge.
    #[test]
    fn concurrent_edits_inside_goals_merge() -> TestResult {
        let mut doc = new_document(&full_plan())?;
        let mut other = doc.fork();
        edit(&mut doc, |plan| {
            if let Some(goal) = plan.goals.first_mut() {
                goal.description.splice(0, 0, "Alle ");
            }
        })?;
        edit(&mut other, |plan| {
            if let Some(goal) = plan.goals.first_mut() {
                let end = goal.description.as_str().len();
                goal.description.splice(end, 0, " en aflossen");
                goal.status = GoalStatus::Bezig;
            }
            plan.goals.truncate(1);
        })?;
        doc.merge(&mut other)?;

        let goals = Plan::read(&doc)?.goals;
        assert_eq!(goals.len(), 1);
        assert_eq!(
            goals[0].description.as_str(),
            "Alle Schulden in beeld en aflossen"
        );
        assert_eq!(goals[0].status, GoalStatus::Bezig);
        Ok(())
    }

    /// Clearing an optional value removes the key instead of writing null.
    #[test]
    fn clearing_an_option_deletes_the_key() -> TestResult {
        let mut doc = new_document(&full_plan())?;
        edit(&mut doc, |plan| plan.regiehouder = None)?;
        assert!(automerge::ReadDoc::get(&doc, ROOT, "regiehouder")?.is_none());
        assert_eq!(Plan::read(&doc)?.regiehouder, None);
        Ok(())
    }

    /// Reconciling a plan nobody changed writes nothing.
    #[test]
    fn unchanged_plan_writes_nothing() -> TestResult {
        let mut doc = new_document(&full_plan())?;
        let heads = doc.get_heads();
        edit(&mut doc, |_| {})?;
        assert_eq!(doc.get_heads(), heads);
        Ok(())
    }

    /// A plan written by a JavaScript client validates: scalar strings where Rust writes
    /// text, text where Rust writes strings, and defaults for what it left out.
    #[test]
    fn js_shaped_plan_validates() -> TestResult {
        let doc = raw_doc(|tx| {
            let household = plan(tx)?;
            text(tx, &household, "pseudonym", "gezin-18")?;
            let goals = tx.put_object(ROOT, "goals", ObjType::List)?;
            let goal = tx.insert_object(&goals, 0, ObjType::Map)?;
            text(tx, &goal, "id", "g1")?;
            tx.put(&goal, "leefdomein", "werk_en_inkomen")?;
            tx.put(&goal, "description", "Werk vinden")?;
            text(tx, &goal, "status", "bezig")?;
            let actions = tx.put_object(ROOT, "actions", ObjType::List)?;
            let action = tx.insert_object(&actions, 0, ObjType::Map)?;
            tx.put(&action, "id", "a1")?;
            tx.put(&action, "goal_id", "g1")?;
            tx.put(&action, "who", "inwoner")?;
            tx.put(&action, "what", "CV maken")?;
            text(tx, &action, "due", "2024-05-01")?;
            tx.put(&action, "done", false)?;
            tx.put(&action, "extra", "a future field")?;
            Ok(())
        });
        let meta = validate(&doc)?;
        assert_eq!(meta.kind, DocumentKind::Plan);
        let plan = Plan::read(&doc)?;
        assert_eq!(plan.household.pseudonym, "gezin-18");
        assert_eq!(plan.status, PlanStatus::Aanmelding);
        assert_eq!(plan.handover, Handover::default());
        assert_eq!(plan.goals[0].id, "g1");
        assert_eq!(plan.goals[0].status, GoalStatus::Bezig);
        assert_eq!(plan.goals[0].description.as_str(), "Werk vinden");
        assert_eq!(plan.actions[0].due, Some(date("2024-05-01")));
        assert!(plan.contacts.is_empty() && plan.consents.is_empty());
        Ok(())
    }

    /// A Rust client can edit a JS-written plan: scalar text becomes collaborative text,
    /// text-object ids still match, and nothing else is rewritten.
    #[test]
    fn rust_edits_a_js_shaped_plan() -> TestResult {
        let mut doc = raw_doc(|tx| {
            plan(tx)?;
            let goals = tx.put_object(ROOT, "goals", ObjType::List)?;
            let goal = tx.insert_object(&goals, 0, ObjType::Map)?;
            text(tx, &goal, "id", "g1")?;
            text(tx, &goal, "leefdomein", "wonen")?;
            tx.put(&goal, "description", "Huis")?;
            text(tx, &goal, "status", "open")?;
            Ok(())
        });
        edit(&mut doc, |plan| {
            plan.goals
                .push(Goal::new(Leefdomein::Zorg, "Thuiszorg regelen"));
        })?;
        let plan = Plan::read(&doc)?;
        assert_eq!(plan.goals.len(), 2);
        assert_eq!(plan.goals[0].id, "g1");
        let goals = automerge::ReadDoc::get(&doc, ROOT, "goals")?
            .ok_or("goals")?
            .1;
        let first = automerge::ReadDoc::get(&doc, &goals, 0)?.ok_or("goal")?.1;
        for (key, expected) in [
            ("id", ObjType::Text),
            ("status", ObjType::Text),
            ("description", ObjType::Text),
        ] {
            let value = automerge::ReadDoc::get(&doc, &first, key)?.ok_or(key)?.0;
            assert_eq!(value, automerge::Value::Object(expected), "{key}");
        }
        Ok(())
    }

    /// Two professionals each measuring offline (zrm, participatieladder, a status
    /// change) keep every measurement after merging: the lists are keyed by id.
    #[test]
    fn concurrent_measurements_all_survive() -> TestResult {
        let mut doc = new_document(&full_plan())?;
        let mut other = doc.fork();
        edit(&mut doc, |plan| {
            let z =
                ZrmMeasurement::new(ZrmDomein::Financien, 2, date("2024-03-03"), Moment::Intake);
            plan.zelfredzaamheid.extend(z.ok());
            plan.change_status(PlanStatus::Intake, date("2024-03-03"));
        })?;
        edit(&mut other, |plan| {
            let z = ZrmMeasurement::new(
                ZrmDomein::Huisvesting,
                3,
                date("2024-03-04"),
                Moment::Intake,
            );
            plan.zelfredzaamheid.extend(z.ok());
            plan.participatieladder
                .extend(LadderMeasurement::new(2, date("2024-03-04"), Moment::Intake).ok());
            plan.change_status(PlanStatus::Plan, date("2024-03-04"));
        })?;
        doc.merge(&mut other)?;
        validate(&doc)?;
        let plan = Plan::read(&doc)?;
        assert_eq!(plan.zelfredzaamheid.len(), 2);
        assert_eq!(plan.participatieladder.len(), 1);
        let mut history: Vec<_> = plan.status_history.iter().map(|h| h.status).collect();
        history.sort_by_key(|s| s.as_str());
        assert_eq!(history, [PlanStatus::Intake, PlanStatus::Plan]);
        Ok(())
    }

    /// Scores outside 1-5, steps outside 1-6 and unknown moments are refused with the path.
    #[test]
    fn measurement_rejections() {
        let check = |list: &str,
                     build: fn(
            &mut automerge::transaction::Transaction<'_>,
            &automerge::ObjId,
        ) -> Result<(), automerge::AutomergeError>,
                     expected: &str| {
            let doc = raw_doc(|tx| {
                plan(tx)?;
                let items = tx.put_object(ROOT, list, ObjType::List)?;
                let item = tx.insert_object(&items, 0, ObjType::Map)?;
                tx.put(&item, "id", "m1")?;
                tx.put(&item, "date", "2024-03-03")?;
                build(tx, &item)
            });
            assert_eq!(
                validate(&doc).map(|_| ()).map_err(|e| e.to_string()),
                Err(expected.to_owned())
            );
        };
        check(
            "zelfredzaamheid",
            |tx, item| {
                tx.put(item, "domain", "financien")?;
                tx.put(item, "score", 6i64)?;
                tx.put(item, "moment", "intake")
            },
            "plan.zelfredzaamheid[0].score: must be 1 to 5 (found 6)",
        );
        check(
            "participatieladder",
            |tx, item| {
                tx.put(item, "step", 0i64)?;
                tx.put(item, "moment", "intake")
            },
            "plan.participatieladder[0].step: must be 1 to 6 (found 0)",
        );
        check(
            "participatieladder",
            |tx, item| {
                tx.put(item, "step", 3i64)?;
                tx.put(item, "moment", "halverwege")
            },
            "plan.participatieladder[0].moment: unknown value \"halverwege\" (expected one of intake, tussenevaluatie, eindevaluatie)",
        );
        check(
            "status_history",
            |tx, item| tx.put(item, "status", "klaar"),
            "plan.status_history[0].status: unknown value \"klaar\" (expected one of aanmelding, intake, plan, uitvoering, evaluatie, afgesloten)",
        );
        assert!(
            ZrmMeasurement::new(ZrmDomein::Justitie, 0, date("2024-03-03"), Moment::Intake)
                .is_err()
        );
        assert!(LadderMeasurement::new(7, date("2024-03-03"), Moment::Intake).is_err());
    }

    /// A schema-1 plan (no outcome lists, `meta.schema` 1) validates, reads with empty
    /// lists, and gains measurements by an ordinary edit without touching `meta`.
    #[test]
    fn version_one_plan_migrates_by_writing() -> TestResult {
        let mut doc = raw_doc(|tx| plan(tx).map(drop));
        assert_eq!(validate(&doc)?.schema, 1);
        let read = Plan::read(&doc)?;
        assert!(read.zelfredzaamheid.is_empty() && read.status_history.is_empty());
        let (_, meta_before) = automerge::ReadDoc::get(&doc, ROOT, "meta")?.ok_or("meta")?;
        let heads = doc.get_heads();
        edit(&mut doc, |plan| {
            plan.change_status(PlanStatus::Intake, date("2024-03-03"));
        })?;
        let (_, meta_after) = automerge::ReadDoc::get(&doc, ROOT, "meta")?.ok_or("meta")?;
        assert_eq!(meta_before, meta_after);
        let checked = crate::schema::validate_changes(
            &doc,
            &heads,
            &doc.get_changes(&heads),
            DocumentKind::Plan,
        )?;
        assert_eq!(checked.meta, None, "meta untouched, not read");
        assert_eq!(validate(&doc)?.schema, 1);
        assert_eq!(Plan::read(&doc)?.status_history.len(), 1);
        Ok(())
    }

    /// A plan document is not an activiteit and vice versa.
    #[test]
    fn kind_must_match() {
        let doc = raw_doc(crate::schema::testing::activiteit);
        let err = Plan::read(&doc).expect_err("an activiteit is not a plan");
        assert_eq!(
            err.to_string(),
            "meta.kind: expected \"plan\", found \"activiteit\""
        );
    }
}
