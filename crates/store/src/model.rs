//! The records the state machine keeps: tenants with their connectors and pause ledger,
//! and servers with their episode and counters.

use std::collections::{BTreeMap, BTreeSet};

pub use ratchet_policy::connectors::Connector;
use ratchet_policy::{PauseLedger, ServerRecord, TenantMode, Timestamp};
use serde::{Deserialize, Serialize};

/// How many days of per-tenant daily counts the report keeps.
pub const DAILY_COUNT_DAYS: usize = 90;

/// Every tenant by name: a persistent map, so that a copy costs a pointer and a change
/// copies one path of it and the one tenant, whatever the number of tenants.
pub type Tenants = imbl::OrdMap<String, Tenant>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub created_at: Timestamp,
    pub connectors: Vec<Connector>,
    pub pauses: PauseLedger,
    /// Messages per UTC day ("2026-11-23"), for the report's chart. Oldest days roll off.
    #[serde(default)]
    pub daily: BTreeMap<String, Counts>,
    /// Where the leader POSTs this tenant's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The key of the signature (HMAC-SHA256 of the body) on every POST to the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Keys of time-driven notices already raised for the tenant (a pause's natural end).
    #[serde(default)]
    pub notices: BTreeSet<String>,
    /// Whether its servers' verdicts are given or only reported (`ctl tenant mode`).
    #[serde(default)]
    pub mode: TenantMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    FirstDetected,
    Relapsed,
    StageEntered,
    ThrottlingSoon,
    BlockingSoon,
    Remediated,
    PauseStarted,
    PauseExtended,
    PauseEnded,
    /// A scheduled policy will enforce servers of the tenant that are not enforced today.
    PolicyAnnounced,
    /// The tenant's enforcement mode changed (`ctl tenant mode`).
    ModeChanged,
    /// A connector was removed: mail from its claim is no longer the tenant's.
    ConnectorRemoved,
    /// The retention sweep forgot servers that were not seen for `forget_after_days`.
    ServersForgotten,
}

/// One notification, as the message centre lists it and the webhook receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The same on every node and every retry: receivers de-duplicate on it.
    pub id: String,
    pub tenant: String,
    pub at: Timestamp,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fqdn: Option<String>,
    pub message: String,
    #[serde(default)]
    pub delivered: bool,
}

/// Messages accepted, throttled (4xx) and blocked (5xx); and of the accepted, those that
/// a report-only mode let through and would have throttled or blocked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub accepted: u64,
    pub throttled: u64,
    pub blocked: u64,
    /// Left out of the JSON while zero, as they are for a tenant that never reported only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub would_throttle: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub would_block: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.accepted += other.accepted;
        self.throttled += other.throttled;
        self.blocked += other.blocked;
        self.would_throttle += other.would_throttle;
        self.would_block += other.would_block;
    }
}

/// One server: what the rules need, and its counters per stage ("0" outside any stage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerEntry {
    pub record: ServerRecord,
    #[serde(default)]
    pub counters: BTreeMap<u32, Counts>,
    /// Keys of time-driven notices already raised for the current episode (stage entered,
    /// throttling or blocking soon); cleared when a new episode starts.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub notices: BTreeSet<String>,
    /// Set while the server is decommissioned: it is out of the report, and evidence older
    /// than this (a late flush) cannot bring it back; a later sighting starts it afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommissioned_at: Option<Timestamp>,
}

impl ServerEntry {
    /// A server seen for the first time.
    pub fn new(tenant: &str, server_fqdn: &str, build: &str, at: Timestamp) -> Self {
        ServerEntry {
            record: ServerRecord {
                tenant: tenant.to_owned(),
                server_fqdn: server_fqdn.to_owned(),
                build: build.to_owned(),
                last_seen: at,
                episode: None,
            },
            counters: BTreeMap::new(),
            notices: BTreeSet::new(),
            decommissioned_at: None,
        }
    }

    pub fn is_decommissioned(&self) -> bool {
        self.decommissioned_at.is_some()
    }
}

/// The last counter flush of one decider (`Command::Observe`) or one edge process
/// (`Command::Count`) that apply counted, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastFlush {
    pub flush_id: u64,
    /// The stamp of the entry that counted it; `None` in records written before it was kept.
    pub at: Option<Timestamp>,
}

/// Where a decider's last counted flush is kept, in `meta`.
pub fn flush_key(node_id: u64) -> Vec<u8> {
    [b"flush/".as_slice(), &node_id.to_be_bytes()].concat()
}

/// Where an edge process's last counted flush is kept, in `meta`.
pub fn count_key(origin: u64) -> Vec<u8> {
    [COUNT_PREFIX, &origin.to_be_bytes()].concat()
}

pub const COUNT_PREFIX: &[u8] = b"count/";

/// One line of the audit trail: who did what, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// The log index of the entry: unique, and the order of the trail.
    pub index: u64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub tenant: Option<String>,
    /// "ok", or what refused it.
    pub outcome: String,
}

/// Where the audit record of entry `index` is kept, in `meta`; in index order.
pub fn audit_key(index: u64) -> Vec<u8> {
    let mut key = AUDIT_PREFIX.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub const AUDIT_PREFIX: &[u8] = b"audit/";

impl Tenant {
    pub fn new(name: String, created_at: Timestamp) -> Self {
        Tenant {
            name,
            created_at,
            connectors: Vec::new(),
            pauses: PauseLedger::default(),
            daily: BTreeMap::new(),
            webhook_url: None,
            webhook_secret: None,
            notices: BTreeSet::new(),
            mode: TenantMode::Enforce,
        }
    }

    pub fn count_day(&mut self, day: String, counts: Counts) {
        self.daily.entry(day).or_default().add(counts);
        while self.daily.len() > DAILY_COUNT_DAYS {
            self.daily.pop_first();
        }
    }
}
