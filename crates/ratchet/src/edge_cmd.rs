//! `ratchet edge`: one stateless SMTP edge.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use ratchet_edge::EdgeConfig;
use tokio::net::TcpListener;

use crate::signal::terminated;

#[derive(clap::Args)]
pub struct EdgeArgs {
    /// SMTP listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// Deciders, host:port,host:port,...; a host name may resolve to several (a headless Service).
    #[arg(long)]
    deciders: String,
    /// Where accepted mail is relayed, host:port.
    #[arg(long)]
    next_hop: String,
    /// HTTP listen address for /healthz, /readyz and /metrics.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Edge settings (TOML): limits, timeouts, decide deadline; flags win over the file.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => EdgeConfig::load(path).with_context(|| format!("--config {}", path.display()))?,
        None => EdgeConfig::default(),
    };
    config.deciders = EdgeConfig::parse_address_list(&args.deciders);
    config.next_hop = args.next_hop;
    config.validate()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let http = match args.http {
        Some(address) => Some(TcpListener::bind(address).await.with_context(|| format!("--http {address}"))?),
        None => None,
    };
    println!(
        "edge listening on {} (SMTP), deciders {}, next hop {}",
        args.listen,
        config.deciders.join(","),
        config.next_hop
    );
    ratchet_edge::serve_with_http(config, listener, http, terminated()).await
}
