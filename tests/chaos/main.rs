//! The fault suite: real deciders, each in its own network namespace, under partitions,
//! kill -9, SIGSTOP and restarts, with a checker after healing.
//!
//! `tests/run.sh` runs it short (one seeded schedule); `tests/chaos/run.sh --schedules N
//! --seed S` runs it long. A failing schedule prints its seed: the same seed replays the
//! same faults in the same order.

#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
mod net;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::decide_request;
use net::{Net, Node};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ratchet_proto::v1 as pb;

const OUT_OF_DATE: &str = "15.0.1497.48";
/// How stale a decider may be before it stops answering (shared/spec/enforcement.md,
/// "Freshness and time"); shorter than the default so that the suite runs fast.
const MAX_STALENESS: Duration = Duration::from_millis(2000);

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("decider.toml");
    let text = format!(
        "heartbeat_ms = 100\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\ncounter_flush_ms = 500\nmax_staleness_ms = {}\n",
        MAX_STALENESS.as_millis()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A group of `size` deciders on its own network, founded and with a tenant.
struct Group {
    nodes: Vec<Node>,
    net: Net,
    _dir: tempfile::TempDir,
}

impl Group {
    async fn found(size: u8) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let mut net = Net::new();
        let mut nodes: Vec<Node> = (1..=size).map(|host| Node::new(&mut net, dir.path(), host, &config)).collect();
        let members = nodes.iter().map(|n| format!("{}={}", n.name, n.grpc)).collect::<Vec<_>>().join(",");
        for node in &mut nodes {
            node.start(Some(&members), &[]);
        }
        let group = Group { nodes, net, _dir: dir };
        group.leader().await;
        let mut admin = group.nodes[0].admin().await;
        admin.add_tenant(pb::AddTenantRequest { name: "bear".into() }).await.unwrap();
        let connector = pb::AddConnectorRequest {
            tenant: "bear".into(),
            cidr: "10.0.0.0/8".into(),
            cert_name: String::new(),
        };
        admin.add_connector(connector).await.unwrap();
        group
    }

    fn hosts(&self) -> Vec<u8> {
        self.nodes.iter().map(|n| n.host).collect()
    }

    /// The index of the node every running node agrees leads.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                leaders.push(node.status(false).await.map(|s| s.leader_id).unwrap_or(0));
            }
            if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
                for (i, node) in self.nodes.iter().enumerate() {
                    if node.status(false).await.is_some_and(|s| s.node_id == leaders[0]) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every node is at one applied index with one state digest.
    async fn same_state(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut seen = Vec::new();
            for node in &self.nodes {
                let status = node.status(true).await;
                seen.push(status.map(|s| (s.digest_index, s.state_digest)));
            }
            if seen.iter().all(|s| s.is_some()) && seen.windows(2).all(|w| w[0].as_ref().unwrap().0 == w[1].as_ref().unwrap().0) {
                assert!(
                    seen.windows(2).all(|w| w[0] == w[1]),
                    "same applied index, different state: {seen:?}"
                );
                return;
            }
            assert!(Instant::now() < deadline, "nodes never converged: {seen:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Asks `node` for a verdict every 50 ms for `how_long`; returns when the last one came.
async fn last_verdict_within(node: &Node, how_long: Duration) -> Option<Instant> {
    let mut decision = node.decision().await;
    let (start, mut last) = (Instant::now(), None);
    while start.elapsed() < how_long {
        let call = decision.decide(decide_request("10.0.0.5", "exch1.bear.local", OUT_OF_DATE));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), call).await {
            last = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decider_cut_from_its_peers_stops_giving_verdicts_within_max_staleness() {
    let group = Group::found(3).await;
    let hosts = group.hosts();
    // Some verdicts first, from every node.
    for node in &group.nodes {
        assert!(
            last_verdict_within(node, Duration::from_millis(300)).await.is_some(),
            "{} answers",
            node.name
        );
    }
    // A follower, then the leader: cut from their peers, clients still reaching them.
    let leader = group.leader().await;
    let follower = (leader + 1) % 3;
    for victim in [follower, leader] {
        let node = &group.nodes[victim];
        group.net.isolate(node.host, &hosts);
        let cut = Instant::now();
        let last = last_verdict_within(node, MAX_STALENESS + Duration::from_secs(3)).await;
        let answered_for = last.map_or(Duration::ZERO, |last| last - cut);
        eprintln!("{} (cut from its peers) answered for {answered_for:?}", node.name);
        assert!(
            answered_for <= MAX_STALENESS + Duration::from_millis(700),
            "{} gave verdicts {answered_for:?} after it lost its peers (max staleness {MAX_STALENESS:?})",
            node.name
        );
        // The majority side goes on deciding.
        let other = group.nodes.iter().find(|n| n.host != node.host).unwrap();
        assert!(
            last_verdict_within(other, Duration::from_secs(3)).await.is_some(),
            "{} still decides",
            other.name
        );
        group.net.heal(node.host);
        let deadline = Instant::now() + Duration::from_secs(20);
        while last_verdict_within(node, Duration::from_millis(200)).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "{} never answered again after healing:\n{}",
                node.name,
                node.log()
            );
        }
    }
    group.same_state().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decider_whose_clock_is_off_gives_no_verdicts_never_leads_and_stamps_nothing() {
    let mut group = Group::found(3).await;
    // The leader comes back with its clock 30 s ahead.
    let victim = group.leader().await;
    group.nodes[victim].kill9();
    group.nodes[victim].start(None, &["--test-clock-offset-secs", "30"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while last_verdict_within(&group.nodes[victim], Duration::from_millis(1500))
        .await
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "a decider 30 s ahead still gives verdicts:\n{}",
            group.nodes[victim].log()
        );
    }
    assert!(
        group.nodes[victim].log().contains("stepping aside"),
        "{}",
        group.nodes[victim].log()
    );

    // The others decide, and lead; writes through the skewed node are stamped by the leader.
    let mut admin = group.nodes[victim].admin().await;
    let pause = admin
        .pause(pb::PauseRequest {
            tenant: "bear".into(),
            days: 1,
            request_id: "skew-1".into(),
        })
        .await
        .expect("a follower with a bad clock still forwards writes")
        .into_inner();
    let paused_from = chrono::DateTime::parse_from_rfc3339(&pause.paused_from).unwrap();
    assert!(
        paused_from <= chrono::Utc::now() + chrono::TimeDelta::seconds(2),
        "a pause stamped in the future: {paused_from}"
    );
    for _ in 0..10 {
        let leader = group.leader().await;
        assert_ne!(leader, victim, "a node whose clock is off was elected");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let good = &group.nodes[(victim + 1) % 3];
    let mut decision = good.decision().await;
    decision
        .decide(decide_request("10.0.0.5", "fresh1.bear.local", OUT_OF_DATE))
        .await
        .unwrap();
    let first_seen = loop {
        let reply = decision
            .decide(decide_request("10.0.0.5", "fresh1.bear.local", OUT_OF_DATE))
            .await
            .unwrap()
            .into_inner();
        if reply.first_seen_unix_ms != 0 {
            break reply.first_seen_unix_ms;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        first_seen <= (chrono::Utc::now() + chrono::TimeDelta::seconds(2)).timestamp_millis(),
        "first seen in the future"
    );

    // With its clock right again it serves again, and holds what the others do.
    group.nodes[victim].kill9();
    group.nodes[victim].start(None, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while last_verdict_within(&group.nodes[victim], Duration::from_millis(300))
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the node never served again:\n{}",
            group.nodes[victim].log()
        );
    }
    group.same_state().await;
}

/// How many seeded schedules, and from which seed (RATCHET_CHAOS_SCHEDULES, RATCHET_CHAOS_SEED).
fn schedules() -> (u64, u64) {
    let count = std::env::var("RATCHET_CHAOS_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let seed = std::env::var("RATCHET_CHAOS_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    (count, seed)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Isolate,
    Pause,
}

#[tokio::test(flavor = "multi_thread")]
async fn under_seeded_faults_no_acknowledged_write_is_lost_or_changed() {
    let (count, first_seed) = schedules();
    for seed in (0..count).map(|i| first_seed.wrapping_add(i)) {
        eprintln!("chaos schedule seed {seed} (replay with RATCHET_CHAOS_SEED={seed} RATCHET_CHAOS_SCHEDULES=1)");
        run_schedule(seed).await;
    }
}

async fn run_schedule(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut group = Group::found(3).await;
    let hosts = group.hosts();
    let channels: Vec<_> = futures::future::join_all(group.nodes.iter().map(Node::channel)).await;

    // The workload: imports of new servers with distinct first-seen instants, each to a
    // node drawn at random, for the whole schedule; what was acknowledged is recorded.
    let acknowledged: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = chrono::Utc::now() - chrono::TimeDelta::days(10);
    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let (channels, acknowledged, stop) = (channels.clone(), acknowledged.clone(), stop.clone());
        let mut pick = StdRng::seed_from_u64(seed ^ (writer + 1));
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let server = format!("s{writer}-{n}.bear.local");
                let first_seen = base + chrono::TimeDelta::seconds((writer * 100_000 + n) as i64);
                let mut admin = ratchet_proto::v1::admin_client::AdminClient::new(channels[pick.random_range(0..channels.len())].clone());
                let request = pb::ImportServerRequest {
                    tenant: "bear".into(),
                    server_fqdn: server.clone(),
                    build: OUT_OF_DATE.into(),
                    first_seen: first_seen.to_rfc3339(),
                };
                let call = tokio::time::timeout(Duration::from_secs(6), admin.import_server(request));
                if let Ok(Ok(_)) = call.await {
                    acknowledged.lock().unwrap().insert(server, first_seen.timestamp_millis());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // The nemesis: a few faults, each on a node drawn at random, undone after a while.
    for _ in 0..4 {
        let victim = rng.random_range(0..group.nodes.len());
        let fault = [Fault::Kill, Fault::Isolate, Fault::Pause][rng.random_range(0..3)];
        let hold = Duration::from_millis(rng.random_range(500..2500));
        eprintln!("seed {seed}: {fault:?} {} for {hold:?}", group.nodes[victim].name);
        match fault {
            Fault::Kill => group.nodes[victim].kill9(),
            Fault::Isolate => group.net.isolate(group.nodes[victim].host, &hosts),
            Fault::Pause => group.nodes[victim].signal("STOP"),
        }
        tokio::time::sleep(hold).await;
        match fault {
            Fault::Kill => group.nodes[victim].start(None, &[]),
            Fault::Isolate => group.net.heal(group.nodes[victim].host),
            Fault::Pause => group.nodes[victim].signal("CONT"),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    // The checker: one state everywhere, and every acknowledged write in it as acknowledged.
    group.leader().await;
    group.same_state().await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty(), "seed {seed}: no write was acknowledged at all");
    for node in &group.nodes {
        let mut decision = node.decision().await;
        for (server, first_seen) in &acknowledged {
            let reply = decision
                .decide(decide_request("10.0.0.5", server, OUT_OF_DATE))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {} on {server}: {e}", node.name))
                .into_inner();
            assert_eq!(
                reply.first_seen_unix_ms, *first_seen,
                "seed {seed}: {} answers another first-seen for acknowledged {server}",
                node.name
            );
        }
    }
    eprintln!("seed {seed}: {} acknowledged writes intact on every node", acknowledged.len());
}
