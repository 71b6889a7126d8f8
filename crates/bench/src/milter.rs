//! `milter_vs_postfix_alone`: Postfix's `smtp-source` through a private Postfix that asks
//! `ratchet milter` (one decider behind it) about every message, against `smtp-source`
//! through the same Postfix without the milter: same message file (`smtp.rs`'s, an
//! Exchange `Received:` header of a compliant build, from a tenant's connector), sessions
//! and count, and the same `smtp-sink` as both Postfixes' relayhost. The milter lines are
//! `deploy/postfix/milter.cf`, as the README shows them.
//!
//! Throughput: messages ÷ smtp-source's wall time. Postfix answers 250 once the message is
//! queued, after the milter's verdict, so this is the path the milter sits on; each
//! Postfix's queue is drained into the sink before the other side runs, so that relaying
//! never overlaps a measurement. The milter's metrics, reported beside the figures, count
//! its verdicts and Decide calls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::json;

use crate::load::round;
use crate::postfix::{plain_smtpd, PostfixInstance};
use crate::procs::{free_port, wait_listening, Env};
use crate::smtp::{smtp_source, start_front, verdicts, MailScene};
use crate::Settings;

pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let MailScene { message, sink, decider } = MailScene::start(env, "milter0").await?;
    let milter_addr = free_port();
    let milter_args = ["--listen", &milter_addr.to_string(), "--deciders", &decider.grpc.to_string()];
    let (_milter, milter_http) = start_front(env, "milter", &milter_args)?;

    let alone = start_postfix(sink.1, "")?;
    let with_milter = start_postfix(sink.1, &milter_lines(milter_addr)?)?;

    // Warm both paths (the milter's first Decide, Postfix's first processes), then measure.
    let (m, s) = (settings.smtp_messages, settings.smtp_sessions);
    for postfix in [&alone, &with_milter] {
        smtp_source(&message, postfix.addr, s.min(m), s)?;
        drain(postfix)?;
    }
    let secs_alone = smtp_source(&message, alone.addr, m, s)?;
    drain(&alone)?;
    let secs_with = smtp_source(&message, with_milter.addr, m, s)?;
    drain(&with_milter)?;

    let (accepted, decide_calls) = verdicts(milter_http, "ratchet_milter", m)?;
    let (rate_alone, rate_with) = (m as f64 / secs_alone, m as f64 / secs_with);
    let ratio = rate_with / rate_alone;
    Ok(json!({
        "ratio": round(ratio, 3),
        "goal": ">= 0.8",
        "met": ratio >= 0.8,
        "sessions": s,
        "messages": m,
        "message_bytes": std::fs::metadata(&message)?.len(),
        "ratchet": {
            "what": "smtp-source -> Postfix + ratchet milter (+1 decider) -> smtp-sink",
            "msgs_per_sec": round(rate_with, 1),
            "secs": round(secs_with, 3),
            "milter_accepted_total": accepted,
            "milter_decide_calls_total": decide_calls,
        },
        "anchor": {
            "what": "smtp-source -> Postfix -> smtp-sink",
            "msgs_per_sec": round(rate_alone, 1),
            "secs": round(secs_alone, 3),
        },
    }))
}

/// `deploy/postfix/milter.cf`, pointed at the milter on `addr`.
fn milter_lines(addr: SocketAddr) -> anyhow::Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/postfix/milter.cf");
    let lines = std::fs::read_to_string(path).map_err(|e| anyhow!("{path}: {e}"))?;
    Ok(lines.replace("127.0.0.1:8891", &addr.to_string()))
}

fn start_postfix(relayhost: SocketAddr, main_cf: &str) -> anyhow::Result<PostfixInstance> {
    let postfix = PostfixInstance::start(free_port(), relayhost, None, main_cf, &plain_smtpd)
        .map_err(|log| anyhow!("Postfix did not start (it needs root or passwordless sudo):\n{log}"))?;
    wait_listening(postfix.addr, "Postfix", Duration::from_secs(20))?;
    Ok(postfix)
}

/// Waits until Postfix has relayed everything it queued; a deferred message is an error.
fn drain(postfix: &PostfixInstance) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if postfix.queued("deferred") > 0 {
            bail!("Postfix deferred messages:\n{}", postfix.log());
        }
        if ["maildrop", "incoming", "active"].iter().all(|q| postfix.queued(q) == 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Postfix did not relay its queue within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
