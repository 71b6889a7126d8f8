//! `ratchet milter`: the edge's verdicts for Postfix or Sendmail, as a milter
//! (shared/spec/cli.md, "Mail-system integration").

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ratchet_edge::EdgeConfig;
use ratchet_milter::{MilterAddress, MilterConfig};

use crate::listen::bind_optional;
use crate::signal::terminated;
use crate::tls_args::TlsArgs;

#[derive(clap::Args)]
pub struct MilterArgs {
    /// Where to listen, as Postfix's `smtpd_milters` names it: `inet:HOST:PORT` (or
    /// `HOST:PORT`), or `unix:/PATH` for a socket file (mode `socket_mode`).
    #[arg(long)]
    listen: MilterAddress,
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
    if let Some([cert, key, ca]) = args.tls.decider_files() {
        (config.decider_cert_file, config.decider_key_file, config.decider_ca_file) = (cert, key, ca);
    }
    config.validate()?;
    args.tls
        .check_plaintext_deciders(&config.deciders, config.decider_cert_file.is_some())?;
    if let MilterAddress::Inet(address) = &args.listen {
        if !address.ip().is_loopback() && config.mta_cidrs.is_empty() {
            bail!(
                "--listen {address}: the milter protocol has no authentication, so off loopback the config must name the MTAs that may connect (mta_cidrs = [\"10.0.0.0/24\"])"
            );
        }
    }
    let listener = args
        .listen
        .bind(config.socket_mode()?)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let http = bind_optional("--http", args.http).await?;
    println!("milter listening on {}, deciders {}", args.listen, config.deciders.join(","));
    ratchet_milter::serve(config, listener, http, terminated()).await
}
