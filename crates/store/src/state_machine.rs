//! openraft's state machine on RocksDB: apply, snapshots, and the in-memory caches that
//! readers share.
//!
//! Snapshots are files in the node's snapshot directory (format: `snapshot`), built by
//! streaming a RocksDB point-in-time view to disk and installed by streaming a file back,
//! so memory stays flat however large the state. Installing replaces the state in several
//! write batches; a marker in `raft` says an install is under way, so a node that crashes
//! in the middle finishes the install from the same file when it opens again, and never
//! runs on half a state.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, Membership};
use ratchet_policy::connectors::ConnectorTable;
use ratchet_policy::Timestamp;
use rocksdb::{IteratorMode, WriteBatch};

use crate::apply::Txn;
use crate::command::{Applied, Response};
use crate::connector_feed::ConnectorFeed;
use crate::model::{audit_key, Tenant, Tenants};
use crate::observe::{StorageObserver, Unobserved};
use crate::rocks::{
    decode, encode, Store, StoreError, CF_EVENTS, CF_META, CF_PENDING_EVENTS, CF_RAFT, CF_SERVERS, CF_TENANTS, STATE_FAMILIES,
};
use crate::schedule::PolicySchedule;
use crate::snapshot::{verify, SnapshotFormatError, SnapshotReader, SnapshotWriter};
use crate::types::{read_error, write_error, Entry, LogId, Node, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::view::{Caches, Notifiers, StateView};

/// In meta: the log id of the last applied entry.
pub(crate) const APPLIED_KEY: &[u8] = b"applied";
const APPLIED: &[u8] = APPLIED_KEY;
const MEMBERSHIP: &[u8] = b"membership";
const POLICY: &[u8] = b"policy";
/// A policy scheduled to take over from `POLICY` at its `effective_at`; absent when none is.
const PENDING_POLICY: &[u8] = b"policy/pending";
/// The stamp of the last applied entry: time in the log never runs backwards.
const CLOCK: &[u8] = b"clock";
/// In `raft`: the current snapshot's description; its data is `snapshot_path(id)`.
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
/// In `raft`: present while the current snapshot is being installed into the state.
const INSTALLING: &[u8] = b"installing";
/// Records written per batch while installing a snapshot.
const INSTALL_BATCH_BYTES: usize = 8 << 20;

/// The span of applying one batch of entries, with its log index range.
///
/// How the apply joins the trace of the request that caused it: the leader stamps each
/// request with the `traceparent` of its `raft.client_write` span (the child of the
/// `Forward` call a follower made, itself a child of that follower's Decide), and that
/// stamp travels inside the log entry. A batch whose entries carry stamps becomes the
/// child of the first one and links the others, so one trace runs from an edge's SMTP
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

/// Entries applied into one `Txn`, to be written in one batch.
struct Segment<'a> {
    txn: Txn<'a>,
    last_applied: Option<LogId>,
    membership: Option<StoredMembership>,
    /// Some entry may change a verdict already given (`Command::changes_verdicts`).
    verdicts_changed: bool,
}

impl<'a> Segment<'a> {
    fn new(txn: Txn<'a>) -> Self {
        Segment {
            txn,
            last_applied: None,
            membership: None,
            verdicts_changed: false,
        }
    }
}

#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    /// Where snapshot files live: one current `ID.snap`, and `.part` files being written.
    snapshot_dir: Arc<PathBuf>,
    caches: Arc<Caches>,
    notifiers: Arc<Notifiers>,
    snapshots_built: Arc<AtomicU64>,
    observer: &'static dyn StorageObserver,
}

impl StateMachine {
    /// Opens the state machine over a store, finishes an interrupted snapshot install, and
    /// loads its caches.
    pub fn open(store: Store, snapshot_dir: &Path) -> Result<StateMachine, StoreError> {
        std::fs::create_dir_all(snapshot_dir).map_err(|e| StoreError::Format(format!("creating {}: {e}", snapshot_dir.display())))?;
        let machine = StateMachine {
            store,
            snapshot_dir: Arc::new(snapshot_dir.to_owned()),
            caches: Arc::default(),
            notifiers: Arc::new(Notifiers::new()),
            snapshots_built: Arc::default(),
            observer: &Unobserved,
        };
        machine.remove_snapshot_files(|name| name.ends_with(".part"));
        if machine.store.db().get_cf(machine.store.cf(CF_RAFT), INSTALLING)?.is_some() {
            let meta: SnapshotMeta = machine
                .store
                .get(CF_RAFT, SNAPSHOT_META)?
                .ok_or_else(|| StoreError::Format("an interrupted snapshot install left no snapshot to finish it from".into()))?;
            tracing::warn!(snapshot = %meta.snapshot_id, "finishing a snapshot install that was interrupted");
            machine.install_file(&machine.snapshot_path(&meta.snapshot_id))?;
        }
        machine.reload_caches()?;
        Ok(machine)
    }

    /// Reports apply durations and snapshot sizes to `observer`.
    pub fn observed_by(self, observer: &'static dyn StorageObserver) -> Self {
        StateMachine { observer, ..self }
    }

    pub fn view(&self) -> StateView {
        StateView::new(self.store.clone(), self.caches.clone(), &self.notifiers)
    }

    fn reload_caches(&self) -> Result<(), StoreError> {
        let policy = PolicySchedule {
            current: self.store.get(CF_META, POLICY)?.unwrap_or_default(),
            pending: self.store.get(CF_META, PENDING_POLICY)?,
        };
        let mut tenants = Tenants::new();
        for item in self.store.db().iterator_cf(self.store.cf(CF_TENANTS), IteratorMode::Start) {
            let (key, value) = item?;
            let tenant: Tenant = decode(&key, &value)?;
            tenants.insert(tenant.name.clone(), tenant);
        }
        let connectors = ConnectorTable::new(tenants.values().flat_map(|t| t.connectors.iter().cloned()));
        let applied: Option<LogId> = self.store.get(CF_META, APPLIED)?;
        let index = applied.map_or(0, |id| id.index);
        *self.caches.policy.write().expect("policy lock") = Arc::new(policy);
        *self.caches.tenants.write().expect("tenants lock") = tenants;
        self.notifiers.connectors.send_replace(ConnectorFeed::loaded(connectors, index));
        // A whole new state (a snapshot installed): any verdict may have changed.
        self.notifiers.verdicts.send_replace(index);
        self.notifiers.applied.send_replace(index);
        Ok(())
    }

    fn read_applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let applied = self.store.get(CF_META, APPLIED)?;
        let membership = self.store.get(CF_META, MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    fn txn(&self) -> Txn<'_> {
        Txn::new(
            &self.store,
            self.caches.tenants.read().expect("tenants lock").clone(),
            ConnectorTable::clone(&self.notifiers.connectors.borrow().table),
            self.caches.policy.read().expect("policy lock").clone(),
        )
    }

    /// Applies entries in as few write batches as it can: one, unless a command that
    /// applies alone (`Command::applies_alone`) is among them, which gets a batch of its
    /// own. Where batch boundaries fall changes nothing of the outcome.
    fn apply_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<Vec<Response>, StoreError> {
        let started = Instant::now();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let span = apply_span(&entries);
        let _in_span = span.enter();
        let mut clock: Option<Timestamp> = self.store.get(CF_META, CLOCK)?;
        let mut segment = Segment::new(self.txn());
        let mut responses = Vec::new();
        for entry in entries {
            let alone = matches!(&entry.payload, EntryPayload::Normal(request) if request.command.applies_alone());
            if alone && segment.last_applied.is_some() {
                segment = self.write_and_renew(segment, clock)?;
            }
            segment.last_applied = Some(entry.log_id);
            segment.verdicts_changed |= matches!(&entry.payload, EntryPayload::Normal(request) if request.command.changes_verdicts());
            let response = match entry.payload {
                EntryPayload::Blank => Ok(Applied::Nothing),
                EntryPayload::Normal(request) => {
                    let at = clock.map_or(request.at, |previous| previous.max(request.at));
                    clock = Some(at);
                    match request.actor {
                        Some(actor) => segment.txn.apply_audited(entry.log_id.index, at, actor, request.command)?,
                        None => segment.txn.apply(entry.log_id.index, at, request.command)?,
                    }
                }
                EntryPayload::Membership(config) => {
                    segment.membership = Some(StoredMembership::new(Some(entry.log_id), config));
                    Ok(Applied::Nothing)
                }
            };
            responses.push(response);
            if alone {
                segment = self.write_and_renew(segment, clock)?;
            }
        }
        if segment.last_applied.is_some() {
            self.write(segment, clock)?;
        }
        for response in &responses {
            if let Ok(Applied::Swept {
                servers,
                events,
                count_flushes,
                ..
            }) = response
            {
                self.observer.swept(*servers as u64, *events as u64, *count_flushes as u64);
            }
        }
        self.observer.applied(started.elapsed());
        Ok(responses)
    }

    /// Writes a segment, and starts the next one on the state it leaves.
    fn write_and_renew<'a>(&'a self, segment: Segment<'a>, clock: Option<Timestamp>) -> Result<Segment<'a>, StoreError> {
        self.write(segment, clock)?;
        Ok(Segment::new(self.txn()))
    }

    /// Writes what a segment of entries changed, with the last one's log id, in one atomic
    /// write, and tells readers.
    fn write(&self, segment: Segment<'_>, clock: Option<Timestamp>) -> Result<(), StoreError> {
        let Segment {
            txn,
            last_applied,
            membership,
            verdicts_changed,
        } = segment;
        let mut batch = WriteBatch::default();
        for (family, from, to) in &txn.deleted_ranges {
            batch.delete_range_cf(self.store.cf(family), from, to);
        }
        for (family, key) in &txn.deleted {
            batch.delete_cf(self.store.cf(family), key);
        }
        let (meta, tenants_cf, servers_cf) = (self.store.cf(CF_META), self.store.cf(CF_TENANTS), self.store.cf(CF_SERVERS));
        for name in &txn.tenants_dirty {
            match txn.tenants.get(name) {
                Some(tenant) => batch.put_cf(tenants_cf, name, encode(tenant)),
                None => batch.delete_cf(tenants_cf, name),
            }
        }
        let (events_cf, pending_cf) = (self.store.cf(CF_EVENTS), self.store.cf(CF_PENDING_EVENTS));
        for (key, event) in &txn.events {
            batch.put_cf(events_cf, key, encode(event));
            if event.delivered {
                batch.delete_cf(pending_cf, key);
            } else {
                batch.put_cf(pending_cf, key, []);
            }
        }
        for (key, server) in &txn.servers {
            match server {
                Some(entry) => batch.put_cf(servers_cf, key, encode(entry)),
                None => batch.delete_cf(servers_cf, key),
            }
        }
        for record in &txn.audit {
            batch.put_cf(meta, audit_key(record.index), encode(record));
        }
        for (key, flush) in &txn.flushes {
            batch.put_cf(meta, key, encode(flush));
        }
        if txn.policy_changed {
            batch.put_cf(meta, POLICY, encode(&txn.policy.current));
            match &txn.policy.pending {
                Some(pending) => batch.put_cf(meta, PENDING_POLICY, encode(pending)),
                None => batch.delete_cf(meta, PENDING_POLICY),
            }
        }
        if let Some(membership) = &membership {
            batch.put_cf(meta, MEMBERSHIP, encode(membership));
        }
        if let Some(clock) = clock {
            batch.put_cf(meta, CLOCK, encode(&clock));
        }
        if let Some(applied) = &last_applied {
            batch.put_cf(meta, APPLIED, encode(applied));
        }
        // Not synced: the log is, and a lost apply is replayed from it after a crash.
        self.store.db().write(batch)?;

        if txn.policy_changed {
            *self.caches.policy.write().expect("policy lock") = txn.policy.clone();
        }
        if !txn.tenants_dirty.is_empty() {
            *self.caches.tenants.write().expect("tenants lock") = txn.tenants;
        }
        if !txn.connector_changes.is_empty() {
            let next = self.notifiers.connectors.borrow().changed(txn.connectors, txn.connector_changes);
            self.notifiers.connectors.send_replace(next);
        }
        if let Some(id) = last_applied {
            if verdicts_changed {
                self.notifiers.verdicts.send_replace(id.index);
            }
            self.notifiers.applied.send_replace(id.index);
        }
        Ok(())
    }

    /// The file of the snapshot with this id. Ids come from the leader; only their safe
    /// characters make the name.
    fn snapshot_path(&self, snapshot_id: &str) -> PathBuf {
        let name: String = snapshot_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.snapshot_dir.join(format!("{name}.snap"))
    }

    /// Writes a snapshot of the applied state to its file, streamed from one RocksDB
    /// point-in-time view, and makes it the current snapshot.
    fn build(&self) -> Result<SnapshotMeta, StoreError> {
        let sequence = self.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let part = self.snapshot_dir.join(format!("build-{sequence}.part"));
        let io = |e: std::io::Error| StoreError::Format(format!("writing snapshot {}: {e}", part.display()));
        let name = |last: Option<LogId>| match last {
            Some(id) => format!("{}-{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index, sequence),
            None => format!("empty-{sequence}"),
        };
        let (meta, out) = write_state(&self.store, BufWriter::new(File::create(&part).map_err(io)?), name)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&part, self.snapshot_path(&meta.snapshot_id)).map_err(io)?;
        self.make_current(&meta, false)?;
        Ok(meta)
    }

    /// Seeds a new node of a new group from a backup (`ratchet restore`): the backup's
    /// state, its applied log id as the start of this node's log, and `membership` (the new
    /// group) in place of the old one. The new group continues the old log's indexes, so
    /// nothing keyed by index (events, the audit trail) can collide.
    pub fn restore(
        store: Store,
        snapshot_dir: &Path,
        backup: &Path,
        membership: Membership<NodeId, Node>,
    ) -> Result<SnapshotMeta, StoreError> {
        let io = |e: std::io::Error| StoreError::Format(format!("{}: {e}", backup.display()));
        let meta = verify(BufReader::new(File::open(backup).map_err(io)?), STATE_FAMILIES.len()).map_err(refused)?;
        let last = meta.last_log_id.ok_or_else(|| {
            StoreError::Format(format!(
                "{}: the snapshot of an empty group holds nothing to restore",
                backup.display()
            ))
        })?;
        let machine = StateMachine::open(store.clone(), snapshot_dir)?;
        machine.install_file(backup)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            store.cf(CF_META),
            MEMBERSHIP,
            encode(&StoredMembership::new(Some(last), membership)),
        );
        store.write_synced(batch)?;
        crate::log_store::start_after(&store, last)?;
        Ok(meta)
    }

    /// Records `meta` as the current snapshot (synced), optionally marking that its install
    /// into the state is under way, and removes every other snapshot file.
    fn make_current(&self, meta: &SnapshotMeta, installing: bool) -> Result<(), StoreError> {
        sync_directory(&self.snapshot_dir);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT), SNAPSHOT_META, encode(meta));
        if installing {
            batch.put_cf(self.store.cf(CF_RAFT), INSTALLING, []);
        }
        self.store.write_synced(batch)?;
        let current = self.snapshot_path(&meta.snapshot_id);
        self.remove_snapshot_files(|name| name.ends_with(".snap") && Some(name) != current.file_name().and_then(|n| n.to_str()));
        Ok(())
    }

    fn remove_snapshot_files(&self, doomed: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(&*self.snapshot_dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(&doomed) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Where a snapshot being received from the leader is written (one at a time: Raft
    /// receives one snapshot at a time, and a new one starts the file over).
    fn receiving_path(&self) -> PathBuf {
        self.snapshot_dir.join(format!("receiving-{}.part", std::process::id()))
    }

    /// Takes a received snapshot file: checks it whole and against the description Raft
    /// announced, keeps it as the current snapshot, and replaces the state with its records.
    /// The file Raft wrote at `receiving_path` is kept where it is (renamed); any other (Raft
    /// may hand over another file in its place) is copied there first.
    fn receive(&self, mut received: File, announced: &SnapshotMeta) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let part = self.receiving_path();
        let io = |e: std::io::Error| StoreError::Format(format!("keeping a received snapshot in {}: {e}", part.display()));
        let inode = |metadata: std::fs::Metadata| (metadata.dev(), metadata.ino());
        let written_there = std::fs::metadata(&part).is_ok_and(|at| inode(at) == received.metadata().map(inode).unwrap_or_default());
        if written_there {
            received.sync_all().map_err(io)?;
        } else {
            received.rewind().map_err(io)?;
            let mut copy = BufWriter::new(File::create(&part).map_err(io)?);
            std::io::copy(&mut received, &mut copy).map_err(io)?;
            copy.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        }
        drop(received);
        let meta = verify(BufReader::new(File::open(&part).map_err(io)?), STATE_FAMILIES.len()).map_err(refused)?;
        if meta != *announced {
            let _ = std::fs::remove_file(&part);
            return Err(StoreError::Format(format!(
                "snapshot refused: the file describes snapshot {} at {:?}, but {} at {:?} was announced",
                meta.snapshot_id, meta.last_log_id, announced.snapshot_id, announced.last_log_id
            )));
        }
        let path = self.snapshot_path(&meta.snapshot_id);
        std::fs::rename(&part, &path).map_err(io)?;
        self.make_current(&meta, true)?;
        self.install_file(&path)?;
        self.remove_snapshot_files(|name| name.ends_with(".part"));
        Ok(())
    }

    /// Replaces the whole state with a snapshot file's records, then clears the install
    /// marker. Safe to run again after a crash: it starts from an empty state each time.
    fn install_file(&self, path: &Path) -> Result<(), StoreError> {
        let io = |e: std::io::Error| StoreError::Format(format!("reading snapshot {}: {e}", path.display()));
        let mut reader = SnapshotReader::new(BufReader::new(File::open(path).map_err(io)?), STATE_FAMILIES.len()).map_err(refused)?;
        let mut batch = WriteBatch::default();
        for family in STATE_FAMILIES {
            // Every state key starts with an ASCII byte (names, "applied", ...): this range is all of them.
            batch.delete_range_cf(self.store.cf(family), b"".as_slice(), [0xFFu8; 8].as_slice());
        }
        while let Some((family_index, key, value)) = reader.next_record().map_err(refused)? {
            batch.put_cf(self.store.cf(STATE_FAMILIES[usize::from(family_index)]), key, value);
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                self.store.db().write(std::mem::take(&mut batch))?;
            }
        }
        batch.delete_cf(self.store.cf(CF_RAFT), INSTALLING);
        self.store.write_synced(batch)?;
        self.reload_caches()
    }

    /// The current snapshot, opened for reading.
    fn current(&self) -> Result<Option<(SnapshotMeta, File)>, StoreError> {
        let Some(meta) = self.store.get::<SnapshotMeta>(CF_RAFT, SNAPSHOT_META)? else {
            return Ok(None);
        };
        let path = self.snapshot_path(&meta.snapshot_id);
        let file = File::open(&path).map_err(|e| StoreError::Format(format!("opening snapshot {}: {e}", path.display())))?;
        Ok(Some((meta, file)))
    }

    /// Runs storage work that may take long (a whole snapshot) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(StateMachine) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let machine = self.clone();
        tokio::task::spawn_blocking(move || work(machine))
            .await
            .map_err(|e| StoreError::Format(format!("snapshot task failed: {e}")))?
    }
}

/// Streams every state record, as of one RocksDB point-in-time view, into `out` in the
/// snapshot format; `name` names the snapshot after the applied log id it is at.
pub(crate) fn write_state<W: std::io::Write>(
    store: &Store,
    out: W,
    name: impl FnOnce(Option<LogId>) -> String,
) -> Result<(SnapshotMeta, W), StoreError> {
    let view = store.db().snapshot();
    let read_meta = |key: &[u8]| view.get_cf(store.cf(CF_META), key);
    let last_log_id: Option<LogId> = read_meta(APPLIED)?.map(|bytes| decode(APPLIED, &bytes)).transpose()?;
    let last_membership: StoredMembership = read_meta(MEMBERSHIP)?
        .map(|bytes| decode(MEMBERSHIP, &bytes))
        .transpose()?
        .unwrap_or_default();
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id: name(last_log_id),
    };
    let io = |e: std::io::Error| StoreError::Format(format!("writing a snapshot: {e}"));
    let mut writer = SnapshotWriter::new(out, &meta).map_err(io)?;
    for (family_index, family) in STATE_FAMILIES.iter().enumerate() {
        for item in view.iterator_cf(store.cf(family), IteratorMode::Start) {
            let (key, value) = item?;
            writer.record(family_index as u8, &key, &value).map_err(io)?;
        }
    }
    let out = writer.finish().map_err(io)?;
    Ok((meta, out))
}

fn refused(error: SnapshotFormatError) -> StoreError {
    StoreError::Format(format!("snapshot refused: {error}"))
}

/// Makes a rename in `dir` durable (best effort: not every filesystem supports it).
fn sync_directory(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

fn snapshot_of(meta: SnapshotMeta, file: File) -> Snapshot<TypeConfig> {
    Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(file)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, file) = self
            .blocking(|machine| {
                let meta = machine.build()?;
                let (_, file) = machine.current()?.expect("just built");
                Ok((meta, file))
            })
            .await
            .map_err(read_error)?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.observer.snapshot_built(bytes);
        tracing::info!(snapshot = %meta.snapshot_id, bytes, "built snapshot");
        Ok(snapshot_of(meta, file))
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.receiving_path();
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| write_error(StoreError::Format(format!("creating {}: {e}", path.display()))))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, mut snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        snapshot
            .flush()
            .await
            .map_err(|e| write_error(StoreError::Format(format!("flushing a received snapshot: {e}"))))?;
        let received = snapshot.into_std().await;
        let bytes = received.metadata().map(|m| m.len()).unwrap_or(0);
        let announced = meta.clone();
        self.blocking(move |machine| machine.receive(received, &announced))
            .await
            .map_err(write_error)?;
        self.observer.snapshot_installed(bytes);
        tracing::info!(snapshot = %meta.snapshot_id, bytes, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.blocking(|machine| machine.current()).await.map_err(read_error)?;
        Ok(current.map(|(meta, file)| snapshot_of(meta, file)))
    }
}
