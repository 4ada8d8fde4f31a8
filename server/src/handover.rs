//! Hand-over without history (issue 16, item 5): the document a consulent reads instead
//! of the plan.
//!
//! A plan's automerge history holds everything anyone ever wrote in it, including
//! contact notes deleted long before a hand-over. So the consulent never receives the
//! plan itself: when a plan's committed `handover.requested` becomes true, the server
//! builds a **hand-over copy**, a new document (new id, same partition) holding the
//! plan's current state and no history (`schema::current_state_only`), whose catalog
//! row names the plan (`handover_of`). While the hand-over lasts, every commit of the
//! plan is mirrored into the copy as one plain edit (`schema::mirror_current_state`),
//! so the consulent sees what the plan says now, and of the history only what changed
//! after the hand-over. The policy lets only a consulent read a copy and nobody write
//! it (`policy::DocFacts::handover_copy`); the team works on the plan.
//!
//! When the hand-over is withdrawn the copy is erased (tombstone, key destroyed), so
//! consulent devices are told `doc-unavailable` and purge it; a new hand-over makes a
//! new copy. Erasing the plan erases its copy (`Store::erase`). The two are linked in
//! the audit log: the copy's `create` entry says `hand-over copy of <plan>`, its
//! `write` entries `follows <plan>`, its `erase` entry `hand-over of <plan> withdrawn`.
//!
//! Order, so that a failure never shows the consulent more than it should see: the
//! copy is erased *before* the withdrawing change commits (if that fails, the change is
//! refused), and made or updated only *after* the plan's change committed (if that
//! fails, the copy is missing or behind, and the plan's next commit repairs it). The
//! caller holds the plan's document lock, so one plan's copy is maintained by one
//! commit at a time; the lock order is plan, then copy.

use automerge::Automerge;
use sync_core::engine;
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, is_handed_over};

use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;
use crate::hub::{off_reactor, DocEntry, Hub};
use crate::store::{now, CatalogEntry, Store};

/// Who caused the copy's change: the (user, device) whose commit of the plan it
/// follows. Recorded as the author of the copy's changes and in its audit entries.
pub type Cause<'a> = (&'a str, &'a str);

/// Brings the plan's hand-over copy in line with the plan's committed state `doc`:
/// made when the plan is handed over and has none, mirrored when it has one. Call it
/// after a commit of a handed-over plan, with the plan's lock held.
pub async fn follow(
    hub: &Hub,
    store: &Store,
    plan: &DocEntry,
    doc: &Automerge,
    by: Cause<'_>,
) -> Result<(), Error> {
    if !is_handed_over(doc) {
        return Ok(());
    }
    let plan_id = plan.id();
    match store.documents().handover_copy_of(&plan_id).await? {
        None => make(hub, plan, doc, by).await,
        Some(copy) => mirror(hub, plan_id, copy, doc, by).await,
    }
}

/// Erases the plan's hand-over copy, if it has one: the hand-over is being withdrawn.
/// Call it before the withdrawing change commits.
pub async fn withdraw(
    hub: &Hub,
    store: &Store,
    plan: &DocEntry,
    by: Cause<'_>,
) -> Result<(), Error> {
    let plan_id = plan.id();
    let Some(copy) = store.documents().handover_copy_of(&plan_id).await? else {
        return Ok(());
    };
    let tombstone = store.documents().erase(&copy, by.0).await?;
    hub.erased(copy);
    store
        .audit()
        .append(
            &AuditEvent::new(by.0, by.1, AuditAction::Erase)
                .on(&copy, Some(&tombstone.partition))
                .with_detail(format!("hand-over of {plan_id} withdrawn")),
        )
        .await?;
    tracing::info!(plan = %plan_id, %copy, "hand-over copy erased");
    Ok(())
}

async fn make(hub: &Hub, plan: &DocEntry, doc: &Automerge, by: Cause<'_>) -> Result<(), Error> {
    let plan_id = plan.id();
    let copy_doc =
        off_reactor(|| schema::current_state_only(doc)).map_err(sync_core::Error::from)?;
    let copy = DocumentId::random();
    let partition = plan.catalog.partition.clone();
    let event = AuditEvent::new(by.0, by.1, AuditAction::Create)
        .on(&copy, Some(&partition))
        .with_detail(format!("hand-over copy of {plan_id}"));
    let catalog = CatalogEntry {
        id: copy,
        partition,
        created_at: now(),
        created_by: by.0.to_owned(),
        handover_of: Some(plan_id),
    };
    let entry = hub
        .create_with(catalog, copy_doc, by, std::slice::from_ref(&event), None)
        .await?;
    entry.announce();
    tracing::info!(plan = %plan_id, %copy, "hand-over copy made");
    Ok(())
}

async fn mirror(
    hub: &Hub,
    plan_id: DocumentId,
    copy: DocumentId,
    doc: &Automerge,
    by: Cause<'_>,
) -> Result<(), Error> {
    let Some(entry) = hub.get(copy).await? else {
        return Ok(()); // erased meanwhile: nothing to keep up to date
    };
    let mut state = hub.lock(&entry).await?;
    let changed = off_reactor(|| schema::mirror_current_state(doc, &mut state.doc))
        .map_err(sync_core::Error::from)?;
    if !changed {
        return Ok(());
    }
    let event = AuditEvent::new(by.0, by.1, AuditAction::Write)
        .on(&copy, Some(&entry.catalog.partition))
        .with_detail(format!("follows {plan_id}"));
    if let Err(e) = hub
        .persist_with(&copy, &mut state, Some(by), std::slice::from_ref(&event))
        .await
    {
        let state = &mut *state;
        if !engine::rollback(&mut state.doc, &state.saved_heads) {
            hub.discard(state);
        }
        return Err(e);
    }
    drop(state);
    entry.announce();
    Ok(())
}
