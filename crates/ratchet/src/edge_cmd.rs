//! `ratchet edge`: one stateless SMTP edge.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use ratchet_edge::EdgeConfig;

use crate::listen::{bind, bind_optional};
use crate::signal::terminated;
use crate::tls_args::TlsArgs;

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
    /// The recipient domains relayed for, a.example,*.b.example (`accepted_domains`);
    /// "*" for any domain (an open relay).
    #[arg(long, value_name = "DOMAIN,...")]
    accepted_domains: Option<String>,
    /// Load balancers and MTAs that may name the client they relay, with a PROXY protocol
    /// header or XFORWARD (`trusted_proxies`), 10.0.0.5/32,fd00::/64.
    #[arg(long, value_name = "CIDR,...")]
    trusted_proxies: Option<String>,
    /// The certificate (role edge), key and CA for the gRPC link to the deciders.
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => EdgeConfig::load(path).with_context(|| format!("--config {}", path.display()))?,
        None => EdgeConfig::default(),
    };
    config.deciders = EdgeConfig::parse_address_list(&args.deciders);
    config.next_hop = args.next_hop;
    if let Some(domains) = &args.accepted_domains {
        config.accepted_domains = EdgeConfig::parse_address_list(domains);
    }
    if let Some(cidrs) = &args.trusted_proxies {
        config.trusted_proxies = EdgeConfig::parse_trusted_proxies(cidrs).context("--trusted-proxies")?;
    }
    if let Some([cert, key, ca]) = args.tls.decider_files() {
        (config.decider_cert_file, config.decider_key_file, config.decider_ca_file) = (cert, key, ca);
    }
    config.validate()?;
    args.tls
        .check_plaintext_deciders(&config.deciders, config.decider_cert_file.is_some())?;
    let listener = bind("--listen", args.listen).await?;
    let http = bind_optional("--http", args.http).await?;
    println!(
        "edge listening on {} (SMTP), deciders {}, next hop {}",
        args.listen,
        config.deciders.join(","),
        config.next_hop
    );
    ratchet_edge::serve_with_http(config, listener, http, terminated()).await
}
