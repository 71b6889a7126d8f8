//! HAProxy (Debian package haproxy) in front of edges, run in the foreground on a
//! configuration file. HAProxy expands `"${NAME}"` in its configuration from its
//! environment, so a checked-in configuration runs as it is with the tests' addresses.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::smtp::wait_listening;

pub struct Haproxy {
    pub addr: SocketAddr,
    child: Child,
}

impl Haproxy {
    /// Runs HAProxy on `config` with `env`, and waits until it listens on `addr` (its
    /// frontend's bind address).
    pub fn start(config: &Path, env: &[(&str, String)], addr: SocketAddr) -> Haproxy {
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("haproxy (Debian package) is installed");
        assert!(
            check.status.success(),
            "haproxy -c refused {}: {}",
            config.display(),
            String::from_utf8_lossy(&check.stdout) + String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (Debian package) is installed");
        wait_listening(addr, "haproxy");
        Haproxy { addr, child }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
