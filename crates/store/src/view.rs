//! What the decider reads from the applied state.
//!
//! Servers are read from RocksDB on demand (there may be millions). The small, hot parts
//! (the policy, the tenants with their connectors and pause ledgers) are kept in memory,
//! replaced by apply after each committed batch and on snapshot install, so the hot path
//! of a decision parses nothing but one server record.

use std::sync::{Arc, RwLock};

use ratchet_policy::connectors::ConnectorTable;
use ratchet_policy::Timestamp;
use tokio::sync::watch;

use crate::connector_feed::ConnectorFeed;
use crate::model::{AuditRecord, Event, ServerEntry, Tenant, Tenants, AUDIT_PREFIX};
use crate::paging::{Page, PageStart};
use crate::rocks::{server_key, tenant_prefix, Store, StoreError, CF_EVENTS, CF_META, CF_PENDING_EVENTS, CF_SERVERS, STATE_FAMILIES};
use crate::schedule::PolicySchedule;
use crate::state_machine::APPLIED_KEY;

/// In-memory copies of the hot state, shared by the state machine (writer) and every reader.
#[derive(Default)]
pub(crate) struct Caches {
    pub policy: RwLock<Arc<PolicySchedule>>,
    pub tenants: RwLock<Tenants>,
}

/// A cheap, cloneable reader of the applied state.
#[derive(Clone)]
pub struct StateView {
    store: Store,
    caches: Arc<Caches>,
    connectors: watch::Receiver<ConnectorFeed>,
    applied: watch::Receiver<u64>,
    verdicts: watch::Receiver<u64>,
}

/// Senders that apply uses to tell readers that something changed.
pub(crate) struct Notifiers {
    pub connectors: watch::Sender<ConnectorFeed>,
    pub applied: watch::Sender<u64>,
    /// The index of the last entry applied that may change a verdict already given.
    pub verdicts: watch::Sender<u64>,
}

impl Notifiers {
    pub fn new() -> Self {
        Notifiers {
            connectors: watch::Sender::new(ConnectorFeed::default()),
            applied: watch::Sender::new(0),
            verdicts: watch::Sender::new(0),
        }
    }
}

impl StateView {
    pub(crate) fn new(store: Store, caches: Arc<Caches>, notifiers: &Notifiers) -> Self {
        StateView {
            store,
            caches,
            connectors: notifiers.connectors.subscribe(),
            applied: notifiers.applied.subscribe(),
            verdicts: notifiers.verdicts.subscribe(),
        }
    }

    /// The policy in force and the one scheduled to follow it: pick with `.at(instant)`.
    pub fn policies(&self) -> Arc<PolicySchedule> {
        self.caches.policy.read().expect("policy lock").clone()
    }

    /// Every tenant, as of the last applied batch: a shared copy, not a deep one.
    pub fn tenants(&self) -> Tenants {
        self.caches.tenants.read().expect("tenants lock").clone()
    }

    pub fn tenant(&self, name: &str) -> Option<Tenant> {
        self.tenants().get(name).cloned()
    }

    /// Every connector of every tenant, indexed for attribution, with its recent changes,
    /// and a receiver that changes when they do. Apply keeps the table current one change
    /// at a time and shares it.
    pub fn connectors(&self) -> watch::Receiver<ConnectorFeed> {
        self.connectors.clone()
    }

    /// The current connector table: a shared reference, not a copy.
    pub fn connector_table(&self) -> Arc<ConnectorTable> {
        self.connectors.borrow().table.clone()
    }

    /// The current connector table with the changes that led to it.
    pub fn connector_feed(&self) -> ConnectorFeed {
        self.connectors.borrow().clone()
    }

    /// The last applied log index, and a receiver that changes when it does.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Changes with every applied entry that may change a verdict already given for the
    /// same question (a pause, a mode, a policy, a connector, an import; see
    /// `Command::changes_verdicts`): its value is that entry's index. Fronts that remember
    /// verdicts until their `valid_until` drop them when it changes.
    pub fn verdicts_changed(&self) -> watch::Receiver<u64> {
        self.verdicts.clone()
    }

    /// A server in the report: decommissioned ones are not.
    pub fn server(&self, tenant: &str, server_fqdn: &str) -> Result<Option<ServerEntry>, StoreError> {
        Ok(self
            .store
            .get::<ServerEntry>(CF_SERVERS, &server_key(tenant, server_fqdn))?
            .filter(|entry| !entry.is_decommissioned()))
    }

    /// All servers of a tenant in the report, ordered by FQDN.
    pub fn servers(&self, tenant: &str) -> Result<Vec<ServerEntry>, StoreError> {
        let all: Vec<ServerEntry> = values(self.store.scan_prefix(CF_SERVERS, &tenant_prefix(tenant))?);
        Ok(all.into_iter().filter(|entry| !entry.is_decommissioned()).collect())
    }

    /// A page of a tenant's servers in the report, ordered by FQDN; the keys are FQDNs.
    pub fn servers_page(&self, tenant: &str, start: &PageStart, limit: usize) -> Result<Page<ServerEntry>, StoreError> {
        self.store
            .page(CF_SERVERS, &tenant_prefix(tenant), start, limit, |entry: &ServerEntry| {
                !entry.is_decommissioned()
            })
    }

    /// Calls `each` with every server of a tenant in the report, ordered by FQDN, one at a
    /// time: totals over a tenant of any size in constant memory.
    pub fn for_each_server(&self, tenant: &str, mut each: impl FnMut(ServerEntry)) -> Result<(), StoreError> {
        self.store
            .for_each_with_prefix(CF_SERVERS, &tenant_prefix(tenant), |_, entry: ServerEntry| {
                if !entry.is_decommissioned() {
                    each(entry)
                }
            })
    }

    /// A page of a tenant's events, oldest first; the keys are the log positions that raised them.
    pub fn events_page(&self, tenant: &str, start: &PageStart, limit: usize) -> Result<Page<Event>, StoreError> {
        self.store.page(CF_EVENTS, &tenant_prefix(tenant), start, limit, |_: &Event| true)
    }

    /// A tenant's events, oldest first.
    pub fn events(&self, tenant: &str) -> Result<Vec<Event>, StoreError> {
        Ok(values(self.store.scan_prefix(CF_EVENTS, &tenant_prefix(tenant))?))
    }

    /// A tenant's events that its webhook has not taken yet, oldest first.
    pub fn pending_events(&self, tenant: &str) -> Result<Vec<Event>, StoreError> {
        let mut pending = Vec::new();
        for key in self.store.keys_with_prefix(CF_PENDING_EVENTS, &tenant_prefix(tenant))? {
            pending.extend(self.store.get::<Event>(CF_EVENTS, &key)?);
        }
        Ok(pending)
    }

    /// A page of the audit trail, oldest first: everything, or one tenant's entries, from
    /// `since`; the keys are the log positions of the audited entries.
    pub fn audit_page(
        &self,
        tenant: Option<&str>,
        since: Option<Timestamp>,
        start: &PageStart,
        limit: usize,
    ) -> Result<Page<AuditRecord>, StoreError> {
        self.store.page(CF_META, AUDIT_PREFIX, start, limit, |record: &AuditRecord| {
            tenant.is_none_or(|t| record.tenant.as_deref() == Some(t)) && since.is_none_or(|since| record.at >= since)
        })
    }

    /// A SHA-256 of every state record (family, key and value, in key order) and the log
    /// index it is at, read from one RocksDB snapshot: two nodes at the same applied index
    /// must give the same digest, byte for byte.
    pub fn digest(&self) -> Result<(u64, String), StoreError> {
        let db = self.store.db();
        let snapshot = db.snapshot();
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut applied = 0;
        for family in STATE_FAMILIES {
            let mut options = rocksdb::ReadOptions::default();
            options.set_snapshot(&snapshot);
            for item in db.iterator_cf_opt(self.store.cf(family), options, rocksdb::IteratorMode::Start) {
                let (key, value) = item?;
                if family == CF_META && &*key == APPLIED_KEY {
                    let log_id: openraft::LogId<u64> = crate::codec::decode(&value).map_err(|source| StoreError::Corrupt {
                        key: "meta/applied".into(),
                        source,
                    })?;
                    applied = log_id.index;
                }
                for part in [family.as_bytes(), &key, &value] {
                    hash.update(&(part.len() as u64).to_be_bytes());
                    hash.update(part);
                }
            }
        }
        let digest = hash.finish();
        Ok((applied, digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// A consistent copy of the whole state in the snapshot format (checksummed), as of
    /// one point in time: a backup (`ratchet ctl snapshot save`).
    pub fn backup<W: std::io::Write>(&self, out: W) -> Result<(crate::types::SnapshotMeta, W), StoreError> {
        crate::state_machine::write_state(&self.store, out, |last| match last {
            Some(id) => format!("backup-{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
            None => "backup-empty".into(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn values<T>(keyed: Vec<(Vec<u8>, T)>) -> Vec<T> {
    keyed.into_iter().map(|(_, value)| value).collect()
}
