//! What the storage layer reports about its own work, for whoever keeps metrics: how long
//! a log append with its fsync takes, how long applying a batch of entries takes, and how
//! big the snapshots it builds and installs are, and how many records retention swept.
//!
//! The store does not depend on a metrics library: the decider hands its Prometheus
//! metrics in as a [`StorageObserver`] (`LogStore::observed_by`,
//! `StateMachine::observed_by`). Storage nobody observes (`ratchet restore`, tests)
//! reports to [`Unobserved`].

use std::time::Duration;

pub trait StorageObserver: Send + Sync {
    /// A batch of log entries was written and synced to disk.
    fn log_appended(&self, took: Duration);
    /// A batch of committed entries was applied to the state machine.
    fn applied(&self, took: Duration);
    /// A snapshot of the applied state was built; its file is `bytes` long.
    fn snapshot_built(&self, bytes: u64);
    /// A snapshot received from the leader was installed; its file is `bytes` long.
    fn snapshot_installed(&self, bytes: u64);
    /// A retention sweep step deleted these servers, events and count-flush records.
    fn swept(&self, servers: u64, events: u64, count_flushes: u64);
}

/// The observer of storage that nobody watches.
pub struct Unobserved;

impl StorageObserver for Unobserved {
    fn log_appended(&self, _took: Duration) {}
    fn applied(&self, _took: Duration) {}
    fn snapshot_built(&self, _bytes: u64) {}
    fn snapshot_installed(&self, _bytes: u64) {}
    fn swept(&self, _servers: u64, _events: u64, _count_flushes: u64) {}
}
