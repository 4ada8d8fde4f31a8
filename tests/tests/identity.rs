//! Identity (issue 17) end to end, on the real binary over loopback: OpenID Connect
//! sign-in against a JWKS served by the test (real RS256 and ES256 keys made by the
//! openssl CLI), device sessions and refresh-token rotation, enrolment codes from
//! `/beheer`, guess limits, and coordinators kept inside their own wijk.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buurtsync_e2e::client::Client;
use buurtsync_e2e::http;
use buurtsync_e2e::server::Fixture;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

const ISSUER: &str = "https://idp.gemeente.test/realms/buurt";
const AUDIENCE: &str = "buurtsync";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A signing key made by the openssl CLI, with its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

fn make_key(dir: &Path, kid: &str, alg: Algorithm) -> TestKey {
    let path = dir.join(format!("{kid}.pem"));
    let args: &[&str] = match alg {
        Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        _ => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    };
    let out = Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&path)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read(&path).expect("key file");
    let encoding = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).expect("rsa key"),
        _ => EncodingKey::from_ec_pem(&pem).expect("ec key"),
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    TestKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk,
    }
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "exp": now() + 300})
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A JWKS endpoint on loopback whose key set the test can change (key rotation).
struct Jwks {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Jwk>>>,
}

impl Jwks {
    async fn start(keys: Vec<Jwk>) -> Jwks {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let keys = Arc::new(Mutex::new(keys));
        let shared = keys.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let set = JwkSet {
                    keys: shared.lock().expect("keys").clone(),
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let body = serde_json::to_string(&set).expect("jwks json");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Jwks { addr, keys }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }
}

async fn sign_in(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let (status, text) = http::request(addr, "POST", "/api/v1/session", None, Some(body)).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// OIDC: valid RS256 and ES256 tokens sign in (and their access token works on the
/// API); expired, wrong audience, wrong issuer, unknown kid, alg none, HMAC and
/// another key's signature are each refused with their reason; an unlinked subject is
/// 403; a rotated key at the issuer is picked up without a restart.
#[tokio::test]
async fn oidc_sign_in_checks_every_claim_and_follows_key_rotation() {
    let fx = Fixture::new();
    fx.seed();
    fx.admin(&[
        "user",
        "link-oidc",
        "prof-noord",
        "--subject",
        "anna@gemeente.test",
    ]);
    let rsa = make_key(fx.dir.path(), "rsa-1", Algorithm::RS256);
    let ec = make_key(fx.dir.path(), "ec-1", Algorithm::ES256);
    let jwks = Jwks::start(vec![rsa.jwk.clone(), ec.jwk.clone()]).await;
    let server = fx.start(&[
        "--oidc-issuer",
        ISSUER,
        "--oidc-audience",
        AUDIENCE,
        "--oidc-jwks-url",
        &jwks.url(),
        "--oidc-jwks-min-refresh",
        "1s",
    ]);
    let addr = server.addr;

    for key in [&rsa, &ec] {
        let (status, body) = sign_in(
            addr,
            &json!({"id_token": sign(key, &claims("anna@gemeente.test")), "device_name": "tablet"}),
        )
        .await;
        assert_eq!(status, 200, "{:?} sign-in: {body}", key.alg);
        assert_eq!(body["user"], "prof-noord");
        let access = body["access_token"].as_str().expect("access token");
        let (status, me) = http::request(addr, "GET", "/api/v1/me", Some(access), None).await;
        assert_eq!(status, 200, "access token on the API: {me}");
        assert!(me.contains("prof-noord"));
    }

    let refused = |c: Value, reason: &'static str| (c, reason);
    let mut cases = vec![
        refused(json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "anna@gemeente.test", "exp": now() - 3600}), "expired"),
        refused(json!({"iss": ISSUER, "aud": "another-app", "sub": "anna@gemeente.test", "exp": now() + 300}), "audience"),
        refused(json!({"iss": "https://evil.test", "aud": AUDIENCE, "sub": "anna@gemeente.test", "exp": now() + 300}), "issuer"),
    ]
    .into_iter()
    .map(|(c, reason)| (sign(&rsa, &c), reason))
    .collect::<Vec<_>>();
    let mut unknown_kid = Header::new(Algorithm::RS256);
    unknown_kid.kid = Some("nobody-knows".into());
    cases.push((
        jsonwebtoken::encode(&unknown_kid, &claims("anna@gemeente.test"), &rsa.encoding)
            .expect("sign"),
        "unknown signing key",
    ));
    cases.push((
        format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
            b64url(claims("anna@gemeente.test").to_string().as_bytes())
        ),
        "algorithm",
    ));
    let mut hmac = Header::new(Algorithm::HS256);
    hmac.kid = Some("rsa-1".into());
    cases.push((
        jsonwebtoken::encode(
            &hmac,
            &claims("anna@gemeente.test"),
            &EncodingKey::from_secret(b"guessable").expect("hmac key"),
        )
        .expect("sign"),
        "algorithm",
    ));
    let mut impostor = make_key(fx.dir.path(), "impostor", Algorithm::RS256);
    impostor.kid = "rsa-1".into();
    cases.push((sign(&impostor, &claims("anna@gemeente.test")), "signature"));
    for (token, reason) in &cases {
        let (status, body) = sign_in(addr, &json!({"id_token": token})).await;
        assert_eq!(status, 401, "expected refusal ({reason}): {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "refusal should say {reason:?}: {message}"
        );
    }

    let (status, body) = sign_in(
        addr,
        &json!({"id_token": sign(&rsa, &claims("stranger@gemeente.test"))}),
    )
    .await;
    assert_eq!(status, 403, "unlinked subject: {body}");
    assert!(body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("no buurtsync user is linked"));

    // The issuer rotates: a new key with a new kid, the old one withdrawn.
    let rotated = make_key(fx.dir.path(), "rsa-2", Algorithm::RS256);
    *jwks.keys.lock().expect("keys") = vec![rotated.jwk.clone(), ec.jwk.clone()];
    // The unknown-kid case above fetched the set; past the refresh limit, the new kid
    // makes the server fetch it again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = sign_in(
        addr,
        &json!({"id_token": sign(&rotated, &claims("anna@gemeente.test"))}),
    )
    .await;
    assert_eq!(status, 200, "rotated key not picked up: {body}");
}

/// Makes a coordinator of `wijk` with a service token.
fn coordinator(fx: &Fixture, user: &str, wijk: &str) -> String {
    fx.admin(&["user", "add", user]);
    fx.admin(&["grant", user, "coordinator", "--wijk", wijk]);
    fx.token(user)
}

/// Invites a volunteer through /beheer (bearer login) and returns (user, code).
async fn invite(addr: SocketAddr, coordinator: &str, wijk: &str, name: &str) -> (String, String) {
    let auth = format!("Bearer {coordinator}");
    let body = format!("wijk={wijk}&name={}", name.replace(' ', "+"));
    let r = http::send(
        addr,
        "POST",
        "/beheer/invite",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    )
    .await;
    let text = r.text();
    assert_eq!(r.status, 200, "invite: {text}");
    let between = |start: &str| -> String {
        let from = text
            .find(start)
            .unwrap_or_else(|| panic!("{start} in {text}"))
            + start.len();
        text[from..]
            .split('<')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(text.contains("<svg"), "the invitation shows a QR code");
    (
        between("id=\"invited-user\">"),
        between("id=\"enrolment-code\">"),
    )
}

/// POSTs JSON from a given loopback source address (another "device" on the network).
async fn post_from(source: IpAddr, addr: SocketAddr, path: &str, body: &Value) -> u16 {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source");
    let mut stream = socket.connect(addr).await.expect("connect");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Using a refresh token twice ends the session: the live connection made with its
/// access token closes, and neither the old nor the new refresh token works again.
#[tokio::test]
async fn refresh_token_reuse_ends_the_session_and_its_connection() {
    let fx = Fixture::new();
    fx.seed();
    let coord = coordinator(&fx, "coord-noord", "noord");
    let server = fx.start(&[]);
    let (_, code) = invite(server.addr, &coord, "noord", "Vera Vrijwilliger").await;
    let (status, first) = sign_in(
        server.addr,
        &json!({"enrolment_code": code, "device_name": "telefoon"}),
    )
    .await;
    assert_eq!(status, 200, "enrolment: {first}");
    let access = first["access_token"].as_str().expect("access").to_owned();
    let old_refresh = first["refresh_token"].as_str().expect("refresh").to_owned();
    let mut device = Client::connect("vera", &server.url(), &access)
        .await
        .expect("connect with access token");

    let (status, rotated) = http::request(
        server.addr,
        "POST",
        "/api/v1/session/refresh",
        None,
        Some(&json!({"refresh_token": old_refresh})),
    )
    .await;
    assert_eq!(status, 200, "first refresh: {rotated}");
    let rotated: Value = serde_json::from_str(&rotated).expect("json");
    let new_refresh = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(new_refresh, old_refresh, "the refresh token rotates");
    assert!(
        device.is_online(),
        "a refresh leaves the device's connection alone"
    );

    let (status, body) = http::request(
        server.addr,
        "POST",
        "/api/v1/session/refresh",
        None,
        Some(&json!({"refresh_token": old_refresh})),
    )
    .await;
    assert_eq!(status, 401, "reuse must be refused: {body}");
    assert!(body.contains("session_revoked"), "{body}");
    assert!(
        device
            .pump_until(Duration::from_secs(5), |c| !c.is_online())
            .await,
        "the session's live connection stayed open after reuse"
    );
    let (status, _) = http::request(
        server.addr,
        "POST",
        "/api/v1/session/refresh",
        None,
        Some(&json!({"refresh_token": new_refresh})),
    )
    .await;
    assert_eq!(
        status, 401,
        "the newest refresh token of an ended session still worked"
    );
    let (status, _) = http::request(server.addr, "GET", "/api/v1/me", Some(&access), None).await;
    assert_eq!(status, 401, "the ended session's access token still worked");
    let listed = fx.admin(&["token", "list"]);
    let kinds: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"service") && kinds.contains(&"device_session"),
        "{listed}"
    );
}

/// An enrolment code works once; 1,000 wrong guesses from another source are all
/// refused and leave the code working for its owner; an expired code is refused.
#[tokio::test]
async fn enrolment_codes_are_single_use_and_resist_guessing() {
    let fx = Fixture::new();
    fx.seed();
    let coord = coordinator(&fx, "coord-noord", "noord");
    let server = fx.start(&["--enrolment-code-ttl", "1s"]);
    let (_, short_lived) = invite(server.addr, &coord, "noord", "Late Lotte").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = sign_in(server.addr, &json!({"enrolment_code": short_lived})).await;
    assert_eq!(status, 401, "an expired code signed in: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{body}"
    );
    drop(server);

    let server = fx.start(&[]);
    let (user, code) = invite(server.addr, &coord, "noord", "Vera Vrijwilliger").await;
    let attacker: IpAddr = "127.0.0.2".parse().expect("ip");
    let alphabet = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    let mut refused = 0;
    let mut limited = 0;
    for i in 0..1000u64 {
        // Codes of the right shape, never the real one.
        let mut n = i.wrapping_mul(2_654_435_761).wrapping_add(7);
        let guess: String = (0..8)
            .map(|_| {
                let c = alphabet[(n % 31) as usize];
                n /= 31;
                char::from(c)
            })
            .collect();
        if guess == code.replace('-', "") {
            continue;
        }
        match post_from(
            attacker,
            server.addr,
            "/api/v1/session",
            &json!({"enrolment_code": guess}),
        )
        .await
        {
            401 => refused += 1,
            429 => limited += 1,
            other => panic!("guess {i} answered {other}"),
        }
    }
    assert!(
        limited > 900,
        "guessing was not rate-limited: {refused} refused, {limited} limited"
    );
    let (status, body) = sign_in(
        server.addr,
        &json!({"enrolment_code": code.to_lowercase(), "device_name": "telefoon van Vera"}),
    )
    .await;
    assert_eq!(status, 200, "the owner's code stopped working: {body}");
    assert_eq!(body["user"], user.as_str());
    let (status, body) = sign_in(server.addr, &json!({"enrolment_code": code})).await;
    assert_eq!(status, 401, "a code worked twice: {body}");
    assert!(body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("already used"));
}

/// A coordinator of noord cannot see or touch zuid's people or devices: the page does
/// not show them and crafted requests get 403, each audited as `denied`.
#[tokio::test]
async fn coordinators_stay_inside_their_wijk() {
    let fx = Fixture::new();
    fx.seed();
    let noord = coordinator(&fx, "coord-noord", "noord");
    let zuid = coordinator(&fx, "coord-zuid", "zuid");
    let server = fx.start(&[]);
    let (zuid_user, code) = invite(server.addr, &zuid, "zuid", "Zeger Zuid").await;
    let (status, session) = sign_in(server.addr, &json!({"enrolment_code": code})).await;
    assert_eq!(status, 200);
    let zuid_session = session["session"].as_str().expect("session").to_owned();

    let page = http::get(server.addr, "/beheer", Some(&noord)).await;
    assert_eq!(page.status, 200);
    let text = page.text();
    assert!(
        text.contains("prof-noord") && text.contains("data-wijk=\"noord\""),
        "{text}"
    );
    assert!(
        !text.contains(&zuid_user) && !text.contains(&zuid_session) && !text.contains("prof-zuid"),
        "noord's coordinator sees zuid: {text}"
    );

    let auth = format!("Bearer {noord}");
    let form = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let attempts: Vec<(&str, String, &str)> = vec![
        ("GET", "/beheer?wijk=zuid".into(), ""),
        ("POST", "/beheer/invite".into(), "wijk=zuid&name=Indringer"),
        ("POST", format!("/beheer/devices/{zuid_session}/off"), ""),
        (
            "POST",
            format!("/beheer/people/{zuid_user}/remove"),
            "wijk=zuid",
        ),
        (
            "POST",
            "/beheer/people/prof-zuid/remove".into(),
            "wijk=noord",
        ),
        (
            "POST",
            "/beheer/invite".into(),
            "wijk=noord&name=Overname&user=prof-zuid",
        ),
    ];
    for (method, path, body) in &attempts {
        let r = http::send(server.addr, method, path, &form, body.as_bytes()).await;
        assert_eq!(r.status, 403, "{method} {path} {body}: {}", r.text());
    }
    // Nothing changed in zuid.
    let (status, _) = http::request(
        server.addr,
        "POST",
        "/api/v1/session/refresh",
        None,
        Some(&json!({"refresh_token": session["refresh_token"]})),
    )
    .await;
    assert_eq!(
        status, 200,
        "zuid's device was switched off by noord's coordinator"
    );
    let users = fx.admin(&["user", "list"]);
    assert!(users.to_string().contains(&zuid_user));
    let db = fx.db_url.trim_start_matches("sqlite://");
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT COUNT(*) FROM audit_log WHERE user_id = 'coord-noord' AND action = 'denied'")
        .output()
        .expect("sqlite3");
    let denied: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        denied >= attempts.len(),
        "denied attempts not audited: {denied} ({})",
        String::from_utf8_lossy(&out.stderr)
    );
}
