//! openraft's state machine on RocksDB: apply, snapshots, and the in-memory caches that
//! readers share.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, SnapshotMeta};
use ratchet_policy::Timestamp;
use rocksdb::{IteratorMode, WriteBatch};

use crate::apply::Txn;
use crate::command::{Applied, Response};
use crate::model::{Connector, Tenant};
use crate::rocks::{decode, encode, Store, StoreError, CF_EVENTS, CF_META, CF_PENDING_EVENTS, CF_RAFT, CF_TENANTS, STATE_FAMILIES};
use crate::snapshot::{read_records, SnapshotWriter};
use crate::types::{read_error, write_error, Entry, LogId, Node, NodeId, StorageError, StoredMembership, TypeConfig};
use crate::view::{Caches, Notifiers, StateView, VersionedPolicy};

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const POLICY: &[u8] = b"policy";
/// The stamp of the last applied entry: time in the log never runs backwards.
const CLOCK: &[u8] = b"clock";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// Snapshots built and installed by this process, for the decider's metrics.
static SNAPSHOTS_BUILT: AtomicU64 = AtomicU64::new(0);
static SNAPSHOTS_INSTALLED: AtomicU64 = AtomicU64::new(0);

/// (built, installed) snapshots since this process started.
pub fn snapshot_counts() -> (u64, u64) {
    (SNAPSHOTS_BUILT.load(Ordering::Relaxed), SNAPSHOTS_INSTALLED.load(Ordering::Relaxed))
}

/// The span of applying one batch of entries, with its log index range.
///
/// How the apply joins the trace of the request that caused it: the proposing node stamps
/// each request with the `traceparent` of its `raft.client_write` span (on the leader, the
/// child of the `Forward` call a follower made, itself a child of that follower's Decide),
/// and that stamp travels inside the log entry. A batch whose entries carry stamps becomes
/// the child of the first one and links the others, so one trace runs from an edge's SMTP
/// session to the apply on the leader (and on every follower that applies the entry).
/// Entries with no stamp (counter flushes, blank entries, tracing off) leave the span at
/// debug level, so they add no trace of their own.
fn apply_span(entries: &[Entry]) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let first = entries.first().map_or(0, |e| e.log_id.index);
    let last = entries.last().map_or(0, |e| e.log_id.index);
    let mut parents = entries.iter().filter_map(|e| match &e.payload {
        EntryPayload::Normal(request) => request.trace_parent.as_deref(),
        _ => None,
    });
    let Some(parent) = parents.next() else {
        return tracing::debug_span!("raft.apply", first_index = first, last_index = last, entries = entries.len());
    };
    let span = tracing::info_span!("raft.apply", first_index = first, last_index = last, entries = entries.len());
    let context_of = |traceparent: &str| {
        let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
    };
    let _ = span.set_parent(context_of(parent));
    for other in parents {
        span.add_link(context_of(other).span().span_context().clone());
    }
    span
}

#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    caches: Arc<Caches>,
    notifiers: Arc<Notifiers>,
    snapshots_built: Arc<AtomicU64>,
}

impl StateMachine {
    /// Opens the state machine over a store and loads its caches.
    pub fn open(store: Store) -> Result<StateMachine, StoreError> {
        let machine = StateMachine {
            store,
            caches: Arc::default(),
            notifiers: Arc::new(Notifiers::new()),
            snapshots_built: Arc::default(),
        };
        machine.reload_caches()?;
        Ok(machine)
    }

    pub fn view(&self) -> StateView {
        StateView::new(self.store.clone(), self.caches.clone(), &self.notifiers)
    }

    fn reload_caches(&self) -> Result<(), StoreError> {
        let policy: VersionedPolicy = self.store.get(CF_META, POLICY)?.unwrap_or_default();
        let mut tenants = BTreeMap::new();
        for item in self.store.db().iterator_cf(self.store.cf(CF_TENANTS), IteratorMode::Start) {
            let (key, value) = item?;
            let tenant: Tenant = decode(&key, &value)?;
            tenants.insert(tenant.name.clone(), tenant);
        }
        let applied: Option<LogId> = self.store.get::<Option<LogId>>(CF_META, APPLIED)?.flatten();
        *self.caches.policy.write().expect("policy lock") = Arc::new(policy);
        self.publish_tenants(Arc::new(tenants));
        self.notifiers.applied.send_replace(applied.map_or(0, |id| id.index));
        Ok(())
    }

    fn publish_tenants(&self, tenants: Arc<BTreeMap<String, Tenant>>) {
        let connectors: Vec<Connector> = tenants.values().flat_map(|t| t.connectors.iter().cloned()).collect();
        *self.caches.tenants.write().expect("tenants lock") = tenants;
        self.notifiers.connectors.send_if_modified(|current| {
            let changed = **current != connectors;
            if changed {
                *current = Arc::new(connectors);
            }
            changed
        });
    }

    fn read_applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let applied = self.store.get(CF_META, APPLIED)?.flatten();
        let membership = self.store.get(CF_META, MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    fn apply_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<Vec<Response>, StoreError> {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let span = apply_span(&entries);
        let _in_span = span.enter();
        let mut txn = Txn::new(
            &self.store,
            self.caches.tenants.read().expect("tenants lock").clone(),
            self.caches.policy.read().expect("policy lock").clone(),
        );
        let mut clock: Option<Timestamp> = self.store.get(CF_META, CLOCK)?;
        let mut last_applied = None;
        let mut membership = None;
        let mut responses = Vec::new();
        for entry in entries {
            last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Ok(Applied::Nothing),
                EntryPayload::Normal(request) => {
                    let at = clock.map_or(request.at, |previous| previous.max(request.at));
                    clock = Some(at);
                    txn.apply(entry.log_id.index, at, request.command)?
                }
                EntryPayload::Membership(config) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), config));
                    Ok(Applied::Nothing)
                }
            };
            responses.push(response);
        }

        let mut batch = WriteBatch::default();
        let (meta, tenants_cf, servers_cf) = (
            self.store.cf(CF_META),
            self.store.cf(CF_TENANTS),
            self.store.cf(crate::rocks::CF_SERVERS),
        );
        for name in &txn.tenants_dirty {
            batch.put_cf(tenants_cf, name, encode(&txn.tenants[name]));
        }
        let (events_cf, pending_cf) = (self.store.cf(CF_EVENTS), self.store.cf(CF_PENDING_EVENTS));
        for (key, event) in &txn.events {
            batch.put_cf(events_cf, key, encode(event));
            if !event.delivered {
                batch.put_cf(pending_cf, key, []);
            }
        }
        for key in &txn.delivered {
            batch.delete_cf(pending_cf, key);
        }
        for (key, server) in &txn.servers {
            match server {
                Some(entry) => batch.put_cf(servers_cf, key, encode(entry)),
                None => batch.delete_cf(servers_cf, key),
            }
        }
        if txn.policy_changed {
            batch.put_cf(meta, POLICY, encode(&*txn.policy));
        }
        if let Some(membership) = &membership {
            batch.put_cf(meta, MEMBERSHIP, encode(membership));
        }
        if let Some(clock) = clock {
            batch.put_cf(meta, CLOCK, encode(&clock));
        }
        batch.put_cf(meta, APPLIED, encode(&last_applied));
        // Not synced: the log is, and a lost apply is replayed from it after a crash.
        self.store.db().write(batch)?;

        if txn.policy_changed {
            *self.caches.policy.write().expect("policy lock") = txn.policy.clone();
        }
        if !txn.tenants_dirty.is_empty() {
            self.publish_tenants(txn.tenants);
        }
        if let Some(id) = last_applied {
            self.notifiers.applied.send_replace(id.index);
        }
        Ok(responses)
    }

    /// Writes every state record, read from one RocksDB snapshot, into a snapshot blob.
    fn build(&self) -> Result<(Option<LogId>, StoredMembership, Vec<u8>), StoreError> {
        let snapshot = self.store.db().snapshot();
        let read_meta = |key: &[u8]| snapshot.get_cf(self.store.cf(CF_META), key);
        let applied: Option<LogId> = read_meta(APPLIED)?.map(|bytes| decode(APPLIED, &bytes)).transpose()?.flatten();
        let membership: StoredMembership = read_meta(MEMBERSHIP)?
            .map(|bytes| decode(MEMBERSHIP, &bytes))
            .transpose()?
            .unwrap_or_default();
        let mut writer = SnapshotWriter::new(Vec::new()).expect("writing to memory");
        for (family_index, family) in STATE_FAMILIES.iter().enumerate() {
            for item in snapshot.iterator_cf(self.store.cf(family), IteratorMode::Start) {
                let (key, value) = item?;
                writer.record(family_index as u8, &key, &value).expect("writing to memory");
            }
        }
        Ok((applied, membership, writer.finish()))
    }

    /// Replaces the whole state with a snapshot's records.
    fn install(&self, data: &[u8]) -> Result<(), StorageError> {
        let records = read_records(data, STATE_FAMILIES.len()).map_err(read_error)?;
        let mut batch = WriteBatch::default();
        for family in STATE_FAMILIES {
            let cf = self.store.cf(family);
            for item in self.store.db().iterator_cf(cf, IteratorMode::Start) {
                let (key, _) = item.map_err(read_error)?;
                batch.delete_cf(cf, key);
            }
        }
        for (family_index, key, value) in records {
            batch.put_cf(self.store.cf(STATE_FAMILIES[usize::from(family_index)]), key, value);
        }
        self.store.write_synced(batch).map_err(write_error)?;
        self.reload_caches().map_err(read_error)
    }

    fn save_current_snapshot(&self, meta: &SnapshotMeta<NodeId, Node>, data: &[u8]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT), SNAPSHOT_META, encode(meta));
        batch.put_cf(self.store.cf(CF_RAFT), SNAPSHOT_DATA, data);
        self.store.write_synced(batch).map_err(write_error)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (last_log_id, last_membership, data) = self.build().map_err(read_error)?;
        let sequence = self.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, sequence),
            None => format!("empty-{sequence}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        self.save_current_snapshot(&meta, &data)?;
        SNAPSHOTS_BUILT.fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read_applied_state().map_err(read_error)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.apply_entries(entries).map_err(write_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, Node>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.install(&data)?;
        self.save_current_snapshot(meta, &data)?;
        SNAPSHOTS_INSTALLED.fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let meta: Option<SnapshotMeta<NodeId, Node>> = self.store.get(CF_RAFT, SNAPSHOT_META).map_err(read_error)?;
        let Some(meta) = meta else { return Ok(None) };
        let data = self
            .store
            .db()
            .get_cf(self.store.cf(CF_RAFT), SNAPSHOT_DATA)
            .map_err(read_error)?
            .unwrap_or_default();
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
