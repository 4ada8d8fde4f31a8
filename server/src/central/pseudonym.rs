//! Keyed pseudonyms for the central office: HMAC-SHA256 under a key derived per
//! recipient from the server secret.
//!
//! The server secret (32 random bytes) is created on first use and kept in the key
//! store's `secrets` table (`store.central().pseudonym_secret()`), never in the main database.
//! Each central-office user gets their own key, `HMAC(secret, "recipient" ‖ user id)`,
//! so one recipient's pseudonyms are stable across runs (records of one household link
//! over time) while two recipients cannot join their exports on them. Without the
//! secret nobody can go from a pseudonym back to the household — not even by trying
//! every household pseudonym a buurtteam might use.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sync_core::protocol::DocumentId;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of HMAC output kept in a pseudonym: 128 bits, far beyond any collision risk
/// at the scale of a country.
const KEPT: usize = 16;

/// The pseudonyms of one recipient.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: [u8; 32],
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(..)")
    }
}

pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Pseudonymiser {
    /// The pseudonyms for `recipient` (a central-office user id) under the server secret.
    pub fn for_recipient(secret: &[u8; 32], recipient: &str) -> Pseudonymiser {
        Pseudonymiser {
            key: mac(
                secret,
                &[b"buurtsync central recipient v1", recipient.as_bytes()],
            ),
        }
    }

    fn tagged(&self, prefix: &str, domain: &[u8], value: &[u8]) -> String {
        let out = mac(&self.key, &[domain, value]);
        format!("{prefix}{}", hex::encode(&out[..KEPT]))
    }

    /// The household: the same buurtteam pseudonym gives the same value, in any wijk
    /// and in any document (a plan moved to another wijk keeps its household).
    pub fn household(&self, household: &str) -> String {
        self.tagged("hh-", b"household", household.trim().as_bytes())
    }

    /// The record: stands for the document id, which stays inside the buurtteam.
    pub fn record(&self, id: &DocumentId) -> String {
        self.tagged("rec-", b"document", id.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stable per recipient, different between recipients and between households, and
    /// never containing the input.
    #[test]
    fn keyed_per_recipient() {
        let secret = [7u8; 32];
        let a = Pseudonymiser::for_recipient(&secret, "cbs");
        let a_again = Pseudonymiser::for_recipient(&secret, "cbs");
        let b = Pseudonymiser::for_recipient(&secret, "gemeente");
        let other_server = Pseudonymiser::for_recipient(&[8u8; 32], "cbs");
        let hh = a.household("gezin-17");
        assert_eq!(hh, a_again.household("gezin-17"));
        assert_ne!(hh, b.household("gezin-17"));
        assert_ne!(hh, other_server.household("gezin-17"));
        assert_ne!(hh, a.household("gezin-18"));
        assert!(hh.starts_with("hh-") && hh.len() == 3 + 2 * KEPT, "{hh}");
        assert!(!hh.contains("gezin"));
        let id = DocumentId::random();
        assert_ne!(a.record(&id), b.record(&id));
        assert_eq!(a.record(&id), a_again.record(&id));
        // Domain separation: a household named like a document id gets another value.
        assert_ne!(a.record(&id)[4..], a.household(&id.to_string())[3..]);
    }
}
