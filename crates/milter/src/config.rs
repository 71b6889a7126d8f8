//! The milter's settings: one serde struct with a default for every key, as the edge's
//! (`ratchet_edge::config`), so that a config file only names what it changes and the
//! `ratchet milter` flags fill in the rest. The decision keys mean what they mean for the
//! edge.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MilterConfig {
    /// Decision service addresses, `host:port`; a host name may resolve to several nodes.
    pub deciders: Vec<String>,
    /// How long the milter waits for a verdict (all attempts together); past it the
    /// message gets `451 4.4.3`, or is accepted with `accept_without_verdict`. Keep it
    /// well under Postfix's `milter_content_timeout`.
    pub decide_deadline_ms: u64,
    /// With no verdict in time: accept (true) or answer `451 4.4.3` (false).
    pub accept_without_verdict: bool,
    /// Ask deciders for linearizable reads (slower, never stale).
    pub linearizable: bool,
    /// Decider answers kept for the same question (client address, certificate name, server
    /// and build) asked again in any session, each until the end of its minute (the
    /// `valid_until` the decider gives), or until the deciders apply a change that may alter
    /// them (a pause, a mode, a policy, a connector); 0 asks every time.
    pub verdict_cache_entries: usize,
    /// How often the milter sends the deciders what it counted (the verdicts it gave, per
    /// server and stage), as the edge does; a milter killed outright loses at most this much.
    pub count_flush_ms: u64,
    /// How often decider host names are resolved again (pods come and go).
    pub resolve_interval_secs: u64,
    /// Connecting to a decider.
    pub decider_connect_timeout_ms: u64,
    /// Longest pause between attempts to re-open the connector watch.
    pub watch_backoff_max_ms: u64,
    /// The milter's certificate for its gRPC calls to the deciders (role edge), its key
    /// and the cluster CA: all three or none (also `--cert`, `--key`, `--ca`).
    pub decider_cert_file: Option<PathBuf>,
    pub decider_key_file: Option<PathBuf>,
    pub decider_ca_file: Option<PathBuf>,

    /// The most header bytes (`Name: value` and CRLF, summed) the milter keeps of one
    /// message; a message with more gets `451 4.3.4` at the header that crosses it. It is
    /// also the largest milter packet read (64 KiB at least, a body chunk's size). The body
    /// is never kept.
    pub max_header_bytes: usize,
    /// Milter connections at once (Postfix opens one per SMTP session); more are closed at
    /// once, and Postfix applies its `milter_default_action`.
    pub max_connections: usize,
    /// The MTAs that may connect, as CIDRs; others are closed at once. Empty: loopback
    /// only. The milter protocol has no authentication, and whoever speaks it names the
    /// client address that attributes mail to a tenant.
    pub mta_cidrs: Vec<IpNet>,
    /// Postfix sends `{cert_subject}` (the client certificate's common name) only for a
    /// certificate it verified; when this list is not empty, the name also counts only
    /// when `{cert_issuer}` is one of these issuer common names.
    pub trusted_cert_issuers: Vec<String>,
    /// A connection that sends no packet for this long is closed, so that MTAs that went
    /// away without closing do not hold `max_connections` slots. Postfix keeps a milter
    /// connection for its whole SMTP session and says nothing while the client is idle, so
    /// keep it above Postfix's `smtpd_timeout` (300 s).
    pub idle_timeout_secs: u64,
    /// After SIGTERM, how long milter connections may go on before they are closed.
    pub shutdown_grace_secs: u64,
    /// The permission bits of the socket file with `--listen unix:/PATH`, in octal
    /// (`"0660"`: the MTA's user must be in the milter's group). Whoever may open it may
    /// speak for any client address.
    pub socket_mode: String,
}

impl Default for MilterConfig {
    fn default() -> Self {
        Self {
            deciders: Vec::new(),
            decide_deadline_ms: 500,
            accept_without_verdict: false,
            linearizable: false,
            verdict_cache_entries: 10_000,
            count_flush_ms: 1_000,
            resolve_interval_secs: 10,
            decider_connect_timeout_ms: 1000,
            watch_backoff_max_ms: 5000,
            decider_cert_file: None,
            decider_key_file: None,
            decider_ca_file: None,
            max_header_bytes: 256 * 1024,
            max_connections: 1000,
            mta_cidrs: Vec::new(),
            trusted_cert_issuers: Vec::new(),
            idle_timeout_secs: 600,
            shutdown_grace_secs: 30,
            socket_mode: "0660".into(),
        }
    }
}

/// Postfix sends body chunks of up to 65,535 octets, each a packet with its command code.
const BODY_CHUNK_PACKET: usize = 65_536;

impl MilterConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading milter config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in milter config {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Refuses settings the milter cannot run with, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.deciders.is_empty() {
            bail!("deciders: at least one decider address is required");
        }
        for decider in &self.deciders {
            ratchet_edge::config::check_host_port("deciders", decider)?;
        }
        for (key, value) in [
            ("decide_deadline_ms", self.decide_deadline_ms as usize),
            ("count_flush_ms", self.count_flush_ms as usize),
            ("max_header_bytes", self.max_header_bytes),
            ("max_connections", self.max_connections),
            ("idle_timeout_secs", self.idle_timeout_secs as usize),
        ] {
            if value == 0 {
                bail!("{key}: must be at least 1");
            }
        }
        self.decider_tls()?;
        self.socket_mode()?;
        Ok(())
    }

    /// `socket_mode` as permission bits.
    pub fn socket_mode(&self) -> anyhow::Result<u32> {
        match u32::from_str_radix(&self.socket_mode, 8) {
            Ok(mode) if mode <= 0o777 => Ok(mode),
            _ => bail!("socket_mode: {:?} is not octal permission bits such as \"0660\"", self.socket_mode),
        }
    }

    /// The files of the milter's mutual TLS to the deciders, when configured.
    pub fn decider_tls(&self) -> anyhow::Result<Option<ratchet_tls::TlsFiles>> {
        ratchet_tls::TlsFiles::from_flags(
            self.decider_cert_file.clone(),
            self.decider_key_file.clone(),
            self.decider_ca_file.clone(),
        )
        .map_err(|_| anyhow::anyhow!("decider_cert_file, decider_key_file and decider_ca_file go together: give all three or none"))
    }

    /// Whether an MTA at `ip` may connect (see `mta_cidrs`).
    pub fn allows_mta(&self, ip: IpAddr) -> bool {
        if self.mta_cidrs.is_empty() {
            return ip.is_loopback();
        }
        self.mta_cidrs.iter().any(|cidr| cidr.contains(&ip))
    }

    /// The largest milter packet read: a body chunk, or a header up to the header cap.
    pub(crate) fn max_packet(&self) -> usize {
        self.max_header_bytes.max(BODY_CHUNK_PACKET)
    }

    pub(crate) fn decide_deadline(&self) -> Duration {
        Duration::from_millis(self.decide_deadline_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_only_what_it_changes_and_bad_values_are_named() {
        let c = MilterConfig::from_toml("decide_deadline_ms = 50\nmta_cidrs = [\"10.0.0.0/8\"]\n").unwrap();
        assert_eq!(c.decide_deadline_ms, 50);
        assert_eq!(c.max_header_bytes, MilterConfig::default().max_header_bytes);
        assert!(c.allows_mta("10.1.2.3".parse().unwrap()) && !c.allows_mta("127.0.0.1".parse().unwrap()));
        assert!(MilterConfig::default().allows_mta("::1".parse().unwrap()));
        assert!(!MilterConfig::default().allows_mta("192.0.2.1".parse().unwrap()));

        let e = MilterConfig::from_toml("max_header_byte = 5").unwrap_err().to_string();
        assert!(e.contains("max_header_byte"), "{e}");
        let e = MilterConfig::from_toml("mta_cidrs = [\"nonsense\"]").unwrap_err().to_string();
        assert!(e.contains("mta_cidrs"), "{e}");

        let mut c = MilterConfig::default();
        assert!(c.validate().unwrap_err().to_string().starts_with("deciders: "));
        c.deciders = vec!["nowhere".into()];
        assert!(c.validate().unwrap_err().to_string().starts_with("deciders: \"nowhere\""));
        c.deciders = vec!["127.0.0.1:7001".into()];
        c.validate().unwrap();
        c.max_header_bytes = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("max_header_bytes: "));
        c.max_header_bytes = 1;
        c.decider_cert_file = Some("cert.pem".into());
        assert!(c.validate().unwrap_err().to_string().starts_with("decider_cert_file, "));
    }
}
