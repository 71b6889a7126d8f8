//! The fault suite's network: every decider in its own network namespace, joined by a
//! bridge that lives in a namespace of its own (so the host's firewall, Docker's FORWARD
//! DROP among it, never sees the traffic), and the test process in the root namespace on
//! that bridge too, as the clients. Partitions are iptables rules inside a node's
//! namespace: a node can be cut from its peers while clients still reach it.
//!
//! Needs root (ip netns, iptables), as the machine the suite runs on gives.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::cluster_client::ClusterClient;
use ratchet_proto::v1::decision_client::DecisionClient;
use tonic::transport::{Channel, Endpoint};

use crate::delay::{self, Cuts, Latency};

fn run(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed (the fault suite needs root, iproute2 and iptables): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A bridge in its own namespace, and the root namespace's address on it.
pub struct Net {
    /// Distinguishes this run's namespaces and links from a concurrent run's.
    tag: String,
    subnet: u8,
    nodes: Vec<String>,
    /// What the delaying proxies between regions hold back (see `delay`).
    cuts: Cuts,
}

/// The root namespace's host number on the bridge: the clients, and the delaying proxies.
pub const CLIENTS: u8 = 254;

/// An iptables chain and the option that names the peer in it.
type Direction = (&'static str, &'static str);
const INCOMING: Direction = ("INPUT", "-s");
const BOTH_WAYS: [Direction; 2] = [INCOMING, ("OUTPUT", "-d")];

impl Net {
    pub fn new() -> Net {
        static NETS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let (pid, n) = (std::process::id(), NETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        // Short enough for interface names (15 characters), unique per test and process.
        let tag = format!("rc{}x{n}", pid % 10_000);
        // One /24 per network, in 10.213.0.0/16.
        let subnet = ((pid as u64 * 7 + u64::from(n)) % 250) as u8 + 1;
        let net = Net {
            tag,
            subnet,
            nodes: Vec::new(),
            cuts: Cuts::default(),
        };
        let switch = net.switch();
        run(&["ip", "netns", "add", &switch]);
        run(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        // The clients' leg: the root namespace on the bridge.
        let (outer, inner) = (format!("{}h", net.tag), format!("{}hs", net.tag));
        run(&[
            "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &switch,
        ]);
        run(&["ip", "-n", &switch, "link", "set", &inner, "master", "br0", "up"]);
        run(&["ip", "addr", "add", &format!("{}/24", net.address(CLIENTS)), "dev", &outer]);
        run(&["ip", "link", "set", &outer, "up"]);
        net
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    pub fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, host)
    }

    /// The namespace of host `host`.
    pub fn namespace(&self, host: u8) -> String {
        format!("{}-n{host}", self.tag)
    }

    /// A namespace for host `host` (1..), on the bridge; returns its name.
    pub fn add_host(&mut self, host: u8) -> String {
        let namespace = self.namespace(host);
        let (outer, inner) = (format!("{}n{host}", self.tag), format!("{}n{host}s", self.tag));
        let switch = self.switch();
        run(&["ip", "netns", "add", &namespace]);
        run(&["ip", "-n", &namespace, "link", "set", "lo", "up"]);
        run(&[
            "ip", "link", "add", &inner, "netns", &switch, "type", "veth", "peer", "name", &outer, "netns", &namespace,
        ]);
        run(&["ip", "-n", &switch, "link", "set", &inner, "master", "br0", "up"]);
        run(&[
            "ip",
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{}/24", self.address(host)),
            "dev",
            &outer,
        ]);
        run(&["ip", "-n", &namespace, "link", "set", &outer, "up"]);
        self.nodes.push(namespace.clone());
        namespace
    }

    /// Puts distance between `from` and `to`: `from`'s connections to `to` (port 7001) go
    /// through a proxy in the root namespace that delays each byte by `latency`. Called
    /// for both directions of each pair of hosts in different regions.
    pub fn delay(&self, from: u8, to: u8, latency: Latency) {
        let listener = std::net::TcpListener::bind((self.address(CLIENTS), 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let proxy = listener.local_addr().unwrap();
        let namespace = self.namespace(from);
        run(&[
            "ip",
            "netns",
            "exec",
            &namespace,
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &self.address(to).to_string(),
            "--dport",
            "7001",
            "-j",
            "DNAT",
            "--to-destination",
            &proxy.to_string(),
        ]);
        let target = SocketAddr::new(self.address(to).into(), 7001);
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        delay::spawn(listener, from, to, target, latency, self.cuts.clone());
    }

    /// Drops everything between `host` and the other hosts of `peers` (both ways); the
    /// clients still reach it.
    pub fn isolate(&self, host: u8, peers: &[u8]) {
        for peer in peers.iter().filter(|p| **p != host) {
            self.cuts.lock().unwrap().extend([(host, *peer), (*peer, host)]);
        }
        self.drop_packets(host, peers, &BOTH_WAYS, &[]);
    }

    /// Drops what the other hosts of `peers` send to `host`, but not what it sends them: a
    /// one-way partition (the host still talks, and never hears back).
    pub fn deafen(&self, host: u8, peers: &[u8]) {
        for peer in peers.iter().filter(|p| **p != host) {
            self.cuts.lock().unwrap().insert((*peer, host));
        }
        self.drop_packets(host, peers, &[INCOMING], &[]);
    }

    /// Drops a share (0 to 1) of the packets between `host` and the other hosts of `peers`,
    /// at random, both ways: a lossy link, which TCP carries on over, slowly.
    pub fn lossy(&self, host: u8, peers: &[u8], share: f64) {
        let share = share.to_string();
        self.drop_packets(
            host,
            peers,
            &BOTH_WAYS,
            &["-m", "statistic", "--mode", "random", "--probability", &share],
        );
    }

    /// An iptables DROP rule in `host`'s namespace for each other host of `peers` in each
    /// of `directions`, matching `extra` too.
    fn drop_packets(&self, host: u8, peers: &[u8], directions: &[Direction], extra: &[&str]) {
        let namespace = self.namespace(host);
        for peer in peers.iter().filter(|p| **p != host) {
            let peer = self.address(*peer).to_string();
            for (chain, side) in directions {
                let mut rule = vec!["ip", "netns", "exec", &namespace, "iptables", "-A", chain, side, &peer];
                rule.extend_from_slice(extra);
                rule.extend(["-j", "DROP"]);
                run(&rule);
            }
        }
    }

    /// Removes every rule `isolate`, `deafen` or `lossy` added on `host`.
    pub fn heal(&self, host: u8) {
        let namespace = self.namespace(host);
        run(&["ip", "netns", "exec", &namespace, "iptables", "-F"]);
        self.cuts.lock().unwrap().retain(|(from, to)| *from != host && *to != host);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth, and so the pair.
        for namespace in self.nodes.iter().chain([&self.switch()]) {
            let _ = Command::new("ip").args(["netns", "del", namespace]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &format!("{}h", self.tag)]).status();
    }
}

/// One `ratchet decider` inside its namespace (plaintext with `--insecure`: the suite's
/// links are its own namespaces; TLS is the business of tests/tls.rs).
pub struct Node {
    pub name: String,
    pub host: u8,
    pub namespace: String,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// A node on `net`, its data directory a small filesystem of its own (a tmpfs), so
    /// that the nemesis can fill it up.
    pub fn new(net: &mut Net, dir: &Path, host: u8, config: &Path) -> Node {
        let namespace = net.add_host(host);
        let name = format!("d{host}");
        let data_dir = dir.join(&name);
        std::fs::create_dir_all(&data_dir).unwrap();
        run(&["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", data_dir.to_str().unwrap()]);
        Node {
            grpc: SocketAddr::new(net.address(host).into(), 7001),
            data_dir,
            log: dir.join(format!("{name}.log")),
            config: config.to_owned(),
            name,
            host,
            namespace,
            child: None,
        }
    }

    pub fn start(&mut self, initial_cluster: Option<&str>, extra: &[&str]) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.namespace,
                env!("CARGO_BIN_EXE_ratchet"),
                "decider",
                "--insecure",
            ])
            .args(["--name", &self.name, "--listen", &self.grpc.to_string(), "--data-dir"])
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .args(extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(members) = initial_cluster {
            command.args(["--initial-cluster", members]);
        }
        self.child = Some(command.spawn().expect("ratchet starts"));
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs the program: the child is the decider itself.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the node to exit (a leader hands over first).
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = super::common::terminate(&mut child, &self.name);
            assert!(
                status.success(),
                "{} did not stop cleanly on SIGTERM: {status}\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Whether the process has exited by itself (its Raft stopped: a full disk, say).
    pub fn has_exited(&mut self) -> bool {
        let exited = self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            self.child = None;
        }
        exited
    }

    /// Fills the data directory's filesystem to the last byte (the node keeps writing
    /// meanwhile, so it is filled by writing until the filesystem refuses).
    pub fn fill_disk(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.filler()).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let block = vec![0u8; chunk];
            while filler.write_all(&block).and_then(|()| filler.flush()).is_ok() {}
        }
    }

    /// Frees what `fill_disk` took.
    pub fn free_disk(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    fn filler(&self) -> PathBuf {
        self.data_dir.join("filler")
    }

    /// Loses the node's volume: everything in its data directory.
    pub fn wipe(&self) {
        for entry in std::fs::read_dir(&self.data_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            run(&["kill", &format!("-{signal}"), &child.id().to_string()]);
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    pub async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_channel().await {
                Ok(channel) => return channel,
                Err(e) if Instant::now() > deadline => panic!("{} unreachable: {e}\n{}", self.name, self.log()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    pub async fn decision(&self) -> DecisionClient<Channel> {
        DecisionClient::new(self.channel().await)
    }

    pub async fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel().await)
    }

    pub async fn status(&self, digest: bool) -> Option<pb::StatusResponse> {
        let channel = self.try_channel().await.ok()?;
        let request = pb::StatusRequest { state_digest: digest };
        Some(ClusterClient::new(channel).status(request).await.ok()?.into_inner())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("CONT");
        }
        self.kill9();
        let _ = Command::new("umount").arg(&self.data_dir).status();
    }
}

/// A process other than a decider (an edge, smtp-sink) in a host's namespace, its stderr
/// in `log`; killed when dropped.
pub struct Hosted(Child);

impl Drop for Hosted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn in_namespace(namespace: &str, program: &str, args: &[&str], log: &Path) -> Hosted {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", namespace, program])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} in {namespace}: {e}"));
    Hosted(child)
}
