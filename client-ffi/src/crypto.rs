//! Encryption at rest: the app's 32-byte key (from Android Keystore or iOS Keychain)
//! seals every document's bytes with XChaCha20-Poly1305, a random 24-byte nonce per write
//! and the document id as associated data, so sealed bytes cannot be swapped between
//! documents unnoticed. A sealed constant (the key check) tells a wrong key apart from a
//! damaged file when the store is opened.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{ClientError, Result};

const NONCE: usize = 24;
/// What the key check seals; its associated data keeps it from passing as a document.
const CHECK_PLAINTEXT: &[u8] = b"buurtsync local store v1";
const CHECK_AAD: &[u8] = b"buurtsync key check";

/// The app's key. Not `Debug`-printable, so it never lands in a log.
pub struct AtRestKey(XChaCha20Poly1305);

impl std::fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtRestKey(..)")
    }
}

impl AtRestKey {
    /// The key must be exactly 32 bytes, as the platform keystore hands it out.
    pub fn new(bytes: &[u8]) -> Result<AtRestKey> {
        if bytes.len() != 32 {
            return Err(ClientError::InvalidKey {
                reason: format!("expected 32 bytes, got {}", bytes.len()),
            });
        }
        let cipher =
            XChaCha20Poly1305::new_from_slice(bytes).map_err(|e| ClientError::InvalidKey {
                reason: e.to_string(),
            })?;
        Ok(AtRestKey(cipher))
    }

    /// nonce || ciphertext+tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| ClientError::Store {
            message: format!("no OS randomness for a nonce: {e}"),
        })?;
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| ClientError::Store {
                message: "encryption failed".into(),
            })?;
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Inverse of [`seal`](Self::seal); `None` if the key or the bytes are wrong.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE);
        self.0
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
            .ok()
    }

    /// A fresh key check value to store with a new store.
    pub fn key_check(&self) -> Result<Vec<u8>> {
        self.seal(CHECK_AAD, CHECK_PLAINTEXT)
    }

    /// Does this key open the stored key check?
    pub fn verify(&self, key_check: &[u8]) -> Result<()> {
        match self.open(CHECK_AAD, key_check) {
            Some(p) if p == CHECK_PLAINTEXT => Ok(()),
            _ => Err(ClientError::WrongKey),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealed bytes open with the right key and associated data only.
    #[test]
    fn seal_open_round_trip() -> Result<()> {
        let key = AtRestKey::new(&[7; 32])?;
        let other = AtRestKey::new(&[8; 32])?;
        let sealed = key.seal(b"doc-a", b"geheim plan")?;
        assert_eq!(
            key.open(b"doc-a", &sealed).as_deref(),
            Some(&b"geheim plan"[..])
        );
        assert!(key.open(b"doc-b", &sealed).is_none());
        assert!(other.open(b"doc-a", &sealed).is_none());
        assert!(key.open(b"doc-a", &sealed[..10]).is_none());
        Ok(())
    }

    /// The key check accepts its own key and names a wrong one; bad lengths are refused.
    #[test]
    fn key_check_and_lengths() -> Result<()> {
        let key = AtRestKey::new(&[1; 32])?;
        let check = key.key_check()?;
        key.verify(&check)?;
        assert!(matches!(
            AtRestKey::new(&[2; 32])?.verify(&check),
            Err(ClientError::WrongKey)
        ));
        for len in [0, 16, 31, 33, 64] {
            assert!(matches!(
                AtRestKey::new(&vec![0; len]),
                Err(ClientError::InvalidKey { .. })
            ));
        }
        Ok(())
    }
}
