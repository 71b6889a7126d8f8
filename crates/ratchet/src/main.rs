//! `ratchet`: the one binary. Each subcommand lives in its own module.

mod certs_cmd;
mod ctl;
mod decider_cmd;
mod dev_cmd;
mod dev_sink;
mod edge_cmd;
mod listen;
mod milter_cmd;
mod policy_cmd;
mod restore_cmd;
mod signal;
mod table;
mod telemetry;
mod tls_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Parser)]
#[command(
    name = "ratchet",
    version,
    about = "Progressive enforcement against out-of-date on-premises mail servers"
)]
struct Cli {
    /// Log format on stderr; levels come from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on loopback: a single-node decider, an edge, a demo tenant.
    Dev(dev_cmd::DevArgs),
    /// Run one node of the decision service.
    Decider(decider_cmd::DeciderArgs),
    /// Run one stateless SMTP edge.
    Edge(edge_cmd::EdgeArgs),
    /// Run a milter that gives Postfix or Sendmail the edge's verdicts.
    Milter(milter_cmd::MilterArgs),
    /// Operate a running cluster: tenants, connectors, servers, pauses, policy, membership.
    Ctl(ctl::CtlArgs),
    /// Evaluate, show or check an enforcement policy, with no cluster.
    Policy(policy_cmd::PolicyArgs),
    /// Make the cluster CA and issue certificates with roles (mutual TLS on every link).
    Certs(certs_cmd::CertsArgs),
    /// Seed a node of a new group from a backup (`ratchet ctl snapshot save`).
    Restore(restore_cmd::RestoreArgs),
}

/// Logs on stderr (text or JSON, levels from RUST_LOG) and, when an OTLP endpoint is
/// configured, spans exported to it (see `telemetry`). Runs inside the runtime.
fn init_logging(format: LogFormat, service: &str) -> Option<telemetry::Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn"));
    // Colours only for a person at a terminal, not in files or a collector's log lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    let (otel, telemetry, failure) = match telemetry::layer(service) {
        Ok(Some((layer, telemetry))) => (Some(layer), Some(telemetry), None),
        Ok(None) => (None, None, None),
        Err(error) => (None, None, Some(error)),
    };
    registry.with(otel).with(filter).init();
    if let Some(error) = failure {
        tracing::warn!(error = %format!("{error:#}"), "OTLP trace export is configured but could not start; not exporting");
    }
    telemetry
}

/// Runs a long-lived role: logging and trace export set up inside its runtime.
fn serve<F: std::future::Future<Output = anyhow::Result<()>>>(format: LogFormat, service: &str, role: F) -> anyhow::Result<()> {
    let rt = runtime()?;
    let telemetry = rt.block_on(async { init_logging(format, service) });
    let outcome = rt.block_on(role);
    drop(telemetry);
    outcome
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Parses the command line; a usage error is one line on stderr and exit code 2.
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let rendered = error.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .collect();
            eprintln!("ratchet: {}", message.join(" ").trim_start_matches("error: "));
            std::process::exit(2);
        }
    }
}

fn main() -> ExitCode {
    let cli = parse();
    let outcome = match cli.command {
        Command::Decider(args) => serve(cli.log_format, "ratchet-decider", decider_cmd::run(args)),
        Command::Dev(args) => serve(cli.log_format, "ratchet-dev", dev_cmd::run(args)),
        Command::Edge(args) => serve(cli.log_format, "ratchet-edge", edge_cmd::run(args)),
        Command::Milter(args) => serve(cli.log_format, "ratchet-milter", milter_cmd::run(args)),
        Command::Ctl(args) => runtime().and_then(|rt| rt.block_on(ctl::run(args))),
        Command::Policy(args) => policy_cmd::run(args),
        Command::Certs(args) => certs_cmd::run(args),
        Command::Restore(args) => restore_cmd::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ratchet: {error:#}");
            ExitCode::FAILURE
        }
    }
}
