//! End of DATA against a stand-in decision service and a real next hop (Postfix's
//! smtp-sink): attribution, verdicts, deadlines, failover, relay outcomes, shutdown.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ratchet_edge::EdgeConfig;
use ratchet_proto::v1::{CountRequest, DecideResponse, Tally};

const BODY: &str = EXCHANGE_MESSAGE;

#[tokio::test]
async fn strangers_are_relayed_without_asking_and_content_arrives_intact() {
    let decider = FakeDecider::new("10.0.0.0/8", block());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(config(&[decider.clone().serve().await], sink.addr)).await;
    decider.watched().await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c
        .message("sender@bear.example", &["one@owl.example", "two@owl.example"], BODY)
        .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(decider.calls(), 0);
    let messages = sink.wait_for_messages(1).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert!(
        m.contains("one@owl.example") && m.contains("two@owl.example") && m.contains("sender@bear.example"),
        "{m}"
    );
    assert!(m.contains("by edge.test (Ratchet edge) with ESMTP id"), "{m}");
    assert!(m.contains("id 15.1.2507.16; Mon, 20 May 2024"), "{m}");
    assert!(
        m.contains("\n.leading dot") && !m.contains("..leading dot"),
        "dot-stuffing must round-trip: {m}"
    );
}

#[tokio::test]
async fn tenant_mail_is_decided_then_relayed_on_accept() {
    let decider = FakeDecider::new("127.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(config(&[decider.clone().serve().await], sink.addr)).await;
    decider.watched().await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("sender@bear.example", &["one@owl.example"], BODY).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let req = decider.requests.lock().unwrap()[0].clone();
    assert_eq!((req.server_fqdn.as_str(), req.build.as_str()), ("exch1.bear.local", "15.1.2507.16"));
    assert_eq!(req.connection.unwrap().client_ip, "127.0.0.1");
    assert_eq!(sink.wait_for_messages(1).await.len(), 1);
}

#[tokio::test]
async fn a_report_only_verdict_is_relayed_and_counted_as_accepted_and_as_what_it_would_have_been() {
    let verdict = DecideResponse {
        stage: 8,
        would_verdict: ratchet_proto::v1::Verdict::Block as i32,
        mode: ratchet_proto::v1::EnforcementMode::ReportOnly as i32,
        tally: Some(Tally {
            server_fqdn: "exch1.bear.local".into(),
            build: "15.0.1497.48".into(),
            decided_at_unix_ms: now_ms(),
        }),
        ..accept()
    };
    let decider = FakeDecider::new("127.0.0.0/8", verdict);
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(EdgeConfig {
        count_flush_ms: 200,
        ..config(&[decider.clone().serve().await], sink.addr)
    })
    .await;
    decider.watched().await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["b@owl.example"], BODY).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(sink.wait_for_messages(1).await.len(), 1, "relayed like any accepted message");

    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let flushes = decider.flushes.lock().unwrap().clone();
        if let Some(stage) = flushes.iter().flat_map(|f| &f.servers).flat_map(|s| &s.stages).next() {
            break stage.clone();
        }
        assert!(Instant::now() < deadline, "no flush came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (
            counted.stage,
            counted.accepted,
            counted.blocked,
            counted.would_throttle,
            counted.would_block
        ),
        (8, 1, 0, 0, 1)
    );
}

#[tokio::test]
async fn throttle_and_block_answer_with_the_deciders_exact_line() {
    let decider = FakeDecider::new("127.0.0.0/8", throttle(60_000));
    let sink = SmtpSink::start(&[]).await;
    // This decider changes its answer below without telling the edge (a real one pushes
    // a connector snapshot, on which the edge forgets what it remembers across sessions):
    // only the session remembers here.
    let edge = Edge::start(EdgeConfig {
        verdict_cache_entries: 0,
        ..config(&[decider.clone().serve().await], sink.addr)
    })
    .await;
    decider.watched().await;
    let mut c = Client::greeted(edge.addr).await;
    assert_eq!(c.message("a@bear.example", &["b@owl.example"], BODY).await, THROTTLE);
    // Remembered for the session while valid: the next MAIL gets it at once.
    assert_eq!(c.cmd("MAIL FROM:<a@bear.example>").await, THROTTLE);
    assert_eq!(decider.calls(), 1);

    *decider.verdict.lock().unwrap() = block();
    let mut c = Client::greeted(edge.addr).await;
    assert_eq!(c.message("a@bear.example", &["b@owl.example"], BODY).await, BLOCK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sink.messages().is_empty(), "refused mail must not be relayed");
}

#[tokio::test]
async fn every_verdict_given_is_counted_once_in_numbered_flushes_resent_unchanged() {
    let tally = Tally {
        server_fqdn: "exch1.bear.local".into(),
        build: "15.0.1497.48".into(),
        decided_at_unix_ms: now_ms(),
    };
    let verdict = DecideResponse {
        stage: 4,
        tally: Some(tally),
        ..throttle(60_000)
    };
    let decider = FakeDecider::new("127.0.0.0/8", verdict);
    // The first flush is taken but its answer lost: the edge cannot know it was counted.
    decider.fail_counts.store(1, Ordering::SeqCst);
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(EdgeConfig {
        count_flush_ms: 200,
        ..config(&[decider.clone().serve().await], sink.addr)
    })
    .await;
    decider.watched().await;
    let mut c = Client::greeted(edge.addr).await;
    assert_eq!(c.message("a@bear.example", &["b@owl.example"], BODY).await, THROTTLE);
    // Answered from the verdict remembered for the session: counted all the same.
    assert_eq!(c.cmd("MAIL FROM:<a@bear.example>").await, THROTTLE);
    assert_eq!(decider.calls(), 1);
    c.cmd("QUIT").await;

    // Counted: two throttled messages of exch1 in stage 4, whichever flushes carry them.
    let throttled = |flushes: &[CountRequest]| -> u64 {
        let mut distinct = flushes.to_vec();
        distinct.dedup_by_key(|f| f.sequence);
        let servers = distinct.iter().flat_map(|f| &f.servers);
        servers.flat_map(|s| &s.stages).map(|s| s.throttled).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = |flushes: &[CountRequest]| flushes.len() >= 2 && throttled(flushes) == 2;
    while !settled(&decider.flushes.lock().unwrap()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flushes = decider.flushes.lock().unwrap().clone();
    assert_eq!(throttled(&flushes), 2, "{flushes:?}");
    assert_eq!(flushes[0], flushes[1], "the unconfirmed flush is sent again unchanged");
    assert_eq!(flushes[0].sequence, 1);
    let server = &flushes[0].servers[0];
    assert_eq!(
        (
            server.tenant.as_str(),
            server.server_fqdn.as_str(),
            server.stages[0].stage,
            server.stages[0].accepted
        ),
        ("bear", "exch1.bear.local", 4, 0)
    );

    // Nothing more to count: no more flushes; a later one is numbered after the others.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = decider.flushes.lock().unwrap().len();
    assert_eq!(sent, flushes.len());
    let mut c = Client::greeted(edge.addr).await;
    assert_eq!(c.message("a@bear.example", &["b@owl.example"], BODY).await, THROTTLE);
    c.cmd("QUIT").await;
    edge.shutdown().await.unwrap().unwrap();
    let after = decider.flushes.lock().unwrap().clone();
    let last = after.last().unwrap();
    assert_eq!(
        (last.origin, last.sequence),
        (flushes[0].origin, flushes.last().unwrap().sequence + 1),
        "the last message flushed on shutdown at the latest: {after:?}"
    );
    assert_eq!(throttled(&after), 3);
}

#[tokio::test]
async fn no_verdict_in_time_is_451_4_4_3_within_the_deadline() {
    let decider = FakeDecider::new("127.0.0.0/8", accept());
    *decider.delay.lock().unwrap() = Duration::from_secs(2);
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(config(&[decider.clone().serve().await], sink.addr)).await;
    decider.watched().await;
    let mut c = Client::greeted(edge.addr).await;
    c.cmd("MAIL FROM:<a@bear.example>").await;
    c.cmd("RCPT TO:<b@owl.example>").await;
    c.cmd("DATA").await;
    c.send(BODY.as_bytes()).await;
    let started = Instant::now();
    let r = c.cmd(".").await;
    assert!(r.starts_with("451 4.4.3"), "{r}");
    assert!(started.elapsed() < Duration::from_millis(600), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn all_deciders_down_every_session_gets_451_and_none_hangs() {
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(config(&[dead_addr().await, dead_addr().await], sink.addr)).await;
    let addr = edge.addr;
    let sessions: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Client::greeted(addr).await;
                let started = Instant::now();
                let r = c.message("a@bear.example", &["b@owl.example"], BODY).await;
                (r, started.elapsed())
            })
        })
        .collect();
    for s in sessions {
        let (r, took) = s.await.unwrap();
        assert!(r.starts_with("451 4.4.3"), "{r}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn accept_without_verdict_relays_when_configured() {
    let sink = SmtpSink::start(&[]).await;
    let mut cfg = config(&[dead_addr().await], sink.addr);
    cfg.accept_without_verdict = true;
    let edge = Edge::start(cfg).await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["b@owl.example"], BODY).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(sink.wait_for_messages(1).await.len(), 1);
}

#[tokio::test]
async fn a_dead_decider_is_skipped_for_a_live_one() {
    let decider = FakeDecider::new("127.0.0.0/8", block());
    let live = decider.clone().serve().await;
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(config(&[dead_addr().await, live, dead_addr().await], sink.addr)).await;
    decider.watched().await;
    for _ in 0..4 {
        let mut c = Client::greeted(edge.addr).await;
        assert_eq!(c.message("a@bear.example", &["b@owl.example"], BODY).await, BLOCK);
    }
    assert_eq!(decider.calls(), 4);
}

#[tokio::test]
async fn the_edge_asks_on_a_stream_and_a_decider_without_one_by_unary_decide() {
    for decider in [
        FakeDecider::new("127.0.0.0/8", block()),
        FakeDecider::without_stream("127.0.0.0/8", block()),
    ] {
        let addr = decider.clone().serve().await;
        let sink = SmtpSink::start(&[]).await;
        let edge = Edge::start(config(&[addr], sink.addr)).await;
        decider.watched().await;
        for _ in 0..3 {
            let mut c = Client::greeted(edge.addr).await;
            assert_eq!(c.message("a@bear.example", &["b@owl.example"], BODY).await, BLOCK);
        }
        let streamed = if decider.without_stream { 0 } else { 3 };
        assert_eq!(
            (decider.calls(), decider.streamed.load(Ordering::SeqCst)),
            (3, streamed),
            "asked, and of those on the stream (without_stream: {})",
            decider.without_stream
        );
    }
}

#[tokio::test]
async fn next_hop_trouble_is_never_a_250() {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let d = decider.clone().serve().await;

    // Down: a temporary failure.
    let edge = Edge::start(config(&[d], dead_addr().await)).await;
    decider.watched().await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["b@owl.example"], BODY).await;
    assert!(r.starts_with("451 4.4.0"), "{r}");

    // A recipient refused with 4xx: its 4xx is passed back.
    let sink = SmtpSink::start(&["-r", "RCPT"]).await;
    let edge = Edge::start(config(&[d], sink.addr)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["b@owl.example"], BODY).await;
    assert!(r.starts_with("450 4.3.0 Next hop refused RCPT"), "{r}");

    // The content refused with 5xx: the 5xx is passed back.
    let sink = SmtpSink::start(&["-f", "."]).await;
    let edge = Edge::start(config(&[d], sink.addr)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["b@owl.example"], BODY).await;
    assert!(r.starts_with("500 5.3.0 Next hop refused the message"), "{r}");

    // A recipient refused with 5xx after we said 250 to it: a temporary failure, not a loss.
    let next = scripted_next_hop("550 5.1.1 no such user", "250 2.0.0 queued").await;
    let edge = Edge::start(config(&[d], next)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::greeted(edge.addr).await;
    let r = c.message("a@bear.example", &["b@owl.example"], BODY).await;
    assert!(r.starts_with("451 4.4.0 Next hop refused RCPT: 550 5.1.1 no such user"), "{r}");
}

#[tokio::test]
async fn swaks_pipelined_and_plain_against_the_edge() {
    let decider = FakeDecider::new("127.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(config(&[decider.clone().serve().await], sink.addr)).await;
    decider.watched().await;
    let data = BODY.replace("\r\n", "\n");
    let swaks = |extra: &'static [&'static str]| {
        let (addr, data) = (edge.addr, data.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("swaks")
                .args(["--server", &addr.ip().to_string(), "--port", &addr.port().to_string()])
                .args([
                    "--from",
                    "a@bear.example",
                    "--to",
                    "b@owl.example,c@owl.example",
                    "--helo",
                    "exch1.bear.local",
                ])
                .args(["--data", &data, "--timeout", "10"])
                .args(extra)
                .output()
                .expect("swaks (Debian package) is needed")
        })
    };
    let out = swaks(&["--pipeline"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("<-  250 2.0.0 Ok: relayed"), "{text}");
    assert_eq!(sink.wait_for_messages(1).await.len(), 1);

    *decider.verdict.lock().unwrap() = block();
    let out = swaks(&[]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains(&format!("<** {BLOCK}")), "{text}");
}

#[tokio::test]
async fn shutdown_lets_sessions_finish_then_says_421_4_3_2() {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let mut cfg = config(&[decider.clone().serve().await], sink.addr);
    cfg.shutdown_grace_secs = 1;
    let edge = Edge::start(cfg).await;
    decider.watched().await;
    let addr = edge.addr;
    let mut busy = Client::greeted(addr).await;
    let mut idle = Client::greeted(addr).await;
    assert!(busy.cmd("MAIL FROM:<a@bear.example>").await.starts_with("250"));
    let started = Instant::now();
    let done = edge.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new sessions.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // A session in progress may finish its message within the grace period.
    assert!(busy.cmd("RCPT TO:<b@owl.example>").await.starts_with("250"));
    assert!(busy.cmd("DATA").await.starts_with("354"));
    busy.send(BODY.as_bytes()).await;
    assert!(busy.cmd(".").await.starts_with("250 2.0.0"));
    // Then everyone still there is told to come back later.
    assert!(idle.reply().await.starts_with("421 4.3.2"));
    assert!(busy.reply().await.starts_with("421 4.3.2"));
    done.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(sink.wait_for_messages(1).await.len(), 1);
}
