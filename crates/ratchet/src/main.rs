//! `ratchet`: the one binary. Each subcommand lives in its own module.

mod ctl_cmd;
mod decider_cmd;
mod dev_cmd;
mod dev_sink;
mod edge_cmd;
mod health;
mod policy_cmd;
mod signal;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

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
    /// Operate a running cluster: tenants, connectors, servers, pauses, policy, membership.
    Ctl(ctl_cmd::CtlArgs),
    /// Evaluate, show or check an enforcement policy, with no cluster.
    Policy(policy_cmd::PolicyArgs),
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
        Command::Decider(args) => {
            init_logging(cli.log_format);
            runtime().and_then(|rt| rt.block_on(decider_cmd::run(args)))
        }
        Command::Dev(args) => {
            init_logging(cli.log_format);
            runtime().and_then(|rt| rt.block_on(dev_cmd::run(args)))
        }
        Command::Edge(args) => {
            init_logging(cli.log_format);
            runtime().and_then(|rt| rt.block_on(edge_cmd::run(args)))
        }
        Command::Ctl(args) => runtime().and_then(|rt| rt.block_on(ctl_cmd::run(args))),
        Command::Policy(args) => policy_cmd::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ratchet: {error:#}");
            ExitCode::FAILURE
        }
    }
}
