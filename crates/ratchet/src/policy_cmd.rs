//! `ratchet policy eval|show|check`: the policy engine on the command line, with no cluster.
//!
//! Operators use it to try a policy file before `ctl policy set` replicates it, and to see
//! what the rules decide for one server at one instant (stage, rates, window, reply and
//! report dates) without running a decider. It calls the same `ratchet_policy::evaluate`
//! as the cluster, so its answer is the cluster's answer for the same facts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use ratchet_policy::products::classify;
use ratchet_policy::{evaluate, BuildStatus, Episode, Evaluation, Interval, Policy, ServerFacts, TenantMode, Timestamp};
use serde_json::{json, Map, Value};

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the effective policy as TOML (the built-in default without --policy).
    Show {
        /// Policy file to read and validate instead of the default.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Validate a policy file; prints `ok: FILE` or names the broken rule.
    Check {
        /// The policy file (TOML) to validate.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Evaluate the policy for one server at one instant.
    Eval(EvalArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// The tenant that owns the server.
    #[arg(long, value_name = "NAME")]
    tenant: String,
    /// The server's FQDN (with the tenant, it fixes the server's window offset).
    #[arg(long, value_name = "FQDN")]
    server: String,
    /// The build the server stamps, e.g. 15.1.2507.16 (a malformed build is "unidentified").
    #[arg(long, value_name = "BUILD")]
    build: String,
    /// When the server was first seen out of date (day 0).
    #[arg(long, value_name = "RFC3339")]
    first_seen: String,
    /// The instant to evaluate at.
    #[arg(long, value_name = "RFC3339")]
    at: String,
    /// A closed-open interval during which the tenant was paused (repeatable).
    #[arg(long, value_name = "START/END")]
    paused: Vec<String>,
    /// Policy file to use instead of the default.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print one JSON object instead of a key: value listing.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.command {
        PolicyCommand::Show { policy } => {
            print!("{}", load_policy(policy.as_deref())?.to_toml());
            Ok(())
        }
        PolicyCommand::Check { file } => {
            load_policy(Some(&file))?;
            println!("ok: {}", file.display());
            Ok(())
        }
        PolicyCommand::Eval(args) => eval(args),
    }
}

/// The policy in `file`, validated, or the default policy.
fn load_policy(file: Option<&Path>) -> anyhow::Result<Policy> {
    let Some(file) = file else {
        return Ok(Policy::default());
    };
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Policy::from_toml(&text).with_context(|| file.display().to_string())
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let first_seen = instant("--first-seen", &args.first_seen)?;
    let at = instant("--at", &args.at)?;
    if at < first_seen {
        bail!("--at {} is before --first-seen {}", args.at, args.first_seen);
    }
    let pauses = args.paused.iter().map(|text| interval(text)).collect::<anyhow::Result<Vec<_>>>()?;
    let policy = load_policy(args.policy.as_deref())?;

    let out_of_date = classify(&policy.products, &args.build).status == BuildStatus::OutOfDate;
    let episode = out_of_date.then(|| Episode::starting(first_seen));
    let facts = ServerFacts {
        tenant: &args.tenant,
        server_fqdn: &args.server,
        build: &args.build,
        episode: episode.as_ref(),
        pauses: &pauses,
        // A product's own mode (report-only, off) still applies.
        tenant_mode: TenantMode::Enforce,
    };
    let fields = fields(&args, &evaluate(&policy, facts, at));

    if args.json {
        let object: Map<String, Value> = fields.into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
        println!("{}", Value::Object(object));
    } else {
        let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
        for (key, value) in fields {
            println!("{:width$} {}", format!("{key}:"), human(&value));
        }
    }
    Ok(())
}

fn instant(flag: &str, text: &str) -> anyhow::Result<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|error| anyhow::anyhow!("{flag}: {text:?} is not an RFC 3339 instant: {error}"))
}

/// A `--paused START/END` value.
fn interval(text: &str) -> anyhow::Result<Interval> {
    let Some((start, end)) = text.split_once('/') else {
        bail!("--paused: {text:?} is not START/END (two RFC 3339 instants separated by '/')");
    };
    let (start, end) = (instant("--paused", start)?, instant("--paused", end)?);
    if end <= start {
        bail!("--paused: {text:?} does not end after it starts");
    }
    Ok(Interval::new(start, end))
}

/// The answer's fields in display order; the JSON object has the same keys.
fn fields(args: &EvalArgs, evaluation: &Evaluation) -> Vec<(&'static str, Value)> {
    let date = |instant: Option<Timestamp>| json!(instant.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)));
    vec![
        ("tenant", json!(args.tenant)),
        ("server", json!(args.server)),
        ("build", json!(args.build)),
        ("product", json!(evaluation.product)),
        ("status", json!(evaluation.status.as_str())),
        ("stage", json!(evaluation.stage)),
        ("age_days", json!(evaluation.age_days.unwrap_or(0.0))),
        ("throttle_min", json!(evaluation.throttle_min)),
        ("block_min", json!(evaluation.block_min)),
        ("window_offset_min", json!(evaluation.window_offset_min)),
        ("paused", json!(evaluation.paused)),
        ("mode", json!(evaluation.mode)),
        ("verdict", json!(evaluation.verdict)),
        ("would_verdict", json!(evaluation.would_verdict)),
        ("reply", json!(evaluation.reply)),
        ("throttle_enabled_date", date(evaluation.throttle_enabled_date)),
        ("blocking_enabled_date", date(evaluation.blocking_enabled_date)),
        ("next_stage_start_date", date(evaluation.next_stage_start_date)),
        ("next_stage_throttle_rate", json!(evaluation.next_stage_throttle_rate)),
        ("next_stage_block_rate", json!(evaluation.next_stage_block_rate)),
        ("recommended_build_versions", json!(evaluation.recommended_build_versions)),
    ]
}

/// A field's value for the key: value listing: strings bare, lists comma-separated, null or empty as `-`.
fn human(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(human).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}
