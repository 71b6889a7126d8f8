//! Real `ratchet decider` processes on loopback, for end-to-end tests: start, kill -9,
//! restart with the same data directory, and gRPC clients to each node.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::cluster_client::ClusterClient;
use ratchet_proto::v1::decision_client::DecisionClient;
use ratchet_tls::Dialer;
use tempfile::TempDir;
use tonic::transport::Channel;

/// Fast timeouts so that tests see elections in well under a second.
pub const TEST_CONFIG: &str = "heartbeat_ms = 100\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n";

/// A loopback port that was free a moment ago. Ports are taken in turn (never the same one
/// twice in a test binary, whose tests run at once) from below the kernel's ephemeral range
/// (32768-60999 on Linux): a port the kernel hands out for `:0` is soon handed out again to
/// some test's outgoing connection, and the process meant to listen on it then cannot.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts at its own place in the range.
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id() % PORTS, Ordering::Relaxed, Ordering::Relaxed);
    loop {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % PORTS;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap();
        }
    }
}

pub struct DeciderProcess {
    pub name: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
    config: PathBuf,
    /// Extra environment variables for the process (e.g. OpenTelemetry settings).
    pub env: Vec<(String, String)>,
    /// Arguments given at every start (e.g. `--cert`, `--key`, `--ca`).
    pub args: Vec<String>,
    /// How the test dials this node: plaintext, or TLS with a test certificate.
    pub dialer: Dialer,
    child: Option<Child>,
}

impl DeciderProcess {
    /// Starts the node; `initial_cluster` is passed only when given (a founding start).
    pub fn start(&mut self, initial_cluster: Option<&str>, extra: &[&str]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ratchet"));
        command
            .args(["decider", "--name", &self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", &self.grpc.to_string(), "--http", &self.http.to_string(), "--config"])
            .arg(&self.config)
            .args(&self.args)
            .args(extra)
            .env("RUST_LOG", "info,openraft=info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(members) = initial_cluster {
            command.args(["--initial-cluster", members]);
        }
        self.child = Some(command.spawn().expect("ratchet binary starts"));
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Stops the node with SIGTERM, as Kubernetes does, and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        super::terminate(&mut child, &self.name)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The sizes of the snapshot files the node keeps (one, once it has built or installed
    /// a snapshot).
    pub fn snapshot_file_sizes(&self) -> Vec<u64> {
        std::fs::read_dir(self.data_dir.join("snapshots"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "snap"))
            .map(|path| path.metadata().unwrap().len())
            .collect()
    }

    /// Everything the node logged, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A channel to this node, connected now (or `Err` at once).
    pub async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        self.dialer.connect(self.dialer.endpoint(&self.grpc.to_string()).unwrap()).await
    }

    pub async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_channel().await {
                Ok(channel) => return channel,
                Err(error) if Instant::now() > deadline => panic!("{} unreachable: {error}\n{}", self.name, self.log()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The admin API, with the reply limit every real client sets (a report page of
    /// thousands of servers is over tonic's default 4 MiB).
    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await).max_decoding_message_size(ratchet_proto::limits::MAX_REPLY_BYTES)
    }

    pub async fn decision(&self) -> DecisionClient<Channel> {
        DecisionClient::new(self.channel().await)
    }

    pub async fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel().await)
    }

    pub async fn status(&self) -> Option<pb::StatusResponse> {
        let channel = self.try_channel().await.ok()?;
        ClusterClient::new(channel)
            .status(pb::StatusRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner())
    }
}

impl DeciderProcess {
    /// The node's state digest and the applied index it is at.
    pub async fn state_digest(&self) -> (u64, String) {
        let reply = ClusterClient::new(self.channel().await)
            .status(pb::StatusRequest { state_digest: true })
            .await
            .unwrap()
            .into_inner();
        (reply.digest_index, reply.state_digest)
    }
}

impl Drop for DeciderProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub nodes: Vec<DeciderProcess>,
    pub initial_cluster: String,
    _dir: TempDir,
}

impl Cluster {
    /// `ratchet ctl ARGS` against node `node`: its standard output.
    pub fn ctl(&self, node: usize, args: &[&str]) -> String {
        super::ctl(&self.nodes[node].grpc.to_string(), args)
    }

    /// What `ratchet ctl ARGS` against node `node` prints on stderr when it fails, as it must.
    pub fn ctl_refusal(&self, node: usize, args: &[&str]) -> String {
        let endpoint = self.nodes[node].grpc.to_string();
        let mut full = vec!["ctl", "--endpoints", endpoint.as_str()];
        full.extend_from_slice(args);
        super::stderr_of_failure(full)
    }

    /// `ratchet ctl --json ARGS` against node `node`, parsed.
    pub fn ctl_json(&self, node: usize, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let stdout = self.ctl(node, &full);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// Lays out `size` nodes (d0, d1, ...) without starting them.
    pub fn new(size: usize, config: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("decider.toml");
        std::fs::write(&config_path, config).unwrap();
        let nodes: Vec<DeciderProcess> = (0..size)
            .map(|i| DeciderProcess {
                name: format!("d{i}"),
                grpc: free_port(),
                http: free_port(),
                data_dir: dir.path().join(format!("d{i}")),
                log: dir.path().join(format!("d{i}.log")),
                config: config_path.clone(),
                env: Vec::new(),
                args: Vec::new(),
                dialer: Dialer::Plain,
                child: None,
            })
            .collect();
        let initial_cluster = nodes.iter().map(|n| format!("{}={}", n.name, n.grpc)).collect::<Vec<_>>().join(",");
        Cluster {
            nodes,
            initial_cluster,
            _dir: dir,
        }
    }

    /// Starts every node as a founding member, in the given order.
    pub fn found(&mut self, order: &[usize], pause_between: Duration) {
        for &i in order {
            let members = self.initial_cluster.clone();
            self.nodes[i].start(Some(&members), &[]);
            std::thread::sleep(pause_between);
        }
    }

    /// Starts the first `founders` nodes as the founding members (the rest are left to
    /// join later as learners).
    pub fn found_first(&mut self, founders: usize) {
        let members = self.nodes[..founders]
            .iter()
            .map(|n| format!("{}={}", n.name, n.grpc))
            .collect::<Vec<_>>()
            .join(",");
        for node in &mut self.nodes[..founders] {
            node.start(Some(&members), &[]);
        }
    }

    /// Waits until every running node agrees on one leader among `voters` members.
    pub async fn wait_for_leader(&self, voters: usize) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut statuses = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                statuses.push(node.status().await);
            }
            let leaders: Vec<u64> = statuses.iter().flatten().map(|s| s.leader_id).collect();
            let settled = statuses.iter().all(|s| {
                s.as_ref()
                    .is_some_and(|s| s.leader_id != 0 && s.members.iter().filter(|m| m.role != "learner").count() == voters)
            });
            if settled && leaders.windows(2).all(|w| w[0] == w[1]) {
                return leaders[0];
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.nodes.iter().map(|n| format!("--- {}\n{}", n.name, n.log())).collect();
                panic!("no agreed leader: {statuses:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn leader_index(&self) -> usize {
        let leader = self.wait_for_leader(self.nodes.len()).await;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.status().await.is_some_and(|s| s.node_id == leader) {
                return i;
            }
        }
        unreachable!("the leader is one of the nodes")
    }

    /// Waits until every running node is at the same applied index with the same state
    /// digest, and returns it; fails if they settle at one index with different states.
    pub async fn assert_same_state(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut digests = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                digests.push((node.name.clone(), node.state_digest().await));
            }
            let same_index = digests.windows(2).all(|w| w[0].1 .0 == w[1].1 .0);
            if same_index {
                assert!(
                    digests.windows(2).all(|w| w[0].1 .1 == w[1].1 .1),
                    "same applied index, different state: {digests:?}"
                );
                return digests[0].1 .1.clone();
            }
            assert!(Instant::now() < deadline, "nodes never reached one applied index: {digests:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running node has applied everything any of them has applied.
    pub async fn wait_converged(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut applied = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                applied.push(node.status().await.map(|s| s.last_applied_index));
            }
            let highest = applied.iter().flatten().max().copied().unwrap_or(0);
            if applied.iter().all(|a| a.is_some_and(|a| a >= highest)) {
                return;
            }
            assert!(Instant::now() < deadline, "nodes did not converge: {applied:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Adds a tenant with a loopback connector, through any node.
pub async fn add_tenant(admin: &mut AdminClient<Channel>, name: &str, cidr: &str) {
    admin.add_tenant(pb::AddTenantRequest { name: name.into() }).await.unwrap();
    admin
        .add_connector(pb::AddConnectorRequest {
            tenant: name.into(),
            cidr: cidr.into(),
            cert_name: String::new(),
        })
        .await
        .unwrap();
}

pub fn decide_request(client_ip: &str, server_fqdn: &str, build: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        connection: Some(pb::ConnectionFacts {
            client_ip: client_ip.into(),
            tls_client_cert_name: String::new(),
        }),
        server_fqdn: server_fqdn.into(),
        build: build.into(),
        linearizable: false,
    }
}

/// Counts answered messages as an edge does: one numbered flush (`sequence`, from 1, per
/// `origin`) of the verdict each answer's tally names.
pub async fn count_answered(decision: &mut DecisionClient<Channel>, origin: u64, sequence: u64, answers: &[pb::DecideResponse]) {
    let servers = answers
        .iter()
        .filter_map(|answer| {
            let tally = answer.tally.clone()?;
            let verdict = pb::Verdict::try_from(answer.verdict).unwrap();
            let would = pb::Verdict::try_from(answer.would_verdict).unwrap();
            let stage = pb::StageCount {
                stage: answer.stage,
                accepted: u64::from(verdict == pb::Verdict::Accept),
                throttled: u64::from(verdict == pb::Verdict::Throttle),
                blocked: u64::from(verdict == pb::Verdict::Block),
                would_throttle: u64::from(would == pb::Verdict::Throttle),
                would_block: u64::from(would == pb::Verdict::Block),
            };
            Some(pb::ServerCounts {
                tenant: answer.tenant.clone(),
                server_fqdn: tally.server_fqdn,
                build: tally.build,
                last_seen_unix_ms: tally.decided_at_unix_ms,
                stages: vec![stage],
            })
        })
        .collect();
    let flush = pb::CountRequest { origin, sequence, servers };
    decision.count(flush).await.unwrap();
}

/// A tenant's whole report: every page, its servers in one list.
pub async fn report(admin: &mut AdminClient<Channel>, tenant: &str) -> serde_json::Value {
    let mut whole: Option<serde_json::Value> = None;
    let mut page_token = String::new();
    loop {
        let request = pb::ReportRequest {
            tenant: tenant.into(),
            page_size: 0,
            page_token,
        };
        let reply = admin.report(request).await.unwrap().into_inner();
        let page: serde_json::Value = serde_json::from_str(&reply.report_json).unwrap();
        match &mut whole {
            None => whole = Some(page),
            Some(whole) => {
                let servers = page["servers"].as_array().unwrap().clone();
                whole["servers"].as_array_mut().unwrap().extend(servers);
            }
        }
        if reply.next_page_token.is_empty() {
            return whole.unwrap();
        }
        page_token = reply.next_page_token;
    }
}
