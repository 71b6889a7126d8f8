//! `ratchet decider`: one node of the decision service.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use ratchet_decider::Clock;
use ratchet_decider::{Decider, DeciderConfig, DeciderOptions};

use crate::listen::{bind, bind_optional};
use crate::tls_args::TlsArgs;

#[derive(clap::Args)]
pub struct DeciderArgs {
    /// This node's name, unique in the group (e.g. the pod name).
    #[arg(long)]
    name: String,
    /// Where this node keeps its identity, Raft log and state.
    #[arg(long)]
    data_dir: PathBuf,
    /// gRPC listen address, for edges, `ratchet ctl` and the other deciders.
    #[arg(long)]
    listen: SocketAddr,
    /// The address other deciders reach this one at; defaults to this node's
    /// `--initial-cluster` entry, else `--listen`.
    #[arg(long)]
    advertise: Option<String>,
    /// HTTP listen address for /healthz, /readyz, /metrics and the report pages.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// The founding members, NAME=ADDR,NAME=ADDR,... (the same list on every one of them).
    #[arg(long, value_delimiter = ',', value_parser = parse_member)]
    initial_cluster: Vec<(String, String)>,
    /// Tunables (TOML): Raft timeouts, snapshot interval, counter flush interval.
    #[arg(long)]
    config: Option<PathBuf>,
    /// TEST ONLY: shift this node's clock by this many seconds (may be negative), to reach
    /// a given minute of the hour or age in tests. Never set it in production.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, hide = true)]
    test_clock_offset_secs: i64,
    #[command(flatten)]
    tls: TlsArgs,
}

pub fn parse_member(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, address)) if !name.is_empty() && !address.is_empty() => Ok((name.to_owned(), address.to_owned())),
        _ => Err(format!("{text:?} is not NAME=ADDR")),
    }
}

pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<DeciderConfig> {
    let Some(path) = path else { return Ok(DeciderConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
    DeciderConfig::from_toml(&text).with_context(|| format!("--config {}", path.display()))
}

pub async fn run(args: DeciderArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_ref())?;
    let advertise = args
        .advertise
        .or_else(|| {
            args.initial_cluster
                .iter()
                .find(|(name, _)| *name == args.name)
                .map(|(_, address)| address.clone())
        })
        .unwrap_or_else(|| args.listen.to_string());
    let tls = args.tls.files()?;
    args.tls.check_plaintext_listen("--listen", args.listen)?;
    let grpc = bind("--listen", args.listen).await?;
    let http = bind_optional("--http", args.http).await?;
    let decider = Decider::start(DeciderOptions {
        name: args.name,
        data_dir: args.data_dir,
        grpc,
        advertise,
        http,
        initial_cluster: args.initial_cluster,
        config,
        clock: Clock::shifted(chrono::Duration::seconds(args.test_clock_offset_secs)),
        tls,
    })
    .await?;
    println!(
        "decider {} (id {}) listening on {} (gRPC){}",
        decider.identity.name,
        decider.identity.id,
        decider.grpc_addr,
        match decider.http_addr {
            Some(address) => format!(", {address} (HTTP)"),
            None => String::new(),
        }
    );
    // On SIGTERM: commit what only this node holds (queued sightings, counts), then stop
    // Raft; the log and state are durable already.
    decider.run_until(crate::signal::terminated()).await
}
