//! The decider's Prometheus metrics, served at `/metrics` on its HTTP listener.
//!
//! Labels are bounded: verdict (3 values), stage (the policy's few stages, 0 for none),
//! write outcome (3), and, for replication lag only, the peer's node name (bounded by the
//! group's size). Never a tenant or a server: those live in the report, not in metrics.
//!
//! Event counters (decisions, writes) are recorded where they happen, in one process-wide
//! set; storage reports its own work (log append and apply durations, snapshot sizes)
//! through `ratchet_store::StorageObserver`, which these metrics implement; Raft's gauges
//! are read from openraft's metrics at scrape time, and a small task counts the elections
//! and leader changes it observes.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use ratchet_policy::Verdict;
use ratchet_store::types::Raft;
use ratchet_store::{StateView, StorageObserver};

type Labels = Vec<(&'static str, String)>;

pub struct DeciderMetrics {
    registry: Registry,
    decisions: Family<Labels, Counter>,
    decide_seconds: Histogram,
    writes: Family<Labels, Counter>,
    is_leader: Gauge,
    has_leader: Gauge,
    clock_skew_seconds: Gauge<f64, AtomicU64>,
    term: Gauge,
    last_log_index: Gauge,
    last_applied_index: Gauge,
    replication_lag: Family<Labels, Gauge>,
    snapshots_built: Counter,
    snapshots_installed: Counter,
    snapshot_bytes: Family<Labels, Gauge>,
    log_append_seconds: Histogram,
    apply_seconds: Histogram,
    elections: Counter,
    sightings_queued: Gauge,
    sightings_dropped: Counter,
    sightings_committed: Counter,
    leader_changes: Counter,
    refused_calls: Family<Labels, Counter>,
    retention_swept: Family<Labels, Counter>,
    live_data_bytes: Gauge<i64, AtomicI64>,
}

/// The outcome of one write, for `ratchet_decider_writes_total{outcome}`.
#[derive(Clone, Copy)]
pub enum WriteOutcome {
    /// Committed through this node's Raft (it led).
    Proposed,
    /// Committed through the leader, forwarded by this node.
    Forwarded,
    /// Not made: no leader in time, or the group unavailable.
    Failed,
}

/// `ratchet_build_info{version}` (the edge has `ratchet_edge_build_info`): which release
/// runs where, as SREs look for first during a rollout.
pub fn build_info() -> Family<Labels, Gauge> {
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1);
    info
}

/// The process's decider metrics.
pub fn metrics() -> &'static DeciderMetrics {
    static METRICS: OnceLock<DeciderMetrics> = OnceLock::new();
    METRICS.get_or_init(DeciderMetrics::new)
}

impl DeciderMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ratchet");
        let m = DeciderMetrics {
            registry: Registry::default(),
            decisions: Family::default(),
            decide_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            writes: Family::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            clock_skew_seconds: Gauge::default(),
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            last_applied_index: Gauge::default(),
            replication_lag: Family::default(),
            snapshots_built: Counter::default(),
            snapshots_installed: Counter::default(),
            snapshot_bytes: Family::default(),
            log_append_seconds: Histogram::new(storage_buckets()),
            apply_seconds: Histogram::new(storage_buckets()),
            elections: Counter::default(),
            sightings_queued: Gauge::default(),
            sightings_dropped: Counter::default(),
            sightings_committed: Counter::default(),
            leader_changes: Counter::default(),
            refused_calls: Family::default(),
            retention_swept: Family::default(),
            live_data_bytes: Gauge::default(),
        };
        registry.register(
            "decider_decisions",
            "Decide answers by verdict and enforcement stage (0: none)",
            m.decisions.clone(),
        );
        registry.register_with_unit(
            "decider_decide_duration",
            "Time to answer one Decide, consensus included when the sighting is new",
            Unit::Seconds,
            m.decide_seconds.clone(),
        );
        registry.register(
            "decider_writes",
            "Writes by outcome: proposed here (leader), forwarded to the leader, failed",
            m.writes.clone(),
        );
        registry.register("build_info", "1, labelled with the version of the running binary", build_info());
        registry.register("raft_is_leader", "1 if this node is the Raft leader", m.is_leader.clone());
        registry.register(
            "raft_has_leader",
            "1 if this node knows a leader (itself included)",
            m.has_leader.clone(),
        );
        registry.register_with_unit(
            "clock_skew",
            "This node's clock minus the group's median clock, as last measured",
            Unit::Seconds,
            m.clock_skew_seconds.clone(),
        );
        registry.register("raft_term", "The current Raft term", m.term.clone());
        registry.register(
            "raft_last_log_index",
            "Index of the last entry in this node's log",
            m.last_log_index.clone(),
        );
        registry.register(
            "raft_last_applied_index",
            "Index of the last entry applied to this node's state machine",
            m.last_applied_index.clone(),
        );
        registry.register(
            "raft_replication_lag",
            "Entries the leader has that a peer has not matched (leader only), by peer name",
            m.replication_lag.clone(),
        );
        registry.register("raft_snapshots_built", "State machine snapshots built", m.snapshots_built.clone());
        registry.register(
            "raft_snapshots_installed",
            "Snapshots installed from the leader",
            m.snapshots_installed.clone(),
        );
        registry.register_with_unit(
            "raft_snapshot_size",
            "Size of the last snapshot this node built or installed, by kind (built, installed)",
            Unit::Bytes,
            m.snapshot_bytes.clone(),
        );
        registry.register_with_unit(
            "store_log_append_duration",
            "Time to write one batch of Raft log entries to RocksDB and sync it to disk",
            Unit::Seconds,
            m.log_append_seconds.clone(),
        );
        registry.register_with_unit(
            "store_apply_duration",
            "Time to apply one batch of committed entries to the state machine",
            Unit::Seconds,
            m.apply_seconds.clone(),
        );
        registry.register(
            "decider_sightings_queued",
            "Servers whose episode change waits to be committed in the background",
            m.sightings_queued.clone(),
        );
        registry.register(
            "decider_sightings_dropped",
            "Episode changes dropped because the queue was full (the server's next message offers them again)",
            m.sightings_dropped.clone(),
        );
        registry.register(
            "decider_sightings_committed",
            "Episode changes committed in the background",
            m.sightings_committed.clone(),
        );
        registry.register(
            "raft_elections",
            "Term changes observed (each one an election)",
            m.elections.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "Changes of the known leader observed",
            m.leader_changes.clone(),
        );
        registry.register(
            "decider_refused_calls",
            "gRPC calls refused before any handler ran, by status (unauthenticated, permission_denied)",
            m.refused_calls.clone(),
        );
        registry.register(
            "retention_swept_records",
            "Records the retention sweep deleted on this node, by kind (servers, events, count_flushes)",
            m.retention_swept.clone(),
        );
        registry.register_with_unit(
            "store_live_data",
            "Estimated live data in RocksDB",
            Unit::Bytes,
            m.live_data_bytes.clone(),
        );
        DeciderMetrics { registry, ..m }
    }

    pub fn decided(&self, verdict: Verdict, stage: u32, took: Duration) {
        let verdict = match verdict {
            Verdict::Accept => "accept",
            Verdict::Throttle => "throttle",
            Verdict::Block => "block",
        };
        self.decisions
            .get_or_create(&vec![("verdict", verdict.to_owned()), ("stage", stage.to_string())])
            .inc();
        self.decide_seconds.observe(took.as_secs_f64());
    }

    pub fn refused_call(&self, code: tonic::Code) {
        let code = match code {
            tonic::Code::Unauthenticated => "unauthenticated",
            tonic::Code::PermissionDenied => "permission_denied",
            _ => "other",
        };
        self.refused_calls.get_or_create(&vec![("code", code.to_owned())]).inc();
    }

    pub fn sightings_queued(&self, servers: usize) {
        self.sightings_queued.set(servers as i64);
    }

    pub fn sighting_dropped(&self) {
        self.sightings_dropped.inc();
    }

    pub fn sightings_committed(&self, servers: usize) {
        self.sightings_committed.inc_by(servers as u64);
    }

    pub fn clock_skew(&self, skew: chrono::TimeDelta) {
        self.clock_skew_seconds.set(skew.as_seconds_f64());
    }

    pub fn write(&self, outcome: WriteOutcome) {
        let outcome = match outcome {
            WriteOutcome::Proposed => "proposed",
            WriteOutcome::Forwarded => "forwarded",
            WriteOutcome::Failed => "failed",
        };
        self.writes.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }

    fn snapshot_size(&self, kind: &str, bytes: u64) {
        self.snapshot_bytes
            .get_or_create(&vec![("kind", kind.to_owned())])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Reads Raft's and the store's current state into the gauges.
    fn observe(&self, raft: &Raft, view: &StateView) {
        let metrics = raft.metrics().borrow().clone();
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        self.is_leader.set(i64::from(metrics.current_leader == Some(metrics.id)));
        self.has_leader.set(i64::from(metrics.current_leader.is_some()));
        self.term.set(metrics.current_term as i64);
        self.last_log_index.set(last_log_index as i64);
        self.last_applied_index.set(metrics.last_applied.map_or(0, |id| id.index) as i64);
        self.replication_lag.clear();
        if let Some(replication) = &metrics.replication {
            let membership = metrics.membership_config.membership();
            for (id, matched) in replication.iter().filter(|(id, _)| **id != metrics.id) {
                let name = membership.get_node(id).map_or_else(|| id.to_string(), |node| node.name.clone());
                let matched = matched.map_or(0, |log_id| log_id.index);
                self.replication_lag
                    .get_or_create(&vec![("peer", name)])
                    .set(last_log_index.saturating_sub(matched) as i64);
            }
        }
        self.live_data_bytes.set(view.store().live_data_bytes() as i64);
    }

    /// The OpenMetrics text of every metric, with Raft's state as of now.
    pub fn render(&self, raft: &Raft, view: &StateView) -> String {
        self.observe(raft, view);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

impl StorageObserver for DeciderMetrics {
    fn log_appended(&self, took: Duration) {
        self.log_append_seconds.observe(took.as_secs_f64());
    }

    fn applied(&self, took: Duration) {
        self.apply_seconds.observe(took.as_secs_f64());
    }

    fn snapshot_built(&self, bytes: u64) {
        self.snapshots_built.inc();
        self.snapshot_size("built", bytes);
    }

    fn snapshot_installed(&self, bytes: u64) {
        self.snapshots_installed.inc();
        self.snapshot_size("installed", bytes);
    }

    fn swept(&self, servers: u64, events: u64, count_flushes: u64) {
        for (kind, records) in [("servers", servers), ("events", events), ("count_flushes", count_flushes)] {
            self.retention_swept.get_or_create(&vec![("kind", kind.to_owned())]).inc_by(records);
        }
    }
}

/// Buckets for storage work: from 100 µs (a sync on a fast SSD, a small apply) to about
/// 3 s (a disk in trouble).
fn storage_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

/// The content type of [`DeciderMetrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counts the elections (term changes) and leader changes this node observes, forever.
pub async fn watch_raft(raft: Raft) {
    let mut changes = raft.metrics();
    let (mut term, mut leader) = {
        let m = changes.borrow();
        (m.current_term, m.current_leader)
    };
    while changes.changed().await.is_ok() {
        let (now_term, now_leader) = {
            let m = changes.borrow();
            (m.current_term, m.current_leader)
        };
        if now_term != term {
            metrics().elections.inc();
            term = now_term;
        }
        if now_leader.is_some() && now_leader != leader {
            metrics().leader_changes.inc();
        }
        if now_leader.is_some() {
            leader = now_leader;
        }
    }
}
