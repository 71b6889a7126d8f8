//! The sending side of Raft over gRPC: openraft's messages to a peer, as the typed
//! protobuf messages of `proto/ratchet/v1/raft.proto`, over the peer's shared channel.
//!
//! Errors are told apart because openraft reacts to each differently: a batch too large
//! for one message is `PayloadTooLarge` (openraft halves it and sends again), a peer that
//! cannot be reached is `Unreachable` (openraft backs off), anything else is a network
//! error (openraft retries).

use openraft::error::{Infallible, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use prost::Message;
use ratchet_proto::v1::raft_client::RaftClient;
use ratchet_store::codec::Codec;
use ratchet_store::{Node, NodeId, TypeConfig};
use tonic::transport::Channel;
use tonic::Code;

use crate::config::MAX_RAFT_MESSAGE_BYTES;
use crate::peers::Peers;

/// Every Raft message names the node it is for. A node that is not that one (a new member
/// that came back at a departed member's address with an empty volume, or a reused pod IP)
/// refuses it, so the leader sees an unreachable peer rather than a log that went back
/// in time, which openraft cannot accept.
pub const TARGET_NODE_HEADER: &str = "x-ratchet-raft-target";

pub struct Network {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            target,
            node: node.clone(),
            client: self.peers.raft(&node.address).ok(),
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

#[derive(Debug, thiserror::Error)]
#[error("peer {0:?} has no valid gRPC address")]
struct AddressError(String);

#[derive(Debug, thiserror::Error)]
#[error("{0} over the limit of {MAX_RAFT_MESSAGE_BYTES} bytes")]
struct TooLarge(String);

impl Peer {
    /// Sends one message through `send` and decodes the peer's answer.
    async fn call<Req, Resp, E, Fut>(
        &mut self,
        request: &Req,
        option: &RPCOption,
        send: impl FnOnce(RaftClient<Channel>, tonic::Request<Req::Message>) -> Fut,
    ) -> RpcResult<Resp, E>
    where
        Req: Codec,
        Resp: Codec,
        E: std::error::Error,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp::Message>, tonic::Status>>,
    {
        let Some(client) = self.client.clone() else {
            return Err(RPCError::Unreachable(Unreachable::new(&AddressError(self.node.address.clone()))));
        };
        let mut message = tonic::Request::new(request.to_message());
        message.set_timeout(option.hard_ttl());
        message.metadata_mut().insert(TARGET_NODE_HEADER, self.target.into());
        let reply = send(client, message).await.map_err(|status| match status.code() {
            Code::ResourceExhausted | Code::OutOfRange => RPCError::Network(NetworkError::new(&TooLarge(status.message().to_owned()))),
            Code::Unavailable | Code::Cancelled | Code::FailedPrecondition => RPCError::Unreachable(Unreachable::new(&status)),
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        Resp::from_message(reply.into_inner()).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, Infallible> {
        // Checked before sending: a batch over the message limit would be refused by the
        // peer forever; openraft splits it when told so.
        let size = rpc.to_message().encoded_len();
        if size > MAX_RAFT_MESSAGE_BYTES && rpc.entries.len() > 1 {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(
                rpc.entries.len() as u64 / 2,
            )));
        }
        self.call(
            &rpc,
            &option,
            |mut client, request| async move { client.append_entries(request).await },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let (target, node) = (self.target, self.node.clone());
        let answer: Result<InstallSnapshotResponse<NodeId>, InstallSnapshotError> = self
            .call::<_, _, InstallSnapshotError, _>(&rpc, &option, |mut client, request| async move {
                client.install_snapshot(request).await
            })
            .await?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(target, node, RaftError::APIError(e))))
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>, Infallible> {
        self.call(&rpc, &option, |mut client, request| async move { client.vote(request).await })
            .await
    }
}
