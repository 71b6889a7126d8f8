//! The decider's tunables, from `--config FILE` (TOML). Every key has a default; an
//! unknown key or a bad value stops start-up with the key named.

use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeciderConfig {
    /// Leader heartbeat, milliseconds. It is also how long the leader waits for a
    /// follower's answer to each replication message, so it must exceed the longest
    /// round trip between deciders: across regions 100-150 ms apart, use 300 with an
    /// election timeout of 1,200-2,400 (and a max_staleness above the latter).
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in [min, max] ms starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log before it) every this many applied entries.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind the last snapshot, for followers that lag a little.
    pub keep_entries_after_snapshot: u64,
    /// How long the leader waits for each snapshot chunk a lagging follower or a new
    /// learner receives, the last one included, whose answer comes once the follower has
    /// installed the whole snapshot: seconds per million servers. A leader that gives up
    /// sends the whole snapshot again.
    pub snapshot_install_timeout_ms: u64,
    /// Ignored: deciders no longer count messages, edges do (the edge's `count_flush_ms`).
    /// Still accepted, with a warning at start, so that a config written for an older
    /// release loads.
    pub counter_flush_ms: Option<u64>,
    /// Writes give up after this long without a leader.
    pub write_timeout_ms: u64,
    /// How often the leader looks for notices the clock brought about (stage entered,
    /// throttling or blocking soon, a pause's end).
    pub notify_scan_ms: u64,
    /// How often the leader starts a retention sweep (the policy's `[retention]`).
    pub sweep_every_ms: u64,
    /// A node gives verdicts only from state no older than this: it must have heard from a
    /// leader within it and applied what that leader had committed (see `freshness`).
    pub max_staleness_ms: u64,
    /// A node whose clock is further than this from the group's median stops serving and
    /// leading until it is back (see `skew`).
    pub max_clock_skew_ms: u64,
    /// Servers whose episode change may wait to be committed in the background at once.
    pub sightings_queue: usize,
    /// RocksDB's one block cache, shared by every column family; it also holds the
    /// memtables' charge (see `rocksdb_write_buffer_mb`).
    pub rocksdb_block_cache_mb: usize,
    /// All RocksDB memtables together.
    pub rocksdb_write_buffer_mb: usize,
    /// Lets tenants' webhooks reach loopback, private and link-local addresses (off: a
    /// tenant's URL must not reach into the provider's own network).
    pub webhook_allow_private: bool,
}

impl Default for DeciderConfig {
    fn default() -> Self {
        DeciderConfig {
            heartbeat_ms: 150,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_entries: 20_000,
            keep_entries_after_snapshot: 5_000,
            snapshot_install_timeout_ms: 60_000,
            counter_flush_ms: None,
            write_timeout_ms: 5_000,
            notify_scan_ms: 60_000,
            sweep_every_ms: 3_600_000,
            max_staleness_ms: 5_000,
            max_clock_skew_ms: 500,
            sightings_queue: 100_000,
            rocksdb_block_cache_mb: 128,
            rocksdb_write_buffer_mb: 64,
            webhook_allow_private: false,
        }
    }
}

impl DeciderConfig {
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: DeciderConfig = toml::from_str(text)?;
        config.raft_config()?;
        for (key, value) in [
            ("snapshot_install_timeout_ms", config.snapshot_install_timeout_ms),
            ("notify_scan_ms", config.notify_scan_ms),
            ("sweep_every_ms", config.sweep_every_ms),
            ("max_staleness_ms", config.max_staleness_ms),
            ("max_clock_skew_ms", config.max_clock_skew_ms),
            ("sightings_queue", config.sightings_queue as u64),
            ("rocksdb_block_cache_mb", config.rocksdb_block_cache_mb as u64),
            ("rocksdb_write_buffer_mb", config.rocksdb_write_buffer_mb as u64),
        ] {
            if value == 0 {
                anyhow::bail!("{key} must be at least 1");
            }
        }
        Ok(config)
    }

    pub fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: "ratchet".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: self.snapshot_install_timeout_ms,
            ..Default::default()
        };
        Ok(config.validate()?)
    }

    pub fn storage_options(&self) -> ratchet_store::StorageOptions {
        ratchet_store::StorageOptions {
            block_cache_bytes: self.rocksdb_block_cache_mb << 20,
            write_buffer_bytes: self.rocksdb_write_buffer_mb << 20,
        }
    }

    pub fn max_staleness(&self) -> Duration {
        Duration::from_millis(self.max_staleness_ms)
    }

    pub fn max_clock_skew(&self) -> Duration {
        Duration::from_millis(self.max_clock_skew_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// Snapshot chunks travel as raw bytes, one gRPC message each.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;
