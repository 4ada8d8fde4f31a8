//! A look at the storage chunks a sync message carries, before automerge parses them
//! (issue 20).
//!
//! automerge 0.12 trusts the sizes inside a chunk: a 630-byte sync message carrying an
//! experimental *bundle* chunk made it expand one run-length-encoded column into a
//! vector of billions of integers (`storage/bundle/storage.rs`, `decode_delta_int`):
//! more than 4 GiB of memory, which no panic guard catches (the allocator aborts the
//! process). Found by the `apply` fuzz target
//! (`fuzz/regressions/apply/oom-37a1fb2daa8460cd13b84192bed04120d35be73a`). And a
//! compressed change chunk is inflated with no bound (`storage/chunk.rs`,
//! `read_to_end`): a deflate bomb in a 32 MiB frame inflates to gigabytes.
//!
//! So before automerge sees a message, [`screen`] walks its chunks' headers and refuses
//! bundle chunks (automerge's sync protocol never sends them: `save_bundle` is an
//! experimental storage API) and compressed changes that inflate beyond a budget.
//! Change and document chunks pass as they are.

use std::io::Read;

use automerge::sync;

/// The four bytes every automerge storage chunk starts with.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Magic, checksum, chunk type.
const FIXED_HEADER: usize = 9;
const CHUNK_COMPRESSED_CHANGE: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;

/// Bytes the compressed changes of one message may inflate to, all together, unless
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
                _ => {}
            }
            rest = after;
        }
    }
    Ok(())
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

/// An unsigned LEB128 number (at most 64 bits) and the bytes after it.
fn uleb(bytes: &[u8]) -> Result<(u64, &[u8]), ChunkError> {
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
