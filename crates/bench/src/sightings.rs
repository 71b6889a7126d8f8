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
//! Anchor: three `etcd` processes (Debian etcd-server), their own data dirs, WAL fsync on
//! (the default); the same workers through the `etcd-client` crate (gRPC), worker `w` on
//! its own client to member `w % 3`, each a put of a new key with a 256-byte value (about
//! the size of a server record).

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use ratchet_proto::v1::admin_client::AdminClient;
use serde_json::json;

use crate::decide::import_request;
use crate::load::{self, round};
use crate::procs::{add_tenant, free_port, Cluster, Env, Proc};
use crate::Settings;

pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let ratchet = ratchet_side(env, settings).await?;
    let etcd = etcd_side(env, settings).await?;
    let ratio = ratchet.ops_per_sec() / etcd.ops_per_sec();
    Ok(json!({
        "ratio": round(ratio, 3),
        "goal": ">= 2.0",
        "met": ratio >= 2.0,
        "clients": settings.clients,
        "ratchet": { "what": "ImportServer of new servers (acknowledged consensus writes), three deciders", "result": ratchet.summary() },
        "anchor": { "what": "etcd put, three members, etcd-client crate", "etcd_version": etcd_version(), "result": etcd.summary() },
    }))
}

async fn ratchet_side(env: &Env, settings: &Settings) -> anyhow::Result<load::LoadResult> {
    let cluster = Cluster::start(env, "sight", 3, "")?;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    add_tenant(&cluster.nodes[leader], "bench", "10.0.0.0/8").await?;
    for node in &cluster.nodes {
        node.wait_ready(Duration::from_secs(30))?;
    }
    let mut clients = Vec::new();
    for worker in 0..settings.clients {
        clients.push(AdminClient::new(cluster.nodes[worker % 3].channel().await?));
    }
    let clients = Arc::new(clients);
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

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .unwrap_or_default()
}

/// Three etcd members on loopback, killed on drop.
pub struct Etcd {
    _members: Vec<Proc>,
    pub client_urls: Vec<String>,
}

impl Etcd {
    pub fn start(env: &Env) -> anyhow::Result<Etcd> {
        let peers: Vec<_> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<_> = (0..3).map(|_| free_port()).collect();
        let initial = (0..3).map(|i| format!("e{i}=http://{}", peers[i])).collect::<Vec<_>>().join(",");
        let mut members = Vec::new();
        for i in 0..3 {
            let args: Vec<String> = vec![
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                env.work.join(format!("etcd{i}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://{}", clients[i]),
                "--advertise-client-urls".into(),
                format!("http://{}", clients[i]),
                "--listen-peer-urls".into(),
                format!("http://{}", peers[i]),
                "--initial-advertise-peer-urls".into(),
                format!("http://{}", peers[i]),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "ratchet-bench".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            let log = env.work.join(format!("etcd{i}.log"));
            members.push(Proc::spawn(&format!("etcd e{i}"), "etcd".as_ref(), &args, &[], &log)?);
        }
        Ok(Etcd {
            _members: members,
            client_urls: clients.iter().map(|a| format!("http://{a}")).collect(),
        })
    }

    /// A client to member `i`, once that member serves writes.
    pub async fn client(&self, i: usize) -> anyhow::Result<etcd_client::Client> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let mut client = etcd_client::Client::connect([self.client_urls[i].as_str()], None).await?;
                client.put("ratchet-bench/ready", "1", None).await?;
                anyhow::Ok(client)
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(client)) => return Ok(client),
                _ if std::time::Instant::now() > deadline => bail!("etcd member {i} is not serving writes"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

async fn etcd_side(env: &Env, settings: &Settings) -> anyhow::Result<load::LoadResult> {
    let etcd = Etcd::start(env)?;
    let mut clients = Vec::new();
    for worker in 0..settings.clients {
        clients.push(etcd.client(worker % 3).await?.kv_client());
    }
    let clients = Arc::new(clients);
    let value = Arc::new(vec![b'x'; 256]);
    let result = load::run(settings.clients, settings.time_limit(), move |worker, sequence| {
        let mut client = clients[worker].clone();
        let value = value.clone();
        async move {
            client
                .put(format!("servers/new{sequence}.w{worker}"), value.as_slice(), None)
                .await?;
            Ok(())
        }
    })
    .await;
    if result.ops == 0 {
        bail!("no etcd put succeeded: {:?}", result.first_error);
    }
    Ok(result)
}
