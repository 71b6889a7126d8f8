//! The retention sweep, paced by the leader: every `sweep_every_ms` it proposes a pass of
//! `Sweep` entries, each going on from where the previous one stopped, until one answers
//! that the pass is over.
//!
//! The leader only paces the work. What each entry deletes is decided by apply (see
//! `ratchet_store::retention`) from the state, the entry's own stamp and the policy in
//! force at it, so every node deletes the same records; each entry looks at a bounded
//! number of records, so no apply stalls however large the state. A pass cut short by a
//! leader change leaves nothing half done: each step is whole, and the next leader starts
//! a pass of its own.

use std::time::Duration;

use ratchet_store::retention::MAX_SWEEP_BUDGET;
use ratchet_store::{Applied, Command};
use tokio::time::Instant;

use crate::notifications::leads;
use crate::proposer::Proposer;

/// How often a node looks whether it leads and a pass is due.
const TICK: Duration = Duration::from_secs(1);

pub struct Sweeper {
    pub proposer: Proposer,
    pub every: Duration,
}

impl Sweeper {
    /// Sweeps while this node leads: at once on becoming leader, then every `every`.
    pub async fn run(self) {
        let mut last_pass: Option<Instant> = None;
        loop {
            tokio::time::sleep(TICK.min(self.every)).await;
            if !leads(&self.proposer) {
                last_pass = None;
                continue;
            }
            if last_pass.is_none_or(|at| at.elapsed() >= self.every) {
                last_pass = Some(Instant::now());
                self.pass().await;
            }
        }
    }

    /// Proposes sweep steps until the pass is over, this node stops leading, or a step fails
    /// (the next pass starts again from the beginning).
    async fn pass(&self) {
        let mut resume = None;
        while leads(&self.proposer) {
            let step = Command::Sweep {
                resume,
                budget: MAX_SWEEP_BUDGET,
            };
            match self.proposer.propose(step).await {
                Ok(Applied::Swept {
                    servers,
                    events,
                    count_flushes,
                    resume: next,
                }) => {
                    if servers + events + count_flushes > 0 {
                        tracing::info!(servers, events, count_flushes, "retention sweep deleted records");
                    }
                    match next {
                        Some(next) => resume = Some(next),
                        None => return,
                    }
                }
                Ok(other) => return tracing::warn!(?other, "a sweep step answered something else"),
                Err(error) => return tracing::warn!(%error, "a retention sweep step failed; the next pass retries"),
            }
        }
    }
}
