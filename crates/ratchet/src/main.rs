//! `ratchet`: the one binary. Each subcommand lives in its own module.

mod policy_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ratchet", version, about = "Progressive enforcement against out-of-date on-premises mail servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate, show or check an enforcement policy, with no cluster.
    Policy(policy_cmd::PolicyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
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
