//! `audit verify|export`: the audit log's hash chain and one document's entries.

use serde_json::json;

use super::accounts::admin_event;
use super::args::{AuditCmd, ExportFormat};
use super::output::print;
use crate::audit::{AuditAction, AuditAnchor};
use crate::error::Error;
use crate::store::Store;

/// `audit verify|export`.
pub async fn audit(store: &Store, cmd: AuditCmd, json_out: bool) -> Result<(), Error> {
    match cmd {
        AuditCmd::Verify {
            expect_entries,
            expect_head,
        } => {
            let anchor = match (expect_entries, expect_head) {
                (Some(entries), Some(head)) => Some(AuditAnchor::new(entries, &head)?),
                (None, None) => None,
                _ => {
                    return Err(Error::Invalid(
                        "give both --expect-entries and --expect-head, or neither".into(),
                    ))
                }
            };
            let report = store.audit().verify_against(anchor.as_ref()).await?;
            let ok = report.is_ok();
            let mut value = json!(report);
            value["ok"] = json!(ok);
            let text = if ok {
                format!(
                    "audit log intact: {} entries, head {}",
                    report.entries, report.head_hash
                )
            } else {
                report
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .chain(
                        (report.problems_omitted > 0)
                            .then(|| format!("… and {} more", report.problems_omitted)),
                    )
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(json_out, value, &text);
            if ok {
                Ok(())
            } else {
                let count = u64::try_from(report.problems.len())
                    .unwrap_or(u64::MAX)
                    .saturating_add(report.problems_omitted);
                Err(Error::Corrupt(format!(
                    "the audit log does not verify: {count} problem(s) in {} entries: entries were altered, removed or reordered",
                    report.entries
                )))
            }
        }
        AuditCmd::Export { document, format } => {
            let document = document.strip_prefix("automerge:").unwrap_or(&document);
            // Recorded before anything leaves: who exported whose trail (fails closed).
            let mut event =
                admin_event(AuditAction::AuditExport).with_detail("audit export".to_owned());
            event.document = Some(document.chars().take(64).collect());
            store.audit().append(&event).await?;
            let entries = store.audit().for_document(document).await?;
            let format = format.unwrap_or(if json_out {
                ExportFormat::Json
            } else {
                ExportFormat::Csv
            });
            match format {
                ExportFormat::Csv => print!("{}", crate::audit::export_csv(&entries)),
                ExportFormat::Json => println!("{}", crate::audit::export_json(&entries)),
            }
            Ok(())
        }
    }
}
