//! The Cluster API's messages (the group as this node sees it, from openraft's metrics,
//! and its membership), and the outcome of a write forwarded to the leader.

use openraft::{Membership, RaftMetrics, ServerState};
use ratchet_proto::v1 as pb;
use ratchet_store::codec::{Codec, DecodeError};
use ratchet_store::{Node, NodeId, Response};

use crate::proposer::ProposeOutcome;

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

/// `cluster status` as node `name` sees the group (without the state digest).
pub fn cluster_status(metrics: &RaftMetrics<NodeId, Node>, name: &str) -> pb::StatusResponse {
    let membership = metrics.membership_config.membership();
    let last_log_index = metrics.last_log_index.unwrap_or(0);
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let role = if Some(*id) == metrics.current_leader {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            };
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|log_id| log_id.index);
            pb::Member {
                id: *id,
                name: node.name.clone(),
                address: node.address.clone(),
                role: role.to_owned(),
                matched_index: matched.unwrap_or(0),
                lag: matched.map_or(0, |m| last_log_index.saturating_sub(m)),
            }
        })
        .collect();
    pb::StatusResponse {
        node_id: metrics.id,
        node_name: name.to_owned(),
        leader_id: metrics.current_leader.unwrap_or(0),
        term: metrics.current_term,
        last_log_index,
        last_applied_index: metrics.last_applied.map_or(0, |id| id.index),
        members,
        state: role_name(metrics.state).to_owned(),
        ..Default::default()
    }
}

/// The voters and learners, by name (by id for a node without one).
pub fn membership(membership: &Membership<NodeId, Node>) -> pb::MembershipResponse {
    let name = |id: NodeId| membership.get_node(&id).map_or_else(|| id.to_string(), |node| node.name.clone());
    pb::MembershipResponse {
        voters: membership.voter_ids().map(name).collect(),
        learners: membership.learner_ids().map(name).collect(),
    }
}

/// What proposing on the leader came to, sent back to the follower that forwarded it.
impl Codec for ProposeOutcome {
    type Message = pb::ForwardResponse;

    fn to_message(&self) -> pb::ForwardResponse {
        use pb::forward_response::Outcome;
        let outcome = match self {
            ProposeOutcome::Applied(response) => Outcome::Applied(response.to_message()),
            ProposeOutcome::NotLeader { leader } => Outcome::NotLeader(pb::NotLeader {
                leader: leader.as_ref().map(Codec::to_message),
            }),
            ProposeOutcome::Unavailable(reason) => Outcome::Unavailable(reason.clone()),
        };
        pb::ForwardResponse { outcome: Some(outcome) }
    }

    fn from_message(message: pb::ForwardResponse) -> Result<Self, DecodeError> {
        use pb::forward_response::Outcome;
        Ok(match message.outcome.ok_or(DecodeError::Missing("forward_response.outcome"))? {
            Outcome::Applied(response) => ProposeOutcome::Applied(Response::from_message(response)?),
            Outcome::NotLeader(not_leader) => ProposeOutcome::NotLeader {
                leader: not_leader.leader.map(Node::from_message).transpose()?,
            },
            Outcome::Unavailable(reason) => ProposeOutcome::Unavailable(reason),
        })
    }
}
