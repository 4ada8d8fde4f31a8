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
//! So before automerge sees a message, [`screen`] walks its chunks' headers and refuses
//! bundle chunks (automerge's sync protocol never sends them: `save_bundle` is an
//! experimental storage API), and inflates compressed changes and compressed document
//! columns within one budget per message. Change chunks, whose columns are never
//! compressed one by one (automerge refuses that), pass as they are.
//!
//! The same framing tells the engine which chunks are plain changes ([`is_change`],
//! [`checksum`]): those it can hand on as they came instead of asking automerge to
//! encode them again (`engine::Applied::new_changes`).

use std::io::Read;

use automerge::sync;

/// The four bytes every automerge storage chunk starts with.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Magic, checksum, chunk type.
const FIXED_HEADER: usize = 9;
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED_CHANGE: u8 = 2;
/// A column specification's bit for "this column's data is deflated".
const COLUMN_DEFLATE: u64 = 0b1000;
/// Bytes of a change hash (document heads).
const HASH_BYTES: u64 = 32;
const CHUNK_BUNDLE: u8 = 3;

/// Bytes the compressed changes and document columns of one message may inflate to,
/// all together, unless
/// the caller gives another budget: twice the server's default frame limit.
pub const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

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
}

/// Walks every chunk of `message`'s changes: refuses bundles, and compressed changes
/// that inflate to more than `max_inflated` bytes together.
pub fn screen(message: &sync::Message, max_inflated: u64) -> Result<(), ChunkError> {
    let mut budget = max_inflated;
    for mut rest in message.changes.iter() {
        while !rest.is_empty() {
            let (kind, data, after) = next_chunk(rest)?;
            match kind {
                CHUNK_BUNDLE => return Err(ChunkError::Bundle),
                CHUNK_COMPRESSED_CHANGE => budget -= inflated_within(data, budget)?,
                CHUNK_DOCUMENT => {
                    for column in deflated_document_columns(data)? {
                        budget -= inflated_within(column, budget)?;
                    }
                }
                _ => {}
            }
            rest = after;
        }
    }
    Ok(())
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

/// The data of a document chunk's deflated columns. The layout (automerge's
/// `storage/document.rs`): actors (count, then length-prefixed ids), heads (count, then
/// 32-byte hashes), the change columns' and the op columns' metadata (count, then
/// pairs of specification and length), then the change columns' data and the op
/// columns' data in that order.
fn deflated_document_columns(data: &[u8]) -> Result<Vec<&[u8]>, ChunkError> {
    let (actors, mut rest) = uleb(data)?;
    for _ in 0..actors {
        let (len, after) = uleb(rest)?;
        rest = skip(after, len)?;
    }
    let (heads, after) = uleb(rest)?;
    rest = skip(after, heads.saturating_mul(HASH_BYTES))?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        let (count, after) = uleb(rest)?;
        rest = after;
        for _ in 0..count {
            let (spec, after) = uleb(rest)?;
            let (len, after) = uleb(after)?;
            rest = after;
            columns.push((spec & COLUMN_DEFLATE != 0, len));
        }
    }
    let mut deflated = Vec::new();
    for (is_deflated, len) in columns {
        let len = usize::try_from(len).map_err(|_| ChunkError::Malformed("length too large"))?;
        if rest.len() < len {
            return Err(ChunkError::Malformed("column longer than the chunk"));
        }
        let (column, after) = rest.split_at(len);
        if is_deflated {
            deflated.push(column);
        }
        rest = after;
    }
    Ok(deflated)
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

/// Inflates a compressed change's raw deflate stream, reading at most `budget + 1`
/// bytes: its inflated size if within the budget.
fn inflated_within(data: &[u8], budget: u64) -> Result<u64, ChunkError> {
    let mut inflater = flate2::read::DeflateDecoder::new(data).take(budget.saturating_add(1));
    let mut sink = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match inflater.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return Err(ChunkError::Malformed("compressed change does not inflate")),
        }
    }
    if total > budget {
        return Err(ChunkError::Inflates { limit: budget });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

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

    /// A chunk as automerge frames it (the checksum is not looked at here).
    fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([0, 0, 0, 0, kind]);
        let mut len = data.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            out.push(if len == 0 { byte } else { byte | 0x80 });
            if len == 0 {
                break;
            }
        }
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
        assert_eq!(screen(&message(changes), MAX_INFLATED_BYTES), Ok(()));
        assert_eq!(screen(&message(vec![doc2.save()]), 0), Ok(()));
        // Two chunks in one buffer are walked one after the other.
        let mut two = doc.save();
        two.extend(doc2.save());
        assert_eq!(screen(&message(vec![two]), 0), Ok(()));
    }

    /// Bundles are refused, wherever they stand in a buffer.
    #[test]
    fn bundles_are_refused() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "n", 1).expect("put");
        let mut buffer = doc.save();
        buffer.extend(chunk(CHUNK_BUNDLE, b"anything"));
        assert_eq!(
            screen(&message(vec![buffer]), MAX_INFLATED_BYTES),
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
            screen(&message(vec![bomb.clone()]), 1024 * 1024),
            Ok(()),
            "exactly the budget"
        );
        assert_eq!(
            screen(&message(vec![bomb.clone(), bomb.clone()]), 1024 * 1024 + 1),
            Err(ChunkError::Inflates { limit: 1 }),
            "the second one had one byte left"
        );
        assert_eq!(
            screen(
                &message(vec![chunk(CHUNK_COMPRESSED_CHANGE, b"\xff\xff")]),
                100
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
            !deflated_document_columns(data).expect("columns").is_empty(),
            "automerge compressed no column of a 20 KB value"
        );
        assert_eq!(
            screen(&message(vec![saved.clone()]), MAX_INFLATED_BYTES),
            Ok(())
        );
        assert!(matches!(
            screen(&message(vec![saved]), 100),
            Err(ChunkError::Inflates { limit: 100 })
        ));

        let bomb = deflate(&vec![0u8; 2 * 1024 * 1024]);
        let mut body = vec![0, 0]; // no actors, no heads
        body.push(1); // one change column: id 1, type 0, deflated, then its length
        body.push((1 << 4) | COLUMN_DEFLATE as u8);
        let mut len = bomb.len();
        while len >= 0x80 {
            body.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        body.push(len as u8);
        body.push(0); // no op columns
        body.extend(&bomb);
        let chunk = chunk(CHUNK_DOCUMENT, &body);
        assert!(chunk.len() < 8 * 1024, "{} bytes", chunk.len());
        assert_eq!(
            screen(&message(vec![chunk.clone()]), 1024 * 1024),
            Err(ChunkError::Inflates { limit: 1024 * 1024 })
        );
        assert_eq!(screen(&message(vec![chunk]), 4 * 1024 * 1024), Ok(()));
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
                screen(&message(vec![bytes]), MAX_INFLATED_BYTES),
                Err(ChunkError::Malformed(why)),
                "{why}"
            );
        }
    }
}
