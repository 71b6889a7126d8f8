//! Writes a run's `results.json` (machine-readable: every key with its anchor figure, ratio
//! and goal) and `BENCHMARKS.md` (method, machine, commit, raw figures, ratios and goals,
//! then the hand-written analysis from `bench/notes.md` if present).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::Settings;

fn sh(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let tmp = std::env::temp_dir();
    let fs = sh("findmnt", &["-no", "FSTYPE", "-T", &tmp.display().to_string()]);
    json!({
        "nproc": sh("nproc", &[]).parse::<u64>().unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu": cpu,
        "kernel": sh("uname", &["-sr"]),
        "data_dirs": format!("{} ({fs})", tmp.display()),
    })
}

fn commit() -> String {
    let head = sh("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty {
        format!("{head} (with uncommitted changes)")
    } else {
        head
    }
}

pub fn write(out: &Path, settings: &Settings, results: Value) -> anyhow::Result<()> {
    let document = json!({
        "mode": if settings.smoke { "smoke" } else { "full" },
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "commit": commit(),
        "machine": machine(),
        "settings": {
            "clients": settings.clients,
            "warmup_secs": settings.warmup.as_secs_f64(),
            "measure_secs": settings.measure.as_secs_f64(),
            "decide_servers": settings.decide_servers,
            "redis_requests": settings.redis_requests,
            "smtp_messages": settings.smtp_messages,
            "smtp_sessions": settings.smtp_sessions,
            "probe_messages": settings.probe_messages,
            "scale_servers": settings.scale_servers,
            "failover_trials": settings.failover_trials,
            "many_connectors": settings.many_connectors,
            "decide_connector_servers": settings.decide_connector_servers,
            "admin_tenants": settings.admin_tenants,
        },
        "benchmarks": results,
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&document)? + "\n")?;
    std::fs::write(out.join("BENCHMARKS.md"), markdown(&document))?;
    Ok(())
}

fn num(value: &Value) -> String {
    match value {
        Value::Null => "n/a".into(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() >= 1.0 {
                format!("{}", f as i64)
            } else {
                format!("{f}")
            }
        }
        other => other.to_string(),
    }
}

/// Whether a figure the goal bounds from above is within it.
fn within(figure: &Value, limit: f64) -> &'static str {
    match figure.as_f64() {
        Some(value) if value <= limit => "met",
        Some(_) => "**missed**",
        None => "**failed**",
    }
}

fn met(value: &Value) -> &'static str {
    match value["met"].as_bool() {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "**failed**",
    }
}

fn markdown(doc: &Value) -> String {
    let b = &doc["benchmarks"];
    let m = &doc["machine"];
    let s = &doc["settings"];
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `bench/run.sh` ({} run, {}). Commit `{}`. Machine: {} CPUs ({}), {} GiB memory, {}; data directories in {}.\n",
        doc["mode"].as_str().unwrap_or_default(),
        doc["date"].as_str().unwrap_or_default(),
        doc["commit"].as_str().unwrap_or_default(),
        num(&m["nproc"]),
        m["cpu"].as_str().unwrap_or_default(),
        num(&m["memory_gib"]),
        m["kernel"].as_str().unwrap_or_default(),
        m["data_dirs"].as_str().unwrap_or_default(),
    );
    let _ = writeln!(
        md,
        "Every figure comes from this one run on this machine: Ratchet and its anchor side by side, on loopback, \
         at the same concurrency. The load generator (`ratchet-bench`), the servers and the anchors share the \
         machine's CPUs. Machine-readable: `bench/results.json`.\n"
    );
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "| key | Ratchet | anchor | ratio / value | goal | |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let d = &b["decide_vs_redis_get"];
    if d.is_object() {
        let _ = writeln!(
            md,
            "| `decide_vs_redis_get` | {} Decide/s | {} GET/s | {} | ≥ 1.0 | {} |",
            num(&d["ratchet"]["result"]["ops_per_sec"]),
            num(&d["anchor"]["result"]["ops_per_sec"]),
            num(&d["ratio"]),
            met(d)
        );
    }
    let e = &b["sightings_vs_etcd_put"];
    if e.is_object() {
        let _ = writeln!(
            md,
            "| `sightings_vs_etcd_put` | {} sightings/s | {} puts/s | {} | ≥ 2.0 | {} |",
            num(&e["ratchet"]["result"]["ops_per_sec"]),
            num(&e["anchor"]["result"]["ops_per_sec"]),
            num(&e["ratio"]),
            met(e)
        );
    }
    let x = &b["edge_vs_smtp_sink"];
    if x.is_object() {
        let _ = writeln!(
            md,
            "| `edge_vs_smtp_sink` | {} msg/s | {} msg/s | {} | ≥ 0.8 | {} |",
            num(&x["ratchet"]["msgs_per_sec"]),
            num(&x["anchor"]["msgs_per_sec"]),
            num(&x["ratio"]),
            met(x)
        );
    }
    let c = &b["bytes_per_server"];
    if c.is_object() {
        let _ = writeln!(
            md,
            "| `bytes_per_server` | {} B/server at {} servers | (goal) | {} | ≤ 300 | {} |",
            num(&c["value"]),
            num(&c["servers"]),
            num(&c["value"]),
            met(c)
        );
        for (key, figure, limit) in [
            ("disk_bytes_per_server", &c["disk_bytes_per_server"], 300.0),
            ("learner_catchup_ms", &c["learner_catchup_ms"], 10_000.0),
            ("restart_ms", &c["restart_ms"], 2_000.0),
        ] {
            let _ = writeln!(
                md,
                "| `{key}` | {} at {} servers | (goal) | {} | ≤ {limit} | {} |",
                num(figure),
                num(&c["servers"]),
                num(figure),
                within(figure, limit)
            );
        }
    }
    let f = &b["failover_ms"];
    if f.is_object() {
        let _ = writeln!(
            md,
            "| `failover_ms` | median of {} ms | (goal) | {} | ≤ 2000 | {} |",
            f["trials_ms"],
            num(&f["value"]),
            met(f)
        );
    }
    let n = &b["decide_100k_connectors_vs_10"];
    if n.is_object() {
        let _ = writeln!(
            md,
            "| `decide_100k_connectors_vs_10` | {} Decide/s with {} connectors | {} Decide/s with 10 | {} | ≥ 0.9 | {} |",
            num(&n["many"]["result"]["ops_per_sec"]),
            num(&n["many"]["connectors"]),
            num(&n["few"]["result"]["ops_per_sec"]),
            num(&n["ratio"]),
            met(n)
        );
    }
    let p = &b["milter_vs_postfix_alone"];
    if p.is_object() {
        let _ = writeln!(
            md,
            "| `milter_vs_postfix_alone` | {} msg/s with the milter | {} msg/s without | {} | ≥ 0.8 | {} |",
            num(&p["ratchet"]["msgs_per_sec"]),
            num(&p["anchor"]["msgs_per_sec"]),
            num(&p["ratio"]),
            met(p)
        );
    }

    let a = &b["admin_writes_100k_tenants"];
    if a.is_object() {
        let _ = writeln!(
            md,
            "| `admin_writes_100k_tenants` | {} creations/s growing to {} tenants (flatness {}) | {} puts/s | {} | ≥ 0.5, flatness ≥ 0.9 | {} |",
            num(&a["ratchet"]["result"]["ops_per_sec"]),
            num(&a["tenants"]),
            num(&a["flatness"]),
            num(&a["anchor"]["result"]["ops_per_sec"]),
            num(&a["ratio"]),
            met(a)
        );
    }

    let _ = writeln!(md, "\n## Method and raw figures\n");
    let _ = writeln!(
        md,
        "Latencies are client-side, per request, over the measured window ({} s after {} s of warm-up, {} clients, \
         each with one request outstanding on its own connection).\n",
        num(&s["measure_secs"]),
        num(&s["warmup_secs"]),
        num(&s["clients"])
    );
    let _ = writeln!(md, "### 1. Decisions for known servers: `decide_vs_redis_get`\n");
    let _ = writeln!(
        md,
        "One single-node decider; {} servers imported (Exchange 2013, first seen yesterday); each Decide names one \
         at random (a local read: attribution, one RocksDB get, the policy). Anchor: `redis-benchmark -t get -c {} \
         -n {} -r {} --csv` against `redis-server --save '' --appendonly no`, keys set first.\n",
        num(&s["decide_servers"]),
        num(&s["clients"]),
        num(&s["redis_requests"]),
        num(&s["decide_servers"])
    );
    let _ = writeln!(
        md,
        "Each client asks as an edge does, on a `DecideStream` (one frame each way per question); then, on the same \
         decider, with unary Decide (one HTTP/2 request per question). The ratio is of the first, with mutual TLS.\n"
    );
    let _ = writeln!(md, "| | ops/s | p50 ms | p99 ms | ÷ Redis |\n|---|---|---|---|---|");
    for (what, key) in [
        ("Ratchet Decide, stream, mutual TLS", "ratchet"),
        ("Ratchet Decide, unary, mutual TLS", "ratchet_unary"),
        ("Ratchet Decide, stream, plaintext", "ratchet_plaintext"),
        ("Ratchet Decide, unary, plaintext", "ratchet_plaintext_unary"),
    ] {
        let side = &d[key];
        if side.is_object() {
            let ratio = if key == "ratchet" { &d["ratio"] } else { &side["ratio"] };
            let _ = writeln!(
                md,
                "| {what} | {} | {} | {} | {} |",
                num(&side["result"]["ops_per_sec"]),
                num(&side["result"]["p50_ms"]),
                num(&side["result"]["p99_ms"]),
                num(ratio)
            );
        }
    }
    let _ = writeln!(
        md,
        "| Redis GET | {} | {} | {} | 1 |\n",
        num(&d["anchor"]["result"]["ops_per_sec"]),
        num(&d["anchor"]["result"]["p50_ms"]),
        num(&d["anchor"]["result"]["p99_ms"])
    );
    let _ = writeln!(md, "### 2. First sightings: `sightings_vs_etcd_put`\n");
    let _ = writeln!(
        md,
        "Three deciders (default config) vs three etcd members ({}), WAL/log fsync on in both, data directories on \
         the same disk. The same load generator drives both: worker *w* on its own connection to member *w* mod 3 \
         (followers forward to the leader in both systems). Ratchet: ImportServer of a server never seen \
         before, acknowledged once committed (a Decide no longer waits for its sighting to commit). etcd: put of a new key, 256-byte value, through the \
         `etcd-client` crate (gRPC; it is on tonic 0.14, the one tonic in the tree).\n",
        e["anchor"]["etcd_version"].as_str().unwrap_or("etcd")
    );
    let _ = writeln!(md, "| | ops/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let _ = writeln!(
        md,
        "| Ratchet first sightings | {} | {} | {} |",
        num(&e["ratchet"]["result"]["ops_per_sec"]),
        num(&e["ratchet"]["result"]["p50_ms"]),
        num(&e["ratchet"]["result"]["p99_ms"])
    );
    let _ = writeln!(
        md,
        "| etcd put | {} | {} | {} |\n",
        num(&e["anchor"]["result"]["ops_per_sec"]),
        num(&e["anchor"]["result"]["p50_ms"]),
        num(&e["anchor"]["result"]["p99_ms"])
    );
    let _ = writeln!(md, "### 3. SMTP: `edge_vs_smtp_sink`\n");
    let _ = writeln!(
        md,
        "`smtp-source -s {} -m {} -F message` (one message per session, {} bytes, with an Exchange `Received:` \
         header of a compliant build, from a tenant's connector) straight to `smtp-sink`, and through `ratchet edge` \
         (one decider behind it) to the same `smtp-sink`. Throughput = messages ÷ smtp-source's wall time. The edge \
         accepted {} messages with {} Decide calls (each message here is a session of its own; the edge remembers \
         a decider's answer across sessions until its `valid_until`). smtp-source gives no per-message latency: the mean is approximated by Little's law (sessions ÷ \
         throughput), and a probe of ours times {} sequential sessions (connect to the final 250), unloaded, for \
         p50/p99.\n",
        num(&x["sessions"]),
        num(&x["messages"]),
        num(&x["message_bytes"]),
        num(&x["ratchet"]["edge_accepted_total"]),
        num(&x["ratchet"]["edge_decide_calls_total"]),
        num(&s["probe_messages"])
    );
    let _ = writeln!(
        md,
        "| | msg/s | mean ms (Little) | probe p50 ms | probe p99 ms |\n|---|---|---|---|---|"
    );
    for (label, side) in [("through the edge", &x["ratchet"]), ("direct to smtp-sink", &x["anchor"])] {
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} |",
            num(&side["msgs_per_sec"]),
            num(&side["mean_latency_ms_littles_law"]),
            num(&side["probe"]["p50_ms"]),
            num(&side["probe"]["p99_ms"])
        );
    }
    let _ = writeln!(
        md,
        "\nAdded latency through the edge (probe): p50 +{} ms, p99 +{} ms.\n",
        num(&x["added_p50_ms"]),
        num(&x["added_p99_ms"])
    );
    let _ = writeln!(md, "### 4. Scale: `bytes_per_server`, snapshot, restart\n");
    let _ = writeln!(
        md,
        "One single-node decider; VmRSS before and after importing {} servers ({} ImportServer calls in flight; \
         {} imports/s). Snapshot build: from openraft's \"build snapshot\" to the store's \"built snapshot\" log \
         line, last snapshot built. Learner catch-up: a fresh node added with Cluster.AddLearner, until it has \
         applied the leader's last index (snapshot send + install + log tail). Restart: kill -9, restart on the \
         same data directory, until /readyz is 200.\n",
        num(&c["servers"]),
        num(&c["import"]["clients"]),
        num(&c["import"]["result"]["ops_per_sec"])
    );
    if !doc["mode"].as_str().is_some_and(|m| m == "smoke") && c["servers"].as_u64().is_some_and(|n| n != 1_000_000) {
        let _ = writeln!(
            md,
            "This run imported {} servers (`--scale-servers`), not the default 1,000,000: at the import rate above, \
             1,000,000 takes about {} minutes.\n",
            num(&c["servers"]),
            (1_000_000.0 / c["import"]["result"]["ops_per_sec"].as_f64().unwrap_or(1.0) / 60.0).round()
        );
    }
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    for (label, key) in [
        ("VmRSS before (KiB)", "rss_before_kib"),
        ("VmRSS after (KiB)", "rss_after_kib"),
        ("bytes per server (RSS)", "value"),
        ("data directory bytes per server", "disk_bytes_per_server"),
        ("snapshot size (bytes)", "snapshot_bytes"),
        ("snapshot build (ms)", "snapshot_build_ms"),
        ("learner catch-up from snapshot (ms)", "learner_catchup_ms"),
        ("restart until ready (ms)", "restart_ms"),
    ] {
        let _ = writeln!(md, "| {label} | {} |", num(&c[key]));
    }
    let _ = writeln!(md, "\n### 5. Failover: `failover_ms`\n");
    let _ = writeln!(
        md,
        "Three deciders, default timeouts (heartbeat 150 ms, election timeout 500-1000 ms). Four writers on the two \
         followers import new servers back to back; kill -9 of the leader; time to the first acknowledgement of a \
         write sent after the kill. Trials (ms): {}; median {} ms.\n",
        f["trials_ms"],
        num(&f["value"])
    );
    if p.is_object() {
        let _ = writeln!(md, "### 6. Milter: `milter_vs_postfix_alone`\n");
        let _ = writeln!(
            md,
            "`smtp-source -s {} -m {} -F message` (the message of section 3) to a private Postfix that relays to \
             `smtp-sink`, with `deploy/postfix/milter.cf` (`ratchet milter`, one decider behind it, asked about \
             every message) and without (the same Postfix configuration otherwise). Throughput = messages ÷ \
             smtp-source's wall time; Postfix answers 250 once the message is queued, after the milter's verdict; \
             each Postfix's queue is drained into the sink before the other side runs. The milter accepted {} \
             messages with {} Decide calls.\n",
            num(&p["sessions"]),
            num(&p["messages"]),
            num(&p["ratchet"]["milter_accepted_total"]),
            num(&p["ratchet"]["milter_decide_calls_total"])
        );
        let _ = writeln!(md, "| | msg/s | s |\n|---|---|---|");
        for (label, side) in [("Postfix with the milter", &p["ratchet"]), ("Postfix alone", &p["anchor"])] {
            let _ = writeln!(md, "| {label} | {} | {} |", num(&side["msgs_per_sec"]), num(&side["secs"]));
        }
        let _ = writeln!(md);
    }
    if a.is_object() {
        let _ = writeln!(md, "### 7. Admin writes while growing: `admin_writes_100k_tenants`\n");
        let _ = writeln!(
            md,
            "Three deciders (default config, snapshots included) vs three etcd members ({}), as in section 2. \
             Ratchet grows from no tenant to {}: each creation is an AddTenant of a new tenant, then an AddConnector \
             of its own /28, both acknowledged (two Raft writes); {} workers, worker *w* on its own connection to \
             decider *w* mod 3 (followers forward to the leader), each taking the next tenant until all are created. \
             Afterwards the leader lists exactly that many tenants, each with one connector. etcd: puts of new keys \
             from as many workers, as in section 2. The ratio is creations/s over the whole growth ÷ puts/s (a \
             creation is two writes, so 0.5 is write-for-write parity). Flatness is the last tenth's rate ÷ the \
             first's: {}.\n",
            a["anchor"]["etcd_version"].as_str().unwrap_or("etcd"),
            num(&a["tenants"]),
            num(&a["clients"]),
            num(&a["flatness"])
        );
        let _ = writeln!(md, "| | ops/s | p50 ms | p99 ms |\n|---|---|---|---|");
        for (label, side) in [
            ("Ratchet creations (tenant + connector)", &a["ratchet"]),
            ("etcd put", &a["anchor"]),
        ] {
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} |",
                num(&side["result"]["ops_per_sec"]),
                num(&side["result"]["p50_ms"]),
                num(&side["result"]["p99_ms"])
            );
        }
        let _ = writeln!(md, "\n| tenants | s | creations/s |\n|---|---|---|");
        for tenth in a["tenths"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {}-{} | {} | {} |",
                num(&tenth["from"]),
                num(&tenth["to"]),
                num(&tenth["secs"]),
                num(&tenth["creations_per_sec"])
            );
        }
        let _ = writeln!(md);
    }
    for (_, key) in crate::BENCHMARKS {
        if let Some(error) = b[key]["error"].as_str() {
            let _ = writeln!(md, "**{key} failed**: {error}\n");
        }
    }
    if let Ok(notes) = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/notes.md")) {
        let _ = writeln!(md, "{}", notes.trim_end());
    }
    md
}
