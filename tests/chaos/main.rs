//! The fault suite: real deciders, each in its own network namespace, under partitions,
//! kill -9, SIGSTOP and restarts, with a checker after healing.
//!
//! `tests/run.sh` runs it short (one seeded schedule of three nodes, two of five);
//! `tests/chaos/run.sh --schedules N --seed S --nodes 3|5` runs it long. A failing schedule prints its seed: the same seed replays the
//! same faults in the same order.

#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
mod delay;
mod mail;
mod net;
mod regions;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::decide_request;
use futures::StreamExt;
use mail::Mail;
use net::{Net, Node};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;

const OUT_OF_DATE: &str = "15.0.1497.48";
/// How stale a decider may be before it stops answering (shared/spec/enforcement.md,
/// "Freshness and time"); shorter than the default so that the suite runs fast.
const MAX_STALENESS: Duration = Duration::from_millis(2000);

/// Timeouts for deciders one network hop apart (elections in well under a second), and
/// snapshots often, so that restarted and new members catch up by snapshot install.
fn near_config() -> String {
    format!(
        "heartbeat_ms = 100\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\nmax_staleness_ms = {}\n\
         snapshot_every_entries = 200\nkeep_entries_after_snapshot = 50\n",
        MAX_STALENESS.as_millis()
    )
}

/// A group of `size` deciders on its own network, founded and with a tenant.
struct Group {
    nodes: Vec<Node>,
    net: Net,
    _dir: tempfile::TempDir,
}

impl Group {
    /// `size` deciders on one network, with the configuration `config_toml`, none
    /// started yet.
    fn lay_out(size: u8, config_toml: &str) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("decider.toml");
        std::fs::write(&config, config_toml).unwrap();
        let mut net = Net::new();
        let nodes: Vec<Node> = (1..=size).map(|host| Node::new(&mut net, dir.path(), host, &config)).collect();
        Group { nodes, net, _dir: dir }
    }

    async fn found(size: u8) -> Group {
        let mut group = Group::lay_out(size, &near_config());
        group.start_founders(size as usize).await;
        group
    }

    /// Starts the first `founders` nodes as the founding members, and adds a tenant.
    async fn start_founders(&mut self, founders: usize) {
        let members = self.nodes[..founders]
            .iter()
            .map(|n| format!("{}={}", n.name, n.grpc))
            .collect::<Vec<_>>()
            .join(",");
        for node in &mut self.nodes[..founders] {
            node.start(Some(&members), &[]);
        }
        let group = &*self;
        group.leader().await;
        let mut admin = group.nodes[0].admin().await;
        if let Err(status) = admin.add_tenant(pb::AddTenantRequest { name: "bear".into() }).await {
            let logs: Vec<String> = group.nodes.iter().map(|n| format!("--- {}\n{}", n.name, n.log())).collect();
            panic!("adding the tenant: {status}\n{}", logs.join("\n"));
        }
        let connector = pb::AddConnectorRequest {
            tenant: "bear".into(),
            cidr: "10.0.0.0/8".into(),
            cert_name: String::new(),
        };
        admin.add_connector(connector).await.unwrap();
    }

    fn hosts(&self) -> Vec<u8> {
        self.nodes.iter().map(|n| n.host).collect()
    }

    /// The index of the node every running node agrees leads.
    async fn leader(&self) -> usize {
        self.leader_among(&self.hosts()).await
    }

    /// The index of the node that the running nodes of `hosts` agree leads.
    async fn leader_among(&self, hosts: &[u8]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running() && hosts.contains(&n.host)) {
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

/// Waits (up to 20 s) until `node` gives verdicts.
async fn wait_for_verdicts(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while last_verdict_within(node, Duration::from_millis(200)).await.is_none() {
        assert!(Instant::now() < deadline, "{} never answered:\n{}", node.name, node.log());
    }
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
        wait_for_verdicts(node).await;
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
            servers: Vec::new(),
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
    wait_for_verdicts(&group.nodes[victim]).await;
    group.same_state().await;
}

/// How many seeded schedules, from which seed, how many deciders and how long the
/// nemesis works in each (RATCHET_CHAOS_SCHEDULES, RATCHET_CHAOS_SEED,
/// RATCHET_CHAOS_NODES: 3 or 5, RATCHET_CHAOS_SECONDS: 60 by default).
fn schedules() -> (u64, u64, u8, Duration) {
    let number = |name: &str| std::env::var(name).ok().and_then(|n| n.parse::<u64>().ok());
    let count = number("RATCHET_CHAOS_SCHEDULES").unwrap_or(1);
    let seed = number("RATCHET_CHAOS_SEED").unwrap_or_else(rand::random::<u64>);
    let nodes = number("RATCHET_CHAOS_NODES").unwrap_or(3) as u8;
    assert!(nodes == 3 || nodes == 5, "RATCHET_CHAOS_NODES: 3 or 5, not {nodes}");
    let length = Duration::from_secs(number("RATCHET_CHAOS_SECONDS").unwrap_or(60));
    (count, seed, nodes, length)
}

/// What the nemesis does to a node drawn at random (the leader, for `KillLeader`), undone
/// after a while.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9, restarted on its data directory.
    Kill,
    /// kill -9 of whichever node leads.
    KillLeader,
    /// SIGTERM (a leader hands over first), restarted.
    Terminate,
    /// Cut from every peer both ways; clients still reach it.
    Isolate,
    /// A minority of the group cut from the majority (one node of three, two of five).
    Minority,
    /// Hears nothing from its peers, but they hear it.
    Deafen,
    /// A third of the packets between it and its peers lost, both ways.
    Lossy,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Restarted with its clock 30 s ahead (it must give no verdict, never lead, stamp
    /// nothing), then restarted with its clock right.
    ClockAhead,
    /// Its data directory's filesystem filled to the last byte, then freed (and the node
    /// restarted if its Raft stopped on the write that failed).
    DiskFull,
    /// Its volume lost: removed from the group, wiped, and joined again as a new member.
    WipeAndReplace,
}

const FAULTS: [Fault; 11] = [
    Fault::Kill,
    Fault::KillLeader,
    Fault::Terminate,
    Fault::Isolate,
    Fault::Minority,
    Fault::Deafen,
    Fault::Lossy,
    Fault::Pause,
    Fault::ClockAhead,
    Fault::DiskFull,
    Fault::WipeAndReplace,
];

#[tokio::test(flavor = "multi_thread")]
async fn under_seeded_faults_no_acknowledged_write_is_lost_or_changed() {
    let (count, first_seed, nodes, length) = schedules();
    for seed in (0..count).map(|i| first_seed.wrapping_add(i)) {
        let seconds = length.as_secs();
        eprintln!(
            "chaos schedule seed {seed}, {nodes} nodes, {seconds} s (replay with RATCHET_CHAOS_SEED={seed} RATCHET_CHAOS_SCHEDULES=1 RATCHET_CHAOS_NODES={nodes} RATCHET_CHAOS_SECONDS={seconds})"
        );
        run_schedule(seed, nodes, length).await;
    }
}

/// Imports of new servers with distinct first-seen instants, each through a node drawn
/// at random, until `stop`; what was acknowledged is recorded.
async fn import_writer(
    writer: u64,
    seed: u64,
    channels: Vec<tonic::transport::Channel>,
    acknowledged: Arc<Mutex<BTreeMap<String, i64>>>,
    stop: Arc<AtomicBool>,
) {
    let base = chrono::Utc::now() - chrono::TimeDelta::days(10);
    let mut pick = StdRng::seed_from_u64(seed ^ (writer + 1));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let server = format!("s{writer}-{n}.bear.local");
        let first_seen = base + chrono::TimeDelta::seconds((writer * 100_000 + n) as i64);
        let mut admin = AdminClient::new(channels[pick.random_range(0..channels.len())].clone());
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
}

/// The servers of tenant owl that the pause workload pauses on their own.
const OWL_SERVERS: [&str; 2] = ["a.owl.local", "b.owl.local"];

/// What the pause workload saw, in days: charged by acknowledged pauses, possibly charged
/// by pauses whose outcome is unknown (no node answered any try of that request id),
/// refunded by acknowledged ends, and at most refunded by ends whose outcome is unknown.
#[derive(Debug, Default)]
struct Pauses {
    acknowledged: u32,
    indeterminate: u32,
    refunded: u32,
    refunded_at_most: u32,
}

impl Pauses {
    /// The days the group may have charged, net of refunds.
    fn charged_range(&self) -> std::ops::RangeInclusive<u32> {
        let least = self.acknowledged.saturating_sub(self.refunded + self.refunded_at_most);
        least..=self.acknowledged + self.indeterminate - self.refunded
    }
}

/// One-day pauses of tenant owl, each with its own request id, in turn tenant-wide, of
/// server a, and of servers a and b (charged 2); and ends of a's pause. Each is tried on
/// one node and retried on others, as an operator's `ctl pause` does, until `stop`.
async fn pauser(seed: u64, channels: Vec<tonic::transport::Channel>, stop: Arc<AtomicBool>) -> Pauses {
    let mut pauses = Pauses::default();
    let mut pick = StdRng::seed_from_u64(seed ^ 0x9a05e);
    // Days charged to a's own pause since it last ended: what an end may refund.
    let mut charged_to_a = 0;
    for k in 1u32.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if k % 4 == 0 {
            let request = pb::EndPauseRequest {
                tenant: "owl".into(),
                server: OWL_SERVERS[0].into(),
            };
            match retried(&channels, &mut pick, |mut admin| {
                let request = request.clone();
                async move { admin.end_pause(request).await }
            })
            .await
            {
                Outcome::Made(ended) => pauses.refunded += ended.refunded_days,
                Outcome::Refused { after_unknown: false } => {} // not paused: nothing returned
                Outcome::Refused { after_unknown: true } | Outcome::Unknown => pauses.refunded_at_most += charged_to_a,
            }
            charged_to_a = 0;
        } else {
            let servers: Vec<String> = OWL_SERVERS.iter().take((k % 4 - 1) as usize).map(|s| s.to_string()).collect();
            let charge = servers.len().max(1) as u32;
            let request = pb::PauseRequest {
                tenant: "owl".into(),
                days: 1,
                request_id: format!("pause-{seed}-{k}"),
                servers,
            };
            let names_a = !request.servers.is_empty();
            match retried(&channels, &mut pick, |mut admin| {
                let request = request.clone();
                async move { admin.pause(request).await }
            })
            .await
            {
                Outcome::Made(_) => pauses.acknowledged += charge,
                Outcome::Refused { after_unknown: false } => {} // over budget: nothing charged
                Outcome::Refused { after_unknown: true } | Outcome::Unknown => pauses.indeterminate += charge,
            }
            if names_a {
                charged_to_a += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pauses
}

/// How one admin call, tried on several nodes, ended.
enum Outcome<T> {
    Made(T),
    /// Refused as a precondition (over budget, not paused) by a try that saw the state;
    /// `after_unknown`: an earlier try went unanswered and may still have been applied.
    Refused {
        after_unknown: bool,
    },
    /// No node answered any try.
    Unknown,
}

/// One admin call tried on nodes drawn at random until one answers.
async fn retried<T, Call, Answer>(channels: &[tonic::transport::Channel], pick: &mut StdRng, call: Call) -> Outcome<T>
where
    Call: Fn(AdminClient<tonic::transport::Channel>) -> Answer,
    Answer: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    for attempt in 0..5 {
        let admin = AdminClient::new(channels[pick.random_range(0..channels.len())].clone());
        match tokio::time::timeout(Duration::from_secs(6), call(admin)).await {
            Ok(Ok(answer)) => return Outcome::Made(answer.into_inner()),
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                return Outcome::Refused {
                    after_unknown: attempt > 0,
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Outcome::Unknown
}

/// Connectors added for tenant owl and the policy set again (the same rules, a new
/// version), each through a node drawn at random and retried on others, until `stop`:
/// entries that every node applies, and that reach the edge's connector watch, while the
/// nemesis works. Returns how many of each were acknowledged.
async fn admin_churn(seed: u64, channels: Vec<tonic::transport::Channel>, stop: Arc<AtomicBool>) -> (u32, u32) {
    let mut pick = StdRng::seed_from_u64(seed ^ 0xad);
    let (mut connectors, mut policies) = (0, 0);
    let mut policy_toml = None;
    for k in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if k % 2 == 0 {
            // 172.16.0.0/12 is no client's address here: bear's attribution is untouched.
            let cidr = format!("172.{}.{}.0/24", 16 + (k / 256) % 16, k % 256);
            let request = pb::AddConnectorRequest {
                tenant: "owl".into(),
                cidr,
                cert_name: String::new(),
            };
            let added = retried(&channels, &mut pick, |mut admin| {
                let request = request.clone();
                async move { admin.add_connector(request).await }
            });
            if let Outcome::Made(_) = added.await {
                connectors += 1;
            }
        } else {
            if policy_toml.is_none() {
                let got = retried(&channels, &mut pick, |mut admin| async move {
                    admin.get_policy(pb::GetPolicyRequest {}).await
                });
                if let Outcome::Made(got) = got.await {
                    policy_toml = Some(got.policy_toml);
                }
            }
            if let Some(policy_toml) = policy_toml.clone() {
                let request = pb::SetPolicyRequest {
                    policy_toml,
                    ..Default::default()
                };
                let set = retried(&channels, &mut pick, |mut admin| {
                    let request = request.clone();
                    async move { admin.set_policy(request).await }
                });
                if let Outcome::Made(_) = set.await {
                    policies += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    (connectors, policies)
}

/// What the mail workload saw through the edge.
#[derive(Debug, Default)]
struct MailOutcome {
    /// Subjects of the compliant server's messages that got 250.
    accepted: Vec<String>,
    /// Messages that got 4xx (no verdict in time: the sender retries).
    deferred: usize,
    /// Replies that broke enforcement: a compliant message refused for good, a blocked
    /// server's message accepted, anything else unexpected.
    wrong: Vec<String>,
    /// What the edge must have counted, per server: its 250s and its 550 5.7.230s.
    counted: BTreeMap<String, Counted>,
    /// 4xx replies other than "no verdict": a relay that failed after an accept (counted
    /// accepted) or a session cut short (not counted): each may or may not be counted.
    uncertain: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counted {
    accepted: u64,
    blocked: u64,
}

/// Sessions through the edge until `stop`, in turn: a compliant server (250 or 4xx), the
/// blocked server (550 5.7.230 or 4xx), and a server past day 90 that is patched and
/// relapses over and over (`mail::FLIPPING`): patched it gets 250 or 4xx, unpatched 550
/// 5.7.230 or 4xx, as a relapse inside the relapse window resumes its clock. Never
/// otherwise.
fn mail_workload(edge: std::net::SocketAddr, stop: Arc<AtomicBool>) -> MailOutcome {
    let mut outcome = MailOutcome::default();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (server, build, subject) = match n % 4 {
            0 => (format!("exch{}.bear.local", n % 6), mail::COMPLIANT, format!("ok-{n}")),
            1 => (mail::BLOCKED.to_owned(), OUT_OF_DATE, format!("no-{n}")),
            2 => (mail::FLIPPING.to_owned(), mail::COMPLIANT, format!("patched-{n}")),
            _ => (mail::FLIPPING.to_owned(), OUT_OF_DATE, format!("relapsed-{n}")),
        };
        let reply = common::smtp::deliver(edge, &server, build, &subject);
        let accepted_expected = build == mail::COMPLIANT;
        let counted = outcome.counted.entry(server.clone()).or_default();
        match &reply[..reply.len().min(3)] {
            "250" if accepted_expected => {
                counted.accepted += 1;
                outcome.accepted.push(subject)
            }
            "550" if !accepted_expected && reply.starts_with("550 5.7.230") => counted.blocked += 1,
            code if code.starts_with('4') => {
                outcome.deferred += 1;
                if !reply.starts_with("451 4.4.3") {
                    outcome.uncertain += 1;
                }
            }
            _ => outcome.wrong.push(format!("{server} ({subject}): {reply}")),
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    outcome
}

async fn run_schedule(seed: u64, size: u8, length: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut group = Group::found(size).await;
    let hosts = group.hosts();
    let channels: Vec<_> = futures::future::join_all(group.nodes.iter().map(Node::channel)).await;
    // Pauses go to a tenant of their own: bear's blocked server must stay blocked.
    let mut admin = group.nodes[0].admin().await;
    admin.add_tenant(pb::AddTenantRequest { name: "owl".into() }).await.unwrap();
    let long_ago = (chrono::Utc::now() - chrono::TimeDelta::days(120)).to_rfc3339();
    for server in OWL_SERVERS {
        let import = pb::ImportServerRequest {
            tenant: "owl".into(),
            server_fqdn: server.into(),
            build: OUT_OF_DATE.into(),
            first_seen: long_ago.clone(),
        };
        admin.import_server(import).await.unwrap();
    }
    let blocked = pb::ImportServerRequest {
        tenant: "bear".into(),
        server_fqdn: mail::BLOCKED.into(),
        build: OUT_OF_DATE.into(),
        first_seen: long_ago,
    };
    admin.import_server(blocked.clone()).await.unwrap();
    let flipping = pb::ImportServerRequest {
        server_fqdn: mail::FLIPPING.into(),
        ..blocked
    };
    admin.import_server(flipping).await.unwrap();
    let deciders: Vec<String> = group.nodes.iter().map(|n| n.grpc.to_string()).collect();
    let mail = Mail::start(&mut group.net, 20, 21, &deciders);

    let acknowledged: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|writer| tokio::spawn(import_writer(writer, seed, channels.clone(), acknowledged.clone(), stop.clone())))
        .collect();
    let pauser = tokio::spawn(pauser(seed, channels.clone(), stop.clone()));
    let churn = tokio::spawn(admin_churn(seed, channels.clone(), stop.clone()));
    let mailer = std::thread::spawn({
        let (edge, stop) = (mail.edge, stop.clone());
        move || mail_workload(edge, stop)
    });

    // The nemesis: faults one at a time, for as long as the schedule lasts.
    let started = Instant::now();
    while started.elapsed() < length {
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let victim = match fault {
            Fault::KillLeader => group.leader().await,
            _ => rng.random_range(0..group.nodes.len()),
        };
        let hold = Duration::from_millis(rng.random_range(500..2500));
        eprintln!("seed {seed}: {fault:?} {} for {hold:?}", group.nodes[victim].name);
        inflict(&mut group, &hosts, fault, victim, hold, &mut rng).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let pauses = pauser.await.unwrap();
    let sent = mailer.join().unwrap();
    let (connectors, policies) = churn.await.unwrap();

    // The checker: one state everywhere, and every acknowledged write in it as acknowledged.
    group.leader().await;
    group.same_state().await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty(), "seed {seed}: no write was acknowledged at all");
    for node in &group.nodes {
        let decision = node.decision().await;
        let answers = futures::stream::iter(acknowledged.iter().map(|(server, first_seen)| {
            let mut decision = decision.clone();
            async move {
                let reply = decision.decide(decide_request("10.0.0.5", server, OUT_OF_DATE)).await;
                (server, *first_seen, reply)
            }
        }))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
        for (server, first_seen, reply) in answers {
            let reply = reply
                .unwrap_or_else(|e| panic!("seed {seed}: {} on {server}: {e}", node.name))
                .into_inner();
            assert_eq!(
                reply.first_seen_unix_ms, first_seen,
                "seed {seed}: {} answers another first-seen for acknowledged {server}",
                node.name
            );
        }
        let listed = node
            .admin()
            .await
            .list_pauses(pb::ListPausesRequest { tenant: "owl".into() })
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: pauses on {}: {e}", node.name))
            .into_inner();
        let charged: u32 = listed.pauses.iter().map(|p| p.days_charged).sum();
        assert!(
            pauses.charged_range().contains(&charged),
            "seed {seed}: {} charges {charged} pause days for {pauses:?}",
            node.name
        );
        assert_eq!(
            charged + listed.remaining_days,
            90,
            "seed {seed}: {} over or under the budget",
            node.name
        );
    }
    assert!(
        sent.wrong.is_empty(),
        "seed {seed}: enforcement broken: {:#?}\n{}",
        sent.wrong,
        mail.edge_log()
    );
    let delivered = mail.delivered();
    let subjects: Vec<&str> = delivered
        .iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ")))
        .collect();
    let mut expected: Vec<&str> = sent.accepted.iter().map(String::as_str).collect();
    let mut got = subjects.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "seed {seed}: the sink holds exactly the messages that got 250");
    counts_are_exact(&group, seed, &sent).await;
    eprintln!(
        "seed {seed}: {} acknowledged writes intact on every node; pause days {pauses:?} charged once each; \
         mail: {} accepted and delivered once, {} deferred (4xx), every blocked message refused; \
         {connectors} connectors added and {policies} policy versions set",
        acknowledged.len(),
        sent.accepted.len(),
        sent.deferred
    );
}

/// Every message the edge answered with a verdict is counted once, on every node: its
/// numbered flushes survive decider crashes, partitions and resends. Waits for the edge's
/// last flush, then compares each server's counts with the replies the mail client got.
async fn counts_are_exact(group: &Group, seed: u64, sent: &MailOutcome) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected_total: u64 = sent.counted.values().map(|c| c.accepted + c.blocked).sum();
    let counted = loop {
        let mut counted = Vec::new();
        for node in &group.nodes {
            let mut admin = node.admin().await;
            counted.push(counted_in(&common::cluster::report(&mut admin, "bear").await));
        }
        let total: u64 = counted[0].values().map(|c| c.accepted + c.blocked).sum();
        let agree = counted.windows(2).all(|w| w[0] == w[1]);
        if (total >= expected_total && agree) || Instant::now() > deadline {
            assert!(agree, "seed {seed}: nodes hold different counts: {counted:?}");
            break counted.remove(0);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for (server, expected) in &sent.counted {
        let got = counted.get(server).copied().unwrap_or_default();
        assert_eq!(got.blocked, expected.blocked, "seed {seed}: blocked messages of {server} counted");
        assert!(
            expected.accepted <= got.accepted && got.accepted <= expected.accepted + sent.uncertain,
            "seed {seed}: accepted messages of {server} counted {}, replied 250 {} (and {} uncertain 4xx)",
            got.accepted,
            expected.accepted,
            sent.uncertain
        );
    }
}

/// Each server's messages in a tenant report, summed over its stages.
fn counted_in(report: &serde_json::Value) -> BTreeMap<String, Counted> {
    let servers = report["servers"].as_array().cloned().unwrap_or_default();
    servers
        .iter()
        .map(|server| {
            let mut sum = Counted::default();
            for counts in server["counters"].as_object().into_iter().flat_map(|c| c.values()) {
                sum.accepted += counts["accepted"].as_u64().unwrap_or(0);
                sum.blocked += counts["blocked"].as_u64().unwrap_or(0);
            }
            (server["server_fqdn"].as_str().unwrap_or_default().to_owned(), sum)
        })
        .collect()
}

/// Does `fault` to `group.nodes[victim]`, holds it for `hold`, and undoes it.
async fn inflict(group: &mut Group, hosts: &[u8], fault: Fault, victim: usize, hold: Duration, rng: &mut StdRng) {
    let host = group.nodes[victim].host;
    match fault {
        Fault::Kill | Fault::KillLeader => group.nodes[victim].kill9(),
        Fault::ClockAhead => {
            group.nodes[victim].kill9();
            group.nodes[victim].start(None, &["--test-clock-offset-secs", "30"]);
        }
        Fault::Terminate => group.nodes[victim].terminate(),
        Fault::Isolate => group.net.isolate(host, hosts),
        Fault::Minority => {
            let mut shuffled = hosts.to_vec();
            shuffled.sort_by_key(|_| rng.random::<u32>());
            let (minority, majority) = shuffled.split_at((hosts.len() - 1) / 2);
            eprintln!("  minority {minority:?} cut from majority {majority:?}");
            for cut in minority {
                group.net.isolate(*cut, majority);
            }
        }
        Fault::Deafen => group.net.deafen(host, hosts),
        Fault::Lossy => group.net.lossy(host, hosts, 0.33),
        Fault::Pause => group.nodes[victim].signal("STOP"),
        Fault::DiskFull => group.nodes[victim].fill_disk(),
        Fault::WipeAndReplace => {
            group.nodes[victim].kill9();
            group.nodes[victim].wipe();
            let name = group.nodes[victim].name.clone();
            let helper = (victim + 1) % group.nodes.len();
            membership(
                group,
                helper,
                |mut cluster, name| async move { cluster.remove(pb::RemoveRequest { name }).await.map(|_| ()) },
                &name,
            )
            .await;
        }
    }
    tokio::time::sleep(hold).await;
    match fault {
        Fault::Kill | Fault::KillLeader | Fault::Terminate => group.nodes[victim].start(None, &[]),
        Fault::ClockAhead => {
            group.nodes[victim].kill9();
            group.nodes[victim].start(None, &[]);
        }
        Fault::Isolate | Fault::Deafen | Fault::Lossy => group.net.heal(host),
        Fault::Minority => hosts.iter().for_each(|h| group.net.heal(*h)),
        Fault::Pause => group.nodes[victim].signal("CONT"),
        Fault::DiskFull => {
            group.nodes[victim].free_disk();
            if group.nodes[victim].has_exited() {
                eprintln!("{} stopped on the full disk; restarting it", group.nodes[victim].name);
                group.nodes[victim].start(None, &[]);
            }
        }
        Fault::WipeAndReplace => rejoin(group, victim, rng.random_bool(0.5)).await,
    }
}

/// A new member (new id) at `victim`'s address, added as a learner (it catches up by a
/// snapshot: the suite's groups snapshot every 200 entries), then promoted. With
/// `crash_leader`, the leader is killed and restarted at once while the learner catches
/// up, and again while the promotion is under way.
async fn rejoin(group: &mut Group, victim: usize, crash_leader: bool) {
    group.nodes[victim].start(None, &[]);
    let (name, address) = (group.nodes[victim].name.clone(), group.nodes[victim].grpc.to_string());
    let via = (victim + 1) % group.nodes.len();
    let joining = name.clone();
    membership(
        group,
        via,
        |mut cluster, name| {
            let address = address.clone();
            async move { cluster.add_learner(pb::AddLearnerRequest { name, address }).await.map(|_| ()) }
        },
        &joining,
    )
    .await;
    if crash_leader {
        crash_leader_now(group, &format!("while {name} catches up")).await;
    }
    let promote = {
        let mut cluster = group.nodes[via].cluster().await;
        let name = name.clone();
        tokio::spawn(async move { cluster.promote(pb::PromoteRequest { name }).await })
    };
    if crash_leader {
        tokio::time::sleep(Duration::from_millis(20)).await;
        crash_leader_now(group, &format!("while {name} is promoted")).await;
    }
    // The promotion may or may not have been made; promoting a voter again changes nothing.
    let _ = promote.await;
    membership(
        group,
        via,
        |mut cluster, name| async move { cluster.promote(pb::PromoteRequest { name }).await.map(|_| ()) },
        &name,
    )
    .await;
}

/// kill -9 of the leader (among the running nodes), restarted at once.
async fn crash_leader_now(group: &mut Group, when: &str) {
    let running: Vec<u8> = group.nodes.iter().filter(|n| n.is_running()).map(|n| n.host).collect();
    let leader = group.leader_among(&running).await;
    eprintln!("  {} (leader) killed and restarted {when}", group.nodes[leader].name);
    group.nodes[leader].kill9();
    group.nodes[leader].start(None, &[]);
}

/// A membership change through `group.nodes[via]`, retried (a change is refused while
/// another is under way, or while the group elects) for up to 60 s.
async fn membership<F, Fut>(group: &Group, via: usize, change: F, name: &str)
where
    F: Fn(ratchet_proto::v1::cluster_client::ClusterClient<tonic::transport::Channel>, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cluster = group.nodes[via].cluster().await;
        match change(cluster, name.to_owned()).await {
            Ok(()) => return,
            Err(status) if Instant::now() < deadline => {
                eprintln!("membership change for {name}: {status}; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(status) => panic!("membership change for {name}: {status}"),
        }
    }
}
