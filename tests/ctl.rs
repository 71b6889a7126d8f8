//! Every `ratchet ctl` command against a real decider group, in both output forms, with
//! the refusals an operator meets: each is one line on stderr and a non-zero exit.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::cluster::{Cluster, TEST_CONFIG};
use serde_json::Value;

struct Ctl {
    endpoints: String,
}

impl Ctl {
    fn args<'a>(&'a self, json: bool, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["ctl", "--endpoints", &self.endpoints];
        if json {
            full.push("--json");
        }
        full.extend_from_slice(args);
        full
    }

    /// Human output of a command that must succeed.
    fn table(&self, args: &[&str]) -> String {
        common::stdout_of(self.args(false, args))
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = common::stdout_of(self.args(true, args));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}):\n{text}"))
    }

    /// The one stderr line of a command that must fail, in both output forms.
    fn refused(&self, args: &[&str]) -> String {
        let mut lines = Vec::new();
        for json in [false, true] {
            let output = common::run(self.args(json, args));
            assert!(!output.status.success(), "{args:?} should fail");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert_eq!(stderr.lines().count(), 1, "{args:?}: one line on stderr, got:\n{stderr}");
            assert!(stderr.starts_with("ratchet: "), "{stderr}");
            assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout when refused");
            lines.push(stderr.trim_end().to_owned());
        }
        assert_eq!(lines[0], lines[1]);
        lines.remove(0)
    }
}

/// `server import` for tenant bear.
fn import_args<'a>(server: &'a str, build: &'a str, first_seen: &'a str) -> [&'a str; 10] {
    common::import_args("bear", server, build, first_seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_in_both_forms_with_its_refusals() {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    let endpoints = cluster.nodes.iter().map(|n| n.grpc.to_string()).collect::<Vec<_>>().join(",");
    let ctl = Ctl { endpoints };

    // Tenants.
    assert_eq!(ctl.table(&["tenant", "add", "bear"]).trim(), "tenant bear added");
    assert_eq!(
        ctl.json(&["tenant", "add", "bear"]),
        serde_json::json!({"tenant": "bear", "created": false})
    );
    ctl.table(&["tenant", "add", "owl"]);
    let tenants = ctl.table(&["tenant", "list"]);
    assert!(
        tenants.starts_with("TENANT") && tenants.contains("bear") && tenants.contains("owl"),
        "{tenants}"
    );
    let names: Vec<Value> = ctl
        .json(&["tenant", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, ["bear", "owl"]);
    assert!(ctl.refused(&["tenant", "add", "Bad Name!"]).contains("invalid argument: name:"));

    // Connectors.
    assert!(ctl
        .table(&["connector", "add", "--tenant", "bear", "--cidr", "203.0.113.0/24"])
        .contains("added"));
    ctl.json(&[
        "connector",
        "add",
        "--tenant",
        "bear",
        "--cidr",
        "2001:db8::/32",
        "--cert-name",
        "mx.bear.example",
    ]);
    let connectors = ctl.json(&["connector", "list", "--tenant", "bear"]);
    assert_eq!(connectors.as_array().unwrap().len(), 2, "{connectors}");
    assert!(ctl.table(&["connector", "list", "--tenant", "bear"]).contains("mx.bear.example"));
    assert_eq!(
        ctl.refused(&["connector", "add", "--tenant", "bear", "--cidr", "203.0.113.0/33"]),
        "ratchet: invalid argument: cidr: \"203.0.113.0/33\" is not an address range like 203.0.113.0/24"
    );
    assert_eq!(
        ctl.refused(&["connector", "add", "--tenant", "nobody", "--cidr", "198.51.100.0/24"]),
        "ratchet: not found: tenant: no tenant named \"nobody\""
    );
    assert!(ctl
        .refused(&["connector", "add", "--tenant", "owl", "--cidr", "203.0.113.0/24"])
        .contains("already belongs to tenant \"bear\""));

    // Servers.
    let first_seen = (Utc::now() - TimeDelta::days(65)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let imported = ctl.table(&import_args("EXCH1.bear.local", "15.1.2507.16", &first_seen));
    assert!(
        imported.contains("exch1.bear.local") && imported.contains(&first_seen),
        "{imported}"
    );
    let imported = ctl.json(&import_args("exch2.bear.local", "15.0.1497.48", &first_seen));
    assert_eq!(imported["first_seen"], first_seen.as_str());
    let future = (Utc::now() + TimeDelta::days(2)).to_rfc3339();
    assert!(ctl.refused(&import_args("x.bear", "15.0.1497.48", &future)).contains("first_seen:"));
    assert!(ctl
        .refused(&import_args("x.bear", "15.0.1497.48", "last tuesday"))
        .contains("is not an RFC 3339 instant"));
    assert!(ctl
        .refused(&import_args("x.bear", "15.2.2562.17", &first_seen))
        .contains("not out of date"));
    assert!(ctl
        .table(&["server", "decommission", "--tenant", "bear", "--server", "exch2.bear.local"])
        .contains("decommissioned"));
    assert!(ctl
        .refused(&["server", "decommission", "--tenant", "bear", "--server", "exch2.bear.local"])
        .contains("not found: server_fqdn:"));

    // The report, in the contract's JSON and as a table.
    let report = ctl.json(&["report", "--tenant", "bear"]);
    assert_eq!(report["tenant"], "bear");
    assert_eq!(report["paused_until"], Value::Null);
    assert_eq!(report["pause_days_remaining"], 90);
    let server = &report["servers"][0];
    for field in [
        "server_fqdn",
        "build",
        "product",
        "status",
        "first_detected_date",
        "stage",
        "throttle_enabled_date",
        "blocking_enabled_date",
        "current_throttle_rate",
        "current_block_rate",
        "next_stage_throttle_rate",
        "next_stage_block_rate",
        "next_stage_start_date",
        "recommended_build_versions",
        "last_seen",
        "counters",
        "mode",
        "would_verdict",
    ] {
        assert!(server.get(field).is_some(), "report server lacks {field}: {server}");
    }
    assert_eq!(
        (report["mode"].as_str(), server["mode"].as_str()),
        (Some("enforce"), Some("enforce"))
    );
    assert_eq!(
        (server["server_fqdn"].as_str(), server["stage"].as_u64(), server["status"].as_str()),
        (Some("exch1.bear.local"), Some(5), Some("out_of_date"))
    );
    assert_eq!(
        (server["current_throttle_rate"].as_u64(), server["current_block_rate"].as_u64()),
        (Some(30), Some(5))
    );
    assert_eq!(server["recommended_build_versions"], serde_json::json!(["15.1.2507.61"]));
    let table = ctl.table(&["report", "--tenant", "bear"]);
    assert!(
        table.contains("90 pause days remain") && table.contains("exch1.bear.local") && table.contains("Exchange 2016"),
        "{table}"
    );
    assert_eq!(
        ctl.refused(&["report", "--tenant", "nobody"]),
        "ratchet: not found: tenant: no tenant named \"nobody\""
    );

    // Pauses: create, extend, list, end; beyond the budget is refused naming what remains.
    assert!(ctl.table(&["pause", "--tenant", "bear", "--days", "30"]).contains("60 remain"));
    let extended = ctl.json(&["pause", "--tenant", "bear", "--days", "50", "--request-id", "r-1"]);
    assert_eq!(extended["pause_days_remaining"], 10);
    assert_eq!(
        ctl.json(&["pause", "--tenant", "bear", "--days", "50", "--request-id", "r-1"])["pause_days_remaining"],
        10,
        "a retried id is charged once"
    );
    assert_eq!(
        ctl.refused(&["pause", "--tenant", "bear", "--days", "11"]),
        format!(
            "ratchet: refused: days: pause of 11 days refused: only 10 pause days remain for {}",
            Utc::now().format("%Y")
        )
    );
    let pauses = ctl.json(&["pauses", "--tenant", "bear"]);
    assert_eq!(
        (
            pauses["pause_days_remaining"].as_u64(),
            pauses["pauses"][0]["days_charged"].as_u64()
        ),
        (Some(10), Some(80))
    );
    assert!(ctl.table(&["pauses", "--tenant", "bear"]).contains("active"));
    assert_ne!(ctl.json(&["report", "--tenant", "bear"])["paused_until"], Value::Null);
    let ended = ctl.json(&["pause", "end", "--tenant", "bear"]);
    assert_eq!(ended["refunded_days"], 79);
    assert!(ctl.refused(&["pause", "end", "--tenant", "bear"]).contains("is not paused"));
    assert!(ctl
        .refused(&["pause", "--tenant", "bear", "--days", "0"])
        .contains("days: must be at least 1"));

    // A pause of one server only, charged per server named, ended on its own.
    let server_pause = ["pause", "--tenant", "bear", "--server", "exch1.bear.local", "--days", "10"];
    assert_eq!(ctl.json(&server_pause)["pause_days_remaining"], 79);
    let report = ctl.json(&["report", "--tenant", "bear"]);
    assert_eq!(report["paused_until"], Value::Null, "the tenant as a whole is not paused");
    let exch1 = report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_fqdn"] == "exch1.bear.local");
    assert_ne!(exch1.unwrap()["paused_until"], Value::Null, "{report}");
    assert!(ctl
        .refused(&["pause", "--tenant", "bear", "--server", "nope.bear.local", "--days", "1"])
        .contains("has no server nope.bear.local"));
    let twice = [
        "pause",
        "--tenant",
        "bear",
        "--server",
        "exch1.bear.local",
        "--server",
        "exch1.bear.local",
        "--days",
        "1",
    ];
    assert!(ctl.refused(&twice).contains("servers: exch1.bear.local is named twice"));
    assert!(ctl.table(&["pauses", "--tenant", "bear"]).contains("exch1.bear.local"));
    let ended = ctl.json(&["pause", "end", "--tenant", "bear", "--server", "exch1.bear.local"]);
    assert_eq!(
        (ended["refunded_days"].as_u64(), ended["pause_days_remaining"].as_u64()),
        (Some(9), Some(88))
    );
    assert!(ctl
        .refused(&["pause", "end", "--tenant", "bear", "--server", "exch1.bear.local"])
        .contains("server exch1.bear.local is not paused on its own"));

    // Events and the webhook.
    let events = ctl.json(&["events", "--tenant", "bear"]);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"first_detected") && kinds.contains(&"pause_started") && kinds.contains(&"pause_ended"),
        "{kinds:?}"
    );
    assert!(ctl.table(&["events", "--tenant", "bear"]).contains("pause_extended"));
    assert!(ctl
        .table(&["webhook", "--tenant", "bear", "--url", "https://hooks.bear.example/ratchet"])
        .contains("hooks.bear.example"));
    assert!(ctl
        .refused(&["webhook", "--tenant", "bear", "--url", "ftp://nope"])
        .contains("url:"));

    // Policy: show, set a valid one (new version), refuse an invalid one naming the rule.
    let shown = ctl.json(&["policy", "show"]);
    assert_eq!(shown["version"], 0);
    let dir = tempfile::tempdir().unwrap();
    let valid = dir.path().join("policy.toml");
    std::fs::write(
        &valid,
        shown["policy_toml"].as_str().unwrap().replace("Exchange Online", "Bear Mail"),
    )
    .unwrap();
    let version = ctl.json(&["policy", "set", valid.to_str().unwrap()])["version"].as_u64().unwrap();
    assert!(version > 0);
    assert!(ctl.table(&["policy", "show"]).contains(&format!("# policy version {version}")));
    let invalid = dir.path().join("invalid.toml");
    std::fs::write(&invalid, "[[stage]]\nfrom_days = 0\nthrottle_min = 50\nblock_min = 20\n").unwrap();
    assert!(ctl
        .refused(&["policy", "set", invalid.to_str().unwrap()])
        .contains("stage 1: throttle_min + block_min = 70 is over 60"));
    assert_eq!(
        ctl.json(&["policy", "show"])["version"].as_u64(),
        Some(version),
        "the old policy stays"
    );

    // Removal: a connector by exactly its claim, and a tenant only with --yes.
    assert_eq!(
        ctl.refused(&["connector", "remove", "--tenant", "bear", "--cidr", "2001:db8::/32"]),
        "ratchet: not found: cidr: tenant \"bear\" has no connector 2001:db8::/32"
    );
    assert_eq!(
        ctl.json(&[
            "connector",
            "remove",
            "--tenant",
            "bear",
            "--cidr",
            "2001:db8::/32",
            "--cert-name",
            "mx.bear.example",
        ]),
        serde_json::json!({"tenant": "bear", "cidr": "2001:db8::/32", "cert_name": "mx.bear.example", "removed": true})
    );
    assert_eq!(
        ctl.table(&["connector", "remove", "--tenant", "bear", "--cidr", "203.0.113.0/24"])
            .trim(),
        "connector 203.0.113.0/24 of tenant bear removed"
    );
    assert!(ctl.json(&["connector", "list", "--tenant", "bear"]).as_array().unwrap().is_empty());
    let unconfirmed = ctl.refused(&["tenant", "remove", "--tenant", "bear"]);
    assert!(
        unconfirmed.contains("would remove tenant bear (servers: 1, connectors: 0)") && unconfirmed.contains("--yes"),
        "{unconfirmed}"
    );
    assert_eq!(
        ctl.refused(&["tenant", "remove", "--tenant", "nobody", "--yes"]),
        "ratchet: not found: tenant: no tenant named \"nobody\""
    );
    assert_eq!(
        ctl.json(&["tenant", "remove", "--tenant", "owl", "--yes"]),
        serde_json::json!({"tenant": "owl", "removed": true})
    );
    assert_eq!(
        ctl.table(&["tenant", "remove", "--tenant", "bear", "--yes"]).trim(),
        "tenant bear removed"
    );
    assert!(ctl.json(&["tenant", "list"]).as_array().unwrap().is_empty());

    // Cluster status.
    let status = ctl.json(&["cluster", "status"]);
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert!(ctl.table(&["cluster", "status"]).contains("leader"));

    // No decider reachable.
    let unreachable = Ctl {
        endpoints: common::cluster::free_port().to_string(),
    };
    assert!(unreachable
        .refused(&["tenant", "list"])
        .starts_with("ratchet: no decider reachable at --endpoints:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_larger_than_grpcs_default_message_limit_comes_through() {
    const SERVERS: usize = 8_000;
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    cluster.found(&[0], Duration::ZERO);
    cluster.wait_for_leader(1).await;
    let admin = cluster.nodes[0].admin().await;
    common::cluster::add_tenant(&mut admin.clone(), "bear", "127.0.0.0/8").await;
    let first_seen = (Utc::now() - TimeDelta::days(40)).to_rfc3339();
    let imports = (0..SERVERS).map(|i| {
        let mut admin = admin.clone();
        let request = ratchet_proto::v1::ImportServerRequest {
            tenant: "bear".into(),
            server_fqdn: format!("exchange-server-{i:05}.datacenter-one.bear.example"),
            build: "15.0.1497.48".into(),
            first_seen: first_seen.clone(),
        };
        async move { admin.import_server(request).await.unwrap() }
    });
    use futures::StreamExt;
    futures::stream::iter(imports).buffer_unordered(64).collect::<Vec<_>>().await;
    let ctl = Ctl {
        endpoints: cluster.nodes[0].grpc.to_string(),
    };
    let output = common::run(ctl.args(true, &["report", "--tenant", "bear"]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.stdout.len() > 4 * 1024 * 1024,
        "the report is past 4 MiB: {} bytes",
        output.stdout.len()
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["servers"].as_array().unwrap().len(), SERVERS);
}
