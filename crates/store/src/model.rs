//! The records the state machine keeps: tenants with their connectors and pause ledger,
//! and servers with their episode and counters.

use std::collections::BTreeMap;

pub use ratchet_policy::connectors::Connector;
use ratchet_policy::{PauseLedger, ServerRecord, Timestamp};
use serde::{Deserialize, Serialize};

/// How many days of per-tenant daily counts the report keeps.
pub const DAILY_COUNT_DAYS: usize = 90;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub created_at: Timestamp,
    pub connectors: Vec<Connector>,
    pub pauses: PauseLedger,
    /// Messages per UTC day ("2026-11-23"), for the report's chart. Oldest days roll off.
    #[serde(default)]
    pub daily: BTreeMap<String, Counts>,
}

/// Messages accepted, throttled (4xx) and blocked (5xx).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub accepted: u64,
    pub throttled: u64,
    pub blocked: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.accepted += other.accepted;
        self.throttled += other.throttled;
        self.blocked += other.blocked;
    }
}

/// One server: what the rules need, and its counters per stage ("0" outside any stage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerEntry {
    pub record: ServerRecord,
    #[serde(default)]
    pub counters: BTreeMap<u32, Counts>,
}

impl Tenant {
    pub fn new(name: String, created_at: Timestamp) -> Self {
        Tenant {
            name,
            created_at,
            connectors: Vec::new(),
            pauses: PauseLedger::default(),
            daily: BTreeMap::new(),
        }
    }

    pub fn count_day(&mut self, day: String, counts: Counts) {
        self.daily.entry(day).or_default().add(counts);
        while self.daily.len() > DAILY_COUNT_DAYS {
            self.daily.pop_first();
        }
    }
}
