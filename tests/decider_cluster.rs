//! The decision service as real `ratchet decider` processes on loopback, with RocksDB on
//! disk: founding, concurrent first sightings and pauses, leader loss, restarts, and
//! catching up through a snapshot.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{add_tenant, decide_request, report, Cluster, TEST_CONFIG};
use common::metrics::{scrape, total};
use ratchet_proto::v1 as pb;
use serde_json::Value;

const OUT_OF_DATE: &str = "15.0.1497.48";

/// The first-seen instant a node answers for a server once its first sighting, committed
/// in the background, has been applied there (a Decide names no uncommitted instant).
async fn committed_first_seen(node: &common::cluster::DeciderProcess, client_ip: &str, fqdn: &str) -> i64 {
    let mut decision = node.decision().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = decision
            .decide(decide_request(client_ip, fqdn, OUT_OF_DATE))
            .await
            .unwrap()
            .into_inner();
        if reply.first_seen_unix_ms != 0 {
            return reply.first_seen_unix_ms;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the first sighting of {fqdn} was never committed",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn first_seen_by_server(report: &Value) -> BTreeMap<String, String> {
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["server_fqdn"].as_str().unwrap().to_owned(),
                s["first_detected_date"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_node_decides_and_keeps_first_seen() {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    let node = &cluster.nodes[0];
    add_tenant(&mut node.admin().await, "bear", "127.0.0.0/8").await;

    let mut decision = node.decision().await;
    let first = decision
        .decide(decide_request("127.0.0.9", "EXCH1.bear.local", OUT_OF_DATE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (first.tenant.as_str(), first.verdict(), first.stage),
        ("bear", pb::Verdict::Accept, 1)
    );
    assert_eq!(first.first_seen_unix_ms, 0, "not committed yet: no first-seen named");
    let committed = committed_first_seen(node, "127.0.0.9", "exch1.bear.local").await;
    let again = decision
        .decide(decide_request("127.0.0.9", "exch1.bear.local", OUT_OF_DATE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.first_seen_unix_ms, committed, "later sightings never move first-seen");

    let stranger = decision
        .decide(decide_request("192.0.2.1", "evil.example", OUT_OF_DATE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stranger.tenant.as_str(), stranger.verdict()), ("", pb::Verdict::Accept));
    let report = report(&mut node.admin().await, "bear").await;
    assert_eq!(
        first_seen_by_server(&report).keys().collect::<Vec<_>>(),
        ["exch1.bear.local"],
        "a stranger creates no state"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_name_the_field_and_change_nothing() {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    let node = &cluster.nodes[0];
    let mut admin = node.admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.0/8").await;
    let audit_before = admin
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .len();
    let connector = |tenant: &str, cidr: &str| pb::AddConnectorRequest {
        tenant: tenant.into(),
        cidr: cidr.into(),
        cert_name: String::new(),
    };
    let import = |server_fqdn: &str, first_seen: &str| pb::ImportServerRequest {
        tenant: "bear".into(),
        server_fqdn: server_fqdn.into(),
        build: OUT_OF_DATE.into(),
        first_seen: first_seen.into(),
    };

    let cases: Vec<(tonic::Status, tonic::Code, &str)> = vec![
        (
            admin.add_tenant(pb::AddTenantRequest { name: String::new() }).await.unwrap_err(),
            tonic::Code::InvalidArgument,
            "name",
        ),
        (
            admin.add_tenant(pb::AddTenantRequest { name: "x".repeat(65) }).await.unwrap_err(),
            tonic::Code::InvalidArgument,
            "name",
        ),
        (
            admin.add_connector(connector("bear", "10.0.0.0/33")).await.unwrap_err(),
            tonic::Code::InvalidArgument,
            "cidr",
        ),
        (
            admin.add_connector(connector("nobody", "10.0.0.0/8")).await.unwrap_err(),
            tonic::Code::NotFound,
            "tenant",
        ),
        (
            admin.import_server(import("a.bear", "2999-01-01T00:00:00Z")).await.unwrap_err(),
            tonic::Code::InvalidArgument,
            "first_seen",
        ),
        (
            admin.import_server(import("a.bear", "yesterday")).await.unwrap_err(),
            tonic::Code::InvalidArgument,
            "first_seen",
        ),
        (
            admin.import_server(import("bad host!", "2026-01-01T00:00:00Z")).await.unwrap_err(),
            tonic::Code::InvalidArgument,
            "server_fqdn",
        ),
        (
            admin
                .pause(pb::PauseRequest {
                    tenant: "bear".into(),
                    days: 0,
                    request_id: String::new(),
                    servers: Vec::new(),
                })
                .await
                .unwrap_err(),
            tonic::Code::InvalidArgument,
            "days",
        ),
        (
            admin
                .end_pause(pb::EndPauseRequest {
                    tenant: "bear".into(),
                    server: String::new(),
                })
                .await
                .unwrap_err(),
            tonic::Code::FailedPrecondition,
            "tenant",
        ),
        (
            admin
                .set_policy(pb::SetPolicyRequest {
                    policy_toml: "stage = []".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            tonic::Code::InvalidArgument,
            "policy",
        ),
        (
            node.decision()
                .await
                .decide(decide_request("not-an-ip", "a.bear", OUT_OF_DATE))
                .await
                .unwrap_err(),
            tonic::Code::InvalidArgument,
            "connection.client_ip",
        ),
        (
            admin
                .report(pb::ReportRequest {
                    tenant: "nobody".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            tonic::Code::NotFound,
            "tenant",
        ),
    ];
    for (status, code, field) in cases {
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "message should name {field}: {status:?}"
        );
    }
    // A stamp that names no server is the message's content, not a bad request: accepted
    // as an unidentified build, and never recorded.
    let nameless = node
        .decision()
        .await
        .decide(decide_request("127.0.0.1", "", OUT_OF_DATE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (nameless.verdict(), nameless.status()),
        (pb::Verdict::Accept, pb::BuildStatus::Unidentified)
    );
    // Refusals change no state: all the log gained is their lines in the audit trail.
    let audit = admin
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let added = &audit[audit_before..];
    assert!(!added.is_empty(), "refusals are audited");
    assert!(added.iter().all(|e| e.outcome.starts_with("refused: ")), "{added:?}");
    assert!(first_seen_by_server(&report(&mut admin, "bear").await).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_found_a_group_in_any_order() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[2, 0, 1], Duration::from_millis(700));
    let leader = cluster.wait_for_leader(3).await;
    for node in &cluster.nodes {
        let status = node.status().await.unwrap();
        assert_eq!(status.leader_id, leader);
        let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_sightings_agree_everywhere() {
    const SERVERS: usize = 1000;
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    add_tenant(&mut cluster.nodes[0].admin().await, "bear", "127.0.0.0/8").await;
    cluster.wait_converged().await;

    let mut clients = Vec::new();
    for node in &cluster.nodes {
        let decision = node.decision().await;
        clients.push(tokio::spawn(async move {
            let mut first_seen = BTreeMap::new();
            let calls = (0..SERVERS).map(|i| {
                let mut decision = decision.clone();
                async move {
                    let fqdn = format!("exch{i}.bear.local");
                    let reply = decision
                        .decide(decide_request("127.0.0.5", &fqdn, OUT_OF_DATE))
                        .await
                        .unwrap()
                        .into_inner();
                    (fqdn, reply.first_seen_unix_ms)
                }
            });
            use futures::StreamExt;
            let mut replies = futures::stream::iter(calls).buffer_unordered(32);
            while let Some((fqdn, at)) = replies.next().await {
                first_seen.insert(fqdn, at);
            }
            first_seen
        }));
    }
    let mut answers = Vec::new();
    for client in clients {
        answers.push(client.await.unwrap());
    }
    assert!(answers.iter().all(|a| a.len() == SERVERS));
    let mut reports = Vec::new();
    for node in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let by_server = first_seen_by_server(&report(&mut node.admin().await, "bear").await);
            if by_server.len() == SERVERS || Instant::now() > deadline {
                reports.push(by_server);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Each answer named no instant, or the committed one (the same on every node).
    let mut committed = BTreeMap::new();
    for node in &cluster.nodes {
        for i in (0..SERVERS).step_by(97) {
            let fqdn = format!("exch{i}.bear.local");
            let at = committed_first_seen(node, "127.0.0.5", &fqdn).await;
            assert_eq!(
                *committed.entry(fqdn.clone()).or_insert(at),
                at,
                "{fqdn}: nodes disagree on first-seen"
            );
        }
    }
    for answer in &answers {
        for (fqdn, at) in answer.iter().filter(|(fqdn, at)| **at != 0 && committed.contains_key(*fqdn)) {
            assert_eq!(committed[fqdn], *at, "{fqdn}: a client was answered another first-seen");
        }
    }
    assert_eq!(reports[0].len(), SERVERS);
    assert!(
        reports.iter().all(|r| *r == reports[0]),
        "every node reports one identical first-seen per server"
    );
    cluster.assert_same_state().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pauses_never_exceed_the_budget() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    add_tenant(&mut cluster.nodes[0].admin().await, "bear", "127.0.0.0/8").await;
    cluster.wait_converged().await;

    let mut requests = Vec::new();
    for i in 0..30 {
        let mut admin = cluster.nodes[i % 3].admin().await;
        requests.push(tokio::spawn(async move {
            admin
                .pause(pb::PauseRequest {
                    tenant: "bear".into(),
                    days: 7,
                    request_id: format!("req-{i}"),
                    servers: Vec::new(),
                })
                .await
        }));
    }
    let (mut granted_days, mut refused) = (0, 0);
    for request in requests {
        match request.await.unwrap() {
            Ok(reply) => granted_days += reply.into_inner().days,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
                assert!(
                    status.message().contains("pause days remain"),
                    "refusal names the remaining days: {status:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(granted_days, 84, "twelve 7-day pauses fit in 90 days");
    assert_eq!(refused, 18);
    cluster.wait_converged().await;
    for node in &cluster.nodes {
        let pauses = node
            .admin()
            .await
            .list_pauses(pb::ListPausesRequest { tenant: "bear".into() })
            .await
            .unwrap()
            .into_inner();
        let charged: u32 = pauses.pauses.iter().map(|p| p.days_charged).sum();
        assert_eq!(charged, granted_days, "{}: days charged equal the days granted", node.name);
        assert_eq!(pauses.remaining_days, 6);
    }
    // A retry of any request, granted or refused, charges nothing more.
    let mut admin = cluster.nodes[1].admin().await;
    for i in 0..30 {
        let _ = admin
            .pause(pb::PauseRequest {
                tenant: "bear".into(),
                days: 7,
                request_id: format!("req-{i}"),
                servers: Vec::new(),
            })
            .await;
    }
    let pauses = admin
        .list_pauses(pb::ListPausesRequest { tenant: "bear".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pauses.remaining_days, 6);
}

/// Days charged to bear on `node`, and the days its budget has left.
async fn pause_days(node: &common::cluster::DeciderProcess) -> (u32, u32) {
    let pauses = node
        .admin()
        .await
        .list_pauses(pb::ListPausesRequest { tenant: "bear".into() })
        .await
        .unwrap()
        .into_inner();
    (pauses.pauses.iter().map(|p| p.days_charged).sum(), pauses.remaining_days)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_per_server_pauses_are_charged_per_server_and_never_exceed_the_budget() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    let mut admin = cluster.nodes[0].admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.0/8").await;
    let servers: Vec<String> = (0..5).map(|n| format!("exch{n}.bear.local")).collect();
    let first_seen = (chrono::Utc::now() - chrono::TimeDelta::days(40)).to_rfc3339();
    for server in &servers {
        let import = pb::ImportServerRequest {
            tenant: "bear".into(),
            server_fqdn: server.clone(),
            build: "15.0.1497.48".into(),
            first_seen: first_seen.clone(),
        };
        admin.import_server(import).await.unwrap();
    }
    cluster.wait_converged().await;

    // 50 requests from three nodes at once: one server or two, 3 days each.
    let mut requests = Vec::new();
    for i in 0..50 {
        let mut admin = cluster.nodes[i % 3].admin().await;
        let named: Vec<String> = servers.iter().cycle().skip(i).take(1 + i % 2).cloned().collect();
        requests.push(tokio::spawn(async move {
            let charge = 3 * named.len() as u32;
            let request = pb::PauseRequest {
                tenant: "bear".into(),
                days: 3,
                request_id: format!("req-{i}"),
                servers: named,
            };
            (charge, admin.pause(request).await)
        }));
    }
    let mut acknowledged = 0;
    for request in requests {
        match request.await.unwrap() {
            (charge, Ok(_)) => acknowledged += charge,
            (_, Err(status)) => assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert!(acknowledged > 0 && acknowledged <= 90, "{acknowledged}");
    cluster.wait_converged().await;
    for node in &cluster.nodes {
        let (charged, remaining) = pause_days(node).await;
        assert_eq!(charged, acknowledged, "{}: days charged are the days acknowledged", node.name);
        assert_eq!(remaining, 90 - charged, "{}", node.name);
    }
    cluster.assert_same_state().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9_of_the_leader() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    let leader = cluster.leader_index().await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut acknowledged = Vec::new();
    let mut admin_on_survivor = cluster.nodes[survivors[0]].admin().await;
    for i in 0..40 {
        let name = format!("t{i}");
        if admin_on_survivor
            .add_tenant(pb::AddTenantRequest { name: name.clone() })
            .await
            .is_ok()
        {
            acknowledged.push(name);
        }
        if i == 20 {
            cluster.nodes[leader].kill9();
        }
    }
    // Writes succeed again through the survivors within a few seconds.
    let killed_at = Instant::now();
    loop {
        if admin_on_survivor
            .add_tenant(pb::AddTenantRequest { name: "after".into() })
            .await
            .is_ok()
        {
            acknowledged.push("after".into());
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "no write succeeded within 10 s of losing the leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for &i in &survivors {
        let tenants = cluster.nodes[i]
            .admin()
            .await
            .list_tenants(pb::ListTenantsRequest {})
            .await
            .unwrap()
            .into_inner()
            .tenants;
        let names: Vec<String> = tenants.into_iter().map(|t| t.name).collect();
        for name in &acknowledged {
            assert!(names.contains(name), "{}: acknowledged tenant {name} lost", cluster.nodes[i].name);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_a_full_restart_and_a_lagging_node_catches_up_by_snapshot() {
    let config = format!("{TEST_CONFIG}snapshot_every_entries = 40\nkeep_entries_after_snapshot = 5\n");
    let mut cluster = Cluster::new(3, &config);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    add_tenant(&mut cluster.nodes[0].admin().await, "bear", "127.0.0.0/8").await;
    let first_seen = committed_first_seen(&cluster.nodes[0], "127.0.0.5", "exch1.bear.local").await;

    // d2 goes down while the others write far past a snapshot and purge their logs.
    cluster.nodes[2].kill9();
    let mut admin = cluster.nodes[0].admin().await;
    for i in 0..120 {
        admin.add_tenant(pb::AddTenantRequest { name: format!("t{i}") }).await.unwrap();
    }
    cluster.nodes[2].start(None, &[]);
    cluster.wait_for_leader(3).await;
    cluster.wait_converged().await;
    assert!(
        cluster.nodes[2].log().contains("installed snapshot"),
        "d2 should catch up through a snapshot:\n{}",
        cluster.nodes[2].log()
    );
    // Its metrics say so, with the size of the snapshot file it now keeps.
    let metrics = scrape(cluster.nodes[2].http);
    assert!(total(&metrics, "ratchet_raft_snapshots_installed_total", &[]) >= 1.0);
    let installed = total(&metrics, "ratchet_raft_snapshot_size_bytes", &[("kind", "installed")]);
    assert_eq!(
        cluster.nodes[2].snapshot_file_sizes(),
        [installed as u64],
        "installed snapshot of {installed} bytes"
    );
    let tenants = cluster.nodes[2]
        .admin()
        .await
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(tenants.len(), 121);

    // All stopped and restarted with only --name, --data-dir and --listen: state intact.
    for node in &mut cluster.nodes {
        node.kill9();
    }
    for node in &mut cluster.nodes {
        node.start(None, &[]);
    }
    cluster.wait_for_leader(3).await;
    for node in &cluster.nodes {
        let report = report(&mut node.admin().await, "bear").await;
        let server = &report["servers"][0];
        assert_eq!(server["server_fqdn"], "exch1.bear.local");
        let again = node
            .decision()
            .await
            .decide(decide_request("127.0.0.5", "exch1.bear.local", OUT_OF_DATE))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.first_seen_unix_ms, first_seen, "{}: first-seen intact", node.name);
    }
    // The node that caught up from a snapshot holds, record for record, what the others do.
    cluster.assert_same_state().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_node_joins_as_learner_and_is_promoted_with_ctl() {
    let mut cluster = Cluster::new(4, TEST_CONFIG);
    cluster.found_first(3);
    cluster.nodes[3].start(None, &[]);
    let endpoint = cluster.nodes[1].grpc.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = loop {
        let output = common::run([
            "ctl",
            "--endpoints",
            &endpoint,
            "cluster",
            "add-learner",
            "--name",
            "d3",
            "--address",
            &cluster.nodes[3].grpc.to_string(),
        ]);
        if output.status.success() || Instant::now() > deadline {
            break output;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !joined.status.success() {
        let logs: Vec<String> = cluster.nodes.iter().map(|n| format!("--- {}\n{}", n.name, n.log())).collect();
        panic!("add-learner: {}\n{}", String::from_utf8_lossy(&joined.stderr), logs.join("\n"));
    }
    let promoted = common::stdout_of(["ctl", "--endpoints", &endpoint, "--json", "cluster", "promote", "--name", "d3"]);
    let membership: Value = serde_json::from_str(&promoted).unwrap();
    assert_eq!(membership["voters"].as_array().unwrap().len(), 4, "{membership}");
    cluster.wait_for_leader(4).await;
    let status: Value = serde_json::from_str(&common::stdout_of([
        "ctl",
        "--endpoints",
        &cluster.nodes[3].grpc.to_string(),
        "--json",
        "cluster",
        "status",
    ]))
    .unwrap();
    assert_eq!(status["node_name"], "d3");
    assert_eq!(status["state"], "follower");

    // Removing it leaves three voters, and the refusal for an unknown name is one line.
    common::stdout_of(["ctl", "--endpoints", &endpoint, "cluster", "remove", "--name", "d3"]);
    let unknown = common::run(["ctl", "--endpoints", &endpoint, "cluster", "remove", "--name", "nobody"]);
    assert!(!unknown.status.success());
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        "ratchet: not found: name: no member named \"nobody\""
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_node_at_a_departed_members_address_cannot_disturb_the_group() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    let leader = cluster.leader_index().await;
    let lost = (leader + 1) % 3;
    // The member's volume is lost: a fresh node, with a new id, comes back at its address.
    cluster.nodes[lost].kill9();
    std::fs::remove_dir_all(&cluster.nodes[lost].data_dir).unwrap();
    cluster.nodes[lost].start(None, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut admin = cluster.nodes[leader].admin().await;
    for i in 0..20 {
        admin
            .add_tenant(pb::AddTenantRequest {
                name: format!("after-{i}"),
            })
            .await
            .expect("the group keeps writing");
    }
    let status = cluster.nodes[leader].status().await.expect("the leader still answers");
    assert_eq!(status.state, "leader");
    let stranger = cluster.nodes[lost].status().await.unwrap();
    assert_eq!(stranger.leader_id, 0, "the fresh node joined nothing by itself");
}
