//! A private Postfix instance: its own `main.cf`, `master.cf`, queue and log in a
//! temporary directory, listening on one loopback address and relaying everything to a
//! relayhost. Starting Postfix needs root; without it the commands run under `sudo -n`.
//!
//! The end-to-end tests start it through `smtp::Postfix` (which picks a port and tries
//! again when another test took it), the benchmarks (`crates/bench`, which includes this
//! file) directly: the same instance either way.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// The certificate chain and key, PEM, with which a Postfix instance offers STARTTLS.
pub struct PostfixTls {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct PostfixInstance {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PostfixInstance {
    /// Starts Postfix on `addr`, relaying to `relayhost`, offering STARTTLS with `tls`
    /// (`smtpd_tls_security_level = may`, every TLS session logged) and with `extra_main_cf`
    /// (lines of `main.cf`, such as a milter's) added; `smtpd` gives master.cf's smtpd
    /// service(s) on `addr` ([`plain_smtpd`], or one with a proxy filter). Once: when it does not start (the
    /// port was taken, or no root), the instance's log says why.
    pub fn start(
        addr: SocketAddr,
        relayhost: SocketAddr,
        tls: Option<&PostfixTls>,
        extra_main_cf: &str,
        smtpd: &dyn Fn(SocketAddr) -> String,
    ) -> Result<PostfixInstance, String> {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::set_permissions(base, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for sub in ["queue", "data"] {
            std::fs::create_dir(base.join(sub)).unwrap();
        }
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {base}/queue\n\
             data_directory = {base}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = onprem-relay.test\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             relayhost = [{relay_ip}]:{relay_port}\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             maillog_file_prefixes = {base}\n\
             maillog_file = {base}/maillog\n",
            base = base.display(),
            relay_ip = relayhost.ip(),
            relay_port = relayhost.port(),
        );
        let mut main_cf = main_cf;
        if let Some(tls) = tls {
            std::fs::write(base.join("tls-cert.pem"), &tls.cert_pem).unwrap();
            std::fs::write(base.join("tls-key.pem"), &tls.key_pem).unwrap();
            std::fs::set_permissions(base.join("tls-key.pem"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            main_cf.push_str(&format!(
                "smtpd_tls_cert_file = {base}/tls-cert.pem\n\
                 smtpd_tls_key_file = {base}/tls-key.pem\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_loglevel = 1\n",
                base = base.display(),
            ));
        }
        main_cf.push_str(extra_main_cf);
        std::fs::write(base.join("main.cf"), main_cf).unwrap();
        let services = [
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
            "pickup unix n - n 60 1 pickup",
            "showq unix n - n - - showq",
            "flush unix n - n 1000? 0 flush",
        ];
        let services: Vec<&str> = services
            .iter()
            .copied()
            .chain(tls.map(|_| "tlsmgr unix - - n 1000? 1 tlsmgr"))
            .collect();
        let config_dir = base.display().to_string();
        if !as_root(&["chown", "postfix", &format!("{config_dir}/data")]) {
            return Err("chown needs root or passwordless sudo".into());
        }
        std::fs::write(base.join("master.cf"), format!("{}\n{}\n", smtpd(addr), services.join("\n"))).unwrap();
        let instance = PostfixInstance { addr, dir };
        if as_root(&["postfix", "-c", &config_dir, "start"]) {
            Ok(instance)
        } else {
            Err(instance.log())
        }
    }

    /// Postfix's own log of this instance.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Messages in one of its queues (`incoming`, `active`, `deferred`, ...).
    pub fn queued(&self, queue: &str) -> usize {
        walk_files(&self.dir.path().join("queue").join(queue))
    }
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| if e.path().is_dir() { walk_files(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a command as root (directly, or through `sudo -n` for a non-root user); whether it succeeded.
fn as_root(words: &[&str]) -> bool {
    let mut command = if is_root() { Command::new(words[0]) } else { Command::new("sudo") };
    if !is_root() {
        command.args(["-n", words[0]]);
    }
    command
        .args(&words[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        as_root(&["postfix", "-c", &self.dir.path().display().to_string(), "abort"]);
    }
}

/// master.cf's plain smtpd service on `addr`.
pub fn plain_smtpd(addr: SocketAddr) -> String {
    format!("{addr} inet n - n - - smtpd")
}
