//! Episode changes committed in the background: no message waits on consensus.
//!
//! A Decide whose sighting changes a server's episode (first seen, remediated, relapsed)
//! is answered at once from this node's own state (shared/spec/enforcement.md, "The
//! clock"), and the sighting is offered here. One task proposes what has gathered as one
//! `Sight` entry (group commit: many servers per entry, one per server, the latest
//! evidence winning), and again after a failure, until it is applied. Apply is
//! insert-if-absent, so a repeat or a late one never moves first-seen backwards.
//!
//! The queue is bounded: past `capacity` servers an offer is dropped and counted
//! (`ratchet_decider_sightings_dropped_total`); the server's next message offers it again.
//!
//! Each offer keeps the trace context of the Decide that made it, and a batch's commit
//! is traced as a child of its first traced offer: the trace of the message that first
//! showed a server runs on to the apply of its sighting on the leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ratchet_store::command::MAX_SIGHTINGS;
use ratchet_store::{Command, ServerSighting};
use tokio::sync::Notify;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::metrics;
use crate::proposer::Proposer;

const RETRY_AFTER: Duration = Duration::from_millis(200);

/// A sighting waiting to be committed, and the `traceparent` of the Decide that offered it.
type Pending = (ServerSighting, Option<String>);

pub struct SightingQueue {
    pending: Mutex<HashMap<(String, String), Pending>>,
    wake: Notify,
    capacity: usize,
}

impl SightingQueue {
    pub fn new(capacity: usize) -> Self {
        SightingQueue {
            pending: Mutex::default(),
            wake: Notify::new(),
            capacity,
        }
    }

    /// Queues a sighting to commit, traced as part of the current span's trace; false
    /// when the queue is full and it was dropped.
    pub fn offer(&self, sighting: ServerSighting) -> bool {
        self.offer_traced(sighting, ratchet_proto::trace_context::current_traceparent())
    }

    fn offer_traced(&self, sighting: ServerSighting, trace_parent: Option<String>) -> bool {
        let mut pending = self.pending.lock().expect("sightings lock");
        let key = (sighting.tenant.clone(), sighting.server_fqdn.clone());
        if !pending.contains_key(&key) && pending.len() >= self.capacity {
            metrics().sighting_dropped();
            return false;
        }
        let newer = pending.get(&key).is_none_or(|(queued, _)| sighting.seen_at >= queued.seen_at);
        if newer {
            pending.insert(key, (sighting, trace_parent));
        }
        metrics().sightings_queued(pending.len());
        drop(pending);
        self.wake.notify_one();
        true
    }

    fn take_batch(&self) -> Vec<Pending> {
        let mut pending = self.pending.lock().expect("sightings lock");
        let keys: Vec<_> = pending.keys().take(MAX_SIGHTINGS).cloned().collect();
        let batch = keys.iter().filter_map(|key| pending.remove(key)).collect();
        metrics().sightings_queued(pending.len());
        batch
    }

    /// Commits what gathers, forever.
    pub async fn run(&self, proposer: Proposer) {
        loop {
            self.wake.notified().await;
            loop {
                let batch = self.take_batch();
                if batch.is_empty() {
                    break;
                }
                let count = batch.len();
                match commit(&proposer, &batch).await {
                    Ok(()) => metrics().sightings_committed(count),
                    Err(error) => {
                        tracing::warn!(servers = count, %error, "committing sightings failed; retrying");
                        batch.into_iter().for_each(|(sighting, trace_parent)| {
                            self.offer_traced(sighting, trace_parent);
                        });
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            }
        }
    }

    /// Proposes everything queued once, for a clean shutdown.
    pub async fn flush(&self, proposer: &Proposer) {
        let batch = self.take_batch();
        if !batch.is_empty() {
            if let Err(error) = commit(proposer, &batch).await {
                tracing::warn!(%error, "sightings not committed at shutdown; the servers' next messages offer them again");
            }
        }
    }
}

/// Proposes one batch, traced as a child of its first traced offer.
async fn commit(proposer: &Proposer, batch: &[Pending]) -> Result<(), crate::error::Error> {
    let span = tracing::info_span!("sightings.commit", servers = batch.len());
    if let Some(parent) = batch.iter().find_map(|(_, trace_parent)| trace_parent.as_deref()) {
        let _ = span.set_parent(ratchet_proto::trace_context::context_of(parent));
    }
    let sightings = batch.iter().map(|(sighting, _)| sighting.clone()).collect();
    proposer.propose(Command::Sight { sightings }).instrument(span).await.map(drop)
}
