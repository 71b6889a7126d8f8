//! Enforcement modes end to end, with a real decider and a real edge: a tenant switched to
//! report-only (`ratchet ctl tenant mode`) has its stage-8 server's mail accepted and
//! relayed, while the report says it would have been blocked and counts it so; switched
//! back, the mail is blocked again. A product the policy switches `off` is not enforced at
//! all: its out-of-date servers are accepted, have no stage and start no clock. A mode word
//! or tenant that does not exist is refused in one line and changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::browser::get;
use common::metrics::{connector_updates, wait_for_connector_update};
use common::smtp::{deliver, EdgeProcess, SmtpSink};
use common::stages::{blocked, StagedDecider, OUT_OF_DATE, TENANT};
use ratchet_policy::{Mode, Policy};
use ratchet_proto::v1 as pb;
use serde_json::Value;

/// An Exchange 2016 build that the default policy holds out of date.
const EXCHANGE_2016_OUT_OF_DATE: &str = "15.1.2507.16";

fn ctl_json(endpoint: &str, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let stdout = common::ctl(endpoint, &full);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn ctl_failure(endpoint: &str, args: &[&str]) -> String {
    let mut full = vec!["ctl", "--endpoints", endpoint];
    full.extend_from_slice(args);
    common::stderr_of_failure(full)
}

/// The report row of `server`, if the report has one.
fn find_row(endpoint: &str, server: &str) -> Option<Value> {
    let report = ctl_json(endpoint, &["report", "--tenant", TENANT]);
    let servers = report["servers"].as_array().expect("a server list");
    servers.iter().find(|row| row["server_fqdn"] == server).cloned()
}

fn server_row(endpoint: &str, server: &str) -> Value {
    find_row(endpoint, server).unwrap_or_else(|| panic!("{server} is not in the report"))
}

/// A counter of `server` summed over its stages.
fn counted(row: &Value, counter: &str) -> u64 {
    row["counters"]
        .as_object()
        .expect("counters per stage")
        .values()
        .map(|counts| counts[counter].as_u64().unwrap_or(0))
        .sum()
}

/// Waits until the edge's count flushes have brought `server`'s `counter` to `at_least`
/// (a server first known from a flush is not in the report before it).
fn wait_for_count(endpoint: &str, server: &str, counter: &str, at_least: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = find_row(endpoint, server);
        if let Some(row) = row.as_ref().filter(|row| counted(row, counter) >= at_least) {
            return row.clone();
        }
        assert!(Instant::now() < deadline, "{counter} of {server} never reached {at_least}: {row:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tenant_mode(endpoint: &str) -> Value {
    let tenants = ctl_json(endpoint, &["tenant", "list"]);
    tenants
        .as_array()
        .expect("a tenant list")
        .iter()
        .find(|t| t["name"] == TENANT)
        .expect("the tenant is listed")["mode"]
        .clone()
}

fn mode_changes(endpoint: &str) -> usize {
    let events = ctl_json(endpoint, &["events", "--tenant", TENANT]);
    events["events"]
        .as_array()
        .expect("an event list")
        .iter()
        .filter(|e| e["kind"] == "mode_changed")
        .count()
}

#[test]
fn a_report_only_tenant_is_accepted_and_told_what_enforcing_would_have_done() {
    let decider = StagedDecider::start();
    let endpoint = decider.endpoint();
    let sink = SmtpSink::start();
    let http = common::cluster::free_port().to_string();
    let edge = EdgeProcess::start_with(&endpoint, sink.addr, None, &["--http", &http], &[]);
    // Runs `ctl tenant mode`, and waits until the edge has heard of it.
    let set_mode = |mode: &str| {
        let updates = connector_updates(edge.http.unwrap(), "ratchet_edge");
        let set = common::ctl(&endpoint, &["tenant", "mode", "--tenant", TENANT, mode]);
        wait_for_connector_update(edge.http.unwrap(), "ratchet_edge", updates);
        set
    };
    // First seen 100 days ago: stage 8, blocked every minute of the hour.
    let server = "old.bear.local";
    decider.import(server, 100);

    assert_eq!(deliver(edge.addr, server, OUT_OF_DATE, "enforced"), blocked(60));
    assert_eq!(tenant_mode(&endpoint), "enforce");

    let set = set_mode("report-only");
    assert_eq!(set.trim(), format!("tenant {TENANT}: mode report-only"));
    assert_eq!(tenant_mode(&endpoint), "report-only");
    let reply = deliver(edge.addr, server, OUT_OF_DATE, "reported only");
    assert!(reply.starts_with("250 "), "a report-only tenant's stage-8 server: {reply}");
    let relayed = sink.wait_for_messages(1);
    assert!(relayed[0].contains("reported only"), "the accepted message reached the next hop");

    let row = wait_for_count(&endpoint, server, "would_block", 1);
    assert_eq!(row["mode"], "report-only");
    assert_eq!(row["would_verdict"], "block");
    assert_eq!(row["stage"], 8, "the clock runs on, and its stage is reported");
    assert_eq!(
        (row["current_throttle_rate"].as_u64(), row["current_block_rate"].as_u64()),
        (Some(0), Some(0)),
        "its mail meets no throttling or blocking now"
    );
    assert_eq!(counted(&row, "accepted"), 1, "the message was accepted: {row}");
    assert_eq!(counted(&row, "blocked"), 1, "the enforced one before it was blocked: {row}");
    let report = ctl_json(&endpoint, &["report", "--tenant", TENANT]);
    assert_eq!(report["mode"], "report-only");
    // The report page says so, and what enforcing would have done.
    let http = decider.cluster.nodes[0].http;
    let page = get(http, &format!("/tenants/{TENANT}")).body;
    assert!(page.contains(">Report-only</span> Enforcement is in report-only mode"), "{page}");
    assert!(page.contains("report-only: would block"), "{page}");
    assert!(page.contains("report-only: would have throttled 0 · blocked 1"), "{page}");
    assert!(get(http, "/").body.contains(">Report-only</span>"));

    // The mode it has already: a no-op that succeeds and tells no one.
    let before = mode_changes(&endpoint);
    assert_eq!(before, 1, "switching to report-only is an event");
    common::ctl(&endpoint, &["tenant", "mode", "--tenant", TENANT, "report-only"]);
    assert_eq!(mode_changes(&endpoint), before);

    set_mode("enforce");
    assert_eq!(deliver(edge.addr, server, OUT_OF_DATE, "enforced again"), blocked(60));
    let row = server_row(&endpoint, server);
    assert_eq!((row["mode"].as_str(), row["would_verdict"].as_null()), (Some("enforce"), Some(())));
    assert_eq!(sink.messages().len(), 1, "only the report-only message was relayed");
    let audit = common::ctl(&endpoint, &["audit", "--tenant", TENANT]);
    assert!(
        audit.contains("tenant mode report-only") && audit.contains("tenant mode enforce"),
        "{audit}"
    );
}

#[test]
fn a_product_switched_off_is_not_enforced_at_all() {
    let decider = StagedDecider::start();
    let endpoint = decider.endpoint();
    let mut policy = Policy::default();
    policy
        .products
        .iter_mut()
        .filter(|p| p.name == "Exchange 2016")
        .for_each(|p| p.mode = Mode::Off);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), policy.to_toml()).unwrap();
    common::ctl(&endpoint, &["policy", "set", file.path().to_str().unwrap()]);
    let sink = SmtpSink::start();
    let edge = EdgeProcess::start(&endpoint, sink.addr, None);

    // Imported 100 days ago, it would be in stage 8; and one never seen before.
    let imported = "old2016.bear.local";
    let first_seen = (decider.now - chrono::TimeDelta::days(100)).to_rfc3339();
    common::import_server(&endpoint, TENANT, imported, EXCHANGE_2016_OUT_OF_DATE, &first_seen);
    let new = "new2016.bear.local";
    for server in [imported, new] {
        let reply = deliver(edge.addr, server, EXCHANGE_2016_OUT_OF_DATE, server);
        assert!(reply.starts_with("250 "), "{server} of a product switched off: {reply}");
    }
    // Another product's server is enforced as before.
    let enforced = "old2013.bear.local";
    decider.import(enforced, 100);
    assert_eq!(deliver(edge.addr, enforced, OUT_OF_DATE, "enforced"), blocked(60));

    let row = wait_for_count(&endpoint, new, "accepted", 1);
    assert_eq!(row["mode"], "off");
    assert!(row["first_detected_date"].is_null(), "no clock started: {row}");
    for server in [imported, new] {
        let row = server_row(&endpoint, server);
        assert_eq!(
            (row["mode"].as_str(), row["stage"].as_null(), row["would_verdict"].as_null()),
            (Some("off"), Some(()), Some(())),
            "{row}"
        );
    }
    assert_eq!(server_row(&endpoint, enforced)["mode"], "enforce");
    assert_eq!(sink.wait_for_messages(2).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_mode_or_tenant_is_refused_in_one_line_and_changes_nothing() {
    let decider = StagedDecider::start();
    let endpoint = decider.endpoint();
    let one_line = |stderr: &str| {
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    };

    let stderr = ctl_failure(&endpoint, &["tenant", "mode", "--tenant", TENANT, "sometimes"]);
    one_line(&stderr);
    assert!(stderr.contains("sometimes") && stderr.contains("report-only"), "{stderr}");

    let stderr = ctl_failure(&endpoint, &["tenant", "mode", "--tenant", "nosuch", "report-only"]);
    one_line(&stderr);
    assert!(stderr.contains("nosuch"), "{stderr}");

    // The decider itself refuses any other word, "off" too (only a product can be off).
    let mut admin = decider.cluster.nodes[0].admin().await;
    for word in ["sometimes", "off"] {
        let request = pb::SetTenantModeRequest {
            tenant: TENANT.into(),
            mode: word.into(),
        };
        let refused = admin.set_tenant_mode(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            refused.message(),
            format!("mode: \"{word}\" is not a tenant mode: enforce or report-only")
        );
    }

    assert_eq!(tenant_mode(&endpoint), "enforce");
    assert_eq!(mode_changes(&endpoint), 0);
}
