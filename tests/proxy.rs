//! The edge behind a load balancer and behind an MTA: HAProxy with `send-proxy-v2` in
//! front of two edges, and Postfix with the edge as its `smtpd_proxy_filter` (XFORWARD),
//! each run on the configuration files of `deploy/mail-flow/` that the README shows. A
//! client on 127.0.0.7, the address of tenant bear's connector, must be attributed to bear
//! (its blocked server gets bear's 550 5.7.230 and bear's report counts it), not to the
//! proxy on 127.0.0.1, which is no tenant's: mail attributed to it is relayed unenforced.
//! And what nobody trusted may say, or what a trusted proxy garbles, changes nobody's
//! attribution.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::{free_port, Cluster, TEST_CONFIG};
use common::haproxy::Haproxy;
use common::metrics::{scrape, total};
use common::otlp::wait_http_ok;
use common::smtp::{deliver_from, EdgeProcess, Postfix, SmtpClient, SmtpSink};

const TENANT: &str = "bear";
const OUT_OF_DATE: &str = "15.0.1497.48";
const COMPLIANT: &str = "15.2.2562.17";
/// Bear's server past day 90: blocked outright.
const BLOCKED_SERVER: &str = "old.bear.local";
/// Tenant bear's connector is this address alone.
const BEAR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
/// No tenant's address: its mail is relayed without a decision.
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
/// Where HAProxy, Postfix and the tests' trusted clients connect from (deploy/mail-flow/edge.toml).
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BLOCKED: &str = "550 5.7.230 ";
const RELAYED: &str = "250 2.0.0 Ok: relayed";
const NOT_TRUSTED_PROXY: &str = "550 5.7.0 Error: insufficient authorization: the PROXY protocol is accepted only from trusted proxies";
const NOT_TRUSTED_XFORWARD: &str = "550 5.7.0 Error: insufficient authorization: XFORWARD is accepted only from trusted proxies";

/// A checked-in configuration file of deploy/mail-flow/.
fn mail_flow(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/mail-flow").join(file)
}

/// One decider with tenant bear (connector 127.0.0.7/32, its old server blocked), and a sink.
struct Scene {
    _cluster: Cluster,
    endpoint: String,
    sink: SmtpSink,
}

impl Scene {
    fn start() -> Scene {
        let mut cluster = Cluster::new(1, TEST_CONFIG);
        cluster.found(&[0], Duration::ZERO);
        let endpoint = cluster.nodes[0].grpc.to_string();
        common::wait_for_ctl(&endpoint);
        common::ctl(&endpoint, &["tenant", "add", TENANT]);
        common::ctl(
            &endpoint,
            &["connector", "add", "--tenant", TENANT, "--cidr", &format!("{BEAR}/32")],
        );
        let long_ago = (chrono::Utc::now() - chrono::TimeDelta::days(120)).to_rfc3339();
        common::import_server(&endpoint, TENANT, BLOCKED_SERVER, OUT_OF_DATE, &long_ago);
        Scene {
            _cluster: cluster,
            endpoint,
            sink: SmtpSink::start(),
        }
    }

    /// An edge on deploy/mail-flow/edge.toml relaying to `next_hop`, ready (connectors loaded).
    fn edge(&self, next_hop: SocketAddr) -> EdgeProcess {
        let http = free_port().to_string();
        let edge = EdgeProcess::start_with(&self.endpoint, next_hop, Some(&mail_flow("edge.toml")), &["--http", &http], &[]);
        wait_http_ok(edge.http.unwrap(), "/readyz", Duration::from_secs(20));
        edge
    }

    /// Bear's messages from its blocked server, as its report counts them: once it says
    /// `expected` (the counters are flushed every 500 ms), or whatever it says after 10 s.
    fn blocked_in_report(&self, expected: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let report = common::json_of(["ctl", "--endpoints", &self.endpoint, "--json", "report", "--tenant", TENANT]);
            let counted: u64 = report["servers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["server_fqdn"] == BLOCKED_SERVER)
                .flat_map(|s| s["counters"].as_object().unwrap().values())
                .map(|c| c["blocked"].as_u64().unwrap())
                .sum();
            if counted == expected || Instant::now() > deadline {
                return counted;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The one message the sink holds with `subject`, or a panic naming what it holds.
    fn relayed(&self, subject: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let messages = self.sink.messages();
            let subject_line = format!("Subject: {subject}");
            let with: Vec<&String> = messages
                .iter()
                .filter(|m| m.lines().any(|l| l.trim_end() == subject_line))
                .collect();
            if with.len() == 1 {
                return with[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} messages with subject {subject}: {messages:?}",
                with.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The message's `Received:` headers, unfolded, newest (topmost) first.
fn received_fields(message: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for line in message.lines().map(str::trim_end) {
        match fields.last_mut() {
            Some(field) if line.starts_with([' ', '\t']) => field.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }
    fields.retain(|f| f.starts_with("Received: from "));
    fields
}

/// The `Received:` header the edge wrote: it names the client the edge attributed the
/// message to.
fn edge_received(message: &str) -> String {
    received_fields(message)
        .into_iter()
        .find(|f| f.contains("(Ratchet edge)"))
        .unwrap_or_else(|| panic!("no Received: from the edge in {message}"))
}

/// The `Received:` header the Postfix after the edge wrote (the newest but the sink's own):
/// with XCLIENT it names the client the edge named, not the edge.
fn next_hop_received(message: &str) -> String {
    let newest = received_fields(message).into_iter().find(|f| !f.contains("(smtp-sink)"));
    let newest = newest.unwrap_or_else(|| panic!("no Received: but the sink's in {message}"));
    assert!(!newest.contains("(Ratchet edge)"), "no Received: after the edge's: {message}");
    newest
}

/// A PROXY v2 header (`command` 1 PROXY, 0 LOCAL) for TCP over IPv4 from `client`.
fn proxy_v2(command: u8, client: Ipv4Addr) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x20 | command, 0x11, 0, 12]);
    header.extend(client.octets());
    header.extend([127, 0, 0, 1]);
    header.extend([0x30, 0x39, 0, 25]);
    header
}

fn connect(from: IpAddr, to: SocketAddr) -> SmtpClient {
    SmtpClient::connect(Some(from), to).expect("the edge accepts connections")
}

#[test]
fn haproxy_with_send_proxy_v2_names_the_client_to_the_edges() {
    let scene = Scene::start();
    let edges = [scene.edge(scene.sink.addr), scene.edge(scene.sink.addr)];
    let listen = free_port();
    let env = [
        ("SMTP_LISTEN", listen.to_string()),
        ("EDGE1", edges[0].addr.to_string()),
        ("EDGE2", edges[1].addr.to_string()),
        ("EDGE1_HTTP_PORT", edges[0].http.unwrap().port().to_string()),
        ("EDGE2_HTTP_PORT", edges[1].http.unwrap().port().to_string()),
    ];
    let haproxy = Haproxy::start(&mail_flow("haproxy.cfg"), &env, listen);

    // Round robin: each edge gets one of bear's blocked messages.
    for i in 0..2 {
        let answer = deliver_from(Some(BEAR), haproxy.addr, BLOCKED_SERVER, OUT_OF_DATE, &format!("blocked {i}"));
        assert!(answer.starts_with(BLOCKED), "bear's blocked server through HAProxy: {answer}");
    }
    assert_eq!(scene.blocked_in_report(2), 2, "bear's report counts both");
    // The Received: line of what is relayed names the client, whoever's it is.
    for (client, subject) in [(BEAR, "compliant"), (STRANGER, "stranger")] {
        let answer = deliver_from(Some(client), haproxy.addr, "exch1.bear.local", COMPLIANT, subject);
        assert!(answer.starts_with(RELAYED), "{subject}: {answer}");
        let received = edge_received(&scene.relayed(subject));
        assert!(received.contains(&format!("([{client}])")), "{subject}: {received}");
    }
    // A stranger's mail from the blocked server's name is not bear's to block.
    let answer = deliver_from(Some(STRANGER), haproxy.addr, BLOCKED_SERVER, OUT_OF_DATE, "not bear");
    assert!(answer.starts_with(RELAYED), "{answer}");
    assert_eq!(scene.blocked_in_report(2), 2);
    let accepted: f64 = edges.iter().map(|e| claims(e, "proxy", "accepted")).sum();
    // Five sessions, and perhaps the connection with which the test saw HAProxy listen.
    assert!(
        accepted == 5.0 || accepted == 6.0,
        "every session came with a header the edges believed: {accepted}"
    );
}

/// `ratchet_edge_client_claims_total{kind, outcome}` of `edge`.
fn claims(edge: &EdgeProcess, kind: &str, outcome: &str) -> f64 {
    let samples = scrape(edge.http.unwrap());
    total(
        &samples,
        "ratchet_edge_client_claims_total",
        &[("kind", kind), ("outcome", outcome)],
    )
}

#[test]
fn untrusted_or_malformed_claims_change_nobody_s_attribution() {
    let scene = Scene::start();
    let edge = scene.edge(scene.sink.addr);

    // Bear's server claims to be a stranger with a PROXY v1 header: refused, and still bear's.
    let mut client = connect(BEAR, edge.addr);
    client.send(format!("PROXY TCP4 {STRANGER} 127.0.0.1 4711 25\r\n").as_bytes());
    assert!(client.reply().starts_with("220 "));
    assert_eq!(client.reply(), NOT_TRUSTED_PROXY);
    let answer = client.transaction(BLOCKED_SERVER, OUT_OF_DATE, "claims v1");
    assert!(answer.starts_with(BLOCKED), "{answer}");

    // A stranger claims to be bear with a v2 header: refused, and its mail not bear's.
    let mut client = connect(STRANGER, edge.addr);
    client.send(&proxy_v2(1, Ipv4Addr::new(127, 0, 0, 7)));
    assert!(client.reply().starts_with("220 "));
    assert_eq!(client.reply(), NOT_TRUSTED_PROXY);
    assert!(client.transaction(BLOCKED_SERVER, OUT_OF_DATE, "claims v2").starts_with(RELAYED));
    assert!(edge_received(&scene.relayed("claims v2")).contains(&format!("([{STRANGER}])")));

    // XFORWARD from a client not trusted: not offered, refused, changes nothing.
    let mut client = connect(STRANGER, edge.addr);
    assert!(client.reply().starts_with("220 "));
    let ehlo = client.command("EHLO stranger.example");
    assert!(ehlo.starts_with("250-") && !ehlo.contains("XFORWARD"), "{ehlo}");
    assert_eq!(
        client.command(&format!("XFORWARD ADDR={BEAR} HELO=exch1.bear.local")),
        NOT_TRUSTED_XFORWARD
    );
    assert!(client
        .transaction(BLOCKED_SERVER, OUT_OF_DATE, "xforward untrusted")
        .starts_with(RELAYED));
    assert!(edge_received(&scene.relayed("xforward untrusted")).contains(&format!("([{STRANGER}])")));

    // A trusted proxy's XFORWARD with a malformed ADDR: refused, and the transaction is the
    // proxy's own (no tenant's); a good one makes the next transaction bear's, and only it.
    let mut client = connect(PROXY, edge.addr);
    assert!(client.reply().starts_with("220 "));
    let ehlo = client.command("EHLO postfix.example");
    assert!(
        ehlo.lines().any(|l| &l[4..] == "XFORWARD NAME ADDR PORT PROTO HELO SOURCE"),
        "{ehlo}"
    );
    assert_eq!(
        client.command("XFORWARD ADDR=127.0.0.300 HELO=exch1.bear.local"),
        "501 5.5.4 Bad XFORWARD ADDR value \"127.0.0.300\": not an IP address"
    );
    assert!(client
        .transaction(BLOCKED_SERVER, OUT_OF_DATE, "xforward malformed")
        .starts_with(RELAYED));
    assert!(edge_received(&scene.relayed("xforward malformed")).contains("([127.0.0.1])"));
    assert_eq!(client.command(&format!("XFORWARD ADDR={BEAR} PROTO=ESMTP")), "250 2.0.0 Ok");
    assert!(client.transaction(BLOCKED_SERVER, OUT_OF_DATE, "xforward").starts_with(BLOCKED));
    assert!(client
        .transaction(BLOCKED_SERVER, OUT_OF_DATE, "after xforward")
        .starts_with(RELAYED));

    // A trusted proxy's malformed or truncated header: 421 naming it, and the connection closed.
    let malformed = format!("PROXY TCP4 {BEAR} nonsense 4711 25\r\nEHLO x\r\n").into_bytes();
    let truncated = proxy_v2(1, Ipv4Addr::new(127, 0, 0, 7))[..20].to_vec();
    for (header, why) in [
        (
            malformed,
            "v1 header \"PROXY TCP4 127.0.0.7 nonsense 4711 25\": Header contains invalid IP address for the destination.",
        ),
        (truncated, "header: truncated, the connection ended inside it"),
    ] {
        let mut client = connect(PROXY, edge.addr);
        client.send(&header);
        client.finish_sending();
        assert!(client.reply().starts_with("220 "));
        assert_eq!(
            client.reply(),
            format!("421 4.7.0 ratchet-edge Closing connection: malformed PROXY protocol {why}")
        );
        assert_eq!(client.reply(), "(connection closed)");
    }

    // LOCAL (a load balancer's health check): the proxy's own session.
    let mut client = connect(PROXY, edge.addr);
    client.send(&proxy_v2(0, Ipv4Addr::new(127, 0, 0, 7)));
    assert!(client.reply().starts_with("220 "));
    assert!(client.transaction(BLOCKED_SERVER, OUT_OF_DATE, "local").starts_with(RELAYED));

    // Through all of it the edge kept serving, and bear was charged for its own mail only.
    let answer = deliver_from(Some(BEAR), edge.addr, BLOCKED_SERVER, OUT_OF_DATE, "still bear");
    assert!(answer.starts_with(BLOCKED), "{answer}");
    assert_eq!(scene.blocked_in_report(3), 3, "claims v1, xforward, still bear");
    for (kind, outcome, count) in [
        ("proxy", "untrusted", 2.0),
        ("proxy", "malformed", 2.0),
        ("proxy", "local", 1.0),
        ("proxy", "accepted", 0.0),
        ("xforward", "untrusted", 1.0),
        ("xforward", "malformed", 1.0),
        ("xforward", "accepted", 1.0),
    ] {
        assert_eq!(claims(&edge, kind, outcome), count, "{kind} {outcome}");
    }
}

#[test]
fn postfix_with_the_edge_as_proxy_filter_forwards_the_client() {
    let scene = Scene::start();
    // Postfix queues what the edge relays on a second listener, and relays it to the sink.
    let filter_return = free_port();
    let edge = scene.edge(filter_return);
    let master_cf = std::fs::read_to_string(mail_flow("master.cf")).unwrap();
    let postfix = Postfix::start_with_smtpd(scene.sink.addr, &|listen| {
        master_cf
            .replace("smtp      inet", &format!("{listen} inet"))
            .replace("127.0.0.1:10025", &edge.addr.to_string())
            .replace("127.0.0.1:10026", &filter_return.to_string())
    });

    let answer = deliver_from(Some(BEAR), postfix.addr, BLOCKED_SERVER, OUT_OF_DATE, "blocked");
    assert!(
        answer.starts_with(BLOCKED),
        "bear's blocked server through Postfix: {answer}\n{}",
        postfix.log()
    );
    assert_eq!(scene.blocked_in_report(1), 1, "bear's report counts it");
    for (client, subject) in [(BEAR, "compliant"), (STRANGER, "stranger")] {
        let answer = deliver_from(Some(client), postfix.addr, "exch1.bear.local", COMPLIANT, subject);
        assert!(answer.starts_with("250 "), "{subject}: {answer}");
        let relayed = scene.relayed(subject);
        let received = edge_received(&relayed);
        assert!(
            received.starts_with(&format!("Received: from exch1.bear.local ([{client}])")),
            "{subject}: {received}"
        );
        // The edge named the client to the after-filter listener with XFORWARD, which logs it.
        let queued = next_hop_received(&relayed);
        let queue_id = queued
            .split(" with ESMTP id ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        let queue_id = queue_id.unwrap_or_else(|| panic!("no queue id in {queued}"));
        let logged = postfix.log();
        let line = logged.lines().find(|l| l.contains(&format!("{queue_id}: client=")));
        let line = line.unwrap_or_else(|| panic!("{queue_id} not logged:\n{logged}"));
        assert!(line.contains(&format!("orig_client=unknown[{client}]")), "{subject}: {line}");
    }
    assert_eq!(forwarded(&edge, "xforward", "sent"), 2.0, "one XFORWARD a relayed message");
    let answer = deliver_from(Some(STRANGER), postfix.addr, BLOCKED_SERVER, OUT_OF_DATE, "not bear");
    assert!(answer.starts_with("250 "), "{answer}");
    assert_eq!(scene.blocked_in_report(1), 1);
}

/// Relays that named the client to the next hop with `command`, by `outcome`.
fn forwarded(edge: &EdgeProcess, command: &str, outcome: &str) -> f64 {
    let metrics = scrape(edge.http.unwrap());
    total(
        &metrics,
        "ratchet_edge_client_forwarded_total",
        &[("command", command), ("outcome", outcome)],
    )
}

#[test]
fn the_edge_names_the_client_to_a_postfix_behind_it_with_xclient() {
    let scene = Scene::start();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "next_hop_forward_client = \"xclient\"\n").unwrap();
    let edge_to = |next_hop| {
        let http = free_port().to_string();
        let edge = EdgeProcess::start_with(&scene.endpoint, next_hop, Some(config.path()), &["--http", &http], &[]);
        wait_http_ok(edge.http.unwrap(), "/readyz", Duration::from_secs(20));
        edge
    };
    // Postfix in front of the sink takes XCLIENT from loopback clients, the edges.
    let postfix = Postfix::start_with_smtpd(scene.sink.addr, &|listen| {
        format!("{listen} inet n - n - - smtpd\n  -o smtpd_authorized_xclient_hosts=127.0.0.0/8")
    });
    let edge = edge_to(postfix.addr);

    let answer = deliver_from(Some(BEAR), edge.addr, "exch1.bear.local", COMPLIANT, "xclient");
    assert!(answer.starts_with("250 "), "{answer}\n{}", postfix.log());
    let queued = next_hop_received(&scene.relayed("xclient"));
    assert!(
        queued.starts_with("Received: from exch1.bear.local (unknown [127.0.0.7])"),
        "Postfix took the session as bear's server's: {queued}"
    );
    assert_eq!(forwarded(&edge, "xclient", "sent"), 1.0);
    // Enforcement is the edge's as before: bear's blocked server gets its 550, and nothing
    // reaches Postfix.
    let answer = deliver_from(Some(BEAR), edge.addr, BLOCKED_SERVER, OUT_OF_DATE, "blocked");
    assert!(answer.starts_with(BLOCKED), "{answer}");

    // A Postfix that does not authorize the edge does not offer XCLIENT: it gets the message
    // from the edge as the client, and the edge counts that.
    let unauthorized = Postfix::start(scene.sink.addr);
    let edge = edge_to(unauthorized.addr);
    let answer = deliver_from(Some(BEAR), edge.addr, "exch1.bear.local", COMPLIANT, "not authorized");
    assert!(answer.starts_with("250 "), "{answer}\n{}", unauthorized.log());
    let queued = next_hop_received(&scene.relayed("not authorized"));
    assert!(queued.contains("[127.0.0.1])"), "{queued}");
    assert_eq!(forwarded(&edge, "xclient", "not_offered"), 1.0);
    assert_eq!(forwarded(&edge, "xclient", "sent"), 0.0);
}

/// The README quotes the files these tests run, exactly (all but their opening comments).
#[test]
fn the_readme_shows_the_configurations_these_tests_run() {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    for file in ["edge.toml", "haproxy.cfg", "master.cf"] {
        let text = std::fs::read_to_string(mail_flow(file)).unwrap();
        let lines: Vec<&str> = text.lines().skip_while(|l| l.starts_with('#') || l.is_empty()).collect();
        let quoted = format!("\n{}\n```\n", lines.join("\n"));
        assert!(
            readme.contains(&quoted),
            "README.md does not quote deploy/mail-flow/{file} as it is:{quoted}"
        );
    }
}
