//! The cluster API: status, and membership changes (add a learner, promote it, remove a
//! node). Membership changes run on the leader; a follower passes them on to it.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::cluster_client::ClusterClient;
use ratchet_proto::v1::cluster_server::Cluster;
use ratchet_store::types::Raft;
use ratchet_store::{CommandError, Node, NodeId};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use ratchet_store::Command;

use crate::authorize::{actor_of, from_peer};
use crate::convert;
use crate::error::Error;
use crate::identity::Identity;
use crate::peers::{leader, Leader, Peers};
use crate::proposer::Proposer;

pub struct ClusterService {
    pub raft: Raft,
    pub identity: Identity,
    pub peers: Peers,
    /// For the audit trail of membership changes.
    pub proposer: Proposer,
}

impl ClusterService {
    /// Records a membership change in the audit trail, on the node the operator called (a
    /// call passed on to the leader is recorded where it came in).
    /// The outcome is the call's answer, this node's or the leader's as it gave it.
    async fn audited<T, R>(&self, request: &Request<R>, action: String, outcome: Result<T, Status>) -> Result<T, Status> {
        if !from_peer(request) {
            let note = Command::Audit {
                action,
                tenant: None,
                outcome: match &outcome {
                    Ok(_) => "ok".to_owned(),
                    Err(status) => format!("refused: {}", status.message()),
                },
            };
            if let Err(error) = self.proposer.propose_as(actor_of(request), note).await {
                tracing::warn!(%error, "a membership change could not be recorded in the audit trail");
            }
        }
        outcome
    }

    /// The leader's cluster service, or `None` when this node leads.
    fn leader_elsewhere(&self) -> Result<Option<ClusterClient<Channel>>, Error> {
        match leader(&self.raft)? {
            Leader::Here => Ok(None),
            Leader::Elsewhere(node) => self.peers.cluster(&node.address).map(Some),
        }
    }

    fn node_id_by_name(&self, name: &str) -> Result<NodeId, Error> {
        let metrics = self.raft.metrics().borrow().clone();
        let found = metrics
            .membership_config
            .membership()
            .nodes()
            .find(|(_, node)| node.name == name)
            .map(|(id, _)| *id);
        found.ok_or_else(|| Error::Refused(CommandError::not_found("name", format!("no member named {name:?}"))))
    }

    async fn change(&self, changes: ChangeMembers<NodeId, Node>) -> Result<(), Error> {
        self.raft
            .change_membership(changes, true)
            .await
            .map_err(|e| Error::Precondition(format!("membership change refused: {e}")))?;
        Ok(())
    }

    fn membership(&self) -> pb::MembershipResponse {
        convert::membership(self.raft.metrics().borrow().membership_config.membership())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let mut status = convert::cluster_status(&self.raft.metrics().borrow(), &self.identity.name);
        if request.get_ref().state_digest {
            let view = self.proposer.view.clone();
            let (index, digest) = tokio::task::spawn_blocking(move || view.digest())
                .await
                .map_err(Error::internal)?
                .map_err(|e| Error::Internal(format!("state digest: {e}")))?;
            (status.digest_index, status.state_digest) = (index, digest);
        }
        Ok(Response::new(status))
    }

    async fn add_learner(&self, request: Request<pb::AddLearnerRequest>) -> Result<Response<pb::AddLearnerResponse>, Status> {
        let action = format!("cluster add-learner {} {}", request.get_ref().name, request.get_ref().address);
        let outcome = self.add_learner_here(request.get_ref().clone()).await;
        self.audited(&request, action, outcome).await
    }

    async fn promote(&self, request: Request<pb::PromoteRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let action = format!("cluster promote {}", request.get_ref().name);
        let outcome = self.promote_here(request.get_ref().clone()).await;
        self.audited(&request, action, outcome).await
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Result<Response<pb::MembershipResponse>, Status> {
        let action = format!("cluster remove {}", request.get_ref().name);
        let outcome = self.remove_here(request.get_ref().clone()).await;
        self.audited(&request, action, outcome).await
    }
}

/// Each call runs on the leader: a follower passes it on, and answers with the leader's
/// answer as it gave it.
impl ClusterService {
    async fn add_learner_here(&self, request: pb::AddLearnerRequest) -> Result<Response<pb::AddLearnerResponse>, Status> {
        if request.name.trim().is_empty() || request.address.trim().is_empty() {
            return Err(Error::bad_field("name and address", "both are required").into());
        }
        if let Some(mut leader) = self.leader_elsewhere()? {
            return leader.add_learner(request).await;
        }
        // The node tells us its own id: ids are drawn by each node and persisted with it.
        let mut peer = self.peers.raft(&request.address)?;
        let identity = peer
            .identify(pb::IdentifyRequest {})
            .await
            .map_err(|s| Error::Unavailable(format!("address: cannot reach {}: {}", request.address, s.message())))?
            .into_inner();
        if identity.name != request.name {
            let problem = format!(
                "the node at {} is named {:?}, not {:?}",
                request.address, identity.name, request.name
            );
            return Err(Error::bad_field("name", problem).into());
        }
        let node = Node {
            name: request.name,
            address: request.address,
        };
        self.raft
            .add_learner(identity.id, node, true)
            .await
            .map_err(|e| Error::Precondition(format!("adding learner: {e}")))?;
        Ok(Response::new(pb::AddLearnerResponse { id: identity.id }))
    }

    async fn promote_here(&self, request: pb::PromoteRequest) -> Result<Response<pb::MembershipResponse>, Status> {
        if let Some(mut leader) = self.leader_elsewhere()? {
            return leader.promote(request).await;
        }
        let id = self.node_id_by_name(&request.name)?;
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
        Ok(Response::new(self.membership()))
    }

    async fn remove_here(&self, request: pb::RemoveRequest) -> Result<Response<pb::MembershipResponse>, Status> {
        if let Some(mut leader) = self.leader_elsewhere()? {
            return leader.remove(request).await;
        }
        let id = self.node_id_by_name(&request.name)?;
        let voters: Vec<NodeId> = self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        let is_voter = voters.contains(&id);
        if is_voter && voters.len() == 1 {
            return Err(Error::Precondition(format!(
                "{} is the last voter: the group would have none; add and promote another node first",
                request.name
            ))
            .into());
        }
        if is_voter {
            self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
        }
        self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await?;
        Ok(Response::new(self.membership()))
    }
}
