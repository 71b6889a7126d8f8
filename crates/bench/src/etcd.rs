//! The etcd anchor of the consensus-write benchmarks (`sightings_vs_etcd_put`,
//! `admin_writes_100k_tenants`): three `etcd` processes (Debian etcd-server) on loopback,
//! their own data dirs, WAL fsync on (the default), driven through the `etcd-client` crate
//! (gRPC) by the same load generator as Ratchet: `clients` workers, worker `w` on its own
//! client to member `w % 3`, each a put of a new key with a 256-byte value (about the size
//! of a server record), for the benchmarks' fixed duration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use crate::load;
use crate::procs::{free_port, Env, Proc};
use crate::Settings;

/// The `anchor` object of a result: what was measured, etcd's version, and the figures.
pub fn anchor(puts: &load::LoadResult) -> serde_json::Value {
    json!({ "what": "etcd put, three members, etcd-client crate", "etcd_version": version(), "result": puts.summary() })
}

/// `etcd --version`'s first line.
fn version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .unwrap_or_default()
}

/// Three etcd members on loopback, killed on drop.
struct Etcd {
    _members: Vec<Proc>,
    client_urls: Vec<String>,
}

impl Etcd {
    fn start(env: &Env) -> anyhow::Result<Etcd> {
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
    async fn client(&self, i: usize) -> anyhow::Result<etcd_client::Client> {
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

/// Puts of new keys (256-byte values) for `settings.time_limit()`, from `settings.clients`
/// workers, worker `w` on its own client to member `w % 3`.
pub async fn measure_puts(env: &Env, settings: &Settings) -> anyhow::Result<load::LoadResult> {
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
