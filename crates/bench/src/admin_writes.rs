//! `admin_writes_100k_tenants`: tenant and connector creations per second on a three-node
//! group while it grows from 0 to `admin_tenants` tenants (100,000 by default), against
//! etcd puts at the same concurrency, and whether that rate stays flat as the count grows.
//!
//! Ratchet: three deciders with the default config (snapshots included: the state grows
//! while it is measured). `clients` workers, worker `w` on its own connection to node
//! `w % 3`, as in `sightings_vs_etcd_put`: spread rather than all at the leader, because
//! operators' `ratchet ctl` talks to whichever decider it is given (followers forward
//! writes to the leader) and the etcd anchor spreads its workers over its members the
//! same way, so both sides pay their forwarding. One creation is `Admin.AddTenant` of a
//! new tenant `t{i}` then `Admin.AddConnector` of its own /28 (the ranges of
//! `decide_100k_connectors_vs_10`): two Raft writes, done once both are acknowledged.
//! Workers take the next `i` until all N are created; no warm-up.
//!
//! Flatness: the acknowledgement time of every creation is recorded. Each tenth of the
//! growth (tenants 0 to N/10, N/10 to 2N/10, ...) gets a rate, its creations over the time
//! from the previous tenth's last acknowledgement to its own last; `flatness` is the last
//! tenth's rate over the first's (1.0 is flat, below 1.0 falls as the count grows).
//! Creations are acknowledged in waves (many per Raft entry), so a tenth means something
//! only when it holds many times `clients` creations: not in the smoke run (200 tenants,
//! 20 a tenth, for 50 workers), where `flatness` is noise. Afterwards the leader's
//! ListTenants must list exactly N tenants, each with one connector.
//!
//! Anchor: etcd puts of new keys from as many workers, for the benchmarks' fixed duration
//! (see `etcd`). The ratio is creations/s over the whole growth over puts/s; a creation
//! being two writes, 0.5 is write-for-write parity with etcd.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use serde_json::json;

use crate::connectors::extra_cidr;
use crate::etcd;
use crate::load::{self, round, Limit};
use crate::procs::{add_tenant_via, Cluster, Decider, Env};
use crate::Settings;

const GOAL: f64 = 0.5;
/// "Flat, not falling as the count grows": the last tenth's rate within a tenth of the
/// first's (the issue names no number; this is ours).
const FLAT: f64 = 0.9;

/// The growth is split in this many parts, each of which must create at least one tenant.
const PARTS: usize = 10;

pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let tenants = settings.admin_tenants.max(PARTS as u64);
    let (created, tenths) = ratchet_side(env, settings, tenants).await?;
    let puts = etcd::measure_puts(env, settings).await?;
    let ratio = created.ops_per_sec() / puts.ops_per_sec();
    let flatness = tenths[PARTS - 1].creations_per_sec() / tenths[0].creations_per_sec();
    Ok(json!({
        "ratio": round(ratio, 3),
        "goal": format!(">= {GOAL}, flatness >= {FLAT}"),
        "met": ratio >= GOAL && flatness >= FLAT,
        "flatness": round(flatness, 3),
        "clients": settings.clients,
        "tenants": tenants,
        "tenths": tenths.iter().map(Tenth::summary).collect::<Vec<_>>(),
        "ratchet": {
            "what": format!(
                "AddTenant then AddConnector (a /28 each) for {tenants} new tenants, three deciders, workers spread over them"
            ),
            "result": created.summary(),
        },
        "anchor": etcd::anchor(&puts),
    }))
}

/// Creates the tenants on a new three-node group; returns the creations (one operation
/// each) and the growth's tenths, once the leader lists them all.
async fn ratchet_side(env: &Env, settings: &Settings, tenants: u64) -> anyhow::Result<(load::LoadResult, Vec<Tenth>)> {
    let (cluster, _) = Cluster::start_serving(env, "admin", 3, "").await?;
    let clients = Arc::new(cluster.spread_admin_clients(settings.clients).await?);
    let acknowledged = Arc::new(Acknowledgements::new(usize::try_from(tenants)?));
    let recorder = acknowledged.clone();
    let created = load::run(settings.clients, Limit::Count(tenants), move |worker, i| {
        let mut admin = clients[worker].clone();
        let recorder = recorder.clone();
        let (_, cidr) = extra_cidr(i);
        async move {
            add_tenant_via(&mut admin, &format!("t{i}"), &cidr).await?;
            recorder.record();
            Ok(())
        }
    })
    .await;
    if created.errors > 0 {
        bail!("{} of {tenants} creations failed: {:?}", created.errors, created.first_error);
    }
    let tenths = tenths(&acknowledged.sorted());
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let listed = list_tenants(&cluster.nodes[leader]).await?;
    ensure!(
        listed.len() as u64 == tenants,
        "the leader lists {} tenants, not {tenants}",
        listed.len()
    );
    if let Some(odd) = listed.iter().find(|t| t.connectors != 1) {
        bail!("tenant {} has {} connectors, not 1", odd.name, odd.connectors);
    }
    Ok((created, tenths))
}

/// Every tenant `node` lists (all in one reply: ListTenants has no paging).
async fn list_tenants(node: &Decider) -> anyhow::Result<Vec<pb::TenantSummary>> {
    let mut admin = AdminClient::new(node.channel().await?).max_decoding_message_size(usize::MAX);
    Ok(admin.list_tenants(pb::ListTenantsRequest {}).await?.into_inner().tenants)
}

/// When each creation was acknowledged, measured from the start of the run; prints
/// progress at every tenth.
struct Acknowledgements {
    started: Instant,
    expected: usize,
    times: Mutex<Vec<Duration>>,
}

impl Acknowledgements {
    fn new(expected: usize) -> Acknowledgements {
        Acknowledgements {
            started: Instant::now(),
            expected,
            times: Mutex::new(Vec::with_capacity(expected)),
        }
    }

    fn record(&self) {
        let elapsed = self.started.elapsed();
        let mut times = self.times.lock().expect("not poisoned");
        times.push(elapsed);
        let done = times.len();
        if (1..=PARTS).any(|part| part_end(part, self.expected) == done) {
            eprintln!(
                "ratchet-bench: {done} of {} tenants created in {:.1} s",
                self.expected,
                elapsed.as_secs_f64()
            );
        }
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut times = self.times.lock().expect("not poisoned").clone();
        times.sort_unstable();
        times
    }
}

/// One tenth of the growth: the tenants from the `from`-th to the `to`-th acknowledged,
/// over `secs`.
#[derive(Debug, PartialEq)]
struct Tenth {
    from: usize,
    to: usize,
    secs: f64,
}

impl Tenth {
    fn creations_per_sec(&self) -> f64 {
        (self.to - self.from) as f64 / self.secs.max(1e-9)
    }

    fn summary(&self) -> serde_json::Value {
        json!({
            "from": self.from,
            "to": self.to,
            "secs": round(self.secs, 3),
            "creations_per_sec": round(self.creations_per_sec(), 1),
        })
    }
}

/// The growth in `PARTS` parts by order of acknowledgement; `acknowledged` is sorted and
/// holds at least `PARTS` times.
fn tenths(acknowledged: &[Duration]) -> Vec<Tenth> {
    (0..PARTS)
        .map(|part| {
            let (from, to) = (part_end(part, acknowledged.len()), part_end(part + 1, acknowledged.len()));
            let begun = if from == 0 { Duration::ZERO } else { acknowledged[from - 1] };
            Tenth {
                from,
                to,
                secs: (acknowledged[to - 1] - begun).as_secs_f64(),
            }
        })
        .collect()
}

/// How many of `total` creations the first `parts` parts of the growth hold.
fn part_end(parts: usize, total: usize) -> usize {
    parts * total / PARTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenth_is_timed_from_the_last_acknowledgement_before_it() {
        // 20 creations, one a second for the first ten, one every two seconds after.
        let mut at = Vec::new();
        let mut now = Duration::ZERO;
        for i in 0..20 {
            now += Duration::from_secs(if i < 10 { 1 } else { 2 });
            at.push(now);
        }
        let tenths = tenths(&at);
        assert_eq!(tenths.len(), 10);
        assert_eq!(tenths[0], Tenth { from: 0, to: 2, secs: 2.0 });
        assert_eq!(
            tenths[9],
            Tenth {
                from: 18,
                to: 20,
                secs: 4.0
            }
        );
        assert_eq!(tenths[0].creations_per_sec(), 1.0);
        assert_eq!(tenths[9].creations_per_sec(), 0.5);
    }

    #[test]
    fn fewer_creations_than_a_multiple_of_ten_still_cover_them_all() {
        let at: Vec<_> = (1..=13).map(Duration::from_secs).collect();
        let tenths = tenths(&at);
        assert_eq!(tenths.first().map(|t| t.from), Some(0));
        assert_eq!(tenths.last().map(|t| t.to), Some(13));
        assert!(tenths.windows(2).all(|w| w[0].to == w[1].from && w[0].to > w[0].from));
    }
}
