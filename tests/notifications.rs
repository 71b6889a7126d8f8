//! Notifications end to end: events raised by commands and by the clock, delivered by the
//! leader to a webhook at least once, and seen exactly once after de-duplication, also
//! when the leader is killed between an event and its delivery.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{TimeDelta, Utc};
use common::cluster::{add_tenant, Cluster, TEST_CONFIG};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use serde_json::Value;
use tonic::transport::Channel;

/// Webhooks on loopback: the tests' receivers are local, which a decider allows only when told.
const ALLOW_LOCAL_WEBHOOKS: &str = "webhook_allow_private = true\n";

/// A webhook receiver that checks each POST's signature, records every event it
/// acknowledged, and can be made to fail or to be slow.
#[derive(Clone, Default)]
struct Receiver {
    failing: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    secret: Arc<Mutex<String>>,
    acknowledged: Arc<Mutex<Vec<Value>>>,
    bad_signatures: Arc<Mutex<u32>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if receiver.slow.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if receiver.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let expected = ratchet_decider::webhook::signature(&receiver.secret.lock().unwrap(), &body);
    if headers.get("x-ratchet-signature").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        *receiver.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    receiver.acknowledged.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

/// Points `tenant`'s webhook at `url` and gives the receiver the secret it was issued.
async fn set_webhook(admin: &mut AdminClient<Channel>, tenant: &str, url: &str, receiver: &Receiver) {
    let reply = admin
        .set_webhook(pb::SetWebhookRequest {
            tenant: tenant.into(),
            url: url.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.secret.len(), 64, "a 256-bit secret, in hex");
    *receiver.secret.lock().unwrap() = reply.secret;
}

fn events(endpoint: &str) -> Vec<Value> {
    let listing: Value = serde_json::from_str(&common::stdout_of([
        "ctl",
        "--endpoints",
        endpoint,
        "--json",
        "events",
        "--tenant",
        "bear",
    ]))
    .unwrap();
    listing["events"].as_array().unwrap().clone()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_event_reaches_the_webhook_once_after_deduplication_across_a_leader_kill() {
    let mut cluster = Cluster::new(3, &format!("{TEST_CONFIG}notify_scan_ms = 300\n{ALLOW_LOCAL_WEBHOOKS}"));
    cluster.found(&[0, 1, 2], Duration::ZERO);
    let leader = cluster.leader_index().await;
    let (receiver, url) = start_receiver().await;
    let mut admin = cluster.nodes[(leader + 1) % 3].admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.0/8").await;
    set_webhook(&mut admin, "bear", &url, &receiver).await;

    // Commands raise events at apply; the leader's scan raises the clock's notices.
    for (server, age_days) in [("exch1.bear.local", 35), ("exch2.bear.local", 55)] {
        let first_seen = (Utc::now() - TimeDelta::days(age_days)).to_rfc3339();
        let import = pb::ImportServerRequest {
            tenant: "bear".into(),
            server_fqdn: server.into(),
            build: "15.0.1497.48".into(),
            first_seen,
        };
        admin.import_server(import).await.unwrap();
    }
    admin
        .pause(pb::PauseRequest {
            tenant: "bear".into(),
            days: 3,
            request_id: "p1".into(),
            servers: Vec::new(),
        })
        .await
        .unwrap();
    admin
        .end_pause(pb::EndPauseRequest {
            tenant: "bear".into(),
            server: String::new(),
        })
        .await
        .unwrap();

    let survivor = cluster.nodes[(leader + 1) % 3].grpc.to_string();
    let expected_kinds = [
        "first_detected",
        "first_detected",
        "pause_started",
        "pause_ended",
        "stage_entered",
        "stage_entered",
        "blocking_soon",
    ];
    wait_until("every event to be raised", || events(&survivor).len() >= expected_kinds.len()).await;
    let raised = events(&survivor);
    let mut kinds: Vec<&str> = raised.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    kinds.sort();
    let mut want = expected_kinds.to_vec();
    want.sort();
    assert_eq!(kinds, want, "{raised:#?}");
    assert!(raised.iter().all(|e| e["delivered"] == false), "the webhook has been failing");

    // The leader dies with every event undelivered; the webhook recovers.
    cluster.nodes[leader].kill9();
    receiver.failing.store(false, Ordering::SeqCst);
    wait_until("every event to be delivered", || {
        events(&survivor).iter().all(|e| e["delivered"] == true)
    })
    .await;

    let acknowledged = receiver.acknowledged.lock().unwrap().clone();
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for event in &acknowledged {
        by_id.insert(event["id"].as_str().unwrap().to_owned(), event.clone());
    }
    let raised_ids: BTreeSet<String> = events(&survivor).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        by_id.keys().cloned().collect::<BTreeSet<_>>(),
        raised_ids,
        "after de-duplication the webhook saw each event exactly once"
    );
    for event in by_id.values() {
        assert_eq!(event["tenant"], "bear");
        assert!(event["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let stage_messages: Vec<&str> = by_id
        .values()
        .filter(|e| e["kind"] == "stage_entered")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        stage_messages.iter().any(|m| m.contains("exch1.bear.local entered stage 2")),
        "{stage_messages:?}"
    );
    assert!(
        stage_messages.iter().any(|m| m.contains("exch2.bear.local entered stage 4")),
        "{stage_messages:?}"
    );

    assert_eq!(
        *receiver.bad_signatures.lock().unwrap(),
        0,
        "every POST carried the tenant's signature"
    );

    // Later scans raise nothing new: each notice once per server episode.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(events(&survivor).len(), raised_ids.len());
}

/// Imports an out-of-date server for `tenant`, which raises a first-detected event.
async fn raise_event(admin: &mut AdminClient<Channel>, tenant: &str) {
    let import = pb::ImportServerRequest {
        tenant: tenant.into(),
        server_fqdn: format!("exch1.{tenant}.local"),
        build: "15.0.1497.48".into(),
        first_seen: (Utc::now() - TimeDelta::days(1)).to_rfc3339(),
    };
    admin.import_server(import).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_on_a_private_address_is_refused_unless_allowed() {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    let (receiver, url) = start_receiver().await;
    receiver.failing.store(false, Ordering::SeqCst);
    let mut admin = cluster.nodes[0].admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.0/8").await;
    set_webhook(&mut admin, "bear", &url, &receiver).await;
    raise_event(&mut admin, "bear").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.acknowledged.lock().unwrap().is_empty(), "a POST reached 127.0.0.1");
    let endpoint = cluster.nodes[0].grpc.to_string();
    assert!(events(&endpoint).iter().all(|e| e["delivered"] == false));
    assert!(
        cluster.nodes[0].log().contains("is not a public address"),
        "{}",
        cluster.nodes[0].log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_receiver_never_delays_another_tenants_events() {
    let mut cluster = Cluster::new(1, &format!("{TEST_CONFIG}{ALLOW_LOCAL_WEBHOOKS}"));
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    let mut admin = cluster.nodes[0].admin().await;
    let (slow, slow_url) = start_receiver().await;
    let (fast, fast_url) = start_receiver().await;
    for (receiver, slow_one) in [(&slow, true), (&fast, false)] {
        receiver.failing.store(false, Ordering::SeqCst);
        receiver.slow.store(slow_one, Ordering::SeqCst);
    }
    // The slow tenant's events come first, and its receiver takes 30 s to answer each.
    add_tenant(&mut admin, "owl", "127.0.0.0/8").await;
    set_webhook(&mut admin, "owl", &slow_url, &slow).await;
    raise_event(&mut admin, "owl").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    add_tenant(&mut admin, "bear", "10.0.0.0/8").await;
    set_webhook(&mut admin, "bear", &fast_url, &fast).await;
    let raised = Instant::now();
    raise_event(&mut admin, "bear").await;
    wait_until("bear's event at its webhook", || !fast.acknowledged.lock().unwrap().is_empty()).await;
    assert!(
        raised.elapsed() < Duration::from_secs(10),
        "bear waited {:?} on owl's receiver",
        raised.elapsed()
    );
    assert!(slow.acknowledged.lock().unwrap().is_empty(), "owl's receiver is still sleeping");
}
