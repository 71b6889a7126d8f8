//! `--cert`, `--key`, `--ca` and `--insecure`, the same on every command that listens or
//! dials (shared/spec/cli.md, "Transport security and roles"), and the rule they serve:
//! plaintext only on loopback unless `--insecure` is said out loud.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::bail;
use ratchet_tls::TlsFiles;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This process's certificate (PEM), from `ratchet certs issue`.
    #[arg(long, env = "RATCHET_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "RATCHET_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// The cluster CA (PEM): the other side's certificate must be signed by it.
    #[arg(long, env = "RATCHET_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Allow plaintext gRPC on addresses other than loopback (no authentication at all).
    #[arg(long, global = true)]
    pub insecure: bool,
}

impl TlsArgs {
    pub fn files(&self) -> anyhow::Result<Option<TlsFiles>> {
        TlsFiles::from_flags(self.cert.clone(), self.key.clone(), self.ca.clone())
    }

    /// Refuses plaintext on `address` unless it is loopback or `--insecure` was given.
    pub fn check_plaintext_listen(&self, flag: &str, address: SocketAddr) -> anyhow::Result<()> {
        if self.cert.is_none() && !self.insecure && !address.ip().is_loopback() {
            bail!(
                "{flag} {address}: plaintext is served only on loopback; give --cert, --key and --ca (see `ratchet certs`), or --insecure to serve plaintext there anyway"
            );
        }
        Ok(())
    }

    /// The certificate, key and CA files for a config's `decider_cert_file`,
    /// `decider_key_file` and `decider_ca_file` when any of the flags was given (the flags
    /// then win over the file, all three together).
    pub fn decider_files(&self) -> Option<[Option<PathBuf>; 3]> {
        let given = self.cert.is_some() || self.key.is_some() || self.ca.is_some();
        given.then(|| [self.cert.clone(), self.key.clone(), self.ca.clone()])
    }

    /// [`TlsArgs::check_plaintext_dial`] for every decider of `--deciders`, unless the
    /// config dials them with a certificate.
    pub fn check_plaintext_deciders(&self, deciders: &[String], with_certificate: bool) -> anyhow::Result<()> {
        if with_certificate {
            return Ok(());
        }
        deciders
            .iter()
            .try_for_each(|decider| self.check_plaintext_dial("--deciders", decider))
    }

    /// Refuses to dial `endpoint` (`host:port` or `http://host:port`) in plaintext unless it
    /// is loopback or `--insecure` was given.
    pub fn check_plaintext_dial(&self, flag: &str, endpoint: &str) -> anyhow::Result<()> {
        if self.cert.is_none() && !self.insecure && !is_loopback(endpoint) {
            bail!(
                "{flag} {endpoint}: plaintext only to loopback; give --cert, --key and --ca (or RATCHET_CERT, RATCHET_KEY, RATCHET_CA), or --insecure"
            );
        }
        Ok(())
    }
}

fn is_loopback(endpoint: &str) -> bool {
    let authority = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    if let Ok(address) = authority.parse::<SocketAddr>() {
        return address.ip().is_loopback();
    }
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_counts_as_loopback() {
        for endpoint in [
            "127.0.0.1:7000",
            "http://127.0.0.1:7000",
            "[::1]:7000",
            "localhost:7000",
            "http://localhost:7000/",
        ] {
            assert!(is_loopback(endpoint), "{endpoint}");
        }
        for endpoint in ["10.0.0.1:7000", "decider-0.ratchet:7000", "http://0.0.0.0:7000"] {
            assert!(!is_loopback(endpoint), "{endpoint}");
        }
    }
}
