//! Mail through the fault suite: an edge and its next hop (`smtp-sink`, dumping every
//! message it takes) each in a namespace of its own, the client in the root namespace.

use std::net::SocketAddr;

use crate::common::smtp::wait_listening;
use crate::net::{in_namespace, Hosted, Net};

pub const COMPLIANT: &str = "15.2.2562.17";
/// A server of tenant bear past day 90: every message of it is refused.
pub const BLOCKED: &str = "old.bear.local";
/// Another server of bear past day 90, patched and unpatched in turn.
pub const FLIPPING: &str = "flip.bear.local";

pub struct Mail {
    /// Where the client sends: the edge's SMTP listener.
    pub edge: SocketAddr,
    sink_dir: tempfile::TempDir,
    logs: tempfile::TempDir,
    _edge: Hosted,
    _sink: Hosted,
}

impl Mail {
    /// Starts the sink on host `sink_host` and the edge on `edge_host`, asking `deciders`
    /// in that order.
    pub fn start(net: &mut Net, edge_host: u8, sink_host: u8, deciders: &[String]) -> Mail {
        for host in [edge_host, sink_host] {
            net.add_host(host);
        }
        let logs = tempfile::tempdir().unwrap();
        let sink_dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(sink_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let sink = SocketAddr::new(net.address(sink_host).into(), 25);
        let dump = format!("{}/%H%M%S.", sink_dir.path().display());
        let sink_process = in_namespace(
            &net.namespace(sink_host),
            "/usr/sbin/smtp-sink",
            &["-u", "nobody", "-d", &dump, &sink.to_string(), "64"],
            &logs.path().join("sink.log"),
        );
        let edge = SocketAddr::new(net.address(edge_host).into(), 2525);
        let args = [
            "edge",
            "--insecure",
            "--listen",
            &edge.to_string(),
            "--deciders",
            &deciders.join(","),
            "--next-hop",
            &sink.to_string(),
            "--accepted-domains",
            "*",
        ];
        let edge_process = in_namespace(
            &net.namespace(edge_host),
            env!("CARGO_BIN_EXE_ratchet"),
            &args,
            &logs.path().join("edge.log"),
        );
        wait_listening(edge, "the edge");
        Mail {
            edge,
            sink_dir,
            logs,
            _edge: edge_process,
            _sink: sink_process,
        }
    }

    /// Every message the sink took, as it took it.
    pub fn delivered(&self) -> Vec<String> {
        std::fs::read_dir(self.sink_dir.path())
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect()
    }

    pub fn edge_log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("edge.log")).unwrap_or_default()
    }
}
