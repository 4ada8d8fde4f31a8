//! Admin commands on documents: inspect (catalog, heads, authors; never content)
//! and erase.

use serde_json::json;
use sync_core::partition::WijkId;
use sync_core::protocol::DocumentId;

use super::accounts::admin_event;
use super::args::DocCmd;
use super::output::{print, rfc3339};
use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;
use crate::store::Store;

/// `doc info|authors|list`.
pub async fn doc(store: &Store, cmd: DocCmd, json_out: bool) -> Result<(), Error> {
    match cmd {
        DocCmd::Info { id } => {
            let id: DocumentId = id.parse().map_err(sync_core::Error::from)?;
            let stored = store
                .documents()
                .load_document(&id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("document {id}")))?;
            let doc = automerge::Automerge::load(&stored.bytes)
                .map_err(|e| Error::Corrupt(format!("document {id} does not load: {e}")))?;
            store
                .audit()
                .append(
                    &admin_event(AuditAction::Inspect)
                        .on(&id, Some(&stored.entry.partition))
                        .with_detail("doc info"),
                )
                .await?;
            let heads: Vec<String> = doc.get_heads().iter().map(ToString::to_string).collect();
            // The heads the catalog holds for connect-time summaries.
            let catalog_heads = store
                .summary()
                .facts(&[id])
                .await?
                .remove(&id)
                .and_then(|f| f.heads);
            let value = json!({
                "id": id.to_string(),
                "kind": stored.entry.partition.kind,
                "wijk": stored.entry.partition.wijk,
                "created_at": stored.entry.created_at,
                "created_by": stored.entry.created_by,
                "chunks": stored.chunks,
                "bytes": stored.bytes.len(),
                "heads": heads,
                "catalog_heads": catalog_heads,
            });
            let text = format!(
                "{id}\t{}\t{} chunks, {} bytes\theads {}",
                stored.entry.partition,
                stored.chunks,
                stored.bytes.len(),
                heads.join(",")
            );
            print(json_out, value, &text);
        }
        DocCmd::Authors { id } => {
            let id: DocumentId = id.parse().map_err(sync_core::Error::from)?;
            let rows = store.documents().change_authors(&id).await?;
            let partition = store.documents().catalog(&id).await?.map(|e| e.partition);
            store
                .audit()
                .append(
                    &admin_event(AuditAction::Inspect)
                        .on(&id, partition.as_ref())
                        .with_detail("doc authors"),
                )
                .await?;
            let text = rows
                .iter()
                .map(|(h, u, d, at)| format!("{}\t{h}\t{u}\t{d}", rfc3339(*at)))
                .collect::<Vec<_>>()
                .join("\n");
            let value: Vec<_> = rows
                .iter()
                .map(|(h, u, d, at)| json!({"change": h, "user": u, "device": d, "at": at}))
                .collect();
            print(json_out, json!(value), &text);
        }
        DocCmd::List { wijk, kind } => {
            let partition = match (wijk, kind) {
                (Some(w), Some(k)) => Some(sync_core::partition::Partition {
                    wijk: WijkId::new(w)?,
                    kind: k.parse().map_err(sync_core::Error::from)?,
                }),
                (None, None) => None,
                _ => {
                    return Err(Error::Invalid(
                        "give both --wijk and --kind, or neither".into(),
                    ))
                }
            };
            let docs = store.documents().list_documents(partition.as_ref()).await?;
            let filter = partition.map_or_else(|| "all".to_owned(), |p| format!("partition={p}"));
            store
                .audit()
                .append(
                    &admin_event(AuditAction::List)
                        .with_detail(format!("doc list {filter} count={}", docs.len())),
                )
                .await?;
            let text = docs
                .iter()
                .map(|d| format!("{}\t{}\t{}", d.id, d.partition, rfc3339(d.created_at)))
                .collect::<Vec<_>>()
                .join("\n");
            print(json_out, json!(docs), &text);
        }
    }
    Ok(())
}

/// `erase DOCUMENT --by WHO`.
pub async fn erase(
    store: &Store,
    document: String,
    by: String,
    json_out: bool,
) -> Result<(), Error> {
    let id: DocumentId = document.parse().map_err(sync_core::Error::from)?;
    let tomb = store.documents().erase(&id, &by).await?;
    store
        .audit()
        .append(
            &AuditEvent::new(by.as_str(), "cli", AuditAction::Erase).on(&id, Some(&tomb.partition)),
        )
        .await?;
    print(
        json_out,
        json!({"erased": id.to_string(), "partition": tomb.partition, "erased_at": tomb.erased_at, "erased_by": tomb.erased_by}),
        &format!("erased {id} ({}); its key is destroyed", tomb.partition),
    );
    Ok(())
}
