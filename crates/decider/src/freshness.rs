//! Whether this node's state is fresh enough to answer from: the rule of
//! shared/spec/enforcement.md "Freshness and time". Fail closed, never open.
//!
//! A follower or learner is fresh when it has heard from a leader within `max_staleness`
//! and has applied the commit index that leader announced then (every AppendEntries,
//! heartbeats included, carries it). The leader is fresh while a quorum has acknowledged
//! it within `max_staleness` (a deposed leader in a minority is not). Neither is fresh
//! while its Raft has stopped, while its clock is more than `max_clock_skew` away from
//! the group's, or once it is stopping (its last counts are about to be flushed). A node
//! that is not fresh gives no verdict and no connector table, says why, and is not ready.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratchet_store::types::Raft;

/// Why a node that has just started does not trust its clock yet.
pub const UNCOMPARED: &str = "this node's clock has not been compared with the group's yet";

/// Contacts older than this are forgotten; only those within `max_staleness` count.
const CONTACTS_KEPT: usize = 64;

#[derive(Clone)]
pub struct Freshness {
    inner: Arc<Mutex<State>>,
    max_staleness: Duration,
}

#[derive(Default)]
struct State {
    /// When a leader was last heard from, and the commit index it announced then; newest last.
    contacts: VecDeque<(Instant, u64)>,
    /// Why this node's clock cannot be trusted, while it cannot.
    clock_fault: Option<String>,
    /// Set once the node has begun to stop: clients must ask another.
    stopping: bool,
}

impl Freshness {
    /// Starts not trusting this node's clock: it has not been compared with the group's
    /// yet (see `skew`), and a node restarted with a wrong clock must not stamp a single
    /// entry, nor answer, before it has been.
    pub fn new(max_staleness: Duration) -> Self {
        let state = State {
            contacts: VecDeque::new(),
            clock_fault: Some(UNCOMPARED.into()),
            stopping: false,
        };
        Freshness {
            inner: Arc::new(Mutex::new(state)),
            max_staleness,
        }
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Records that the current leader reached this node, announcing `commit`.
    pub fn heard_from_leader(&self, commit: u64) {
        let mut state = self.inner.lock().expect("freshness lock");
        state.contacts.push_back((Instant::now(), commit));
        while state.contacts.len() > CONTACTS_KEPT {
            state.contacts.pop_front();
        }
    }

    /// Marks this node's clock as faulty (skewed from the group), or clears the mark.
    pub fn set_clock_fault(&self, fault: Option<String>) {
        self.inner.lock().expect("freshness lock").clock_fault = fault;
    }

    pub fn clock_fault(&self) -> Option<String> {
        self.inner.lock().expect("freshness lock").clock_fault.clone()
    }

    /// From now on this node answers no more: it is stopping.
    pub fn stop_answering(&self) {
        self.inner.lock().expect("freshness lock").stopping = true;
    }

    /// `Ok` when this node may answer from its own state, or why not.
    pub fn check(&self, raft: &Raft) -> Result<(), String> {
        if self.inner.lock().expect("freshness lock").stopping {
            return Err("this decider is stopping: ask another".into());
        }
        let metrics = raft.metrics().borrow().clone();
        if let Err(fatal) = &metrics.running_state {
            return Err(format!("raft has stopped on this node: {fatal}"));
        }
        if let Some(fault) = self.clock_fault() {
            return Err(fault);
        }
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        if metrics.current_leader == Some(metrics.id) {
            return match metrics.millis_since_quorum_ack {
                Some(ms) if Duration::from_millis(ms) <= self.max_staleness => Ok(()),
                Some(ms) => Err(format!("leader without a quorum for {ms} ms")),
                None => Err("leader not yet acknowledged by a quorum".into()),
            };
        }
        self.follower_check(applied)
    }

    fn follower_check(&self, applied: u64) -> Result<(), String> {
        let state = self.inner.lock().expect("freshness lock");
        let now = Instant::now();
        let recent: Vec<u64> = state
            .contacts
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= self.max_staleness)
            .map(|(_, commit)| *commit)
            .collect();
        let Some(oldest_recent_commit) = recent.first() else {
            return Err(match state.contacts.back() {
                Some((at, _)) => format!("no leader heard for {} ms", now.duration_since(*at).as_millis()),
                None => "no leader heard since this node started".into(),
            });
        };
        if applied < *oldest_recent_commit {
            return Err(format!(
                "catching up: applied {applied} of the leader's commit {oldest_recent_commit}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_fresh_only_with_a_recent_leader_and_its_commit_applied() {
        let freshness = Freshness::new(Duration::from_millis(200));
        assert!(freshness.follower_check(0).unwrap_err().contains("since this node started"));
        freshness.heard_from_leader(10);
        assert!(freshness
            .follower_check(9)
            .unwrap_err()
            .contains("applied 9 of the leader's commit 10"));
        assert!(freshness.follower_check(10).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(freshness.follower_check(10).unwrap_err().contains("no leader heard for"));
    }
}
