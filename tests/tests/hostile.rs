//! 1,000 malformed or hostile inputs of many kinds over real sockets while a
//! well-behaved device keeps syncing: its edits all arrive, the server never panics,
//! its memory stays bounded, and nothing stored is lost. Also the liveness limits one
//! by one: slowloris upgrades, sockets that never join, half-open peers, connections
//! per user, document size.

use std::time::{Duration, Instant};

use buurtsync_e2e::client::{Client, RawPeer, Seen};
use buurtsync_e2e::server::{Fixture, ServerProcess};
use sync_core::protocol::DocumentId;
use sync_core::schema::{self, Goal, Leefdomein, Plan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hostile sessions; each delivers `PER_SESSION` inputs.
const SESSIONS: usize = 100;
const PER_SESSION: usize = 10;
const MAX_FRAME: usize = 256 * 1024;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The server's resident memory in KiB (VmRSS of the child process).
fn rss_kib(server: &ServerProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("server process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A CBOR map {type: t, senderId: "x", targetId: "y", documentId: id, data: bytes}.
fn frame(t: &str, doc: Option<&str>, data: Option<&[u8]>) -> Vec<u8> {
    let mut map = vec![
        (
            ciborium::Value::Text("type".into()),
            ciborium::Value::Text(t.into()),
        ),
        (
            ciborium::Value::Text("senderId".into()),
            ciborium::Value::Text("hostile".into()),
        ),
        (
            ciborium::Value::Text("targetId".into()),
            ciborium::Value::Text("server".into()),
        ),
    ];
    if let Some(d) = doc {
        map.push((
            ciborium::Value::Text("documentId".into()),
            ciborium::Value::Text(d.into()),
        ));
    }
    if let Some(b) = data {
        map.push((
            ciborium::Value::Text("data".into()),
            ciborium::Value::Bytes(b.to_vec()),
        ));
    }
    let mut out = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(map), &mut out).expect("cbor");
    out
}

/// One hostile session of kind `kind`: `PER_SESSION` inputs. Returns how many inputs
/// it delivered (attempted), always `PER_SESSION`.
async fn hostile_session(
    kind: usize,
    seed: u64,
    url: String,
    addr: std::net::SocketAddr,
    token: String,
    victim: DocumentId,
) -> usize {
    let mut rng = Rng(seed | 1);
    let victim_s = victim.to_string();
    match kind {
        // Random bytes, truncated frames, deep nesting, absurd lengths, unknown types,
        // broken automerge payloads, text frames: all on a joined socket.
        0..=6 => {
            let mut peer = RawPeer::joined(&url, &token).await;
            for i in 0..PER_SESSION {
                let bytes = match kind {
                    0 => {
                        let n = (rng.next() % 512) as usize;
                        rng.bytes(n)
                    }
                    1 => {
                        let f = frame("sync", Some(&victim_s), Some(&rng.bytes(64)));
                        let cut = (rng.next() as usize) % f.len();
                        f[..cut].to_vec()
                    }
                    2 => {
                        let depth = 1000 + (rng.next() % 100_000) as usize;
                        let mut v = vec![0x81; depth];
                        v.push(0);
                        v
                    }
                    3 => {
                        // A byte string claiming 2^60 bytes; a map claiming 2^32 pairs.
                        if i % 2 == 0 {
                            vec![0x5b, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 2]
                        } else {
                            vec![0xba, 0xff, 0xff, 0xff, 0xff, 0x61, 0x61]
                        }
                    }
                    4 => frame("bogus-type", Some(&victim_s), None),
                    5 => {
                        // Garbage where an automerge sync message belongs, for the good
                        // device's own document (which this user may not read).
                        frame("sync", Some(&victim_s), Some(&rng.bytes(200)))
                    }
                    _ => {
                        // A sync message for a fresh id carrying garbage.
                        let id = DocumentId::random().to_string();
                        frame("request", Some(&id), Some(&rng.bytes(100)))
                    }
                };
                if kind == 6 && i % 2 == 1 {
                    peer.send_text("not cbor").await;
                } else {
                    peer.send_raw(bytes).await;
                }
            }
            // Whatever the server says, it says it with a valid frame or a close.
            for _ in 0..PER_SESSION {
                match peer.next_within(Duration::from_millis(500)).await {
                    Seen::Message(_) => {}
                    Seen::Closed(_) | Seen::Nothing => break,
                }
            }
        }
        // Oversized frames: the socket is closed with 1009.
        7 => {
            for _ in 0..PER_SESSION {
                let mut peer = RawPeer::joined(&url, &token).await;
                peer.send_raw(vec![0xa0; MAX_FRAME + 1024]).await;
                loop {
                    match peer.next().await {
                        Seen::Closed(code) => {
                            assert!(
                                code.is_none() || code == Some(1009),
                                "oversized frame closed with {code:?}"
                            );
                            break;
                        }
                        Seen::Message(_) => {}
                        Seen::Nothing => panic!("oversized frame did not close the socket"),
                    }
                }
            }
        }
        // Upgrades with bad tokens: 401, no socket.
        8 => {
            for _ in 0..PER_SESSION {
                let bad = format!("bst_{}", hex(&rng.bytes(32)));
                match Client::open_socket(&url, &bad).await {
                    Err(buurtsync_e2e::client::ConnectError::Http(401)) => {}
                    other => panic!("bad token not refused: {:?}", other.err()),
                }
            }
        }
        // Slowloris: half an HTTP request, then silence; the server hangs up.
        9 => {
            let mut socks = Vec::new();
            for _ in 0..PER_SESSION {
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("tcp");
                s.write_all(b"GET /sync HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                    .await
                    .expect("write");
                socks.push(s);
            }
            for mut s in socks {
                let mut buf = [0u8; 1024];
                let closed = tokio::time::timeout(buurtsync_e2e::WAIT, async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                assert!(closed.is_ok(), "a slowloris upgrade was never closed");
            }
        }
        // Upgraded sockets that never join: closed after the handshake timeout.
        10 => {
            let mut peers = Vec::new();
            for _ in 0..PER_SESSION {
                peers.push(RawPeer::open(&url, &token).await);
            }
            for mut p in peers {
                loop {
                    match p.next().await {
                        Seen::Closed(_) => break,
                        Seen::Message(_) => {}
                        Seen::Nothing => panic!("a socket that never joined stayed open"),
                    }
                }
            }
        }
        // Floods: many requests for unknown ids as fast as the socket takes them.
        _ => {
            let mut peer = RawPeer::joined(&url, &token).await;
            for _ in 0..PER_SESSION {
                let id = DocumentId::random().to_string();
                peer.send_raw(frame("request", Some(&id), Some(&[0x42, 0, 0, 0, 0])))
                    .await;
            }
            for _ in 0..PER_SESSION {
                if let Seen::Closed(_) | Seen::Nothing =
                    peer.next_within(Duration::from_millis(500)).await
                {
                    break;
                }
            }
        }
    }
    PER_SESSION
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The acceptance test: 1,000 hostile inputs while a good device keeps syncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_hostile_inputs_while_a_good_client_syncs() {
    let fx = Fixture::new();
    let t = fx.seed();
    let max_frame = MAX_FRAME.to_string();
    // The hostile sessions share one user and hold many sockets at once; the per-user
    // cap has its own test below.
    let mut server = fx.start(&[
        "--max-frame-bytes",
        &max_frame,
        "--handshake-timeout",
        "2s",
        "--max-connections-per-user",
        "1000",
    ]);
    let url = server.url();
    let mut good = Client::connect("good", &url, &t.prof_noord)
        .await
        .expect("good device");
    let plan = good.create_plan("noord", "HH-GOED").await;
    // A document stored before the attack, by someone else, must be untouched after.
    let mut zuid = Client::connect("zuid", &url, &t.prof_zuid)
        .await
        .expect("zuid");
    let bystander = zuid.create_plan("zuid", "HH-ZUID").await;
    let bystander_heads = fx.doc_info(&bystander.to_string())["heads"].clone();
    zuid.disconnect().await;
    let rss_before = rss_kib(&server);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42);
    eprintln!("hostile seed {seed}");
    let mut attack = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(6));
    for s in 0..SESSIONS {
        let (url, token) = (url.clone(), t.vol_noord.clone());
        let addr = server.addr;
        let sem = sem.clone();
        attack.spawn(async move {
            let _p = sem.acquire().await.expect("semaphore");
            hostile_session(s % 12, seed.wrapping_add(s as u64), url, addr, token, plan).await
        });
    }

    // Meanwhile the good device edits and waits for each acknowledgement.
    let mut edits = 0usize;
    let mut max_rss = rss_before;
    while !attack.is_empty() || edits < 20 {
        let goal = format!("Doel {edits}");
        good.edit(plan, move |d| {
            schema::update::<Plan>(d, |p| {
                p.goals.push(Goal::new(Leefdomein::Dagbesteding, &goal))
            })
            .expect("edit");
        })
        .await;
        assert!(
            good.sync_acked(plan).await,
            "edit {edits} of the good device was not acknowledged: {:?}",
            good.errors()
        );
        edits += 1;
        max_rss = max_rss.max(rss_kib(&server));
        while let Some(done) = attack.try_join_next() {
            done.expect("hostile session");
        }
        assert!(edits < 5000, "the attack never finished");
    }
    let delivered = SESSIONS * PER_SESSION;
    assert_eq!(delivered, 1000);
    max_rss = max_rss.max(rss_kib(&server));
    eprintln!(
        "server RSS: {rss_before} KiB before, at most {max_rss} KiB during; {edits} good edits"
    );

    assert!(server.running(), "the server died");
    let panicked = server.log().iter().any(|l| l.contains("panicked"));
    assert!(!panicked, "the server panicked");
    assert!(
        max_rss < rss_before + 128 * 1024,
        "server memory grew from {rss_before} KiB to {max_rss} KiB"
    );

    // Every good edit arrived: another device sees all of them, the store has them.
    let mut other = Client::connect("other", &url, &t.prof2_noord)
        .await
        .expect("other");
    assert!(other.fetch(plan).await);
    let want = good.heads_hex(plan);
    assert!(
        other
            .pump_until(buurtsync_e2e::WAIT, |o| o.heads_hex(plan) == want)
            .await
    );
    let goals = Plan::read(&other.docs[&plan]).expect("plan").goals.len();
    assert_eq!(goals, edits, "every good edit arrived");
    let mut stored: Vec<String> = fx.doc_info(&plan.to_string())["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .map(|h| h.as_str().expect("hex").to_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, want, "the store holds the good device's heads");
    assert_eq!(
        fx.doc_info(&bystander.to_string())["heads"],
        bystander_heads,
        "a bystander document changed"
    );
    assert!(server.running());
}

/// A peer that joins and then never answers pings (a half-open socket) is closed.
#[tokio::test]
async fn half_open_peers_are_closed() {
    let fx = Fixture::new();
    let t = fx.seed();
    let mut server = fx.start(&["--ping-interval", "200ms", "--idle-timeout", "1s"]);
    let mut silent = RawPeer::joined(&server.url(), &t.prof_noord).await;
    // Not reading means not answering pings: after the idle timeout the server hangs up
    // (the pings it sent and then the close are what we read now).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    loop {
        match silent.next().await {
            Seen::Closed(_) => break,
            Seen::Message(_) => {}
            Seen::Nothing => panic!("half-open peer not closed"),
        }
        assert!(started.elapsed() < buurtsync_e2e::WAIT);
    }
    let mut log = String::new();
    for _ in 0..50 {
        log = server.log().join("\n");
        if log.contains("peer unresponsive") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.contains("peer unresponsive"), "server log: {log}");
}

/// A device that answers pings stays connected across many ping intervals.
#[tokio::test]
async fn live_peers_survive_pings() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&["--ping-interval", "100ms", "--idle-timeout", "500ms"]);
    let mut c = Client::connect("live", &server.url(), &t.prof_noord)
        .await
        .expect("connect");
    // Reading answers pings (tungstenite replies with pongs).
    c.pump_for(Duration::from_millis(1500)).await;
    assert!(c.is_online(), "a live peer was dropped");
    let id = c.create_plan("noord", "HH-PING").await;
    assert!(c.is_acked(id));
}

/// One user cannot hold more than --max-connections-per-user sockets: the next gets 429.
#[tokio::test]
async fn connections_per_user_are_capped() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&["--max-connections-per-user", "3"]);
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            Client::connect(&format!("d{i}"), &server.url(), &t.prof_noord)
                .await
                .expect("within the cap"),
        );
    }
    match Client::open_socket(&server.url(), &t.prof_noord).await {
        Err(buurtsync_e2e::client::ConnectError::Http(429)) => {}
        other => panic!("fourth connection not refused: {:?}", other.err()),
    }
    // Another user is not affected; a freed slot can be used again.
    Client::connect("other", &server.url(), &t.prof2_noord)
        .await
        .expect("another user connects");
    held.pop().expect("one").disconnect().await;
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = Client::connect("again", &server.url(), &t.prof_noord).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a freed slot was not given back");
}

/// A change that would grow a document beyond --max-document-bytes is refused and not
/// stored; the document stays usable.
#[tokio::test]
async fn documents_have_a_size_limit() {
    let fx = Fixture::new();
    let t = fx.seed();
    let server = fx.start(&["--max-document-bytes", "4096"]);
    let mut c = Client::connect("big", &server.url(), &t.prof_noord)
        .await
        .expect("connect");
    let id = c.create_plan("noord", "HH-GROOT").await;
    let before = fx.doc_info(&id.to_string())["heads"].clone();
    let mut rng = Rng(7);
    let blob = hex(&rng.bytes(4096));
    c.edit(id, move |d| {
        schema::update::<Plan>(d, |p| {
            p.goals.push(Goal::new(Leefdomein::Dagbesteding, &blob))
        })
        .expect("edit");
    })
    .await;
    let refused = c
        .pump_until(buurtsync_e2e::WAIT, |c| {
            c.errors().iter().any(|e| e.contains("exceed"))
        })
        .await;
    assert!(refused, "no size refusal: {:?}", c.errors());
    assert!(!c.is_acked(id));
    assert_eq!(
        fx.doc_info(&id.to_string())["heads"],
        before,
        "stored anyway"
    );
    // Another small document still works.
    let mut d = Client::connect("small", &server.url(), &t.prof2_noord)
        .await
        .expect("connect");
    let small = d.create_plan("noord", "HH-KLEIN").await;
    assert!(d.is_acked(small));
}
