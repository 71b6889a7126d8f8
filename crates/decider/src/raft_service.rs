//! The receiving side of Raft over gRPC: peers' openraft messages handed to the local
//! Raft, writes forwarded by followers (validated and stamped here, as a local one), read
//! indexes, identity, and a stopping leader's hand-over.

use ratchet_proto::v1 as pb;
use ratchet_proto::v1::raft_server::Raft as RaftRpc;
use ratchet_store::codec::{Codec, DecodeError};
use ratchet_store::types::Raft;
use ratchet_store::Command;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::identity::Identity;
use crate::network::TARGET_NODE_HEADER;
use crate::proposer::Proposer;

pub struct RaftService {
    pub raft: Raft,
    pub proposer: Proposer,
    pub identity: Identity,
}

fn decode<T: Codec>(message: T::Message) -> Result<T, Error> {
    T::from_message(message).map_err(|e: DecodeError| Error::bad_field("request", format!("not a valid raft message: {e}")))
}

/// A Raft call that failed on this node (its Raft has stopped): the sender backs off.
fn stopped(error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("raft is not running on this node: {error}"))
}

impl RaftService {
    /// Refuses a Raft message meant for another node id (see `TARGET_NODE_HEADER`).
    fn check_target<T>(&self, request: &Request<T>) -> Result<(), Error> {
        let target = request
            .metadata()
            .get(TARGET_NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match target {
            Some(id) if id == self.identity.id => Ok(()),
            Some(id) => Err(Error::Precondition(format!(
                "raft message for node {id} reached node {} ({}): that member is gone from this address",
                self.identity.id, self.identity.name
            ))),
            None => Err(Error::bad_field(TARGET_NODE_HEADER, "missing or not a node id")),
        }
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<pb::AppendEntriesRequest>) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        use openraft::raft::AppendEntriesResponse as A;
        self.check_target(&request)?;
        let request: openraft::raft::AppendEntriesRequest<_> = decode(request.into_inner())?;
        let commit = request.leader_commit.map_or(0, |id| id.index);
        let response = self.raft.append_entries(request).await.map_err(stopped)?;
        // Accepted from the current leader (not refused for an old vote): it is a contact.
        if !matches!(response, A::HigherVote(_)) {
            self.proposer.freshness.heard_from_leader(commit);
        }
        Ok(Response::new(response.to_message()))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_target(&request)?;
        let response = self.raft.vote(decode(request.into_inner())?).await.map_err(stopped)?;
        Ok(Response::new(response.to_message()))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        use openraft::error::RaftError;
        self.check_target(&request)?;
        let answer = match self.raft.install_snapshot(decode(request.into_inner())?).await {
            Ok(response) => Ok(response),
            Err(RaftError::APIError(mismatch)) => Err(mismatch),
            Err(RaftError::Fatal(fatal)) => return Err(stopped(fatal).into()),
        };
        Ok(Response::new(answer.to_message()))
    }

    /// A follower's write: validated and stamped here as a local one is. The actor is the
    /// forwarding peer's word for who asked it, which a peer (and only a peer) may give.
    async fn forward(&self, request: Request<pb::ForwardRequest>) -> Result<Response<pb::ForwardResponse>, Status> {
        let request = request.into_inner();
        let command: Command = decode(request.command.ok_or_else(|| Error::bad_field("command", "missing"))?)?;
        let actor = Some(request.actor).filter(|actor| !actor.is_empty());
        Ok(Response::new(self.proposer.propose_here(command, actor).await.to_message()))
    }

    async fn read_index(&self, _request: Request<pb::ReadIndexRequest>) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let read_log_id = self
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| Error::Unavailable(format!("not the leader: {e}")))?;
        Ok(Response::new(pb::ReadIndexResponse {
            index: read_log_id.map_or(0, |id| id.index),
        }))
    }

    async fn time(&self, _request: Request<pb::TimeRequest>) -> Result<Response<pb::TimeResponse>, Status> {
        Ok(Response::new(pb::TimeResponse {
            unix_micros: self.proposer.now().timestamp_micros(),
        }))
    }

    async fn hand_over(&self, request: Request<pb::HandOverRequest>) -> Result<Response<pb::HandOverResponse>, Status> {
        self.check_target(&request)?;
        crate::handover::take_over(&self.proposer, request.get_ref()).await?;
        Ok(Response::new(pb::HandOverResponse {}))
    }

    async fn identify(&self, _request: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyResponse>, Status> {
        let initialized = self.raft.is_initialized().await.map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(Response::new(pb::IdentifyResponse {
            id: self.identity.id,
            name: self.identity.name.clone(),
            initialized,
        }))
    }
}
