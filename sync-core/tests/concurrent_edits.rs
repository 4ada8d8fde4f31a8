//! `schema::update` on documents that have seen other replicas' changes: a typed edit
//! must never fail because a colleague's edit arrived (issue 15, autosurgeon's "data
//! to be reconciled is stale").

use automerge::{ActorId, Automerge};
use sync_core::partition::WijkId;
use sync_core::schema::{
    self, ContactKind, ContactMoment, Date, Goal, GoalStatus, Leefdomein, Plan, PlanStatus,
};

/// A device's copy of `doc`, writing as its own actor.
fn replica(doc: &Automerge) -> Automerge {
    let mut copy = Automerge::load(&doc.save()).expect("load");
    copy.set_actor(ActorId::random());
    copy
}

/// Brings `to` up to date with `from` (what a sync round does).
fn sync(to: &mut Automerge, from: &Automerge) {
    let mut from = from.clone();
    to.merge(&mut from).expect("merge");
}

fn date(day: u8) -> Date {
    Date::from_ymd(2028, 5, day).expect("date")
}

/// The edits of a home visit: goals, contacts, a goal's status and text, the plan status.
fn edit(doc: &mut Automerge, who: &str, n: usize) -> Result<(), schema::SchemaError> {
    schema::update::<Plan>(doc, |plan| match n % 5 {
        0 => plan
            .goals
            .push(Goal::new(Leefdomein::Wonen, format!("{who} doel {n}"))),
        1 => plan.contacts.push(ContactMoment::new(
            date(1 + (n % 28) as u8),
            ContactKind::Huisbezoek,
            format!("{who} huisbezoek {n}"),
        )),
        2 => {
            if let Some(goal) = plan.goals.first_mut() {
                goal.status = match goal.status {
                    GoalStatus::Open => GoalStatus::Bezig,
                    _ => GoalStatus::Open,
                };
            }
        }
        3 => {
            if let Some(goal) = plan.goals.last_mut() {
                let text = format!("{} ({who} {n})", goal.description.as_str());
                goal.description.update(text);
            }
        }
        _ => {
            plan.status = match plan.status {
                PlanStatus::Intake => PlanStatus::Plan,
                _ => PlanStatus::Intake,
            }
        }
    })
}

/// Two replicas edit the same plan concurrently (goals, contacts, status), merge, and
/// then each makes 20 typed edits, syncing in between: none fails and nothing is lost.
#[test]
fn typed_edits_after_concurrent_edits_never_fail() {
    let wijk = WijkId::new("assen-noord").expect("wijk");
    let mut plan = Plan::new(wijk, "huishouden-1");
    plan.goals
        .push(Goal::new(Leefdomein::Financien, "Grip op de post"));
    plan.contacts.push(ContactMoment::new(
        date(1),
        ContactKind::Telefoon,
        "Kennismaking",
    ));
    let origin = schema::new_document(&plan).expect("new plan");
    let mut a = replica(&origin);
    let mut b = replica(&origin);

    // Offline at the kitchen table, both at once.
    for n in 0..5 {
        edit(&mut a, "a", n).expect("a's offline edit");
        edit(&mut b, "b", n).expect("b's offline edit");
    }
    sync(&mut a, &b);
    sync(&mut b, &a);
    assert_eq!(a.get_heads(), b.get_heads());
    assert!(
        a.get_heads().len() > 1,
        "the replicas hold concurrent heads"
    );

    // Back online: each edit reaches the other before its next one.
    for n in 5..25 {
        edit(&mut a, "a", n).unwrap_or_else(|e| panic!("a's edit {n} failed: {e}"));
        sync(&mut b, &a);
        edit(&mut b, "b", n).unwrap_or_else(|e| panic!("b's edit {n} failed: {e}"));
        sync(&mut a, &b);
    }
    sync(&mut b, &a);

    let a_plan = Plan::read(&a).expect("a reads");
    let b_plan = Plan::read(&b).expect("b reads");
    assert_eq!(a_plan, b_plan);
    // 1 + 5 goals from each replica (n % 5 == 0 for n in 0..25).
    assert_eq!(a_plan.goals.len(), 1 + 2 * 5);
    assert_eq!(a_plan.contacts.len(), 1 + 2 * 5);
    schema::validate(&a).expect("valid");
}
