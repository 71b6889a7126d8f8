//! Lifecycle and retention on a group of three real deciders with a real edge, driven
//! through `ratchet ctl`: removing a tenant or a connector stops the edge attributing the
//! mail it claimed, and the retention sweep forgets servers not seen for the policy's
//! `forget_after_days` on every node alike (the state digests equal).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::cluster::{add_tenant, decide_request, report, Cluster, TEST_CONFIG};
use common::metrics::{scrape, total};
use common::smtp::{deliver_from, EdgeProcess, SmtpSink};
use common::stages::{blocked, OUT_OF_DATE};
use ratchet_policy::stages::Stage;
use ratchet_policy::Policy;

/// The leader sweeps every 300 ms here, so that a sweep follows a policy change at once.
const CONFIG: &str = "sweep_every_ms = 300\n";

/// The default policy, but every out-of-date server blocked all hour from its first day
/// (so that an attributed message is refused and an unattributed one is not), and servers
/// forgotten after `forget_after_days`.
fn policy_file(forget_after_days: u32) -> tempfile::NamedTempFile {
    let mut policy = Policy::default();
    policy.stages = vec![Stage {
        from_days: 0,
        throttle_min: 0,
        block_min: 60,
    }];
    policy.retention.forget_after_days = forget_after_days;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), policy.to_toml()).unwrap();
    file
}

fn set_policy(cluster: &Cluster, forget_after_days: u32) {
    let file = policy_file(forget_after_days);
    cluster.ctl(0, &["policy", "set", file.path().to_str().unwrap()]);
}

async fn three_deciders() -> Cluster {
    let mut cluster = Cluster::new(3, &format!("{TEST_CONFIG}{CONFIG}"));
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    cluster
}

fn import(cluster: &Cluster, server: &str, age: TimeDelta) {
    let first_seen = (Utc::now() - age).to_rfc3339();
    common::import_server(&cluster.nodes[0].grpc.to_string(), "bear", server, OUT_OF_DATE, &first_seen);
}

fn tenant_names(cluster: &Cluster, node: usize) -> Vec<String> {
    let listed = cluster.ctl_json(node, &["tenant", "list"]);
    let names = listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned());
    names.collect()
}

fn server_names(report: &serde_json::Value) -> Vec<String> {
    let servers = report["servers"].as_array().unwrap().iter();
    servers.map(|s| s["server_fqdn"].as_str().unwrap().to_owned()).collect()
}

fn event_kinds(cluster: &Cluster, node: usize) -> Vec<String> {
    let events = cluster.ctl_json(node, &["events", "--tenant", "bear"]);
    let kinds = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned());
    kinds.collect()
}

/// The reply to a message from `server` sent from `from` through `edge`, once it starts
/// with `code` (an edge takes connector changes as they come; it may take a moment).
fn wait_for_reply(edge: SocketAddr, from: &str, server: &str, code: &str) -> String {
    let from: IpAddr = from.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = deliver_from(Some(from), edge, server, OUT_OF_DATE, "lifecycle");
        if reply.starts_with(code) {
            return reply;
        }
        assert!(std::time::Instant::now() < deadline, "mail from {from} never got {code}: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retention_sweep_forgets_the_same_servers_on_every_node() {
    let mut cluster = three_deciders().await;
    add_tenant(&mut cluster.nodes[0].admin().await, "bear", "127.0.0.1/32").await;
    let started = Utc::now();
    // An import is evidence that the server is there: retention counts from it, however
    // long ago the server was first seen.
    import(&cluster, "old.bear.local", TimeDelta::days(700));
    // Two days pass: the whole group starts again with its clocks two days ahead (all
    // alike, so none is out of step), and then the other server is imported.
    for node in &mut cluster.nodes {
        assert!(node.terminate().success(), "{} stops cleanly", node.name);
    }
    for node in &mut cluster.nodes {
        node.start(None, &["--test-clock-offset-secs", &(2 * 86_400).to_string()]);
    }
    cluster.wait_for_leader(3).await;
    import(&cluster, "new.bear.local", TimeDelta::days(700));
    // Several sweeps under the default retention (400 days): nothing is old enough.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let servers = server_names(&report(&mut cluster.nodes[1].admin().await, "bear").await);
    assert_eq!(servers, ["new.bear.local", "old.bear.local"]);

    set_policy(&cluster, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server_names(&report(&mut cluster.nodes[2].admin().await, "bear").await).len() > 1 {
        assert!(std::time::Instant::now() < deadline, "old.bear.local was never forgotten");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.assert_same_state().await;
    for node in 0..3 {
        let servers = server_names(&report(&mut cluster.nodes[node].admin().await, "bear").await);
        assert_eq!(servers, ["new.bear.local"], "d{node}");
        assert_eq!(
            event_kinds(&cluster, node).iter().filter(|k| *k == "servers_forgotten").count(),
            1,
            "d{node}: one sweep forgot it, once"
        );
        let swept = total(
            &scrape(cluster.nodes[node].http),
            "ratchet_retention_swept_records_total",
            &[("kind", "servers")],
        );
        assert_eq!(swept, 1.0, "d{node} deleted the one server record in its own apply");
    }
    let events = cluster.ctl_json(0, &["events", "--tenant", "bear"]);
    let forgotten = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "servers_forgotten")
        .unwrap();
    assert_eq!(forgotten["message"], "1 server not seen for 1 day forgotten: old.bear.local");

    // Seen again, the forgotten server starts a new clock, as after a decommission.
    let mut decision = cluster.nodes[1].decision().await;
    decision
        .decide(decide_request("127.0.0.1", "old.bear.local", OUT_OF_DATE))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let old = loop {
        let report = report(&mut cluster.nodes[0].admin().await, "bear").await;
        let found = report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["server_fqdn"] == "old.bear.local")
            .cloned();
        if let Some(old) = found {
            break old;
        }
        assert!(std::time::Instant::now() < deadline, "the sighting was never recorded: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first_detected: chrono::DateTime<Utc> = old["first_detected_date"].as_str().unwrap().parse().unwrap();
    assert!(first_detected >= started, "a new clock: {old}");
    cluster.assert_same_state().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_tenant_stops_the_edge_attributing_its_mail_and_deletes_what_it_held() {
    let cluster = three_deciders().await;
    set_policy(&cluster, 400);
    let mut admin = cluster.nodes[0].admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.1/32").await;
    add_tenant(&mut admin, "owl", "127.0.0.2/32").await;
    import(&cluster, "old.bear.local", TimeDelta::days(1));
    let sink = SmtpSink::start();
    let edge = EdgeProcess::start(&cluster.nodes[1].grpc.to_string(), sink.addr, None);
    assert_eq!(wait_for_reply(edge.addr, "127.0.0.1", "old.bear.local", "550"), blocked(60));

    // Without --yes: one line saying what would go, and nothing goes.
    let unconfirmed = cluster.ctl_refusal(2, &["tenant", "remove", "--tenant", "bear"]);
    assert_eq!(unconfirmed.trim().lines().count(), 1, "{unconfirmed}");
    assert!(
        unconfirmed.contains("would remove tenant bear (servers: 1, connectors: 1)") && unconfirmed.contains("--yes"),
        "{unconfirmed}"
    );
    // An unknown tenant: one line naming it, with or without --yes.
    for args in [
        &["tenant", "remove", "--tenant", "nosuch", "--yes"][..],
        &["tenant", "remove", "--tenant", "nosuch"][..],
    ] {
        let unknown = cluster.ctl_refusal(1, args);
        assert_eq!(unknown.trim().lines().count(), 1, "{unknown}");
        assert!(unknown.contains("no tenant named \"nosuch\""), "{unknown}");
    }
    assert_eq!(tenant_names(&cluster, 0), ["bear", "owl"], "nothing changed");
    assert_eq!(wait_for_reply(edge.addr, "127.0.0.1", "old.bear.local", "550"), blocked(60));

    let removed = cluster.ctl(2, &["tenant", "remove", "--tenant", "bear", "--yes"]);
    assert_eq!(removed.trim(), "tenant bear removed");
    for node in 0..3 {
        assert_eq!(tenant_names(&cluster, node), ["owl"], "d{node}");
    }
    // Mail from bear's range is no one's now: not enforced, accepted and relayed.
    wait_for_reply(edge.addr, "127.0.0.1", "old.bear.local", "250");
    let audit = cluster.ctl_json(0, &["audit", "--tenant", "bear"]);
    let entries = audit["entries"].as_array().unwrap();
    let removal = entries.iter().find(|e| e["action"] == "tenant remove bear").expect("audited");
    assert_eq!(removal["outcome"], "ok");
    assert!(
        entries.iter().any(|e| e["action"] == "connector add 127.0.0.1/32"),
        "the audit trail keeps the tenant's history: {audit}"
    );

    // The name added again starts from nothing.
    cluster.ctl(0, &["tenant", "add", "bear"]);
    let listed = cluster.ctl_json(1, &["tenant", "list"]);
    let bear = listed.as_array().unwrap().iter().find(|t| t["name"] == "bear").unwrap().clone();
    assert_eq!(
        (bear["servers"].as_u64(), bear["connectors"].as_u64()),
        (Some(0), Some(0)),
        "{listed}"
    );
    assert!(event_kinds(&cluster, 2).is_empty());
    cluster.assert_same_state().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_connector_stops_attribution_from_that_range_only() {
    let cluster = three_deciders().await;
    set_policy(&cluster, 400);
    add_tenant(&mut cluster.nodes[0].admin().await, "bear", "127.0.0.1/32").await;
    cluster.ctl(1, &["connector", "add", "--tenant", "bear", "--cidr", "127.0.0.2/32"]);
    import(&cluster, "old.bear.local", TimeDelta::days(1));
    let sink = SmtpSink::start();
    let edge = EdgeProcess::start(&cluster.nodes[2].grpc.to_string(), sink.addr, None);
    for from in ["127.0.0.1", "127.0.0.2"] {
        assert_eq!(wait_for_reply(edge.addr, from, "old.bear.local", "550"), blocked(60));
    }
    let connectors_before = cluster.ctl_json(0, &["connector", "list", "--tenant", "bear"]);

    let unknown = cluster.ctl_refusal(0, &["connector", "remove", "--tenant", "bear", "--cidr", "127.0.0.9/32"]);
    assert_eq!(unknown.trim().lines().count(), 1, "{unknown}");
    assert!(unknown.contains("127.0.0.9/32") && unknown.contains("no connector"), "{unknown}");
    let no_tenant = cluster.ctl_refusal(0, &["connector", "remove", "--tenant", "nosuch", "--cidr", "127.0.0.2/32"]);
    assert!(no_tenant.contains("no tenant named \"nosuch\""), "{no_tenant}");
    assert_eq!(
        cluster.ctl_json(1, &["connector", "list", "--tenant", "bear"]),
        connectors_before,
        "nothing changed"
    );

    let removed = cluster.ctl(1, &["connector", "remove", "--tenant", "bear", "--cidr", "127.0.0.2/32"]);
    assert_eq!(removed.trim(), "connector 127.0.0.2/32 of tenant bear removed");
    wait_for_reply(edge.addr, "127.0.0.2", "old.bear.local", "250");
    assert_eq!(wait_for_reply(edge.addr, "127.0.0.1", "old.bear.local", "550"), blocked(60));
    let listed = cluster.ctl_json(2, &["connector", "list", "--tenant", "bear"]);
    let cidrs: Vec<&str> = listed.as_array().unwrap().iter().map(|c| c["cidr"].as_str().unwrap()).collect();
    assert_eq!(cidrs, ["127.0.0.1/32"]);
    assert!(event_kinds(&cluster, 0).contains(&"connector_removed".to_owned()));
    cluster.assert_same_state().await;
}
