//! The RocksDB database under one decider: column families, key encoding, memory bounds,
//! and the format check at open.
//!
//! One database holds both the Raft log (`log`, `raft`) and the state machine (`meta`,
//! `tenants`, `servers`, `events`, `pending_events`), so that a node's data directory is
//! one thing to back up, and apply can write a batch of state and its applied log id
//! atomically. Values are encoded by `codec` (protobuf behind a format byte).
//!
//! Memory is bounded and shared, not per column family: one LRU block cache
//! (`StorageOptions::block_cache_bytes`, default 128 MiB) serves every family, and one write
//! buffer manager caps all memtables together (`write_buffer_bytes`, default 64 MiB, its
//! memory charged to the same cache). Every family is LZ4-compressed.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch, WriteBufferManager,
    WriteOptions, DB,
};

use crate::codec::{self, Codec, DecodeError, FORMAT_VERSION};

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_META: &str = "meta";
pub const CF_TENANTS: &str = "tenants";
pub const CF_SERVERS: &str = "servers";
/// Every tenant's events, keyed by tenant, then the log position that raised them.
pub const CF_EVENTS: &str = "events";
/// The keys of events the webhook has not taken yet: what the leader still has to send.
pub const CF_PENDING_EVENTS: &str = "pending_events";
/// The column families that make up the state machine, in snapshot order.
pub const STATE_FAMILIES: [&str; 5] = [CF_META, CF_TENANTS, CF_SERVERS, CF_EVENTS, CF_PENDING_EVENTS];
const ALL_FAMILIES: [&str; 7] = [CF_LOG, CF_RAFT, CF_META, CF_TENANTS, CF_SERVERS, CF_EVENTS, CF_PENDING_EVENTS];

/// The format of the whole database, in `raft`: a database of another format is refused at
/// open, before anything reads it.
const FORMAT: &[u8] = b"format";

/// How much memory RocksDB may take.
#[derive(Clone, Copy, Debug)]
pub struct StorageOptions {
    /// The one block cache every column family reads through; it also holds the memtables' charge.
    pub block_cache_bytes: usize,
    /// All memtables of all column families together.
    pub write_buffer_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// A shared handle on the open database.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("stored value under {key:?} is not readable: {source}")]
    Corrupt { key: String, source: DecodeError },
    #[error("{0}")]
    Format(String),
}

impl Store {
    pub fn open(path: &Path, options: StorageOptions) -> Result<Store, StoreError> {
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(options.write_buffer_bytes, false, cache.clone());
        let family_options = || {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            let mut family = Options::default();
            family.set_block_based_table_factory(&table);
            family.set_compression_type(DBCompressionType::Lz4);
            family.set_write_buffer_size(options.write_buffer_bytes / 4);
            family
        };
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_write_buffer_manager(&write_buffers);
        let families = ALL_FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, family_options()));
        let db = DB::open_cf_descriptors(&db_options, path, families)?;
        let store = Store { db: Arc::new(db) };
        store.check_format(path)?;
        Ok(store)
    }

    /// Refuses a database written in another format; stamps a new one with this one's.
    fn check_format(&self, path: &Path) -> Result<(), StoreError> {
        match self.db.get_cf(self.cf(CF_RAFT), FORMAT)?.as_deref() {
            Some([version]) if *version == FORMAT_VERSION => Ok(()),
            Some(other) => Err(StoreError::Format(format!(
                "{} was written in storage format {other:?}; this release reads format {FORMAT_VERSION} only: \
                 run the release that wrote it, or restore this node from a snapshot (`ratchet restore`)",
                path.display()
            ))),
            None if self.is_empty()? => {
                let mut batch = WriteBatch::default();
                batch.put_cf(self.cf(CF_RAFT), FORMAT, [FORMAT_VERSION]);
                self.write_synced(batch)
            }
            None => Err(StoreError::Format(format!(
                "{} holds data of an earlier release (JSON records, before storage format {FORMAT_VERSION}); \
                 this release cannot read it: run the release that wrote it, or restore this node from a snapshot \
                 (`ratchet restore`)",
                path.display()
            ))),
        }
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        for family in ALL_FAMILIES {
            if let Some(item) = self.db.iterator_cf(self.cf(family), rocksdb::IteratorMode::Start).next() {
                item?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is created at open")
    }

    pub fn get<T: Codec>(&self, family: &str, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned_cf(self.cf(family), key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every value under a key prefix, in key order, with its key.
    pub fn scan_prefix<T: Codec>(&self, family: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut found = Vec::new();
        self.for_each_with_prefix(family, prefix, |key, value| found.push((key.to_vec(), value)))?;
        Ok(found)
    }

    /// Every key under a prefix, in key order.
    pub fn keys_with_prefix(&self, family: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(family), prefix) {
            let (key, _) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key.into_vec());
        }
        Ok(keys)
    }

    /// Writes a batch, synced to disk before returning.
    pub fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        Ok(self.db.write_opt(batch, &options)?)
    }

    /// Total size of the live SST files, for metrics.
    pub fn live_data_bytes(&self) -> u64 {
        self.db
            .property_int_value(rocksdb::properties::TOTAL_SST_FILES_SIZE)
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

pub fn encode<T: Codec>(value: &T) -> Vec<u8> {
    codec::encode(value)
}

pub fn decode<T: Codec>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// The key of a server: `tenant NUL fqdn`. Tenant names cannot hold NUL, so a tenant's
/// servers are exactly the keys under the prefix `tenant NUL`.
pub fn server_key(tenant: &str, server_fqdn: &str) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(server_fqdn.as_bytes());
    key
}

pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 1);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key
}

/// The first key after every key of the tenant that `key` is under (its name, then 0x01
/// where its prefix has NUL): `[tenant_prefix(t), after_tenant(..))` is all of tenant t's keys.
pub fn after_tenant(key: &[u8]) -> Vec<u8> {
    let name = key.split(|b| *b == 0).next().unwrap_or(key);
    let mut after = name.to_vec();
    after.push(1);
    after
}

/// The key of an event: its tenant's prefix, then the log index and rank that raised it,
/// big-endian, so that a tenant's events iterate in the order they were raised.
pub fn event_key(tenant: &str, index: u64, rank: u32) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(&index.to_be_bytes());
    key.extend_from_slice(&rank.to_be_bytes());
    key
}

/// Log indexes are stored big-endian so that RocksDB's byte order is log order.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> u64 {
    u64::from_be_bytes(key.try_into().expect("log keys are 8 bytes"))
}
