//! openraft's log storage on RocksDB: entries in `log` keyed by big-endian index, and the
//! vote, committed id and purge point in `raft`. Appends and votes are synced to disk
//! before openraft is told they are durable.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::Vote;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::codec::Codec;
use crate::observe::{StorageObserver, Unobserved};
use crate::rocks::{decode, encode, log_index, log_key, Store, StoreError, CF_LOG, CF_RAFT};
use crate::types::{read_error, write_error, Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    store: Store,
    observer: &'static dyn StorageObserver,
}

impl LogStore {
    pub fn new(store: Store) -> Self {
        LogStore {
            store,
            observer: &Unobserved,
        }
    }

    /// Reports how long each append and its sync take to `observer`.
    pub fn observed_by(self, observer: &'static dyn StorageObserver) -> Self {
        LogStore { observer, ..self }
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut last = self.store.db().iterator_cf(self.store.cf(CF_LOG), IteratorMode::End);
        match last.next() {
            Some(item) => {
                let (key, value) = item.map_err(read_error)?;
                let entry: Entry = decode(&key, &value).map_err(read_error)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    /// Writes (or, for `None`, deletes) one value of `raft`.
    fn put_raft<T: Codec>(&self, key: &[u8], value: Option<&T>, synced: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        match value {
            Some(value) => batch.put_cf(self.store.cf(CF_RAFT), key, encode(value)),
            None => batch.delete_cf(self.store.cf(CF_RAFT), key),
        }
        if synced {
            self.store.write_synced(batch).map_err(write_error)
        } else {
            self.store.db().write(batch).map_err(write_error)
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let from = log_key(start);
        for item in self
            .store
            .db()
            .iterator_cf(self.store.cf(CF_LOG), IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(read_error)?;
            if !range.contains(&log_index(&key)) {
                break;
            }
            entries.push(decode(&key, &value).map_err(read_error)?);
        }
        Ok(entries)
    }
}

/// Starts a new node's log after `last` (a restored backup's last applied entry), as if
/// everything up to it had been purged into a snapshot. The node has seen `last`'s term
/// (its vote is that term's), so the new group's first election is for a later term: a
/// leader's term must be above that of every entry in its log.
pub fn start_after(store: &Store, last: LogId) -> Result<(), StoreError> {
    let seen = Vote::new(last.leader_id.term, last.leader_id.node_id);
    let mut batch = WriteBatch::default();
    batch.put_cf(store.cf(CF_RAFT), LAST_PURGED, encode(&last));
    batch.put_cf(store.cf(CF_RAFT), COMMITTED, encode(&last));
    batch.put_cf(store.cf(CF_RAFT), VOTE, encode(&seen));
    store.write_synced(batch)
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.store.get(CF_RAFT, LAST_PURGED).map_err(read_error)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_raft(VOTE, Some(vote), true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.store.get(CF_RAFT, VOTE).map_err(read_error)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_raft(COMMITTED, committed.as_ref(), false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.store.get(CF_RAFT, COMMITTED).map_err(read_error)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(self.store.cf(CF_LOG), log_key(entry.log_id.index), encode(&entry));
        }
        let started = Instant::now();
        let result = self.store.write_synced(batch);
        if result.is_ok() {
            self.observer.log_appended(started.elapsed());
        }
        let outcome = result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(outcome);
        result.map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.store.cf(CF_LOG), log_key(log_id.index), log_key(u64::MAX));
        batch.delete_cf(self.store.cf(CF_LOG), log_key(u64::MAX));
        self.store.write_synced(batch).map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT), LAST_PURGED, encode(&log_id));
        batch.delete_range_cf(self.store.cf(CF_LOG), log_key(0), log_key(log_id.index + 1));
        self.store.write_synced(batch).map_err(write_error)
    }
}
