//! Where access tokens come from: the token given at `open` or by `set_token`, and the
//! app's [`CredentialsProvider`], asked for a fresh one when the server refuses the
//! current token (HTTP 401 at the upgrade or the API, or websocket close code 4401).
//!
//! An expired or revoked token is never a reason to purge: the server tells that case
//! apart on the wire from "access to this document ended" (docs/client.md).

use std::sync::{Arc, Mutex, PoisonError};

/// What the app implements to hand out fresh access tokens (for example by using its
/// refresh token). Called on a library thread; it may block on the network.
#[uniffi::export(with_foreign)]
pub trait CredentialsProvider: Send + Sync {
    /// A fresh access token, or `None` when there is none (the user must sign in).
    fn fresh_token(&self) -> Option<String>;
}

/// The current token and the provider.
pub struct Credentials {
    token: Mutex<String>,
    provider: Mutex<Option<Arc<dyn CredentialsProvider>>>,
}

impl Credentials {
    pub fn new(token: String) -> Credentials {
        Credentials {
            token: Mutex::new(token),
            provider: Mutex::new(None),
        }
    }

    pub fn token(&self) -> String {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_token(&self, token: String) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }

    pub fn set_provider(&self, provider: Option<Arc<dyn CredentialsProvider>>) {
        *self.provider.lock().unwrap_or_else(PoisonError::into_inner) = provider;
    }

    /// Asks the provider (if any) for a fresh token, off the async threads. Returns
    /// whether a token different from the refused one was installed.
    pub async fn refresh(&self) -> bool {
        let provider = self
            .provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(provider) = provider else {
            return false;
        };
        let fresh = tokio::task::spawn_blocking(move || provider.fresh_token())
            .await
            .ok()
            .flatten();
        match fresh {
            Some(token) if !token.is_empty() && token != self.token() => {
                self.set_token(token);
                true
            }
            _ => false,
        }
    }
}
