//! Tokens: issuing, hashing, and turning a presented bearer token into a [`Principal`].
//!
//! A token is `bst_` + 64 hex characters of OS randomness. Only its SHA-256 is stored,
//! so the database cannot be used to connect. Tokens expire and can be revoked.

use sha2::{Digest, Sha256};
use sync_core::policy::Principal;

use crate::error::Error;
use crate::store::crypto::random_bytes;
use crate::store::Store;

const PREFIX: &str = "bst_";

/// The stored form of a token secret.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Does this string look like one of our token secrets (rather than a token id)?
pub fn is_secret(s: &str) -> bool {
    s.len() == PREFIX.len() + 64 && s.starts_with(PREFIX)
}

/// A freshly issued token: its public id and the secret, shown once.
pub struct Issued {
    pub id: String,
    pub secret: String,
    pub expires_at: i64,
}

/// Issues a token for `user`, valid for `valid_for_secs`.
pub async fn issue(store: &Store, user: &str, valid_for_secs: i64) -> Result<Issued, Error> {
    if valid_for_secs <= 0 {
        return Err(Error::Invalid("token lifetime must be positive".into()));
    }
    let id = format!("tok_{}", hex::encode(random_bytes::<6>()));
    let secret = format!("{PREFIX}{}", hex::encode(random_bytes::<32>()));
    let expires_at = crate::store::now().saturating_add(valid_for_secs);
    store
        .accounts()
        .insert_token(&id, user, &hash_secret(&secret), expires_at)
        .await?;
    Ok(Issued {
        id,
        secret,
        expires_at,
    })
}

/// The principal a presented secret stands for, with the token's id; `Unauthorized`
/// for anything unknown, expired or revoked.
pub async fn authenticate(store: &Store, secret: &str) -> Result<(Principal, String), Error> {
    if !is_secret(secret) {
        return Err(Error::Unauthorized);
    }
    let (token_id, user) = store
        .accounts()
        .token_user(&hash_secret(secret))
        .await?
        .ok_or(Error::Unauthorized)?;
    Ok((store.accounts().principal(&user).await?, token_id))
}
