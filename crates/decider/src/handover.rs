//! Handing leadership over before this node stops, so that a rolling restart costs no
//! election timeout.
//!
//! A leader that just exits leaves its followers to wait out their election timeouts (and
//! the leases they gave it) before one of them stands, and every write waits that long.
//! A leader asked to stop instead
//! 1. closes its `WriteGate`: new writes wait for the next leader, as in an election, and
//!    the ones already past the gate are appended;
//! 2. waits until a voter holds every entry it holds;
//! 3. asks that voter to stand for election at once (`Raft.HandOver`, the Raft thesis's
//!    TimeoutNow), and
//! 4. returns once the group has another leader, reopening the gate whatever happened.
//!
//! The old leader grants that vote: openraft gives a leader its lease when it is elected,
//! so a leader that has led for longer than the election timeout no longer holds one
//! against a candidate. With the candidate's own vote that is a majority of three; in a
//! larger group the other votes come when the followers' leases run out, no later than
//! an ordinary election. If the candidate loses (an entry slipped in after all) and this
//! node is elected again, it tries once more; if nothing works in time the node stops
//! anyway and the group elects a leader the ordinary way.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ratchet_proto::v1 as pb;
use ratchet_store::types::Raft;
use ratchet_store::NodeId;
use tokio::time::Instant;

use crate::error::Error;
use crate::network::TARGET_NODE_HEADER;
use crate::peers::Peers;
use crate::proposer::Proposer;

/// How long a follower may take to catch up with the last entries.
const CATCH_UP: Duration = Duration::from_secs(2);
/// Offers made before giving up.
const ATTEMPTS: usize = 3;

/// Lets writes through to the local Raft unless a hand-over has closed it, and counts
/// those still on their way to the log, so that the hand-over knows when the log stops
/// growing.
#[derive(Default)]
pub struct WriteGate {
    closed: AtomicBool,
    passing: AtomicUsize,
}

/// One write past the gate, until it is appended (or failed).
pub struct Passage<'a>(&'a WriteGate);

impl WriteGate {
    /// A passage for one write, or `None` while the gate is closed.
    pub fn enter(&self) -> Option<Passage<'_>> {
        // Counted before the check, so that `close` then `drained` never miss a write that
        // saw the gate open.
        self.passing.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.passing.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Passage(self))
    }

    /// Closes the gate and waits (up to `within`) for the writes already past it.
    async fn close(&self, within: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + within;
        while self.passing.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Passage<'_> {
    fn drop(&mut self) {
        self.0.passing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hands leadership to a caught-up voter if this node leads; returns the new leader, or
/// why there is none (this node does not lead, it is the only voter, nobody took over).
pub async fn hand_over(proposer: &Proposer, within: Duration) -> Result<NodeId, String> {
    let me = proposer.raft.metrics().borrow().id;
    if proposer.raft.metrics().borrow().current_leader != Some(me) {
        return Err("this node does not lead".into());
    }
    let outcome = hand_over_gated(proposer, me, within).await;
    proposer.gate.open();
    outcome
}

async fn hand_over_gated(proposer: &Proposer, me: NodeId, within: Duration) -> Result<NodeId, String> {
    let raft = &proposer.raft;
    let deadline = Instant::now() + within;
    proposer.gate.close(proposer.write_timeout).await;
    let mut why = String::from("no attempt was made");
    for _ in 0..ATTEMPTS {
        let term = raft.metrics().borrow().current_term;
        let candidates = caught_up_voters(raft, me).await?;
        let Some(candidate) = first_taker(raft, &proposer.peers, me, term, candidates).await else {
            return Err("no caught-up voter took leadership over".into());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // Ends when another node leads, or this one does again in a later term (the
        // candidate lost: an entry it lacked slipped in).
        let settled = raft
            .wait(Some(left))
            .metrics(
                |m| m.current_leader.is_some_and(|leader| leader != me || m.current_term > term),
                "a leader after the hand-over",
            )
            .await
            .map_err(|_| format!("node {candidate} stood for election but no leader within {within:?}"))?;
        match settled.current_leader {
            Some(leader) if leader != me => return Ok(leader),
            _ => why = format!("node {candidate} stood for election and lost; this node leads again"),
        }
    }
    Err(why)
}

/// The voters other than `me` that hold every entry this leader holds, once at least one
/// does (waiting up to `CATCH_UP`).
async fn caught_up_voters(raft: &Raft, me: NodeId) -> Result<Vec<NodeId>, String> {
    let caught_up = |m: &openraft::RaftMetrics<NodeId, ratchet_store::Node>| -> Vec<NodeId> {
        let last = m.last_log_index;
        let Some(replication) = &m.replication else { return Vec::new() };
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != me)
            .filter(|id| replication.get(id).and_then(|matched| matched.map(|log_id| log_id.index)) == last)
            .collect()
    };
    let voters = raft.metrics().borrow().membership_config.membership().voter_ids().count();
    if voters < 2 {
        return Err("this node is the only voter".into());
    }
    let metrics = raft
        .wait(Some(CATCH_UP))
        .metrics(|m| !caught_up(m).is_empty(), "a caught-up voter")
        .await
        .map_err(|_| format!("no voter caught up with this leader within {CATCH_UP:?}"))?;
    Ok(caught_up(&metrics))
}

/// Offers leadership to each candidate in turn; the first that takes it.
async fn first_taker(raft: &Raft, peers: &Peers, me: NodeId, term: u64, candidates: Vec<NodeId>) -> Option<NodeId> {
    for candidate in candidates {
        match offer(raft, peers, me, term, candidate).await {
            Ok(()) => return Some(candidate),
            Err(refusal) => tracing::warn!(candidate, %refusal, "a follower did not take leadership over"),
        }
    }
    None
}

/// Asks `candidate` to stand for election now.
async fn offer(raft: &Raft, peers: &Peers, me: NodeId, term: u64, candidate: NodeId) -> Result<(), String> {
    let node = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&candidate)
        .cloned()
        .ok_or_else(|| format!("node {candidate} is not in the membership"))?;
    let mut client = peers.raft(&node.address).map_err(|error| error.to_string())?;
    let mut request = tonic::Request::new(pb::HandOverRequest { leader_id: me, term });
    request.set_timeout(Duration::from_secs(1));
    request.metadata_mut().insert(TARGET_NODE_HEADER, candidate.into());
    client.hand_over(request).await.map_err(|status| status.message().to_owned())?;
    Ok(())
}

/// A follower's side: stands for election if the offer comes from the leader it follows,
/// in the term it knows, and if it may lead at all (a voter whose clock is trusted).
pub async fn take_over(proposer: &Proposer, request: &pb::HandOverRequest) -> Result<(), Error> {
    let metrics = proposer.raft.metrics().borrow().clone();
    if metrics.current_leader != Some(request.leader_id) || metrics.current_term != request.term {
        return Err(Error::Precondition(format!(
            "hand-over from node {} in term {}: this node follows {:?} in term {}",
            request.leader_id, request.term, metrics.current_leader, metrics.current_term
        )));
    }
    if !metrics.membership_config.membership().voter_ids().any(|id| id == metrics.id) {
        return Err(Error::Precondition("this node is not a voter".into()));
    }
    if let Some(fault) = proposer.freshness.clock_fault() {
        return Err(Error::Precondition(format!("this node may not lead: {fault}")));
    }
    tracing::info!(
        from = request.leader_id,
        term = request.term,
        "taking leadership over from a stopping leader"
    );
    proposer
        .raft
        .trigger()
        .elect()
        .await
        .map_err(|fatal| Error::Unavailable(format!("raft is not running on this node: {fatal}")))
}
