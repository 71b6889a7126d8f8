//! `bytes_per_server`, snapshot and restart times, at `scale_servers` servers (1,000,000 in
//! the full run).
//!
//! - Memory: one single-node decider (default config: a snapshot every 20,000 entries;
//!   the smoke run snapshots every 500, so that it still exercises the snapshot path);
//!   VmRSS after the tenant is added, then `scale_servers` ImportServer calls, `clients`
//!   at a time, then VmRSS again once imports are done (after a short settle). Bytes per
//!   server = (after - before) ÷ servers. The data directory's size is reported too.
//! - Snapshot build: the time between openraft's "build snapshot" and the store's "built
//!   snapshot" log lines of the last snapshot the node built (the snapshot policy builds
//!   them as the log grows), with the snapshot's size.
//! - Snapshot send and install: a second decider joins as a learner (Cluster.AddLearner);
//!   the log before the last snapshot is purged, so it catches up from the snapshot. Timed
//!   from the call until the learner has applied the leader's last index.
//! - Restart: kill -9 of the (single) voter, restart on the same data directory, timed
//!   until its /readyz answers 200.

use std::time::{Duration, Instant};

use anyhow::Context;
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::cluster_client::ClusterClient;
use serde_json::json;

use crate::decide::import_servers;
use crate::load::round;
use crate::procs::{add_tenant, du, Decider, Env};
use crate::Settings;

/// Also logs openraft's snapshot worker, for the build time.
const SNAPSHOT_LOG: &str = "info,openraft=warn,openraft::core::sm=info,h2=warn,tower=warn";

pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let servers = settings.scale_servers;
    let mut node = Decider::new(env, "scale0", settings.scale_config, SNAPSHOT_LOG)?;
    let founding = format!("{}={}", node.name, node.grpc);
    node.start(Some(&founding))?;
    node.wait_ready(Duration::from_secs(30))?;
    add_tenant(&node, "bench", "10.0.0.0/8").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = node.proc.as_ref().context("running")?.rss_kib()?;
    // More clients than elsewhere: imports are writes, and the leader batches them.
    let imported = import_servers(&node, "bench", servers, settings.clients * 2).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = node.proc.as_ref().context("running")?.rss_kib()?;
    let bytes_per_server = (rss_after.saturating_sub(rss_before) * 1024) as f64 / servers as f64;
    let disk_bytes = du(&node.data_dir);
    let (build_ms, snapshot_bytes) = last_snapshot_build(&std::fs::read_to_string(&node.log)?);

    let catchup_ms = learner_catchup(env, &node).await?;

    node.kill9();
    let restarted = Instant::now();
    node.start(None)?;
    node.wait_ready(Duration::from_secs(600))?;
    let restart_ms = restarted.elapsed().as_secs_f64() * 1000.0;

    Ok(json!({
        "value": round(bytes_per_server, 1),
        "goal": "<= 300",
        "met": bytes_per_server <= 300.0,
        "servers": servers,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "import": { "clients": settings.clients * 2, "result": imported.summary() },
        "disk_bytes": disk_bytes,
        "disk_bytes_per_server": round(disk_bytes as f64 / servers as f64, 1),
        "snapshot_build_ms": build_ms.map(|ms| round(ms, 1)),
        "snapshot_bytes": snapshot_bytes,
        "learner_catchup_ms": round(catchup_ms, 1),
        "restart_ms": round(restart_ms, 1),
        "anchor": "none run: the goal (300 bytes per server) is the reference",
    }))
}

/// (build time ms, bytes) of the last snapshot a node's JSON log shows it built.
fn last_snapshot_build(log: &str) -> (Option<f64>, Option<u64>) {
    let mut begun: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    let mut last = (None, None);
    for line in log.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let message = entry["fields"]["message"].as_str().unwrap_or_default();
        let Some(at) = entry["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        if message.ends_with(": build snapshot") {
            begun = Some(at);
        } else if message == "built snapshot" {
            let ms = begun.take().map(|b| (at - b).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            last = (ms, entry["fields"]["bytes"].as_u64());
        }
    }
    last
}

/// Adds a fresh node as a learner; ms until it has applied the leader's last log index.
async fn learner_catchup(env: &Env, leader: &Decider) -> anyhow::Result<f64> {
    // Logs its "installed snapshot" line, to see the receive apart from the install.
    let mut learner = Decider::new(env, "scale1", "", SNAPSHOT_LOG)?;
    learner.start(None)?;
    crate::procs::wait_listening(learner.grpc, "learner", Duration::from_secs(30))?;
    let target = leader.status().await.context("leader status")?.last_log_index;
    let started = Instant::now();
    let mut cluster = ClusterClient::new(leader.channel().await?);
    cluster
        .add_learner(pb::AddLearnerRequest {
            name: learner.name.clone(),
            address: learner.grpc.to_string(),
        })
        .await?;
    let deadline = started + Duration::from_secs(900);
    while learner.status().await.is_none_or(|s| s.last_applied_index < target) {
        anyhow::ensure!(Instant::now() < deadline, "the learner did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}
