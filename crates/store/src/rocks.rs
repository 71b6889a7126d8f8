//! The RocksDB database under one decider: column families, key encoding, and the JSON
//! encoding of stored values.
//!
//! One database holds both the Raft log (`log`, `raft`) and the state machine (`meta`,
//! `tenants`, `servers`), so that a node's data directory is one thing to back up, and
//! apply can write a batch of state and its applied log id atomically.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

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
    Corrupt { key: String, source: serde_json::Error },
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let families = [CF_LOG, CF_RAFT, CF_META, CF_TENANTS, CF_SERVERS, CF_EVENTS, CF_PENDING_EVENTS]
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families)?;
        Ok(Store { db: Arc::new(db) })
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is created at open")
    }

    pub fn get<T: DeserializeOwned>(&self, family: &str, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned_cf(self.cf(family), key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
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

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored types always serialise")
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
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
