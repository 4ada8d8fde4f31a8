//! The sign-in endpoints a device talks to:
//! - `POST /api/v1/session` `{"enrolment_code": "…", "device_name": "…"}` or
//!   `{"id_token": "<JWT>", "device_name": "…"}` (or the JWT as bearer): a device session.
//! - `POST /api/v1/session/refresh` `{"refresh_token": "bsr_…"}`: rotated tokens.
//! - `POST /api/v1/session/end` with the access token as bearer: signs this device out.
//!
//! Refusals are JSON `{"error": code, "message": words}`: 401 (`invalid_grant`, with
//! `WWW-Authenticate: Bearer … error="invalid_token"`), 403 (`unknown_subject`), 429
//! (`too_many_attempts`). Every session started or ended is audited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::device_session::{self, Ended, Granted};
use super::enrolment;
use super::principal::{oidc_user, OidcOutcome};
use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;
use crate::extract::{self, Authenticated, Credential};
use crate::state::AppState;
use crate::web_security::Transport;

/// A refusal with a code and a reason the device can show.
pub fn refusal(status: StatusCode, error: &str, message: &str) -> Response {
    let mut response = (status, Json(json!({"error": error, "message": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"buurtsync\", error=\"invalid_token\""),
        );
    }
    crate::web_security::no_store(response.headers_mut());
    response
}

fn granted(g: &Granted) -> Response {
    let mut response = Json(g).into_response();
    crate::web_security::no_store(response.headers_mut());
    response
}

/// The refresh-token cookie of browser apps: `HttpOnly` (no script, so no injected
/// script, can read it), `SameSite=Strict`, sent only to `/api/v1/session…`.
const REFRESH_COOKIE: &str = "buurtsync_refresh";
const REFRESH_COOKIE_TLS: &str = "__Secure-buurtsync_refresh";

fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    crate::web_security::cookie(headers, &[REFRESH_COOKIE, REFRESH_COOKIE_TLS])
}

/// Browser apps (`"cookie": true`): the refresh token goes into the cookie and is left
/// out of the body, so the page never holds a long-lived secret.
fn granted_in_cookie(
    state: &AppState,
    transport: Transport,
    g: &Granted,
) -> Result<Response, Error> {
    let (name, flags) = if transport.is_tls() {
        (REFRESH_COOKIE_TLS, "; Secure")
    } else {
        (REFRESH_COOKIE, "")
    };
    let cookie = format!(
        "{name}={}; HttpOnly; SameSite=Strict; Path=/api/v1/session; Max-Age={}{flags}",
        g.refresh_token, state.identity.lifetimes.refresh_idle
    );
    let mut body = serde_json::to_value(g).map_err(|e| Error::Invalid(e.to_string()))?;
    if let Some(map) = body.as_object_mut() {
        map.remove("refresh_token");
    }
    let mut response = Json(body).into_response();
    crate::web_security::no_store(response.headers_mut());
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    Ok(response)
}

fn answer(
    state: &AppState,
    transport: Transport,
    g: &Granted,
    cookie: bool,
) -> Result<Response, Error> {
    if cookie {
        granted_in_cookie(state, transport, g)
    } else {
        Ok(granted(g))
    }
}

/// A device session just started (`how`: by what): audited as `token_issued`, then
/// answered.
async fn started(
    state: &AppState,
    transport: Transport,
    g: &Granted,
    cookie: bool,
    how: &str,
) -> Result<Response, Error> {
    audit(
        state,
        &g.user,
        &g.session,
        AuditAction::TokenIssued,
        format!("device session {} via {how}", g.session),
    )
    .await?;
    answer(state, transport, g, cookie)
}

#[derive(Deserialize)]
pub struct SignIn {
    pub enrolment_code: Option<String>,
    pub id_token: Option<String>,
    pub device_name: Option<String>,
    /// Browser apps: keep the refresh token in an `HttpOnly` cookie instead.
    #[serde(default)]
    pub cookie: bool,
}

/// `/api/v1/session…`.
pub fn routes() -> axum::Router<Arc<AppState>> {
    use axum::routing::post;
    axum::Router::new()
        .route("/api/v1/session", post(sign_in))
        .route("/api/v1/session/refresh", post(refresh))
        .route("/api/v1/session/end", post(end))
}

pub(crate) async fn audit(
    state: &AppState,
    user: &str,
    device: &str,
    action: AuditAction,
    detail: String,
) -> Result<(), Error> {
    state
        .store
        .audit()
        .append(&AuditEvent::new(user, device, action).with_detail(detail))
        .await
        .map(|_| ())
}

/// `POST /api/v1/session`: sign in with an enrolment code or an identity provider's token.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    transport: Transport,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<Response, Error> {
    let device = device_session::device_name(body.device_name.as_deref());
    let lifetimes = state.identity.lifetimes;
    if let Some(typed) = &body.enrolment_code {
        let source = peer.ip();
        if !state.identity.guesses.allowed(source, Instant::now()) {
            tracing::info!(%source, "enrolment refused: too many wrong codes");
            crate::metrics::rejected("enrolment-rate-limited");
            return Ok(refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many wrong codes: ask your coordinator for a new code later",
            ));
        }
        let outcome = match enrolment::normalise(typed) {
            Some(code) => {
                device_session::start_enrolment(&state.store, &lifetimes, &code, &device).await?
            }
            None => Err(false),
        };
        return match outcome {
            Ok((g, wijk)) => {
                tracing::info!(user = %g.user, session = %g.session, %wijk, "device enrolled");
                let how = format!("enrolment code, wijk={wijk} device={device:?}");
                started(&state, transport, &g, body.cookie, &how).await
            }
            Err(spent) => {
                state.identity.guesses.wrong(source, Instant::now());
                tracing::info!(%source, spent, "enrolment refused: wrong code");
                Ok(refusal(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    if spent {
                        "this code was already used or has expired: ask your coordinator for a new one"
                    } else {
                        "unknown code"
                    },
                ))
            }
        };
    }
    let presented = extract::bearer(&headers).map(Credential::into_secret);
    let Some(token) = body.id_token.clone().or(presented) else {
        return Err(Error::Invalid("give enrolment_code or id_token".into()));
    };
    match oidc_user(&state, &token).await {
        Ok(user) => {
            let g = device_session::start_oidc(&state.store, &lifetimes, &user, &device).await?;
            tracing::info!(user = %g.user, session = %g.session, "signed in with the identity provider");
            let how = format!("identity provider, device={device:?}");
            started(&state, transport, &g, body.cookie, &how).await
        }
        Err(OidcOutcome::Refused(reason)) => {
            tracing::info!(%reason, "identity provider token refused");
            Ok(refusal(StatusCode::UNAUTHORIZED, "invalid_grant", &reason))
        }
        Err(OidcOutcome::Unlinked(subject)) => {
            tracing::info!(%subject, "identity provider token of an unlinked subject");
            audit(
                &state,
                &format!("oidc:{subject}"),
                "api",
                AuditAction::Denied,
                "sign-in: no buurtsync user linked to this subject".into(),
            )
            .await?;
            Ok(refusal(
                StatusCode::FORBIDDEN,
                "unknown_subject",
                &format!("signed in as {subject:?}, but no buurtsync user is linked to it: ask your administrator"),
            ))
        }
        Err(OidcOutcome::Failed(e)) => Err(e),
    }
}

#[derive(Deserialize, Default)]
pub struct RefreshRequest {
    /// Absent: the refresh-token cookie (browser apps), answered with a new cookie.
    pub refresh_token: Option<String>,
}

/// `POST /api/v1/session/refresh`: new access and refresh tokens; the old refresh
/// token is used up. Reuse of an old one ends the session.
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    transport: Transport,
    headers: HeaderMap,
    body: Option<Json<RefreshRequest>>,
) -> Result<Response, Error> {
    let lifetimes = state.identity.lifetimes;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let (presented, cookie) = match body.refresh_token {
        Some(t) => (t.trim().to_owned(), false),
        None => (refresh_cookie(&headers).unwrap_or_default(), true),
    };
    match device_session::refresh(&state.store, &lifetimes, &presented).await? {
        Ok(g) => answer(&state, transport, &g, cookie),
        Err(Ended::Reused { session }) => {
            let user = state
                .store
                .identity()
                .device_session(&session)
                .await?
                .map_or_else(|| "?".to_owned(), |s| s.user_id);
            audit(
                &state,
                &user,
                &session,
                AuditAction::TokenRevoked,
                format!("device session {session} ended: a rotated refresh token was used again"),
            )
            .await?;
            tracing::warn!(%session, %user, "refresh token reused: device session ended");
            Ok(refusal(
                StatusCode::UNAUTHORIZED,
                "session_revoked",
                "this refresh token was already used: the session has been ended, sign in again",
            ))
        }
        Err(Ended::Ended) => Ok(refusal(
            StatusCode::UNAUTHORIZED,
            "session_revoked",
            "this device was signed out (switched off, removed from the wijk, or unused too long)",
        )),
        Err(Ended::Unknown) => Ok(refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "unknown refresh token",
        )),
    }
}

/// `POST /api/v1/session/end` (bearer: the device's access token): signs this device out.
pub async fn end(
    State(state): State<Arc<AppState>>,
    Authenticated {
        principal,
        token_id,
    }: Authenticated,
) -> Result<Response, Error> {
    let Some(session) = state.store.identity().session_of_token(&token_id).await? else {
        return Err(Error::Invalid(
            "a service token has no device session to end".into(),
        ));
    };
    if state
        .store
        .identity()
        .revoke_device_session(&session, "signed out")
        .await?
        .is_some()
    {
        audit(
            &state,
            &principal.user_id,
            &session,
            AuditAction::TokenRevoked,
            format!("device session {session} ended: signed out on the device"),
        )
        .await?;
    }
    Ok((StatusCode::OK, Json(json!({"ended": session}))).into_response())
}
