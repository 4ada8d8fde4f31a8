//! The catalog queries of `GET /api/v1/documents`: only the partitions a principal may
//! read (its [`ReadScope`]), each a range of `access_changed_at` on an index
//! (migration 0009), so a listing costs what it returns, not the size of the catalog.

use std::collections::HashSet;

use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::policy::ReadScope;

use super::documents::Documents;
use super::documents::{entry_from_row, CatalogRow};
use super::{with_pool, CatalogEntry};
use crate::error::Error;

/// A catalog row with the hand-over flag and `access_changed_at`, as the listing reads it.
type ListingRow = (String, String, String, i64, String, bool, i64);

const COLUMNS: &str = "id, kind, wijk_id, created_at, created_by, handed_over, access_changed_at";

/// One document of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub entry: CatalogEntry,
    /// The committed hand-over flag (the policy needs it for a consulent).
    pub handed_over: bool,
    /// When its creation or hand-over flag last changed (unix seconds).
    pub changed_at: i64,
}

impl Documents<'_> {
    /// Catalog rows (with their hand-over flag) in `scope`, optionally of one wijk
    /// and/or kind, whose creation or hand-over flag changed at or after `since`
    /// (unix seconds; 0 for all), oldest first, each once. The caller still applies
    /// the policy per row.
    pub async fn list_readable(
        self,
        scope: &ReadScope,
        wijk: Option<&WijkId>,
        kind: Option<DocumentKind>,
        since: i64,
    ) -> Result<Vec<Listed>, Error> {
        let wanted =
            |p: &Partition| wijk.is_none_or(|w| *w == p.wijk) && kind.is_none_or(|k| k == p.kind);
        let mut rows: Vec<ListingRow> = Vec::new();
        for partition in scope.partitions.iter().filter(|p| wanted(p)) {
            let sql = format!(
                "SELECT {COLUMNS} FROM documents
                 WHERE wijk_id = $1 AND kind = $2 AND access_changed_at >= $3"
            );
            let found: Vec<ListingRow> = with_pool!(self.0.pool(), p => sqlx::query_as(&sql)
                .bind(partition.wijk.as_str())
                .bind(partition.kind.as_str())
                .bind(since)
                .fetch_all(p)
                .await)?;
            rows.extend(found);
        }
        if scope.handed_over_plans && kind.is_none_or(|k| k == DocumentKind::Plan) {
            let sql = format!(
                "SELECT {COLUMNS} FROM documents
                 WHERE handed_over = $1 AND kind = $2 AND access_changed_at >= $3
                   AND ($4 IS NULL OR wijk_id = $4)"
            );
            let found: Vec<ListingRow> = with_pool!(self.0.pool(), p => sqlx::query_as(&sql)
                .bind(true)
                .bind(DocumentKind::Plan.as_str())
                .bind(since)
                .bind(wijk.map(WijkId::as_str))
                .fetch_all(p)
                .await)?;
            rows.extend(found);
        }
        let mut seen = HashSet::new();
        rows.retain(|row| seen.insert(row.0.clone()));
        rows.sort_by(|a, b| (a.3, &a.0).cmp(&(b.3, &b.0)));
        rows.into_iter()
            .map(
                |(id, kind, wijk, created_at, created_by, handed_over, changed_at)| {
                    let id = id
                        .parse()
                        .map_err(|e| Error::Corrupt(format!("catalog id {id:?}: {e}")))?;
                    let row: CatalogRow = (kind, wijk, created_at, created_by);
                    Ok(Listed {
                        entry: entry_from_row(id, row)?,
                        handed_over,
                        changed_at,
                    })
                },
            )
            .collect()
    }
}
