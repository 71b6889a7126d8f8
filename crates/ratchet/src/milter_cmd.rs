//! `ratchet milter`: the edge's verdicts for Postfix or Sendmail, as a milter
//! (shared/spec/cli.md, "Mail-system integration").

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ratchet_edge::EdgeConfig;
use ratchet_milter::MilterConfig;
use tokio::net::TcpListener;

use crate::signal::terminated;
use crate::tls_args::TlsArgs;

#[derive(clap::Args)]
pub struct MilterArgs {
    /// Milter listen address (Postfix: `smtpd_milters = inet:ADDR`).
    #[arg(long)]
    listen: SocketAddr,
    /// Deciders, host:port,host:port,...; a host name may resolve to several (a headless Service).
    #[arg(long)]
    deciders: String,
    /// HTTP listen address for /healthz, /readyz and /metrics.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Milter settings (TOML): decide deadline, header cap, the MTAs allowed; flags win over the file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The certificate (role edge), key and CA for the gRPC link to the deciders.
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn run(args: MilterArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => MilterConfig::load(path).with_context(|| format!("--config {}", path.display()))?,
        None => MilterConfig::default(),
    };
    config.deciders = EdgeConfig::parse_address_list(&args.deciders);
    if args.tls.cert.is_some() || args.tls.key.is_some() || args.tls.ca.is_some() {
        (config.decider_cert_file, config.decider_key_file, config.decider_ca_file) =
            (args.tls.cert.clone(), args.tls.key.clone(), args.tls.ca.clone());
    }
    config.validate()?;
    if config.decider_cert_file.is_none() {
        for decider in &config.deciders {
            args.tls.check_plaintext_dial("--deciders", decider)?;
        }
    }
    if !args.listen.ip().is_loopback() && config.mta_cidrs.is_empty() {
        bail!(
            "--listen {}: the milter protocol has no authentication, so off loopback the config must name the MTAs that may connect (mta_cidrs = [\"10.0.0.0/24\"])",
            args.listen
        );
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let http = match args.http {
        Some(address) => Some(TcpListener::bind(address).await.with_context(|| format!("--http {address}"))?),
        None => None,
    };
    println!("milter listening on {}, deciders {}", args.listen, config.deciders.join(","));
    ratchet_milter::serve(config, listener, http, terminated()).await
}
