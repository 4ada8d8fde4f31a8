//! The catalog facts a connect-time summary is answered from, for many documents in
//! one query: partition and hand-over flag (what the access policy needs) and the
//! committed heads, so "is this device in sync?" never loads a document.

use std::collections::HashMap;

use sync_core::partition::{DocumentKind, Partition, WijkId};
use sync_core::protocol::DocumentId;

use super::{Pool, Store};
use crate::error::Error;

/// One document's catalog facts, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryFacts {
    pub partition: Partition,
    pub handed_over: bool,
    /// The catalog's `heads` column (see `documents::heads_text`); `None`: unknown.
    pub heads: Option<String>,
}

type Row = (String, String, String, bool, Option<String>);

/// The catalog facts connect-time summaries are answered from (`store.summary()`).
#[derive(Clone, Copy, Debug)]
pub struct Summary<'a>(&'a Store);

impl Store {
    /// The summary view of this store.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

impl Summary<'_> {
    /// The catalog facts of those of `ids` the catalog knows (unknown and erased ids
    /// are simply absent), in one query however many ids.
    pub async fn facts(
        self,
        ids: &[DocumentId],
    ) -> Result<HashMap<DocumentId, SummaryFacts>, Error> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows: Vec<Row> = match self.0.pool() {
            Pool::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT id, kind, wijk_id, handed_over, heads FROM documents
                     WHERE id IN (SELECT value FROM json_each($1))",
                )
                .bind(serde_json::Value::from(list).to_string())
                .fetch_all(p)
                .await?
            }
            Pool::Postgres(p) => sqlx::query_as(
                "SELECT id, kind, wijk_id, handed_over, heads FROM documents WHERE id = ANY($1)",
            )
            .bind(list)
            .fetch_all(p)
            .await?,
        };
        rows.into_iter()
            .map(|(id, kind, wijk, handed_over, heads)| {
                let doc: DocumentId = id
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("catalog id {id:?}: {e}")))?;
                let partition = Partition {
                    kind: kind
                        .parse::<DocumentKind>()
                        .map_err(|e| Error::Corrupt(format!("document {doc}: {e}")))?,
                    wijk: WijkId::new(wijk)
                        .map_err(|e| Error::Corrupt(format!("document {doc}: {e}")))?,
                };
                Ok((
                    doc,
                    SummaryFacts {
                        partition,
                        handed_over,
                        heads,
                    },
                ))
            })
            .collect()
    }
}
