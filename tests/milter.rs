//! `ratchet milter` end to end: a real decider (its clock pinned, as in `edge_e2e.rs`), a
//! real `ratchet milter`, a private Postfix configured with `deploy/postfix/milter.cf` (the
//! README's lines) relaying to `smtp-sink`, and `swaks` as the client; and a raw milter
//! client of our own for what no MTA sends: malformed, truncated and unknown packets,
//! 10,000 headers, a 64 MiB body.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::cluster::free_port;
use common::metrics::{scrape, total};
use common::smtp::{final_reply, swaks, wait_listening, Postfix, SmtpSink};
use common::stages::{blocked, throttled, StagedDecider, COMPLIANT, OUT_OF_DATE};

/// A `ratchet milter` process with its HTTP listener.
struct MilterProcess {
    addr: SocketAddr,
    http: SocketAddr,
    child: Child,
}

impl MilterProcess {
    fn start(deciders: &str) -> MilterProcess {
        Self::start_with(deciders, &[])
    }

    fn start_with(deciders: &str, extra: &[&str]) -> MilterProcess {
        let addr = free_port();
        let (http, child) = Self::spawn(&addr.to_string(), deciders, extra);
        wait_listening(addr, "ratchet milter");
        MilterProcess { addr, http, child }
    }

    /// `ratchet milter --listen LISTEN`, with an HTTP listener of its own.
    fn spawn(listen: &str, deciders: &str, extra: &[&str]) -> (SocketAddr, Child) {
        let http = free_port();
        let child = common::ratchet()
            .args(["milter", "--listen", listen, "--deciders", deciders])
            .args(["--http", &http.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ratchet milter starts");
        (http, child)
    }

    /// Its resident memory, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("the milter is running");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    fn metric(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        total(&scrape(self.http), name, with)
    }
}

impl Drop for MilterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `deploy/postfix/milter.cf`, pointed at `milter`.
fn postfix_milter_lines(milter: SocketAddr) -> String {
    postfix_milter_lines_to(&format!("inet:{milter}"))
}

/// `deploy/postfix/milter.cf`, pointed at a milter address as Postfix writes it.
fn postfix_milter_lines_to(milter: &str) -> String {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/postfix/milter.cf");
    let lines = std::fs::read_to_string(file).expect("deploy/postfix/milter.cf");
    assert!(lines.contains("inet:127.0.0.1:8891"), "{lines}");
    lines.replace("inet:127.0.0.1:8891", milter)
}

/// A staged decider, the milter, and Postfix (with the milter) relaying to a sink.
struct Scene {
    decider: StagedDecider,
    sink: SmtpSink,
    milter: MilterProcess,
    postfix: Postfix,
}

impl Scene {
    fn start() -> Scene {
        let decider = StagedDecider::start();
        let sink = SmtpSink::start();
        let milter = MilterProcess::start(&decider.endpoint());
        let postfix = Postfix::start_with_main_cf(sink.addr, &postfix_milter_lines(milter.addr));
        Scene {
            decider,
            sink,
            milter,
            postfix,
        }
    }

    /// swaks to Postfix from `server` at `build`: Postfix's reply to the end of DATA.
    fn send(&self, server: &str, build: &str) -> String {
        final_reply(&swaks(self.postfix.addr, server, build, &[]))
    }
}

#[test]
fn postfix_with_the_milter_answers_the_edges_exact_replies() {
    let scene = Scene::start();
    let compliant = scene.decider.server_at("mt-patched", 0);
    let throttled_server = scene.decider.server_at("mt-throttled", 1);
    scene.decider.import(&throttled_server, 35);
    let blocked_server = scene.decider.server_at("mt-blocked", 0);
    scene.decider.import(&blocked_server, 100);

    let accepted = scene.send(&compliant, COMPLIANT);
    assert!(
        accepted.starts_with("250 2.0.0 Ok: queued as "),
        "{accepted}\n{}",
        scene.postfix.log()
    );
    assert_eq!(scene.send(&throttled_server, OUT_OF_DATE), throttled(5));
    assert_eq!(scene.send(&blocked_server, OUT_OF_DATE), blocked(60));

    let messages = scene.sink.wait_for_messages(1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(scene.sink.messages().len(), 1, "only the compliant message reached the sink");
    assert!(messages[0].contains(&format!("by {compliant}")), "{}", messages[0]);
    for (verdict, count) in [("accept", 1.0), ("throttle", 1.0), ("block", 1.0), ("no_verdict", 0.0)] {
        assert_eq!(
            scene.milter.metric("ratchet_milter_messages_total", &[("verdict", verdict)]),
            count,
            "{verdict}"
        );
    }
    assert_eq!(scene.milter.metric("ratchet_milter_decide_duration_seconds_count", &[]), 3.0);

    // Counted as the edge counts: each verdict given, once, in the decider's report.
    let counted = |server: &str, verdict: &str| -> u64 {
        let report = common::ctl(&scene.decider.endpoint(), &["--json", "report", "--tenant", common::stages::TENANT]);
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        let servers = report["servers"].as_array().unwrap().clone();
        let row = servers.into_iter().find(|s| s["server_fqdn"] == server);
        let stages = row.map(|r| r["counters"].as_object().unwrap().clone()).unwrap_or_default();
        stages.values().map(|c| c[verdict].as_u64().unwrap()).sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counted(&blocked_server, "blocked") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        (
            counted(&compliant, "accepted"),
            counted(&throttled_server, "throttled"),
            counted(&blocked_server, "blocked")
        ),
        (1, 1, 1)
    );
}

#[test]
fn postfix_reaches_the_milter_on_a_unix_socket() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let decider = StagedDecider::start();
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    // Postfix's smtpd runs as the postfix user: it must reach the socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (socket, config) = (dir.path().join("milter.sock"), dir.path().join("milter.toml"));
    std::fs::write(&config, "socket_mode = \"0666\"\n").unwrap();
    let listen = format!("unix:{}", socket.display());
    let (_http, child) = MilterProcess::spawn(&listen, &decider.endpoint(), &["--config", &config.display().to_string()]);
    let mut milter = KilledOnDrop(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
        assert!(std::time::Instant::now() < deadline, "no socket at {}", socket.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "socket_mode");

    let postfix = Postfix::start_with_main_cf(sink.addr, &postfix_milter_lines_to(&listen));
    let compliant = decider.server_at("mt-unix-patched", 0);
    let blocked_server = decider.server_at("mt-unix-blocked", 0);
    decider.import(&blocked_server, 100);
    let send = |server: &str, build| final_reply(&swaks(postfix.addr, server, build, &[]));
    let accepted = send(&compliant, COMPLIANT);
    assert!(accepted.starts_with("250 2.0.0 Ok: queued as "), "{accepted}\n{}", postfix.log());
    assert_eq!(send(&blocked_server, OUT_OF_DATE), blocked(60));

    // Stopped, the milter removes its socket file.
    assert!(common::terminate(&mut milter.0, "ratchet milter").success());
    assert!(!socket.exists(), "the socket file is gone");
}

/// A child killed when the test ends, however it ends.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn without_deciders_or_milter_postfix_tempfails_and_delivers_nothing() {
    let mut scene = Scene::start();
    let server = scene.decider.server_at("mt-orphan", 0);
    assert!(scene.send(&server, COMPLIANT).starts_with("250 "), "the path works first");
    scene.sink.wait_for_messages(1);

    scene.decider.cluster.nodes[0].kill9();
    // A server asked about before may still be answered from the verdict it got, until
    // the end of its minute; one never asked about has no verdict to go by.
    let unasked = scene.decider.server_at("mt-unasked", 0);
    assert_eq!(
        scene.send(&unasked, COMPLIANT),
        "451 4.4.3 Decision service unavailable, try again later"
    );
    assert!(scene.milter.metric("ratchet_milter_messages_total", &[("verdict", "no_verdict")]) >= 1.0);

    // The milter itself gone: Postfix's milter_default_action = tempfail.
    let _ = scene.milter.child.kill();
    let _ = scene.milter.child.wait();
    let reply = scene.send(&server, COMPLIANT);
    assert!(reply.starts_with("451 4.7.1 "), "{reply}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(scene.sink.messages().len(), 1, "nothing got through without a verdict");
}

/// A milter client as an MTA is one, for packets no MTA sends.
struct RawClient {
    stream: TcpStream,
}

/// One packet as the milter answered it: its command code and data.
type Packet = (u8, Vec<u8>);

/// Every protocol flag of milter version 6, as Postfix offers them.
const EVERY_STEP: u32 = 0x1f_ffff;
const NR_HEADER: u32 = 0x80;
const NR_CONNECT: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
/// The flags by which an MTA offers not to wait for an answer (SMFIP_NR_*).
const NO_REPLY: u32 = NR_HEADER | 0x000f_f000;
/// CONNECT from 127.0.0.1, port 25.
const CONNECT: &[u8] = b"mta.test\x004\x00\x19127.0.0.1\x00";

impl RawClient {
    fn connect(milter: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(milter).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        RawClient { stream }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send(&mut self, code: u8, data: &[u8]) -> std::io::Result<()> {
        let mut packet = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        packet.push(code);
        packet.extend_from_slice(data);
        self.send_raw(&packet)
    }

    /// The next packet, or `None` once the milter has closed the connection.
    fn read(&mut self) -> Option<Packet> {
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).ok()?;
        let mut packet = vec![0u8; u32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut packet).ok()?;
        let code = *packet.first()?;
        Some((code, packet[1..].to_vec()))
    }

    /// Sends a command and reads its answer.
    fn ask(&mut self, code: u8, data: &[u8]) -> Option<Packet> {
        self.send(code, data).ok()?;
        self.read()
    }

    /// As an MTA that waits for an answer to every command: option negotiation without the
    /// no-reply flags, CONNECT from 127.0.0.1 and HELO, all answered.
    fn open(milter: SocketAddr) -> RawClient {
        let mut client = RawClient::connect(milter);
        let agreed = client.negotiate(EVERY_STEP & !NO_REPLY);
        assert_eq!(agreed & NO_REPLY, 0, "no no-reply flag that was not offered");
        let (code, _) = client.ask(b'C', CONNECT).expect("connect answered");
        assert_eq!(code, b'c');
        let (code, _) = client.ask(b'H', b"mta.test\x00").expect("helo answered");
        assert_eq!(code, b'c');
        client
    }

    /// As Postfix: it offers the no-reply flags, and the milter takes those of CONNECT, HELO
    /// and headers, which then go unanswered.
    fn open_unanswered(milter: SocketAddr) -> RawClient {
        let mut client = RawClient::connect(milter);
        let agreed = client.negotiate(EVERY_STEP);
        assert_eq!(agreed & NO_REPLY, NR_CONNECT | NR_HELO | NR_HEADER, "{agreed:#x}");
        client.send(b'C', CONNECT).unwrap();
        client.send(b'H', b"mta.test\x00").unwrap();
        client
    }

    /// Option negotiation offering `protocol`: what the milter agreed to.
    fn negotiate(&mut self, protocol: u32) -> u32 {
        let mut optneg = 6u32.to_be_bytes().to_vec();
        optneg.extend(0x1ffu32.to_be_bytes());
        optneg.extend(protocol.to_be_bytes());
        let (code, data) = self.ask(b'O', &optneg).expect("option negotiation answered");
        assert_eq!(code, b'O');
        u32::from_be_bytes(data[8..12].try_into().unwrap())
    }

    fn header(&mut self, name: &str, value: &str) -> Option<Packet> {
        self.ask(b'L', format!("{name}\0{value}\0").as_bytes())
    }

    /// The milter closed the connection: the next read finds its end, not a packet and not
    /// the read timeout.
    fn closed(&mut self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        let mut length = [0u8; 4];
        match self.stream.read_exact(&mut length) {
            Ok(()) => false,
            Err(e) => matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe),
        }
    }
}

fn reply_text((code, data): &Packet) -> String {
    assert_eq!(*code, b'y', "a reply code packet");
    String::from_utf8_lossy(data).trim_end_matches('\0').to_owned()
}

const COMPLIANT_STAMP: &str = "from exch1.bear.local (10.0.0.5) by exch1.bear.local (10.0.0.5) with Microsoft SMTP Server id 15.2.2562.17; Mon, 20 May 2024 10:00:00 +0000";

/// A well-formed message from a compliant server: accepted ('c' at the end).
fn assert_serves(milter: &MilterProcess) {
    let mut client = RawClient::open(milter.addr);
    assert_eq!(client.header("Received", COMPLIANT_STAMP).map(|p| p.0), Some(b'c'));
    assert_eq!(client.ask(b'N', b"").map(|p| p.0), Some(b'a'), "accepted at the end of its headers");
}

#[test]
fn bad_input_gets_a_protocol_error_or_tempfail_and_memory_stays_bounded() {
    let decider = StagedDecider::start();
    let mut milter = MilterProcess::start(&decider.endpoint());
    assert_serves(&milter);
    let baseline = milter.rss_bytes();

    // Malformed: a CONNECT whose family is no family.
    let mut client = RawClient::open(milter.addr);
    client.send(b'C', b"mta.test\0Z\0\x19x\0").unwrap();
    assert!(client.closed(), "a malformed packet ends the connection");
    // Unknown command code.
    let mut client = RawClient::open(milter.addr);
    client.send(b'Z', b"what").unwrap();
    assert!(client.closed(), "an unknown command ends the connection");
    // A packet that announces 64 MiB at once.
    let mut client = RawClient::open(milter.addr);
    client.send_raw(&(64u32 << 20).to_be_bytes()).unwrap();
    assert!(client.closed(), "an oversized packet ends the connection");
    // Truncated: the length says 100, 10 bytes come, then the MTA hangs up.
    let mut client = RawClient::open(milter.addr);
    client.send_raw(&100u32.to_be_bytes()).unwrap();
    client.send_raw(b"Lfrom\0x\0ab").unwrap();
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(client.closed(), "a truncated packet ends the connection");
    assert_eq!(milter.metric("ratchet_milter_protocol_errors_total", &[]), 4.0);

    // 10,000 headers of 150 bytes: the one that crosses max_header_bytes (256 KiB) and every
    // one after it get 451 4.3.4, and so does the end of the message.
    let mut client = RawClient::open(milter.addr);
    let filler = "x".repeat(130);
    let mut refused = 0;
    for i in 0..10_000 {
        let answer = client.header(&format!("X-Filler-{i:05}"), &filler).expect("every header answered");
        if answer.0 == b'y' {
            assert_eq!(
                reply_text(&answer),
                "451 4.3.4 Message header section too large for the Ratchet milter, try again later"
            );
            refused += 1;
        } else {
            assert_eq!(answer.0, b'c', "header {i}");
            assert_eq!(refused, 0, "no header is accepted after the cap: header {i}");
        }
    }
    assert!((8_000..10_000).contains(&refused), "{refused} refused");
    assert_eq!(client.ask(b'N', b"").map(|p| p.0), Some(b'y'));
    let end = client.ask(b'E', b"").expect("end of message answered");
    assert!(reply_text(&end).starts_with("451 4.3.4 "), "{}", reply_text(&end));
    assert_eq!(milter.metric("ratchet_milter_headers_over_limit_total", &[]), 1.0);

    // A 64 MiB body in chunks of 65,535 octets (Postfix's size): each one "continue", none kept.
    let mut client = RawClient::open(milter.addr);
    assert_eq!(client.header("Received", COMPLIANT_STAMP).map(|p| p.0), Some(b'c'));
    assert_eq!(client.ask(b'N', b"").map(|p| p.0), Some(b'a'));
    let chunk = vec![b'a'; 65_535];
    let mut peak = 0;
    for i in 0..(64 << 20) / chunk.len() {
        assert_eq!(client.ask(b'B', &chunk).map(|p| p.0), Some(b'c'), "chunk {i}");
        if i % 128 == 0 {
            peak = peak.max(milter.rss_bytes());
        }
    }
    assert_eq!(client.ask(b'E', b"").map(|p| p.0), Some(b'c'), "the compliant message is accepted");

    assert!(!milter.exited(), "the milter is still running");
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "milter RSS: baseline {} KiB, peak over the 64 MiB body {} KiB",
        baseline >> 10,
        peak >> 10
    );
    assert!(
        grown < 16 << 20,
        "RSS grew by {} KiB over a 64 MiB body (baseline {} KiB, peak {} KiB)",
        grown >> 10,
        baseline >> 10,
        peak >> 10
    );
    assert_serves(&milter);
}

#[test]
fn an_mta_that_offers_it_waits_only_at_the_end_of_the_headers() {
    let decider = StagedDecider::start();
    let blocked_server = decider.server_at("mt-nr-blocked", 0);
    decider.import(&blocked_server, 100);
    let milter = MilterProcess::start(&decider.endpoint());
    let mut client = RawClient::open_unanswered(milter.addr);
    // Headers go unanswered; the end of the headers says accept, or refuses.
    client.send(b'L', format!("Received\0{COMPLIANT_STAMP}\0").as_bytes()).unwrap();
    client.send(b'L', b"Subject\0compliant\0").unwrap();
    assert_eq!(client.ask(b'N', b"").map(|p| p.0), Some(b'a'));
    let stamp = format!("from {blocked_server} (10.0.0.5) by {blocked_server} (10.0.0.5) with Microsoft SMTP Server id {OUT_OF_DATE}; Mon, 20 May 2024 10:00:00 +0000");
    client.send(b'L', format!("Received\0{stamp}\0").as_bytes()).unwrap();
    let refused = client.ask(b'N', b"").expect("the end of the headers answered");
    assert_eq!(reply_text(&refused), blocked(60));
    // Past max_header_bytes, unanswered headers are refused at their end.
    client.send(b'A', b"").unwrap();
    let filler = "x".repeat(130);
    for i in 0..3_000 {
        client.send(b'L', format!("X-Filler-{i:05}\0{filler}\0").as_bytes()).unwrap();
    }
    let refused = client.ask(b'N', b"").expect("the end of the headers answered");
    assert!(reply_text(&refused).starts_with("451 4.3.4 "), "{}", reply_text(&refused));
    for (verdict, count) in [("accept", 1.0), ("block", 1.0)] {
        assert_eq!(
            milter.metric("ratchet_milter_messages_total", &[("verdict", verdict)]),
            count,
            "{verdict}"
        );
    }
}

#[test]
fn a_connection_idle_past_idle_timeout_secs_is_closed() {
    let decider = StagedDecider::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.toml");
    std::fs::write(&config, "idle_timeout_secs = 1\n").unwrap();
    let milter = MilterProcess::start_with(&decider.endpoint(), &["--config", &config.display().to_string()]);
    // An MTA that went quiet in the middle of a message.
    let mut client = RawClient::open(milter.addr);
    assert_eq!(client.header("Received", COMPLIANT_STAMP).map(|p| p.0), Some(b'c'));
    assert!(client.closed(), "closed within the client's 10 s read timeout");
    // Counted as the connection's task ends, just after the socket closed.
    let counted = std::time::Instant::now() + Duration::from_secs(5);
    while milter.metric("ratchet_milter_idle_closed_total", &[]) != 1.0 {
        assert!(std::time::Instant::now() < counted, "the idle close is counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A conversation that keeps talking is served as ever.
    assert_serves(&milter);
    assert_eq!(milter.metric("ratchet_milter_idle_closed_total", &[]), 1.0);
}

#[test]
fn mtas_outside_mta_cidrs_are_closed_and_bad_settings_named() {
    let decider = StagedDecider::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("milter.toml");
    std::fs::write(&config, "mta_cidrs = [\"192.0.2.0/24\"]\n").unwrap();
    let milter = MilterProcess::start_with(&decider.endpoint(), &["--config", &config.display().to_string()]);
    let mut client = RawClient::connect(milter.addr);
    assert!(client.closed(), "loopback is not in mta_cidrs");
    assert_eq!(
        milter.metric("ratchet_milter_refused_connections_total", &[("reason", "not_an_mta")]),
        2.0,
        "the start-up probe's connection and ours"
    );

    let stderr = common::stderr_of_failure(["milter", "--listen", "0.0.0.0:0", "--deciders", "127.0.0.1:7001"]);
    assert!(
        stderr.starts_with("ratchet: --listen 0.0.0.0:0: ") && stderr.contains("mta_cidrs"),
        "{stderr}"
    );
    let stderr = common::stderr_of_failure(["milter", "--listen", "127.0.0.1:0", "--deciders", "nowhere"]);
    assert_eq!(stderr.trim_end(), "ratchet: deciders: \"nowhere\" is not host:port");
    std::fs::write(&config, "max_header_bytes = 0\n").unwrap();
    let config = config.display().to_string();
    let stderr = common::stderr_of_failure([
        "milter",
        "--listen",
        "127.0.0.1:0",
        "--deciders",
        "127.0.0.1:7001",
        "--config",
        &config,
    ]);
    assert!(stderr.trim_end().ends_with("max_header_bytes: must be at least 1"), "{stderr}");
}
