//! The group's clock check: each node compares its clock with every peer's, and a node
//! more than `max_clock_skew` from the median of the group stops trusting itself.
//!
//! The leader stamps every entry with its clock, so a leader with a wrong clock would put
//! wrong first-seen instants and pause starts into the log for everyone. A skewed node
//! therefore reports itself not fresh (no verdicts, not ready), refuses to stand for
//! election, and, if it leads, stops its heartbeats so that a follower with a good clock
//! takes over. It trusts itself again once its clock is back near the group's.
//!
//! A node starts untrusted (no election, no stamp, no verdict) until its first comparison
//! with a majority of the group: the first check runs as the node starts.
//!
//! Each peer's offset is measured as NTP does with one sample: the peer's reading minus
//! the midpoint of the local send and receive instants, with half the round trip as the
//! uncertainty, which is given to the node's benefit.

use std::time::Duration;

use chrono::TimeDelta;
use ratchet_proto::v1::TimeRequest;
use ratchet_store::types::Raft;
use tokio::time::{timeout, Instant};

use crate::clock::Clock;
use crate::freshness::{Freshness, UNCOMPARED};
use crate::metrics::metrics;
use crate::peers::Peers;

const CHECK_EVERY: Duration = Duration::from_secs(1);
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

pub struct SkewCheck {
    pub raft: Raft,
    pub peers: Peers,
    pub clock: Clock,
    pub freshness: Freshness,
    pub max_skew: Duration,
}

/// One peer's clock against ours: its offset, and how uncertain that is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub offset: TimeDelta,
    pub uncertainty: TimeDelta,
}

/// This node's distance from the group's median clock (positive: this node is ahead),
/// given its peers' samples; `None` without a majority of the group to compare with.
pub fn skew_from_median(samples: &[Sample], group_size: usize) -> Option<(TimeDelta, TimeDelta)> {
    if samples.len() + 1 <= group_size / 2 {
        return None;
    }
    let mut offsets: Vec<(TimeDelta, TimeDelta)> = samples.iter().map(|s| (s.offset, s.uncertainty)).collect();
    offsets.push((TimeDelta::zero(), TimeDelta::zero()));
    offsets.sort_by_key(|(offset, _)| *offset);
    let (median, uncertainty) = offsets[offsets.len() / 2];
    Some((-median, uncertainty))
}

impl SkewCheck {
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(CHECK_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check_once().await;
        }
    }

    async fn check_once(&self) {
        let raft = self.raft.metrics().borrow().clone();
        let membership = raft.membership_config.membership().clone();
        // The voters' clocks make the group's: a learner may come and go (and a single voter
        // whose learner is gone must still trust itself).
        let peers: Vec<_> = membership
            .voter_ids()
            .filter(|id| *id != raft.id)
            .filter_map(|id| membership.get_node(&id).cloned())
            .collect();
        let asks = peers.iter().map(|node| self.sample(&node.address));
        let samples: Vec<Sample> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        let Some((skew, uncertainty)) = skew_from_median(&samples, peers.len() + 1) else {
            return;
        };
        metrics().clock_skew(skew);
        let beyond = skew.abs() - uncertainty;
        let fault = (beyond > TimeDelta::from_std(self.max_skew).unwrap_or(TimeDelta::MAX)).then(|| {
            format!(
                "this node's clock is {:.3} s {} the group's median (at most {:?} allowed)",
                skew.abs().as_seconds_f64(),
                if skew > TimeDelta::zero() { "ahead of" } else { "behind" },
                self.max_skew
            )
        });
        // A node that has just started is untrusted without a fault: its first check decides.
        let was_faulty = self.freshness.clock_fault().is_some_and(|fault| fault != UNCOMPARED);
        match (&fault, was_faulty) {
            (Some(fault), false) => tracing::error!(%fault, "stepping aside: no verdicts, no leadership"),
            (None, true) => tracing::warn!("clock back near the group's: serving and standing for election again"),
            _ => {}
        }
        let trusted = fault.is_none();
        self.freshness.set_clock_fault(fault);
        self.raft.runtime_config().elect(trusted);
        self.raft.runtime_config().heartbeat(trusted);
    }

    async fn sample(&self, address: &str) -> Option<Sample> {
        let mut client = self.peers.raft(address).ok()?;
        let sent = Instant::now();
        let sent_at = self.clock.now();
        let reply = timeout(ASK_TIMEOUT, client.time(TimeRequest {})).await.ok()?.ok()?;
        let round_trip = TimeDelta::from_std(sent.elapsed()).ok()?;
        let theirs = chrono::DateTime::from_timestamp_micros(reply.into_inner().unix_micros)?;
        let midpoint = sent_at + round_trip / 2;
        Some(Sample {
            offset: theirs - midpoint,
            uncertainty: round_trip / 2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: i64) -> Sample {
        Sample {
            offset: TimeDelta::seconds(seconds),
            uncertainty: TimeDelta::milliseconds(1),
        }
    }

    #[test]
    fn the_odd_clock_out_sees_itself_skewed_and_the_others_do_not() {
        // Three nodes, one 30 s ahead. From that node both peers are 30 s behind it.
        let (skew, _) = skew_from_median(&[sample(-30), sample(-30)], 3).unwrap();
        assert_eq!(skew, TimeDelta::seconds(30));
        // From a good node, one peer agrees and one is 30 s ahead: the median is its own.
        let (skew, _) = skew_from_median(&[sample(0), sample(30)], 3).unwrap();
        assert_eq!(skew, TimeDelta::zero());
    }

    #[test]
    fn without_a_majority_to_compare_with_there_is_no_verdict() {
        assert_eq!(skew_from_median(&[], 3), None);
        assert!(skew_from_median(&[sample(0)], 3).is_some());
        assert_eq!(skew_from_median(&[sample(0)], 5), None);
    }
}
