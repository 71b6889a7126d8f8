//! Writes from any node, and linearizable reads on any node.
//!
//! A write is validated here (bad input never reaches the log) and proposed to the local
//! Raft; a follower forwards it to the leader over the internal `Raft.Forward` RPC. The
//! leader validates it again and stamps it with its own clock as it appends it: no other
//! node's clock, and nothing a caller says, enters the log as time. While no leader is
//! known the write waits, up to the write timeout; every wait has that deadline. A request
//! that may have reached a leader is never sent twice.
//!
//! A linearizable read confirms with the leader's read index that this node has applied
//! everything committed before the read began.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use ratchet_proto::v1 as pb;
use ratchet_store::codec::Codec;
use ratchet_store::types::Raft;
use ratchet_store::{Applied, Command, Node, NodeId, Request, Response, StateView};
use tokio::time::{sleep, timeout, Instant};
use tracing::Instrument;

use crate::clock::Clock;
use crate::error::Error;
use crate::freshness::Freshness;
use crate::handover::WriteGate;
use crate::metrics::{metrics, WriteOutcome};
use crate::peers::{leader, never_sent, Leader, Peers};

const NO_LEADER_RETRY: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Proposer {
    pub raft: Raft,
    pub view: StateView,
    pub peers: Peers,
    pub clock: Clock,
    /// Whether this node may stamp entries: a leader whose clock is off proposes nothing.
    pub freshness: Freshness,
    pub write_timeout: Duration,
    /// Closed by a leader while it hands over before it stops (see `handover`): writes
    /// then wait for the next leader.
    pub gate: Arc<WriteGate>,
}

/// What proposing on one node came to; sent back to a follower that forwarded the write
/// (see `convert` for its message).
#[derive(Debug)]
pub enum ProposeOutcome {
    Applied(Response),
    NotLeader {
        leader: Option<Node>,
    },
    /// The write may or may not have been made.
    Unavailable(String),
}

/// Cut to what an audit note may hold (user input may be long: it may be why it was refused).
fn truncated(mut text: String) -> String {
    let max = ratchet_store::command::MAX_MESSAGE_LEN;
    if text.len() > max {
        let cut = (0..=max - 3).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

impl Proposer {
    pub fn now(&self) -> ratchet_policy::Timestamp {
        self.clock.now()
    }

    /// Validates and commits one of the system's own writes (sightings, counts, notices),
    /// wherever the leader is.
    pub async fn propose(&self, command: Command) -> Result<Applied, Error> {
        self.propose_by(None, command).await
    }

    /// Validates and commits an admin write asked for by `actor` (see
    /// `authorize::actor_of`), recorded in the audit trail with its outcome, whether apply
    /// or validation refuses it (apply records its own refusals: they are in the log).
    pub async fn propose_as(&self, actor: String, command: Command) -> Result<Applied, Error> {
        let (action, tenant) = (command.describe(), command.target_tenant().map(str::to_owned));
        let outcome = self.propose_by(Some(actor.clone()), command).await;
        if let Err(Error::Refused(refusal)) = &outcome {
            let note = Command::Audit {
                action: truncated(action),
                tenant: tenant.filter(|t| t.len() <= ratchet_store::command::MAX_TENANT_LEN),
                outcome: truncated(format!("refused: {refusal}")),
            };
            if let Err(error) = self.propose_by(Some(actor), note).await {
                tracing::warn!(%error, "a refused request could not be recorded in the audit trail");
            }
        }
        outcome
    }

    #[tracing::instrument(name = "raft.propose", skip_all)]
    async fn propose_by(&self, actor: Option<String>, command: Command) -> Result<Applied, Error> {
        command.validate(self.clock.now()).map_err(Error::Refused)?;
        // A write for a tenant this node does not know. The leader refuses it here, so that
        // it does not even reach the log, once it has applied all that is committed (a new
        // leader may not have yet). A follower may just not have applied the write that
        // created the tenant (acknowledged a moment ago through another node, or through
        // this one); rather than wait a round trip to the leader and then forward, it
        // forwards at once, and the leader's apply refuses a tenant that truly is not there
        // (audited in the log as any refusal at apply).
        if let Some(tenant) = command.target_tenant().filter(|name| !self.view.tenants().contains_key(*name)) {
            if matches!(leader(&self.raft), Ok(Leader::Here)) {
                let _ = self.read_barrier().await;
                if !self.view.tenants().contains_key(tenant) {
                    return Err(Error::unknown_tenant(tenant));
                }
            }
        }
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let leader_before = self.raft.metrics().borrow().current_leader;
            let (outcome, made) = match self.propose_here(command.clone(), actor.clone()).await {
                ProposeOutcome::NotLeader { leader: Some(leader) } => {
                    (self.forward(&leader, &command, actor.as_deref()).await, WriteOutcome::Forwarded)
                }
                here => (here, WriteOutcome::Proposed),
            };
            match outcome {
                ProposeOutcome::Applied(response) => {
                    metrics().write(made);
                    return response.map_err(Error::RefusedAtApply);
                }
                ProposeOutcome::Unavailable(reason) => {
                    metrics().write(WriteOutcome::Failed);
                    return Err(Error::Indeterminate(reason));
                }
                ProposeOutcome::NotLeader { .. } if Instant::now() < deadline => self.leader_changed(leader_before).await,
                ProposeOutcome::NotLeader { .. } => {
                    metrics().write(WriteOutcome::Failed);
                    return Err(Error::NoLeader("no leader: the write was not made".into()));
                }
            }
        }
    }

    /// Waits until this node knows of another leader than `before`, or `NO_LEADER_RETRY`
    /// has passed: a write retries as soon as an election or a hand-over ends.
    async fn leader_changed(&self, before: Option<NodeId>) {
        let _ = self
            .raft
            .wait(Some(NO_LEADER_RETRY))
            .metrics(|m| m.current_leader.is_some() && m.current_leader != before, "a new leader")
            .await;
    }

    /// Validates, stamps and proposes on this node's Raft, which accepts only if it leads.
    /// The stamp is this node's clock as it appends the entry: the leader's.
    ///
    /// The request carries this span's trace context, so that its apply joins the trace
    /// (see `ratchet_store::state_machine`); on a forwarded write that span is the child of
    /// the follower's, whose context came in the call's metadata.
    pub async fn propose_here(&self, command: Command, actor: Option<String>) -> ProposeOutcome {
        if let Some(fault) = self
            .freshness
            .clock_fault()
            .filter(|_| matches!(leader(&self.raft), Ok(Leader::Here)))
        {
            // A leader stamps entries with its clock, and this one is off: it is stepping
            // aside (see `skew`); the caller waits for a leader whose clock is good. A
            // follower with a bad clock still forwards: the leader stamps what it forwards.
            tracing::debug!(%fault, "not stamping entries with a skewed clock");
            return ProposeOutcome::NotLeader { leader: None };
        }
        let Some(_passage) = self.gate.enter() else {
            tracing::debug!("handing leadership over: the write waits for the next leader");
            return ProposeOutcome::NotLeader { leader: None };
        };
        let at = self.clock.now();
        if let Err(refusal) = command.validate(at) {
            return ProposeOutcome::Applied(Err(refusal));
        }
        let span = tracing::info_span!("raft.client_write");
        let write = async {
            let request = Request {
                at,
                command,
                trace_parent: ratchet_proto::trace_context::current_traceparent(),
                actor,
            };
            timeout(self.write_timeout, self.raft.client_write(request)).await
        }
        .instrument(span);
        match write.await {
            Ok(Ok(written)) => ProposeOutcome::Applied(written.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => ProposeOutcome::NotLeader {
                leader: forward.leader_node,
            },
            Ok(Err(error)) => ProposeOutcome::Unavailable(format!("write failed: {error}")),
            Err(_) => ProposeOutcome::Unavailable(format!(
                "no answer from the group within {:?}: the write may or may not have been made",
                self.write_timeout
            )),
        }
    }

    #[tracing::instrument(name = "raft.forward", skip_all, fields(otel.kind = "client", leader = %leader.name))]
    async fn forward(&self, leader: &Node, command: &Command, actor: Option<&str>) -> ProposeOutcome {
        let mut client = match self.peers.raft(&leader.address) {
            Ok(client) => client,
            Err(error) => return ProposeOutcome::Unavailable(error.to_string()),
        };
        let mut call = tonic::Request::new(pb::ForwardRequest {
            command: Some(command.to_message()),
            actor: actor.unwrap_or_default().to_owned(),
        });
        call.set_timeout(self.write_timeout);
        ratchet_proto::trace_context::inject(call.metadata_mut());
        match client.forward(call).await {
            Ok(reply) => ProposeOutcome::from_message(reply.into_inner())
                .unwrap_or_else(|e| ProposeOutcome::Unavailable(format!("leader answered garbage: {e}"))),
            // Never sent: the leader could not be reached at all, so trying again is safe.
            Err(status) if never_sent(&status) => ProposeOutcome::NotLeader { leader: None },
            Err(status) => ProposeOutcome::Unavailable(format!("forwarding to leader {leader}: {}", status.message())),
        }
    }

    /// Returns once this node has applied everything committed before the call. While the
    /// group has no reachable leader (an election), it retries until the write timeout.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            match self.read_index_once().await {
                Ok(index) => break self.wait_applied(index).await,
                Err(reason) if Instant::now() >= deadline => break Err(Error::Unavailable(format!("linearizable read: {reason}"))),
                Err(_) => sleep(NO_LEADER_RETRY).await,
            }
        }
    }

    /// The leader's read index: what must be applied here before a linearizable read.
    async fn read_index_once(&self) -> Result<u64, Error> {
        match leader(&self.raft)? {
            Leader::Here => {
                let read_log_id = self
                    .raft
                    .ensure_linearizable()
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                Ok(read_log_id.map_or(0, |id| id.index))
            }
            Leader::Elsewhere(node) => {
                let mut client = self.peers.raft(&node.address)?;
                let mut call = tonic::Request::new(pb::ReadIndexRequest {});
                call.set_timeout(self.write_timeout);
                let reply = client
                    .read_index(call)
                    .await
                    .map_err(|status| Error::Unavailable(status.message().to_owned()))?;
                Ok(reply.into_inner().index)
            }
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<(), Error> {
        let mut applied = self.view.applied();
        timeout(self.write_timeout, applied.wait_for(|applied| *applied >= index))
            .await
            .map_err(|_| Error::Unavailable(format!("linearizable read: not caught up to index {index} in time")))?
            .map_err(|_| Error::Unavailable("linearizable read: state machine stopped".into()))?;
        Ok(())
    }
}
