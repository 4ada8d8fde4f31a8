//! Identifiers on the wire: document ids (bs58check of a 16-byte UUID) and change heads
//! (bs58check of the 32-byte change hash), as automerge-repo spells them.

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
        f.write_str(&bs58::encode(self.0).with_check().into_string())
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
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|e| InvalidDocumentId(format!("not bs58check: {e}")))?;
        DocumentId::from_slice(&bytes)
    }
}

/// A `documentId` that is not the bs58check form of 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid document id: {0}")]
pub struct InvalidDocumentId(pub String);

/// Heads as automerge-repo sends them in `remote-heads-changed`: bs58check strings.
pub fn encode_heads(heads: &[ChangeHash]) -> Vec<String> {
    heads
        .iter()
        .map(|h| bs58::encode(h.0).with_check().into_string())
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
