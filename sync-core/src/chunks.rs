//! A look at the storage chunks a sync message carries, before automerge parses them
//! (issue 20).
//!
//! automerge 0.12 trusts the sizes inside a chunk: a 630-byte sync message carrying an
//! experimental *bundle* chunk made it expand one run-length-encoded column into a
//! vector of billions of integers (`storage/bundle/storage.rs`, `decode_delta_int`):
//! more than 4 GiB of memory, which no panic guard catches (the allocator aborts the
//! process). Found by the `apply` fuzz target
//! (`fuzz/regressions/apply/bundle-delta-column-oom`). And a
//! compressed change chunk, and each compressed column of a document chunk (which a
//! version 2 sync message carries for a first sync), is inflated with no bound
//! (`storage/chunk.rs`, `storage/columns/raw_column.rs`, `read_to_end`): a deflate bomb
//! in a 32 MiB frame inflates to gigabytes.
//!
//! It trusts the number of operations too: a change's op columns are run-length
//! encoded, and the run length is a LEB128 integer, so 119 bytes can declare a
//! million ops (2 s and 460 MB to apply) and a few more bytes a billion (minutes of
//! CPU, then an abort). `fuzz/regressions/apply/op-run-length-bomb` is such a change.
//!
//! So before automerge sees a message, [`screen`] walks its chunks' headers and refuses
//! bundle chunks (automerge's sync protocol never sends them: `save_bundle` is an
//! experimental storage API), inflates compressed changes and compressed document
//! columns within one budget per message, and counts the operations every change and
//! document declares from the run headers of their columns, within a second budget
//! ([`Budget`]): a chunk declares as many as its largest column has items (a change's
//! action column, a document's op columns, unless another says more). Counting reads
//! the encoded bytes once and never the items they say.
//!
//! The same framing tells the engine which chunks are plain changes ([`is_change`],
//! [`checksum`]): those it can hand on as they came instead of asking automerge to
//! encode them again (`engine::Applied::new_changes`).

use std::io::Read;
use std::ops::Range;

use automerge::sync;

/// The four bytes every automerge storage chunk starts with.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Magic, checksum, chunk type.
const FIXED_HEADER: usize = 9;
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED_CHANGE: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;
/// A column specification (`(id << 4) | deflated << 3 | type`, automerge's
/// `storage/columns/column_specification.rs`): its bit for "this column's data is
/// deflated", and its type bits with the types [`column_items`] reads their own way.
const COLUMN_DEFLATE: u64 = 0b1000;
const COLUMN_TYPE: u64 = 0b111;
const TYPE_BOOLEAN: u64 = 4;
const TYPE_STRING: u64 = 5;
const TYPE_VALUE: u64 = 7;
/// Bytes of a change hash (document heads).
const HASH_BYTES: u64 = 32;

/// Bytes the compressed changes and document columns of one message may inflate to,
/// all together, unless
/// the caller gives another budget: twice the server's default frame limit.
pub const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

/// Operations one document may hold, and so the operations one message may declare,
/// unless the caller sets another limit (the server's `--max-document-ops`).
/// Applying a message of this many ops takes automerge 0.12 ≈ 2.3 s and ≈ 0.5 GB at its
/// peak (docs/performance.md); a plan or activiteit holds tens of thousands.
pub const MAX_OPS: u64 = 1_000_000;

/// What one message may cost before automerge parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes its compressed changes and deflated document columns may inflate to,
    /// together.
    pub inflated_bytes: u64,
    /// Operations its changes and documents may declare, together.
    pub ops: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            inflated_bytes: MAX_INFLATED_BYTES,
            ops: MAX_OPS,
        }
    }
}

/// Why a message's chunks were refused before automerge parsed them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("a change chunk is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "bundle chunks (automerge's experimental storage format) are not accepted in sync messages"
    )]
    Bundle,
    #[error("compressed changes would inflate to more than {limit} bytes")]
    Inflates { limit: u64 },
    #[error("the changes declare more than {limit} operations, more than a document may hold")]
    TooManyOps { limit: u64 },
}

/// Walks every chunk of `message`'s changes: refuses bundles, compressed changes that
/// inflate to more than the budget's bytes together, and changes and documents that
/// declare more than its ops together. The operations they declare.
pub fn screen(message: &sync::Message, budget: Budget) -> Result<u64, ChunkError> {
    let mut tally = Tally::new(budget);
    for buffer in message.changes.iter() {
        tally.walk(buffer)?;
    }
    Ok(tally.ops)
}

/// The operations the concatenated chunks `bytes` declare, counted as [`screen`] counts
/// them but without a limit on their number (compressed ones inflate within
/// [`MAX_INFLATED_BYTES`]). For chunks automerge already holds: its queue of changes
/// waiting for dependencies (`engine::queue_of`).
pub fn declared_ops(bytes: &[u8]) -> Result<u64, ChunkError> {
    let mut tally = Tally::new(Budget {
        inflated_bytes: MAX_INFLATED_BYTES,
        ops: u64::MAX,
    });
    tally.walk(bytes)?;
    Ok(tally.ops)
}

/// The operations an encoded automerge sync message's changes declare, counted as
/// [`screen`] counts them, without decoding the message: its heads, need and summaries
/// are stepped over (`sync::Message::parse`'s layout: version byte, then
/// length-prefixed lists). `Err` for what does not parse so, or declares more than the
/// budget: the caller treats that as heavy, and the engine's decode says what is wrong.
pub fn sync_message_ops(data: &[u8], budget: Budget) -> Result<u64, ChunkError> {
    let (&version, mut rest) = data
        .split_first()
        .ok_or(ChunkError::Malformed("empty sync message"))?;
    if version != 0x42 && version != 0x43 {
        return Err(ChunkError::Malformed("not a sync message"));
    }
    rest = skip_hashes(rest)?; // heads
    rest = skip_hashes(rest)?; // need
    let (summaries, mut after) = uleb(rest)?;
    for _ in 0..summaries {
        after = skip_string(skip_hashes(after)?)?; // last sync, bloom filter
    }
    let (changes, mut after) = uleb(after)?;
    let mut tally = Tally::new(budget);
    for _ in 0..changes {
        let (len, body) = uleb(after)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= body.len())
            .ok_or(ChunkError::Malformed("change longer than the message"))?;
        tally.walk(&body[..len])?;
        after = &body[len..];
    }
    Ok(tally.ops)
}

/// Concatenated storage chunks (a version 2 sync message's changes), split into whole
/// chunks, headers included.
pub fn split(mut bytes: &[u8]) -> Result<Vec<&[u8]>, ChunkError> {
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        let (_, _, after) = next_chunk(bytes)?;
        let (chunk, rest) = bytes.split_at(bytes.len() - after.len());
        chunks.push(chunk);
        bytes = rest;
    }
    Ok(chunks)
}

/// Is `chunk` a whole document (automerge's "send everything" answer) rather than
/// changes? Its header: 4 magic bytes, 4 checksum bytes, then the chunk type (0).
pub fn is_document(chunk: &[u8]) -> bool {
    chunk.get(8) == Some(&CHUNK_DOCUMENT)
}

/// Is `chunk` one uncompressed change (what automerge's sync sends), rather than a
/// compressed change, a document or a bundle? Its type byte says.
pub fn is_change(chunk: &[u8]) -> bool {
    chunk.get(8) == Some(&CHUNK_CHANGE)
}

/// The checksum `chunk`'s header claims (the 4 bytes after the magic). automerge
/// loads a chunk only when it is the start of the chunk's hash.
pub fn checksum(chunk: &[u8]) -> Option<&[u8]> {
    chunk.get(4..8)
}

/// What one message's chunks have used of its budget so far.
struct Tally {
    budget: Budget,
    inflated: u64,
    ops: u64,
}

impl Tally {
    fn new(budget: Budget) -> Tally {
        Tally {
            budget,
            inflated: 0,
            ops: 0,
        }
    }

    /// Every chunk of one buffer of concatenated chunks.
    fn walk(&mut self, mut rest: &[u8]) -> Result<(), ChunkError> {
        while !rest.is_empty() {
            let (kind, data, after) = next_chunk(rest)?;
            match kind {
                CHUNK_BUNDLE => return Err(ChunkError::Bundle),
                CHUNK_CHANGE => self.change(data)?,
                CHUNK_COMPRESSED_CHANGE => {
                    // The deflated data is a change chunk's data (`storage/chunk.rs`).
                    let mut body = Vec::new();
                    self.inflate(data, &mut body)?;
                    self.change(&body)?;
                }
                CHUNK_DOCUMENT => self.document(data)?,
                // automerge refuses other chunk types.
                _ => {}
            }
            rest = after;
        }
        Ok(())
    }

    /// A change declares as many ops as its action column has items (automerge's op
    /// iterator stops when that column ends; an empty change has none), unless another
    /// of its columns says more items: its pred columns, read one item per
    /// predecessor, could make one op's list of predecessors as long.
    fn change(&mut self, data: &[u8]) -> Result<(), ChunkError> {
        let layout = change_layout(data)?;
        let mut declared = 0u64;
        for column in &layout.columns {
            if column.spec & COLUMN_DEFLATE != 0 {
                // automerge refuses these too (`CompressedChangeCols`).
                return Err(ChunkError::Malformed("a change's column is deflated"));
            }
            declared = declared.max(self.items(column.spec, &data[column.range.clone()])?);
        }
        self.add_ops(declared)
    }

    /// A document declares as many ops as its op id and action columns have items
    /// (automerge loads as many ops as the first has and holds every op column to that
    /// length), unless another of its columns says more items: automerge 0.12 decodes
    /// its change columns (one item per change) into vectors before it compares their
    /// lengths (`change_graph.rs`, `ChangeGraph::load`). Deflated columns are counted
    /// inflated, within the budget.
    fn document(&mut self, data: &[u8]) -> Result<(), ChunkError> {
        let layout = document_layout(data)?;
        let mut declared = 0u64;
        for column in &layout.columns {
            let bytes = &data[column.range.clone()];
            let items = if column.spec & COLUMN_DEFLATE != 0 {
                let mut inflated = Vec::new();
                self.inflate(bytes, &mut inflated)?;
                self.items(column.spec, &inflated)?
            } else {
                self.items(column.spec, bytes)?
            };
            declared = declared.max(items);
        }
        self.add_ops(declared)
    }

    /// Items of one column, refused once the message's ops would be past the budget.
    fn items(&self, spec: u64, column: &[u8]) -> Result<u64, ChunkError> {
        column_items(spec, column, self.budget.ops.saturating_sub(self.ops))?.ok_or(
            ChunkError::TooManyOps {
                limit: self.budget.ops,
            },
        )
    }

    fn add_ops(&mut self, ops: u64) -> Result<(), ChunkError> {
        self.ops = self.ops.saturating_add(ops);
        if self.ops > self.budget.ops {
            return Err(ChunkError::TooManyOps {
                limit: self.budget.ops,
            });
        }
        Ok(())
    }

    /// Inflates raw deflate `data` into `out`, within what is left of the budget.
    fn inflate(&mut self, data: &[u8], out: impl std::io::Write) -> Result<(), ChunkError> {
        let left = self.budget.inflated_bytes.saturating_sub(self.inflated);
        self.inflated += inflated_within(data, left, out)?;
        Ok(())
    }
}

/// One chunk's type and data, and what follows it.
fn next_chunk(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), ChunkError> {
    if bytes.len() < FIXED_HEADER {
        return Err(ChunkError::Malformed("truncated header"));
    }
    if bytes[..4] != MAGIC {
        return Err(ChunkError::Malformed("not an automerge chunk"));
    }
    let kind = bytes[8];
    let (len, rest) = uleb(&bytes[FIXED_HEADER..])?;
    let len = usize::try_from(len).map_err(|_| ChunkError::Malformed("length too large"))?;
    if rest.len() < len {
        return Err(ChunkError::Malformed("chunk longer than the message"));
    }
    let (data, after) = rest.split_at(len);
    Ok((kind, data, after))
}

/// Where a chunk's columns are: their metadata starts at `metadata`, in `groups`
/// lists (a count, then pairs of specification and length); their data follows, one
/// column after the other, and ends at `end`.
#[derive(Debug)]
struct Layout {
    /// Where the metadata starts, how many lists it has and where the data ends: the
    /// screen needs only the columns; the tests re-encode chunks with them.
    #[cfg_attr(not(test), allow(dead_code))]
    metadata: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    groups: usize,
    columns: Vec<Column>,
    #[cfg_attr(not(test), allow(dead_code))]
    end: usize,
}

#[derive(Debug)]
struct Column {
    /// Which metadata list named it (a document's change columns, then its op
    /// columns).
    #[cfg_attr(not(test), allow(dead_code))]
    group: usize,
    spec: u64,
    /// Its data within the chunk's data.
    range: Range<usize>,
}

/// A change chunk's columns. The layout (automerge's `storage/change.rs`,
/// `Change::parse_following_header`): dependencies (count, then 32-byte hashes), the
/// actor (length-prefixed), seq, start op, timestamp (signed), message
/// (length-prefixed), other actors (count, then length-prefixed ids), the op columns'
/// metadata, their data, then extra bytes.
fn change_layout(data: &[u8]) -> Result<Layout, ChunkError> {
    let (deps, rest) = uleb(data)?;
    let rest = skip(rest, deps.saturating_mul(HASH_BYTES))?;
    let (actor, rest) = uleb(rest)?;
    let rest = skip(rest, actor)?;
    let (_seq, rest) = uleb(rest)?;
    let (_start_op, rest) = uleb(rest)?;
    let (_timestamp, rest) = sleb(rest)?;
    let (message, rest) = uleb(rest)?;
    let rest = skip(rest, message)?;
    let (actors, mut rest) = uleb(rest)?;
    for _ in 0..actors {
        let (len, after) = uleb(rest)?;
        rest = skip(after, len)?;
    }
    columns(data, rest, 1)
}

/// A document chunk's columns. The layout (automerge's `storage/document.rs`): actors
/// (count, then length-prefixed ids), heads (count, then 32-byte hashes), the change
/// columns' and the op columns' metadata, then the change columns' data and the op
/// columns' data in that order, then head indices.
fn document_layout(data: &[u8]) -> Result<Layout, ChunkError> {
    let (actors, mut rest) = uleb(data)?;
    for _ in 0..actors {
        let (len, after) = uleb(rest)?;
        rest = skip(after, len)?;
    }
    let (heads, after) = uleb(rest)?;
    rest = skip(after, heads.saturating_mul(HASH_BYTES))?;
    columns(data, rest, 2)
}

/// The columns whose metadata starts at `rest` (the tail of `data`), in `groups` lists.
fn columns(data: &[u8], mut rest: &[u8], groups: usize) -> Result<Layout, ChunkError> {
    let metadata = data.len() - rest.len();
    let mut named = Vec::new();
    for group in 0..groups {
        let (count, after) = uleb(rest)?;
        rest = after;
        for _ in 0..count {
            let (spec, after) = uleb(rest)?;
            let (len, after) = uleb(after)?;
            rest = after;
            named.push((group, spec, len));
        }
    }
    let mut at = data.len() - rest.len();
    let mut columns = Vec::with_capacity(named.len());
    for (group, spec, len) in named {
        let len = usize::try_from(len).map_err(|_| ChunkError::Malformed("length too large"))?;
        if data.len() - at < len {
            return Err(ChunkError::Malformed("column longer than the chunk"));
        }
        columns.push(Column {
            group,
            spec,
            range: at..at + len,
        });
        at += len;
    }
    Ok(Layout {
        metadata,
        groups,
        columns,
        end: at,
    })
}

/// Items one column holds, or `None` past `limit`, read from its encoding by its
/// type (automerge's `columnar/encoding`; hexane writes the same): a boolean column is
/// alternating run lengths, a value column raw bytes whose lengths its metadata column
/// says (no items of its own), every other type run-length-encoded ([`rle_items`]).
fn column_items(spec: u64, column: &[u8], limit: u64) -> Result<Option<u64>, ChunkError> {
    match spec & COLUMN_TYPE {
        TYPE_BOOLEAN => boolean_items(column, limit),
        TYPE_VALUE => Ok(Some(0)),
        TYPE_STRING => rle_items(column, limit, skip_string),
        _ => rle_items(column, limit, skip_leb),
    }
}

/// Items in a run-length-encoded column (automerge's `RleDecoder`): runs, each a
/// signed LEB128 count `n` and then, for `n > 0`, one value said `n` times; for
/// `n < 0`, `-n` values one by one; for `n == 0`, an unsigned count of nulls. Only run
/// headers are read and literal values stepped over (`skip_value`), so the work is
/// the column's bytes whatever the counts say.
fn rle_items(
    mut column: &[u8],
    limit: u64,
    skip_value: fn(&[u8]) -> Result<&[u8], ChunkError>,
) -> Result<Option<u64>, ChunkError> {
    let mut items = 0u64;
    while !column.is_empty() {
        let (count, rest) = sleb(column)?;
        let (run, rest) = match count {
            0 => uleb(rest)?,
            n if n > 0 => (n.unsigned_abs(), skip_value(rest)?),
            n => (n.unsigned_abs(), rest),
        };
        items = items.saturating_add(run);
        if items > limit {
            return Ok(None);
        }
        column = rest;
        if count < 0 {
            // At least a byte each: bounded by the column, not by the count.
            for _ in 0..run {
                column = skip_value(column)?;
            }
        }
    }
    Ok(Some(items))
}

/// Items in a boolean column (automerge's `BooleanDecoder`): unsigned LEB128 run
/// lengths, false and true in turn.
fn boolean_items(mut column: &[u8], limit: u64) -> Result<Option<u64>, ChunkError> {
    let mut items = 0u64;
    while !column.is_empty() {
        let (run, rest) = uleb(column)?;
        items = items.saturating_add(run);
        if items > limit {
            return Ok(None);
        }
        column = rest;
    }
    Ok(Some(items))
}

/// `bytes` after one LEB128 number, signed or unsigned (at most 10 bytes).
fn skip_leb(bytes: &[u8]) -> Result<&[u8], ChunkError> {
    match bytes.iter().take(10).position(|byte| byte & 0x80 == 0) {
        Some(last) => Ok(&bytes[last + 1..]),
        None => Err(ChunkError::Malformed("truncated number")),
    }
}

/// `bytes` after a length-prefixed list of change hashes.
fn skip_hashes(bytes: &[u8]) -> Result<&[u8], ChunkError> {
    let (count, rest) = uleb(bytes)?;
    skip(rest, count.saturating_mul(HASH_BYTES))
}

/// `bytes` after one length-prefixed string.
fn skip_string(bytes: &[u8]) -> Result<&[u8], ChunkError> {
    let (len, rest) = uleb(bytes)?;
    skip(rest, len)
}

/// `bytes` without its first `n`.
fn skip(bytes: &[u8], n: u64) -> Result<&[u8], ChunkError> {
    usize::try_from(n)
        .ok()
        .and_then(|n| bytes.get(n..))
        .ok_or(ChunkError::Malformed("field longer than the chunk"))
}

/// An unsigned LEB128 number (at most 64 bits) and the bytes after it.
pub(crate) fn uleb(bytes: &[u8]) -> Result<(u64, &[u8]), ChunkError> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return Err(ChunkError::Malformed("length overflows"));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(ChunkError::Malformed("truncated length"))
}

/// A signed LEB128 number (at most 64 bits) and the bytes after it.
fn sleb(bytes: &[u8]) -> Result<(i64, &[u8]), ChunkError> {
    let mut value = 0i128;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        let shift = 7 * i as u32;
        value |= i128::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            if byte & 0x40 != 0 {
                value -= 1i128 << (shift + 7);
            }
            let value =
                i64::try_from(value).map_err(|_| ChunkError::Malformed("number overflows"))?;
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(ChunkError::Malformed("truncated number"))
}

/// Inflates a raw deflate stream into `out`, reading at most `budget + 1` bytes: its
/// inflated size if within the budget.
fn inflated_within(
    data: &[u8],
    budget: u64,
    mut out: impl std::io::Write,
) -> Result<u64, ChunkError> {
    let mut inflater = flate2::read::DeflateDecoder::new(data).take(budget.saturating_add(1));
    let total = std::io::copy(&mut inflater, &mut out)
        .map_err(|_| ChunkError::Malformed("compressed change does not inflate"))?;
    if total > budget {
        return Err(ChunkError::Inflates { limit: budget });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};

    /// The action column (id 4, type integer), of a change's ops and of a document's
    /// alike (`storage/change/change_op_columns.rs`, `op_set2/columns.rs`).
    const ACTION_COLUMN: u64 = (4 << 4) | 2;
    /// A document's op id actor column (id 2, type actor).
    const ID_ACTOR_COLUMN: u64 = (2 << 4) | 1;
    /// A change's insert column (id 3, type boolean).
    const INSERT_COLUMN: u64 = (3 << 4) | TYPE_BOOLEAN;
    /// A document's change columns: max op (id 1, delta) and actor (id 0, actor).
    const MAX_OP_COLUMN: u64 = (1 << 4) | 3;
    const CHANGE_ACTOR_COLUMN: u64 = 1;

    fn message(chunks: Vec<Vec<u8>>) -> sync::Message {
        sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: sync::ChunkList::from(chunks),
            flags: None,
            version: sync::MessageVersion::V1,
        }
    }

    /// The default budget with another inflation budget.
    fn inflating(inflated_bytes: u64) -> Budget {
        Budget {
            inflated_bytes,
            ..Budget::default()
        }
    }

    /// The default budget with another op budget.
    fn ops(ops: u64) -> Budget {
        Budget {
            ops,
            ..Budget::default()
        }
    }

    fn uleb_bytes(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return out;
            }
        }
    }

    fn sleb_bytes(mut n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            let done = (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0);
            out.push(if done { byte } else { byte | 0x80 });
            if done {
                return out;
            }
        }
    }

    /// A chunk as automerge frames it (the checksum is not looked at here).
    fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([0, 0, 0, 0, kind]);
        out.extend(uleb_bytes(data.len() as u64));
        out.extend(data);
        out
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateEncoder::new(data, flate2::Compression::best())
            .read_to_end(&mut out)
            .expect("deflate");
        out
    }

    /// `chunk` (a change or a document) with every column specified `spec` holding
    /// `data` instead, specified `new_spec`: the metadata re-encoded, the rest as it
    /// was (the checksum is left stale).
    fn with_column(chunk_bytes: &[u8], spec: u64, new_spec: u64, data: &[u8]) -> Vec<u8> {
        let (kind, body, _) = next_chunk(chunk_bytes).expect("chunk");
        let layout = if kind == CHUNK_DOCUMENT {
            document_layout(body)
        } else {
            change_layout(body)
        }
        .expect("layout");
        let replaced: Vec<(usize, u64, &[u8])> = layout
            .columns
            .iter()
            .map(|c| {
                if c.spec == spec {
                    (c.group, new_spec, data)
                } else {
                    (c.group, c.spec, &body[c.range.clone()])
                }
            })
            .collect();
        assert!(
            replaced.iter().any(|(_, s, _)| *s == new_spec),
            "no column {spec:#x}"
        );
        let mut out = body[..layout.metadata].to_vec();
        for group in 0..layout.groups {
            let columns: Vec<_> = replaced.iter().filter(|(g, ..)| *g == group).collect();
            out.extend(uleb_bytes(columns.len() as u64));
            for (_, spec, data) in columns {
                out.extend(uleb_bytes(*spec));
                out.extend(uleb_bytes(data.len() as u64));
            }
        }
        for (.., data) in &replaced {
            out.extend(*data);
        }
        out.extend(&body[layout.end..]);
        chunk(kind, &out)
    }

    /// One run of `count` copies of `value`.
    fn run(count: i64, value: u64) -> Vec<u8> {
        [sleb_bytes(count), uleb_bytes(value)].concat()
    }

    /// A document with a list, and the change inserting `n` nulls into it: a few bytes
    /// of run-length-encoded columns whatever `n` is.
    fn nulls(n: usize) -> (AutoCommit, Vec<u8>) {
        let mut doc = AutoCommit::new();
        let list = doc.put_object(ROOT, "l", ObjType::List).expect("list");
        doc.commit();
        for i in 0..n {
            doc.insert(&list, i, ScalarValue::Null).expect("insert");
        }
        doc.commit();
        let change = doc
            .get_last_local_change()
            .expect("change")
            .raw_bytes()
            .to_vec();
        (doc, change)
    }

    fn declared(chunks: Vec<Vec<u8>>) -> Result<u64, ChunkError> {
        screen(&message(chunks), Budget::default())
    }

    /// What real peers send is counted as automerge counts it: each change's ops (an
    /// empty change has none, and no action column), compressed or not, and a
    /// document's ops, its columns deflated or not; a message's chunks add up.
    #[test]
    fn real_chunks_declare_their_ops() {
        let (mut doc, inserts) = nulls(1000);
        assert!(inserts.len() < 200, "{} bytes", inserts.len());
        let mut text = doc.fork();
        let t = text.put_object(ROOT, "t", ObjType::Text).expect("text");
        text.splice_text(&t, 0, 0, &"buurtkamer ".repeat(40))
            .expect("splice");
        text.commit();
        let mut typed = text.get_last_local_change().expect("change").clone();
        let typed_ops = typed.len() as u64;
        let compressed = typed.bytes().to_vec();
        assert_eq!(compressed.get(8), Some(&CHUNK_COMPRESSED_CHANGE));
        let mut empty = automerge::Automerge::new();
        empty.empty_commit(automerge::transaction::CommitOptions::default());
        let empty = empty.get_changes(&[])[0].raw_bytes().to_vec();
        let num_ops = |d: &mut AutoCommit| d.document().stats().num_ops;

        let cases: Vec<(&str, Vec<Vec<u8>>, u64)> = vec![
            ("1000 inserts in a few bytes", vec![inserts.clone()], 1000),
            ("an empty change", vec![empty], 0),
            ("a compressed change", vec![compressed.clone()], typed_ops),
            (
                "two chunks in one buffer, one in another",
                vec![[inserts.clone(), compressed].concat(), inserts.clone()],
                2000 + typed_ops,
            ),
            ("a document", vec![doc.save_nocompress()], num_ops(&mut doc)),
            (
                "a document with deflated columns",
                vec![text.save()],
                num_ops(&mut text),
            ),
        ];
        for (what, chunks, expected) in cases {
            assert_eq!(declared(chunks), Ok(expected), "{what}");
        }
        assert!(
            !document_layout(next_chunk(&text.save()).expect("chunk").1)
                .expect("layout")
                .columns
                .iter()
                .all(|c| c.spec & COLUMN_DEFLATE == 0),
            "automerge compressed no column of the text document"
        );
        assert_eq!(declared(Vec::new()), Ok(0));
        assert_eq!(declared_ops(&inserts), Ok(1000));
    }

    /// A real change whose action column says 2^40 ops in six bytes more is refused,
    /// and counted without decoding its items (materialised, they would exhaust the
    /// test's memory); so is its compressed twin, and the regression the `apply`
    /// target replays. The budget holds exactly, across the chunks of a message.
    #[test]
    fn op_bombs_are_refused_from_their_run_lengths() {
        let (_, inserts) = nulls(3);
        let at_most = |n: i64| with_column(&inserts, ACTION_COLUMN, ACTION_COLUMN, &run(n, 1));
        let bomb = at_most(1 << 40);
        assert!(bomb.len() < inserts.len() + 8, "{} bytes", bomb.len());
        let refused = Err(ChunkError::TooManyOps { limit: MAX_OPS });
        assert_eq!(declared(vec![bomb.clone()]), refused);
        let (_, body, _) = next_chunk(&bomb).expect("chunk");
        let compressed = chunk(CHUNK_COMPRESSED_CHANGE, &deflate(body));
        assert_eq!(declared(vec![compressed]), refused);
        assert_eq!(
            declared_ops(&bomb),
            Ok(1 << 40),
            "declared_ops has no limit"
        );

        let limit = MAX_OPS as i64;
        assert_eq!(declared(vec![at_most(limit)]), Ok(MAX_OPS));
        assert_eq!(declared(vec![at_most(limit + 1)]), refused);
        assert_eq!(
            declared(vec![at_most(limit / 2), at_most(limit / 2 + 1)]),
            refused,
            "one budget for the message"
        );
        assert_eq!(
            screen(&message(vec![inserts.clone()]), ops(2)),
            Err(ChunkError::TooManyOps { limit: 2 })
        );
        // Any column's items count (a boolean column here: no false, then 2^40 true).
        let trues = [vec![0], uleb_bytes(1 << 40)].concat();
        let insert = with_column(&inserts, INSERT_COLUMN, INSERT_COLUMN, &trues);
        assert_eq!(declared(vec![insert]), refused, "the insert column");
        // Literal and null runs count too; counts past 2^63 saturate.
        for column in [
            [sleb_bytes(-(1 << 40)), vec![1, 1, 1]].concat(),
            [vec![0], uleb_bytes(u64::MAX)].concat(),
            [run(i64::MAX, 1), run(i64::MAX, 1), run(i64::MIN, 1)].concat(),
        ] {
            let change = with_column(&inserts, ACTION_COLUMN, ACTION_COLUMN, &column);
            assert_eq!(declared(vec![change]), refused, "{column:02x?}");
        }

        let finding = include_bytes!("../../fuzz/regressions/apply/op-run-length-bomb");
        let (&mode, payload) = finding.split_first().expect("mode byte");
        assert_eq!(mode & 1, 1, "a bare sync payload");
        let message = sync::Message::decode(payload).expect("the finding decodes");
        assert_eq!(screen(&message, Budget::default()), refused);
        assert!(
            matches!(screen(&message, ops(u64::MAX)), Ok(n) if n >= 1_000_000_000),
            "the finding declares a billion ops"
        );
    }

    /// A document's ops are its op id column's items or its action column's, the
    /// larger (automerge holds them to one length), unless another column says more:
    /// one of its change columns, which automerge decodes into vectors; a deflated
    /// one is counted inflated, within the inflation budget.
    #[test]
    fn document_op_bombs_are_refused() {
        let (mut doc, _) = nulls(3);
        let saved = doc.save_nocompress();
        let refused = Err(ChunkError::TooManyOps { limit: MAX_OPS });
        let bomb = run(1 << 40, 1);
        for spec in [
            ACTION_COLUMN,
            ID_ACTOR_COLUMN,
            MAX_OP_COLUMN,
            CHANGE_ACTOR_COLUMN,
        ] {
            let crafted = with_column(&saved, spec, spec, &bomb);
            assert_eq!(declared(vec![crafted]), refused, "column {spec:#x}");
            let deflated = with_column(&saved, spec, spec | COLUMN_DEFLATE, &deflate(&bomb));
            assert_eq!(
                declared(vec![deflated.clone()]),
                refused,
                "{spec:#x} deflated"
            );
            assert_eq!(
                screen(&message(vec![deflated]), inflating(2)),
                Err(ChunkError::Inflates { limit: 2 }),
                "{spec:#x} deflated, inflates first"
            );
        }
        // An action column shorter than the op id column: the op id column counts.
        assert_eq!(doc.document().stats().num_ops, 4);
        let short = with_column(&saved, ACTION_COLUMN, ACTION_COLUMN, &run(1, 1));
        assert_eq!(declared(vec![short]), Ok(4));
    }

    /// A malformed column or change is a clear error, never a read past the end.
    #[test]
    fn malformed_columns_are_errors() {
        let (_, inserts) = nulls(3);
        let action = |column: &[u8]| with_column(&inserts, ACTION_COLUMN, ACTION_COLUMN, column);
        let (_, body, _) = next_chunk(&inserts).expect("chunk");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "a run without its value",
                action(&[0x03]),
                "truncated number",
            ),
            ("a truncated run count", action(&[0x80]), "truncated number"),
            (
                "a literal run short of values",
                action(&[0x7d, 1, 1]), // -3, then two values
                "truncated number",
            ),
            (
                "a null run without its count",
                action(&[0]),
                "truncated length",
            ),
            (
                "a run count past 64 bits",
                action(&[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7e, 1,
                ]),
                "number overflows",
            ),
            (
                "a deflated change column",
                with_column(
                    &inserts,
                    ACTION_COLUMN,
                    ACTION_COLUMN | COLUMN_DEFLATE,
                    &deflate(&run(3, 1)),
                ),
                "a change's column is deflated",
            ),
            (
                "columns longer than the change",
                chunk(CHUNK_CHANGE, &body[..body.len() - 1]),
                "column longer than the chunk",
            ),
            (
                "an actor longer than the change",
                chunk(CHUNK_CHANGE, &[0, 40, 1, 2]),
                "field longer than the chunk",
            ),
            (
                "a change cut in its header",
                chunk(CHUNK_CHANGE, &[0, 1, 7, 1]),
                "truncated length",
            ),
        ];
        for (what, bytes, why) in cases {
            assert_eq!(
                declared(vec![bytes]),
                Err(ChunkError::Malformed(why)),
                "{what}"
            );
        }
    }

    /// What real peers send passes: change chunks (V1) and a whole document (V2).
    #[test]
    fn changes_and_documents_pass() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "title", "Taalcafe").expect("put");
        doc.commit();
        let mut doc2 = doc.fork();
        doc2.put(ROOT, "title", "Moestuin").expect("put");
        let changes = doc2
            .get_changes(&doc.get_heads())
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        assert_eq!(screen(&message(changes), Budget::default()), Ok(1));
        assert_eq!(screen(&message(vec![doc2.save()]), inflating(0)), Ok(2));
        // Two chunks in one buffer are walked one after the other.
        let mut two = doc.save();
        two.extend(doc2.save());
        assert_eq!(screen(&message(vec![two]), inflating(0)), Ok(3));
    }

    /// Bundles are refused, wherever they stand in a buffer.
    #[test]
    fn bundles_are_refused() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "n", 1).expect("put");
        let mut buffer = doc.save();
        buffer.extend(chunk(CHUNK_BUNDLE, b"anything"));
        assert_eq!(
            screen(&message(vec![buffer]), Budget::default()),
            Err(ChunkError::Bundle)
        );
    }

    /// A compressed change is inflated within the budget, which all compressed
    /// changes of a message share; a deflate bomb stops at the budget.
    #[test]
    fn compressed_changes_inflate_within_one_budget() {
        let inflated = vec![0u8; 1024 * 1024];
        let bomb = chunk(CHUNK_COMPRESSED_CHANGE, &deflate(&inflated));
        assert!(bomb.len() < 4096, "{} bytes", bomb.len());
        assert_eq!(
            screen(&message(vec![bomb.clone()]), inflating(1024 * 1024)),
            Ok(0),
            "exactly the budget"
        );
        assert_eq!(
            screen(
                &message(vec![bomb.clone(), bomb.clone()]),
                inflating(1024 * 1024 + 1)
            ),
            Err(ChunkError::Inflates { limit: 1 }),
            "the second one had one byte left"
        );
        assert_eq!(
            screen(
                &message(vec![chunk(CHUNK_COMPRESSED_CHANGE, b"\xff\xff")]),
                inflating(100)
            ),
            Err(ChunkError::Malformed("compressed change does not inflate"))
        );
    }

    /// A document's deflated columns are inflated within the budget: automerge's own
    /// compressed save passes with room and is refused with none; a crafted column of
    /// 2 MiB of zeros in a chunk of a few KiB stops at a 1 MiB budget.
    #[test]
    fn document_columns_inflate_within_the_budget() {
        let mut doc = AutoCommit::new();
        let text: String = (0..20_000)
            .map(|i| char::from(b'a' + (i % 7) as u8))
            .collect();
        doc.put(ROOT, "notes", text).expect("put");
        let saved = doc.save();
        let (kind, data, _) = next_chunk(&saved).expect("chunk");
        assert_eq!(kind, CHUNK_DOCUMENT);
        assert!(
            document_layout(data)
                .expect("columns")
                .columns
                .iter()
                .any(|c| c.spec & COLUMN_DEFLATE != 0),
            "automerge compressed no column of a 20 KB value"
        );
        assert_eq!(
            screen(&message(vec![saved.clone()]), Budget::default()),
            Ok(1)
        );
        assert!(matches!(
            screen(&message(vec![saved]), inflating(100)),
            Err(ChunkError::Inflates { limit: 100 })
        ));

        let bomb = deflate(&vec![0u8; 2 * 1024 * 1024]);
        let mut body = vec![0, 0]; // no actors, no heads
        body.push(1); // one change column: id 1, type 0, deflated, then its length
        body.push((1 << 4) | COLUMN_DEFLATE as u8);
        body.extend(uleb_bytes(bomb.len() as u64));
        body.push(0); // no op columns
        body.extend(&bomb);
        let chunk = chunk(CHUNK_DOCUMENT, &body);
        assert!(chunk.len() < 8 * 1024, "{} bytes", chunk.len());
        assert_eq!(
            screen(&message(vec![chunk.clone()]), inflating(1024 * 1024)),
            Err(ChunkError::Inflates { limit: 1024 * 1024 })
        );
        assert_eq!(
            screen(&message(vec![chunk]), inflating(4 * 1024 * 1024)),
            Ok(0)
        );
    }

    /// Concatenated chunks split back into the whole chunks, headers included; a
    /// truncated one is an error, and the type byte tells a document.
    #[test]
    fn concatenated_chunks_split_back() {
        let a = chunk(1, b"first change");
        let b = chunk(CHUNK_DOCUMENT, &[7u8; 200]);
        let joined = [a.clone(), b.clone()].concat();
        assert_eq!(split(&joined), Ok(vec![a.as_slice(), b.as_slice()]));
        assert!(!is_document(&a) && is_document(&b));
        assert!(is_change(&a) && !is_change(&b));
        assert!(!is_change(&chunk(CHUNK_COMPRESSED_CHANGE, b"x")));
        assert_eq!(checksum(&a), Some(&[0u8, 0, 0, 0][..]));
        assert_eq!(checksum(&a[..7]), None);
        assert!(split(&joined[..joined.len() - 1]).is_err());
        assert_eq!(split(&[]), Ok(Vec::new()));
    }

    /// Garbage framing is a clear error, never a read past the end.
    #[test]
    fn malformed_framing_is_an_error() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x85, 0x6f], "truncated header"),
            (vec![1, 2, 3, 4, 5, 6, 7, 8, 1, 0], "not an automerge chunk"),
            (
                [&MAGIC[..], &[0, 0, 0, 0, 1, 0x80]].concat(),
                "truncated length",
            ),
            (
                [&MAGIC[..], &[0, 0, 0, 0, 1, 5, 1, 2]].concat(),
                "chunk longer than the message",
            ),
            (
                [&MAGIC[..], &[0, 0, 0, 0, 1], &[0xff; 9], &[0x7f]].concat(),
                "length overflows",
            ),
            // A document claiming 2^60 heads, and one whose column runs past its end.
            (
                [&MAGIC[..], &[0, 0, 0, 0, 0, 10, 0], &[0x80; 8], &[0x10]].concat(),
                "field longer than the chunk",
            ),
            (
                [&MAGIC[..], &[0, 0, 0, 0, 0, 6, 0, 0, 1, 0x18, 9, 0]].concat(),
                "column longer than the chunk",
            ),
        ];
        for (bytes, why) in cases {
            assert_eq!(
                screen(&message(vec![bytes]), Budget::default()),
                Err(ChunkError::Malformed(why)),
                "{why}"
            );
        }
    }

    /// The LEB128 readers agree with the writers at the edges of 64 bits.
    #[test]
    fn leb128_round_trips() {
        for n in [0, 1, 63, 64, -1, -64, -65, 1 << 40, i64::MAX, i64::MIN] {
            assert_eq!(sleb(&sleb_bytes(n)), Ok((n, &[][..])), "{n}");
        }
        for n in [0, 127, 128, 1 << 40, u64::MAX] {
            assert_eq!(uleb(&uleb_bytes(n)), Ok((n, &[][..])), "{n}");
        }
    }
}
