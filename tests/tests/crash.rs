//! Crash safety under load: the server is SIGKILLed at random moments while several
//! devices write, 20+ times, and restarted on the same database. Every change ever
//! acknowledged (`remote-heads-changed` with the server's storageId) must be there
//! afterwards, and every device must converge. On SQLite one node; on PostgreSQL two
//! nodes, one of them killed per round while the other keeps serving.
//!
//! CI runs 20 rounds on SQLite and 5 on PostgreSQL. Longer campaigns
//! (`scripts/crash-campaign.sh N`) set `BUURTSYNC_CRASH_ROUNDS` (SQLite) and
//! `BUURTSYNC_CRASH_PG_ROUNDS`; `BUURTSYNC_CRASH_SEED` replays a run. Each run prints one
//! `crash campaign:` line with backend, rounds, seed, acknowledged heads and heads lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use buurtsync_e2e::client::{converge, Client};
use buurtsync_e2e::server::{Fixture, ServerProcess};
use sync_core::protocol::{decode_heads, DocumentId};
use sync_core::schema::{self, Goal, Leefdomein, Plan};

/// Rounds from `var`, else `default` (CI's figure).
fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `BUURTSYNC_CRASH_SEED`, else one from the clock; printed either way.
fn seed() -> u64 {
    let seed = std::env::var("BUURTSYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9_7f4a_7c15)
        });
    eprintln!("crash test seed: {seed} (BUURTSYNC_CRASH_SEED={seed} replays it)");
    seed
}

/// A tiny xorshift generator: "random moments" without a dependency; the seed is
/// printed so a failing run can be replayed (BUURTSYNC_CRASH_SEED).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One device's work until its connection dies: edit its documents, push, and take
/// whatever acknowledgements arrive. Bounded in edits and time.
/// `until` ends the work of a device whose node survives the round.
async fn write_until_killed(
    mut c: Client,
    docs: Vec<DocumentId>,
    round: usize,
    until: Instant,
) -> Client {
    for i in 0..200 {
        if !c.is_online() || Instant::now() >= until {
            break;
        }
        for id in &docs {
            let goal = format!("{} r{round} e{i}", c.name);
            c.edit(*id, move |d| {
                schema::update::<Plan>(d, |p| {
                    p.goals.push(Goal::new(Leefdomein::Wonen, &goal));
                })
                .expect("a typed edit never fails, concurrent heads or not");
            })
            .await;
        }
        let docs2 = docs.clone();
        c.pump_until(Duration::from_millis(150), move |c| {
            docs2.iter().all(|id| c.is_acked(*id))
        })
        .await;
    }
    // Drain what is still in flight until the socket is gone or the round is over
    // for a survivor (bounded).
    let left = until.saturating_duration_since(Instant::now());
    c.pump_until(left.min(buurtsync_e2e::WAIT), |c| !c.is_online())
        .await;
    c
}

/// Records every acknowledgement the devices hold: each acked head must survive.
fn note_acks(clients: &[Client], ever: &mut HashMap<DocumentId, HashSet<String>>) -> usize {
    let mut n = 0;
    for c in clients {
        for (id, heads) in &c.acked {
            let set = ever.entry(*id).or_default();
            for h in heads {
                if set.insert(h.clone()) {
                    n += 1;
                }
            }
        }
    }
    n
}

/// SIGKILL at random moments under load (20 rounds in CI) on SQLite; nothing
/// acknowledged is lost and every device converges with the server afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let rounds = rounds("BUURTSYNC_CRASH_ROUNDS", 20);
    campaign(Fixture::new(), "sqlite", 1, rounds).await;
}

/// The same on PostgreSQL with two nodes (5 rounds in CI): each round one random node is
/// killed while the other keeps serving its devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_postgres_node_loses_nothing_acknowledged() {
    let rounds = rounds("BUURTSYNC_CRASH_PG_ROUNDS", 5);
    campaign(Fixture::postgres(), "postgres", 2, rounds).await;
}

async fn campaign(fx: Fixture, backend: &str, nodes: usize, rounds: usize) {
    let seed = seed();
    let mut rng = Rng(seed);
    let t = fx.seed();
    let mut servers: Vec<ServerProcess> = (0..nodes).map(|_| fx.start(&[])).collect();
    // Device i talks to node i % nodes.
    let node_of = |i: usize| i % nodes;
    let mut a = Client::connect("dev-a", &servers[node_of(0)].url(), &t.prof_noord)
        .await
        .expect("a");
    let mut b = Client::connect("dev-b", &servers[node_of(1)].url(), &t.prof2_noord)
        .await
        .expect("b");
    let mut z = Client::connect("dev-z", &servers[node_of(2)].url(), &t.prof_zuid)
        .await
        .expect("z");
    let shared = a.create_plan("noord", "HH-CRASH-SHARED").await;
    let own_a = a.create_plan("noord", "HH-CRASH-A").await;
    assert!(b.fetch(shared).await, "b fetches the shared plan");
    let own_b = b.create_plan("noord", "HH-CRASH-B").await;
    let own_z = z.create_plan("zuid", "HH-CRASH-Z").await;
    let work: [(Client, Vec<DocumentId>); 3] = [
        (a, vec![shared, own_a]),
        (b, vec![shared, own_b]),
        (z, vec![own_z]),
    ];
    let mut clients: Vec<Client> = Vec::new();
    let mut plans: Vec<Vec<DocumentId>> = Vec::new();
    for (c, d) in work {
        clients.push(c);
        plans.push(d);
    }

    let mut ever: HashMap<DocumentId, HashSet<String>> = HashMap::new();
    let mut acked_total = note_acks(&clients, &mut ever);
    for round in 0..rounds {
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_url(&servers[node_of(i)].url());
            if !c.is_online() {
                c.reconnect().await.expect("reconnect after restart");
            }
        }
        // Let the load run a random while, then pull the plug on one node.
        let run_for = Duration::from_millis(rng.between(30, 600));
        let victim = (rng.next() % nodes as u64) as usize;
        let until = Instant::now() + run_for + Duration::from_millis(300);
        let tasks: Vec<_> = clients
            .drain(..)
            .zip(plans.iter().cloned())
            .map(|(c, d)| tokio::spawn(write_until_killed(c, d, round, until)))
            .collect();
        tokio::time::sleep(run_for).await;
        servers.remove(victim).kill();
        for task in tasks {
            clients.push(task.await.expect("writer task"));
        }
        acked_total += note_acks(&clients, &mut ever);
        servers.insert(victim, fx.start(&[]));
    }
    assert!(
        acked_total >= rounds,
        "the load must have been acknowledged often ({acked_total} acks in {rounds} rounds)"
    );

    // Everything acknowledged before any kill is in the store, through any node.
    let url = servers[0].url();
    let mut verifier_n = Client::connect("verifier-n", &url, &t.prof_noord)
        .await
        .expect("verifier");
    let mut verifier_z = Client::connect("verifier-z", &url, &t.prof_zuid)
        .await
        .expect("verifier");
    let mut lost = 0;
    for (id, heads) in &ever {
        let v = if *id == own_z {
            &mut verifier_z
        } else {
            &mut verifier_n
        };
        let wanted = decode_heads(&heads.iter().cloned().collect::<Vec<_>>()).expect("heads");
        if !v.fetch(*id).await {
            eprintln!("document {id} lost: {:?}", v.notices);
            lost += wanted.len();
            continue;
        }
        v.pump_until(buurtsync_e2e::WAIT, |v| {
            wanted
                .iter()
                .all(|h| v.docs[id].get_change_meta_by_hash(h).is_some())
        })
        .await;
        lost += wanted
            .iter()
            .filter(|h| v.docs[id].get_change_meta_by_hash(h).is_none())
            .count();
    }
    eprintln!(
        "crash campaign: backend={backend} nodes={nodes} rounds={rounds} seed={seed} \
         acknowledged_heads={acked_total} acknowledged_heads_lost={lost}"
    );
    assert_eq!(lost, 0, "acknowledged changes were lost (seed {seed})");

    // Every device comes back, pushes what was never acknowledged, and converges.
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_url(&servers[node_of(i)].url());
        c.reconnect().await.expect("final reconnect");
    }
    let (mut a, mut b, mut z) = {
        let mut it = clients.into_iter();
        (
            it.next().expect("a"),
            it.next().expect("b"),
            it.next().expect("z"),
        )
    };
    assert!(
        converge(&mut [&mut a, &mut b], shared).await,
        "a and b on the shared plan"
    );
    assert!(converge(&mut [&mut a], own_a).await, "a on its plan");
    assert!(converge(&mut [&mut b], own_b).await, "b on its plan");
    assert!(converge(&mut [&mut z], own_z).await, "z on its plan");
    for (c, id) in [(&a, shared), (&a, own_a), (&b, own_b), (&z, own_z)] {
        let info = fx.doc_info(&id.to_string());
        let mut stored: Vec<String> = info["heads"]
            .as_array()
            .expect("heads")
            .iter()
            .map(|h| h.as_str().expect("hex").to_owned())
            .collect();
        stored.sort();
        assert_eq!(stored, c.heads_hex(id), "stored heads of {id} differ");
        let goals = Plan::read(&c.docs[&id]).expect("valid plan").goals.len();
        assert!(goals > 0, "plan {id} has its goals");
    }
}
