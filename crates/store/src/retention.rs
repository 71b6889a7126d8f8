//! The retention sweep: what a `Sweep` entry deletes, found by reading the stored state.
//!
//! Retention is part of the policy (`[retention]`): servers not seen for
//! `forget_after_days` are forgotten (out of the report; a later sighting starts a new
//! clock, as after a decommission), events older than `keep_events_days` are deleted, and
//! so are the count-flush records (`count/<origin>`) of edges not heard from for
//! `forget_after_days`: an edge draws a new origin each time it starts, so those records
//! would otherwise grow for ever.
//!
//! A pass is a series of `Sweep` entries the leader proposes, each looking at no more than
//! its `budget` of records, in a fixed order: events, servers, count flushes, each in key
//! order. Each entry answers where the next one goes on (a `SweepCursor`), so the work of
//! one entry is bounded however large the state. What an entry deletes depends only on the
//! state it is applied to, its own stamp and the policy in force at that stamp, so every
//! node deletes the same records. Apply runs a `Sweep` in a write batch of its own (see
//! `Command::applies_alone`), so the stored state it reads is the whole state.

use std::collections::BTreeMap;

use ratchet_policy::{Retention, Timestamp};
use serde::{Deserialize, Serialize};

use crate::model::{Event, LastFlush, ServerEntry, COUNT_PREFIX};
use crate::rocks::{after_tenant, decode, Store, StoreError, CF_EVENTS, CF_META, CF_SERVERS};

/// The most records one `Sweep` entry may look at (each deletion is one of them).
pub const MAX_SWEEP_BUDGET: u32 = 10_000;
/// Servers a `servers_forgotten` event names; it counts the rest.
const NAMED_IN_EVENT: usize = 20;

/// The records a pass looks at, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepPhase {
    Events,
    Servers,
    CountFlushes,
}

impl SweepPhase {
    /// The column family and key prefix of the phase's records.
    fn records(self) -> (&'static str, &'static [u8]) {
        match self {
            SweepPhase::Events => (CF_EVENTS, b"".as_slice()),
            SweepPhase::Servers => (CF_SERVERS, b"".as_slice()),
            SweepPhase::CountFlushes => (CF_META, COUNT_PREFIX),
        }
    }

    fn next(self) -> Option<SweepPhase> {
        match self {
            SweepPhase::Events => Some(SweepPhase::Servers),
            SweepPhase::Servers => Some(SweepPhase::CountFlushes),
            SweepPhase::CountFlushes => None,
        }
    }
}

/// Where a pass goes on: the first key of `phase`'s records still to look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepCursor {
    pub phase: SweepPhase,
    pub from: Vec<u8>,
}

impl SweepCursor {
    fn start() -> SweepCursor {
        SweepCursor {
            phase: SweepPhase::Events,
            from: Vec::new(),
        }
    }
}

/// What one sweep step found to delete (and to stamp), and where the next step starts.
#[derive(Debug, Default)]
pub(crate) struct SweepFindings {
    /// Keys of events (in `events`, and `pending_events` if undelivered) to delete.
    pub events: Vec<Vec<u8>>,
    /// Keys of servers to delete: live ones not seen in time, and decommission
    /// tombstones older than the horizon.
    pub servers: Vec<Vec<u8>>,
    /// The live servers forgotten, by tenant: each tenant is told.
    pub forgotten: BTreeMap<String, Vec<String>>,
    /// Keys of count-flush records to delete.
    pub count_flushes: Vec<Vec<u8>>,
    /// Count-flush records written before their instant was kept: stamped with the sweep's.
    pub unstamped: Vec<(Vec<u8>, LastFlush)>,
    pub resume: Option<SweepCursor>,
}

/// Looks at up to `budget` records from `resume` (or from the start) and finds what the
/// policy's `retention` deletes at `now`.
pub(crate) fn find(
    store: &Store,
    retention: &Retention,
    now: Timestamp,
    resume: Option<SweepCursor>,
    budget: u32,
) -> Result<SweepFindings, StoreError> {
    let (forget_before, events_before) = (retention.forget_before(now), retention.events_before(now));
    let mut found = SweepFindings::default();
    let mut cursor = resume.unwrap_or_else(SweepCursor::start);
    let mut left = budget;
    loop {
        let (family, prefix) = cursor.phase.records();
        let mut records = store.db().raw_iterator_cf(store.cf(family));
        records.seek(cursor.from.as_slice().max(prefix));
        while let Some(key) = records.key().filter(|key| key.starts_with(prefix)).map(<[u8]>::to_vec) {
            if left == 0 {
                found.resume = Some(SweepCursor {
                    phase: cursor.phase,
                    from: key,
                });
                return Ok(found);
            }
            left -= 1;
            let value = records.value().expect("a valid iterator has a value");
            match cursor.phase {
                SweepPhase::Events => {
                    let event: Event = decode(&key, value)?;
                    if event.at < events_before {
                        found.events.push(key);
                        records.next();
                    } else {
                        // A tenant's events are in the order they were raised, and time in
                        // the log never runs backwards: the rest of this tenant's are newer.
                        records.seek(after_tenant(&key));
                    }
                }
                SweepPhase::Servers => {
                    let entry: ServerEntry = decode(&key, value)?;
                    match entry.decommissioned_at {
                        Some(gone) if gone < forget_before => found.servers.push(key),
                        Some(_) => {}
                        None if entry.record.last_seen < forget_before => {
                            let record = entry.record;
                            found.forgotten.entry(record.tenant).or_default().push(record.server_fqdn);
                            found.servers.push(key);
                        }
                        None => {}
                    }
                    records.next();
                }
                SweepPhase::CountFlushes => {
                    let flush: LastFlush = decode(&key, value)?;
                    match flush.at {
                        None => found.unstamped.push((key, flush)),
                        Some(at) if at < forget_before => found.count_flushes.push(key),
                        Some(_) => {}
                    }
                    records.next();
                }
            }
        }
        records.status()?;
        match cursor.phase.next() {
            Some(phase) => cursor = SweepCursor { phase, from: Vec::new() },
            None => return Ok(found),
        }
    }
}

/// The message of a tenant's `servers_forgotten` event.
pub(crate) fn forgotten_message(servers: &[String], retention: &Retention) -> String {
    let named = servers[..servers.len().min(NAMED_IN_EVENT)].join(", ");
    let more = match servers.len().saturating_sub(NAMED_IN_EVENT) {
        0 => String::new(),
        rest => format!(" and {rest} more"),
    };
    format!(
        "{} not seen for {} forgotten: {named}{more}",
        counted(servers.len(), "server"),
        counted(retention.forget_after_days as usize, "day")
    )
}

/// "1 server", "2 servers".
fn counted(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}
