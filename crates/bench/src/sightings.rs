//! `sightings_vs_etcd_put`: acknowledged server writes (consensus, fsync on) on a
//! three-node group, against puts on a three-node etcd, both on loopback, same load
//! generator.
//!
//! Ratchet: three deciders with the default config; `clients` workers, worker `w` on its own
//! connection to node `w % 3` (as operators spread over deciders; followers forward to the
//! leader), each an `Admin.ImportServer` of a server never seen before: one Raft write (log
//! fsynced on a majority) before it is answered. (A Decide no longer waits for its first
//! sighting to commit: sightings are committed in the background, many per entry; the
//! import is the write that is acknowledged only once durable, as an etcd put is.)
//!
//! Anchor: puts of new keys on a three-node etcd, from the same workers (see `etcd`).

use std::sync::Arc;

use anyhow::bail;
use serde_json::json;

use crate::decide::import_request;
use crate::etcd;
use crate::load::{self, round};
use crate::procs::{add_tenant, Cluster, Env};
use crate::Settings;

pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let ratchet = ratchet_side(env, settings).await?;
    let puts = etcd::measure_puts(env, settings).await?;
    let ratio = ratchet.ops_per_sec() / puts.ops_per_sec();
    Ok(json!({
        "ratio": round(ratio, 3),
        "goal": ">= 2.0",
        "met": ratio >= 2.0,
        "clients": settings.clients,
        "ratchet": { "what": "ImportServer of new servers (acknowledged consensus writes), three deciders", "result": ratchet.summary() },
        "anchor": etcd::anchor(&puts),
    }))
}

async fn ratchet_side(env: &Env, settings: &Settings) -> anyhow::Result<load::LoadResult> {
    let (cluster, leader) = Cluster::start_serving(env, "sight", 3, "").await?;
    add_tenant(&cluster.nodes[leader], "bench", "10.0.0.0/8").await?;
    let clients = Arc::new(cluster.spread_admin_clients(settings.clients).await?);
    let first_seen = (chrono::Utc::now() - chrono::TimeDelta::days(1)).to_rfc3339();
    let result = load::run(settings.clients, settings.time_limit(), move |worker, sequence| {
        let mut client = clients[worker].clone();
        let request = import_request(format!("new{sequence}.w{worker}.bench.local"), &first_seen);
        async move {
            client.import_server(request).await?;
            Ok(())
        }
    })
    .await;
    if result.ops == 0 {
        bail!("no write succeeded: {:?}", result.first_error);
    }
    Ok(result)
}
