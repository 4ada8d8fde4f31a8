//! `/beheer`: the coordinator's page, rendered on the server, no scripts (the
//! Content-Security-Policy forbids them). Per wijk the coordinator coordinates: the
//! people and their roles, their devices with last-seen time, *invite volunteer* (an
//! enrolment code and its QR code), *switch off device* (ends the device session: its
//! live connections close within one access poll) and *remove from wijk*.
//! Admin-only actions (users with other roles, global roles, tokens) stay in the CLI.
//!
//! Login and CSRF follow the dashboard (`central::session`): the token or the identity
//! provider's token is posted once, the answer is an `HttpOnly; SameSite=Strict`
//! cookie (`Secure` and `__Host-` under TLS) standing for the checked credential, which
//! is re-checked on every request. Posts carrying the cookie must come from this origin
//! (`Origin`, `Sec-Fetch-Site`). A bearer header works too (scripts, tests).
//!
//! A coordinator acts only inside their own wijken: anything about another wijk, its
//! people or their devices is refused with 403 and audited as `denied`.
//!
//! Layout: [`page`] renders; this module decides who may do what.

pub mod page;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use sync_core::partition::WijkId;
use sync_core::policy::{Principal, WijkRole};

use crate::audit::{AuditAction, AuditEvent};
use crate::central::session::{self, LoginCookie};
use crate::error::Error;
use crate::extract;
use crate::html::LoginForm;
use crate::identity::enrolment;
use crate::identity::principal::{authenticate, AllowOidc};
use crate::state::AppState;
use crate::web_security::{is_cross_site, Transport};

/// The routes under `/beheer`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/beheer", get(overview))
        .route("/beheer/login", post(login))
        .route("/beheer/logout", post(logout))
        .route("/beheer/invite", post(invite))
        .route("/beheer/devices/{id}/off", post(switch_off))
        .route("/beheer/people/{user}/remove", post(remove))
}

/// The login cookie (`Path=/beheer` over plain HTTP).
const COOKIE: LoginCookie = LoginCookie {
    plain: "buurtsync_beheer",
    tls: "__Host-buurtsync_beheer",
    plain_path: "/beheer",
};

/// Who is acting: their principal, credential id, and the wijken they coordinate.
pub struct Coordinator {
    principal: Principal,
    credential: String,
    wijken: BTreeSet<WijkId>,
    by_cookie: bool,
}

impl Coordinator {
    fn device(&self) -> String {
        format!("{}/beheer", self.credential)
    }
}

fn coordinated(p: &Principal) -> BTreeSet<WijkId> {
    p.grants
        .iter()
        .filter(|g| g.role == WijkRole::Coordinator)
        .map(|g| g.wijk.clone())
        .collect()
}

/// Is the credential behind a login still good? Service and access tokens must still
/// be live; an identity provider login lasts as long as the cookie.
async fn still_live(state: &AppState, user: &str, credential: &str) -> Result<bool, Error> {
    if credential.starts_with("oidc:") {
        return Ok(state.store.identity().user_name(user).await?.is_some());
    }
    Ok(state
        .store
        .accounts()
        .live_token_user(credential)
        .await?
        .as_deref()
        == Some(user))
}

/// The coordinator looking: `Ok(None)` when nobody is logged in; 403 for a logged-in
/// user who coordinates no wijk.
async fn viewer(
    state: &AppState,
    transport: Transport,
    headers: &HeaderMap,
) -> Result<Option<Coordinator>, Error> {
    let (principal, credential, by_cookie) = if let Some(token) = extract::bearer(headers) {
        let (p, c) = authenticate(state, token.secret(), AllowOidc::Yes).await?;
        (p, c, false)
    } else {
        let Some(cookie) = COOKIE.read(headers, transport) else {
            return Ok(None);
        };
        let Some(s) = state.identity.beheer_sessions.get(&cookie) else {
            return Ok(None);
        };
        if !still_live(state, &s.user_id, &s.token_id).await? {
            state.identity.beheer_sessions.end(&cookie);
            return Ok(None);
        }
        (
            state.store.accounts().principal(&s.user_id).await?,
            s.token_id,
            true,
        )
    };
    let wijken = coordinated(&principal);
    if wijken.is_empty() {
        deny(
            state,
            &principal.user_id,
            &format!("{credential}/beheer"),
            "beheer: not a coordinator",
        )
        .await?;
        return Err(Error::Forbidden("not a coordinator".into()));
    }
    Ok(Some(Coordinator {
        principal,
        credential,
        wijken,
        by_cookie,
    }))
}

async fn audit(state: &AppState, event: AuditEvent) -> Result<(), Error> {
    state.store.audit().append(&event).await.map(|_| ())
}

async fn deny(state: &AppState, user: &str, device: &str, detail: &str) -> Result<(), Error> {
    tracing::info!(%user, %detail, "beheer: denied");
    audit(
        state,
        AuditEvent::new(user, device, AuditAction::Denied).with_detail(detail),
    )
    .await
}

/// The acting coordinator for a post, with the CSRF check; 401 without a login. A
/// post that carries the cookie must come from a page of this origin
/// ([`is_cross_site`]): the cookie is `SameSite=Strict` already; the check also holds
/// for browsers without it (our pages send `Referrer-Policy: same-origin`, so browsers
/// send a real `Origin` rather than `null` on their own posts).
async fn actor(
    state: &AppState,
    transport: Transport,
    headers: &HeaderMap,
) -> Result<Coordinator, Error> {
    let who = viewer(state, transport, headers)
        .await?
        .ok_or(Error::Unauthorized)?;
    if who.by_cookie && is_cross_site(headers) {
        deny(
            state,
            &who.principal.user_id,
            &who.device(),
            "beheer: cross-site post refused",
        )
        .await?;
        return Err(Error::Forbidden("cross-site request".into()));
    }
    Ok(who)
}

/// The coordinator acting in a post ([`actor`]); handlers take it as an extractor.
impl FromRequestParts<Arc<AppState>> for Coordinator {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        actor(state, Transport::of(parts), &parts.headers).await
    }
}

/// Who is looking at a page ([`viewer`]): a coordinator, or nobody yet (the login).
pub struct Looking(Option<Coordinator>);

impl FromRequestParts<Arc<AppState>> for Looking {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        viewer(state, Transport::of(parts), &parts.headers)
            .await
            .map(Looking)
    }
}

/// Refuses (403, audited) unless the coordinator coordinates `wijk`.
async fn require_wijk(
    state: &AppState,
    who: &Coordinator,
    wijk: &str,
    what: &str,
) -> Result<WijkId, Error> {
    match WijkId::new(wijk.to_owned()) {
        Ok(w) if who.wijken.contains(&w) => Ok(w),
        _ => {
            deny(
                state,
                &who.principal.user_id,
                &who.device(),
                &format!("beheer: {what} in wijk {wijk:?}, not coordinated by this user"),
            )
            .await?;
            Err(Error::Forbidden("not your wijk".into()))
        }
    }
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    pub wijk: Option<String>,
}

/// `GET /beheer[?wijk=…]`: the login form, or the coordinator's wijken.
pub async fn overview(
    State(state): State<Arc<AppState>>,
    Looking(who): Looking,
    Query(q): Query<OverviewQuery>,
) -> Result<Response, Error> {
    let Some(who) = who else {
        return Ok(page::login(StatusCode::OK, None));
    };
    let shown: Vec<WijkId> = match &q.wijk {
        Some(w) => vec![require_wijk(&state, &who, w, "view").await?],
        None => who.wijken.iter().cloned().collect(),
    };
    let names = state.store.accounts().wijk_names().await?;
    let mut sections = Vec::new();
    for wijk in shown {
        let people = state.store.identity().wijk_people(&wijk).await?;
        let devices = state.store.identity().wijk_device_sessions(&wijk).await?;
        let name = names
            .get(wijk.as_str())
            .cloned()
            .unwrap_or_else(|| wijk.to_string());
        sections.push(page::WijkView {
            wijk,
            name,
            people,
            devices,
        });
    }
    Ok(page::overview(&who.principal.user_id, &sections, None))
}

/// `POST /beheer/login` (form field `token`: a token or the identity provider's token).
pub async fn login(
    State(state): State<Arc<AppState>>,
    transport: Transport,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, Error> {
    if is_cross_site(&headers) {
        return Ok(page::login(
            StatusCode::FORBIDDEN,
            Some("Inloggen kan alleen vanaf deze pagina."),
        ));
    }
    let (principal, credential) =
        match authenticate(&state, form.token.trim(), AllowOidc::Yes).await {
            Ok(found) => found,
            Err(Error::Unauthorized) => {
                return Ok(page::login(
                    StatusCode::UNAUTHORIZED,
                    Some("Onbekende, verlopen of ingetrokken token."),
                ))
            }
            Err(Error::Forbidden(_)) => {
                return Ok(page::login(
                    StatusCode::FORBIDDEN,
                    Some("Dit account is niet aan een buurtsync-gebruiker gekoppeld."),
                ))
            }
            Err(e) => return Err(e),
        };
    if coordinated(&principal).is_empty() {
        deny(
            &state,
            &principal.user_id,
            &format!("{credential}/beheer"),
            "beheer login: not a coordinator",
        )
        .await?;
        return Ok(page::login(
            StatusCode::FORBIDDEN,
            Some("Alleen coördinatoren van een wijk kunnen hier inloggen."),
        ));
    }
    let cookie = state
        .identity
        .beheer_sessions
        .start(&principal.user_id, &credential);
    let set_cookie = COOKIE.set(&cookie, transport, session::LIFETIME.as_secs());
    audit(
        &state,
        AuditEvent::new(
            &principal.user_id,
            format!("{credential}/beheer"),
            AuditAction::TokenIssued,
        )
        .with_detail("beheer login"),
    )
    .await?;
    page::PAGE.redirect("/beheer", Some(&set_cookie))
}

/// `POST /beheer/logout`.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    transport: Transport,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if let Some(cookie) = COOKIE.read(&headers, transport) {
        state.identity.beheer_sessions.end(&cookie);
    }
    page::PAGE.redirect("/beheer", Some(&COOKIE.set("", transport, 0)))
}

#[derive(Deserialize)]
pub struct InviteForm {
    pub wijk: String,
    pub name: String,
    /// An existing volunteer's user id; empty: a new user is made from the name.
    #[serde(default)]
    pub user: String,
}

/// A user id from a name: lower case letters and digits with dashes, plus a random tail.
fn user_id_from(name: &str) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base = base
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(40);
    if base.is_empty() {
        base = "vrijwilliger".into();
    }
    format!(
        "{base}-{}",
        hex::encode(crate::store::crypto::random_bytes::<2>())
    )
}

/// `POST /beheer/invite`: an enrolment code for a volunteer of the wijk. An existing
/// user may be invited only when they are nothing but a volunteer of wijken this
/// coordinator coordinates (a coordinator cannot enrol a device as a professional).
pub async fn invite(
    State(state): State<Arc<AppState>>,
    who: Coordinator,
    transport: Transport,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Result<Response, Error> {
    let wijk = require_wijk(&state, &who, &form.wijk, "invite").await?;
    let name: String = form
        .name
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err(Error::Invalid("give the volunteer's name".into()));
    }
    let user = form.user.trim().to_owned();
    let user = if user.is_empty() {
        let id = user_id_from(&name);
        state.store.accounts().add_user(&id, &name).await?;
        id
    } else {
        let existing = state.store.accounts().principal(&user).await?;
        let known = state.store.identity().user_name(&user).await?.is_some();
        let only_volunteer_here = existing.global_roles.is_empty()
            && existing
                .grants
                .iter()
                .all(|g| g.role == WijkRole::Volunteer && who.wijken.contains(&g.wijk));
        if !known || !only_volunteer_here {
            deny(&state, &who.principal.user_id, &who.device(), &format!("beheer: invite of {user:?}, who is not only a volunteer of this coordinator's wijken")).await?;
            return Err(Error::Forbidden(
                "only an administrator can enrol this person".into(),
            ));
        }
        user
    };
    state
        .store
        .accounts()
        .grant(&user, &wijk, WijkRole::Volunteer)
        .await?;
    audit(
        &state,
        AuditEvent::new(
            &who.principal.user_id,
            who.device(),
            AuditAction::GrantAdded,
        )
        .with_detail(format!("beheer: volunteer {user} in {wijk}")),
    )
    .await?;
    let lifetime = state.identity.lifetimes.enrolment_code;
    let expires_at = crate::store::now() + lifetime;
    let id = format!(
        "enr_{}",
        hex::encode(crate::store::crypto::random_bytes::<6>())
    );
    let mut code = enrolment::new_code();
    // A clash with another live code's hash is astronomically rare; draw again.
    while let Err(Error::Conflict(_)) = state
        .store
        .identity()
        .insert_enrolment_code(
            &id,
            &crate::auth::hash_secret(&code),
            &user,
            &wijk,
            &who.principal.user_id,
            expires_at,
        )
        .await
    {
        code = enrolment::new_code();
    }
    audit(
        &state,
        AuditEvent::new(
            &who.principal.user_id,
            who.device(),
            AuditAction::TokenIssued,
        )
        .with_detail(format!(
            "beheer: enrolment code {id} for {user} in {wijk}, valid {lifetime} s"
        )),
    )
    .await?;
    let base = state.identity.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if transport.is_tls() { "https" } else { "http" };
        format!("{scheme}://{host}")
    });
    let link = enrolment::link(&base, &code);
    let qr = enrolment::qr_svg(&link)?;
    Ok(page::invited(&page::Invited {
        wijk: &wijk,
        user: &user,
        name: &name,
        code: &enrolment::display(&code),
        link: &link,
        qr_svg: &qr,
        expires_at,
    }))
}

/// `POST /beheer/devices/{id}/off`: ends a device session of someone in the
/// coordinator's wijken.
pub async fn switch_off(
    State(state): State<Arc<AppState>>,
    who: Coordinator,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let session = state.store.identity().device_session(&id).await?;
    let theirs = match &session {
        Some(s) => {
            let p = state.store.accounts().principal(&s.user_id).await?;
            p.grants.iter().any(|g| who.wijken.contains(&g.wijk))
        }
        None => false,
    };
    let Some(session) = session.filter(|_| theirs) else {
        deny(
            &state,
            &who.principal.user_id,
            &who.device(),
            &format!("beheer: switch off device {id:?}, not of this coordinator's wijken"),
        )
        .await?;
        return Err(Error::Forbidden("not a device of your wijken".into()));
    };
    if state
        .store
        .identity()
        .revoke_device_session(&session.id, "switched off on /beheer")
        .await?
        .is_some()
    {
        audit(
            &state,
            AuditEvent::new(
                &who.principal.user_id,
                who.device(),
                AuditAction::TokenRevoked,
            )
            .with_detail(format!(
                "beheer: switched off device session {} ({:?}) of {}",
                session.id, session.device_name, session.user_id
            )),
        )
        .await?;
        tracing::info!(by = %who.principal.user_id, session = %session.id, user = %session.user_id, "device switched off");
    }
    page::PAGE.redirect("/beheer", None)
}

#[derive(Deserialize)]
pub struct RemoveForm {
    pub wijk: String,
}

/// `POST /beheer/people/{user}/remove`: takes the person's roles in the wijk away and
/// ends their devices enrolled for it. Coordinators (and oneself) only by an admin.
pub async fn remove(
    State(state): State<Arc<AppState>>,
    who: Coordinator,
    Path(user): Path<String>,
    Form(form): Form<RemoveForm>,
) -> Result<Response, Error> {
    let wijk = require_wijk(&state, &who, &form.wijk, "remove a person").await?;
    let target = state.store.accounts().principal(&user).await?;
    let roles: Vec<WijkRole> = target
        .grants
        .iter()
        .filter(|g| g.wijk == wijk)
        .map(|g| g.role)
        .collect();
    if roles.is_empty() {
        deny(
            &state,
            &who.principal.user_id,
            &who.device(),
            &format!("beheer: remove {user:?}, who is not in {wijk}"),
        )
        .await?;
        return Err(Error::Forbidden("not a person of your wijk".into()));
    }
    if roles.contains(&WijkRole::Coordinator) || user == who.principal.user_id {
        deny(
            &state,
            &who.principal.user_id,
            &who.device(),
            &format!("beheer: remove coordinator {user:?} (admin only)"),
        )
        .await?;
        return Err(Error::Forbidden(
            "coordinators are removed by an administrator".into(),
        ));
    }
    let removed = state
        .store
        .identity()
        .remove_from_wijk(&user, &wijk)
        .await?;
    audit(
        &state,
        AuditEvent::new(
            &who.principal.user_id,
            who.device(),
            AuditAction::GrantRemoved,
        )
        .with_detail(format!(
            "beheer: removed {user} from {wijk} (roles {})",
            removed.join(",")
        )),
    )
    .await?;
    page::PAGE.redirect("/beheer", None)
}
