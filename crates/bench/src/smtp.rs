//! `edge_vs_smtp_sink`: Postfix's `smtp-source` through `ratchet edge` to `smtp-sink`,
//! against `smtp-source` straight to `smtp-sink`: same message file, sessions and count.
//!
//! The message (`smtp-source -F`) carries an Exchange `Received:` header with a compliant
//! build from a tenant's connector (127.0.0.0/8), so the edge attributes it, asks a
//! decider (single node) and relays it to the sink before answering 250. The edge remembers
//! a verdict within one SMTP session only, and smtp-source sends one message per session
//! (no `-d`), so every message here costs a Decide round trip; the edge's metrics,
//! reported beside the figures, count the Decide calls.
//!
//! Throughput: messages ÷ smtp-source's wall time (one message per session, as smtp-source
//! does without `-d`). smtp-source reports no per-message latency, so latency is measured
//! by a probe of our own: sequential sessions (connect, HELO, MAIL, RCPT, DATA, the final
//! 250, QUIT), each timed, unloaded, direct and through the edge; "added p99" is the
//! difference of the two p99s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::load::{round, LoadResult};
use crate::procs::{add_tenant, free_port, http_get, metric_sum, wait_listening, Decider, Env, Proc, COMPLIANT_BUILD, QUIET_LOG};
use crate::Settings;

pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let MailScene { message, sink, decider } = MailScene::start(env, "smtp0").await?;
    let edge_addr = free_port();
    let edge_args = [
        "--listen",
        &edge_addr.to_string(),
        "--deciders",
        &decider.grpc.to_string(),
        "--next-hop",
        &sink.1.to_string(),
        // smtp-source's recipients are at whatever domain it picks: accept them all.
        "--accepted-domains",
        "*",
    ];
    let (_edge, edge_http) = start_front(env, "edge", &edge_args)?;

    // Warm both paths (the edge's first Decide and relay connection), then measure.
    let (m, s) = (settings.smtp_messages, settings.smtp_sessions);
    smtp_source(&message, sink.1, s.min(m), s)?;
    smtp_source(&message, edge_addr, s.min(m), s)?;
    let direct = smtp_source(&message, sink.1, m, s)?;
    let through_edge = smtp_source(&message, edge_addr, m, s)?;
    let probe_direct = probe(sink.1, settings.probe_messages).await?;
    let probe_edge = probe(edge_addr, settings.probe_messages).await?;
    let (accepted, decide_calls) = verdicts(edge_http, "ratchet_edge", m)?;
    let (direct_rate, edge_rate) = (m as f64 / direct, m as f64 / through_edge);
    let ratio = edge_rate / direct_rate;
    let mean_ms = |rate: f64| round(s as f64 / rate * 1000.0, 3);
    Ok(json!({
        "ratio": round(ratio, 3),
        "goal": ">= 0.8",
        "met": ratio >= 0.8,
        "sessions": s,
        "messages": m,
        "message_bytes": message_text().len(),
        "ratchet": {
            "what": "smtp-source -> ratchet edge (+1 decider) -> smtp-sink",
            "msgs_per_sec": round(edge_rate, 1),
            "secs": round(through_edge, 3),
            "mean_latency_ms_littles_law": mean_ms(edge_rate),
            "probe": probe_edge.summary(),
            "edge_accepted_total": accepted,
            "edge_decide_calls_total": decide_calls,
        },
        "anchor": {
            "what": "smtp-source -> smtp-sink",
            "msgs_per_sec": round(direct_rate, 1),
            "secs": round(direct, 3),
            "mean_latency_ms_littles_law": mean_ms(direct_rate),
            "probe": probe_direct.summary(),
        },
        "added_p99_ms": round(probe_edge.quantile_ms(0.99) - probe_direct.quantile_ms(0.99), 3),
        "added_p50_ms": round(probe_edge.quantile_ms(0.50) - probe_direct.quantile_ms(0.50), 3),
    }))
}

/// What both mail benchmarks (this one and `milter`) start from: the message file,
/// `smtp-sink`, and one decider with the tenant `mail`, whose connector (127.0.0.0/8)
/// covers smtp-source.
pub(crate) struct MailScene {
    pub message: PathBuf,
    pub sink: (Proc, SocketAddr),
    pub decider: Decider,
}

impl MailScene {
    pub async fn start(env: &Env, decider_name: &str) -> anyhow::Result<MailScene> {
        let message = env.work.join("message.eml");
        std::fs::write(&message, message_text())?;
        let sink = start_sink(env)?;
        let mut decider = Decider::new(env, decider_name, "", QUIET_LOG)?;
        let founding = format!("{}={}", decider.name, decider.grpc);
        decider.start(Some(&founding))?;
        decider.wait_ready(Duration::from_secs(30))?;
        add_tenant(&decider, "mail", "127.0.0.0/8").await?;
        Ok(MailScene { message, sink, decider })
    }
}

/// Starts `ratchet ROLE ARGS... --http ADDR` (the edge, the milter) and waits until it is
/// ready: the process and its HTTP address.
pub(crate) fn start_front(env: &Env, role: &str, args: &[&str]) -> anyhow::Result<(Proc, SocketAddr)> {
    let http = free_port();
    let mut full: Vec<String> = vec![role.to_owned()];
    full.extend(args.iter().map(|a| a.to_string()));
    full.extend(["--http".to_owned(), http.to_string()]);
    let what = format!("ratchet {role}");
    let front = Proc::spawn(
        &what,
        &env.ratchet,
        &full,
        &[("RUST_LOG", "warn")],
        &env.work.join(format!("{role}.log")),
    )?;
    wait_ready(http, &what)?;
    Ok((front, http))
}

/// The front's accepted messages and Decide calls (metrics under `prefix`), which must
/// cover the `measured` messages: every one of them was attributed and decided.
pub(crate) fn verdicts(http: SocketAddr, prefix: &str, measured: u64) -> anyhow::Result<(f64, f64)> {
    let metrics = http_get(http, "/metrics").map(|(_, body)| body).unwrap_or_default();
    let accepted = metric_sum(&metrics, &format!("{prefix}_messages_total{{verdict=\"accept\"}}"));
    let decide_calls = metric_sum(&metrics, &format!("{prefix}_decide_duration_seconds_count"));
    if accepted < measured as f64 {
        bail!("{prefix} accepted {accepted} messages, fewer than the {measured} measured: was the mail attributed?");
    }
    Ok((accepted, decide_calls))
}

/// About 1 KiB: the headers an Exchange server would send, and a body of short lines.
fn message_text() -> String {
    let mut text = format!(
        "Received: from exch1.mail.bench (127.0.0.1) by exch1.mail.bench (127.0.0.1) with Microsoft SMTP Server id {COMPLIANT_BUILD}; Mon, 20 May 2024 10:00:00 +0000\r\n\
         From: sender@mail.bench\r\nTo: user@example.com\r\nSubject: benchmark\r\nDate: Mon, 20 May 2024 10:00:00 +0000\r\n\
         Message-ID: <bench@mail.bench>\r\n\r\n"
    );
    while text.len() < 1000 {
        text.push_str("The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    text
}

fn start_sink(env: &Env) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = free_port();
    let mut args = Vec::new();
    if std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t"))) {
        args.extend(["-u".to_owned(), "nobody".to_owned()]);
    }
    args.extend([addr.to_string(), "256".into()]);
    let sink = Proc::spawn(
        "smtp-sink",
        "/usr/sbin/smtp-sink".as_ref(),
        &args,
        &[],
        &env.work.join("smtp-sink.log"),
    )?;
    wait_listening(addr, "smtp-sink", Duration::from_secs(10))?;
    Ok((sink, addr))
}

/// Waits until `what` answers 200 at `http`'s /readyz.
fn wait_ready(http: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(http, "/readyz").is_none_or(|(code, _)| code != 200) {
        if Instant::now() > deadline {
            bail!("{what} is not ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs `smtp-source -s sessions -m messages -F message` against `to`; its wall time, s.
pub(crate) fn smtp_source(message: &Path, to: SocketAddr, messages: u64, sessions: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = std::process::Command::new("/usr/sbin/smtp-source")
        .args(["-s", &sessions.to_string(), "-m", &messages.to_string(), "-F"])
        .arg(message)
        .args(["-f", "sender@mail.bench", "-t", "user@example.com", &to.to_string()])
        .output()
        .context("running smtp-source (Debian postfix)")?;
    let secs = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("smtp-source to {to} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(secs)
}

/// Sends `count` messages one session after another, timing each session.
async fn probe(to: SocketAddr, count: u64) -> anyhow::Result<LoadResult> {
    let body = message_text();
    let mut result = LoadResult::default();
    let started = Instant::now();
    for _ in 0..count {
        let begun = Instant::now();
        let stream = TcpStream::connect(to).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        expect(&mut read, "220").await?;
        for (command, code) in [
            ("HELO probe.bench\r\n", "250"),
            ("MAIL FROM:<sender@mail.bench>\r\n", "250"),
            ("RCPT TO:<user@example.com>\r\n", "250"),
            ("DATA\r\n", "354"),
        ] {
            write.write_all(command.as_bytes()).await?;
            expect(&mut read, code).await?;
        }
        write.write_all(format!("{body}.\r\n").as_bytes()).await?;
        expect(&mut read, "250").await?;
        result.latencies_us.push(begun.elapsed().as_micros() as u32);
        result.ops += 1;
        write.write_all(b"QUIT\r\n").await?;
    }
    result.secs = started.elapsed().as_secs_f64();
    result.latencies_us.sort_unstable();
    Ok(result)
}

/// Reads one (possibly multi-line) reply, which must have `code`.
async fn expect(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, code: &str) -> anyhow::Result<()> {
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            bail!("connection closed waiting for {code}");
        }
        if !line.starts_with(code) {
            bail!("expected {code}, got {line:?}");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}
