//! Observability end to end: one trace across real `ratchet edge` and `ratchet decider`
//! processes, received by a test OTLP collector; and `/metrics` on a decider and an edge,
//! parsed strictly, moving as mail flows.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{add_tenant, Cluster, TEST_CONFIG};
use common::metrics::{scrape, total, Samples};
use common::otlp::{http_get, Collector, ReceivedSpan};
use common::smtp::{final_reply, swaks, EdgeProcess, SmtpSink};

const OUT_OF_DATE: &str = "15.0.1497.48";
const COMPLIANT: &str = "15.2.2562.17";

/// An edge config with a deadline generous enough for a loaded CI machine.
fn edge_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, "decide_deadline_ms = 5000\n").unwrap();
    path
}

/// Waits until the edge is ready with at least one connector loaded.
fn wait_edge_ready(http: std::net::SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = http_get(http, "/readyz") {
            if !body.starts_with("ready: 0 ") {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "edge never ready: {:?}",
            http_get(http, "/readyz")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_runs_from_the_edge_session_to_the_apply_on_the_leader() {
    let collector = Collector::start().await;
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    for node in &mut cluster.nodes {
        node.env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            ("OTEL_SERVICE_NAME".into(), format!("ratchet-decider-{}", node.name)),
        ];
    }
    cluster.found(&[0, 1, 2], Duration::ZERO);
    let leader = cluster.leader_index().await;
    let follower = (leader + 1) % 3;
    add_tenant(&mut cluster.nodes[leader].admin().await, "bear", "127.0.0.0/8").await;
    cluster.wait_converged().await;

    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let config = edge_config(&dir);
    let edge_http = common::cluster::free_port();
    let endpoint = collector.endpoint();
    // The edge knows only the follower: its Decide lands there, and the new server's first
    // sighting is forwarded to the leader and applied there.
    let edge = EdgeProcess::start_with(
        &cluster.nodes[follower].grpc.to_string(),
        sink.addr,
        Some(&config),
        &["--http", &edge_http.to_string()],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    wait_edge_ready(edge_http);

    let output = swaks(edge.addr, "old1.bear.local", OUT_OF_DATE, &[]);
    assert!(
        final_reply(&output).starts_with("250"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let leader_service = format!("ratchet-decider-{}", cluster.nodes[leader].name);
    let follower_service = format!("ratchet-decider-{}", cluster.nodes[follower].name);
    let found = collector
        .wait_for(Duration::from_secs(30), |spans| {
            let in_trace = |trace: &[u8], service: &str, name: &str| {
                spans.iter().any(|s| s.trace_id == trace && s.service == service && s.name == name)
            };
            spans
                .iter()
                .filter(|s| s.service == leader_service && s.name == "raft.apply")
                .find(|apply| {
                    in_trace(&apply.trace_id, "ratchet-edge", "smtp.session")
                        && in_trace(&apply.trace_id, "ratchet-edge", "edge.decide")
                        && in_trace(&apply.trace_id, &follower_service, "decider.decide")
                        && in_trace(&apply.trace_id, &follower_service, "raft.forward")
                })
                .cloned()
        })
        .await;
    let apply = match found {
        Ok(apply) => apply,
        Err(spans) => panic!(
            "no single trace from the edge session to the leader's apply; got:\n{}",
            describe(&spans)
        ),
    };
    // And the spans of that trace form one tree: every parent is in it, one root, the
    // edge's session.
    let spans = collector.spans();
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == apply.trace_id).collect();
    let roots: Vec<&&ReceivedSpan> = trace.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root:\n{}", describe(&spans));
    assert_eq!(
        (roots[0].service.as_str(), roots[0].name.as_str()),
        ("ratchet-edge", "smtp.session")
    );
    for span in &trace {
        assert!(
            span.parent_span_id.is_empty() || trace.iter().any(|p| p.span_id == span.parent_span_id),
            "{span:?} has a parent outside the trace"
        );
    }
}

fn describe(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} trace={:02x?} parent={}",
                s.service,
                s.name,
                &s.trace_id[..4.min(s.trace_id.len())],
                !s.parent_span_id.is_empty()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_with_mail() {
    // Snapshots every few entries, so that one is built while the test writes.
    let mut cluster = Cluster::new(1, &format!("{TEST_CONFIG}snapshot_every_entries = 5\n"));
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    add_tenant(&mut cluster.nodes[0].admin().await, "bear", "127.0.0.0/8").await;
    let decider_http = cluster.nodes[0].http;

    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let config = edge_config(&dir);
    let edge_http = common::cluster::free_port();
    let edge = EdgeProcess::start_with(
        &cluster.nodes[0].grpc.to_string(),
        sink.addr,
        Some(&config),
        &["--http", &edge_http.to_string()],
        &[],
    );
    wait_edge_ready(edge_http);
    assert_eq!(http_get(edge_http, "/healthz").map(|r| r.0), Some(200));

    let edge_before = scrape(edge_http);
    let decider_before = scrape(decider_http);
    for i in 0..3 {
        let output = swaks(edge.addr, &format!("exch{i}.bear.local"), COMPLIANT, &[]);
        assert!(
            final_reply(&output).starts_with("250"),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let output = swaks(edge.addr, "old.bear.local", OUT_OF_DATE, &[]);
    assert!(final_reply(&output).starts_with("250"), "first sighting is accepted");

    let edge_after = scrape(edge_http);
    let decider_after = scrape(decider_http);
    let moved = |before: &Samples, after: &Samples, name: &str, with: &[(&str, &str)], by: f64| {
        let (b, a) = (total(before, name, with), total(after, name, with));
        assert!(a - b >= by, "{name}{with:?} went from {b} to {a}, expected at least +{by}");
    };
    moved(&edge_before, &edge_after, "ratchet_edge_smtp_sessions_total", &[], 4.0);
    moved(
        &edge_before,
        &edge_after,
        "ratchet_edge_smtp_replies_total",
        &[("code", "250")],
        4.0,
    );
    moved(
        &edge_before,
        &edge_after,
        "ratchet_edge_smtp_replies_total",
        &[("class", "3xx"), ("code", "354")],
        4.0,
    );
    moved(
        &edge_before,
        &edge_after,
        "ratchet_edge_messages_total",
        &[("verdict", "accept")],
        4.0,
    );
    moved(&edge_before, &edge_after, "ratchet_edge_decide_duration_seconds_count", &[], 4.0);
    moved(&edge_before, &edge_after, "ratchet_edge_next_hop_duration_seconds_count", &[], 4.0);
    moved(
        &edge_before,
        &edge_after,
        "ratchet_edge_next_hop_relays_total",
        &[("outcome", "relayed")],
        4.0,
    );
    // Four messages one after the other: one session to the sink, reused, then idle.
    moved(&edge_before, &edge_after, "ratchet_edge_next_hop_sessions_reused_total", &[], 3.0);
    assert_eq!(total(&edge_after, "ratchet_edge_next_hop_sessions_idle", &[]), 1.0);
    assert_eq!(total(&edge_after, "ratchet_edge_next_hop_sessions_opened_total", &[]), 1.0);
    assert_eq!(total(&edge_after, "ratchet_edge_smtp_sessions_active", &[]), 0.0);
    assert!(total(&edge_after, "ratchet_edge_connectors_loaded", &[]) >= 1.0);

    moved(
        &decider_before,
        &decider_after,
        "ratchet_decider_decisions_total",
        &[("verdict", "accept")],
        4.0,
    );
    moved(
        &decider_before,
        &decider_after,
        "ratchet_decider_decide_duration_seconds_count",
        &[],
        4.0,
    );
    moved(
        &decider_before,
        &decider_after,
        "ratchet_decider_writes_total",
        &[("outcome", "proposed")],
        1.0,
    );
    assert_eq!(total(&decider_after, "ratchet_raft_is_leader", &[]), 1.0);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(total(&decider_after, "ratchet_build_info", &version), 1.0);
    assert_eq!(total(&edge_after, "ratchet_edge_build_info", &version), 1.0);
    assert!(total(&decider_after, "ratchet_raft_term", &[]) >= 1.0);
    assert!(
        total(&decider_after, "ratchet_raft_last_applied_index", &[])
            >= total(&decider_before, "ratchet_raft_last_applied_index", &[]) + 1.0
    );
    assert!(total(&decider_after, "ratchet_raft_last_log_index", &[]) >= total(&decider_after, "ratchet_raft_last_applied_index", &[]));
    assert!(total(&decider_after, "ratchet_raft_elections_total", &[]) >= 1.0);
    assert!(decider_after.keys().any(|(n, _)| n == "ratchet_store_live_data_bytes"));
    // Storage: every write appended to the log (with its fsync) and applied, each timed.
    for histogram in ["ratchet_store_log_append_duration_seconds", "ratchet_store_apply_duration_seconds"] {
        moved(&decider_before, &decider_after, &format!("{histogram}_count"), &[], 1.0);
        let (count, sum) = (
            total(&decider_after, &format!("{histogram}_count"), &[]),
            total(&decider_after, &format!("{histogram}_sum"), &[]),
        );
        assert!(sum > 0.0 && sum / count < 1.0, "{histogram}: {count} observations, {sum} s in all");
    }
    // The built snapshot's size is that of the snapshot file on disk (once no newer one
    // is being built).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(decider_http);
        let reported = total(&metrics, "ratchet_raft_snapshot_size_bytes", &[("kind", "built")]);
        let on_disk = cluster.nodes[0].snapshot_file_sizes();
        if total(&metrics, "ratchet_raft_snapshots_built_total", &[]) >= 1.0 && reported > 0.0 && on_disk == [reported as u64] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot size {reported} bytes reported, snapshot files of {on_disk:?} bytes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing is held once every session has ended.
    assert_eq!(total(&edge_after, "ratchet_edge_message_in_flight_bytes", &[]), 0.0);
    // Bounded labels: no tenant or server name anywhere.
    let text = http_get(decider_http, "/metrics").unwrap().1 + &http_get(edge_http, "/metrics").unwrap().1;
    assert!(!text.contains("bear"), "a tenant or server name leaked into a label");
}

/// A next hop that accepts connections and says nothing until told to hang up.
struct SilentNextHop {
    addr: std::net::SocketAddr,
    hang_up: std::sync::mpsc::Sender<()>,
}

impl SilentNextHop {
    fn start() -> SilentNextHop {
        let addr = common::cluster::free_port();
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let (hang_up, told) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let held = listener.accept().map(|(stream, _)| stream);
            let _ = told.recv();
            drop(held);
        });
        SilentNextHop { addr, hang_up }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_in_flight_bytes_count_a_message_until_it_is_answered() {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    add_tenant(&mut cluster.nodes[0].admin().await, "bear", "127.0.0.0/8").await;
    let next_hop = SilentNextHop::start();
    let dir = tempfile::tempdir().unwrap();
    let config = edge_config(&dir);
    let edge_http = common::cluster::free_port();
    let edge = EdgeProcess::start_with(
        &cluster.nodes[0].grpc.to_string(),
        next_hop.addr,
        Some(&config),
        &["--http", &edge_http.to_string()],
        &[],
    );
    wait_edge_ready(edge_http);

    // An accepted message waits for the next hop's greeting: the edge holds its content.
    let addr = edge.addr;
    let sender = std::thread::spawn(move || swaks(addr, "exch1.bear.local", COMPLIANT, &[]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let held = total(&scrape(edge_http), "ratchet_edge_message_in_flight_bytes", &[]);
        if held > 0.0 {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "no message bytes in flight while the next hop holds the relay"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!((100.0..10_000.0).contains(&held), "{held} bytes in flight for one small message");

    // The next hop hangs up: the relay fails, the sender gets a temporary failure, and
    // the bytes are given back.
    next_hop.hang_up.send(()).unwrap();
    let output = sender.join().unwrap();
    assert!(
        final_reply(&output).starts_with("451"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(edge_http);
        let (held, sessions) = (
            total(&metrics, "ratchet_edge_message_in_flight_bytes", &[]),
            total(&metrics, "ratchet_edge_smtp_sessions_active", &[]),
        );
        if held == 0.0 && sessions == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{held} bytes still in flight, {sessions} sessions open");
        std::thread::sleep(Duration::from_millis(50));
    }
}
