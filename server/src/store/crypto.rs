//! Encryption of document bytes at rest, one key per document.
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce per chunk and the document id as
//! associated data, so a chunk cannot be moved to another document unnoticed. Keys live
//! in the key store (`keys`), never in the main database.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use sync_core::protocol::DocumentId;

use crate::error::Error;

/// OS randomness; the OS source not answering is not something we can serve without.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        // No randomness means no safe tokens or ids: stop rather than continue weakly.
        panic!("the operating system's random source failed: {e}");
    }
    buf
}

/// A document's data key.
#[derive(Clone)]
pub struct DocKey(pub [u8; 32]);

impl std::fmt::Debug for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocKey(..)")
    }
}

const NONCE: usize = 24;

impl DocKey {
    pub fn random() -> DocKey {
        DocKey(random_bytes::<32>())
    }

    /// nonce || ciphertext+tag.
    pub fn seal(&self, id: &DocumentId, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let nonce = random_bytes::<NONCE>();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| Error::Corrupt("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Inverse of [`seal`](Self::seal); a wrong key or altered bytes are `Corrupt`.
    pub fn open(&self, id: &DocumentId, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed.len() < NONCE {
            return Err(Error::Corrupt(format!("document {id}: chunk too short")));
        }
        let (nonce, body) = sealed.split_at(NONCE);
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| Error::Corrupt(format!("document {id}: chunk does not decrypt")))
    }

    /// The content key of a chunk: keyed, so after erasure a stored hash cannot be used
    /// to confirm a guess of the content.
    pub fn chunk_hash(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(plaintext);
        h.finalize().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealed bytes open with the right key and document only.
    #[test]
    fn seal_and_open() {
        let id = DocumentId::random();
        let key = DocKey::random();
        let sealed = key.seal(&id, b"huisbezoek").expect("seal");
        assert!(!sealed.windows(10).any(|w| w == b"huisbezoek"));
        assert_eq!(key.open(&id, &sealed).expect("open"), b"huisbezoek");
        assert!(DocKey::random().open(&id, &sealed).is_err(), "wrong key");
        assert!(
            key.open(&DocumentId::random(), &sealed).is_err(),
            "wrong document"
        );
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(key.open(&id, &altered).is_err(), "altered bytes");
        assert!(key.open(&id, b"short").is_err());
    }
}
