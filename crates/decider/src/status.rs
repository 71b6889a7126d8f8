//! The group as this node sees it, from openraft's metrics: for `cluster status`,
//! readiness and the Prometheus metrics.

use openraft::ServerState;
use ratchet_proto::v1 as pb;
use ratchet_store::types::Raft;

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

pub fn cluster_status(raft: &Raft, name: &str) -> pb::StatusResponse {
    let metrics = raft.metrics().borrow().clone();
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
