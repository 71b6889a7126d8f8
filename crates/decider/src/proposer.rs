//! Writes from any node, and linearizable reads on any node.
//!
//! A write is stamped with this node's clock, validated (bad input never reaches the
//! log), and proposed to the local Raft; a follower forwards it to the leader over the
//! internal `Raft.Forward` RPC. While no leader is known the write waits, up to the write
//! timeout. A request that may have reached a leader is never sent twice.
//!
//! A linearizable read confirms with the leader's read index that this node has applied
//! everything committed before the read began.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use ratchet_proto::v1::ReadIndexRequest;
use ratchet_store::types::Raft;
use ratchet_store::{Applied, Command, CommandError, ErrorKind, Node, Request, Response, StateView};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, timeout, Instant};
use tonic::Status;
use tracing::Instrument;

use crate::clock::Clock;
use crate::metrics::{metrics, WriteOutcome};
use crate::network::{from_payload, raft_client, to_payload};

const NO_LEADER_RETRY: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Proposer {
    pub raft: Raft,
    pub view: StateView,
    pub clock: Clock,
    pub write_timeout: Duration,
}

/// What proposing on one node came to; sent back to a follower that forwarded the write.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProposeOutcome {
    Applied(Response),
    NotLeader { leader: Option<Node> },
    Unavailable(String),
}

pub fn command_status(error: CommandError) -> Status {
    let message = error.to_string();
    match error.kind {
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::AlreadyExists => Status::already_exists(message),
        ErrorKind::FailedPrecondition => Status::failed_precondition(message),
    }
}

impl Proposer {
    pub fn now(&self) -> ratchet_policy::Timestamp {
        self.clock.now()
    }

    /// Validates, stamps and commits a command, wherever the leader is.
    #[tracing::instrument(name = "raft.propose", skip_all)]
    pub async fn propose(&self, command: Command) -> Result<Applied, Status> {
        let at = self.clock.now();
        command.validate(at).map_err(command_status)?;
        // Refused here rather than at apply, so that it does not even reach the log. This
        // node may not have applied the write that created the tenant yet: it catches up
        // with the leader before it refuses. Apply checks again in any case.
        if let Some(tenant) = command.target_tenant().filter(|name| !self.view.tenants().contains_key(*name)) {
            let _ = self.read_barrier().await;
            if !self.view.tenants().contains_key(tenant) {
                return Err(command_status(CommandError::unknown_tenant(tenant)));
            }
        }
        let request = Request {
            at,
            command,
            trace_parent: None,
        };
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let (outcome, made) = match self.propose_here(request.clone()).await {
                ProposeOutcome::NotLeader { leader: Some(leader) } => (self.forward(&leader, &request).await, WriteOutcome::Forwarded),
                here => (here, WriteOutcome::Proposed),
            };
            match outcome {
                ProposeOutcome::Applied(response) => {
                    metrics().write(made);
                    return response.map_err(command_status);
                }
                ProposeOutcome::Unavailable(reason) => {
                    metrics().write(WriteOutcome::Failed);
                    return Err(Status::unavailable(reason));
                }
                ProposeOutcome::NotLeader { .. } if Instant::now() < deadline => sleep(NO_LEADER_RETRY).await,
                ProposeOutcome::NotLeader { .. } => {
                    metrics().write(WriteOutcome::Failed);
                    return Err(Status::unavailable("no leader: the write was not made"));
                }
            }
        }
    }

    /// Proposes on this node's Raft, which accepts only if it leads.
    ///
    /// The request is stamped with this span's trace context, so that its apply joins the
    /// trace (see `ratchet_store::state_machine`); a stamp from the forwarding follower is
    /// replaced by the leader's own, which is that stamp's descendant.
    pub async fn propose_here(&self, mut request: Request) -> ProposeOutcome {
        let span = tracing::info_span!("raft.client_write");
        let written = async {
            request.trace_parent = ratchet_proto::trace_context::current_traceparent();
            self.raft.client_write(request).await
        }
        .instrument(span)
        .await;
        match written {
            Ok(written) => ProposeOutcome::Applied(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => ProposeOutcome::NotLeader {
                leader: forward.leader_node,
            },
            Err(error) => ProposeOutcome::Unavailable(format!("write failed: {error}")),
        }
    }

    #[tracing::instrument(name = "raft.forward", skip_all, fields(otel.kind = "client", leader = %leader.name))]
    async fn forward(&self, leader: &Node, request: &Request) -> ProposeOutcome {
        let mut client = match raft_client(&leader.address) {
            Ok(client) => client,
            Err(error) => return ProposeOutcome::Unavailable(error.to_string()),
        };
        let mut call = tonic::Request::new(to_payload(request));
        ratchet_proto::trace_context::inject(call.metadata_mut());
        match client.forward(call).await {
            Ok(reply) => {
                from_payload(reply.get_ref()).unwrap_or_else(|e| ProposeOutcome::Unavailable(format!("leader answered garbage: {e}")))
            }
            Err(status) if status.code() == tonic::Code::Unavailable && status.message().contains("connect") => {
                ProposeOutcome::NotLeader { leader: None }
            }
            Err(status) => ProposeOutcome::Unavailable(format!("forwarding to leader {leader}: {}", status.message())),
        }
    }

    /// Returns once this node has applied everything committed before the call. While the
    /// group has no reachable leader (an election), it retries until the write timeout.
    pub async fn read_barrier(&self) -> Result<(), Status> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            match self.read_index_once().await {
                Ok(index) => break self.wait_applied(index).await,
                Err(reason) if Instant::now() >= deadline => break Err(Status::unavailable(format!("linearizable read: {reason}"))),
                Err(_) => sleep(NO_LEADER_RETRY).await,
            }
        }
    }

    /// The leader's read index: what must be applied here before a linearizable read.
    async fn read_index_once(&self) -> Result<u64, String> {
        let leader = self.raft.current_leader().await.ok_or("no leader")?;
        let metrics = self.raft.metrics().borrow().clone();
        if leader == metrics.id {
            let read_log_id = self.raft.ensure_linearizable().await.map_err(|e| e.to_string())?;
            return Ok(read_log_id.map_or(0, |id| id.index));
        }
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or("leader unknown")?;
        let mut client = raft_client(&node.address).map_err(|e| e.to_string())?;
        let reply = client.read_index(ReadIndexRequest {}).await.map_err(|s| s.message().to_owned())?;
        Ok(reply.into_inner().index)
    }

    async fn wait_applied(&self, index: u64) -> Result<(), Status> {
        let mut applied = self.view.applied();
        timeout(self.write_timeout, applied.wait_for(|applied| *applied >= index))
            .await
            .map_err(|_| Status::unavailable(format!("linearizable read: not caught up to index {index} in time")))?
            .map_err(|_| Status::unavailable("linearizable read: state machine stopped"))?;
        Ok(())
    }
}
