//! Test harness for the edge's crate-level tests: an edge on 127.0.0.1, a raw SMTP client,
//! a stand-in decision service (a test double; the real decider is exercised end to end
//! elsewhere) and Postfix's `smtp-sink` as the next hop.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratchet_edge::EdgeConfig;
use ratchet_proto::v1::decision_server::{Decision, DecisionServer};
use ratchet_proto::v1::{
    decide_result, Connector, ConnectorSnapshot, CountRequest, CountResponse, DecideCall, DecideRequest, DecideResponse, DecideResult,
    Verdict, WatchConnectorsRequest,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_stream::Stream;

/// One complete SMTP reply from any stream, its lines joined by '\n'; empty at EOF.
pub async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R, limit: Duration) -> String {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(limit, reader.read_line(&mut line))
            .await
            .expect("no reply in time")
            .unwrap_or(0);
        if n == 0 {
            return lines.join("\n");
        }
        let line = line.trim_end().to_string();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return lines.join("\n");
        }
    }
}

pub const THROTTLE: &str = "450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.";
pub const BLOCK: &str = "550 5.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online blocked for 60 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.";

pub const EXCHANGE_MESSAGE: &str = "Received: from EXCH1.bear.local (10.0.0.5) by EXCH1.bear.local (10.0.0.5) with Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.1.2507.16; Mon, 20 May 2024 10:00:00 +0000\r\nFrom: a@bear.example\r\nTo: b@owl.example\r\nSubject: test\r\n\r\nHello.\r\n..leading dot\r\n";

// ---------------------------------------------------------------- edge

pub struct Edge {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Edge {
    pub async fn start(config: EdgeConfig) -> Edge {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(ratchet_edge::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        Edge {
            addr,
            stop: Some(stop),
            done,
        }
    }

    /// Starts shutdown; the returned handle resolves when `serve` returns.
    pub fn shutdown(mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let _ = self.stop.take().unwrap().send(());
        self.done
    }
}

pub fn config(deciders: &[SocketAddr], next_hop: SocketAddr) -> EdgeConfig {
    EdgeConfig {
        hostname: "edge.test".into(),
        deciders: deciders.iter().map(|a| a.to_string()).collect(),
        next_hop: next_hop.to_string(),
        accepted_domains: vec!["*".into()],
        ..EdgeConfig::default()
    }
}

/// An address where nothing listens (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------- raw client

pub struct Client {
    pub stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects and returns the client with the greeting read.
    pub async fn connect(addr: SocketAddr) -> (Client, String) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            stream: BufReader::new(stream),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    pub async fn greeted(addr: SocketAddr) -> Client {
        let (mut c, g) = Client::connect(addr).await;
        assert!(g.starts_with("220 "), "{g}");
        let r = c.cmd("EHLO client.test").await;
        assert!(r.starts_with("250"), "{r}");
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// One complete reply; multi-line replies are joined with '\n'. Empty on EOF.
    pub async fn reply(&mut self) -> String {
        self.reply_within(Duration::from_secs(10)).await
    }

    pub async fn reply_within(&mut self, limit: Duration) -> String {
        read_reply(&mut self.stream, limit).await
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// MAIL, RCPT, DATA, the message and the final dot; the last reply.
    pub async fn message(&mut self, from: &str, to: &[&str], body: &str) -> String {
        assert!(self.cmd(&format!("MAIL FROM:<{from}>")).await.starts_with("250 2.1.0"));
        for rcpt in to {
            assert!(self.cmd(&format!("RCPT TO:<{rcpt}>")).await.starts_with("250 2.1.5"));
        }
        assert!(self.cmd("DATA").await.starts_with("354"));
        self.send(body.as_bytes()).await;
        self.cmd(".").await
    }

    /// True when the server closed the connection (EOF within a few seconds).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

// ---------------------------------------------------------------- decision service double

#[derive(Clone)]
pub struct FakeDecider {
    pub verdict: Arc<Mutex<DecideResponse>>,
    pub delay: Arc<Mutex<Duration>>,
    pub connectors: Vec<Connector>,
    pub requests: Arc<Mutex<Vec<DecideRequest>>>,
    pub watches: Arc<AtomicUsize>,
    /// Every Count flush received, committed or not, in order.
    pub flushes: Arc<Mutex<Vec<CountRequest>>>,
    /// How many Count calls to answer UNAVAILABLE (after taking them) before committing.
    pub fail_counts: Arc<AtomicUsize>,
    /// Of `requests`, those asked on a DecideStream.
    pub streamed: Arc<AtomicUsize>,
    /// Answers DecideStream UNIMPLEMENTED, as a decider that predates it.
    pub without_stream: bool,
}

pub fn accept() -> DecideResponse {
    DecideResponse {
        verdict: Verdict::Accept as i32,
        tenant: "bear".into(),
        ..Default::default()
    }
}
pub fn throttle(valid_for_ms: i64) -> DecideResponse {
    DecideResponse {
        verdict: Verdict::Throttle as i32,
        tenant: "bear".into(),
        reply: THROTTLE.into(),
        throttle_min: 5,
        valid_until_unix_ms: now_ms() + valid_for_ms,
        ..Default::default()
    }
}
pub fn block() -> DecideResponse {
    DecideResponse {
        verdict: Verdict::Block as i32,
        tenant: "bear".into(),
        reply: BLOCK.into(),
        block_min: 60,
        ..Default::default()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl FakeDecider {
    /// A decider whose only tenant, "bear", owns `cidr`.
    pub fn new(cidr: &str, verdict: DecideResponse) -> Self {
        FakeDecider {
            verdict: Arc::new(Mutex::new(verdict)),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
            connectors: vec![Connector {
                tenant: "bear".into(),
                cidr: cidr.into(),
                cert_name: String::new(),
            }],
            requests: Arc::default(),
            watches: Arc::default(),
            flushes: Arc::default(),
            fail_counts: Arc::default(),
            streamed: Arc::default(),
            without_stream: false,
        }
    }

    /// The same, as a decider that predates DecideStream.
    pub fn without_stream(cidr: &str, verdict: DecideResponse) -> Self {
        FakeDecider {
            without_stream: true,
            ..FakeDecider::new(cidr, verdict)
        }
    }

    /// The scripted answer, after the scripted delay.
    async fn answer(&self, request: DecideRequest) -> DecideResponse {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.requests.lock().unwrap().push(request);
        self.verdict.lock().unwrap().clone()
    }

    pub async fn serve(self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DecisionServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Waits until an edge holds a connector watch open, and its snapshot had time to land.
    pub async fn watched(&self) {
        for _ in 0..200 {
            if self.watches.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the edge never watched connectors");
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<ConnectorSnapshot, tonic::Status>> + Send>>;
type ResultStream = Pin<Box<dyn Stream<Item = Result<DecideResult, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Decision for FakeDecider {
    async fn decide(&self, request: tonic::Request<DecideRequest>) -> Result<tonic::Response<DecideResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.answer(request.into_inner()).await))
    }

    type DecideStreamStream = ResultStream;

    /// Each call answered as Decide answers, concurrently, as the deciders do.
    async fn decide_stream(
        &self,
        request: tonic::Request<tonic::Streaming<DecideCall>>,
    ) -> Result<tonic::Response<ResultStream>, tonic::Status> {
        if self.without_stream {
            return Err(tonic::Status::unimplemented("DecideStream"));
        }
        let (results, answered) = tokio::sync::mpsc::unbounded_channel();
        let (fake, mut calls) = (self.clone(), request.into_inner());
        tokio::spawn(async move {
            while let Ok(Some(call)) = calls.message().await {
                let (fake, results) = (fake.clone(), results.clone());
                tokio::spawn(async move {
                    fake.streamed.fetch_add(1, Ordering::SeqCst);
                    let response = fake.answer(call.request.unwrap_or_default()).await;
                    let _ = results.send(Ok(DecideResult {
                        id: call.id,
                        outcome: Some(decide_result::Outcome::Response(response)),
                    }));
                });
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(answered),
        )))
    }

    async fn count(&self, request: tonic::Request<CountRequest>) -> Result<tonic::Response<CountResponse>, tonic::Status> {
        let request = request.into_inner();
        let servers = request.servers.len() as u32;
        self.flushes.lock().unwrap().push(request);
        let failing = self
            .fail_counts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(tonic::Status::unavailable("committed, but the answer was lost"));
        }
        Ok(tonic::Response::new(CountResponse { servers }))
    }

    type WatchConnectorsStream = SnapshotStream;

    async fn watch_connectors(&self, _: tonic::Request<WatchConnectorsRequest>) -> Result<tonic::Response<SnapshotStream>, tonic::Status> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        let snapshot = ConnectorSnapshot {
            connectors: self.connectors.clone(),
            applied_index: 1,
            ..Default::default()
        };
        let stream = tokio_stream::StreamExt::chain(tokio_stream::iter(vec![Ok(snapshot)]), tokio_stream::pending());
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

// ---------------------------------------------------------------- next hop: Postfix's smtp-sink

pub struct SmtpSink {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    /// `smtp-sink` on a free loopback port, dumping each transaction into a file, with
    /// extra options (e.g. `-r RCPT` to refuse recipients with 4xx, `-f .` to refuse data with 5xx).
    pub async fn start(extra: &[&str]) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let addr = dead_addr().await;
        let mut cmd = Command::new("/usr/sbin/smtp-sink");
        if is_root() {
            cmd.args(["-u", "nobody"]);
        }
        cmd.args(extra)
            .arg("-d")
            .arg(dir.path().join("%H%M%S."))
            .arg(addr.to_string())
            .arg("64");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (Debian package postfix) is needed");
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return SmtpSink { addr, dir, child };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!("smtp-sink did not start");
    }

    /// The dumped transactions (envelope lines followed by the message as received).
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
            .into_iter()
            .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
            .collect()
    }

    pub async fn wait_for_messages(&self, n: usize) -> Vec<String> {
        for _ in 0..100 {
            let m = self.messages();
            if m.len() >= n && m.iter().all(|m| m.contains("\n.\n") || m.ends_with('\n')) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.messages()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

// ---------------------------------------------------------------- next hop: a scripted sink

/// A next hop that answers from a script, for behaviours smtp-sink cannot show.
pub async fn scripted_next_hop(rcpt_reply: &'static str, data_reply: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut s = BufReader::new(stream);
                let _ = s.get_mut().write_all(b"220 scripted ESMTP\r\n").await;
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &str = if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            data_reply
                        } else {
                            continue;
                        }
                    } else {
                        let upper = line.to_ascii_uppercase();
                        if upper.starts_with("EHLO") {
                            "250-scripted\r\n250 8BITMIME"
                        } else if upper.starts_with("RCPT") {
                            rcpt_reply
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            "354 go ahead"
                        } else if upper.starts_with("QUIT") {
                            let _ = s.get_mut().write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            "250 2.0.0 ok"
                        }
                    };
                    let _ = s.get_mut().write_all(format!("{reply}\r\n").as_bytes()).await;
                }
            });
        }
    });
    addr
}
