//! Membership changes while the group takes writes, with `ratchet ctl cluster`: a learner
//! added and promoted, an old voter removed, and a member whose volume was lost replaced
//! by a new node. Writers keep importing servers through whichever nodes are up, retrying
//! only what the group answered "unavailable" to; afterwards every acknowledged write is on
//! every node, with the first-seen instant it was given, and the nodes agree on one state.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::cluster::{Cluster, DeciderProcess, TEST_CONFIG};
use ratchet_proto::v1 as pb;

const TENANT: &str = "bear";
const OUT_OF_DATE: &str = "15.0.1497.48";

/// The nodes writers may use; the test changes it as members come and go.
type Endpoints = Arc<Mutex<Vec<SocketAddr>>>;

/// Imports servers one after another through the endpoints in turn until `stop`, and
/// returns each acknowledged server with its first-seen instant, and any error that was
/// not "unavailable, try again".
async fn writer(id: usize, endpoints: Endpoints, stop: Arc<AtomicBool>) -> (BTreeMap<String, i64>, Vec<String>) {
    let (mut acknowledged, mut errors) = (BTreeMap::new(), Vec::new());
    let mut turn = id;
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let server = format!("w{id}-{n}.bear.local");
        let first_seen = 1_700_000_000_000 + (id * 1_000_000 + n) as i64;
        let request = pb::ImportServerRequest {
            tenant: TENANT.into(),
            server_fqdn: server.clone(),
            build: OUT_OF_DATE.into(),
            first_seen: DateTime::from_timestamp_millis(first_seen).unwrap().to_rfc3339(),
        };
        // An import is idempotent: the same request again is safe.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            turn += 1;
            let node = {
                let endpoints = endpoints.lock().unwrap();
                endpoints[turn % endpoints.len()]
            };
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{node}"))
                .unwrap()
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy();
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(Duration::from_secs(10));
            match pb::admin_client::AdminClient::new(channel).import_server(call).await {
                Ok(_) => {
                    acknowledged.insert(server, first_seen);
                    break;
                }
                // Unavailable, or the connection reset under a call (its node was just
                // stopped): the import may or may not have been made, and making it again is
                // harmless.
                Err(status) if retryable(&status) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => {
                    errors.push(format!("{server} through {node}: {status}"));
                    break;
                }
            }
        }
    }
    (acknowledged, errors)
}

fn retryable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable || (status.code() == tonic::Code::Unknown && status.message() == "transport error")
}

/// Runs `ratchet ctl --endpoints NODE cluster ARGS...` until it succeeds (a membership
/// change is refused while another is in progress) or 30 s have passed.
async fn cluster_ctl(node: &DeciderProcess, args: &[&str]) -> String {
    let endpoint = node.grpc.to_string();
    let mut full = vec!["ctl", "--endpoints", &endpoint, "cluster"];
    full.extend_from_slice(args);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = common::run(&full);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(Instant::now() < deadline, "ctl cluster {args:?}: {stderr}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Adds `node` as a learner through `via`, then promotes it to voter.
async fn join(cluster: &Cluster, via: usize, node: usize) {
    let (name, address) = (cluster.nodes[node].name.clone(), cluster.nodes[node].grpc.to_string());
    cluster_ctl(&cluster.nodes[via], &["add-learner", "--name", &name, "--address", &address]).await;
    cluster_ctl(&cluster.nodes[via], &["promote", "--name", &name]).await;
}

/// The first-seen instant of every server of the tenant, as `node` reports it.
async fn first_seen_on(node: &DeciderProcess) -> BTreeMap<String, i64> {
    let report = common::cluster::report(&mut node.admin().await, TENANT).await;
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let at: DateTime<Utc> = serde_json::from_value(s["first_detected_date"].clone()).unwrap();
            (s["server_fqdn"].as_str().unwrap().to_owned(), at.timestamp_millis())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn learners_promotions_removals_and_a_lost_volume_under_writes_lose_nothing() {
    // d0-d2 found the group; d3 joins, d0 leaves, d1 loses its volume and d4 replaces it.
    let mut cluster = Cluster::new(5, TEST_CONFIG);
    cluster.found_first(3);
    cluster.wait_for_leader(3).await;
    common::cluster::add_tenant(&mut cluster.nodes[2].admin().await, TENANT, "127.0.0.1/32").await;

    let endpoints: Endpoints = Arc::new(Mutex::new(cluster.nodes[..3].iter().map(|n| n.grpc).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3).map(|id| tokio::spawn(writer(id, endpoints.clone(), stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A learner added and promoted.
    cluster.nodes[3].start(None, &[]);
    join(&cluster, 2, 3).await;
    endpoints.lock().unwrap().push(cluster.nodes[3].grpc);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // An old voter removed (then stopped, as its pod would be).
    endpoints.lock().unwrap().retain(|a| *a != cluster.nodes[0].grpc);
    cluster_ctl(&cluster.nodes[2], &["remove", "--name", "d0"]).await;
    let status = cluster.nodes[0].terminate();
    assert!(status.success(), "d0 did not stop cleanly: {status}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A member's volume lost: its node is gone for good; a new node takes its place.
    endpoints.lock().unwrap().retain(|a| *a != cluster.nodes[1].grpc);
    cluster.nodes[1].kill9();
    std::fs::remove_dir_all(&cluster.nodes[1].data_dir).unwrap();
    cluster_ctl(&cluster.nodes[2], &["remove", "--name", "d1"]).await;
    cluster.nodes[4].start(None, &[]);
    join(&cluster, 3, 4).await;
    endpoints.lock().unwrap().push(cluster.nodes[4].grpc);
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = BTreeMap::new();
    for writer in writers {
        let (acked, errors) = writer.await.unwrap();
        assert!(errors.is_empty(), "writes that failed beyond retries: {errors:#?}");
        acknowledged.extend(acked);
    }
    assert!(acknowledged.len() > 50, "the writers hardly wrote: {}", acknowledged.len());

    let voters = cluster.wait_for_leader(3).await;
    assert_ne!(voters, 0);
    cluster.wait_converged().await;
    let digest = cluster.assert_same_state().await;
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let seen = first_seen_on(node).await;
        for (server, first_seen) in &acknowledged {
            assert_eq!(seen.get(server), Some(first_seen), "{server} on {}", node.name);
        }
    }
    let members = cluster.nodes[2].status().await.unwrap().members;
    let mut names: Vec<_> = members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["d2", "d3", "d4"], "{members:?}");
    println!(
        "membership under load: {} acknowledged imports, all on d2, d3, d4 (state {digest})",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn membership_mistakes_are_refused_in_one_line_and_change_nothing() {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    let endpoint = cluster.nodes[0].grpc.to_string();
    for (args, expected) in [
        (vec!["remove", "--name", "d0"], "the last voter"),
        (vec!["promote", "--name", "ghost"], "ghost"),
    ] {
        let mut full = vec!["ctl", "--endpoints", &endpoint, "cluster"];
        full.extend_from_slice(&args);
        let refusal = common::stderr_of_failure(&full);
        assert_eq!(refusal.trim().lines().count(), 1, "{args:?}: {refusal}");
        assert!(refusal.contains(expected), "{args:?}: {refusal}");
    }
    let members = cluster.nodes[0].status().await.unwrap().members;
    assert_eq!(members.len(), 1, "{members:?}");
    // What changed is the audit trail, which records each refusal.
    let audit = common::ctl(&endpoint, &["audit"]);
    assert!(audit.contains("cluster remove d0") && audit.contains("refused"), "{audit}");
}
