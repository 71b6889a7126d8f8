//! Rolling restarts, as Kubernetes rolls the deciders' StatefulSet and the edges'
//! Deployment: every decider, then every edge, stopped with SIGTERM and started again, one
//! at a time, under steady mail. Postfix's `smtp-source` sends through HAProxy (checking
//! each edge's `/readyz`, as a Service or cloud load balancer does) to two edges, which
//! relay to `smtp-sink`. Nothing may fail: every session gets 250 and every message reaches
//! the sink, and mail from a server past its deadline gets 550 5.7.230 throughout.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{free_port, Cluster, TEST_CONFIG};
use common::haproxy::Haproxy;
use common::smtp::{deliver, exchange_received, EdgeProcess, SmtpSink};
use ratchet_proto::v1 as pb;

const TENANT: &str = "bear";
const COMPLIANT: &str = "15.2.2562.17";
const OUT_OF_DATE: &str = "15.0.1497.48";
const BLOCKED_SERVER: &str = "old.bear.local";

/// HAProxy in TCP mode in front of the edges: round robin, each edge checked on its
/// `/readyz` every 100 ms, a refused connection retried on the other edge.
fn start_haproxy(dir: &std::path::Path, edges: &[(SocketAddr, SocketAddr)]) -> Haproxy {
    let addr = free_port();
    let servers: String = edges
        .iter()
        .enumerate()
        .map(|(i, (smtp, http))| format!("  server edge{i} {smtp} check port {} inter 100ms fall 1 rise 2\n", http.port()))
        .collect();
    let config = format!(
        "global\n  maxconn 512\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch\n\
         frontend smtp\n  bind {addr}\n  default_backend edges\n\
         backend edges\n  balance roundrobin\n  option httpchk GET /readyz\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    Haproxy::start(&path, &[], addr)
}

/// What the steady load saw: messages sent in batches of `smtp-source`, and every line
/// it printed about a session that did not end in 250.
#[derive(Default)]
struct LoadOutcome {
    sent: usize,
    failures: Vec<String>,
}

/// Batches of `smtp-source` (4 sessions at once, one message each) until `stop` is set.
fn steady_mail(to: SocketAddr, message: std::path::PathBuf, stop: Arc<AtomicBool>) -> LoadOutcome {
    const BATCH: usize = 100;
    let mut outcome = LoadOutcome::default();
    while !stop.load(Ordering::SeqCst) {
        let output = Command::new("/usr/sbin/smtp-source")
            .args(["-s", "4", "-m", &BATCH.to_string(), "-F"])
            .arg(&message)
            .args(["-f", "admin@bear.example", "-t", "user@owl.example", &to.to_string()])
            .output()
            .expect("smtp-source (Debian package postfix) runs");
        outcome.sent += BATCH;
        let stderr = String::from_utf8_lossy(&output.stderr);
        outcome.failures.extend(stderr.lines().map(str::to_owned));
        if !output.status.success() {
            outcome.failures.push(format!("smtp-source exited with {}", output.status));
        }
    }
    outcome
}

/// Sessions from the blocked server, one after another, until `stop` is set: every reply
/// that is not the block.
fn blocked_trickle(to: SocketAddr, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let (mut sessions, mut wrong) = (0, Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let answer = deliver(to, BLOCKED_SERVER, OUT_OF_DATE, "blocked");
        sessions += 1;
        if !answer.starts_with("550 5.7.230") {
            wrong.push(answer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (sessions, wrong)
}

/// Waits until `node` follows the leader and has applied what the leader has.
async fn wait_caught_up(cluster: &Cluster, node: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses: Vec<Option<pb::StatusResponse>> = futures::future::join_all(cluster.nodes.iter().map(|n| n.status())).await;
        let leader_applied = statuses
            .iter()
            .flatten()
            .find(|s| s.leader_id == s.node_id)
            .map(|s| s.last_applied_index);
        if let (Some(mine), Some(leader_applied)) = (&statuses[node], leader_applied) {
            if mine.leader_id != 0 && mine.last_applied_index >= leader_applied {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not catch up: {statuses:?}",
            cluster.nodes[node].name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decider_then_every_edge_restarts_under_mail_and_no_message_fails() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    let endpoint = cluster.nodes[0].grpc.to_string();
    common::wait_for_ctl(&endpoint);
    common::ctl(&endpoint, &["tenant", "add", TENANT]);
    // HAProxy connects to the edges from loopback: the tenant's connector is its address.
    common::ctl(&endpoint, &["connector", "add", "--tenant", TENANT, "--cidr", "127.0.0.0/8"]);
    let long_ago = (chrono::Utc::now() - chrono::TimeDelta::days(120)).to_rfc3339();
    common::import_server(&endpoint, TENANT, BLOCKED_SERVER, OUT_OF_DATE, &long_ago);

    let sink = SmtpSink::start();
    let deciders: Vec<String> = cluster.nodes.iter().map(|n| n.grpc.to_string()).collect();
    let deciders = deciders.join(",");
    // A second between SIGTERM and closing the listener, /readyz answering 503 meanwhile:
    // HAProxy stops sending new sessions first (the chart's preStop sleep does the same in
    // Kubernetes).
    let dir = tempfile::tempdir().unwrap();
    let edge_config = dir.path().join("edge.toml");
    std::fs::write(&edge_config, "shutdown_delay_secs = 1\n").unwrap();
    let mut edges: Vec<EdgeProcess> = (0..2)
        .map(|_| EdgeProcess::start_with(&deciders, sink.addr, Some(&edge_config), &["--http", &free_port().to_string()], &[]))
        .collect();
    let haproxy = start_haproxy(dir.path(), &edges.iter().map(|e| (e.addr, e.http.unwrap())).collect::<Vec<_>>());

    let message = dir.path().join("message.eml");
    std::fs::write(
        &message,
        format!(
            "{}\nFrom: admin@bear.example\nTo: user@owl.example\nSubject: steady\n\nsteady mail\n",
            exchange_received("exch1.bear.local", COMPLIANT)
        ),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = std::thread::spawn({
        let (stop, to) = (stop.clone(), haproxy.addr);
        move || steady_mail(to, message, stop)
    });
    let blocked = std::thread::spawn({
        let (stop, to) = (stop.clone(), haproxy.addr);
        move || blocked_trickle(to, stop)
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..cluster.nodes.len() {
        let status = cluster.nodes[i].terminate();
        assert!(
            status.success(),
            "{} did not stop cleanly on SIGTERM: {status}\n{}",
            cluster.nodes[i].name,
            cluster.nodes[i].log()
        );
        cluster.nodes[i].start(None, &[]);
        wait_caught_up(&cluster, i).await;
    }
    for edge in &mut edges {
        let status = edge.terminate();
        assert!(status.success(), "an edge did not stop cleanly on SIGTERM: {status}");
        edge.restart();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let load = load.join().unwrap();
    let (blocked_sessions, wrong) = blocked.join().unwrap();

    assert!(load.failures.is_empty(), "sessions that did not get 250: {:#?}", load.failures);
    assert!(wrong.is_empty(), "blocked-server sessions that did not get 550 5.7.230: {wrong:#?}");
    assert!(blocked_sessions > 0, "the blocked server's sessions never ran");
    let delivered = sink.wait_for_messages(load.sent);
    let steady = delivered.iter().filter(|m| m.contains("Subject: steady")).count();
    assert_eq!(steady, load.sent, "every message that got 250 reaches the sink exactly once");
    assert!(
        !delivered.iter().any(|m| m.contains("Subject: blocked")),
        "a blocked server's message reached the sink"
    );
    // Counted exactly once each, though deciders stopped and edges failed over meanwhile
    // (every decider flushes its counts when it stops, the others every 500 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = common::json_of(["ctl", "--endpoints", &endpoint, "--json", "report", "--tenant", TENANT]);
    let blocked_server = report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_fqdn"] == BLOCKED_SERVER)
        .unwrap();
    let blocked_counted: u64 = blocked_server["counters"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["blocked"].as_u64().unwrap())
        .sum();
    assert_eq!(blocked_counted, blocked_sessions as u64, "each blocked message counted once");
    println!(
        "rolling restart: {} messages through 3 decider and 2 edge restarts, all 250 and delivered; {blocked_sessions} blocked sessions, all 550, each counted once",
        load.sent
    );
}

/// The longest time a write took, written one after another through `node` until `stop`.
async fn longest_write(node: SocketAddr, stop: Arc<AtomicBool>) -> Result<(usize, Duration), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{node}"))
        .unwrap()
        .connect_lazy();
    let mut admin = pb::admin_client::AdminClient::new(channel);
    let (mut writes, mut longest) = (0, Duration::ZERO);
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let reply = admin
            .import_server(pb::ImportServerRequest {
                tenant: TENANT.into(),
                server_fqdn: format!("s{writes}.bear.local"),
                build: OUT_OF_DATE.into(),
                first_seen: "2024-01-01T00:00:00Z".into(),
            })
            .await;
        if let Err(status) = reply {
            return Err(format!("write {writes} failed during the hand-over: {status}"));
        }
        longest = longest.max(started.elapsed());
        writes += 1;
    }
    Ok((writes, longest))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_stopped_with_sigterm_hands_over_before_it_exits() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    let leader = cluster.leader_index().await;
    let mut admin = cluster.nodes[leader].admin().await;
    common::cluster::add_tenant(&mut admin, TENANT, "127.0.0.1/32").await;
    let old = cluster.nodes[leader].status().await.unwrap();
    // openraft gives a new leader its lease for one election timeout: past it, the old
    // leader grants the vote that hands over.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let writer = (leader + 1) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(longest_write(cluster.nodes[writer].grpc, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = cluster.nodes[leader].terminate();
    assert!(
        status.success(),
        "the leader did not stop cleanly: {status}\n{}",
        cluster.nodes[leader].log()
    );
    let log = cluster.nodes[leader].log();
    let handed = log
        .lines()
        .find(|l| l.contains("handed leadership over"))
        .unwrap_or_else(|| panic!("the stopping leader did not hand over:\n{log}"));
    let new_leader = cluster.wait_for_leader(3).await;
    assert!(
        handed.contains(&format!("to={new_leader}")),
        "handed over to the node that leads now: {handed}"
    );
    let new = cluster.nodes[writer].status().await.unwrap();
    assert_eq!(new.term, old.term + 1, "one election, the one the hand-over started");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (count, longest) = writes
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("{error}\n--- writer's node log:\n{}", cluster.nodes[writer].log()));
    println!("hand-over: {count} writes through a follower, the longest took {longest:?}");
}
