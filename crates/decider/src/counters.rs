//! Message counts, aggregated per node and written to the log in batches.
//!
//! Every decision adds to an in-memory tally per server; every `counter_flush_ms` the node
//! proposes one `Observe` entry with all of it (split only past `MAX_OBSERVATIONS`). So
//! the log grows by one entry per node per interval, not one per message.
//!
//! Exactly once: each flush carries this node's id and a flush id of its own. A flush
//! whose outcome is unknown (the leader may have committed it and died before answering)
//! is sent again as it is, same id, before anything newer, and apply counts an id it has
//! just counted for this node only once. A node that stops flushes what it holds first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use ratchet_policy::{Timestamp, Verdict};
use ratchet_store::command::MAX_OBSERVATIONS;
use ratchet_store::model::Counts;
use ratchet_store::{Command, Observation};

use crate::proposer::{Proposer, WriteError};

pub struct CounterBuffer {
    node_id: u64,
    pending: Mutex<HashMap<(String, String), Pending>>,
    /// A flush that may or may not have been committed: sent again, unchanged, first.
    unsure: tokio::sync::Mutex<Option<Command>>,
}

struct Pending {
    build: String,
    last_seen: Timestamp,
    counts: BTreeMap<u32, Counts>,
}

impl CounterBuffer {
    pub fn new(node_id: u64) -> Self {
        CounterBuffer {
            node_id,
            pending: Mutex::default(),
            unsure: tokio::sync::Mutex::default(),
        }
    }

    /// Counts one decided message of a server in the given stage (0: none).
    pub fn record(&self, tenant: &str, server_fqdn: &str, build: &str, at: Timestamp, stage: u32, verdict: Verdict) {
        let mut counts = Counts::default();
        match verdict {
            Verdict::Accept => counts.accepted = 1,
            Verdict::Throttle => counts.throttled = 1,
            Verdict::Block => counts.blocked = 1,
        }
        self.merge(Observation {
            tenant: tenant.to_owned(),
            server_fqdn: server_fqdn.to_owned(),
            build: build.to_owned(),
            last_seen: at,
            counts: vec![(stage, counts)],
        });
    }

    fn merge(&self, observation: Observation) {
        let mut pending = self.pending.lock().expect("counter lock");
        let entry = pending
            .entry((observation.tenant, observation.server_fqdn))
            .or_insert_with(|| Pending {
                build: observation.build.clone(),
                last_seen: observation.last_seen,
                counts: BTreeMap::new(),
            });
        if observation.last_seen >= entry.last_seen {
            entry.last_seen = observation.last_seen;
            entry.build = observation.build;
        }
        for (stage, counts) in observation.counts {
            entry.counts.entry(stage).or_default().add(counts);
        }
    }

    fn drain(&self) -> Vec<Observation> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("counter lock"));
        pending
            .into_iter()
            .map(|((tenant, server_fqdn), p)| Observation {
                tenant,
                server_fqdn,
                build: p.build,
                last_seen: p.last_seen,
                counts: p.counts.into_iter().collect(),
            })
            .collect()
    }

    /// Writes everything tallied so far to the log, after any flush still unsure.
    pub async fn flush(&self, proposer: &Proposer) {
        let mut unsure = self.unsure.lock().await;
        if let Some(flush) = unsure.as_ref() {
            match proposer.propose(flush.clone()).await {
                Err(WriteError::NotMade(_) | WriteError::Indeterminate(_)) => {
                    return tracing::warn!("counter flush still not confirmed; sending it again with the next one");
                }
                Err(WriteError::Invalid(refusal) | WriteError::Refused(refusal)) => {
                    tracing::error!(%refusal, "counter flush refused; its counts are lost")
                }
                Ok(_) => {}
            }
            *unsure = None;
        }
        let observations = self.drain();
        let mut batches = observations.chunks(MAX_OBSERVATIONS);
        for batch in batches.by_ref() {
            let flush = Command::Observe {
                node_id: self.node_id,
                flush_id: rand::random_range(1..=u64::MAX),
                observations: batch.to_vec(),
            };
            match proposer.propose(flush.clone()).await {
                Ok(_) => {}
                Err(WriteError::Invalid(refusal) | WriteError::Refused(refusal)) => {
                    tracing::error!(%refusal, "counter flush refused; its counts are lost")
                }
                Err(error) => {
                    tracing::warn!(servers = batch.len(), %error, "counter flush not confirmed; it will be sent again as it is");
                    *unsure = Some(flush);
                    break;
                }
            }
        }
        // What was not sent after a failure waits for the next flush.
        batches.flatten().cloned().for_each(|o| self.merge(o));
    }

    /// Flushes every `every` until the task is dropped.
    pub async fn run(&self, proposer: Proposer, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.flush(&proposer).await;
        }
    }
}
