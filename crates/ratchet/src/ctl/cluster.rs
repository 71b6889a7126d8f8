//! `ratchet ctl cluster status|add-learner|promote|remove`: the decider group as this node
//! sees it, and changes to its membership.

use clap::Subcommand;
use ratchet_proto::limits::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::cluster_client::ClusterClient;
use serde::Serialize;
use tonic::transport::Channel;

use super::client::refusal;
use super::output::{nonempty, or_dash, Output};
use crate::table;

#[derive(Subcommand)]
pub enum ClusterCommand {
    Status,
    /// Add a running decider as a non-voting learner; waits until it has caught up.
    AddLearner {
        #[arg(long)]
        name: String,
        #[arg(long)]
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        #[arg(long)]
        name: String,
    },
    /// Remove a member, voter or learner.
    Remove {
        #[arg(long)]
        name: String,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum ClusterOutput {
    Status(Status),
    LearnerAdded { name: String, id: u64 },
    Membership { voters: Vec<String>, learners: Vec<String> },
}

#[derive(Serialize)]
pub struct Status {
    node_id: u64,
    node_name: String,
    state: String,
    leader_id: u64,
    term: u64,
    last_log_index: u64,
    last_applied_index: u64,
    members: Vec<Member>,
    /// Asked for with `--json` only: a digest of the applied state, to compare nodes.
    state_digest: String,
    digest_index: u64,
}

#[derive(Serialize)]
struct Member {
    id: u64,
    name: String,
    address: String,
    role: String,
    matched_index: u64,
    lag: u64,
}

pub async fn run(channel: Channel, command: ClusterCommand, json: bool) -> anyhow::Result<ClusterOutput> {
    let mut cluster = ClusterClient::new(channel)
        .max_decoding_message_size(MAX_REPLY_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES);
    let membership = match command {
        ClusterCommand::Status => {
            let request = pb::StatusRequest { state_digest: json };
            let status = cluster.status(request).await.map_err(refusal)?.into_inner();
            return Ok(ClusterOutput::Status(status.into()));
        }
        ClusterCommand::AddLearner { name, address } => {
            let request = pb::AddLearnerRequest {
                name: name.clone(),
                address,
            };
            let reply = cluster.add_learner(request).await.map_err(refusal)?.into_inner();
            return Ok(ClusterOutput::LearnerAdded { name, id: reply.id });
        }
        ClusterCommand::Promote { name } => cluster.promote(pb::PromoteRequest { name }).await,
        ClusterCommand::Remove { name } => cluster.remove(pb::RemoveRequest { name }).await,
    }
    .map_err(refusal)?
    .into_inner();
    Ok(ClusterOutput::Membership {
        voters: membership.voters,
        learners: membership.learners,
    })
}

impl From<pb::StatusResponse> for Status {
    fn from(status: pb::StatusResponse) -> Self {
        let members = status.members.into_iter().map(|m| Member {
            id: m.id,
            name: m.name,
            address: m.address,
            role: m.role,
            matched_index: m.matched_index,
            lag: m.lag,
        });
        Status {
            node_id: status.node_id,
            node_name: status.node_name,
            state: status.state,
            leader_id: status.leader_id,
            term: status.term,
            last_log_index: status.last_log_index,
            last_applied_index: status.last_applied_index,
            members: members.collect(),
            state_digest: status.state_digest,
            digest_index: status.digest_index,
        }
    }
}

impl Output for ClusterOutput {
    fn human(&self) {
        match self {
            ClusterOutput::Status(status) => status.human(),
            ClusterOutput::LearnerAdded { name, id } => println!("learner {name} (id {id}) added and caught up"),
            ClusterOutput::Membership { voters, learners } => {
                let learners = nonempty(&learners.join(", "));
                println!("voters: {}\nlearners: {}", voters.join(", "), or_dash(learners));
            }
        }
    }
}

impl Status {
    fn human(&self) {
        let leader = self.members.iter().find(|m| m.id == self.leader_id);
        println!(
            "node {} ({}): {}, term {}, leader {}, last log {}, applied {}",
            self.node_name,
            self.node_id,
            self.state,
            self.term,
            leader.map_or("none", |m| &m.name),
            self.last_log_index,
            self.last_applied_index
        );
        let rows: Vec<Vec<String>> = self
            .members
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.id.to_string(),
                    m.address.clone(),
                    m.role.clone(),
                    m.matched_index.to_string(),
                    m.lag.to_string(),
                ]
            })
            .collect();
        table::print(&["NAME", "ID", "ADDRESS", "ROLE", "MATCHED", "LAG"], &rows);
    }
}
