//! Identifiers on the wire: document ids (bs58check of a 16-byte UUID) and change heads
//! (bs58check of the 32-byte change hash), as automerge-repo spells them.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use automerge::ChangeHash;

/// A document id: the bs58check encoding of a 16-byte UUID. A document URL is
/// `automerge:<id>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// A fresh random id, as `repo.create()` makes.
    pub fn random() -> Self {
        DocumentId(*uuid::Uuid::new_v4().as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        DocumentId(bytes)
    }

    /// Accepts the 16 raw bytes some senders put on the wire instead of the string.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidDocumentId> {
        <[u8; 16]>::try_from(bytes)
            .map(DocumentId)
            .map_err(|_| InvalidDocumentId(format!("{} raw bytes, expected 16", bytes.len())))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// `automerge:<id>`, the form users paste.
    pub fn url(&self) -> String {
        format!("automerge:{self}")
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = spelled(&ID_TEXTS, &self.0, |id| {
            bs58::encode(id).with_check().into_string()
        });
        f.write_str(&text)
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = InvalidDocumentId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("automerge:").unwrap_or(s);
        if s.len() > 64 {
            return Err(InvalidDocumentId("too long".into()));
        }
        if let Some(id) = read_back(s) {
            return Ok(id);
        }
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|e| InvalidDocumentId(format!("not bs58check: {e}")))?;
        let id = DocumentId::from_slice(&bytes)?;
        remember_read(s, id);
        Ok(id)
    }
}

/// bs58check is quadratic in its input and its checksum is two SHA-256 rounds: a few
/// µs per id or head. A relayed change spells the same document id and heads in every
/// one of its ~17 outgoing messages and reads the id back from ~9 incoming ones, so each
/// thread keeps the spellings it made last: a direct-mapped table of 256 slots per kind
/// (ids and hashes are uniformly random bytes, so their first byte picks the slot).
/// A slot holds what it was last given; a miss spells afresh and takes the slot.
struct Spellings<const N: usize> {
    slots: Vec<Option<([u8; N], Box<str>)>>,
}

impl<const N: usize> Spellings<N> {
    fn new() -> RefCell<Self> {
        RefCell::new(Spellings {
            slots: vec![None; 256],
        })
    }
}

/// Ids read from the wire, by a hash of their text (see [`read_back`]).
type ReadIds = Vec<Option<(Box<str>, DocumentId)>>;

thread_local! {
    static ID_TEXTS: RefCell<Spellings<16>> = Spellings::new();
    static HEAD_TEXTS: RefCell<Spellings<32>> = Spellings::new();
    /// The other way, for ids read from the wire: slot by a hash of the text.
    static READ_IDS: RefCell<ReadIds> = RefCell::new(vec![None; 256]);
}

/// `spell(bytes)`, from this thread's table when it holds it.
fn spelled<const N: usize>(
    table: &'static std::thread::LocalKey<RefCell<Spellings<N>>>,
    bytes: &[u8; N],
    spell: impl FnOnce(&[u8; N]) -> String,
) -> String {
    let slot = usize::from(bytes[0]);
    let hit = table.with(|t| match t.try_borrow().ok()?.slots[slot].as_ref() {
        Some((key, text)) if key == bytes => Some(text.to_string()),
        _ => None,
    });
    if let Some(text) = hit {
        return text;
    }
    let text = spell(bytes);
    table.with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            t.slots[slot] = Some((*bytes, text.as_str().into()));
        }
    });
    text
}

fn text_slot(text: &str) -> usize {
    // FNV-1a, folded to a byte.
    let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash ^ (hash >> 8) ^ (hash >> 16) ^ (hash >> 24)) as usize & 0xff
}

/// The id this thread last read as `text`, if it still holds it.
fn read_back(text: &str) -> Option<DocumentId> {
    READ_IDS.with(|t| match t.try_borrow().ok()?[text_slot(text)].as_ref() {
        Some((known, id)) if known.as_ref() == text => Some(*id),
        _ => None,
    })
}

/// Notes that `text` is the spelling of `id`, for [`read_back`].
fn remember_read(text: &str, id: DocumentId) {
    READ_IDS.with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            t[text_slot(text)] = Some((text.into(), id));
        }
    });
}

/// A `documentId` that is not the bs58check form of 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid document id: {0}")]
pub struct InvalidDocumentId(pub String);

/// Heads as automerge-repo sends them in `remote-heads-changed`: bs58check strings.
pub fn encode_heads(heads: &[ChangeHash]) -> Vec<String> {
    heads
        .iter()
        .map(|h| {
            spelled(&HEAD_TEXTS, &h.0, |h| {
                bs58::encode(h).with_check().into_string()
            })
        })
        .collect()
}

/// Inverse of [`encode_heads`]; `None` if any entry is not a bs58check change hash.
pub fn decode_heads(heads: &[String]) -> Option<Vec<ChangeHash>> {
    heads
        .iter()
        .map(|s| {
            let bytes = bs58::decode(s).with_check(None).into_vec().ok()?;
            ChangeHash::try_from(bytes.as_slice()).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids survive a round trip through their string and URL forms.
    #[test]
    fn document_id_round_trip() {
        let id = DocumentId::random();
        assert_eq!(id.to_string().parse::<DocumentId>(), Ok(id));
        assert_eq!(id.url().parse::<DocumentId>(), Ok(id));
    }

    /// The per-thread spellings give what bs58check gives, also when ids and heads
    /// share a slot and push each other out, and a remembered spelling never answers
    /// for another text.
    #[test]
    fn remembered_spellings_are_the_spellings() {
        let spell = |b: &[u8]| bs58::encode(b).with_check().into_string();
        // Same first byte: the same slot.
        let ids: Vec<DocumentId> = (0..6u8)
            .map(|i| {
                let mut b = *DocumentId::random().as_bytes();
                b[0] = 42;
                b[15] = i;
                DocumentId::from_bytes(b)
            })
            .collect();
        for _ in 0..3 {
            for id in ids.iter().chain(ids.iter().rev()) {
                let text = id.to_string();
                assert_eq!(text, spell(id.as_bytes()));
                assert_eq!(text.parse::<DocumentId>(), Ok(*id));
            }
        }
        // A text one character off is not read back as the id it resembles.
        let text = ids[0].to_string();
        let mut other = text.clone().into_bytes();
        let last = other.len() - 1;
        other[last] = if other[last] == b'2' { b'3' } else { b'2' };
        let other = String::from_utf8(other).expect("ascii");
        assert_ne!(other.parse::<DocumentId>(), Ok(ids[0]));
        let heads: Vec<ChangeHash> = (0..4u8)
            .map(|i| {
                let mut b = [9u8; 32];
                b[31] = i;
                ChangeHash(b)
            })
            .collect();
        for _ in 0..2 {
            let texts = encode_heads(&heads);
            let fresh: Vec<String> = heads.iter().map(|h| spell(&h.0)).collect();
            assert_eq!(texts, fresh);
            assert_eq!(decode_heads(&texts), Some(heads.clone()));
        }
    }

    /// Garbage, wrong lengths and broken checksums are errors, not panics.
    #[test]
    fn document_id_rejects_garbage() {
        let check = |s: &str| assert!(s.parse::<DocumentId>().is_err(), "{s:?} accepted");
        check("");
        check("0OIl");
        check("abc");
        check(&"z".repeat(200));
        // 16 bytes without checksum
        check(&bs58::encode([7u8; 16]).into_string());
        // checksum over 15 bytes
        check(&bs58::encode([7u8; 15]).with_check().into_string());
    }

    /// Heads survive the bs58check encoding automerge-repo uses.
    #[test]
    fn heads_round_trip() {
        let heads = vec![ChangeHash([1; 32]), ChangeHash([2; 32])];
        assert_eq!(decode_heads(&encode_heads(&heads)), Some(heads));
        assert_eq!(decode_heads(&["nope".to_string()]), None);
    }
}
