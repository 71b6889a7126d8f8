//! A policy scheduled ahead (`ratchet ctl policy set FILE --effective-at T`) on a group of
//! three real deciders: it flips verdicts at T on every node at once, through the gRPC API
//! and through edges that ask different deciders; it is shown as pending until then; and
//! tenants whose servers it would newly enforce are told at once, with the report saying
//! what changes when.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::cluster::{add_tenant, count_answered, decide_request, report, Cluster, TEST_CONFIG};
use common::smtp::{deliver, EdgeProcess, SmtpSink};
use common::stages::{blocked, COMPLIANT, OUT_OF_DATE};
use ratchet_policy::stages::Stage;
use ratchet_policy::Policy;
use ratchet_proto::v1 as pb;

/// Notices are scanned every second here, so that an announcement comes at once.
const CONFIG: &str = "notify_scan_ms = 1000\n";

/// A build that the default policy holds compliant (Exchange 2019 at its baseline) and the
/// stricter one below does not.
const EXCHANGE_2019_BASELINE: &str = "15.2.1748.39";

/// The default policy, but every out-of-date server blocked all hour from its first day,
/// and no Exchange 2019 build compliant: what a second enforcement wave might bring.
fn stricter_policy() -> String {
    let mut policy = Policy::default();
    policy.stages = vec![Stage {
        from_days: 0,
        throttle_min: 0,
        block_min: 60,
    }];
    for product in &mut policy.products {
        if product.name == "Exchange 2019" {
            product.compliant_from = None;
        }
    }
    policy.to_toml()
}

async fn three_deciders() -> Cluster {
    let mut cluster = Cluster::new(3, &format!("{TEST_CONFIG}{CONFIG}"));
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    let mut admin = cluster.nodes[0].admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.1/32").await;
    cluster
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_scheduled_two_seconds_ahead_flips_verdicts_at_that_instant_on_every_node() {
    let cluster = three_deciders().await;
    let server = "old.bear.local";
    let yesterday = (Utc::now() - TimeDelta::days(1)).to_rfc3339();
    common::import_server(&cluster.nodes[0].grpc.to_string(), "bear", server, OUT_OF_DATE, &yesterday);
    let sink = SmtpSink::start();
    // Each edge asks one decider of its own.
    let edges: Vec<EdgeProcess> = [0, 1]
        .map(|node| EdgeProcess::start(&cluster.nodes[node].grpc.to_string(), sink.addr, None))
        .into();
    cluster.wait_converged().await;
    // A first day out of date: stage 1, accepted under the policy in force, by both edges
    // once they have the tenant's connector.
    for edge in &edges {
        wait_for_reply(edge.addr, server, "250");
    }

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), stricter_policy()).unwrap();
    let effective_at = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap() + TimeDelta::seconds(3);
    let at_text = effective_at.to_rfc3339();
    let path = file.path().to_str().unwrap();
    let set = cluster.ctl(2, &["policy", "set", path, "--effective-at", &at_text]);
    assert!(set.contains("scheduled"), "{set}");
    let pending = cluster.ctl_json(1, &["policy", "show", "--pending"]);
    let scheduled_version = pending["pending"]["version"].as_u64().expect("a pending version");
    let shown_at: DateTime<Utc> = pending["pending"]["effective_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(shown_at, effective_at);
    let in_force = cluster.ctl_json(0, &["policy", "show"]);
    assert_ne!(
        in_force["version"].as_u64(),
        Some(scheduled_version),
        "not in force before its time"
    );

    // Every node answers by the instant it decides at, on either side of T.
    let decide = tokio::spawn(decide_around(cluster_channels(&cluster).await, server, effective_at));
    // And edges asking different deciders flip with them (an edge reuses no verdict past T).
    let mail = tokio::task::spawn_blocking({
        let edges: Vec<SocketAddr> = edges.iter().map(|e| e.addr).collect();
        move || mail_around(&edges, server, effective_at)
    });
    let answered = decide.await.unwrap();
    for (node, answers) in answered.iter().enumerate() {
        let before = answers.iter().filter(|(at, _)| *at < effective_at).count();
        assert!(
            before > 0 && before < answers.len(),
            "d{node} answered on both sides of T: {answers:?}"
        );
        for (at, verdict) in answers {
            let expected = if *at < effective_at {
                pb::Verdict::Accept
            } else {
                pb::Verdict::Block
            };
            assert_eq!(*verdict, expected, "d{node} at {at} (T = {effective_at})");
        }
    }
    let (replied_before, sent_after) = mail.await.unwrap();
    assert!(!replied_before.is_empty() && !sent_after.is_empty(), "mail on both sides of T");
    for reply in &replied_before {
        assert!(reply.starts_with("250"), "a message answered before T: {reply}");
    }
    for reply in &sent_after {
        assert_eq!(reply, &blocked(60), "a message sent after T");
    }

    // Once in force, it is the policy, and nothing is pending.
    let in_force = cluster.ctl_json(1, &["policy", "show"]);
    assert_eq!(in_force["version"].as_u64(), Some(scheduled_version));
    assert!(cluster.ctl(0, &["policy", "show", "--pending"]).contains("no policy is scheduled"));
    cluster.assert_same_state().await;
}

fn wait_for_reply(edge: SocketAddr, server: &str, code: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = deliver(edge, server, OUT_OF_DATE, "ready?");
        if reply.starts_with(code) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the edge never answered {code}: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn cluster_channels(cluster: &Cluster) -> Vec<tonic::transport::Channel> {
    let mut channels = Vec::new();
    for node in &cluster.nodes {
        channels.push(node.channel().await);
    }
    channels
}

/// Decide for `server` on every node in turn from now until a second past `t`: each
/// node's answers with the instant it decided at.
async fn decide_around(channels: Vec<tonic::transport::Channel>, server: &str, t: DateTime<Utc>) -> Vec<Vec<(DateTime<Utc>, pb::Verdict)>> {
    let mut answers = vec![Vec::new(); channels.len()];
    while Utc::now() < t + TimeDelta::seconds(1) {
        for (node, channel) in channels.iter().enumerate() {
            let mut decision = pb::decision_client::DecisionClient::new(channel.clone());
            let reply = decision
                .decide(decide_request("127.0.0.1", server, OUT_OF_DATE))
                .await
                .unwrap()
                .into_inner();
            let at = DateTime::from_timestamp_millis(reply.tally.expect("a tally").decided_at_unix_ms).unwrap();
            answers[node].push((at, pb::Verdict::try_from(reply.verdict).unwrap()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answers
}

/// Messages from `server` through each edge in turn until a second past `t`: the replies
/// that came back before `t`, and those to messages sent after it (one in flight across
/// `t` may be either, and is in neither).
fn mail_around(edges: &[SocketAddr], server: &str, t: DateTime<Utc>) -> (Vec<String>, Vec<String>) {
    let (mut replied_before, mut sent_after) = (Vec::new(), Vec::new());
    for n in 0.. {
        let sent = Utc::now();
        if sent > t + TimeDelta::seconds(1) {
            break;
        }
        let reply = deliver(edges[n % edges.len()], server, OUT_OF_DATE, &format!("m{n}"));
        if Utc::now() < t {
            replied_before.push(reply);
        } else if sent >= t {
            sent_after.push(reply);
        }
    }
    (replied_before, sent_after)
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_told_ahead_which_servers_a_scheduled_policy_will_enforce() {
    let cluster = three_deciders().await;
    let endpoint = cluster.nodes[0].grpc.to_string();
    common::import_server(&endpoint, "bear", "old.bear.local", OUT_OF_DATE, &Utc::now().to_rfc3339());
    let mut admin = cluster.nodes[1].admin().await;
    add_tenant(&mut admin, "owl", "127.0.0.2/32").await;
    // Compliant servers enter the report by the messages an edge counts.
    let mut decision = cluster.nodes[0].decision().await;
    let mut answers = Vec::new();
    for (client, server, build) in [
        ("127.0.0.1", "wave.bear.local", EXCHANGE_2019_BASELINE),
        ("127.0.0.2", "se.owl.local", COMPLIANT),
    ] {
        answers.push(decision.decide(decide_request(client, server, build)).await.unwrap().into_inner());
    }
    count_answered(&mut decision, 7, 1, &answers).await;

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), stricter_policy()).unwrap();
    let effective_at = (Utc::now() + TimeDelta::days(30)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    let at_text = effective_at.to_rfc3339();
    cluster.ctl(1, &["policy", "set", file.path().to_str().unwrap(), "--effective-at", &at_text]);

    // Bear is told at once, naming the one server that is compliant today; owl, whose
    // server stays compliant, is not.
    let announced = wait_for_event(&cluster, "bear", "policy_announced").await;
    let message = announced["message"].as_str().unwrap();
    assert!(
        message.contains("wave.bear.local") && !message.contains("old.bear.local"),
        "{message}"
    );
    assert!(!message.starts_with("Reminder"), "{message}");
    let owl = cluster.ctl_json(2, &["events", "--tenant", "owl"]);
    assert!(
        owl["events"].as_array().unwrap().iter().all(|e| e["kind"] != "policy_announced"),
        "{owl}"
    );

    // The report says what is coming and which server it concerns.
    let report = report(&mut cluster.nodes[2].admin().await, "bear").await;
    let upcoming_at: DateTime<Utc> = report["upcoming_policy"]["effective_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(upcoming_at, effective_at);
    let enforced_from = |fqdn: &str| {
        report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["server_fqdn"] == fqdn)
            .map(|s| s["enforced_from"].clone())
            .unwrap()
    };
    assert!(enforced_from("wave.bear.local").is_string(), "{report}");
    assert!(enforced_from("old.bear.local").is_null(), "already enforced: {report}");
    let page = common::browser::get(cluster.nodes[0].http, "/tenants/bear").body;
    assert!(page.contains("A new policy (version"), "the report page announces it");

    // Nothing enforces it yet: the policy in force still holds wave compliant.
    let reply = decision
        .decide(decide_request("127.0.0.1", "wave.bear.local", EXCHANGE_2019_BASELINE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status(), pb::BuildStatus::Compliant);
    cluster.assert_same_state().await;
}

async fn wait_for_event(cluster: &Cluster, tenant: &str, kind: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = cluster.ctl_json(0, &["events", "--tenant", tenant]);
        if let Some(event) = events["events"].as_array().unwrap().iter().find(|e| e["kind"] == kind) {
            return event.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no {kind} event for {tenant}: {events}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_in_the_past_or_not_an_instant_is_refused_and_changes_nothing() {
    let cluster = three_deciders().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), stricter_policy()).unwrap();
    let path = file.path().to_str().unwrap();
    let before = cluster.ctl_json(0, &["policy", "show"]);

    let past = (Utc::now() - TimeDelta::minutes(5)).to_rfc3339();
    let refused = cluster.ctl_refusal(1, &["policy", "set", path, "--effective-at", past.as_str()]);
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");
    assert!(
        refused.contains("effective_at") && refused.contains("not in the future"),
        "{refused}"
    );

    let garbage = cluster.ctl_refusal(1, &["policy", "set", path, "--effective-at", "next tuesday"]);
    assert!(garbage.contains("--effective-at") && garbage.contains("RFC 3339"), "{garbage}");

    assert_eq!(cluster.ctl_json(2, &["policy", "show"]), before);
    assert!(cluster.ctl(2, &["policy", "show", "--pending"]).contains("no policy is scheduled"));
}
