//! Malformed and hostile SMTP input, each with the reply it must get, against one edge
//! over real TCP while a bystander keeps completing sessions on the same edge.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

enum Step {
    /// Send these bytes.
    S(Vec<u8>),
    /// Expect one reply whose text starts with this.
    E(&'static str),
    /// Expect the server to close the connection.
    Closed,
}
use Step::*;

fn s(text: &str) -> Step {
    S(text.as_bytes().to_vec())
}

fn cases() -> Vec<(&'static str, Vec<Step>)> {
    let ehlo = || vec![s("EHLO client.test\r\n"), E("250-edge.test")];
    let with = |mut a: Vec<Step>, b: Vec<Step>| {
        a.extend(b);
        a
    };
    let big_body = format!("Subject: big\r\n\r\n{}", format!("{}\r\n", "x".repeat(998)).repeat(250));
    vec![
        ("MAIL before EHLO", vec![s("MAIL FROM:<a@b.example>\r\n"), E("503 5.5.1")]),
        (
            "RCPT before MAIL",
            with(ehlo(), vec![s("RCPT TO:<a@b.example>\r\n"), E("503 5.5.1")]),
        ),
        ("DATA before MAIL", with(ehlo(), vec![s("DATA\r\n"), E("503 5.5.1")])),
        (
            "DATA before RCPT",
            with(
                ehlo(),
                vec![s("MAIL FROM:<a@b.example>\r\n"), E("250 2.1.0"), s("DATA\r\n"), E("503 5.5.1")],
            ),
        ),
        (
            "nested MAIL",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\n"),
                    E("250"),
                    s("MAIL FROM:<c@b.example>\r\n"),
                    E("503 5.5.1"),
                ],
            ),
        ),
        ("unknown command", vec![s("XYZZY\r\n"), E("500 5.5.2")]),
        ("empty line", vec![s("\r\n"), E("500 5.5.2")]),
        ("EHLO without a domain", vec![s("EHLO\r\n"), E("501 5.5.4")]),
        ("HELO without a domain", vec![s("HELO\r\n"), E("501 5.5.4")]),
        (
            "MAIL without angle brackets",
            with(ehlo(), vec![s("MAIL FROM:a@b.example\r\n"), E("501 5.5.4")]),
        ),
        (
            "RCPT with an empty path",
            with(
                ehlo(),
                vec![s("MAIL FROM:<>\r\n"), E("250 2.1.0"), s("RCPT TO:<>\r\n"), E("501 5.1.3")],
            ),
        ),
        (
            "SIZE over the limit",
            with(ehlo(), vec![s("MAIL FROM:<a@b.example> SIZE=999999999\r\n"), E("552 5.3.4")]),
        ),
        (
            "SMTPUTF8 not advertised",
            with(ehlo(), vec![s("MAIL FROM:<a@b.example> SMTPUTF8\r\n"), E("555 5.5.4")]),
        ),
        (
            "DSN RET not advertised",
            with(ehlo(), vec![s("MAIL FROM:<a@b.example> RET=FULL\r\n"), E("555 5.5.4")]),
        ),
        (
            "unknown MAIL parameter",
            with(ehlo(), vec![s("MAIL FROM:<a@b.example> FOO=BAR\r\n"), E("555 5.5.4")]),
        ),
        (
            "DSN NOTIFY not advertised",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\n"),
                    E("250"),
                    s("RCPT TO:<c@d.example> NOTIFY=NEVER\r\n"),
                    E("555 5.5.4"),
                ],
            ),
        ),
        (
            "overlong command line, then the session goes on",
            vec![
                S([b"NOOP ".as_slice(), &[b'a'; 5000], b"\r\n"].concat()),
                E("500 5.5.2 Error: line too long"),
                s("NOOP\r\n"),
                E("250 2.0.0"),
            ],
        ),
        (
            "NUL byte in a command",
            vec![S(b"NO\0OP\r\n".to_vec()), E("500 5.5.2"), s("NOOP\r\n"), E("250 2.0.0")],
        ),
        (
            "non-UTF-8 bytes in a command",
            vec![S(b"EHLO \xff\xfe\xfd\r\n".to_vec()), E("500 5.5.2")],
        ),
        (
            "bare LF ends a command (Postfix normalize)",
            vec![s("EHLO client.test\n"), E("250-edge.test"), s("NOOP\n"), E("250 2.0.0")],
        ),
        (
            "lower-case commands",
            vec![
                s("ehlo client.test\r\n"),
                E("250-"),
                s("mail from:<a@b.example>\r\n"),
                E("250 2.1.0"),
            ],
        ),
        ("VRFY is refused politely", vec![s("VRFY root\r\n"), E("252 2.1.5")]),
        ("EXPN is not implemented", vec![s("EXPN staff\r\n"), E("502 5.5.1")]),
        ("STARTTLS is not offered", with(ehlo(), vec![s("STARTTLS\r\n"), E("502 5.5.1")])),
        (
            "AUTH is not offered",
            with(ehlo(), vec![s("AUTH PLAIN AGFAYg==\r\n"), E("502 5.5.1")]),
        ),
        ("BDAT is not offered", with(ehlo(), vec![s("BDAT 0 LAST\r\n"), E("502 5.5.1")])),
        ("HELP", vec![s("HELP\r\n"), E("214 2.0.0")]),
        ("LHLO is not SMTP", vec![s("LHLO client.test\r\n"), E("500 5.5.2")]),
        (
            "RSET clears the transaction",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\n"),
                    E("250"),
                    s("RSET\r\n"),
                    E("250 2.0.0"),
                    s("RCPT TO:<c@d.example>\r\n"),
                    E("503 5.5.1"),
                ],
            ),
        ),
        (
            "EHLO again clears the transaction",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\n"),
                    E("250"),
                    s("EHLO again.test\r\n"),
                    E("250-"),
                    s("RCPT TO:<c@d.example>\r\n"),
                    E("503 5.5.1"),
                ],
            ),
        ),
        (
            "oversized message, then the session goes on",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
                    E("250 2.1.0"),
                    E("250 2.1.5"),
                    E("354"),
                    S(big_body.into_bytes()),
                    s(".\r\n"),
                    E("552 5.3.4"),
                    s("NOOP\r\n"),
                    E("250 2.0.0"),
                ],
            ),
        ),
        (
            "NUL byte in the message",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
                    E("250"),
                    E("250"),
                    E("354"),
                    S(b"Subject: x\r\n\r\na\0b\r\n.\r\n".to_vec()),
                    E("550 5.6.0"),
                ],
            ),
        ),
        (
            "overlong content line",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
                    E("250"),
                    E("250"),
                    E("354"),
                    S([b"Subject: x\r\n\r\n".as_slice(), &[b'y'; 70_000], b"\r\n.\r\n"].concat()),
                    E("500 5.5.2"),
                ],
            ),
        ),
        (
            "a dot after a bare LF does not end DATA",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
                    E("250"),
                    E("250"),
                    E("354"),
                    s("Subject: x\r\n\r\nhi\n.\nNOOP\r\n.\nNOOP\r\n"),
                    s(".\r\n"),
                    E("250 2.0.0"),
                ],
            ),
        ),
        (
            "too many errors end the session",
            (0..20)
                .flat_map(|_| [s("BOGUS\r\n"), E("500 5.5.2")])
                .chain([E("421 4.7.0"), Closed])
                .collect(),
        ),
        (
            "a whole transaction pipelined in one write",
            vec![
                s("EHLO client.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\nDATA\r\n"),
                E("250-edge.test"),
                E("250 2.1.0"),
                E("250 2.1.5"),
                E("250 2.1.5"),
                E("354"),
                s("Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n"),
                E("250 2.0.0"),
                E("221 2.0.0"),
                Closed,
            ],
        ),
        (
            "an HTTP request on the SMTP port",
            vec![
                s("GET / HTTP/1.1\r\nHost: edge\r\n\r\n"),
                E("500 5.5.2"),
                E("500 5.5.2"),
                E("500 5.5.2"),
            ],
        ),
        ("QUIT closes", vec![s("QUIT\r\n"), E("221 2.0.0"), Closed]),
        ("a client that goes silent times out", with(ehlo(), vec![E("421 4.4.2"), Closed])),
        (
            "a client that stalls inside DATA times out",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
                    E("250"),
                    E("250"),
                    E("354"),
                    s("Subject: x\r\n"),
                    E("421 4.4.2"),
                    Closed,
                ],
            ),
        ),
        (
            "a client that vanishes mid-DATA",
            with(
                ehlo(),
                vec![
                    s("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"),
                    E("250"),
                    E("250"),
                    E("354"),
                    s("Subject: x\r\n"),
                ],
            ),
        ),
    ]
}

async fn run_case(edge: std::net::SocketAddr, name: &str, steps: Vec<Step>) {
    let (mut c, greeting) = Client::connect(edge).await;
    assert!(greeting.starts_with("220 edge.test"), "{name}: greeting {greeting:?}");
    for step in steps {
        match step {
            S(bytes) => c.send(&bytes).await,
            E(prefix) => {
                let reply = c.reply().await;
                let last = reply.lines().last().unwrap_or("");
                let first = reply.lines().next().unwrap_or("");
                assert!(
                    first.starts_with(prefix) || last.starts_with(prefix),
                    "{name}: expected {prefix:?}, got {reply:?}"
                );
            }
            Closed => assert!(c.closed().await, "{name}: connection left open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_their_rfc_replies_while_others_are_served() {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let decider_addr = decider.clone().serve().await;
    let sink = SmtpSink::start(&[]).await;
    let mut cfg = config(&[decider_addr], sink.addr);
    cfg.max_message_size = 100_000;
    cfg.command_timeout_secs = 2;
    cfg.data_timeout_secs = 2;
    let edge = Edge::start(cfg).await;
    decider.watched().await;

    // A bystander completes whole sessions all along.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let bystander = {
        let (stop, served, addr) = (stop.clone(), served.clone(), edge.addr);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let mut c = Client::greeted(addr).await;
                let r = c
                    .message("a@b.example", &["c@d.example"], "Subject: bystander\r\n\r\nhello\r\n")
                    .await;
                assert!(r.starts_with("250 2.0.0"), "bystander got {r}");
                assert!(c.cmd("QUIT").await.starts_with("221"));
                served.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let cases = cases();
    assert!(cases.len() >= 30);
    let mut slow = Vec::new();
    for (name, steps) in cases {
        if name.contains("times out") {
            slow.push(tokio::spawn(run_case(edge.addr, name, steps)));
        } else {
            run_case(edge.addr, name, steps).await;
        }
    }
    for t in slow {
        t.await.unwrap();
    }

    // A slow-loris line (one byte at a time, never a newline) is cut at the deadline.
    let (mut c, _) = Client::connect(edge.addr).await;
    let started = Instant::now();
    for b in b"NOOP NOOP NOOP NOOP NOOP NOOP".iter().cycle() {
        if c.stream.get_mut().try_write(&[*b]).is_err() || started.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(c.reply().await.starts_with("421 4.4.2"));

    stop.store(true, Ordering::SeqCst);
    bystander.await.unwrap();
    assert!(
        served.load(Ordering::SeqCst) >= 5,
        "bystander served only {} times",
        served.load(Ordering::SeqCst)
    );

    // Only the bystander's and the two well-formed test messages reached the next hop;
    // the smuggled "NOOP" lines stayed content of one message.
    let messages = sink.wait_for_messages(served.load(Ordering::SeqCst) + 2).await;
    let smuggled: Vec<_> = messages.iter().filter(|m| m.contains("hi")).collect();
    assert_eq!(smuggled.len(), 1, "{messages:#?}");
    assert_eq!(decider.calls(), 0, "strangers' mail must not reach the decision service");
    edge.shutdown().await.unwrap().unwrap();
}

#[tokio::test]
async fn ten_thousand_recipients_get_452_past_the_limit() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let decider_addr = decider.clone().serve().await;
    let edge = Edge::start(config(&[decider_addr], dead_addr().await)).await;
    let (read, mut write) = tokio::net::TcpStream::connect(edge.addr).await.unwrap().into_split();
    let mut batch = String::from("EHLO client.test\r\nMAIL FROM:<a@b.example>\r\n");
    for i in 0..10_000 {
        batch.push_str(&format!("RCPT TO:<user{i}@d.example>\r\n"));
    }
    batch.push_str("RSET\r\nNOOP\r\n");
    // Written while the replies are read, as a pipelining client would.
    let sender = tokio::spawn(async move { write.write_all(batch.as_bytes()).await.unwrap() });
    let mut lines = BufReader::new(read).lines();
    macro_rules! next {
        () => {
            tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        };
    }
    assert!(next!().starts_with("220"));
    while next!().starts_with("250-") {}
    assert!(next!().starts_with("250 2.1.0"));
    for i in 0..10_000 {
        let r = next!();
        let expected = if i < 1000 { "250 2.1.5" } else { "452 4.5.3" };
        assert!(r.starts_with(expected), "recipient {i}: {r}");
    }
    assert!(next!().starts_with("250 2.0.0"));
    assert!(next!().starts_with("250 2.0.0"));
    sender.await.unwrap();
}

#[tokio::test]
async fn sessions_per_client_address_are_limited() {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let decider_addr = decider.clone().serve().await;
    let mut cfg = config(&[decider_addr], dead_addr().await);
    cfg.max_sessions_per_ip = 2;
    let edge = Edge::start(cfg).await;
    let (first, g1) = Client::connect(edge.addr).await;
    let (_second, g2) = Client::connect(edge.addr).await;
    assert!(g1.starts_with("220") && g2.starts_with("220"));
    let (mut third, g3) = Client::connect(edge.addr).await;
    assert!(g3.starts_with("421 4.7.0"), "{g3}");
    assert!(third.closed().await);
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_fourth, g4) = Client::connect(edge.addr).await;
    assert!(g4.starts_with("220"), "{g4}");
}

#[tokio::test]
async fn bare_lf_reject_mode_refuses_like_postfix() {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let decider_addr = decider.clone().serve().await;
    let mut cfg = config(&[decider_addr], dead_addr().await);
    cfg.bare_lf = ratchet_edge::BareLf::Reject;
    let edge = Edge::start(cfg).await;
    let (mut c, _) = Client::connect(edge.addr).await;
    c.send(b"EHLO client.test\n").await;
    assert!(c.reply().await.starts_with("550 5.5.2 Error: bare <LF> received"));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<c@d.example>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: x\r\n\r\nbare\nlf\r\n").await;
    assert!(c.cmd(".").await.starts_with("550 5.5.2"));
}
