//! Notifications end to end: events raised by commands and by the clock, delivered by the
//! leader to a webhook at least once, and seen exactly once after de-duplication, also
//! when the leader is killed between an event and its delivery.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{TimeDelta, Utc};
use common::cluster::{add_tenant, Cluster, TEST_CONFIG};
use ratchet_proto::v1 as pb;
use serde_json::Value;

/// A webhook receiver that records every event it acknowledged, and can be made to fail.
#[derive(Clone, Default)]
struct Receiver {
    failing: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(receiver): State<Receiver>, Json(event): Json<Value>) -> StatusCode {
    if receiver.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    receiver.acknowledged.lock().unwrap().push(event);
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
    let mut cluster = Cluster::new(3, &format!("{TEST_CONFIG}notify_scan_ms = 300\n"));
    cluster.found(&[0, 1, 2], Duration::ZERO);
    let leader = cluster.leader_index().await;
    let (receiver, url) = start_receiver().await;
    let mut admin = cluster.nodes[(leader + 1) % 3].admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.0/8").await;
    admin
        .set_webhook(pb::SetWebhookRequest {
            tenant: "bear".into(),
            url,
        })
        .await
        .unwrap();

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
        })
        .await
        .unwrap();
    admin.end_pause(pb::EndPauseRequest { tenant: "bear".into() }).await.unwrap();

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

    // Later scans raise nothing new: each notice once per server episode.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(events(&survivor).len(), raised_ids.len());
}
