//! The edge end to end: real `ratchet decider` and `ratchet edge` processes, Postfix's
//! `smtp-sink` as the next hop and `swaks` as the client. The decider runs on a clock
//! pinned to the start of a minute (`--test-clock-offset-secs`) so that each server's
//! window position in the hour is known.

mod common;

use std::time::{Duration, Instant};

use common::cluster::report;
use common::metrics::{connector_updates, scrape, total, wait_for_connector_update};
use common::smtp::{final_reply, swaks, EdgeProcess, SmtpSink};
use common::stages::{blocked, throttled, StagedDecider, COMPLIANT, OUT_OF_DATE, TENANT};

/// A staged decider, an edge in front of it, and a sink.
struct Scene {
    decider: StagedDecider,
    sink: SmtpSink,
    edge: EdgeProcess,
}

impl Scene {
    fn start() -> Scene {
        let decider = StagedDecider::start();
        let sink = SmtpSink::start();
        let edge = EdgeProcess::start(&decider.endpoint(), sink.addr, None);
        Scene { decider, sink, edge }
    }

    fn import(&self, server: &str, age_days: i64) {
        self.decider.import(server, age_days)
    }

    fn server_at(&self, label: &str, minutes_into_window: u32) -> String {
        self.decider.server_at(label, minutes_into_window)
    }
}

#[test]
fn every_stage_answers_its_reply_inside_and_outside_its_windows() {
    let scene = Scene::start();
    // (label, age in days, minutes into the server's window, expected reply)
    let cases: Vec<(&str, i64, u32, String)> = vec![
        ("report-only", 10, 0, "250 2.0.0 Ok: relayed".into()),
        ("stage2-throttle", 35, 2, throttled(5)),
        ("stage2-accept", 35, 30, "250 2.0.0 Ok: relayed".into()),
        ("stage4-throttle", 55, 19, throttled(20)),
        ("stage5-block", 65, 4, blocked(5)),
        ("stage5-throttle", 65, 5, throttled(30)),
        ("stage5-accept", 65, 35, "250 2.0.0 Ok: relayed".into()),
        ("stage7-block", 85, 19, blocked(20)),
        ("stage7-throttle", 85, 49, throttled(30)),
        ("stage8-block", 100, 59, blocked(60)),
    ];
    let mut relayed = 0;
    for (label, age_days, minute, expected) in &cases {
        let server = scene.server_at(label, *minute);
        scene.import(&server, *age_days);
        let output = swaks(scene.edge.addr, &server, OUT_OF_DATE, &[]);
        let reply = final_reply(&output);
        assert!(
            reply.starts_with(expected.as_str()),
            "{label} (age {age_days} d, minute {minute} of its window): got {reply:?}, want {expected:?}"
        );
        relayed += usize::from(expected.starts_with("250"));
    }
    // A patched server is released on its next message.
    let server = scene.server_at("patched", 0);
    scene.import(&server, 100);
    assert!(final_reply(&swaks(scene.edge.addr, &server, OUT_OF_DATE, &[])).starts_with(&blocked(60)));
    assert!(final_reply(&swaks(scene.edge.addr, &server, COMPLIANT, &[])).starts_with("250 "));
    assert!(
        final_reply(&swaks(scene.edge.addr, &server, OUT_OF_DATE, &[])).starts_with(&blocked(60)),
        "relapse within 30 days resumes"
    );
    relayed += 1;
    assert_eq!(
        scene.sink.wait_for_messages(relayed).len(),
        relayed,
        "every 250 was relayed, nothing else"
    );
}

#[test]
fn accepted_mail_reaches_the_next_hop_intact_with_every_recipient() {
    let scene = Scene::start();
    let server = scene.server_at("multi", 0);
    let body = "Subject: quarterly numbers\r\n\r\nLine one\r\n.leading dot survives\r\nLine three";
    let output = swaks(
        scene.edge.addr,
        &server,
        COMPLIANT,
        &["--to", "a@owl.example,b@owl.example,c@owl.example", "--pipeline", "--body", body],
    );
    assert!(
        final_reply(&output).starts_with("250 "),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let messages = scene.sink.wait_for_messages(1);
    let message = &messages[0];
    for recipient in ["a@owl.example", "b@owl.example", "c@owl.example"] {
        assert!(message.contains(recipient), "recipient {recipient} missing:\n{message}");
    }
    assert!(message.contains(".leading dot survives"), "dot-stuffing round trip:\n{message}");
    assert!(
        message.contains(&format!("by {server}")) && message.contains("id 15.2.2562.17"),
        "original header kept:\n{message}"
    );
    let edge_header = message.find("Received: from").unwrap();
    let original_header = message.find(&format!("Received: from {server}")).unwrap();
    assert!(
        edge_header < original_header,
        "the edge's own Received header comes first:\n{message}"
    );
}

#[test]
fn a_verdict_holds_across_sessions_until_a_pause_changes_it() {
    let decider = StagedDecider::start();
    let sink = SmtpSink::start();
    let http = common::cluster::free_port().to_string();
    let edge = EdgeProcess::start_with(&decider.endpoint(), sink.addr, None, &["--http", &http], &[]);
    let server = decider.server_at("remembered", 0);
    decider.import(&server, 100);
    for session in 0..3 {
        let reply = final_reply(&swaks(edge.addr, &server, OUT_OF_DATE, &[]));
        assert!(reply.starts_with(&blocked(60)), "session {session}: {reply}");
    }
    let lookups = |outcome| {
        total(
            &scrape(edge.http.unwrap()),
            "ratchet_edge_verdict_cache_lookups_total",
            &[("outcome", outcome)],
        )
    };
    // Asked once: the two later sessions got the verdict the first one got, which holds to
    // the end of the decider's minute (the decider's clock starts 2 s into one).
    assert_eq!((lookups("miss"), lookups("hit")), (1.0, 2.0));

    // A pause applies as soon as the edge hears of it, not at the end of the remembered minute.
    let updates = connector_updates(edge.http.unwrap(), "ratchet_edge");
    common::ctl(&decider.endpoint(), &["pause", "--tenant", TENANT, "--days", "1"]);
    wait_for_connector_update(edge.http.unwrap(), "ratchet_edge", updates);
    let reply = final_reply(&swaks(edge.addr, &server, OUT_OF_DATE, &[]));
    assert!(reply.starts_with("250 "), "paused: {reply}");
    assert_eq!(sink.wait_for_messages(1).len(), 1);
}

#[test]
fn a_pipelined_session_to_a_blocked_server_gets_the_block_reply() {
    let scene = Scene::start();
    let server = scene.server_at("pipelined", 0);
    scene.import(&server, 100);
    let output = swaks(
        scene.edge.addr,
        &server,
        OUT_OF_DATE,
        &["--pipeline", "--to", "a@owl.example,b@owl.example"],
    );
    assert!(
        final_reply(&output).starts_with(&blocked(60)),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(scene.sink.messages().is_empty());
}

#[test]
fn unattributed_mail_is_relayed_and_creates_no_state() {
    let scene = Scene::start();
    let output = swaks(
        scene.edge.addr,
        "stranger.example",
        OUT_OF_DATE,
        &["--local-interface", "127.0.0.2"],
    );
    assert!(
        final_reply(&output).starts_with("250 "),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    std::thread::sleep(Duration::from_millis(1200)); // past a counter flush
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async { report(&mut scene.decider.cluster.nodes[0].admin().await, TENANT).await });
    assert_eq!(report["servers"].as_array().unwrap().len(), 0, "{report}");
}

#[test]
fn with_every_decider_down_sessions_get_451_in_time_and_none_hangs() {
    let mut scene = Scene::start();
    let server = scene.server_at("orphan", 0);
    scene.decider.cluster.nodes[0].kill9();
    let started = Instant::now();
    let sessions: Vec<_> = (0..6)
        .map(|_| {
            let (edge, server) = (scene.edge.addr, server.clone());
            std::thread::spawn(move || final_reply(&swaks(edge, &server, OUT_OF_DATE, &[])))
        })
        .collect();
    for session in sessions {
        let reply = session.join().unwrap();
        assert!(reply.starts_with("451 4.4.3"), "got {reply:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "sessions hung: {:?}",
        started.elapsed()
    );
    assert!(scene.sink.messages().is_empty(), "nothing was relayed without a verdict");
}

#[test]
fn a_real_postfix_relaying_through_the_edge_defers_bounces_and_delivers() {
    let scene = Scene::start();
    let postfix = common::smtp::Postfix::start(scene.edge.addr);
    let throttled_server = scene.server_at("pf-throttled", 1);
    scene.import(&throttled_server, 35);
    let blocked_server = scene.server_at("pf-blocked", 0);
    scene.import(&blocked_server, 100);
    let patched_server = scene.server_at("pf-patched", 0);

    let submit = |server: &str, build: &str, recipient: &str| {
        let output = swaks(
            postfix.addr,
            server,
            build,
            &["--from", "<>", "--to", recipient, "--body", "Body kept intact\r\n.dot line"],
        );
        assert!(
            final_reply(&output).starts_with("250 "),
            "Postfix takes the message: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    };
    submit(&throttled_server, OUT_OF_DATE, "throttled@owl.example");
    submit(&blocked_server, OUT_OF_DATE, "blocked@owl.example");
    submit(&patched_server, COMPLIANT, "delivered@owl.example");

    let deferred = postfix.wait_for_status("throttled@owl.example");
    assert!(
        deferred.contains("status=deferred") && deferred.contains(&throttled(5)),
        "{deferred}"
    );
    assert_eq!(
        postfix.deferred_count(),
        1,
        "the throttled message waits in the deferred queue:\n{}",
        postfix.log()
    );
    let bounced = postfix.wait_for_status("blocked@owl.example");
    assert!(bounced.contains("status=bounced") && bounced.contains(&blocked(60)), "{bounced}");
    let sent = postfix.wait_for_status("delivered@owl.example");
    assert!(sent.contains("status=sent"), "{sent}");
    let messages = scene.sink.wait_for_messages(1);
    assert_eq!(messages.len(), 1, "only the patched server's message reached the next hop");
    assert!(
        messages[0].contains("delivered@owl.example") && messages[0].contains("Body kept intact\n.dot line"),
        "{}",
        messages[0]
    );
}

/// Stamps the rules cannot place are unidentified: accepted (250, never `451 4.4.3` from a
/// refused Decide), relayed, and counted in the report where they have a server to count
/// under. A partial build (`15.2`) is not a build: before, it read as 15.2.0.0 (Exchange
/// 2019, out of date).
#[test]
fn stamps_that_cannot_be_placed_are_accepted_and_reported_unidentified() {
    let scene = Scene::start();
    let overlong = format!("15.0.1497.{}", "4".repeat(80));
    let cases = [
        ("partial.bear.local", "15.2"),
        ("overlong.bear.local", overlong.as_str()),
        ("exch!1.bear.local", OUT_OF_DATE),
        ("exch1.bear.local:25", OUT_OF_DATE),
    ];
    for (server, build) in cases {
        let output = swaks(scene.edge.addr, server, build, &["--helo", "client.bear.local"]);
        assert!(
            final_reply(&output).starts_with("250 "),
            "{server} at {build}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    assert_eq!(scene.sink.wait_for_messages(cases.len()).len(), cases.len());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let servers = loop {
        let report = rt.block_on(async { report(&mut scene.decider.cluster.nodes[0].admin().await, TENANT).await });
        let servers = report["servers"].as_array().unwrap().clone();
        if servers.len() >= 2 {
            break servers;
        }
        assert!(Instant::now() < deadline, "counters never committed: {report}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let row = |fqdn: &str| {
        servers
            .iter()
            .find(|s| s["server_fqdn"] == fqdn)
            .unwrap_or_else(|| panic!("{fqdn} not in {servers:?}"))
    };
    let partial = row("partial.bear.local");
    assert_eq!(
        (partial["status"].as_str(), partial["build"].as_str()),
        (Some("unidentified"), Some("15.2"))
    );
    assert_eq!(
        (&partial["stage"], &partial["product"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
    assert_eq!(partial["counters"]["0"]["accepted"], 1);
    let overlong = row("overlong.bear.local");
    assert_eq!(overlong["status"], "unidentified");
    let kept = overlong["build"].as_str().unwrap();
    assert!(kept.starts_with("15.0.1497.444") && kept.ends_with('…'), "{kept}");
    assert_eq!(overlong["counters"]["0"]["accepted"], 1);
    assert_eq!(servers.len(), 2, "hosts that cannot be a server's leave no record: {servers:?}");
}
