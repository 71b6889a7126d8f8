//! The sending side of Raft over gRPC: openraft's messages to a peer, as JSON in a
//! `RaftPayload`. Peers are reached through lazily connected, cached tonic channels.

use std::time::Duration;

use openraft::error::{Infallible, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use ratchet_proto::v1::raft_client::RaftClient;
use ratchet_proto::v1::RaftPayload;
use ratchet_store::{Node, NodeId, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::config::MAX_RAFT_MESSAGE_BYTES;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Every Raft message names the node it is for. A node that is not that one (a new member
/// that came back at a departed member's address with an empty volume, or a reused pod IP)
/// refuses it, so the leader sees an unreachable peer rather than a log that went back
/// in time, which openraft cannot accept.
pub const TARGET_NODE_HEADER: &str = "x-ratchet-raft-target";

/// A gRPC client of another decider's internal Raft service.
pub fn raft_client(address: &str) -> anyhow::Result<RaftClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(RaftClient::new(channel)
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
}

pub fn to_payload<T: Serialize>(value: &T) -> RaftPayload {
    RaftPayload {
        json: serde_json::to_vec(value).expect("raft messages always serialise"),
    }
}

pub fn from_payload<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, serde_json::Error> {
    serde_json::from_slice(&payload.json)
}

pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            target,
            node: node.clone(),
            client: raft_client(&node.address).ok(),
        }
    }
}

/// One peer as seen by the local Raft.
pub struct Peer {
    target: NodeId,
    node: Node,
    client: Option<RaftClient<Channel>>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl Peer {
    /// Sends one request and decodes the peer's `Result<response, RaftError>`.
    async fn call<Req, Resp, E>(&mut self, method: Method, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&AddressError(self.node.address.clone()))));
        };
        let mut message = tonic::Request::new(to_payload(request));
        message.set_timeout(option.hard_ttl());
        message.metadata_mut().insert(TARGET_NODE_HEADER, self.target.into());
        let reply = match method {
            Method::AppendEntries => client.append_entries(message).await,
            Method::Vote => client.vote(message).await,
            Method::InstallSnapshot => client.install_snapshot(message).await,
        };
        let payload = reply
            .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?
            .into_inner();
        let outcome: Result<Resp, RaftError<NodeId, E>> = from_payload(&payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        outcome.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

#[derive(Debug, thiserror::Error)]
#[error("peer address {0:?} is not a valid gRPC endpoint")]
struct AddressError(String);

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, Infallible> {
        self.call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>, Infallible> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
