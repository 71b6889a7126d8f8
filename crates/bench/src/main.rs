//! `ratchet-bench`: runs every benchmark of Ratchet against its anchor, on this machine,
//! in one run, and writes `results.json` and `BENCHMARKS.md`. `bench/run.sh` builds the
//! binaries and calls it; `--smoke` shrinks every count and duration for CI.
//!
//! One module per benchmark, each saying at its top what it measures and how:
//! `decide` (vs Redis GET), `sightings` (vs etcd put), `smtp` (edge vs smtp-sink),
//! `scale` (memory per server, snapshot, restart), `failover`, `connectors` (Decide with
//! many tenants' connectors against few), `milter` (Postfix with the milter vs alone) and
//! `admin_writes` (creating 100,000 tenants and connectors vs etcd put). `etcd` is the
//! etcd anchor that `sightings` and `admin_writes` share.

mod admin_writes;
mod connectors;
mod decide;
mod etcd;
mod failover;
mod load;
mod milter;
// The private Postfix instance of the end-to-end tests, for `milter`.
#[allow(dead_code)]
#[path = "../../../tests/common/postfix.rs"]
mod postfix;
mod procs;
mod report;
mod scale;
mod sightings;
mod smtp;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(name = "ratchet-bench", about = "Benchmarks Ratchet side by side with Redis, etcd and smtp-sink")]
struct Args {
    /// The `ratchet` binary to benchmark.
    #[arg(long)]
    ratchet: PathBuf,
    /// Where results.json and BENCHMARKS.md are written.
    #[arg(long)]
    out: PathBuf,
    /// Tiny counts and durations: checks that every benchmark runs, for CI.
    #[arg(long)]
    smoke: bool,
    /// Run only these benchmarks (decide, sightings, smtp, scale, failover, connectors, milter,
    /// admin); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Servers to import for `bytes_per_server` (default: 1,000,000; smoke: 2,000).
    #[arg(long)]
    scale_servers: Option<u64>,
    /// Connectors (one per tenant) for `decide_100k_connectors_vs_10` (default: 100,000;
    /// smoke: 50).
    #[arg(long)]
    many_connectors: Option<u64>,
    /// Tenants (each with one connector) to create for `admin_writes_100k_tenants`
    /// (default: 100,000; smoke: 200; at least 10).
    #[arg(long)]
    admin_tenants: Option<u64>,
    /// Keep each benchmark's directory (data directories and logs) and print where; by
    /// default only a failed benchmark's is kept.
    #[arg(long)]
    keep_work: bool,
}

/// Sizes and durations of one run.
pub struct Settings {
    pub smoke: bool,
    /// Concurrent clients for the decide and sightings benchmarks (and their anchors).
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub decide_servers: u64,
    /// Tenants with one connector each in the many-connector run of `connectors`.
    pub many_connectors: u64,
    /// Servers imported for the `connectors` benchmark's Decide.
    pub decide_connector_servers: u64,
    /// Tenants (each with one connector) created by `admin_writes`.
    pub admin_tenants: u64,
    pub redis_requests: u64,
    pub smtp_messages: u64,
    pub smtp_sessions: u64,
    pub probe_messages: u64,
    pub scale_servers: u64,
    pub scale_config: &'static str,
    pub failover_trials: usize,
}

impl Settings {
    fn new(smoke: bool) -> Settings {
        if smoke {
            Settings {
                smoke,
                clients: 50,
                warmup: Duration::from_millis(200),
                measure: Duration::from_secs(1),
                decide_servers: 500,
                many_connectors: 50,
                decide_connector_servers: 50,
                admin_tenants: 200,
                redis_requests: 20_000,
                smtp_messages: 200,
                smtp_sessions: 20,
                probe_messages: 20,
                scale_servers: 2_000,
                scale_config: "snapshot_every_entries = 500\nkeep_entries_after_snapshot = 100\n",
                failover_trials: 1,
            }
        } else {
            Settings {
                smoke,
                clients: 50,
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(15),
                decide_servers: 10_000,
                many_connectors: 100_000,
                decide_connector_servers: 1_000,
                admin_tenants: 100_000,
                redis_requests: 1_000_000,
                smtp_messages: 20_000,
                smtp_sessions: 20,
                probe_messages: 500,
                scale_servers: 1_000_000,
                scale_config: "",
                failover_trials: 5,
            }
        }
    }

    pub fn time_limit(&self) -> load::Limit {
        load::Limit::Time {
            warmup: self.warmup,
            measure: self.measure,
        }
    }
}

pub const BENCHMARKS: [(&str, &str); 8] = [
    ("decide", "decide_vs_redis_get"),
    ("sightings", "sightings_vs_etcd_put"),
    ("smtp", "edge_vs_smtp_sink"),
    ("scale", "bytes_per_server"),
    ("failover", "failover_ms"),
    ("connectors", "decide_100k_connectors_vs_10"),
    ("milter", "milter_vs_postfix_alone"),
    ("admin", "admin_writes_100k_tenants"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::new(args.smoke);
    if let Some(servers) = args.scale_servers {
        settings.scale_servers = servers;
    }
    if let Some(connectors) = args.many_connectors {
        settings.many_connectors = connectors;
    }
    if let Some(tenants) = args.admin_tenants {
        settings.admin_tenants = tenants;
    }
    std::fs::create_dir_all(&args.out)?;
    let ratchet = std::fs::canonicalize(&args.ratchet)?;
    let mut results = serde_json::Map::new();
    let mut failed = Vec::new();
    for (name, key) in BENCHMARKS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        // A fresh directory per benchmark: data dirs and logs, removed unless it failed.
        let work = tempfile::Builder::new().prefix(&format!("ratchet-bench-{name}-")).tempdir()?;
        let env = procs::Env {
            ratchet: ratchet.clone(),
            work: work.path().to_owned(),
        };
        eprintln!("ratchet-bench: {key} ...");
        let started = Instant::now();
        let outcome = match name {
            "decide" => decide::run(&env, &settings).await,
            "sightings" => sightings::run(&env, &settings).await,
            "smtp" => smtp::run(&env, &settings).await,
            "scale" => scale::run(&env, &settings).await,
            "failover" => failover::run(&env, &settings).await,
            "connectors" => connectors::run(&env, &settings).await,
            "milter" => milter::run(&env, &settings).await,
            "admin" => admin_writes::run(&env, &settings).await,
            _ => unreachable!(),
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(mut value) => {
                value["bench_secs"] = serde_json::json!(load::round(secs, 1));
                eprintln!("ratchet-bench: {key} done in {secs:.1} s: {value}");
                if args.keep_work {
                    eprintln!("ratchet-bench: {key}: logs and data kept in {}", work.keep().display());
                }
                results.insert(key.to_owned(), value);
            }
            Err(error) => {
                let kept = work.keep();
                eprintln!(
                    "ratchet-bench: {key} FAILED after {secs:.1} s: {error:#} (logs in {})",
                    kept.display()
                );
                results.insert(key.to_owned(), serde_json::json!({ "error": format!("{error:#}") }));
                failed.push(key);
            }
        }
    }
    report::write(&args.out, &settings, serde_json::Value::Object(results))?;
    if !failed.is_empty() {
        anyhow::bail!("benchmarks failed: {}", failed.join(", "));
    }
    Ok(())
}
