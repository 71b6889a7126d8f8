//! The processes a benchmark starts: `ratchet decider` nodes and clusters, `ratchet edge`,
//! and the anchors' servers (redis-server, smtp-sink; etcd's three members are in `etcd`).
//! Every process is killed when its handle drops, so a failed benchmark leaves nothing
//! running. Also: free loopback ports, waiting for a listener, a bare HTTP GET for /readyz
//! and /metrics, and VmRSS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

/// A loopback port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{what} is not listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `GET path` over HTTP/1.0: the status code and the body, or None if unreachable.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// The sum of a Prometheus metric's samples whose line starts with `prefix`.
pub fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One child process, killed (SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Spawns `program args`, stdout discarded, stderr appended to `log`.
    pub fn spawn(what: &str, program: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Proc> {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {what} ({})", program.display()))?;
        Ok(Proc { child: Some(child) })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// kill -9, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to a minute) for the process to exit, as Kubernetes does.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        anyhow::ensure!(sent.success(), "could not send SIGTERM to process {}", child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "process {} still running a minute after SIGTERM",
                child.id()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Resident memory, KiB (VmRSS in /proc/PID/status).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Where the binaries are, and where benchmarks put data and logs.
#[derive(Clone)]
pub struct Env {
    pub ratchet: PathBuf,
    pub work: PathBuf,
}

/// A cluster CA and the certificates a TLS benchmark needs (made by `ratchet certs`):
/// `peer` for deciders, `bench` (admin) for the load generator's admin calls and
/// `bench-edge` (edge) for its Decide calls, as an edge makes them.
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    pub fn make(env: &Env) -> anyhow::Result<Certs> {
        let dir = env.work.join("certs");
        let certs = |args: &[&str]| -> anyhow::Result<()> {
            let output = std::process::Command::new(&env.ratchet)
                .arg("certs")
                .args(args)
                .arg("--dir")
                .arg(&dir)
                .output()?;
            anyhow::ensure!(
                output.status.success(),
                "ratchet certs {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        };
        certs(&["init"])?;
        certs(&["issue", "--role", "peer", "--name", "peer"])?;
        certs(&["issue", "--role", "admin", "--name", "bench"])?;
        certs(&["issue", "--role", "edge", "--name", "bench-edge"])?;
        Ok(Certs { dir })
    }

    pub fn files(&self, name: &str) -> ratchet_tls::TlsFiles {
        ratchet_tls::TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
            ca: self.dir.join("ca.pem"),
        }
    }
}

/// One `ratchet decider` node.
pub struct Decider {
    pub name: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    config: PathBuf,
    rust_log: String,
    ratchet: PathBuf,
    pub proc: Option<Proc>,
    /// Mutual TLS on its listeners, and for the benchmark's own calls to it.
    tls: Option<DeciderTls>,
}

struct DeciderTls {
    files: ratchet_tls::TlsFiles,
    admin: ratchet_tls::Dialer,
    edge: ratchet_tls::Dialer,
}

/// RUST_LOG for deciders: the binary's default (openraft warnings only).
pub const QUIET_LOG: &str = "info,openraft=warn,h2=warn,tower=warn";

impl Decider {
    pub fn new(env: &Env, name: &str, config_toml: &str, rust_log: &str) -> anyhow::Result<Decider> {
        let config = env.work.join(format!("{name}.toml"));
        std::fs::write(&config, config_toml)?;
        Ok(Decider {
            name: name.to_owned(),
            grpc: free_port(),
            http: free_port(),
            data_dir: env.work.join(name),
            log: env.work.join(format!("{name}.log")),
            config,
            rust_log: rust_log.to_owned(),
            ratchet: env.ratchet.clone(),
            proc: None,
            tls: None,
        })
    }

    /// Serves mutual TLS with the peer certificate of `certs`; the benchmark calls as admin.
    pub fn with_tls(mut self, certs: &Certs) -> anyhow::Result<Decider> {
        self.tls = Some(DeciderTls {
            files: certs.files("peer"),
            admin: ratchet_tls::Dialer::new(Some(&certs.files("bench")), None)?,
            edge: ratchet_tls::Dialer::new(Some(&certs.files("bench-edge")), None)?,
        });
        Ok(self)
    }

    /// Starts the node; `initial_cluster` only for a founding start.
    pub fn start(&mut self, initial_cluster: Option<&str>) -> anyhow::Result<()> {
        let mut args: Vec<String> = ["--log-format", "json", "decider", "--name", &self.name, "--data-dir"]
            .map(String::from)
            .to_vec();
        args.push(self.data_dir.display().to_string());
        args.extend(["--listen".into(), self.grpc.to_string(), "--http".into(), self.http.to_string()]);
        args.extend(["--config".into(), self.config.display().to_string()]);
        if let Some(DeciderTls { files, .. }) = &self.tls {
            for (flag, path) in [("--cert", &files.cert), ("--key", &files.key), ("--ca", &files.ca)] {
                args.extend([flag.to_owned(), path.display().to_string()]);
            }
        }
        if let Some(members) = initial_cluster {
            args.extend(["--initial-cluster".into(), members.to_owned()]);
        }
        let env = [("RUST_LOG", self.rust_log.as_str())];
        self.proc = Some(Proc::spawn(
            &format!("decider {}", self.name),
            &self.ratchet,
            &args,
            &env,
            &self.log,
        )?);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// Stops the node with SIGTERM and waits for it to exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        match self.proc.take() {
            Some(mut proc) => proc.terminate().await,
            None => Ok(()),
        }
    }

    pub fn is_ready(&self) -> bool {
        match &self.tls {
            None => http_get(self.http, "/readyz").is_some_and(|(code, _)| code == 200),
            // Over HTTPS (open to anyone, no client certificate needed).
            Some(_) => std::process::Command::new("curl")
                .args(["-skf", "-o", "/dev/null", &format!("https://{}/readyz", self.http)])
                .status()
                .is_ok_and(|status| status.success()),
        }
    }

    pub fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while !self.is_ready() {
            if Instant::now() > deadline {
                bail!("decider {} not ready within {within:?}; see {}", self.name, self.log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// A connection for admin calls.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        self.connect(self.tls.as_ref().map(|tls| &tls.admin)).await
    }

    /// A connection for Decide, as an edge (role edge under TLS).
    pub async fn edge_channel(&self) -> anyhow::Result<Channel> {
        self.connect(self.tls.as_ref().map(|tls| &tls.edge)).await
    }

    async fn connect(&self, dialer: Option<&ratchet_tls::Dialer>) -> anyhow::Result<Channel> {
        match dialer {
            None => Ok(Channel::from_shared(format!("http://{}", self.grpc))?.connect().await?),
            Some(dialer) => Ok(dialer.connect(dialer.endpoint(&self.grpc.to_string())?).await?),
        }
    }

    pub async fn status(&self) -> Option<pb::StatusResponse> {
        let channel = self.channel().await.ok()?;
        let reply = ClusterClient::new(channel).status(pb::StatusRequest::default()).await.ok()?;
        Some(reply.into_inner())
    }
}

/// Founding members of one group, started together.
pub struct Cluster {
    pub nodes: Vec<Decider>,
}

impl Cluster {
    pub fn start(env: &Env, prefix: &str, size: usize, config_toml: &str) -> anyhow::Result<Cluster> {
        let mut nodes = (0..size)
            .map(|i| Decider::new(env, &format!("{prefix}{i}"), config_toml, QUIET_LOG))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let initial_cluster = nodes.iter().map(|n| format!("{}={}", n.name, n.grpc)).collect::<Vec<_>>().join(",");
        for node in &mut nodes {
            node.start(Some(&initial_cluster))?;
        }
        Ok(Cluster { nodes })
    }

    /// Starts `size` founding members, then waits until they agree on a leader and every
    /// one is ready; returns the group and its leader's index.
    pub async fn start_serving(env: &Env, prefix: &str, size: usize, config_toml: &str) -> anyhow::Result<(Cluster, usize)> {
        let cluster = Cluster::start(env, prefix, size, config_toml)?;
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        for node in &cluster.nodes {
            node.wait_ready(Duration::from_secs(30))?;
        }
        Ok((cluster, leader))
    }

    /// Admin clients for `workers` load workers, worker `w` on its own connection to node
    /// `w % size`, as operators spread over deciders (followers forward writes to the leader).
    pub async fn spread_admin_clients(&self, workers: usize) -> anyhow::Result<Vec<AdminClient<Channel>>> {
        let mut clients = Vec::with_capacity(workers);
        for worker in 0..workers {
            clients.push(AdminClient::new(self.nodes[worker % self.nodes.len()].channel().await?));
        }
        Ok(clients)
    }

    /// The index of the node every running node agrees leads, once all are ready.
    pub async fn wait_leader(&self, within: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let mut statuses = Vec::new();
            for node in self.nodes.iter().filter(|n| n.proc.is_some()) {
                statuses.push(node.status().await);
            }
            let leaders: Vec<u64> = statuses.iter().flatten().map(|s| s.leader_id).collect();
            if statuses.iter().all(Option::is_some) && leaders[0] != 0 && leaders.windows(2).all(|w| w[0] == w[1]) {
                let leader = statuses.iter().flatten().find(|s| s.node_id == leaders[0]);
                if let Some(leader) = leader {
                    let name = &leader.node_name;
                    return Ok(self.nodes.iter().position(|n| &n.name == name).expect("a member"));
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {within:?}: {statuses:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Adds a tenant and one connector, through `node`.
pub async fn add_tenant(node: &Decider, tenant: &str, cidr: &str) -> anyhow::Result<()> {
    add_tenant_via(&mut AdminClient::new(node.channel().await?), tenant, cidr).await
}

/// Adds a tenant, then its connector, through `admin`: done once both are acknowledged.
pub async fn add_tenant_via(admin: &mut AdminClient<Channel>, tenant: &str, cidr: &str) -> anyhow::Result<()> {
    admin.add_tenant(pb::AddTenantRequest { name: tenant.into() }).await?;
    admin
        .add_connector(pb::AddConnectorRequest {
            tenant: tenant.into(),
            cidr: cidr.into(),
            cert_name: String::new(),
        })
        .await?;
    Ok(())
}

/// A Decide request from `client_ip` for a message stamped by `server_fqdn` with `build`.
pub fn decide_request(client_ip: &str, server_fqdn: String, build: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        connection: Some(pb::ConnectionFacts {
            client_ip: client_ip.into(),
            tls_client_cert_name: String::new(),
        }),
        server_fqdn,
        build: build.into(),
        linearizable: false,
    }
}

/// An Exchange 2013 build (out of date: a new server's first sighting goes through consensus).
pub const OUT_OF_DATE_BUILD: &str = "15.0.1497.48";
/// An Exchange SE build (compliant).
pub const COMPLIANT_BUILD: &str = "15.2.2562.17";

/// Total size of the files under `dir`, bytes.
pub fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
