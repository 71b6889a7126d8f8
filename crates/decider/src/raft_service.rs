//! The receiving side of Raft over gRPC: peers' openraft messages handed to the local
//! Raft, writes forwarded by followers, read-index requests, and identity.

use ratchet_proto::v1::raft_server::Raft as RaftRpc;
use ratchet_proto::v1::{IdentifyRequest, IdentifyResponse, RaftPayload, ReadIndexRequest, ReadIndexResponse};
use ratchet_store::types::Raft;
use ratchet_store::Request;
use tonic::{Response, Status};

use crate::identity::Identity;
use crate::network::{from_payload, to_payload, TARGET_NODE_HEADER};
use crate::proposer::Proposer;

pub struct RaftService {
    pub raft: Raft,
    pub proposer: Proposer,
    pub identity: Identity,
}

fn decode<T: serde::de::DeserializeOwned>(payload: &RaftPayload) -> Result<T, Status> {
    from_payload(payload).map_err(|e| Status::invalid_argument(format!("json: not a valid raft message: {e}")))
}

impl RaftService {
    /// Refuses a Raft message meant for another node id (see `TARGET_NODE_HEADER`).
    fn check_target<T>(&self, request: &tonic::Request<T>) -> Result<(), Status> {
        let target = request
            .metadata()
            .get(TARGET_NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match target {
            Some(id) if id == self.identity.id => Ok(()),
            Some(id) => Err(Status::failed_precondition(format!(
                "raft message for node {id} reached node {} ({}): that member is gone from this address",
                self.identity.id, self.identity.name
            ))),
            None => Err(Status::invalid_argument(format!("{TARGET_NODE_HEADER}: missing or not a node id"))),
        }
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: tonic::Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc = decode(request.get_ref())?;
        Ok(Response::new(to_payload(&self.raft.append_entries(rpc).await)))
    }

    async fn vote(&self, request: tonic::Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc = decode(request.get_ref())?;
        Ok(Response::new(to_payload(&self.raft.vote(rpc).await)))
    }

    async fn install_snapshot(&self, request: tonic::Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc = decode(request.get_ref())?;
        Ok(Response::new(to_payload(&self.raft.install_snapshot(rpc).await)))
    }

    async fn forward(&self, request: tonic::Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let request: Request = decode(request.get_ref())?;
        Ok(Response::new(to_payload(&self.proposer.propose_here(request).await)))
    }

    async fn read_index(&self, _request: tonic::Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let read_log_id = self
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| Status::unavailable(format!("not the leader: {e}")))?;
        Ok(Response::new(ReadIndexResponse {
            index: read_log_id.map_or(0, |id| id.index),
        }))
    }

    async fn identify(&self, _request: tonic::Request<IdentifyRequest>) -> Result<Response<IdentifyResponse>, Status> {
        let initialized = self.raft.is_initialized().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(IdentifyResponse {
            id: self.identity.id,
            name: self.identity.name.clone(),
            initialized,
        }))
    }
}
