//! Admin commands on accounts: wijken, users, grants and tokens. Each change to a
//! grant or token is audited as done by whoever runs the CLI.

use serde_json::json;
use sync_core::partition::WijkId;
use sync_core::policy::{GlobalRole, WijkRole};

use super::args::{GrantArgs, TokenCmd, UserCmd, WijkCmd};
use super::output::{print, rfc3339};
use crate::audit::{AuditAction, AuditEvent};
use crate::error::Error;
use crate::store::Store;

/// `wijk add|list`.
pub async fn wijk(store: &Store, cmd: WijkCmd, json_out: bool) -> Result<(), Error> {
    match cmd {
        WijkCmd::Add { id, name } => {
            let wijk = WijkId::new(id)?;
            let name = name.unwrap_or_else(|| wijk.to_string());
            store.accounts().add_wijk(&wijk, &name).await?;
            print(
                json_out,
                json!({"wijk": wijk, "name": name}),
                &format!("added wijk {wijk}"),
            );
        }
        WijkCmd::List => {
            let list = store.accounts().list_wijken().await?;
            let text = list
                .iter()
                .map(|(id, n)| format!("{id}\t{n}"))
                .collect::<Vec<_>>()
                .join("\n");
            let value = list
                .iter()
                .map(|(id, n)| json!({"wijk": id, "name": n}))
                .collect::<Vec<_>>();
            print(json_out, json!(value), &text);
        }
    }
    Ok(())
}

/// `user add|list`.
pub async fn user(store: &Store, cmd: UserCmd, json_out: bool) -> Result<(), Error> {
    match cmd {
        UserCmd::Add { id, name } => {
            let name = name.unwrap_or_else(|| id.clone());
            store.accounts().add_user(&id, &name).await?;
            print(
                json_out,
                json!({"user": id, "name": name}),
                &format!("added user {id}"),
            );
        }
        UserCmd::LinkOidc { user, subject } => {
            store.identity().link_oidc(&user, &subject).await?;
            store
                .audit()
                .append(
                    &admin_event(AuditAction::GrantAdded)
                        .with_detail(format!("oidc subject {subject:?} linked to {user}")),
                )
                .await?;
            print(
                json_out,
                json!({"user": user, "subject": subject, "linked": true}),
                &format!("linked {subject:?} to {user}"),
            );
        }
        UserCmd::UnlinkOidc { subject } => {
            let removed = store.identity().unlink_oidc(&subject).await?;
            if removed {
                store
                    .audit()
                    .append(
                        &admin_event(AuditAction::GrantRemoved)
                            .with_detail(format!("oidc subject {subject:?} unlinked")),
                    )
                    .await?;
            }
            print(
                json_out,
                json!({"subject": subject, "unlinked": removed}),
                &if removed {
                    format!("unlinked {subject:?}")
                } else {
                    "no such link".into()
                },
            );
        }
        UserCmd::List => {
            let users = store.accounts().list_users().await?;
            let text = users
                .iter()
                .map(|u| {
                    let grants: Vec<String> = u
                        .grants
                        .iter()
                        .map(|g| format!("{}@{}", g.role, g.wijk))
                        .chain(u.global_roles.iter().map(ToString::to_string))
                        .collect();
                    format!("{}\t{}\t{}", u.id, u.name, grants.join(","))
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(json_out, json!(users), &text);
        }
    }
    Ok(())
}

/// `grant USER ROLE [--wijk W]`.
pub async fn grant(store: &Store, args: GrantArgs, json_out: bool) -> Result<(), Error> {
    change_grant(store, &args, true).await?;
    store
        .audit()
        .append(&admin_event(AuditAction::GrantAdded).with_detail(grant_detail(&args)))
        .await?;
    print(
        json_out,
        json!({"user": args.user, "role": args.role, "wijk": args.wijk, "granted": true}),
        &format!(
            "granted {} to {}{}",
            args.role,
            args.user,
            args.wijk
                .as_ref()
                .map(|w| format!(" in {w}"))
                .unwrap_or_default()
        ),
    );
    Ok(())
}

/// `ungrant USER ROLE [--wijk W]`.
pub async fn ungrant(store: &Store, args: GrantArgs, json_out: bool) -> Result<(), Error> {
    let removed = change_grant(store, &args, false).await?;
    if removed {
        store
            .audit()
            .append(&admin_event(AuditAction::GrantRemoved).with_detail(grant_detail(&args)))
            .await?;
    }
    print(
        json_out,
        json!({"user": args.user, "role": args.role, "wijk": args.wijk, "removed": removed}),
        &if removed {
            format!("removed {} from {}", args.role, args.user)
        } else {
            "no such grant".into()
        },
    );
    Ok(())
}

/// `token issue|revoke|list`.
pub async fn token(store: &Store, cmd: TokenCmd, json_out: bool) -> Result<(), Error> {
    match cmd {
        TokenCmd::Issue { user, expires_in } => {
            let secs = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX);
            let issued = crate::auth::issue(store, &user, secs).await?;
            let detail = format!(
                "user={user} token={} expires={}",
                issued.id,
                rfc3339(issued.expires_at)
            );
            store
                .audit()
                .append(&admin_event(AuditAction::TokenIssued).with_detail(detail))
                .await?;
            print(
                json_out,
                json!({"token_id": issued.id, "token": issued.secret, "user": user, "expires_at": issued.expires_at}),
                &format!(
                    "{}\n(token id {}, user {user}, expires {})",
                    issued.secret,
                    issued.id,
                    rfc3339(issued.expires_at)
                ),
            );
        }
        TokenCmd::Revoke { token } if token.starts_with("ses_") => {
            let Some(session) = store
                .identity()
                .revoke_device_session(&token, "revoked by an admin")
                .await?
            else {
                return Err(Error::NotFound("no live device session matches".into()));
            };
            store
                .audit()
                .append(&admin_event(AuditAction::TokenRevoked).with_detail(format!(
                    "device session {} of {}",
                    session.id, session.user_id
                )))
                .await?;
            print(
                json_out,
                json!({"session": session.id, "revoked": true}),
                &format!("ended device session {}", session.id),
            );
        }
        TokenCmd::Revoke { token } => {
            let revoked = if crate::auth::is_secret(&token) {
                store
                    .accounts()
                    .revoke_token(None, Some(&crate::auth::hash_secret(&token)))
                    .await?
            } else {
                store.accounts().revoke_token(Some(&token), None).await?
            };
            let Some(id) = revoked else {
                return Err(Error::NotFound("no live token matches".into()));
            };
            store
                .audit()
                .append(&admin_event(AuditAction::TokenRevoked).with_detail(format!("token={id}")))
                .await?;
            print(
                json_out,
                json!({"token_id": id, "revoked": true}),
                &format!("revoked {id}"),
            );
        }
        TokenCmd::List { user } => {
            let tokens = store.accounts().list_tokens(user.as_deref()).await?;
            let text = tokens
                .iter()
                .map(|t| {
                    let status = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at <= crate::store::now() {
                        "expired"
                    } else {
                        "live"
                    };
                    format!(
                        "{}\t{}\tservice\t{}\texpires {}",
                        t.id,
                        t.user_id,
                        status,
                        rfc3339(t.expires_at)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            let (text, listed) = crate::identity::device_session::list_with_sessions(
                store,
                user.as_deref(),
                text,
                json!(tokens),
            )
            .await?;
            print(json_out, listed, &text);
        }
    }
    Ok(())
}

/// Adds (`add`) or removes a grant; whether anything changed.
async fn change_grant(store: &Store, args: &GrantArgs, add: bool) -> Result<bool, Error> {
    if let Ok(role) = args.role.parse::<WijkRole>() {
        let wijk = args
            .wijk
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("role {role} needs --wijk")))?;
        let wijk = WijkId::new(wijk.clone())?;
        if add {
            store.accounts().grant(&args.user, &wijk, role).await?;
            Ok(true)
        } else {
            store.accounts().revoke_grant(&args.user, &wijk, role).await
        }
    } else if let Ok(role) = args.role.parse::<GlobalRole>() {
        if args.wijk.is_some() {
            return Err(Error::Invalid(format!(
                "role {role} is global; drop --wijk"
            )));
        }
        if !add {
            return store.accounts().revoke_global(&args.user, role).await;
        }
        store.accounts().grant_global(&args.user, role).await?;
        Ok(true)
    } else {
        Err(Error::Invalid(format!(
            "unknown role {:?}: use professional, volunteer, coordinator (with --wijk) or consulent, central_office, admin",
            args.role
        )))
    }
}

/// `grant`/`ungrant` as audit detail: `role=… wijk=… user=…`.
fn grant_detail(args: &GrantArgs) -> String {
    match &args.wijk {
        Some(wijk) => format!("role={} wijk={wijk} user={}", args.role, args.user),
        None => format!("role={} user={}", args.role, args.user),
    }
}

/// An audit event by whoever runs the CLI: `$USER`, else `admin-cli`; device `cli`.
pub(super) fn admin_event(action: AuditAction) -> AuditEvent {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "admin-cli".into());
    AuditEvent::new(user, "cli", action)
}
