//! `ratchet certs init|issue`: the cluster CA and the certificates of deciders, edges and
//! operators (see `ratchet_tls::certs`).

use std::net::IpAddr;
use std::path::PathBuf;

use ratchet_tls::certs::{self, Request, DEFAULT_TRUST_DOMAIN};
use ratchet_tls::Role;

#[derive(clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(clap::Subcommand)]
enum CertsCommand {
    /// Make a CA: DIR/ca.pem and DIR/ca-key.pem (keep the key offline once you are done issuing).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE trust domain every certificate of this CA names.
        #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Issue DIR/NAME.pem and DIR/NAME-key.pem for a role, signed by the CA in DIR.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// peer (a decider), admin, operator, viewer or edge.
        #[arg(long)]
        role: Role,
        /// Unique among the CA's certificates: it names the files and the SPIFFE ID.
        #[arg(long)]
        name: String,
        /// DNS names the certificate is also valid for (for browsers and other TLS clients
        /// that check names; Ratchet's own clients check the role instead).
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses the certificate is also valid for.
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Init { dir, trust_domain } => {
            let files = certs::init(&dir, &trust_domain)?;
            println!(
                "CA for spiffe://{trust_domain}: {} (key {})",
                files.cert.display(),
                files.key.display()
            );
        }
        CertsCommand::Issue {
            dir,
            role,
            name,
            dns,
            ip,
            days,
        } => {
            let request = Request {
                role,
                name,
                dns,
                ips: ip,
                days,
            };
            let (cert, key, identity) = certs::issue(&dir, &request)?;
            println!("{identity}: {} (key {})", cert.display(), key.display());
        }
    }
    Ok(())
}
