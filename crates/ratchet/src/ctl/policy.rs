//! `ratchet ctl policy show|set`: the replicated policy, as TOML with its version, and its
//! replacement by a file (validated by the decider before it is replicated), at once or at
//! a set instant on every node (`--effective-at`).

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
    /// The policy in force; with --pending, the one scheduled to follow it.
    Show {
        #[arg(long)]
        pending: bool,
    },
    /// Replaces the policy with FILE, at once or from --effective-at (RFC 3339, in the
    /// future; it replaces a policy already scheduled).
    Set {
        file: PathBuf,
        #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
        effective_at: Option<String>,
    },
}

/// Checked here so that a typo is named before the file is read; the decider checks
/// again that the instant lies ahead.
fn parse_instant(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not an RFC 3339 instant such as 2027-01-01T00:00:00Z ({e})"))
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum PolicyOutput {
    Shown {
        version: u64,
        policy_toml: String,
    },
    Pending {
        pending: Option<ScheduledPolicy>,
    },
    Set {
        version: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        effective_at: Option<String>,
    },
}

#[derive(Serialize)]
pub struct ScheduledPolicy {
    version: u64,
    effective_at: String,
    policy_toml: String,
}

pub async fn run(admin: &mut Admin, command: PolicyCommand) -> anyhow::Result<PolicyOutput> {
    Ok(match command {
        PolicyCommand::Show { pending } => {
            let reply = admin.get_policy(pb::GetPolicyRequest {}).await.map_err(refusal)?.into_inner();
            if pending {
                PolicyOutput::Pending {
                    pending: (!reply.pending_effective_at.is_empty()).then(|| ScheduledPolicy {
                        version: reply.pending_version,
                        effective_at: reply.pending_effective_at,
                        policy_toml: reply.pending_policy_toml,
                    }),
                }
            } else {
                PolicyOutput::Shown {
                    version: reply.version,
                    policy_toml: reply.policy_toml,
                }
            }
        }
        PolicyCommand::Set { file, effective_at } => {
            let policy_toml = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let request = pb::SetPolicyRequest {
                policy_toml,
                effective_at: effective_at.unwrap_or_default(),
            };
            let reply = admin.set_policy(request).await.map_err(refusal)?.into_inner();
            PolicyOutput::Set {
                version: reply.version,
                effective_at: Some(reply.effective_at).filter(|at| !at.is_empty()),
            }
        }
    })
}

impl Output for PolicyOutput {
    fn human(&self) {
        match self {
            PolicyOutput::Shown { version, policy_toml } => println!("# policy version {version}\n{policy_toml}"),
            PolicyOutput::Pending { pending: None } => println!("no policy is scheduled"),
            PolicyOutput::Pending { pending: Some(p) } => println!(
                "# policy version {}, scheduled to take effect at {}\n{}",
                p.version, p.effective_at, p.policy_toml
            ),
            PolicyOutput::Set {
                version,
                effective_at: None,
            } => println!("policy version {version} in force"),
            PolicyOutput::Set {
                version,
                effective_at: Some(at),
            } => println!("policy version {version} scheduled: in force on every node from {at}"),
        }
    }
}
