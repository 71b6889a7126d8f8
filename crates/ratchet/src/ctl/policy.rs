//! `ratchet ctl policy show|set`: the replicated policy, as TOML with its version, and its
//! replacement by a file (validated by the decider before it is replicated).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::Output;
use super::Admin;

#[derive(Subcommand)]
pub enum PolicyCommand {
    Show,
    Set { file: PathBuf },
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum PolicyOutput {
    Shown { version: u64, policy_toml: String },
    Set { version: u64 },
}

pub async fn run(admin: &mut Admin, command: PolicyCommand) -> anyhow::Result<PolicyOutput> {
    Ok(match command {
        PolicyCommand::Show => {
            let reply = admin.get_policy(pb::GetPolicyRequest {}).await.map_err(refusal)?.into_inner();
            PolicyOutput::Shown {
                version: reply.version,
                policy_toml: reply.policy_toml,
            }
        }
        PolicyCommand::Set { file } => {
            let policy_toml = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let request = pb::SetPolicyRequest { policy_toml };
            let reply = admin.set_policy(request).await.map_err(refusal)?.into_inner();
            PolicyOutput::Set { version: reply.version }
        }
    })
}

impl Output for PolicyOutput {
    fn human(&self) {
        match self {
            PolicyOutput::Shown { version, policy_toml } => println!("# policy version {version}\n{policy_toml}"),
            PolicyOutput::Set { version } => println!("policy version {version} in force"),
        }
    }
}
