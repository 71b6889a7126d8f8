//! A large tenant against a real `ratchet decider`: 100,000 servers imported through the
//! admin API, then read back page by page over gRPC (every server exactly once, in order,
//! the previous page's token giving back the page before), through `ratchet ctl` (one page
//! and its token, or every page followed), and exported by `ratchet ctl report --all` as
//! CSV and JSON lines that a real CSV parser reads back. Page tokens of another tenant or
//! listing, or altered ones, are refused in one line naming the problem, with nothing changed.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::cluster::{add_tenant, count_answered, decide_request, Cluster, TEST_CONFIG};
use futures::StreamExt;
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use serde_json::Value;
use tonic::transport::Channel;

const SERVERS: usize = 100_000;
/// Imports in flight at once: the leader batches concurrent writes into few log entries.
const IMPORTS_IN_FLIGHT: usize = 64;
const EXCHANGE_2013: &str = "15.0.1497.48";
/// An unidentified build that needs CSV quoting: a comma and double quotes.
const QUOTED_BUILD: &str = "x,\"y\"";

fn server_name(i: usize) -> String {
    format!("exch-{i:06}.datacenter.bear.example")
}

/// One page of a report over gRPC: its server FQDNs and the reply (tokens).
async fn report_page(
    admin: &mut AdminClient<Channel>,
    tenant: &str,
    page_size: u32,
    page_token: &str,
) -> (Vec<String>, pb::ReportResponse) {
    let request = pb::ReportRequest {
        tenant: tenant.into(),
        page_size,
        page_token: page_token.into(),
    };
    let reply = admin.report(request).await.unwrap().into_inner();
    let page: Value = serde_json::from_str(&reply.report_json).unwrap();
    let names = page["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server_fqdn"].as_str().unwrap().to_owned())
        .collect();
    (names, reply)
}

fn ctl_args<'a>(endpoint: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut full = vec!["ctl", "--endpoints", endpoint];
    full.extend_from_slice(args);
    full
}

/// The one stderr line of a ctl command that must fail, with nothing on stdout.
fn refused(endpoint: &str, args: &[&str]) -> String {
    let output = common::run(ctl_args(endpoint, args));
    assert!(!output.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line on stderr, got:\n{stderr}");
    assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout when refused");
    stderr.trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_of_100000_servers_pages_and_exports_every_server_once() {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    let node = &cluster.nodes[0];
    let endpoint = node.grpc.to_string();
    let mut admin = node.admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.0/8").await;
    add_tenant(&mut admin, "owl", "10.0.0.0/8").await;

    // An unidentified build that needs quoting in CSV, decided and counted as an edge does.
    let mut decision = node.decision().await;
    let decided = decision
        .decide(decide_request("127.0.0.1", "odd.bear.example", QUOTED_BUILD))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.status(), pb::BuildStatus::Unidentified);
    count_answered(&mut decision, 1, 1, std::slice::from_ref(&decided)).await;

    // Five days old: stage 1, so the leader's notice scan has nothing to raise meanwhile.
    let first_seen = (Utc::now() - TimeDelta::days(5)).to_rfc3339();
    let import = |tenant: &str, server_fqdn: String| pb::ImportServerRequest {
        tenant: tenant.into(),
        server_fqdn,
        build: EXCHANGE_2013.into(),
        first_seen: first_seen.clone(),
    };
    let started = Instant::now();
    let imports = (0..SERVERS).map(|i| {
        let mut admin = admin.clone();
        let request = import("bear", server_name(i));
        async move { admin.import_server(request).await.unwrap() }
    });
    futures::stream::iter(imports)
        .buffer_unordered(IMPORTS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let took = started.elapsed();
    eprintln!(
        "imported {SERVERS} servers one ImportServer call each, {IMPORTS_IN_FLIGHT} in flight: {:.1} s, {:.0} imports/s",
        took.as_secs_f64(),
        SERVERS as f64 / took.as_secs_f64()
    );
    for i in 0..3 {
        admin.import_server(import("owl", format!("mx{i}.owl.example"))).await.unwrap();
    }
    let total = SERVERS + 1; // and odd.bear.example

    // Every page over gRPC: every server exactly once, in FQDN order.
    let mut seen: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let (names, reply) = report_page(&mut admin, "bear", 7_000, &token).await;
        assert!(names.len() <= 7_000);
        pages.push((names.clone(), reply.clone()));
        seen.extend(names);
        if reply.next_page_token.is_empty() {
            break;
        }
        token = reply.next_page_token;
    }
    assert!(seen.contains(&"odd.bear.example".to_owned()), "the decided server is in the report");
    assert_eq!(seen.len(), total);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), total, "no server twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "FQDN order");
    assert_eq!(pages.len(), total.div_ceil(7_000));
    assert!(pages[0].1.previous_page_token.is_empty(), "the first page has no page before");
    // The previous page of the second page is the first page.
    let (back, _) = report_page(&mut admin, "bear", 7_000, &pages[1].1.previous_page_token).await;
    assert_eq!(back, pages[0].0);
    // The default page size and the maximum.
    assert_eq!(report_page(&mut admin, "bear", 0, "").await.0.len(), 1_000);
    let too_big = admin
        .report(pb::ReportRequest {
            tenant: "bear".into(),
            page_size: 10_001,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), tonic::Code::InvalidArgument);
    assert_eq!(too_big.message(), "page_size: 10001 is over the limit of 10000");

    // Events page the same way: one first_detected per imported server.
    let mut events = 0;
    let mut token = String::new();
    loop {
        let request = pb::ListEventsRequest {
            tenant: "bear".into(),
            page_size: 10_000,
            page_token: token,
        };
        let reply = admin.list_events(request).await.unwrap().into_inner();
        events += reply.events.len();
        if reply.next_page_token.is_empty() {
            break;
        }
        token = reply.next_page_token;
    }
    assert_eq!(events, SERVERS);

    // ctl: one page and the token of the next; that token gives the page after it.
    let first = common::json_of(ctl_args(&endpoint, &["--json", "report", "--tenant", "bear", "--page-size", "3"]));
    let names = |page: &Value| -> Vec<String> {
        page["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["server_fqdn"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&first), seen[..3]);
    assert_eq!(first["previous_page_token"], Value::Null);
    let bear_token = first["next_page_token"].as_str().unwrap().to_owned();
    let second = common::json_of(ctl_args(
        &endpoint,
        &[
            "--json",
            "report",
            "--tenant",
            "bear",
            "--page-size",
            "3",
            "--page-token",
            &bear_token,
        ],
    ));
    assert_eq!(names(&second), seen[3..6]);
    let human = common::stdout_of(ctl_args(&endpoint, &["report", "--tenant", "bear", "--page-size", "2"]));
    assert!(human.contains("next page: --page-token "), "{human}");
    let events_page = common::json_of(ctl_args(&endpoint, &["--json", "events", "--tenant", "bear", "--page-size", "5"]));
    assert_eq!(events_page["events"].as_array().unwrap().len(), 5);
    assert!(events_page["next_page_token"].is_string(), "{events_page}");

    // A token of another tenant, of another listing, or altered, is refused by name,
    // and nothing changes.
    let before = node.state_digest().await;
    assert_eq!(
        refused(&endpoint, &["report", "--tenant", "owl", "--page-token", &bear_token]),
        "ratchet: invalid argument: page_token: was issued for tenant \"bear\", not \"owl\""
    );
    assert_eq!(
        refused(&endpoint, &["events", "--tenant", "bear", "--page-token", &bear_token]),
        "ratchet: invalid argument: page_token: was issued by Report, not ListEvents"
    );
    let mut altered = bear_token.clone().into_bytes();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert!(refused(&endpoint, &["report", "--tenant", "bear", "--page-token", &altered])
        .starts_with("ratchet: invalid argument: page_token: "));
    assert_eq!(node.state_digest().await, before, "a refused page token changes nothing");

    // The whole report, as existing users read it: ctl follows the pages itself.
    let whole = common::json_of(ctl_args(&endpoint, &["--json", "report", "--tenant", "bear"]));
    assert_eq!(names(&whole), seen);
    assert!(whole.get("next_page_token").is_none(), "the whole report keeps its shape");
    assert_eq!(whole["pause_days_remaining"], 90);

    // Every tenant's servers as CSV: a header row, then one row per server, read back by
    // a real CSV parser.
    let csv_out = common::run(ctl_args(&endpoint, &["report", "--all", "--format", "csv"]));
    assert!(csv_out.status.success(), "{}", String::from_utf8_lossy(&csv_out.stderr));
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[0], "tenant");
    assert_eq!(&header[2], "server_fqdn");
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (tenant_col, fqdn_col, build_col, status_col, stage_col) = (
        column("tenant"),
        column("server_fqdn"),
        column("build"),
        column("status"),
        column("stage"),
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), total + 3, "every server of bear and owl, once");
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let bear: Vec<&str> = rows.iter().filter(|r| &r[tenant_col] == "bear").map(|r| &r[fqdn_col]).collect();
    assert_eq!(bear, seen.iter().map(String::as_str).collect::<Vec<_>>());
    let odd = rows.iter().find(|r| &r[fqdn_col] == "odd.bear.example").unwrap();
    assert_eq!(
        (&odd[build_col], &odd[status_col], &odd[stage_col]),
        (QUOTED_BUILD, "unidentified", "")
    );
    let imported = rows.iter().find(|r| &r[fqdn_col] == "mx0.owl.example").unwrap();
    assert_eq!((&imported[status_col], &imported[stage_col]), ("out_of_date", "1"));

    // And as JSON lines, one object per server.
    let json_out = common::run(ctl_args(
        &endpoint,
        &["report", "--all", "--format", "json", "--page-size", "10000"],
    ));
    assert!(json_out.status.success(), "{}", String::from_utf8_lossy(&json_out.stderr));
    let lines: Vec<Value> = json_out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(lines.len(), total + 3);
    let odd = lines.iter().find(|l| l["server_fqdn"] == "odd.bear.example").unwrap();
    assert_eq!(
        (&odd["tenant"], &odd["build"], &odd["status"]),
        (&Value::from("bear"), &Value::from(QUOTED_BUILD), &Value::from("unidentified"))
    );
    assert!(odd["counters"].is_object(), "{odd}");
}
