//! The decider's admin pages against a real `ratchet decider`: the tenant list, the report
//! page with each server's stage, counters over several days and the pause state, the
//! pause form with its refusals, and the page as headless Chromium renders it (a screenshot
//! is left in `target/test-artifacts/report-page.png`).

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::browser::{get, post_form, table_rows, text_of, Chromium, HttpResponse};
use common::cluster::{add_tenant, count_answered, decide_request, report, Cluster, TEST_CONFIG};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use serde_json::Value;
use tonic::transport::Channel;

const TENANT: &str = "bear";
const EXCHANGE_2013: &str = "15.0.1497.48";
const EXCHANGE_2016_OLD: &str = "15.1.2507.16";
const EXCHANGE_SE: &str = "15.2.2562.17";
/// A build the baseline does not know, with markup in it: the page must escape it.
const ODD_BUILD: &str = "<i>\"odd\"</i>&build";

/// Imported out-of-date servers: name, build, age in days today, and the stage that gives.
const IMPORTED: [(&str, &str, i64, u64); 5] = [
    ("fresh.bear.local", EXCHANGE_2013, 10, 1),
    ("slow.bear.local", EXCHANGE_2016_OLD, 45, 3),
    ("halfway.bear.local", EXCHANGE_2013, 75, 6),
    ("ancient.bear.local", EXCHANGE_2013, 120, 8),
    // Stage 4 until it is patched today.
    ("patched.bear.local", EXCHANGE_2013, 50, 4),
];

/// The decider's clock in each phase of traffic, in days before today, so that the message
/// chart has several days; and how many messages each server sends in it.
const PHASES: [(i64, u64); 4] = [(5, 3), (3, 6), (1, 2), (0, 4)];

fn sum_daily(report: &Value) -> u64 {
    report["daily"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["accepted"].as_u64().unwrap() + c["throttled"].as_u64().unwrap() + c["blocked"].as_u64().unwrap())
        .sum()
}

/// Waits until the node has committed `expected` messages in the tenant's daily counts.
async fn wait_for_counts(admin: &mut AdminClient<Channel>, expected: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = report(admin, TENANT).await;
        if sum_daily(&report) == expected {
            return report;
        }
        assert!(Instant::now() < deadline, "counters not committed: want {expected}, have {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stage_of(report: &Value, server: &str) -> Option<u64> {
    let row = report["servers"].as_array().unwrap().iter().find(|s| s["server_fqdn"] == server);
    row.unwrap_or_else(|| panic!("{server} is not in the report: {report}"))["stage"].as_u64()
}

/// Checks that each server's row in `html` names its stage, as the JSON report has it.
fn assert_rows_hold_stages(html: &str, report: &Value, what: &str) {
    let rows = table_rows(html);
    for server in report["servers"].as_array().unwrap() {
        let fqdn = server["server_fqdn"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|row| row.starts_with(fqdn))
            .unwrap_or_else(|| panic!("{what}: no row for {fqdn} in {rows:#?}"));
        match server["stage"].as_u64() {
            Some(stage) => assert!(row.contains(&format!("Stage {stage}")), "{what}: {fqdn} is in stage {stage}: {row}"),
            None => assert!(!row.contains("Stage "), "{what}: {fqdn} has no stage: {row}"),
        }
    }
}

fn remaining_text(report: &Value) -> String {
    format!("{} of 90 pause days remaining in", report["pause_days_remaining"])
}

fn assert_page(response: &HttpResponse, status: u16) -> String {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = response.header("content-security-policy").expect("a Content-Security-Policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    response.body.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn report_page_shows_stages_counters_and_pauses() {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    let members = cluster.initial_cluster.clone();
    let real_now = Utc::now();
    // Counted as an edge counts: this test is one, its flushes numbered from 1.
    const EDGE: u64 = 7;
    let (mut sent, mut flushes) = (0, 0);
    for (phase, (days_ago, messages)) in PHASES.into_iter().enumerate() {
        let offset = (-days_ago * 86_400).to_string();
        cluster.nodes[0].start(Some(&members), &["--test-clock-offset-secs", &offset]);
        cluster.wait_for_leader(1).await;
        let node = &cluster.nodes[0];
        let mut admin = node.admin().await;
        if phase == 0 {
            add_tenant(&mut admin, TENANT, "127.0.0.0/8").await;
            for (server, build, age, _) in IMPORTED {
                let first_seen = (real_now - TimeDelta::days(age)).to_rfc3339();
                admin
                    .import_server(pb::ImportServerRequest {
                        tenant: TENANT.into(),
                        server_fqdn: server.into(),
                        build: build.into(),
                        first_seen,
                    })
                    .await
                    .unwrap();
            }
        }
        let mut decision = node.decision().await;
        let mut traffic: Vec<(&str, &str)> = IMPORTED.iter().map(|(server, build, ..)| (*server, *build)).collect();
        traffic.push(("mail.bear.local", EXCHANGE_SE));
        traffic.push(("odd.bear.local", ODD_BUILD));
        if days_ago == 0 {
            // Patched today: its episode closes (remediated).
            traffic.push(("patched.bear.local", EXCHANGE_SE));
        }
        let mut answers = Vec::new();
        for (server, build) in &traffic {
            for _ in 0..messages {
                answers.push(
                    decision
                        .decide(decide_request("127.0.0.9", server, build))
                        .await
                        .unwrap()
                        .into_inner(),
                );
            }
        }
        sent += answers.len() as u64;
        flushes += 1;
        count_answered(&mut decision, EDGE, flushes, &answers).await;
        wait_for_counts(&mut admin, sent).await;
        if days_ago > 0 {
            cluster.nodes[0].kill9();
        }
    }
    let node = &cluster.nodes[0];
    let mut admin = node.admin().await;
    let before = report(&mut admin, TENANT).await;
    assert_eq!(before["daily"].as_object().unwrap().len(), PHASES.len(), "{before}");
    for (server, _, _, stage) in IMPORTED.iter().filter(|(server, ..)| *server != "patched.bear.local") {
        assert_eq!(stage_of(&before, server), Some(*stage), "{server}");
    }
    // Remediated: its clock stopped in the stage it had reached, which the report keeps.
    let patched = before["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_fqdn"] == "patched.bear.local")
        .unwrap();
    assert_eq!(
        (patched["status"].as_str(), patched["stage"].as_u64()),
        (Some("remediated"), Some(4)),
        "{patched}"
    );

    // The tenant list links the tenant, with its server count.
    let index = assert_page(&get(node.http, "/"), 200);
    assert!(index.contains("href=\"/tenants/bear\""), "{index}");
    let servers = before["servers"].as_array().unwrap().len();
    assert!(
        table_rows(&index).iter().any(|row| row.starts_with(&format!("bear {servers} "))),
        "{index}"
    );

    // The report page: each server's stage, the remaining pause days, escaped builds.
    let page = assert_page(&get(node.http, "/tenants/bear"), 200);
    assert_rows_hold_stages(&page, &before, "served page");
    assert!(text_of(&page).contains(&remaining_text(&before)), "{}", text_of(&page));
    assert!(page.contains("Enforcement is active"));
    assert!(page.contains("&lt;i&gt;&quot;odd&quot;&lt;/i&gt;&amp;build") && !page.contains(ODD_BUILD));
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 2);
    for external in [
        "<script",
        "<link rel=\"stylesheet\"",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(",
    ] {
        assert!(!page.contains(external), "the page must not load anything ({external})");
    }
    assert_eq!(
        get(node.http, "/api/v1/tenants/bear/report").header("content-type"),
        Some("application/json")
    );

    // Pages of servers: 3 at a time, linked both ways, every server once over the pages,
    // and the totals over all of them on every page.
    let link = |html: &str, rel: &str| -> Option<String> {
        let start = html.find(&format!("<a rel=\"{rel}\" href=\""))? + format!("<a rel=\"{rel}\" href=\"").len();
        Some(html[start..].split('"').next().unwrap().replace("&amp;", "&"))
    };
    let server_rows = |html: &str| -> Vec<String> {
        table_rows(html)
            .into_iter()
            .filter(|row| row.contains(".bear.local"))
            .map(|row| row.split(' ').next().unwrap().to_owned())
            .collect()
    };
    let mut path = "/tenants/bear?page_size=3".to_owned();
    let mut paged = Vec::new();
    let mut previous = None;
    loop {
        let page = assert_page(&get(node.http, &path), 200);
        let rows = server_rows(&page);
        assert!(rows.len() <= 3, "{rows:?}");
        assert!(
            text_of(&page).contains(&format!("{} of {servers} servers on this page", rows.len())),
            "{}",
            text_of(&page)
        );
        assert!(
            text_of(&page).contains(&format!("Servers {servers} Out of date")),
            "totals count every server: {}",
            text_of(&page)
        );
        if let Some(previous) = &previous {
            let back = assert_page(&get(node.http, &link(&page, "prev").expect("a previous link")), 200);
            assert_eq!(&server_rows(&back), previous, "the previous link gives back the page before");
        } else {
            assert_eq!(link(&page, "prev"), None, "the first page has no previous link");
        }
        paged.extend(rows.clone());
        previous = Some(rows);
        match link(&page, "next") {
            Some(next) => path = next,
            None => break,
        }
    }
    paged.sort();
    let mut every: Vec<String> = before["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server_fqdn"].as_str().unwrap().to_owned())
        .collect();
    every.sort();
    assert_eq!(paged, every, "every server once over the pages");
    let tampered = assert_page(&get(node.http, &format!("{}x", path.replace("page_size=3", "page_size=2"))), 400);
    assert!(tampered.contains("page_token: "), "{tampered}");
    let too_many = assert_page(&get(node.http, "/tenants/bear?page_size=100000"), 400);
    assert!(too_many.contains("page_size: 100000 is over the limit of 10000"), "{too_many}");
    let api_page: Value = serde_json::from_str(&get(node.http, "/api/v1/tenants/bear/report?page_size=2").body).unwrap();
    assert_eq!(api_page["servers"].as_array().unwrap().len(), 2);
    assert!(api_page["next_page_token"].is_string(), "{api_page}");

    // Unknown tenants.
    let missing = assert_page(&get(node.http, "/tenants/nobody"), 404);
    assert!(missing.contains("There is no tenant named &quot;nobody&quot;"), "{missing}");
    assert_page(&post_form(node.http, "/tenants/nobody/pause", "days=3", &[]), 404);

    // Refusals re-render the page with the reason, and pause nothing.
    let over = post_form(node.http, "/tenants/bear/pause", "days=500", &[]);
    let over_page = assert_page(&over, 409);
    assert!(
        over_page.contains("The pause was not made.") && over_page.contains("days:"),
        "{over_page}"
    );
    assert!(over_page.contains("value=\"500\""), "the refused value stays in the form");
    let bad = assert_page(&post_form(node.http, "/tenants/bear/pause", "days=soon", &[]), 400);
    assert!(bad.contains("&quot;soon&quot; is not a whole number of days"), "{bad}");
    assert_page(&post_form(node.http, "/tenants/bear/pause", "days=0", &[]), 400);
    let cross = post_form(node.http, "/tenants/bear/pause", "days=3", &[("Origin", "http://evil.example")]);
    assert_page(&cross, 403);
    assert_eq!(
        report(&mut admin, TENANT).await["pause_days_remaining"],
        before["pause_days_remaining"]
    );

    // The pause: a redirect back to the page, which shows it; the same form again pauses once.
    let form = "days=5&request_id=page-test-1";
    let origin = format!("http://{}", node.http);
    let paused = post_form(node.http, "/tenants/bear/pause", form, &[("Origin", &origin)]);
    assert_eq!(paused.status, 303, "{}", paused.body);
    assert_eq!(paused.header("location"), Some("/tenants/bear"));
    assert_eq!(post_form(node.http, "/tenants/bear/pause", form, &[]).status, 303);
    let after = report(&mut admin, TENANT).await;
    let remaining_before = before["pause_days_remaining"].as_u64().unwrap();
    assert_eq!(after["pause_days_remaining"].as_u64(), Some(remaining_before - 5), "{after}");
    assert!(after["paused_until"].is_string(), "{after}");
    let page = assert_page(&get(node.http, "/tenants/bear"), 200);
    let text = text_of(&page);
    assert!(text.contains(&remaining_text(&after)), "{text}");
    assert!(text.contains("Enforcement is paused until"), "{text}");
    assert!(text.contains("Extend pause"), "{text}");
    // Today's column of the message chart sits in a band saying the tenant is paused.
    assert!(
        page.contains("<rect class=\"band\"")
            && page.contains("enforcement paused for the whole tenant")
            && page.contains(">Tenant paused<"),
        "the message chart shows the pause as a band: {page}"
    );
    let index = text_of(&get(node.http, "/").body);
    assert!(index.contains("Paused until"), "{index}");

    // Headless Chromium: the screenshot, and the rendered DOM's text.
    let chromium = Chromium::find();
    let url = format!("http://{}/tenants/bear", node.http);
    let png = common::browser::artifact_dir().join("report-page.png");
    chromium.screenshot(&url, &png);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
    assert!(bytes.len() > 20_000, "the screenshot is only {} bytes", bytes.len());
    let dom = chromium.dump_dom(&url);
    assert_rows_hold_stages(&dom, &after, "rendered DOM");
    let text = text_of(&dom);
    assert!(text.contains(&remaining_text(&after)), "{text}");
    assert!(text.contains("Enforcement is paused until"), "{text}");
    assert!(
        dom.contains("<title id=\"stages-t\">") && dom.contains("<title id=\"daily-t\">"),
        "both charts are in the DOM"
    );
    println!("screenshot: {}", png.display());
}
