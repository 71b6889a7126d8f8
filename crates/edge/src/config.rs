//! The edge's settings: one serde struct with a default for every key, so that a config
//! file only names what it changes and `ratchet edge` flags fill in the rest.
//!
//! Durations are plain integers with their unit in the key name (`_secs`, `_ms`): a TOML
//! file stays readable and there is no duration syntax to learn.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::forward_client::ForwardClient;
use crate::tls::{self, NextHopClient, TlsFiles};

/// How lines that end in a bare LF instead of CRLF are treated (RFC 5321 2.3.8 requires CRLF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BareLf {
    /// Postfix's `smtpd_forbid_bare_newline = normalize` (its default since 3.9): a bare LF
    /// ends a command or content line as if it were CRLF, but only CRLF "." CRLF ends DATA,
    /// so `<LF>.<CRLF>` cannot smuggle a second message.
    #[default]
    Normalize,
    /// Postfix's `reject`: a command or message that contains a bare LF is refused with
    /// `550 5.5.2 Error: bare <LF> received`.
    Reject,
}

/// TLS on the connection to the next hop (`next_hop_tls`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextHopTls {
    /// Never STARTTLS: the next hop gets everything in clear.
    None,
    /// STARTTLS whenever the next hop's EHLO offers it, with any certificate (Postfix's
    /// `smtp_tls_security_level = may`). Encrypts against a passive listener only. A next
    /// hop that does not offer STARTTLS, or whose handshake fails, gets the message in clear
    /// (the handshake failure on a second connection), as Postfix does.
    #[default]
    Opportunistic,
    /// STARTTLS required, the certificate verified against `next_hop_ca_file` (or the
    /// system's CA certificates when unset) for the host name of `next_hop` (Postfix's
    /// `verify`). Otherwise the message is not relayed: the sender gets `451 4.7.5` and retries.
    Verify,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The name this edge gives in its greeting, EHLO reply and `Received:` header.
    pub hostname: String,
    /// Decision service addresses, `host:port`; a host name may resolve to several nodes.
    pub deciders: Vec<String>,
    /// Where accepted mail goes, `host:port`.
    pub next_hop: String,
    /// `"none"`, `"opportunistic"` (the default) or `"verify"`: see [`NextHopTls`].
    pub next_hop_tls: NextHopTls,
    /// CA certificates, PEM, that the next hop's certificate must chain to with
    /// `next_hop_tls = "verify"`. Unset: the system's CA certificates. Watched like the
    /// STARTTLS certificate: a changed file is used for new connections.
    pub next_hop_ca_file: Option<PathBuf>,
    /// `"none"` (the default), `"xforward"` or `"xclient"`: name the client the edge
    /// attributed each message to (its address, port, HELO name, protocol) to the next hop
    /// with Postfix's XFORWARD (an after-filter `smtpd`, for its logs) or
    /// XCLIENT (the session becomes the client's, Postfix's own access checks included). The
    /// next hop must authorize the edge (`smtpd_authorized_xforward_hosts` /
    /// `smtpd_authorized_xclient_hosts`), or it does not offer the command and gets the
    /// message without it. See [`ForwardClient`].
    pub next_hop_forward_client: ForwardClient,
    /// The recipient domains this edge relays mail for; RCPT TO any other domain gets
    /// `550 5.7.1 Relaying denied`. An entry is a domain, matched exactly
    /// (`"example.com"`: not its subdomains), or `"*."` and a domain, matching every
    /// subdomain but not the domain itself (`"*.example.com"`: `eu.example.com`,
    /// `a.b.example.com`); list both for both. Case and a trailing dot do not matter. `["*"]`
    /// relays for any domain (an open relay, unless only trusted clients can reach the
    /// edge). There is no default: an edge with an empty list refuses to start.
    pub accepted_domains: Vec<String>,

    /// Largest message accepted, in octets (advertised as `SIZE`).
    pub max_message_size: usize,
    /// Longest command line, CRLF included (RFC 5321 4.5.3.1.4 allows 512 plus extensions).
    pub max_command_line: usize,
    /// Longest content line, CRLF included (RFC 5321 4.5.3.1.6 says 1000; real mail is sloppier).
    pub max_data_line: usize,
    /// Recipients per message; more get `452 4.5.3` (RFC 5321 4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// Error replies per session before `421 4.7.0` and disconnect (Postfix's hard limit is 20).
    pub max_errors: u32,
    /// Concurrent sessions from one client address; more get `421 4.7.0` at connect.
    pub max_sessions_per_ip: usize,
    /// Concurrent sessions in all; more get `421 4.3.2` at connect.
    pub max_sessions: usize,
    pub bare_lf: BareLf,

    /// Waiting for the next command (RFC 5321 4.5.3.2.7: at least 5 minutes).
    pub command_timeout_secs: u64,
    /// Waiting for the next piece of message content (RFC 5321 4.5.3.2.5: 3 minutes).
    pub data_timeout_secs: u64,

    /// How long the edge waits for a verdict before giving up (all attempts together).
    /// 500 ms by default: when the decider of its own region is down or stale, the edge
    /// fails over to one in another region, and that round trip (100-150 ms between
    /// regions, more with TLS set-up) must fit, with room for one more failover.
    pub decide_deadline_ms: u64,
    /// How often the edge sends the deciders what it counted (its verdicts, per server
    /// and stage) for the reports. An edge killed outright loses at most this much.
    pub count_flush_ms: u64,
    /// With no verdict in time: accept and relay (true) or answer `451 4.4.3` (false).
    pub accept_without_verdict: bool,
    /// Ask deciders for linearizable reads (slower, never stale).
    pub linearizable: bool,
    /// Reuse a throttle/block verdict for the rest of the session while it is valid.
    pub remember_verdict: bool,
    /// Decider answers kept for the same question (client address, certificate name, server
    /// and build) asked again in any session, each until the end of its minute (the
    /// `valid_until` the decider gives), or until the deciders apply a change that may alter
    /// them (a pause, a mode, a policy, a connector); 0 asks every time.
    pub verdict_cache_entries: usize,
    /// How often decider host names are resolved again (pods come and go).
    pub resolve_interval_secs: u64,
    /// Connecting to a decider.
    pub decider_connect_timeout_ms: u64,
    /// Longest pause between attempts to re-open the connector watch.
    pub watch_backoff_max_ms: u64,

    /// Connecting to the next hop.
    pub relay_connect_timeout_secs: u64,
    /// Waiting for any reply of the next hop except the one to the final dot.
    pub relay_command_timeout_secs: u64,
    /// Waiting for the next hop's reply to the final dot (RFC 5321 4.5.3.2.6: 10 minutes).
    pub relay_data_timeout_secs: u64,
    /// Idle SMTP sessions to the next hop kept for the next message (per next hop;
    /// default 32): a message takes one and starts with MAIL on it (in TLS still, if it
    /// was), and gives it back after the final dot instead of QUIT; MAIL, RCPT and DATA go
    /// in one write when the next hop offers PIPELINING. 0 turns the pool off: a new
    /// connection, one command at a time, and QUIT for every message, as before the pool. There is no pool with
    /// `next_hop_forward_client = "xclient"`, since XCLIENT makes a session one client's;
    /// XFORWARD is sent again before each MAIL. A pooled session found closed before its
    /// MAIL was accepted is replaced by a new connection once; a message is never sent
    /// twice.
    pub next_hop_pool_max_idle: usize,
    /// How long an idle pooled session is kept before it gets QUIT (default 30, 1 to 300:
    /// servers may drop idle clients after RFC 5321's 5 minutes, Postfix's `smtpd` does,
    /// smtp-sink sooner). With `next_hop_tls = "verify"`, also how long a session verified
    /// against a replaced `next_hop_ca_file` may still be used.
    pub next_hop_pool_idle_secs: u64,
    /// Messages one pooled session carries before it gets QUIT (default 100, at least 1;
    /// Postfix's `smtp_connection_reuse_count_limit`).
    pub next_hop_pool_max_messages: u32,

    /// After SIGTERM, how long the edge still accepts sessions while `/readyz` answers 503,
    /// so that a load balancer checking it (HAProxy, a cloud LB) stops sending first. In
    /// Kubernetes the chart's preStop sleep does this, and it stays 0.
    pub shutdown_delay_secs: u64,
    /// After the listener closes, how long sessions may go on before they get `421 4.3.2`.
    pub shutdown_grace_secs: u64,

    /// The edge's certificate chain, PEM, leaf first. STARTTLS (RFC 3207) is offered only
    /// when this and `tls_key_file` are set. Both files are watched: a changed pair is used
    /// for new handshakes; one that does not load is logged and the old one kept.
    pub tls_cert_file: Option<PathBuf>,
    /// The edge's own certificate for its gRPC calls to the deciders (role edge, from
    /// `ratchet certs issue`), with its key and the cluster CA: all three or none. Set by
    /// `--cert`, `--key` and `--ca` too. None: plaintext, to loopback deciders only unless
    /// `--insecure` is given.
    pub decider_cert_file: Option<PathBuf>,
    pub decider_key_file: Option<PathBuf>,
    pub decider_ca_file: Option<PathBuf>,
    /// The private key of `tls_cert_file`, PEM (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates, PEM. When set, clients are asked for a certificate, which must
    /// chain to one of these if presented; presenting none is allowed. The certificate's
    /// name (first DNS name, else common name) attributes the connection to a connector.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Refuse MAIL until the client has issued STARTTLS (`530 5.7.0`).
    pub require_tls: bool,

    /// Load balancers and MTAs in front of the edge that may say which client they relay
    /// (CIDRs, e.g. `["10.0.0.5/32", "fd00:1::/64"]`; empty by default). From these
    /// addresses only, the edge takes a PROXY protocol header (v1 or v2, HAProxy's
    /// `send-proxy`/`send-proxy-v2`) as the first octets of a connection, and XFORWARD
    /// (Postfix's `smtpd_proxy_filter`), and attributes the connection, or the next mail
    /// transaction, to the client they name: connector, Decide, `Received:`, logs. A header
    /// is optional from them (the same MTA may send XFORWARD instead), so list only proxies
    /// that send one on every connection, never a TCP forwarder that passes a client's
    /// octets on as they are. Anyone else who sends a header or XFORWARD gets `550 5.7.0`
    /// and stays attributed to its own address; a trusted proxy's malformed header gets
    /// `421 4.7.0` and the connection is closed. Also `--trusted-proxies`.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            hostname: "ratchet-edge".into(),
            deciders: Vec::new(),
            next_hop: String::new(),
            next_hop_tls: NextHopTls::Opportunistic,
            next_hop_ca_file: None,
            next_hop_forward_client: ForwardClient::None,
            accepted_domains: Vec::new(),
            max_message_size: 35 * 1024 * 1024,
            max_command_line: 2048,
            max_data_line: 65536,
            max_recipients: 1000,
            max_errors: 20,
            max_sessions_per_ip: 50,
            max_sessions: 10_000,
            bare_lf: BareLf::Normalize,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            decide_deadline_ms: 500,
            count_flush_ms: 1_000,
            accept_without_verdict: false,
            linearizable: false,
            remember_verdict: true,
            verdict_cache_entries: 10_000,
            resolve_interval_secs: 10,
            decider_connect_timeout_ms: 1000,
            watch_backoff_max_ms: 5000,
            relay_connect_timeout_secs: 30,
            relay_command_timeout_secs: 300,
            relay_data_timeout_secs: 600,
            next_hop_pool_max_idle: 32,
            next_hop_pool_idle_secs: 30,
            next_hop_pool_max_messages: 100,
            shutdown_delay_secs: 0,
            shutdown_grace_secs: 30,
            tls_cert_file: None,
            decider_cert_file: None,
            decider_key_file: None,
            decider_ca_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            require_tls: false,
            trusted_proxies: Vec::new(),
        }
    }
}

impl EdgeConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading edge config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in edge config {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Splits a comma-separated flag value (`--deciders a:7001,b:7001`, `--accepted-domains`).
    pub fn parse_address_list(list: &str) -> Vec<String> {
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    }

    /// Refuses settings the edge cannot run with, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.deciders.is_empty() {
            bail!("deciders: at least one decider address is required");
        }
        for d in &self.deciders {
            check_host_port("deciders", d)?;
        }
        check_host_port("next_hop", &self.next_hop)?;
        check_accepted_domains(&self.accepted_domains)?;
        if self.hostname.is_empty() || self.hostname.contains(|c: char| c.is_whitespace() || c.is_control()) {
            bail!("hostname: {:?} is not a host name", self.hostname);
        }
        for (key, value) in [
            ("max_message_size", self.max_message_size),
            ("max_recipients", self.max_recipients),
            ("max_sessions_per_ip", self.max_sessions_per_ip),
            ("max_sessions", self.max_sessions),
        ] {
            if value == 0 {
                bail!("{key}: must be at least 1");
            }
        }
        if self.max_command_line < 512 {
            bail!("max_command_line: must be at least 512 (RFC 5321 4.5.3.1.4)");
        }
        if self.max_data_line < 1000 {
            bail!("max_data_line: must be at least 1000 (RFC 5321 4.5.3.1.6)");
        }
        if self.max_errors == 0 {
            bail!("max_errors: must be at least 1");
        }
        if self.decide_deadline_ms == 0 {
            bail!("decide_deadline_ms: must be at least 1");
        }
        if self.count_flush_ms == 0 {
            bail!("count_flush_ms: must be at least 1");
        }
        if !(1..=300).contains(&self.next_hop_pool_idle_secs) {
            bail!("next_hop_pool_idle_secs: must be from 1 to 300 (next hops may drop idle clients after 5 minutes); next_hop_pool_max_idle = 0 turns the pool off");
        }
        if self.next_hop_pool_max_messages == 0 {
            bail!("next_hop_pool_max_messages: must be at least 1; next_hop_pool_max_idle = 0 turns the pool off");
        }
        self.validate_tls()
    }

    /// The TLS keys go together, and their files must load (each error names the key and
    /// the file).
    fn validate_tls(&self) -> anyhow::Result<()> {
        self.decider_tls()?;
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => bail!("tls_key_file: required when tls_cert_file is set"),
            (None, Some(_)) => bail!("tls_cert_file: required when tls_key_file is set"),
            (None, None) if self.tls_client_ca_file.is_some() => {
                bail!("tls_client_ca_file: needs tls_cert_file and tls_key_file (STARTTLS is not offered without them)")
            }
            (None, None) if self.require_tls => {
                bail!("require_tls: needs tls_cert_file and tls_key_file (STARTTLS is not offered without them)")
            }
            _ => {}
        }
        if let Some(files) = self.tls_files() {
            tls::load(&files)?;
        }
        if self.next_hop_ca_file.is_some() && self.next_hop_tls != NextHopTls::Verify {
            bail!("next_hop_ca_file: only used with next_hop_tls = \"verify\"");
        }
        self.next_hop_client()?;
        Ok(())
    }

    /// The STARTTLS files, or `None` when STARTTLS is not configured. Assumes the config
    /// passed the pairing checks of [`EdgeConfig::validate`].
    pub(crate) fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
        })
    }

    /// The TLS client of `next_hop_tls`; `None` for `"none"`. Errors name the key at fault.
    pub(crate) fn next_hop_client(&self) -> anyhow::Result<Option<NextHopClient>> {
        if self.next_hop_tls == NextHopTls::None {
            return Ok(None);
        }
        let verify = self.next_hop_tls == NextHopTls::Verify;
        tls::next_hop_client(&self.next_hop, verify, self.next_hop_ca_file.clone()).map(Some)
    }

    /// Parses `--trusted-proxies` (CIDRs, comma-separated); the error names the entry at fault.
    pub fn parse_trusted_proxies(list: &str) -> anyhow::Result<Vec<IpNet>> {
        Self::parse_address_list(list)
            .iter()
            .map(|cidr| {
                cidr.parse()
                    .map_err(|_| anyhow::anyhow!("{cidr:?} is not a CIDR (e.g. 10.0.0.5/32)"))
            })
            .collect()
    }

    /// Whether `ip` may say which client it relays (`trusted_proxies`).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Whether this edge relays mail for `domain` (see `accepted_domains`).
    pub fn accepts_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.accepted_domains.iter().any(|entry| {
            let entry = entry.trim_end_matches('.');
            entry == "*"
                || match entry.strip_prefix("*.") {
                    Some(parent) => is_below(domain, parent),
                    None => domain.eq_ignore_ascii_case(entry),
                }
        })
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
    pub(crate) fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout_secs)
    }
    pub(crate) fn decide_deadline(&self) -> Duration {
        Duration::from_millis(self.decide_deadline_ms)
    }
    pub(crate) fn count_flush(&self) -> Duration {
        Duration::from_millis(self.count_flush_ms)
    }
}

/// Whether `domain` is a subdomain of `parent` (`a.b.example.com` of `example.com`).
fn is_below(domain: &str, parent: &str) -> bool {
    let Some(dot) = domain.len().checked_sub(parent.len() + 1) else {
        return false;
    };
    // A '.' byte is never inside a multi-byte character, so `dot + 1` is a char boundary.
    domain.as_bytes()[dot] == b'.' && domain[dot + 1..].eq_ignore_ascii_case(parent)
}

/// `accepted_domains` must say something: domains, `*.` wildcards, or `*` alone.
fn check_accepted_domains(entries: &[String]) -> anyhow::Result<()> {
    if entries.is_empty() {
        bail!(
            "accepted_domains: required: list the domains this edge relays mail for (e.g. [\"example.com\", \"*.example.com\"]), or [\"*\"] to relay for any domain"
        );
    }
    for entry in entries {
        let domain = entry.strip_prefix("*.").unwrap_or(entry).trim_end_matches('.');
        let label_ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if entry != "*" && !domain.split('.').all(label_ok) {
            bail!("accepted_domains: {entry:?} is not a domain, \"*.\" and a domain, or \"*\"");
        }
    }
    Ok(())
}

/// Refuses a `value` of `key` that is not `host:port`, naming the key.
pub fn check_host_port(key: &str, value: &str) -> anyhow::Result<()> {
    let ok = match value.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    };
    if !ok {
        bail!("{key}: {value:?} is not host:port");
    }
    Ok(())
}

impl EdgeConfig {
    /// The files of the edge's mutual TLS to the deciders, when configured.
    pub fn decider_tls(&self) -> anyhow::Result<Option<ratchet_tls::TlsFiles>> {
        ratchet_tls::TlsFiles::from_flags(
            self.decider_cert_file.clone(),
            self.decider_key_file.clone(),
            self.decider_ca_file.clone(),
        )
        .map_err(|_| anyhow::anyhow!("decider_cert_file, decider_key_file and decider_ca_file go together: give all three or none"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_only_what_it_changes() {
        let c = EdgeConfig::from_toml("decide_deadline_ms = 50\naccept_without_verdict = true\nbare_lf = \"reject\"\n").unwrap();
        assert_eq!(c.decide_deadline_ms, 50);
        assert!(c.accept_without_verdict);
        assert_eq!(c.bare_lf, BareLf::Reject);
        assert_eq!(c.max_recipients, EdgeConfig::default().max_recipients);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        assert!(EdgeConfig::from_toml("decide_deadline = 5")
            .unwrap_err()
            .to_string()
            .contains("decide_deadline"));
        let mut c = EdgeConfig {
            deciders: vec!["d:7001".into()],
            next_hop: "127.0.0.1:25".into(),
            accepted_domains: vec!["*".into()],
            ..Default::default()
        };
        c.validate().unwrap();
        c.next_hop = "nowhere".into();
        assert!(c.validate().unwrap_err().to_string().starts_with("next_hop"));
        assert_eq!(EdgeConfig::parse_address_list(" a:1, b:2 ,"), vec!["a:1", "b:2"]);
    }

    #[test]
    fn next_hop_pool_keys_have_defaults_and_bounds() {
        let d = EdgeConfig::default();
        assert_eq!(
            (d.next_hop_pool_max_idle, d.next_hop_pool_idle_secs, d.next_hop_pool_max_messages),
            (32, 30, 100)
        );
        let toml = "deciders = [\"d:7001\"]\nnext_hop = \"127.0.0.1:25\"\naccepted_domains = [\"*\"]\n";
        let off = EdgeConfig::from_toml(&format!("{toml}next_hop_pool_max_idle = 0\n")).unwrap();
        assert_eq!(off.next_hop_pool_max_idle, 0);
        off.validate().unwrap();
        for (line, key) in [
            ("next_hop_pool_idle_secs = 0", "next_hop_pool_idle_secs: "),
            ("next_hop_pool_idle_secs = 301", "next_hop_pool_idle_secs: "),
            ("next_hop_pool_max_messages = 0", "next_hop_pool_max_messages: "),
        ] {
            let e = EdgeConfig::from_toml(&format!("{toml}{line}\n"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(key), "{line}: {e}");
        }
        for (line, key) in [
            ("next_hop_pool_max_idle = -1", "next_hop_pool_max_idle"),
            ("next_hop_pool_idle = 5", "next_hop_pool_idle"),
        ] {
            let e = EdgeConfig::from_toml(&format!("{toml}{line}\n")).unwrap_err().to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn accepted_domains_are_required_and_checked() {
        let mut c = EdgeConfig {
            deciders: vec!["d:7001".into()],
            next_hop: "127.0.0.1:25".into(),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("accepted_domains: required") && !e.contains('\n'), "{e}");
        for bad in ["", "*.", "a..b", "*foo.example", "a.*.example", "user@example.com", "ex ample.com"] {
            c.accepted_domains = vec!["example.com".into(), bad.into()];
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with("accepted_domains: ") && e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        c.accepted_domains = vec!["example.com".into(), "*.example.net".into(), "Owl.Example.".into()];
        c.validate().unwrap();
        let toml = "accepted_domains = [\"*\"]\nnext_hop_tls = \"verify\"\n";
        let parsed = EdgeConfig::from_toml(toml).unwrap();
        assert_eq!(
            (parsed.accepted_domains, parsed.next_hop_tls),
            (vec!["*".to_string()], NextHopTls::Verify)
        );
        assert_eq!(EdgeConfig::default().next_hop_tls, NextHopTls::Opportunistic);
        assert!(EdgeConfig::from_toml("next_hop_tls = \"may\"").is_err());
    }

    #[test]
    fn trusted_proxies_are_cidrs_in_the_file_or_the_flag() {
        let c = EdgeConfig::from_toml("trusted_proxies = [\"127.0.0.1/32\", \"fd00:1::/64\"]").unwrap();
        for yes in ["127.0.0.1", "fd00:1::25"] {
            assert!(c.trusts(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.7", "fd00:2::25", "10.0.0.1"] {
            assert!(!c.trusts(no.parse().unwrap()), "{no}");
        }
        assert!(!EdgeConfig::default().trusts("127.0.0.1".parse().unwrap()));
        let e = EdgeConfig::from_toml("trusted_proxies = [\"127.0.0.1\"]").unwrap_err().to_string();
        assert!(e.contains("trusted_proxies"), "{e}");
        assert_eq!(
            EdgeConfig::parse_trusted_proxies("10.0.0.0/8, 127.0.0.1/32").unwrap(),
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap(), "127.0.0.1/32".parse().unwrap()]
        );
        let e = EdgeConfig::parse_trusted_proxies("10.0.0.0/8,haproxy").unwrap_err().to_string();
        assert_eq!(e, "\"haproxy\" is not a CIDR (e.g. 10.0.0.5/32)");
    }

    #[test]
    fn domains_match_exactly_or_below_a_wildcard() {
        let c = EdgeConfig {
            accepted_domains: vec!["example.com".into(), "*.example.net".into(), "Owl.Example.".into()],
            ..Default::default()
        };
        for yes in ["example.com", "EXAMPLE.com.", "eu.example.net", "a.b.example.net", "owl.example"] {
            assert!(c.accepts_domain(yes), "{yes}");
        }
        for no in [
            "eu.example.com",
            "example.net",
            "badexample.net",
            "xexample.com",
            "example.org",
            "",
            "[127.0.0.1]",
        ] {
            assert!(!c.accepts_domain(no), "{no}");
        }
        let any = EdgeConfig {
            accepted_domains: vec!["*".into()],
            ..Default::default()
        };
        assert!(any.accepts_domain("anything.example") && any.accepts_domain("[127.0.0.1]"));
    }
}
