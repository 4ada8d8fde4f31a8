//! The identity tables (`store::identity`) on both engines: enrolment codes are used
//! once and only while live, refresh tokens rotate and their reuse is detected, ending a
//! session revokes its access tokens, and removal from a wijk ends its devices.

use buurtsync_server::auth::{authenticate, hash_secret};
use buurtsync_server::store::identity::{NewAccess, NewSession, Redeemed, Rotation, Via};
use buurtsync_server::store::{now, Store};
use sync_core::partition::WijkId;
use sync_core::policy::WijkRole;

mod backends;
use backends::Backend;

on_both_backends!(
    enrolment_codes_rotation_and_revocation,
    oidc_subjects_map_to_one_user
);

fn secret(tag: &str) -> String {
    format!("bst_{:0>64}", hex_of(tag))
}

fn hex_of(tag: &str) -> String {
    tag.bytes().map(|b| format!("{b:02x}")).collect()
}

fn session<'a>(
    id: &'a str,
    refresh: &'a [u8],
    access_id: &'a str,
    access: &'a [u8],
) -> NewSession<'a> {
    NewSession {
        id,
        user: "",
        device_name: "telefoon",
        via: Via::Enrolment,
        wijk: None,
        expires_at: now() + 3600,
        refresh_hash: refresh,
        access: NewAccess {
            id: access_id,
            hash: access,
            expires_at: now() + 600,
        },
    }
}

/// A code enrols once and never after its expiry; a refresh token rotates once, its
/// reuse is reported; a revoked session's access token stops authenticating; removal
/// from the wijk ends the sessions enrolled for it.
async fn enrolment_codes_rotation_and_revocation(backend: Backend) {
    let db = backends::database(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    let noord = WijkId::new("noord").expect("wijk");
    store
        .accounts()
        .add_wijk(&noord, "Noord")
        .await
        .expect("wijk");
    store
        .accounts()
        .add_user("vera", "Vera")
        .await
        .expect("user");
    store
        .accounts()
        .grant("vera", &noord, WijkRole::Volunteer)
        .await
        .expect("grant");
    let code = hash_secret("ABCDEFGH");
    store
        .identity()
        .insert_enrolment_code("enr_1", &code, "vera", &noord, "coord", now() + 900)
        .await
        .expect("code");

    let (r1, a1) = (hash_secret("r1"), secret("a1"));
    let new = session("ses_1", &r1, "tok_a1", &[]);
    let a1_hash = hash_secret(&a1);
    let new = NewSession {
        access: NewAccess {
            hash: &a1_hash,
            ..new.access
        },
        ..new
    };
    // After its expiry the code is spent, not enrolled.
    assert_eq!(
        store
            .identity()
            .enrol(&code, &new, now() + 901)
            .await
            .expect("late"),
        Redeemed::Spent
    );
    assert_eq!(
        store
            .identity()
            .enrol(&code, &new, now())
            .await
            .expect("enrol"),
        Redeemed::Enrolled {
            user: "vera".into(),
            wijk: "noord".into()
        }
    );
    assert_eq!(
        store
            .identity()
            .enrol(&code, &new, now())
            .await
            .expect("again"),
        Redeemed::Spent
    );
    assert_eq!(
        store
            .identity()
            .enrol(&hash_secret("ZZZZZZZZ"), &new, now())
            .await
            .expect("unknown"),
        Redeemed::Unknown
    );
    let (principal, _) = authenticate(&store, &a1)
        .await
        .expect("access token authenticates");
    assert_eq!(principal.user_id, "vera");

    let r2 = hash_secret("r2");
    let a2 = hash_secret(&secret("a2"));
    let access = NewAccess {
        id: "tok_a2",
        hash: &a2,
        expires_at: now() + 600,
    };
    assert_eq!(
        store
            .identity()
            .rotate_refresh(&r1, &r2, access, now() + 3600, now())
            .await
            .expect("rotate"),
        Rotation::Rotated {
            session: "ses_1".into(),
            user: "vera".into()
        }
    );
    let a3 = hash_secret(&secret("a3"));
    let access = NewAccess {
        id: "tok_a3",
        hash: &a3,
        expires_at: now() + 600,
    };
    assert_eq!(
        store
            .identity()
            .rotate_refresh(&r1, &hash_secret("r3"), access, now() + 3600, now())
            .await
            .expect("reuse"),
        Rotation::Reused {
            session: "ses_1".into()
        }
    );
    assert_eq!(
        store
            .identity()
            .rotate_refresh(
                &hash_secret("never"),
                &hash_secret("r4"),
                access,
                now() + 3600,
                now()
            )
            .await
            .expect("unknown"),
        Rotation::Unknown
    );

    let version = store.accounts().access_version().await.expect("version");
    let ended = store
        .identity()
        .revoke_device_session("ses_1", "test")
        .await
        .expect("revoke");
    assert!(ended.is_some());
    assert!(
        store.accounts().access_version().await.expect("version") > version,
        "no access change recorded"
    );
    assert!(
        authenticate(&store, &a1).await.is_err(),
        "a revoked session's access token still works"
    );
    assert_eq!(
        store
            .identity()
            .rotate_refresh(&r2, &hash_secret("r5"), access, now() + 3600, now())
            .await
            .expect("ended"),
        Rotation::Ended
    );

    // Removal from the wijk ends the sessions enrolled for it.
    let code2 = hash_secret("BCDEFGHJ");
    store
        .identity()
        .insert_enrolment_code("enr_2", &code2, "vera", &noord, "coord", now() + 900)
        .await
        .expect("code");
    let (r6, a6) = (hash_secret("r6"), hash_secret(&secret("a6")));
    let second = session("ses_2", &r6, "tok_a6", &a6);
    assert!(matches!(
        store
            .identity()
            .enrol(&code2, &second, now())
            .await
            .expect("enrol"),
        Redeemed::Enrolled { .. }
    ));
    assert_eq!(
        store
            .identity()
            .remove_from_wijk("vera", &noord)
            .await
            .expect("remove"),
        ["volunteer"]
    );
    let s2 = store
        .identity()
        .device_session("ses_2")
        .await
        .expect("read")
        .expect("exists");
    assert!(
        s2.revoked_at.is_some(),
        "removal from the wijk left the device on"
    );
    assert!(store
        .identity()
        .wijk_people(&noord)
        .await
        .expect("people")
        .is_empty());
}

/// A subject links to one user, a second link is a conflict, unlinking removes it.
async fn oidc_subjects_map_to_one_user(backend: Backend) {
    let db = backends::database(backend).await;
    let store = Store::open(&db.url).await.expect("open");
    store
        .accounts()
        .add_user("anna", "Anna")
        .await
        .expect("user");
    store
        .accounts()
        .add_user("bert", "Bert")
        .await
        .expect("user");
    store
        .identity()
        .link_oidc("anna", "anna@gemeente.test")
        .await
        .expect("link");
    assert!(store
        .identity()
        .link_oidc("bert", "anna@gemeente.test")
        .await
        .is_err());
    assert!(store.identity().link_oidc("nobody", "x").await.is_err());
    assert_eq!(
        store
            .identity()
            .oidc_user("anna@gemeente.test")
            .await
            .expect("read")
            .as_deref(),
        Some("anna")
    );
    assert!(store
        .identity()
        .unlink_oidc("anna@gemeente.test")
        .await
        .expect("unlink"));
    assert_eq!(
        store
            .identity()
            .oidc_user("anna@gemeente.test")
            .await
            .expect("read"),
        None
    );
}
