//! The state transitions: one function per command, deterministic.
//!
//! Apply reads no clock and draws no random number: time comes from the entry's stamp.
//! A batch of entries is applied into a `Txn`, an overlay over the stored state, so that
//! later entries of the batch see earlier ones; the state machine then writes the whole
//! batch and its applied log id in one atomic RocksDB write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Duration;
use ratchet_policy::pause::PauseError;
use ratchet_policy::products::{classify, BuildStatus};
use ratchet_policy::{Episode, Policy, ServerRecord, Sighting, SightingEffect, Timestamp};

use crate::command::{Applied, Command, CommandError, ErrorKind, Notice, Observation, Response};
use crate::model::{Connector, Counts, Event, EventKind, ServerEntry, Tenant};
use crate::rocks::{event_key, server_key, tenant_prefix, Store, StoreError, CF_EVENTS, CF_PENDING_EVENTS, CF_SERVERS};
use crate::view::VersionedPolicy;

/// Pending changes of one apply batch, read through before the stored state.
pub(crate) struct Txn<'a> {
    store: &'a Store,
    pub tenants: Arc<BTreeMap<String, Tenant>>,
    /// Names of the tenants this batch changed.
    pub tenants_dirty: BTreeSet<String>,
    pub policy: Arc<VersionedPolicy>,
    pub policy_changed: bool,
    /// Servers written (Some) or deleted (None) by this batch.
    pub servers: HashMap<Vec<u8>, Option<ServerEntry>>,
    /// Events raised or updated by this batch, by key.
    pub events: Vec<(Vec<u8>, Event)>,
    /// Pending-event keys whose events the webhook took.
    pub delivered: Vec<Vec<u8>>,
    /// The entry being applied and how many events it raised: event ids and keys derive from both.
    index: u64,
    events_raised: u32,
}

impl<'a> Txn<'a> {
    pub fn new(store: &'a Store, tenants: Arc<BTreeMap<String, Tenant>>, policy: Arc<VersionedPolicy>) -> Self {
        Txn {
            store,
            tenants,
            tenants_dirty: BTreeSet::new(),
            policy,
            policy_changed: false,
            servers: HashMap::new(),
            events: Vec::new(),
            delivered: Vec::new(),
            index: 0,
            events_raised: 0,
        }
    }

    fn policy(&self) -> &Policy {
        &self.policy.policy
    }

    fn tenant_mut(&mut self, name: &str) -> Result<&mut Tenant, CommandError> {
        if !self.tenants.contains_key(name) {
            return Err(CommandError::unknown_tenant(name));
        }
        self.tenants_dirty.insert(name.to_owned());
        Ok(Arc::make_mut(&mut self.tenants).get_mut(name).expect("checked above"))
    }

    fn server(&self, tenant: &str, server_fqdn: &str) -> Result<Option<ServerEntry>, StoreError> {
        let key = server_key(tenant, server_fqdn);
        match self.servers.get(&key) {
            Some(pending) => Ok(pending.clone()),
            None => self.store.get(CF_SERVERS, &key),
        }
    }

    fn put_server(&mut self, entry: ServerEntry) {
        self.servers
            .insert(server_key(&entry.record.tenant, &entry.record.server_fqdn), Some(entry));
    }

    /// Applies one command at `at`, the entry's stamp. A refusal changes nothing.
    pub fn apply(&mut self, index: u64, at: Timestamp, command: Command) -> Result<Response, StoreError> {
        self.index = index;
        self.events_raised = 0;
        Ok(match command {
            Command::AddTenant { name } => Ok(self.add_tenant(name, at)),
            Command::AddConnector { tenant, cidr, cert_name } => self.add_connector(Connector { tenant, cidr, cert_name }),
            Command::Sight {
                tenant,
                server_fqdn,
                build,
            } => self.sight(tenant, server_fqdn, build, at)?,
            Command::Observe { observations } => self.observe(observations, at)?,
            Command::ImportServer {
                tenant,
                server_fqdn,
                build,
                first_seen,
            } => self.import(tenant, server_fqdn, build, first_seen, at)?,
            Command::Decommission { tenant, server_fqdn } => self.decommission(&tenant, &server_fqdn)?,
            Command::Pause { tenant, days, request_id } => self.pause(&tenant, days, request_id.as_deref(), at),
            Command::EndPause { tenant } => self.end_pause(&tenant, at),
            Command::SetPolicy { policy } => self.set_policy(*policy, index),
            Command::SetWebhook { tenant, url } => self.tenant_mut(&tenant).map(|t| {
                t.webhook_url = url;
                Applied::WebhookSet
            }),
            Command::Notify { notices } => self.notify(notices, at)?,
            Command::MarkDelivered { tenant, ids } => self.mark_delivered(&tenant, &ids)?,
        })
    }

    /// Raises an event of the entry being applied; its id is the entry's index and rank.
    fn raise(&mut self, tenant: &str, kind: EventKind, server_fqdn: Option<&str>, message: String, at: Timestamp) {
        let id = format!("{}-{}", self.index, self.events_raised + 1);
        self.raise_with_id(tenant, id, kind, server_fqdn, message, at);
    }

    fn raise_with_id(&mut self, tenant: &str, id: String, kind: EventKind, server_fqdn: Option<&str>, message: String, at: Timestamp) {
        if !self.tenants.contains_key(tenant) {
            return;
        }
        self.events_raised += 1;
        let event = Event {
            id,
            tenant: tenant.to_owned(),
            at,
            kind,
            server_fqdn: server_fqdn.map(str::to_owned),
            message,
            delivered: false,
        };
        self.events.push((event_key(tenant, self.index, self.events_raised), event));
    }

    /// Raises the event that a sighting's effect on an episode calls for.
    fn raise_for_sighting(&mut self, entry: &mut ServerEntry, effect: SightingEffect, at: Timestamp) {
        let record = &entry.record;
        let (kind, message) = match effect {
            SightingEffect::Unchanged => return,
            SightingEffect::FirstDetected => {
                entry.notices.clear();
                (
                    EventKind::FirstDetected,
                    format!("{} first detected out of date with build {}", record.server_fqdn, record.build),
                )
            }
            SightingEffect::Relapsed => (
                EventKind::Relapsed,
                format!(
                    "{} is out of date again (build {}): its clock resumes",
                    record.server_fqdn, record.build
                ),
            ),
            SightingEffect::Remediated => (
                EventKind::Remediated,
                format!("{} remediated with build {}", record.server_fqdn, record.build),
            ),
        };
        let (tenant, server) = (record.tenant.clone(), record.server_fqdn.clone());
        self.raise(&tenant, kind, Some(&server), message, at);
    }

    fn add_tenant(&mut self, name: String, at: Timestamp) -> Applied {
        if self.tenants.contains_key(&name) {
            return Applied::TenantAdded { created: false };
        }
        self.tenants_dirty.insert(name.clone());
        Arc::make_mut(&mut self.tenants).insert(name.clone(), Tenant::new(name, at));
        Applied::TenantAdded { created: true }
    }

    fn add_connector(&mut self, connector: Connector) -> Response {
        let same_claim = |c: &Connector| c.cidr == connector.cidr && c.cert_name == connector.cert_name;
        if let Some(owner) = self
            .tenants
            .values()
            .flat_map(|t| &t.connectors)
            .find(|c| same_claim(c) && c.tenant != connector.tenant)
        {
            return Err(CommandError {
                kind: ErrorKind::AlreadyExists,
                field: "cidr".into(),
                message: format!("{} already belongs to tenant {:?}", connector.cidr, owner.tenant),
            });
        }
        let tenant = self.tenant_mut(&connector.tenant)?;
        if tenant.connectors.iter().any(same_claim) {
            return Ok(Applied::ConnectorAdded { created: false });
        }
        tenant.connectors.push(connector);
        Ok(Applied::ConnectorAdded { created: true })
    }

    /// Records one sighting of a server: creates it if new, and moves its episode.
    fn record_sighting(
        &mut self,
        tenant: &str,
        server_fqdn: &str,
        build: &str,
        at: Timestamp,
    ) -> Result<(ServerEntry, SightingEffect), StoreError> {
        let status = classify(&self.policy().products, build).status;
        let relapse_window = Duration::days(i64::from(self.policy().relapse_window_days));
        let mut entry = self.server(tenant, server_fqdn)?.unwrap_or_else(|| ServerEntry {
            record: ServerRecord {
                tenant: tenant.to_owned(),
                server_fqdn: server_fqdn.to_owned(),
                build: build.to_owned(),
                last_seen: at,
                episode: None,
            },
            counters: BTreeMap::new(),
            notices: BTreeSet::new(),
        });
        let effect = Episode::sight(&mut entry.record.episode, Sighting { status, at }, relapse_window);
        if at >= entry.record.last_seen {
            entry.record.last_seen = at;
            entry.record.build = build.to_owned();
        }
        Ok((entry, effect))
    }

    fn sight(&mut self, tenant: String, server_fqdn: String, build: String, at: Timestamp) -> Result<Response, StoreError> {
        if !self.tenants.contains_key(&tenant) {
            return Ok(Err(CommandError::unknown_tenant(&tenant)));
        }
        let (mut entry, effect) = self.record_sighting(&tenant, &server_fqdn, &build, at)?;
        self.raise_for_sighting(&mut entry, effect, at);
        self.put_server(entry.clone());
        Ok(Ok(Applied::Server { entry: Box::new(entry) }))
    }

    fn observe(&mut self, observations: Vec<Observation>, at: Timestamp) -> Result<Response, StoreError> {
        let day = at.format("%Y-%m-%d").to_string();
        let mut servers = 0;
        for observation in observations {
            // A tenant unknown here was never attributed by this cluster: nothing to count.
            if !self.tenants.contains_key(&observation.tenant) {
                continue;
            }
            let seen_at = observation.last_seen.min(at);
            let (mut entry, effect) = self.record_sighting(&observation.tenant, &observation.server_fqdn, &observation.build, seen_at)?;
            self.raise_for_sighting(&mut entry, effect, at);
            let mut total = Counts::default();
            for (stage, counts) in &observation.counts {
                entry.counters.entry(*stage).or_default().add(*counts);
                total.add(*counts);
            }
            self.tenant_mut(&observation.tenant)
                .expect("checked above")
                .count_day(day.clone(), total);
            self.put_server(entry);
            servers += 1;
        }
        Ok(Ok(Applied::Observed { servers }))
    }

    fn import(
        &mut self,
        tenant: String,
        server_fqdn: String,
        build: String,
        first_seen: Timestamp,
        at: Timestamp,
    ) -> Result<Response, StoreError> {
        if !self.tenants.contains_key(&tenant) {
            return Ok(Err(CommandError::unknown_tenant(&tenant)));
        }
        if first_seen > at {
            return Ok(Err(CommandError::invalid(
                "first_seen",
                format!("{} is in the future", first_seen.to_rfc3339()),
            )));
        }
        let class = classify(&self.policy().products, &build);
        if class.status != BuildStatus::OutOfDate {
            let message = format!(
                "{build:?} is {}, not out of date: there is no clock to import",
                class.status.as_str()
            );
            return Ok(Err(CommandError::invalid("build", message)));
        }
        let (mut entry, _) = self.record_sighting(&tenant, &server_fqdn, &build, first_seen)?;
        entry.record.build = build;
        entry.record.episode = Some(Episode::starting(first_seen));
        entry.notices.clear();
        let message = format!(
            "{server_fqdn} imported out of date with build {}, first seen {}",
            entry.record.build,
            first_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        self.raise(&tenant, EventKind::FirstDetected, Some(&server_fqdn), message, at);
        self.put_server(entry.clone());
        Ok(Ok(Applied::Server { entry: Box::new(entry) }))
    }

    fn decommission(&mut self, tenant: &str, server_fqdn: &str) -> Result<Response, StoreError> {
        if !self.tenants.contains_key(tenant) {
            return Ok(Err(CommandError::unknown_tenant(tenant)));
        }
        if self.server(tenant, server_fqdn)?.is_none() {
            return Ok(Err(CommandError::not_found(
                "server_fqdn",
                format!("tenant {tenant:?} has no server {server_fqdn:?}"),
            )));
        }
        self.servers.insert(server_key(tenant, server_fqdn), None);
        Ok(Ok(Applied::Decommissioned))
    }

    fn pause(&mut self, tenant: &str, days: u32, request_id: Option<&str>, at: Timestamp) -> Response {
        let budget = self.policy().pause_budget_days;
        let ledger = &mut self.tenant_mut(tenant)?.pauses;
        let before = ledger.pauses().last().map(|p| (ledger.pauses().len(), p.end));
        match ledger.request(budget, days, request_id, at) {
            Ok(grant) => {
                let after = ledger.pauses().last().map(|p| (ledger.pauses().len(), p.end));
                let until = grant.paused_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                match (before, after) {
                    (before, after) if before == after => {} // a retried request id: nothing new
                    (Some((count, _)), Some((count_after, _))) if count == count_after => self.raise(
                        tenant,
                        EventKind::PauseExtended,
                        None,
                        format!("enforcement pause extended by {days} days, until {until}"),
                        at,
                    ),
                    _ => self.raise(
                        tenant,
                        EventKind::PauseStarted,
                        None,
                        format!("enforcement paused for {days} days, until {until}"),
                        at,
                    ),
                }
                Ok(Applied::Paused { grant })
            }
            Err(error @ PauseError::OverBudget { .. }) => Err(CommandError::precondition("days", error.to_string())),
            Err(error) => Err(CommandError::invalid("days", error.to_string())),
        }
    }

    fn end_pause(&mut self, tenant: &str, at: Timestamp) -> Response {
        let budget = self.policy().pause_budget_days;
        let ledger = &mut self.tenant_mut(tenant)?.pauses;
        match ledger.end(at) {
            Ok(end) => {
                let remaining_days = ledger.remaining_days(budget, at);
                let message = format!("enforcement pause ended early; {} unused days returned", end.refunded_days);
                self.raise(tenant, EventKind::PauseEnded, None, message, at);
                Ok(Applied::PauseEnded {
                    ended_at: end.ended_at,
                    refunded_days: end.refunded_days,
                    remaining_days,
                })
            }
            Err(_) => Err(CommandError::precondition("tenant", format!("tenant {tenant:?} is not paused"))),
        }
    }

    fn set_policy(&mut self, policy: Policy, index: u64) -> Response {
        policy.validate().map_err(|e| CommandError::invalid("policy", e.to_string()))?;
        self.policy = Arc::new(VersionedPolicy { version: index, policy });
        self.policy_changed = true;
        Ok(Applied::PolicySet { version: index })
    }

    /// Raises each notice whose key has not been raised for its server episode or tenant.
    fn notify(&mut self, notices: Vec<Notice>, at: Timestamp) -> Result<Response, StoreError> {
        let mut raised = 0;
        for notice in notices {
            if !self.tenants.contains_key(&notice.tenant) {
                continue;
            }
            let fresh = match &notice.server_fqdn {
                Some(server) => match self.server(&notice.tenant, server)? {
                    Some(mut entry) if entry.record.episode.as_ref().is_some_and(Episode::is_open) => {
                        let fresh = entry.notices.insert(notice.key.clone());
                        self.put_server(entry);
                        fresh
                    }
                    _ => false,
                },
                None => self
                    .tenant_mut(&notice.tenant)
                    .expect("checked above")
                    .notices
                    .insert(notice.key.clone()),
            };
            if fresh {
                let id = format!("{}/{}", notice.tenant, notice.key);
                self.raise_with_id(&notice.tenant, id, notice.kind, notice.server_fqdn.as_deref(), notice.message, at);
                raised += 1;
            }
        }
        Ok(Ok(Applied::Notified { events: raised }))
    }

    fn mark_delivered(&mut self, tenant: &str, ids: &[String]) -> Result<Response, StoreError> {
        if !self.tenants.contains_key(tenant) {
            return Ok(Err(CommandError::unknown_tenant(tenant)));
        }
        let mut marked = 0;
        for (key, mut event) in pending_events(self.store, tenant)? {
            if ids.contains(&event.id) {
                event.delivered = true;
                self.events.push((key.clone(), event));
                self.delivered.push(key);
                marked += 1;
            }
        }
        Ok(Ok(Applied::MarkedDelivered { events: marked }))
    }
}

/// A tenant's events that the webhook has not taken, oldest first, with their keys.
pub fn pending_events(store: &Store, tenant: &str) -> Result<Vec<(Vec<u8>, Event)>, StoreError> {
    let prefix = tenant_prefix(tenant);
    let mut pending = Vec::new();
    for item in store.db().prefix_iterator_cf(store.cf(CF_PENDING_EVENTS), &prefix) {
        let (key, _) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        if let Some(event) = store.get::<Event>(CF_EVENTS, &key)? {
            pending.push((key.to_vec(), event));
        }
    }
    Ok(pending)
}
