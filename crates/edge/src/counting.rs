//! The messages a front (the edge, the milter) answered, counted per server and stage, and
//! sent to the deciders in numbered flushes (`Decision.Count`) every `count_flush_ms`.
//!
//! The front counts, not the decider: it knows what it answered (a verdict it remembered
//! for a session included), and a Decide it sent again after a timeout is still one
//! message. Each process draws an origin when it starts and numbers its flushes from 1. A
//! flush whose outcome is unknown is sent again, unchanged, before anything newer; the
//! deciders count a sequence once and never one older than the last counted, so neither a
//! resend nor a late copy counts twice. A stopping front flushes what it holds; one
//! killed outright loses what it counted since its last flush. A message accepted in
//! report-only mode counts as accepted, and also as what it would have been
//! (`would_throttle`, `would_block`), so the report can say what enforcing would have done.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratchet_proto::v1::{CountRequest, DecideResponse, ServerCounts, StageCount, Tally, Verdict};
use tonic::Code;

use crate::deciders::DeciderPool;
use crate::metrics::{CountFlush, DeciderMetrics};

/// Servers in one flush: the deciders refuse more in one log entry
/// (`ratchet_store::command::MAX_OBSERVATIONS`); an edge holding more sends several.
const MAX_SERVERS_PER_FLUSH: usize = 10_000;

/// How long one flush may take, failover included: a write through consensus.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// What one answered message counts as: the decider's tally, its stage, the verdict given
/// and, in report-only mode, the one it would have been given.
#[derive(Clone, Debug)]
pub struct Counted {
    pub tenant: String,
    pub tally: Tally,
    pub stage: u32,
    pub verdict: Verdict,
    pub would_verdict: Option<Verdict>,
}

impl Counted {
    /// What a message answered with `response` counts as; `None` when it is not counted
    /// (no tenant's connector matched, or no verdict).
    pub fn of(response: &DecideResponse) -> Option<Counted> {
        let verdict = Verdict::try_from(response.verdict).ok()?;
        let tally = response.tally.clone()?;
        matches!(verdict, Verdict::Accept | Verdict::Throttle | Verdict::Block).then(|| Counted {
            tenant: response.tenant.clone(),
            tally,
            stage: response.stage,
            verdict,
            would_verdict: Verdict::try_from(response.would_verdict)
                .ok()
                .filter(|v| *v != Verdict::Unspecified),
        })
    }
}

pub struct MessageCounts {
    origin: u64,
    metrics: &'static DeciderMetrics,
    pending: Mutex<HashMap<(String, String), Pending>>,
    outbox: tokio::sync::Mutex<Outbox>,
}

/// One server's messages since the last flush.
struct Pending {
    build: String,
    last_seen_unix_ms: i64,
    stages: BTreeMap<u32, StageCount>,
}

struct Outbox {
    next_sequence: u64,
    /// The flush being sent, or sent without confirmation: sent again, unchanged, first.
    unconfirmed: Option<CountRequest>,
}

impl MessageCounts {
    pub fn new(metrics: &'static DeciderMetrics) -> Arc<Self> {
        Arc::new(MessageCounts {
            origin: rand::random_range(1..=u64::MAX),
            metrics,
            pending: Mutex::default(),
            outbox: tokio::sync::Mutex::new(Outbox {
                next_sequence: 1,
                unconfirmed: None,
            }),
        })
    }

    pub fn record(&self, counted: &Counted) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let server = pending
            .entry((counted.tenant.clone(), counted.tally.server_fqdn.clone()))
            .or_insert_with(|| Pending {
                build: counted.tally.build.clone(),
                last_seen_unix_ms: counted.tally.decided_at_unix_ms,
                stages: BTreeMap::new(),
            });
        if counted.tally.decided_at_unix_ms >= server.last_seen_unix_ms {
            server.last_seen_unix_ms = counted.tally.decided_at_unix_ms;
            server.build.clone_from(&counted.tally.build);
        }
        let stage = server.stages.entry(counted.stage).or_insert_with(|| StageCount {
            stage: counted.stage,
            ..StageCount::default()
        });
        match counted.verdict {
            Verdict::Throttle => stage.throttled += 1,
            Verdict::Block => stage.blocked += 1,
            _ => stage.accepted += 1,
        }
        match counted.would_verdict {
            Some(Verdict::Throttle) => stage.would_throttle += 1,
            Some(Verdict::Block) => stage.would_block += 1,
            _ => {}
        }
        self.metrics.counts_pending(pending.len());
    }

    /// Takes up to `limit` servers' counts out of the tally.
    fn take(&self, limit: usize) -> Vec<ServerCounts> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = pending.keys().take(limit).cloned().collect();
        let taken = keys
            .into_iter()
            .filter_map(|key| pending.remove_entry(&key))
            .map(|((tenant, server_fqdn), p)| ServerCounts {
                tenant,
                server_fqdn,
                build: p.build,
                last_seen_unix_ms: p.last_seen_unix_ms,
                stages: p.stages.into_values().collect(),
            })
            .collect();
        self.metrics.counts_pending(pending.len());
        taken
    }

    /// Sends everything counted so far, after any flush still unconfirmed. Stops at the
    /// first flush that fails; it goes first next time. A flush is kept until confirmed,
    /// so one cut short (the task stopped mid-call) is sent again too.
    pub async fn flush(&self, deciders: &DeciderPool) -> Result<(), tonic::Status> {
        let mut outbox = self.outbox.lock().await;
        loop {
            if outbox.unconfirmed.is_none() {
                let servers = self.take(MAX_SERVERS_PER_FLUSH);
                if servers.is_empty() {
                    return Ok(());
                }
                outbox.unconfirmed = Some(CountRequest {
                    origin: self.origin,
                    sequence: outbox.next_sequence,
                    servers,
                });
                outbox.next_sequence += 1;
            }
            let request = outbox.unconfirmed.clone().expect("set above");
            match deciders.count(request.clone(), FLUSH_DEADLINE).await {
                Ok(_) => self.metrics.count_flush(CountFlush::Committed),
                Err(status) if status.code() == Code::InvalidArgument => {
                    // Never true of what deciders tallied; sending it again would not help.
                    self.metrics.count_flush(CountFlush::Refused);
                    tracing::error!(
                        sequence = request.sequence,
                        servers = request.servers.len(),
                        error = status.message(),
                        "count flush refused; its counts are lost"
                    );
                }
                Err(status) => {
                    self.metrics.count_flush(CountFlush::Unsure);
                    tracing::warn!(
                        sequence = request.sequence,
                        error = status.message(),
                        "count flush not confirmed; it will be sent again as it is"
                    );
                    return Err(status);
                }
            }
            outbox.unconfirmed = None;
        }
    }

    /// The last flush of a front that stops, once more if the deciders do not confirm it.
    pub async fn flush_on_exit(&self, deciders: &DeciderPool) {
        if self.flush(deciders).await.is_err() && self.flush(deciders).await.is_err() {
            tracing::warn!("stopping with message counts the deciders did not confirm; they are lost");
        }
    }

    /// Flushes every `every`, forever.
    pub async fn keep_flushing(self: Arc<Self>, deciders: Arc<DeciderPool>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = self.flush(&deciders).await;
        }
    }
}
