//! The HTTP API beside the websocket: `/api/v1/...`, bearer-token authenticated:
//! who the caller is (`me`: wijken and roles, so an app knows what to list), listing
//! the documents a user may read (discovery for apps that hold no ids yet) and moving
//! a plan to another wijk.
//!
//! Denied and missing look the same here as on the websocket: 404.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};
use sync_core::api::{ListRequest, MoveBody, MoveRequest};
use sync_core::partition::Partition;
use sync_core::policy;
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, Plan};

use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;
use crate::extract::Authenticated;
use crate::state::AppState;
use crate::store::{now, CatalogEntry};

/// `GET /api/v1/me`: the caller's user id, wijken (with name and roles) and global
/// roles, and the server's storageId (the key of its `remote-heads-changed`
/// acknowledgements). Apps use it to decide which wijken to list; it grants nothing.
pub async fn me(
    State(state): State<Arc<AppState>>,
    Authenticated { principal, .. }: Authenticated,
) -> Result<Json<Value>, Error> {
    let names = state.store.accounts().wijk_names().await?;
    let mut wijken: std::collections::BTreeMap<&str, Vec<policy::WijkRole>> =
        std::collections::BTreeMap::new();
    for grant in &principal.grants {
        wijken
            .entry(grant.wijk.as_str())
            .or_default()
            .push(grant.role);
    }
    let wijken: Vec<Value> = wijken
        .into_iter()
        .map(|(wijk, roles)| {
            json!({
                "wijk": wijk,
                "name": names.get(wijk).map_or(wijk, String::as_str),
                "roles": roles,
            })
        })
        .collect();
    Ok(Json(json!({
        "user": principal.user_id,
        "wijken": wijken,
        "global_roles": principal.global_roles,
        "storage_id": state.storage_id,
    })))
}

/// How far a listing's `cursor` lies before the listing itself: a creation or
/// hand-over stamped just before a listing but committed just after it is still at or
/// after the cursor, so the next listing returns it (at the price of repeating a few).
const CURSOR_SLACK_SECS: i64 = 5;

/// `GET /api/v1/documents?wijk=…&kind=…&since=…`: the documents the caller may read,
/// decided per document by the access policy (volunteers never see plan ids; a
/// consulent sees only handed-over plans). Ids and partitions only, no content. The
/// store is asked only for the partitions the caller may read (`policy::read_scope`);
/// `since` makes it incremental, and `cursor` in the answer is the next `since`.
pub async fn list_documents(
    State(state): State<Arc<AppState>>,
    Authenticated {
        principal,
        token_id,
    }: Authenticated,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, Error> {
    let query = ListRequest::parse_query(raw.as_deref().unwrap_or(""))?;
    let filter = list_filter(&query);
    let started = now();
    let scope = policy::read_scope(&principal);
    let rows = state
        .store
        .documents()
        .list_readable(
            &scope,
            query.wijk.as_ref(),
            query.kind,
            query.since.unwrap_or(0),
        )
        .await?;
    let documents: Vec<Value> = rows
        .iter()
        .filter(|listed| {
            let facts = policy::DocFacts {
                partition: &listed.entry.partition,
                handed_over: listed.handed_over,
            };
            policy::decide(&principal, facts, policy::Access::Read).is_ok()
        })
        .map(|listed| {
            let entry = &listed.entry;
            json!({
                "id": entry.id.to_string(),
                "url": entry.id.url(),
                "kind": entry.partition.kind,
                "wijk": entry.partition.wijk,
                "created_at": entry.created_at,
                "changed_at": listed.changed_at,
            })
        })
        .collect();
    // Who learnt which ids exist (issue 16: listings are audited), before they leave.
    state
        .store
        .audit()
        .append(
            &AuditEvent::new(
                &principal.user_id,
                format!("{token_id}/api"),
                AuditAction::List,
            )
            .with_detail(format!("{filter} count={}", documents.len())),
        )
        .await?;
    Ok(Json(json!({
        "documents": documents,
        "now": now(),
        "cursor": started - CURSOR_SLACK_SECS,
    })))
}

/// A listing's filter as audit detail: `wijk=… kind=… since=…` (given parts only; the
/// request is checked, so each part is short and plain).
fn list_filter(query: &ListRequest) -> String {
    let mut parts = Vec::new();
    if let Some(w) = &query.wijk {
        parts.push(format!("wijk={w}"));
    }
    if let Some(k) = query.kind {
        parts.push(format!("kind={}", k.as_str()));
    }
    if let Some(since) = query.since {
        parts.push(format!("since={since}"));
    }
    if parts.is_empty() {
        "all".to_owned()
    } else {
        parts.join(" ")
    }
}

/// `POST /api/v1/documents/{id}/move {"wijk": "…"}`: a coordinator moves a household
/// plan to another wijk (verhuizing). The plan's current state — and nothing of its
/// history — becomes a new document in the target wijk's partition, linked to the old
/// one in the audit log, and the old document is erased: devices of the old wijk are
/// told to purge it. Partitions never change in place.
///
/// Access is decided from the catalog before anything is loaded or decrypted, so a
/// denied id costs what a missing one does. The move holds the old document's lock
/// from its tombstone check to its erasure: concurrent moves of one plan make one copy.
pub async fn move_document(
    State(state): State<Arc<AppState>>,
    Authenticated {
        principal,
        token_id,
    }: Authenticated,
    Path(id): Path<String>,
    Json(body): Json<MoveBody>,
) -> Result<Json<Value>, Error> {
    let id: DocumentId = id.parse().map_err(|_| Error::NotFound("document".into()))?;
    let target = MoveRequest::try_from(body)?.wijk;
    let not_found = || Error::NotFound(format!("document {id}"));
    let old = state
        .store
        .documents()
        .catalog(&id)
        .await?
        .ok_or_else(not_found)?;
    let device = format!("{token_id}/api");
    if let Err(reason) = policy::may_move(&principal, &old.partition) {
        tracing::info!(user = %principal.user_id, %id, %reason, "move denied");
        state
            .store
            .audit()
            .append(
                &AuditEvent::new(&principal.user_id, &device, AuditAction::Denied)
                    .on(&id, Some(&old.partition))
                    .with_detail(format!("move: {reason}")),
            )
            .await?;
        return Err(not_found());
    }
    if !state.store.accounts().wijk_exists(&target).await? {
        return Err(Error::Invalid(format!("unknown wijk {target}")));
    }
    if target == old.partition.wijk {
        return Err(Error::Invalid("the plan is already in that wijk".into()));
    }
    let entry = state.hub.get(id).await?.ok_or_else(not_found)?;
    let new_id = DocumentId::random();
    let old_partition = entry.catalog.partition.clone();
    let catalog = CatalogEntry {
        id: new_id,
        partition: Partition {
            wijk: target.clone(),
            kind: entry.catalog.partition.kind,
        },
        created_at: now(),
        created_by: principal.user_id.clone(),
    };
    let new_partition = catalog.partition.clone();
    {
        // One move at a time per plan: a second move waits here, then finds the
        // tombstone of the first.
        let doc_state = state.hub.lock(&entry).await?;
        if entry.is_erased() || state.store.documents().tombstone(&id).await?.is_some() {
            return Err(not_found());
        }
        // The current state only, as a new document without history, so deleted
        // contact notes and earlier versions do not travel to the new wijk.
        let mut copy =
            schema::current_state_only(&doc_state.doc).map_err(sync_core::Error::from)?;
        schema::update::<Plan>(&mut copy, |plan| plan.meta.wijk = target.clone())
            .map_err(sync_core::Error::from)?;
        schema::validate(&copy).map_err(sync_core::Error::from)?;
        // The new document, its `create` entry and the `move` entry commit together.
        let linked = [
            AuditEvent::new(&principal.user_id, &device, AuditAction::Move)
                .on(&id, Some(&old_partition))
                .with_detail(format!("to={new_id} wijk={target}")),
            AuditEvent::new(&principal.user_id, &device, AuditAction::Create)
                .on(&new_id, Some(&new_partition))
                .with_detail(format!("moved from {id}")),
        ];
        state
            .hub
            .create_with(
                catalog,
                copy,
                (&principal.user_id, &device),
                &linked,
                Some(token_id.as_str()),
            )
            .await?;
        state
            .store
            .documents()
            .erase(&id, &principal.user_id)
            .await?;
        state
            .store
            .audit()
            .append(
                &AuditEvent::new(&principal.user_id, &device, AuditAction::Erase)
                    .on(&id, Some(&old_partition))
                    .with_detail("moved"),
            )
            .await?;
    }
    drop(entry);
    state.hub.erased(id);
    tracing::info!(user = %principal.user_id, old = %id, new = %new_id, wijk = %target, "plan moved");
    Ok(Json(json!({
        "old": id.to_string(),
        "new": new_id.to_string(),
        "url": new_id.url(),
        "wijk": target,
    })))
}
