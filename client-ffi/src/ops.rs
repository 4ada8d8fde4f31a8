//! The typed domain operations of [`BuurtClient`]: create a plan or activiteit, and
//! edit their parts (goals, actions, contact moments, consents, sessions, and since
//! schema 2 dated status changes and zelfredzaamheid/participatieladder measurements).
//!
//! Each operation hydrates the document into sync-core's schema types, changes them,
//! reconciles the difference as one automerge change, validates the whole document,
//! and writes it to the local store before returning. A refused edit or a failed write
//! leaves the document as it was.

use std::sync::Arc;

use autosurgeon::{Hydrate, Reconcile, Text};
use sync_core::engine::rollback;
use sync_core::partition::{DocumentKind as CoreKind, Partition, WijkId};
use sync_core::protocol::DocumentId;
use sync_core::schema::{
    self, Action, Activiteit, Consent, ContactMoment, Date, Goal, LadderMeasurement, Plan, Session,
    ZrmMeasurement,
};

use crate::client::{parse_id, BuurtClient};
use crate::error::{ClientError, Result};
use crate::model::{
    ActionWho, ChangeKind, ContactKind, GoalStatus, Leefdomein, Moment, PlanStatus, SessionInput,
    ZrmDomein,
};
use crate::replica::Replica;
use crate::state::Shared;

#[uniffi::export(async_runtime = "tokio")]
impl BuurtClient {
    /// Creates a household plan (status `aanmelding`) in `wijk`; returns its id.
    pub async fn create_plan(&self, wijk: String, pseudonym: String) -> Result<String> {
        let wijk = parse_wijk(wijk)?;
        if pseudonym.trim().is_empty() {
            return Err(ClientError::invalid("the household pseudonym is empty"));
        }
        let doc = schema::new_document(&Plan::new(wijk.clone(), pseudonym))?;
        self.insert(CoreKind::Plan, wijk, doc).await
    }

    /// Creates an activiteit with a title (and optionally its type and location).
    pub async fn create_activiteit(
        &self,
        wijk: String,
        title: String,
        activity_type: Option<String>,
        location: Option<String>,
    ) -> Result<String> {
        let wijk = parse_wijk(wijk)?;
        if title.trim().is_empty() {
            return Err(ClientError::invalid("the title is empty"));
        }
        let mut act = Activiteit::new(wijk.clone(), title);
        act.activity_type = activity_type;
        act.location = location;
        let doc = schema::new_document(&act)?;
        self.insert(CoreKind::Activiteit, wijk, doc).await
    }

    /// Moves the plan to another stage of its lifecycle.
    pub async fn set_plan_status(&self, doc_id: String, status: PlanStatus) -> Result<()> {
        self.edit_plan(doc_id, move |plan| {
            plan.status = status.into();
            Ok(())
        })
        .await
    }

    /// Makes `user_id` the plan's one contact person (regiehouder).
    pub async fn set_regiehouder(&self, doc_id: String, user_id: String) -> Result<()> {
        self.edit_plan(doc_id, move |plan| {
            plan.regiehouder = Some(user_id);
            Ok(())
        })
        .await
    }

    /// Adds an open goal in a leefdomein; returns the goal's id.
    pub async fn add_goal(
        &self,
        doc_id: String,
        leefdomein: Leefdomein,
        description: String,
    ) -> Result<String> {
        self.edit_plan(doc_id, move |plan| {
            let goal = Goal::new(leefdomein.into(), description);
            let id = goal.id.clone();
            plan.goals.push(goal);
            Ok(id)
        })
        .await
    }

    /// Changes a goal's status and/or description (a text edit that merges with
    /// concurrent edits of the same description).
    pub async fn update_goal(
        &self,
        doc_id: String,
        goal_id: String,
        status: Option<GoalStatus>,
        description: Option<String>,
    ) -> Result<()> {
        self.edit_plan(doc_id, move |plan| {
            let goal = plan
                .goals
                .iter_mut()
                .find(|g| g.id == goal_id)
                .ok_or_else(|| wrong(format!("the plan has no goal {goal_id}")))?;
            if let Some(status) = status {
                goal.status = status.into();
            }
            if let Some(description) = description {
                goal.description.update(description);
            }
            Ok(())
        })
        .await
    }

    /// Adds an action (optionally towards a goal, with a due date `YYYY-MM-DD`).
    pub async fn add_action(
        &self,
        doc_id: String,
        who: ActionWho,
        what: String,
        goal_id: Option<String>,
        due: Option<String>,
    ) -> Result<String> {
        let due = due.map(|d| parse_date(&d)).transpose()?;
        self.edit_plan(doc_id, move |plan| {
            if let Some(goal_id) = &goal_id {
                if !plan.goals.iter().any(|g| &g.id == goal_id) {
                    return Err(wrong(format!("the plan has no goal {goal_id}")));
                }
            }
            let mut action = Action::new(who.into(), what);
            action.goal_id = goal_id;
            action.due = due;
            let id = action.id.clone();
            plan.actions.push(action);
            Ok(id)
        })
        .await
    }

    /// Marks an action done (or not done).
    pub async fn set_action_done(
        &self,
        doc_id: String,
        action_id: String,
        done: bool,
    ) -> Result<()> {
        self.edit_plan(doc_id, move |plan| {
            let action = plan
                .actions
                .iter_mut()
                .find(|a| a.id == action_id)
                .ok_or_else(|| wrong(format!("the plan has no action {action_id}")))?;
            action.done = done;
            Ok(())
        })
        .await
    }

    /// Logs a contact moment (huisbezoek, wijkcentrum, school, telefoon, digitaal).
    pub async fn add_contact_moment(
        &self,
        doc_id: String,
        date: String,
        kind: ContactKind,
        summary: String,
        by: Option<String>,
    ) -> Result<String> {
        let date = parse_date(&date)?;
        self.edit_plan(doc_id, move |plan| {
            let mut contact = ContactMoment::new(date, kind.into(), summary);
            contact.by = by;
            let id = contact.id.clone();
            plan.contacts.push(contact);
            Ok(id)
        })
        .await
    }

    /// Records a consent (toestemming) the household gave.
    pub async fn add_consent(
        &self,
        doc_id: String,
        purpose: String,
        given_at: String,
        given_by: Option<String>,
    ) -> Result<String> {
        let given_at = parse_date(&given_at)?;
        if purpose.trim().is_empty() {
            return Err(ClientError::invalid("the consent's purpose is empty"));
        }
        self.edit_plan(doc_id, move |plan| {
            let mut consent = Consent::new(purpose, given_at);
            consent.given_by = given_by;
            let id = consent.id.clone();
            plan.consents.push(consent);
            Ok(id)
        })
        .await
    }

    /// Records that a consent was withdrawn on `withdrawn_at`.
    pub async fn withdraw_consent(
        &self,
        doc_id: String,
        consent_id: String,
        withdrawn_at: String,
    ) -> Result<()> {
        let withdrawn_at = parse_date(&withdrawn_at)?;
        self.edit_plan(doc_id, move |plan| {
            let consent = plan
                .consents
                .iter_mut()
                .find(|c| c.id == consent_id)
                .ok_or_else(|| wrong(format!("the plan has no consent {consent_id}")))?;
            consent.withdrawn_at = Some(withdrawn_at);
            Ok(())
        })
        .await
    }

    /// Moves the plan to another stage as of `date` (`YYYY-MM-DD`, the day the
    /// professional means, which may be before the device is back online): sets the
    /// status and adds a dated entry to the status history; returns the entry's id.
    pub async fn change_plan_status(
        &self,
        doc_id: String,
        status: PlanStatus,
        date: String,
        by: Option<String>,
    ) -> Result<String> {
        let date = parse_date(&date)?;
        self.edit_plan(doc_id, move |plan| {
            let entry = plan.change_status(status.into(), date);
            let id = entry.id.clone();
            if let Some(last) = plan.status_history.last_mut() {
                last.by = by;
            }
            Ok(id)
        })
        .await
    }

    /// Adds a zelfredzaamheidsmatrix score (1 to 5) for one domain, measured on `date`
    /// at `moment`; returns the measurement's id. Two professionals' scores both stay.
    pub async fn add_zrm_measurement(
        &self,
        doc_id: String,
        domain: ZrmDomein,
        score: u64,
        date: String,
        moment: Moment,
        by: Option<String>,
    ) -> Result<String> {
        let date = parse_date(&date)?;
        let mut m = ZrmMeasurement::new(domain.into(), score, date, moment.into())
            .map_err(|e| ClientError::invalid(e.to_string()))?;
        m.by = by;
        self.edit_plan(doc_id, move |plan| {
            let id = m.id.clone();
            plan.zelfredzaamheid.push(m);
            Ok(id)
        })
        .await
    }

    /// Adds a participatieladder step (1 to 6) measured on `date` at `moment`; returns
    /// the measurement's id.
    pub async fn add_ladder_measurement(
        &self,
        doc_id: String,
        step: u64,
        date: String,
        moment: Moment,
        by: Option<String>,
    ) -> Result<String> {
        let date = parse_date(&date)?;
        let mut m = LadderMeasurement::new(step, date, moment.into())
            .map_err(|e| ClientError::invalid(e.to_string()))?;
        m.by = by;
        self.edit_plan(doc_id, move |plan| {
            let id = m.id.clone();
            plan.participatieladder.push(m);
            Ok(id)
        })
        .await
    }

    /// Logs a session of an activiteit; returns the session's id.
    pub async fn add_session(&self, doc_id: String, session: SessionInput) -> Result<String> {
        let date = parse_date(&session.date)?;
        if !session.volunteer_hours.is_finite() || session.volunteer_hours < 0.0 {
            return Err(ClientError::invalid(format!(
                "volunteer hours must be a number of zero or more, not {}",
                session.volunteer_hours
            )));
        }
        self.edit::<Activiteit, _>(doc_id, CoreKind::Activiteit, move |act| {
            let mut s = Session::new(date, session.attendance, session.volunteer_hours);
            s.notes = session.notes.map(Text::with_value);
            s.signals = session.signals.into_iter().map(Text::with_value).collect();
            s.participants = session.participants;
            let id = s.id.clone();
            act.sessions.push(s);
            Ok(id)
        })
        .await
    }
}

impl BuurtClient {
    async fn edit_plan<R: Send + 'static>(
        &self,
        doc_id: String,
        f: impl FnOnce(&mut Plan) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.edit::<Plan, _>(doc_id, CoreKind::Plan, f).await
    }

    /// Hydrate, edit, reconcile as one change, validate, persist; or change nothing.
    async fn edit<T, R>(
        &self,
        doc_id: String,
        kind: CoreKind,
        f: impl FnOnce(&mut T) -> Result<R> + Send + 'static,
    ) -> Result<R>
    where
        T: Hydrate + Reconcile,
        R: Send + 'static,
    {
        let id = parse_id(&doc_id)?;
        self.run(move |shared| async move {
            let mut docs = shared.docs.lock().await;
            let replica = docs
                .map
                .get_mut(&id)
                .ok_or(ClientError::NotFound { doc_id })?;
            if replica.partition.kind != kind {
                return Err(wrong(format!(
                    "document {id} is a {}, not a {}",
                    replica.partition.kind.as_str(),
                    kind.as_str()
                )));
            }
            let before = replica.doc.get_heads();
            let result = apply(&mut replica.doc, f);
            let result = match result {
                Ok(r) => r,
                Err(e) => {
                    rollback(&mut replica.doc, &before);
                    return Err(e);
                }
            };
            if replica.doc.get_heads() == before {
                return Ok(result); // nothing changed, nothing to store
            }
            let unacked_before = replica.unacked.clone();
            replica.record_local(&before);
            if let Err(e) = shared.store.put(id, replica).await {
                rollback(&mut replica.doc, &before);
                replica.unacked = unacked_before;
                return Err(e);
            }
            replica.dirty = true;
            shared.counts_changed(&docs);
            drop(docs);
            announce_local(&shared, id);
            Ok(result)
        })
        .await
    }

    /// Stores a new document and hands it to the sync loop.
    async fn insert(
        &self,
        kind: CoreKind,
        wijk: WijkId,
        doc: automerge::Automerge,
    ) -> Result<String> {
        let id = DocumentId::random();
        self.run(move |shared| async move {
            let partition = Partition { wijk, kind };
            let mut replica = Replica::created(partition, doc);
            let mut docs = shared.docs.lock().await;
            shared.store.put(id, &replica).await?;
            replica.dirty = true;
            docs.map.insert(id, replica);
            shared.counts_changed(&docs);
            drop(docs);
            announce_local(&shared, id);
            Ok(id.to_string())
        })
        .await
    }
}

/// The edit itself, on the document in memory (rolled back by the caller on error).
///
/// The value is hydrated from the transaction, not from the document: a transaction's
/// base heads also name this actor's previous change when a merged change built on it
/// (automerge makes every change depend on its actor's last one), so they can differ
/// from `get_heads()`. autosurgeon compares a hydrated `Text`'s heads with the heads it
/// reconciles into and fails ("data to be reconciled is stale") when they differ;
/// hydrating from the transaction makes both sides the same heads.
pub(crate) fn apply<T, R>(
    doc: &mut automerge::Automerge,
    f: impl FnOnce(&mut T) -> Result<R>,
) -> Result<R>
where
    T: Hydrate + Reconcile,
{
    let mut tx = doc.transaction();
    // issue 20: hydrate behind sync_core::guard (a panic is an error, not an unwind).
    let mut value: T = sync_core::guard::hydrate(&tx).map_err(|e| ClientError::Corrupt {
        message: format!("the document does not read as its kind: {e}"),
    })?;
    // On an error below, dropping the transaction rolls it back.
    let result = f(&mut value)?;
    autosurgeon::reconcile(&mut tx, &value).map_err(|e| ClientError::Schema {
        message: e.to_string(),
    })?;
    tx.commit();
    schema::validate(doc)?;
    Ok(result)
}

fn announce_local(shared: &Arc<Shared>, id: DocumentId) {
    shared.changed(id, ChangeKind::Local);
    shared.wake.notify_one();
}

fn parse_wijk(wijk: String) -> Result<WijkId> {
    WijkId::new(wijk).map_err(|e| ClientError::invalid(e.to_string()))
}

fn parse_date(date: &str) -> Result<Date> {
    Date::parse(date).map_err(|e| ClientError::invalid(e.to_string()))
}

fn wrong(message: String) -> ClientError {
    ClientError::WrongDocument { message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::schema::Leefdomein as CoreLeefdomein;

    /// A typed edit of a text field never fails after a colleague's change that was
    /// built on ours has been merged (the document then has this actor's last change
    /// below its heads): the "data to be reconciled is stale" case of issue 15.
    #[test]
    fn edit_after_merging_a_change_built_on_ours() -> Result<(), Box<dyn std::error::Error>> {
        let mut ours = schema::new_document(&Plan::new(WijkId::new("noord")?, "HH-1"))?;
        let goal = apply(&mut ours, |p: &mut Plan| {
            let g = Goal::new(CoreLeefdomein::Wonen, "eerst");
            let id = g.id.clone();
            p.goals.push(g);
            Ok(id)
        })?;
        // A colleague receives our change and edits on top of it.
        let mut theirs = ours.fork();
        let date = parse_date("2026-03-02")?;
        apply(&mut theirs, |p: &mut Plan| {
            p.contacts.push(ContactMoment::new(
                date,
                schema::ContactKind::Huisbezoek,
                "keukentafel",
            ));
            Ok(())
        })?;
        ours.merge(&mut theirs)?;
        for i in 0..20 {
            apply(&mut ours, |p: &mut Plan| {
                let g = p
                    .goals
                    .iter_mut()
                    .find(|g| g.id == goal)
                    .ok_or_else(|| wrong("no goal".into()))?;
                g.description.update(format!("versie {i}"));
                Ok(())
            })?;
        }
        Ok(())
    }
}
