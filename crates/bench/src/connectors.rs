//! `decide_100k_connectors_vs_10`: Decide throughput when the decider holds many tenants'
//! connectors, over the same with 10.
//!
//! Two single-node deciders in turn (plaintext gRPC, so that the figure is attribution's
//! share of Decide, not TLS's), each with tenant `bench` (connector 10.0.0.0/8, covering
//! the client address) and `count - 1` more tenants, each with one /28 connector inside
//! 10.128.0.0/9 (nested in `bench`'s range, so a longest-prefix match has to look past
//! them). The tenants are created through the admin API (AddTenant, AddConnector),
//! `clients` at a time. Then `decide_connector_servers` servers are imported for `bench`
//! and `clients` workers ask Decide for one at random, as in `decide_vs_redis_get`. The
//! ratio is the many-connector run's Decide/s over the 10-connector run's. Both deciders
//! are configured not to snapshot during the run (see `CONFIG`).
//!
//! The many-connector count is 100,000 by default; `--many-connectors` sets it. The result
//! records the count used.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::bail;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::decision_client::DecisionClient;
use serde_json::json;

use crate::decide::{import_servers, measure_decide, Ask};
use crate::load::{self, round, Limit};
use crate::procs::{add_tenant, add_tenant_via, decide_request, http_get, metric_sum, Decider, Env, OUT_OF_DATE_BUILD, QUIET_LOG};
use crate::Settings;

const FEW: u64 = 10;

/// Creating N tenants and connectors takes 2 N log entries: without this a snapshot of the
/// many-tenant state (every 20,000 entries by default) can fall in the measured window
/// of one arm and not the other.
const CONFIG: &str = "snapshot_every_entries = 10000000\n";

pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let many = settings.many_connectors.max(FEW);
    let (few_setup, few, few_server_us) = side(env, settings, FEW).await?;
    let (many_setup, many_result, many_server_us) = side(env, settings, many).await?;
    let ratio = many_result.ops_per_sec() / few.ops_per_sec();
    Ok(json!({
        "ratio": round(ratio, 3),
        "goal": ">= 0.9",
        "met": ratio >= 0.9,
        "clients": settings.clients,
        "servers": settings.decide_connector_servers,
        "many": {
            "what": format!("Decide with {many} connectors (one per tenant), one decider, plaintext"),
            "connectors": many,
            "setup_secs": round(many_setup, 1),
            "result": many_result.summary(),
            "server_decide_mean_us": round(many_server_us, 1),
        },
        "few": {
            "what": format!("the same with {FEW} connectors"),
            "connectors": FEW,
            "setup_secs": round(few_setup, 1),
            "result": few.summary(),
            "server_decide_mean_us": round(few_server_us, 1),
        },
    }))
}

/// The /28 of extra tenant number `i`: 10.128.0.0 + 16 i, inside 10.128.0.0/9 (distinct
/// for i < 2^19). Here they count from 1: tenant `bench` is the first.
pub fn extra_cidr(i: u64) -> (Ipv4Addr, String) {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + 16 * u32::try_from(i).expect("fewer than 2^28 tenants");
    let ip = Ipv4Addr::from(base);
    (ip, format!("{ip}/28"))
}

/// Starts a decider with `count` connectors and measures Decide on it; returns the seconds
/// the tenants and connectors took to create, the load result, and the mean time the
/// decider spent in Decide (its `ratchet_decider_decide_duration_seconds`, microseconds).
async fn side(env: &Env, settings: &Settings, count: u64) -> anyhow::Result<(f64, load::LoadResult, f64)> {
    let mut node = Decider::new(env, &format!("conn{count}"), CONFIG, QUIET_LOG)?;
    let founding = format!("{}={}", node.name, node.grpc);
    node.start(Some(&founding))?;
    node.wait_ready(Duration::from_secs(30))?;
    let started = Instant::now();
    add_tenant(&node, "bench", "10.0.0.0/8").await?;
    let admin = AdminClient::new(node.channel().await?);
    let created = load::run(settings.clients, Limit::Count(count - 1), move |_, i| {
        let mut admin = admin.clone();
        let tenant = format!("t{}", i + 1);
        let (_, cidr) = extra_cidr(i + 1);
        async move { add_tenant_via(&mut admin, &tenant, &cidr).await }
    })
    .await;
    if created.errors > 0 {
        bail!("{} of {} tenants failed: {:?}", created.errors, count - 1, created.first_error);
    }
    let setup = started.elapsed().as_secs_f64();
    eprintln!("ratchet-bench: {count} connectors created in {setup:.1} s");
    // The last tenant's connector attributes its own range: the decider has them all.
    if count > 1 {
        let (ip, _) = extra_cidr(count - 1);
        let reply = DecisionClient::new(node.edge_channel().await?)
            .decide(decide_request(
                &(Ipv4Addr::from(u32::from(ip) + 1)).to_string(),
                "probe.bench.local".into(),
                OUT_OF_DATE_BUILD,
            ))
            .await?
            .into_inner();
        if reply.tenant != format!("t{}", count - 1) {
            bail!("the decider does not attribute the last connector: {reply:?}");
        }
    }
    let servers = settings.decide_connector_servers;
    import_servers(&node, "bench", servers, settings.clients).await?;
    let result = measure_decide(&node, settings, servers, Ask::Stream).await?;
    let metrics = http_get(node.http, "/metrics").map(|(_, body)| body).unwrap_or_default();
    let server_us = 1e6 * metric_sum(&metrics, "ratchet_decider_decide_duration_seconds_sum")
        / metric_sum(&metrics, "ratchet_decider_decide_duration_seconds_count").max(1.0);
    node.terminate().await?;
    Ok((setup, result, server_us))
}
