//! The pool of next-hop sessions (`next_hop_pool_*`), seen from a scripted next hop that
//! counts its connections and logs every command on each: messages share one connection,
//! RSET only after an aborted transaction, XFORWARD before every MAIL, no pool with
//! XCLIENT, idle sessions and shutdown get QUIT, and a next hop that closes or refuses a
//! pooled session still gets every message exactly once. tests/edge_e2e.rs and
//! tests/edge_relay_tls.rs relay through a real Postfix with the pool on (the default).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ratchet_edge::EdgeConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the scripted next hop departs from plain SMTP.
#[derive(Clone, Copy, Default)]
struct Script {
    /// Close the connection right after the 250 to each final dot.
    close_after_message: bool,
    /// Answer MAIL with `421` and close, on a connection's second transaction.
    mail_421_on_reuse: bool,
    /// Read a connection's second message, then close without answering its final dot.
    vanish_in_second_data: bool,
    /// Offer `XFORWARD` / `XCLIENT` in EHLO.
    xforward: bool,
    xclient: bool,
}

/// What the next hop saw: each connection's commands, in order (a message's content shows
/// as one `<content Subject>` entry, `<closed>` when the next hop closed it, `<end of
/// stream in data>` when the edge did before the final dot), and the
/// subjects of the messages it took (250 to the final dot).
#[derive(Default)]
struct Seen {
    connections: Vec<Vec<String>>,
    taken: Vec<String>,
}

type Log = Arc<Mutex<Seen>>;

async fn next_hop(script: Script) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.connections.push(Vec::new());
                seen.connections.len() - 1
            };
            tokio::spawn(serve(BufReader::new(stream), script, seen.clone(), n));
        }
    });
    (addr, log)
}

async fn serve(mut s: BufReader<tokio::net::TcpStream>, script: Script, seen: Log, n: usize) {
    let note = |what: String| seen.lock().unwrap().connections[n].push(what);
    let _ = s.get_mut().write_all(b"220 scripted ESMTP\r\n").await;
    let mut transactions = 0;
    // Recipients taken in this transaction.
    let mut recipients = 0;
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_string();
        let upper = line.to_ascii_uppercase();
        note(line.clone());
        let reply: String = if upper.starts_with("EHLO") {
            let mut r = "250-scripted\r\n250-PIPELINING\r\n".to_string();
            if script.xforward {
                r.push_str("250-XFORWARD NAME ADDR PROTO HELO\r\n");
            }
            if script.xclient {
                r.push_str("250-XCLIENT NAME ADDR PROTO HELO\r\n");
            }
            r + "250 8BITMIME"
        } else if upper.starts_with("XCLIENT") {
            "220 scripted ESMTP".into()
        } else if upper.starts_with("MAIL") {
            transactions += 1;
            if script.mail_421_on_reuse && transactions == 2 {
                let _ = s.get_mut().write_all(b"421 4.4.2 scripted: timeout exceeded\r\n").await;
                note("<closed>".into());
                return;
            }
            recipients = 0;
            "250 2.1.0 ok".into()
        } else if upper.starts_with("RCPT TO:<NOBODY@") {
            "550 5.1.1 no such user".into()
        } else if upper.starts_with("RCPT") {
            recipients += 1;
            "250 2.1.5 ok".into()
        } else if upper.starts_with("DATA") && recipients == 0 {
            // As Postfix: DATA goes ahead if any recipient was taken.
            "503 5.5.1 Error: need RCPT command".into()
        } else if upper.starts_with("DATA") {
            let _ = s.get_mut().write_all(b"354 go ahead\r\n").await;
            let mut subject = String::new();
            loop {
                let mut data = String::new();
                if s.read_line(&mut data).await.unwrap_or(0) == 0 {
                    note("<end of stream in data>".into());
                    return;
                }
                if data == ".\r\n" {
                    break;
                }
                if let Some(rest) = data.strip_prefix("Subject: ") {
                    subject = rest.trim_end().to_string();
                }
            }
            note(format!("<content {subject}>"));
            if script.vanish_in_second_data && transactions == 2 {
                note("<closed>".into());
                return;
            }
            seen.lock().unwrap().taken.push(subject);
            if script.close_after_message {
                let _ = s.get_mut().write_all(b"250 2.0.0 queued\r\n").await;
                note("<closed>".into());
                return;
            }
            "250 2.0.0 queued".into()
        } else if upper.starts_with("QUIT") {
            let _ = s.get_mut().write_all(b"221 bye\r\n").await;
            return;
        } else {
            "250 2.0.0 ok".into()
        };
        let _ = s.get_mut().write_all(format!("{reply}\r\n").as_bytes()).await;
    }
}

/// An edge relaying to `next_hop`, changed by `adjust`; its clients (127.0.0.1) are no
/// tenant's, so mail is relayed without a verdict.
async fn edge(next_hop: SocketAddr, adjust: impl FnOnce(&mut EdgeConfig)) -> (Edge, FakeDecider) {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let mut cfg = config(&[decider.clone().serve().await], next_hop);
    adjust(&mut cfg);
    let edge = Edge::start(cfg).await;
    decider.watched().await;
    (edge, decider)
}

fn body(subject: &str) -> String {
    format!("From: a@bear.example\r\nTo: b@owl.example\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}

/// One message in a session of its own; the edge's reply to the final dot.
async fn send(edge: &Edge, subject: &str) -> String {
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["b@owl.example"], &body(subject)).await;
    c.cmd("QUIT").await;
    r
}

fn commands(log: &Log, connection: usize) -> Vec<String> {
    log.lock().unwrap().connections[connection].clone()
}

fn connections(log: &Log) -> usize {
    log.lock().unwrap().connections.len()
}

/// Each subject and how often the next hop took it.
fn taken(log: &Log) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for subject in &log.lock().unwrap().taken {
        *counts.entry(subject.clone()).or_default() += 1;
    }
    counts
}

fn metric(name: &str) -> f64 {
    let text = ratchet_edge::metrics::render();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Waits until `check` holds, for up to 5 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn messages_from_many_sessions_share_one_next_hop_connection() {
    let (addr, log) = next_hop(Script::default()).await;
    let (edge, _d) = edge(addr, |_| {}).await;
    let reused = metric("ratchet_edge_next_hop_sessions_reused_total");
    for i in 0..5 {
        let r = send(&edge, &format!("m{i}")).await;
        assert!(r.starts_with("250 2.0.0 Ok: relayed (2.0.0 queued)"), "{r}");
    }
    // And several in one client session.
    let mut c = Client::greeted(edge.addr).await;
    for i in 5..8 {
        let r = c.message("a@bear.example", &["b@owl.example"], &body(&format!("m{i}"))).await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    assert_eq!(connections(&log), 1);
    let seen = commands(&log, 0);
    let verbs: Vec<&str> = seen.iter().map(|c| c.split([' ', ':']).next().unwrap()).collect();
    assert_eq!(verbs.iter().filter(|v| **v == "EHLO").count(), 1, "{seen:?}");
    assert_eq!(verbs.iter().filter(|v| **v == "MAIL").count(), 8, "{seen:?}");
    assert!(!verbs.contains(&"RSET") && !verbs.contains(&"QUIT"), "{seen:?}");
    assert_eq!(taken(&log).len(), 8);
    assert!(taken(&log).values().all(|n| *n == 1));
    assert!(metric("ratchet_edge_next_hop_sessions_reused_total") >= reused + 7.0);
    let text = ratchet_edge::metrics::render();
    for name in [
        "ratchet_edge_next_hop_sessions_opened_total",
        "ratchet_edge_next_hop_sessions_closed_total{reason=\"idle_timeout\"}",
        "ratchet_edge_next_hop_sessions_idle ",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[tokio::test]
async fn with_the_pool_off_every_message_has_its_own_connection() {
    let (addr, log) = next_hop(Script::default()).await;
    let (edge, _d) = edge(addr, |c| c.next_hop_pool_max_idle = 0).await;
    for i in 0..3 {
        assert!(send(&edge, &format!("m{i}")).await.starts_with("250 2.0.0"));
    }
    eventually("three connections, each ended with QUIT", || {
        connections(&log) == 3 && (0..3).all(|n| commands(&log, n).last().map(String::as_str) == Some("QUIT"))
    })
    .await;
    for n in 0..3 {
        let seen = commands(&log, n);
        assert_eq!(seen[0], "EHLO edge.test");
        assert!(seen[1].starts_with("MAIL FROM:<a@bear.example>"), "{seen:?}");
    }
}

#[tokio::test]
async fn a_next_hop_that_closes_after_each_message_still_gets_each_once() {
    let (addr, log) = next_hop(Script {
        close_after_message: true,
        ..Script::default()
    })
    .await;
    let (edge, _d) = edge(addr, |_| {}).await;
    for i in 0..4 {
        let r = send(&edge, &format!("m{i}")).await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    assert_eq!(connections(&log), 4);
    let taken = taken(&log);
    assert_eq!(taken.len(), 4);
    assert!(taken.values().all(|n| *n == 1), "{taken:?}");
}

#[tokio::test]
async fn a_pooled_session_refused_at_mail_is_replaced_by_a_new_connection_once() {
    // The next hop answers the reused session's MAIL with 421 (as after its idle timeout,
    // when the edge could not see it coming): the message goes on a new connection.
    let (addr, log) = next_hop(Script {
        mail_421_on_reuse: true,
        ..Script::default()
    })
    .await;
    let (edge, _d) = edge(addr, |_| {}).await;
    assert!(send(&edge, "first").await.starts_with("250 2.0.0"));
    let r = send(&edge, "second").await;
    assert!(r.starts_with("250 2.0.0 Ok: relayed"), "{r}");
    assert_eq!(connections(&log), 2);
    assert_eq!(commands(&log, 0).last().unwrap(), "<closed>");
    assert_eq!(taken(&log), HashMap::from([("first".into(), 1), ("second".into(), 1)]));
}

#[tokio::test]
async fn a_failure_after_data_is_not_tried_again() {
    // The content went out on the pooled session and no reply came: the next hop may hold
    // it, so the sender is told to retry, and no second connection gets it.
    let (addr, log) = next_hop(Script {
        vanish_in_second_data: true,
        ..Script::default()
    })
    .await;
    let (edge, _d) = edge(addr, |_| {}).await;
    assert!(send(&edge, "first").await.starts_with("250 2.0.0"));
    assert_eq!(send(&edge, "second").await, "451 4.4.0 Next hop unavailable, try again later");
    assert_eq!(connections(&log), 1);
    assert_eq!(commands(&log, 0).iter().filter(|c| *c == "<content second>").count(), 1);
    // The broken session is not used again.
    assert!(send(&edge, "third").await.starts_with("250 2.0.0"));
    assert_eq!(connections(&log), 2);
    assert_eq!(taken(&log), HashMap::from([("first".into(), 1), ("third".into(), 1)]));
}

#[tokio::test]
async fn rset_comes_only_after_an_aborted_transaction() {
    let (addr, log) = next_hop(Script::default()).await;
    let (edge, _d) = edge(addr, |_| {}).await;
    assert!(send(&edge, "first").await.starts_with("250 2.0.0"));
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["nobody@owl.example"], &body("refused")).await;
    assert!(r.starts_with("451 4.4.0 Next hop refused RCPT: 550"), "{r}");
    assert!(send(&edge, "after").await.starts_with("250 2.0.0"));
    assert!(send(&edge, "last").await.starts_with("250 2.0.0"));
    assert_eq!(connections(&log), 1);
    let seen = commands(&log, 0);
    let rsets: Vec<usize> = seen.iter().enumerate().filter(|(_, c)| *c == "RSET").map(|(i, _)| i).collect();
    assert_eq!(rsets.len(), 1, "{seen:?}");
    // Pipelined: the refused transaction's DATA went with its RCPT, and got 503.
    assert_eq!(seen[rsets[0] - 2..rsets[0]], ["RCPT TO:<nobody@owl.example>", "DATA"], "{seen:?}");
    assert!(seen[rsets[0] + 1].starts_with("MAIL FROM:"), "{seen:?}");
}

#[tokio::test]
async fn the_envelope_is_pipelined_and_a_partly_refused_one_never_gets_content() {
    let (addr, log) = next_hop(Script::default()).await;
    let (edge, _d) = edge(addr, |_| {}).await;
    assert!(send(&edge, "first").await.starts_with("250 2.0.0"));
    // One recipient refused: the next hop (as Postfix does) still says 354 to DATA, and
    // gets no content (an empty message to the other), only the connection closed.
    let mut c = Client::greeted(edge.addr).await;
    let r = c
        .message("a@bear.example", &["b@owl.example", "nobody@owl.example"], &body("partly"))
        .await;
    assert!(r.starts_with("451 4.4.0 Next hop refused RCPT: 550"), "{r}");
    eventually("the connection dropped in DATA", || {
        commands(&log, 0).last().map(String::as_str) == Some("<end of stream in data>")
    })
    .await;
    assert!(send(&edge, "last").await.starts_with("250 2.0.0"));
    assert_eq!(connections(&log), 2);
    assert_eq!(taken(&log), HashMap::from([("first".into(), 1), ("last".into(), 1)]));
    let seen = commands(&log, 0);
    assert!(!seen.iter().any(|c| c.contains("partly")), "{seen:?}");
}

#[tokio::test]
async fn xforward_goes_before_every_mail_and_xclient_sessions_are_not_pooled() {
    let (addr, log) = next_hop(Script {
        xforward: true,
        ..Script::default()
    })
    .await;
    let (forwarding, _d) = edge(addr, |c| {
        c.next_hop_forward_client = ratchet_edge::forward_client::ForwardClient::Xforward
    })
    .await;
    for i in 0..3 {
        assert!(send(&forwarding, &format!("m{i}")).await.starts_with("250 2.0.0"));
    }
    assert_eq!(connections(&log), 1);
    let seen = commands(&log, 0);
    for (i, c) in seen.iter().enumerate().filter(|(_, c)| c.starts_with("MAIL")) {
        assert!(
            seen[i - 1].starts_with("XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.1 PROTO=ESMTP HELO=client.test"),
            "{c}: {seen:?}"
        );
    }

    let (addr, log) = next_hop(Script {
        xclient: true,
        ..Script::default()
    })
    .await;
    let (naming, _d) = edge(addr, |c| {
        c.next_hop_forward_client = ratchet_edge::forward_client::ForwardClient::Xclient
    })
    .await;
    for i in 0..3 {
        assert!(send(&naming, &format!("m{i}")).await.starts_with("250 2.0.0"));
    }
    eventually("three connections, each ended with QUIT", || {
        connections(&log) == 3 && (0..3).all(|n| commands(&log, n).last().map(String::as_str) == Some("QUIT"))
    })
    .await;
    assert!(commands(&log, 2)[1].starts_with("XCLIENT "));
}

#[tokio::test]
async fn idle_sessions_get_quit_when_too_old_and_at_shutdown() {
    let (addr, log) = next_hop(Script::default()).await;
    let (edge, _d) = edge(addr, |c| c.next_hop_pool_idle_secs = 1).await;
    assert!(send(&edge, "first").await.starts_with("250 2.0.0"));
    eventually("QUIT to the idle session", || {
        commands(&log, 0).last().map(String::as_str) == Some("QUIT")
    })
    .await;
    assert!(send(&edge, "second").await.starts_with("250 2.0.0"));
    assert_eq!(connections(&log), 2);
    assert_ne!(commands(&log, 1).last().map(String::as_str), Some("QUIT"));
    edge.shutdown().await.unwrap().unwrap();
    assert_eq!(commands(&log, 1).last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn a_session_carries_at_most_max_messages() {
    let (addr, log) = next_hop(Script::default()).await;
    let (edge, _d) = edge(addr, |c| c.next_hop_pool_max_messages = 2).await;
    for i in 0..5 {
        assert!(send(&edge, &format!("m{i}")).await.starts_with("250 2.0.0"));
    }
    assert_eq!(connections(&log), 3);
    eventually("QUIT to the two full sessions", || {
        (0..2).all(|n| commands(&log, n).last().map(String::as_str) == Some("QUIT"))
    })
    .await;
    for n in 0..2 {
        let seen = commands(&log, n);
        assert_eq!(seen.iter().filter(|c| c.starts_with("MAIL")).count(), 2, "{seen:?}");
    }
    assert_eq!(taken(&log).len(), 5);
}
