//! The audit log, in the spirit of NEN 7513: who read, wrote, was refused, handed over,
//! changed grants or tokens of, erased or moved which document, when, and from which
//! device. It answers a resident's "who looked at my file" (`buurtsync audit export`).
//!
//! This module owns the vocabulary (`AuditAction`, `AuditEvent`, `AuditEntry`), the
//! hash chain, and the check that walks it (`AuditReport`). The SQL lives in
//! `store::audit` (`store.audit()`: `append`, `append_many`, `verify`, `for_document`),
//! the table and its triggers in `migrations/sqlite/0002_audit.sql`.
//!
//! **The chain.** Entries are numbered by `seq` (1, 2, 3, …) and each stores the hash of
//! the entry before it (`prev_hash`; 32 zero bytes for the first) and its own:
//!
//! ```text
//! hash = SHA-256(prev_hash || "buurtsync-audit-v1"
//!                || seq as i64 BE || at_ms as i64 BE
//!                || text(user_id) || text(device) || opt(document) || opt(partition)
//!                || text(action) || text(detail))
//! text(s) = len(s) as u64 BE || UTF-8 bytes of s
//! opt(x)  = 0x00 if absent, 0x01 || text(x) if present
//! ```
//!
//! Every field is length-prefixed, so two different entries never encode alike, and the
//! `seq` is inside the hash, so moving an entry is as visible as changing it. Anyone can
//! re-check an exported database with this recipe and a SHA-256 tool.
//!
//! **What the chain shows, and what it cannot.** SQLite triggers refuse `UPDATE`,
//! `DELETE` and `INSERT OR REPLACE` on the table, which stops mistakes, not someone who
//! can write the file. Against that person the chain shows an altered entry (its hash
//! no longer matches), a removed or reordered entry (the next entry's `prev_hash` no
//! longer links, or `seq` skips) — unless they rewrite every hash after their change.
//! Removing the *newest* entries leaves a shorter chain that is perfectly consistent:
//! that, and a rewritten tail, can only be detected against a head kept outside the
//! database. So keep one: note `entries` and `head_hash` from `buurtsync audit verify`
//! somewhere else (a ticket, a mail, another machine) now and then, and pass them back
//! with `--expect-entries N --expect-head HEX` (an [`AuditAnchor`]). The store also
//! numbers new entries after the highest `seq` SQLite ever handed out, so the first
//! append after a truncation leaves a visible gap.
//!
//! `detail` is short machine text (a denial reason, `role=… wijk=… user=…`), never
//! document content: the log itself must not become a copy of the plans.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sync_core::partition::Partition;
use sync_core::protocol::DocumentId;

use crate::error::Error;

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// Versions the encoding inside the hash, should it ever have to change.
const ENCODING_TAG: &[u8] = b"buurtsync-audit-v1";

/// A report keeps at most this many problems (and counts the rest): a log rewritten
/// from top to bottom must not make verification run out of memory.
const MAX_PROBLEMS: usize = 10_000;

/// What happened. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A document (or changes to it) was sent to a device.
    Read,
    /// A device's change to a document was stored.
    Write,
    /// Access to a document was refused.
    Denied,
    /// A document was created.
    Create,
    /// A plan was handed over to the gemeente.
    HandOver,
    /// A hand-over was withdrawn.
    HandOverWithdrawn,
    GrantAdded,
    GrantRemoved,
    TokenIssued,
    TokenRevoked,
    /// A document was erased (AVG art. 17).
    Erase,
    /// A plan moved to another wijk.
    Move,
    /// The central office received a feed page, aggregates or the dashboard
    /// (pseudonymised; the detail says which, never the content).
    CentralExport,
    /// Document ids were listed (`GET /api/v1/documents`, `doc list`): the detail
    /// holds the filter and how many ids were shown.
    List,
    /// An operator looked at a document's catalog row or provenance (`doc info`,
    /// `doc authors`).
    Inspect,
    /// A document's audit entries were exported (`audit export`).
    AuditExport,
}

impl AuditAction {
    pub const ALL: [AuditAction; 16] = [
        AuditAction::Read,
        AuditAction::Write,
        AuditAction::Denied,
        AuditAction::Create,
        AuditAction::HandOver,
        AuditAction::HandOverWithdrawn,
        AuditAction::GrantAdded,
        AuditAction::GrantRemoved,
        AuditAction::TokenIssued,
        AuditAction::TokenRevoked,
        AuditAction::Erase,
        AuditAction::Move,
        AuditAction::CentralExport,
        AuditAction::List,
        AuditAction::Inspect,
        AuditAction::AuditExport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Read => "read",
            AuditAction::Write => "write",
            AuditAction::Denied => "denied",
            AuditAction::Create => "create",
            AuditAction::HandOver => "hand_over",
            AuditAction::HandOverWithdrawn => "hand_over_withdrawn",
            AuditAction::GrantAdded => "grant_added",
            AuditAction::GrantRemoved => "grant_removed",
            AuditAction::TokenIssued => "token_issued",
            AuditAction::TokenRevoked => "token_revoked",
            AuditAction::Erase => "erase",
            AuditAction::Move => "move",
            AuditAction::CentralExport => "central_export",
            AuditAction::List => "list",
            AuditAction::Inspect => "inspect",
            AuditAction::AuditExport => "audit_export",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::Invalid(format!("unknown audit action {s:?}")))
    }
}

/// One thing to record. The store adds the time, the `seq` and the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub user_id: String,
    /// The device: for a websocket peer its token id and peerId, `cli` for the CLI.
    pub device: String,
    pub document: Option<String>,
    /// As `wijk/kind`; kept beside the document because an erased document's
    /// catalog row is gone.
    pub partition: Option<String>,
    pub action: AuditAction,
    /// Short machine text (a denial reason, `role=… wijk=…`); never document content.
    pub detail: String,
}

impl AuditEvent {
    /// An event about no document in particular (grants, tokens).
    pub fn new(
        user_id: impl Into<String>,
        device: impl Into<String>,
        action: AuditAction,
    ) -> AuditEvent {
        AuditEvent {
            user_id: user_id.into(),
            device: device.into(),
            document: None,
            partition: None,
            action,
            detail: String::new(),
        }
    }

    /// The same event, about `document` in `partition`.
    pub fn on(mut self, document: &DocumentId, partition: Option<&Partition>) -> AuditEvent {
        self.document = Some(document.to_string());
        self.partition = partition.map(ToString::to_string);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> AuditEvent {
        self.detail = detail.into();
        self
    }

    /// What the hash of this event's entry covers, recorded as entry `seq` at `at_ms`.
    pub fn hashed(&self, seq: i64, at_ms: i64) -> HashedFields<'_> {
        HashedFields {
            seq,
            at_ms,
            user_id: &self.user_id,
            device: &self.device,
            document: self.document.as_deref(),
            partition: self.partition.as_deref(),
            action: self.action.as_str(),
            detail: &self.detail,
        }
    }
}

/// One recorded entry, as stored: the event with its place in the chain (hashes in
/// hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// Unix milliseconds (UTC).
    pub at_ms: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The time as RFC 3339 with milliseconds, e.g. `2025-03-01T09:30:00.125Z`.
    pub fn time(&self) -> String {
        rfc3339_ms(self.at_ms)
    }
}

/// RFC 3339 with milliseconds; a time no calendar can show (before 1970, after 9999,
/// as only a tampered row holds) is shown as `@<ms>` instead of failing.
pub fn rfc3339_ms(at_ms: i64) -> String {
    let mut out = String::new();
    if let Ok(ms) = u64::try_from(at_ms) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        if write!(out, "{}", humantime::format_rfc3339_millis(t)).is_ok() {
            return out;
        }
    }
    format!("@{at_ms}")
}

/// The fields an entry's hash covers, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct HashedFields<'a> {
    pub seq: i64,
    pub at_ms: i64,
    pub user_id: &'a str,
    pub device: &'a str,
    pub document: Option<&'a str>,
    pub partition: Option<&'a str>,
    pub action: &'a str,
    pub detail: &'a str,
}

/// `SHA-256(prev_hash || encoding(fields))`; the encoding is in the module doc.
pub fn entry_hash(prev_hash: &[u8], fields: &HashedFields<'_>) -> [u8; 32] {
    fn text(h: &mut Sha256, s: &str) {
        h.update(u64::try_from(s.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(s.as_bytes());
    }
    fn opt(h: &mut Sha256, s: Option<&str>) {
        match s {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                text(h, s);
            }
        }
    }
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(ENCODING_TAG);
    h.update(fields.seq.to_be_bytes());
    h.update(fields.at_ms.to_be_bytes());
    text(&mut h, fields.user_id);
    text(&mut h, fields.device);
    opt(&mut h, fields.document);
    opt(&mut h, fields.partition);
    text(&mut h, fields.action);
    text(&mut h, fields.detail);
    h.finalize().into()
}

/// A head kept outside the database: the number of entries and the hash of the last
/// one, as `audit verify` printed them at some earlier time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAnchor {
    pub entries: u64,
    pub head_hash: [u8; 32],
}

impl AuditAnchor {
    /// From `--expect-entries` and `--expect-head` (64 hex characters).
    pub fn new(entries: u64, head_hex: &str) -> Result<AuditAnchor, Error> {
        let bytes = hex::decode(head_hex.trim())
            .map_err(|e| Error::Invalid(format!("--expect-head is not hex: {e}")))?;
        let head_hash = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            Error::Invalid(format!(
                "--expect-head must be 64 hex characters (32 bytes), got {}",
                bytes.len() * 2
            ))
        })?;
        Ok(AuditAnchor { entries, head_hash })
    }
}

/// The kinds of damage verification finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditProblemKind {
    /// The entry's hash does not match its contents (or a column cannot be read).
    Altered,
    /// The entry's `prev_hash` is not the previous entry's hash: entries before it
    /// were removed, inserted or reordered.
    BrokenLink,
    /// `seq` does not follow on from the previous entry.
    SeqGap,
    /// The entry at the anchor's position does not have the anchor's hash.
    HeadMismatch,
    /// There are fewer entries than the anchor counts: the newest were removed.
    Truncated,
}

impl AuditProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditProblemKind::Altered => "altered entry",
            AuditProblemKind::BrokenLink => "broken link",
            AuditProblemKind::SeqGap => "seq gap",
            AuditProblemKind::HeadMismatch => "head mismatch",
            AuditProblemKind::Truncated => "truncated",
        }
    }
}

/// One problem, at the `seq` where it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    pub seq: i64,
    pub kind: AuditProblemKind,
    pub message: String,
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {}: {}: {}",
            self.seq,
            self.kind.as_str(),
            self.message
        )
    }
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Entries walked.
    pub entries: u64,
    /// Hex hash of the last entry (of [`GENESIS`] when there are none): keep it, with
    /// `entries`, outside the database to detect truncation later.
    pub head_hash: String,
    /// The first problems found, in `seq` order (at most 10 000).
    pub problems: Vec<AuditProblem>,
    /// Problems found beyond those listed.
    pub problems_omitted: u64,
}

impl AuditReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }
}

/// One stored row, read without trusting it.
#[derive(Debug, Clone)]
pub(crate) struct StoredRow {
    pub at_ms: i64,
    pub user_id: String,
    pub device: String,
    pub document: Option<String>,
    pub partition: Option<String>,
    pub action: String,
    pub detail: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Walks the chain one row at a time, in `seq` order, keeping only what the next row
/// needs: the store feeds it page by page.
#[derive(Debug)]
pub(crate) struct ChainCheck {
    anchor: Option<AuditAnchor>,
    entries: u64,
    expected_seq: i64,
    /// The previous row's stored hash; `None` after a row that could not be read.
    prev_hash: Option<Vec<u8>>,
    problems: Vec<AuditProblem>,
    omitted: u64,
}

impl ChainCheck {
    pub fn new(anchor: Option<AuditAnchor>) -> ChainCheck {
        ChainCheck {
            anchor,
            entries: 0,
            expected_seq: 1,
            prev_hash: Some(GENESIS.to_vec()),
            problems: Vec::new(),
            omitted: 0,
        }
    }

    fn problem(&mut self, seq: i64, kind: AuditProblemKind, message: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(AuditProblem { seq, kind, message });
        } else {
            self.omitted = self.omitted.saturating_add(1);
        }
    }

    /// The next row: its `seq`, and its columns or what made them unreadable.
    pub fn push(&mut self, seq: i64, row: Result<StoredRow, String>) {
        self.entries = self.entries.saturating_add(1);
        if seq != self.expected_seq {
            let message = format!("expected seq {}, found {seq}", self.expected_seq);
            self.problem(seq, AuditProblemKind::SeqGap, message);
        }
        self.expected_seq = seq.saturating_add(1);
        let hash = match row {
            Err(what) => {
                self.problem(
                    seq,
                    AuditProblemKind::Altered,
                    format!("unreadable: {what}"),
                );
                None
            }
            Ok(row) => {
                if let Some(prev) = &self.prev_hash {
                    if *prev != row.prev_hash {
                        self.problem(
                            seq,
                            AuditProblemKind::BrokenLink,
                            "prev_hash is not the previous entry's hash: entries were removed, inserted or reordered".into(),
                        );
                    }
                }
                let fields = HashedFields {
                    seq,
                    at_ms: row.at_ms,
                    user_id: &row.user_id,
                    device: &row.device,
                    document: row.document.as_deref(),
                    partition: row.partition.as_deref(),
                    action: &row.action,
                    detail: &row.detail,
                };
                if entry_hash(&row.prev_hash, &fields)[..] != row.hash[..] {
                    self.problem(
                        seq,
                        AuditProblemKind::Altered,
                        "hash does not match the entry's contents".into(),
                    );
                }
                Some(row.hash)
            }
        };
        if let Some(anchor) = &self.anchor {
            if anchor.entries == self.entries && hash.as_deref() != Some(&anchor.head_hash[..]) {
                let message = format!(
                    "entry {} has hash {}, the kept head is {}",
                    anchor.entries,
                    hash.as_deref()
                        .map_or_else(|| "(unreadable)".into(), hex::encode),
                    hex::encode(anchor.head_hash)
                );
                self.problem(seq, AuditProblemKind::HeadMismatch, message);
            }
        }
        self.prev_hash = hash;
    }

    pub fn finish(mut self) -> AuditReport {
        if let Some(anchor) = self.anchor.clone() {
            if anchor.entries > self.entries {
                let message = format!(
                    "the kept head counts {} entries, the log has {}: the newest were removed",
                    anchor.entries, self.entries
                );
                let seq = i64::try_from(anchor.entries).unwrap_or(i64::MAX);
                self.problem(seq, AuditProblemKind::Truncated, message);
            } else if anchor.entries == 0 && anchor.head_hash != GENESIS {
                let message = "a kept head of 0 entries must be the all-zero hash".into();
                self.problem(0, AuditProblemKind::HeadMismatch, message);
            }
        }
        AuditReport {
            entries: self.entries,
            head_hash: self
                .prev_hash
                .as_deref()
                .map_or_else(|| "(unreadable)".into(), hex::encode),
            problems: self.problems,
            problems_omitted: self.omitted,
        }
    }
}

/// The columns of a "who looked at my file" export, in order.
pub const EXPORT_COLUMNS: [&str; 7] = [
    "seq",
    "time",
    "user",
    "device",
    "action",
    "partition",
    "detail",
];

fn export_fields(e: &AuditEntry) -> [String; 7] {
    [
        e.seq.to_string(),
        e.time(),
        e.event.user_id.clone(),
        e.event.device.clone(),
        e.event.action.as_str().to_owned(),
        e.event.partition.clone().unwrap_or_default(),
        e.event.detail.clone(),
    ]
}

/// A document's entries as CSV (RFC 4180, `\r\n` line ends) with a header row. Fields
/// that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or
/// carriage return) get a leading `'`, as OWASP advises for CSV that people open.
pub fn export_csv(entries: &[AuditEntry]) -> String {
    fn field(out: &mut String, value: &str) {
        let guarded = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
        let needs_quotes = guarded || value.contains([',', '"', '\n', '\r']);
        if needs_quotes {
            out.push('"');
        }
        if guarded {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        if needs_quotes {
            out.push('"');
        }
    }
    let mut out = EXPORT_COLUMNS.join(",");
    out.push_str("\r\n");
    for entry in entries {
        for (i, value) in export_fields(entry).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, value);
        }
        out.push_str("\r\n");
    }
    out
}

/// A document's entries as a JSON array of objects with the [`EXPORT_COLUMNS`].
pub fn export_json(entries: &[AuditEntry]) -> serde_json::Value {
    serde_json::Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut row = serde_json::Map::new();
                row.insert("seq".into(), e.seq.into());
                for (name, value) in EXPORT_COLUMNS.iter().zip(export_fields(e)).skip(1) {
                    row.insert((*name).into(), value.into());
                }
                serde_json::Value::Object(row)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(
        user_id: &'a str,
        device: &'a str,
        document: Option<&'a str>,
    ) -> HashedFields<'a> {
        HashedFields {
            seq: 1,
            at_ms: 2,
            user_id,
            device,
            document,
            partition: None,
            action: "read",
            detail: "",
        }
    }

    /// Moving bytes between neighbouring fields, or from absent to empty, changes the hash.
    #[test]
    fn encoding_is_unambiguous() {
        let base = entry_hash(&GENESIS, &fields("ab", "c", None));
        for other in [
            fields("a", "bc", None),
            fields("abc", "", None),
            fields("ab", "c", Some("")),
        ] {
            assert_ne!(base, entry_hash(&GENESIS, &other));
        }
        let mut moved = fields("ab", "c", None);
        moved.seq = 2;
        assert_ne!(base, entry_hash(&GENESIS, &moved));
    }

    /// Every action round-trips through its stored name.
    #[test]
    fn actions_round_trip() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>().ok(), Some(action));
        }
        assert!("READ".parse::<AuditAction>().is_err());
    }

    /// Times no calendar can show are printed, not panicked on.
    #[test]
    fn odd_times_do_not_panic() {
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(rfc3339_ms(-1), "@-1");
        assert_eq!(rfc3339_ms(i64::MAX), format!("@{}", i64::MAX));
    }

    /// CSV quotes separators and defuses spreadsheet formulas.
    #[test]
    fn csv_escapes() {
        let entry = AuditEntry {
            seq: 1,
            at_ms: 0,
            event: AuditEvent::new("=cmd()", "a,b", AuditAction::Read).with_detail("say \"hi\""),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let csv = export_csv(&[entry]);
        assert_eq!(
            csv,
            "seq,time,user,device,action,partition,detail\r\n\
             1,1970-01-01T00:00:00.000Z,\"'=cmd()\",\"a,b\",read,,\"say \"\"hi\"\"\"\r\n"
        );
    }
}
