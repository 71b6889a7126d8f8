//! `decide_vs_redis_get`: Decide for known servers on one decider, against Redis GET.
//!
//! Ratchet: one single-node decider, a tenant whose connector covers the client address,
//! `decide_servers` servers imported up front (Exchange 2013, first seen a day ago: stage
//! 0, accepted), then `clients` workers, each on its own HTTP/2 connection, ask Decide for
//! a server drawn at random among them, one request outstanding each, for a fixed time.
//! A known server with an unchanged episode is a local read: no consensus.
//!
//! Each worker asks as an edge does, on a `DecideStream` of its own (the edge's client,
//! `ratchet_edge::decide_stream`), then, on the same node, with unary Decide. Ratchet runs
//! twice, with mutual TLS (the deployed configuration, the one the ratio is of) and
//! without; the report gives all four.
//!
//! Anchor: `redis-benchmark -t get -c <clients> -n N -r <servers> --csv` against a local
//! `redis-server --save '' --appendonly no`, keys populated first with `-t set`.

use std::time::Duration;

use anyhow::{bail, Context};
use ratchet_edge::decide_stream::DecideStream;
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::decision_client::DecisionClient;
use serde_json::json;

use crate::load::{self, mix, round, Limit};
use crate::procs::{add_tenant, decide_request, free_port, wait_listening, Certs, Decider, Env, Proc, OUT_OF_DATE_BUILD, QUIET_LOG};
use crate::Settings;

pub const CLIENT_IP: &str = "10.1.2.3";

/// The ratio is Ratchet with mutual TLS on (as deployed) against Redis; the same run
/// without TLS is reported beside it, and what TLS costs.
pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let certs = Certs::make(env)?;
    let (with_tls, unary) = ratchet_side(env, settings, Some(&certs)).await?;
    let (plaintext, plaintext_unary) = ratchet_side(env, settings, None).await?;
    let redis = redis_side(env, settings)?;
    let ratio = with_tls.ops_per_sec() / redis.ops_per_sec;
    Ok(json!({
        "ratio": round(ratio, 3),
        "goal": ">= 1.0",
        "met": ratio >= 1.0,
        "clients": settings.clients,
        "ratchet": {
            "what": format!("Decide for {} known servers, one decider, mutual TLS, on a DecideStream per client", settings.decide_servers),
            "servers": settings.decide_servers,
            "result": with_tls.summary(),
        },
        "ratchet_unary": {
            "what": "the same with unary Decide",
            "result": unary.summary(),
            "ratio": round(unary.ops_per_sec() / redis.ops_per_sec, 3),
        },
        "ratchet_plaintext": {
            "what": "the same without TLS, on a DecideStream per client",
            "result": plaintext.summary(),
            "ratio": round(plaintext.ops_per_sec() / redis.ops_per_sec, 3),
        },
        "ratchet_plaintext_unary": {
            "what": "without TLS, unary Decide",
            "result": plaintext_unary.summary(),
            "ratio": round(plaintext_unary.ops_per_sec() / redis.ops_per_sec, 3),
        },
        "tls_throughput_share": round(with_tls.ops_per_sec() / plaintext.ops_per_sec(), 3),
        "anchor": {
            "what": "redis-benchmark -t get",
            "requests": settings.redis_requests,
            "result": {
                "ops_per_sec": round(redis.ops_per_sec, 1),
                "p50_ms": redis.p50_ms,
                "p99_ms": redis.p99_ms,
            },
        },
    }))
}

/// Imports `count` servers named `srv{i}.bench.local` into `tenant`, `clients` at a time.
/// An import of one out-of-date server of tenant `bench`, first seen at `first_seen`.
pub fn import_request(server_fqdn: String, first_seen: &str) -> pb::ImportServerRequest {
    pb::ImportServerRequest {
        tenant: "bench".into(),
        server_fqdn,
        build: OUT_OF_DATE_BUILD.into(),
        first_seen: first_seen.to_owned(),
    }
}

pub async fn import_servers(node: &Decider, tenant: &str, count: u64, clients: usize) -> anyhow::Result<load::LoadResult> {
    let admin = AdminClient::new(node.channel().await?);
    let first_seen = (chrono::Utc::now() - chrono::TimeDelta::days(1)).to_rfc3339();
    let tenant = tenant.to_owned();
    let result = load::run(clients, Limit::Count(count), move |_, i| {
        let mut admin = admin.clone();
        let request = pb::ImportServerRequest {
            tenant: tenant.clone(),
            ..import_request(format!("srv{i}.bench.local"), &first_seen)
        };
        async move {
            admin.import_server(request).await?;
            Ok(())
        }
    })
    .await;
    if result.errors > 0 {
        bail!("{} of {count} imports failed: {:?}", result.errors, result.first_error);
    }
    Ok(result)
}

/// Decide on one decider, first on streams, then unary.
async fn ratchet_side(env: &Env, settings: &Settings, tls: Option<&Certs>) -> anyhow::Result<(load::LoadResult, load::LoadResult)> {
    let name = if tls.is_some() { "decide-tls" } else { "decide0" };
    let mut node = Decider::new(env, name, "", QUIET_LOG)?;
    if let Some(certs) = tls {
        node = node.with_tls(certs)?;
    }
    let founding = format!("{}={}", node.name, node.grpc);
    node.start(Some(&founding))?;
    node.wait_ready(Duration::from_secs(30))?;
    add_tenant(&node, "bench", "10.0.0.0/8").await?;
    let servers = settings.decide_servers;
    import_servers(&node, "bench", servers, settings.clients).await?;
    let streamed = measure_decide(&node, settings, servers, Ask::Stream).await?;
    let unary = measure_decide(&node, settings, servers, Ask::Unary).await?;
    Ok((streamed, unary))
}

/// How the workers of `measure_decide` ask.
#[derive(Clone, Copy)]
pub enum Ask {
    /// Each on a `DecideStream` of its own, as an edge asks.
    Stream,
    /// A unary Decide per question.
    Unary,
}

/// The deadline of a unary Decide; generous, as errors are counted, not retried.
const UNARY_TIMEOUT: Duration = Duration::from_secs(5);

/// Decide from `CLIENT_IP` (tenant `bench`) for one of the `servers` imported servers
/// `srv{i}.bench.local` at random, `clients` workers for the configured time.
pub async fn measure_decide(node: &Decider, settings: &Settings, servers: u64, ask: Ask) -> anyhow::Result<load::LoadResult> {
    // One connection per client, as redis-benchmark opens one per client.
    let mut clients = Vec::new();
    for _ in 0..settings.clients {
        let client = DecisionClient::new(node.edge_channel().await?);
        clients.push(match ask {
            Ask::Stream => Asker::Stream(DecideStream::new(client)),
            Ask::Unary => Asker::Unary(client),
        });
    }
    let check = clients[0]
        .decide(decide_request(CLIENT_IP, "srv0.bench.local".into(), OUT_OF_DATE_BUILD))
        .await?;
    if check.tenant != "bench" || check.first_seen_unix_ms == 0 {
        bail!("Decide did not see the imported server: {check:?}");
    }
    let clients = std::sync::Arc::new(clients);
    let result = load::run(settings.clients, settings.time_limit(), move |worker, sequence| {
        let clients = clients.clone();
        let server = mix(sequence) % servers;
        let request = decide_request(CLIENT_IP, format!("srv{server}.bench.local"), OUT_OF_DATE_BUILD);
        async move {
            let reply = clients[worker].decide(request).await?;
            if reply.verdict != pb::Verdict::Accept as i32 {
                bail!("unexpected verdict {reply:?}");
            }
            Ok(())
        }
    })
    .await;
    if result.ops == 0 {
        bail!("no Decide succeeded: {:?}", result.first_error);
    }
    Ok(result)
}

enum Asker {
    Stream(DecideStream),
    Unary(DecisionClient<tonic::transport::Channel>),
}

impl Asker {
    async fn decide(&self, request: pb::DecideRequest) -> Result<pb::DecideResponse, tonic::Status> {
        match self {
            Asker::Stream(stream) => stream.decide(request, UNARY_TIMEOUT).await,
            Asker::Unary(client) => Ok(client.clone().decide(request).await?.into_inner()),
        }
    }
}

pub struct RedisResult {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn redis_side(env: &Env, settings: &Settings) -> anyhow::Result<RedisResult> {
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        &port.port().to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .map(String::from)
    .to_vec();
    let _server = Proc::spawn("redis-server", "redis-server".as_ref(), &args, &[], &env.work.join("redis.log"))?;
    wait_listening(port, "redis-server", Duration::from_secs(10))?;
    let keys = settings.decide_servers.to_string();
    let common = [
        "-h",
        "127.0.0.1",
        "-p",
        &port.port().to_string(),
        "-c",
        &settings.clients.to_string(),
        "-r",
        &keys,
    ];
    let populate = std::process::Command::new("redis-benchmark")
        .args(common)
        .args(["-t", "set", "-n", &keys, "-q"])
        .output()
        .context("running redis-benchmark (Debian redis-tools)")?;
    if !populate.status.success() {
        bail!("redis-benchmark -t set failed: {}", String::from_utf8_lossy(&populate.stderr));
    }
    let output = std::process::Command::new("redis-benchmark")
        .args(common)
        .args(["-t", "get", "-n", &settings.redis_requests.to_string(), "--csv"])
        .output()?;
    if !output.status.success() {
        bail!("redis-benchmark -t get failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    parse_redis_csv(&String::from_utf8_lossy(&output.stdout))
}

/// redis-benchmark's `--csv`: a header line ("test","rps",...,"p50_latency_ms",...,
/// "p99_latency_ms",...) and one line per test.
fn parse_redis_csv(csv: &str) -> anyhow::Result<RedisResult> {
    let rows: Vec<Vec<String>> = csv
        .lines()
        .map(|l| l.split(',').map(|f| f.trim_matches('"').to_owned()).collect())
        .collect();
    let header = rows
        .iter()
        .find(|r| r.first().is_some_and(|f| f == "test"))
        .context("no CSV header")?;
    let get = rows.iter().find(|r| r.first().is_some_and(|f| f == "GET")).context("no GET row")?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let index = header.iter().position(|h| h == name).with_context(|| format!("no {name} column"))?;
        Ok(get.get(index).context("short row")?.parse()?)
    };
    Ok(RedisResult {
        ops_per_sec: field("rps")?,
        p50_ms: field("p50_latency_ms")?,
        p99_ms: field("p99_latency_ms")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"GET\",\"98039.22\",\"0.280\",\"0.072\",\"0.271\",\"0.391\",\"0.535\",\"1.167\"\n";
        let parsed = super::parse_redis_csv(csv).unwrap();
        assert_eq!(parsed.ops_per_sec, 98039.22);
        assert_eq!(parsed.p50_ms, 0.271);
        assert_eq!(parsed.p99_ms, 0.535);
    }
}
