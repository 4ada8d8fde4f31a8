//! The "assen" workload (shared brief §6) at a chosen scale: who the devices are, which
//! documents each holds, and the schema-valid edits they make.
//!
//! Everything here is deterministic given the seed, so two runs against two servers
//! replay the same documents, the same devices and the same edits.

use automerge::Automerge;
use sync_core::partition::WijkId;
use sync_core::protocol::DocumentId;
use sync_core::schema::{
    self, Action, ActionWho, Activiteit, ContactKind, ContactMoment, Date, Goal, GoalStatus,
    Leefdomein, Plan, SchemaError, Session,
};

/// Full-scale "assen": 8 wijken, 120 professionals, 300 volunteer devices, 5,000 plans,
/// 600 activiteiten.
pub const ASSEN: Sizes = Sizes {
    wijken: 8,
    professionals: 120,
    volunteers: 300,
    plans: 5_000,
    activiteiten: 600,
};

/// Wijken of Assen, used as wijk ids (`assen-noord`, ...) so logs read naturally.
const WIJK_NAMES: [&str; 8] = [
    "noord",
    "oost",
    "zuid",
    "west",
    "centrum",
    "kloosterveen",
    "marsdijk",
    "pittelo",
];

/// Counts of the workload's population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sizes {
    pub wijken: usize,
    pub professionals: usize,
    pub volunteers: usize,
    pub plans: usize,
    pub activiteiten: usize,
}

impl Sizes {
    /// "assen" times `factor`, each count at least one per wijk where it matters.
    pub fn scaled(factor: f64) -> Sizes {
        let f = |n: usize| ((n as f64) * factor).round().max(1.0) as usize;
        let wijken = ASSEN.wijken;
        Sizes {
            wijken,
            professionals: f(ASSEN.professionals).max(wijken),
            volunteers: f(ASSEN.volunteers).max(wijken),
            plans: f(ASSEN.plans).max(wijken),
            activiteiten: f(ASSEN.activiteiten).max(wijken),
        }
    }
}

/// The id of wijk `i`.
pub fn wijk_id(i: usize) -> String {
    match WIJK_NAMES.get(i) {
        Some(name) => format!("assen-{name}"),
        None => format!("assen-{i}"),
    }
}

/// What a device is: a professional (plans and activiteiten of its wijk) or a
/// volunteer (activiteiten of its wijk only, never plans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Professional,
    Volunteer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Professional => "professional",
            Role::Volunteer => "volunteer",
        }
    }
}

/// One wijk's documents.
#[derive(Debug, Clone, Default)]
pub struct WijkDocs {
    pub plans: Vec<DocumentId>,
    pub activiteiten: Vec<DocumentId>,
}

/// A device of the workload.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub name: String,
    pub role: Role,
    pub wijk: usize,
}

/// Devices spread round-robin over the wijken.
pub fn devices(sizes: &Sizes) -> Vec<DeviceSpec> {
    let mut out = Vec::with_capacity(sizes.professionals + sizes.volunteers);
    for i in 0..sizes.professionals {
        out.push(DeviceSpec {
            name: format!("prof-{i}"),
            role: Role::Professional,
            wijk: i % sizes.wijken,
        });
    }
    for i in 0..sizes.volunteers {
        out.push(DeviceSpec {
            name: format!("vrijw-{i}"),
            role: Role::Volunteer,
            wijk: i % sizes.wijken,
        });
    }
    out
}

/// Ids a device of `role` holds in its wijk.
pub fn holdings(role: Role, docs: &WijkDocs) -> Vec<DocumentId> {
    match role {
        Role::Professional => docs
            .plans
            .iter()
            .chain(&docs.activiteiten)
            .copied()
            .collect(),
        Role::Volunteer => docs.activiteiten.clone(),
    }
}

/// A date in 2028 derived from a counter, so sessions and contacts look plausible.
fn date(n: u64) -> Date {
    let month = (n % 12) as u8 + 1;
    let day = (n % 28) as u8 + 1;
    Date::from_ymd(2028, month, day).unwrap_or_else(|_| Date::parse("2028-01-01").expect("date"))
}

const LEEFDOMEINEN: [Leefdomein; 7] = [
    Leefdomein::Financien,
    Leefdomein::Wonen,
    Leefdomein::Opvoeding,
    Leefdomein::Gezondheid,
    Leefdomein::SociaalNetwerk,
    Leefdomein::Dagbesteding,
    Leefdomein::Veiligheid,
];

/// A new plan for household `n` in `wijk`, with `history` further edits.
pub fn new_plan(
    wijk: &str,
    n: usize,
    history: usize,
    rng: &mut fastrand::Rng,
) -> Result<Automerge, SchemaError> {
    let wijk = WijkId::new(wijk).map_err(|e| SchemaError::Read(e.to_string()))?;
    let mut doc = schema::new_document(&Plan::new(wijk, format!("huishouden-{n:05}")))?;
    for _ in 0..history {
        edit_plan(&mut doc, rng)?;
    }
    Ok(doc)
}

/// A new activiteit `n` in `wijk`, with `history` further edits.
pub fn new_activiteit(
    wijk: &str,
    n: usize,
    history: usize,
    rng: &mut fastrand::Rng,
) -> Result<Automerge, SchemaError> {
    let wijk = WijkId::new(wijk).map_err(|e| SchemaError::Read(e.to_string()))?;
    let mut doc = schema::new_document(&Activiteit::new(wijk, format!("Activiteit {n}")))?;
    for _ in 0..history {
        edit_activiteit(&mut doc, rng)?;
    }
    Ok(doc)
}

/// One edit of a plan during a home visit: a contact moment, a goal, an action, or a
/// goal's status moving on. One automerge change.
pub fn edit_plan(doc: &mut Automerge, rng: &mut fastrand::Rng) -> Result<(), SchemaError> {
    let pick = rng.u8(0..4);
    let n = rng.u64(..);
    schema::update::<Plan>(doc, |plan| match pick {
        0 => plan.contacts.push(ContactMoment::new(
            date(n),
            ContactKind::Huisbezoek,
            "Huisbezoek: afspraken doorgenomen",
        )),
        1 => plan.goals.push(Goal::new(
            LEEFDOMEINEN[(n % LEEFDOMEINEN.len() as u64) as usize],
            "Grip op de post en de rekeningen",
        )),
        2 => plan.actions.push(Action::new(
            ActionWho::Buurtteam,
            "Samen de aanvraag invullen",
        )),
        _ => match plan.goals.last_mut() {
            Some(goal) => {
                // Always a different status, so every edit is a change.
                goal.status = match goal.status {
                    GoalStatus::Open | GoalStatus::Gestopt => GoalStatus::Bezig,
                    GoalStatus::Bezig => GoalStatus::Behaald,
                    GoalStatus::Behaald => GoalStatus::Gestopt,
                }
            }
            None => plan.contacts.push(ContactMoment::new(
                date(n),
                ContactKind::Telefoon,
                "Telefonisch contact",
            )),
        },
    })
}

/// One edit of an activiteit: a new session, or attendance and hours of the last one.
pub fn edit_activiteit(doc: &mut Automerge, rng: &mut fastrand::Rng) -> Result<(), SchemaError> {
    let n = rng.u64(..);
    let new_session = rng.u8(0..3) == 0;
    schema::update::<Activiteit>(doc, |a| match a.sessions.last_mut() {
        Some(last) if !new_session => {
            last.attendance += 1;
            last.volunteer_hours += 0.5;
        }
        _ => a
            .sessions
            .push(Session::new(date(n), n % 25, (n % 8) as f64 / 2.0)),
    })
}

/// One edit of whichever kind `doc` is (plans have `household`).
pub fn edit(
    doc: &mut Automerge,
    is_plan: bool,
    rng: &mut fastrand::Rng,
) -> Result<(), SchemaError> {
    if is_plan {
        edit_plan(doc, rng)
    } else {
        edit_activiteit(doc, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every edit the workload makes keeps the document schema-valid, so our server
    /// accepts the whole replay.
    #[test]
    fn edits_stay_schema_valid() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut plan = new_plan(&wijk_id(0), 1, 40, &mut rng).expect("plan");
        let mut act = new_activiteit(&wijk_id(1), 1, 40, &mut rng).expect("activiteit");
        for _ in 0..20 {
            edit(&mut plan, true, &mut rng).expect("plan edit");
            edit(&mut act, false, &mut rng).expect("activiteit edit");
        }
        assert_eq!(
            schema::validate(&plan).expect("valid").kind.as_str(),
            "plan"
        );
        assert_eq!(
            schema::validate(&act).expect("valid").kind.as_str(),
            "activiteit"
        );
        assert_eq!(plan.get_changes(&[]).len(), 61);
    }

    /// Scaling keeps at least one of everything per wijk and hits "assen" at 1.0.
    #[test]
    fn sizes_scale() {
        assert_eq!(Sizes::scaled(1.0), ASSEN);
        let small = Sizes::scaled(0.001);
        assert_eq!(small.professionals, 8);
        assert_eq!(small.plans, 8);
        assert_eq!(wijk_id(0), "assen-noord");
        assert_eq!(wijk_id(9), "assen-9");
    }
}
