//! The state transitions: one function per command, deterministic.
//!
//! Apply reads no clock and draws no random number: time comes from the entry's stamp.
//! A batch of entries is applied into a `Txn`, an overlay over the stored state, so that
//! later entries of the batch see earlier ones; the state machine then writes the whole
//! batch and its applied log id in one atomic RocksDB write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Duration;
use ratchet_policy::connectors::ConnectorTable;
use ratchet_policy::pause::{PauseError, PauseLedger};
use ratchet_policy::products::{classify, BuildStatus};
use ratchet_policy::{Episode, Policy, Sighting, SightingEffect, TenantMode, Timestamp};

use crate::command::{Applied, Command, CommandError, ErrorKind, Notice, Observation, Response, ServerSighting};
use crate::connector_feed::ConnectorChange;
use crate::model::{count_key, flush_key, AuditRecord, Connector, Counts, Event, EventKind, LastFlush, ServerEntry, Tenant, Tenants};
use crate::retention::{self, SweepCursor};
use crate::rocks::{
    after_tenant, event_key, server_key, tenant_prefix, Store, StoreError, CF_EVENTS, CF_META, CF_PENDING_EVENTS, CF_SERVERS,
};
use crate::schedule::{PolicySchedule, VersionedPolicy};

/// Pending changes of one apply batch, read through before the stored state.
pub(crate) struct Txn<'a> {
    store: &'a Store,
    pub tenants: Tenants,
    /// Names of the tenants this batch changed.
    pub tenants_dirty: BTreeSet<String>,
    /// Every tenant's connectors, indexed for attribution and kept in step with `tenants`.
    pub connectors: ConnectorTable,
    /// What this batch did to `connectors`, in order.
    pub connector_changes: Vec<ConnectorChange>,
    pub policy: Arc<PolicySchedule>,
    pub policy_changed: bool,
    /// Servers written (Some) or deleted (None) by this batch.
    pub servers: HashMap<Vec<u8>, Option<ServerEntry>>,
    /// The last counted flush of each decider or edge, by its `meta` key, as this batch changed them.
    pub flushes: HashMap<Vec<u8>, LastFlush>,
    /// Records this batch deletes, by column family and key; written before its other changes.
    pub deleted: Vec<(&'static str, Vec<u8>)>,
    /// Key ranges `[from, to)` this batch deletes, by column family; written first of all.
    pub deleted_ranges: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    /// Events raised or updated by this batch, by key, in order (a later one wins).
    pub events: Vec<(Vec<u8>, Event)>,
    /// Audit records of this batch's admin writes.
    pub audit: Vec<AuditRecord>,
    /// The entry being applied and how many events it raised: event ids and keys derive from both.
    index: u64,
    events_raised: u32,
}

impl<'a> Txn<'a> {
    pub fn new(store: &'a Store, tenants: Tenants, connectors: ConnectorTable, policy: Arc<PolicySchedule>) -> Self {
        Txn {
            store,
            tenants,
            tenants_dirty: BTreeSet::new(),
            connectors,
            connector_changes: Vec::new(),
            policy,
            policy_changed: false,
            servers: HashMap::new(),
            flushes: HashMap::new(),
            deleted: Vec::new(),
            deleted_ranges: Vec::new(),
            events: Vec::new(),
            audit: Vec::new(),
            index: 0,
            events_raised: 0,
        }
    }

    /// The policy in force at the entry being applied (a scheduled one is promoted first).
    fn policy(&self) -> &Policy {
        &self.policy.current.policy
    }

    fn tenant_mut(&mut self, name: &str) -> Result<&mut Tenant, CommandError> {
        if !self.tenants.contains_key(name) {
            return Err(CommandError::unknown_tenant(name));
        }
        self.tenants_dirty.insert(name.to_owned());
        Ok(self.tenants.get_mut(name).expect("checked above"))
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
        if self.policy.is_due(at) {
            Arc::make_mut(&mut self.policy).promote_due(at);
            self.policy_changed = true;
        }
        Ok(match command {
            Command::AddTenant { name } => Ok(self.add_tenant(name, at)),
            Command::AddConnector { tenant, cidr, cert_name } => self.add_connector(Connector { tenant, cidr, cert_name }),
            Command::Sight { sightings } => self.sight(sightings, at)?,
            Command::Observe {
                node_id,
                flush_id,
                observations,
            } => {
                let key = flush_key(node_id);
                if self.last_flush(&key)? == Some(flush_id) {
                    // The same flush again (its first answer was lost): counted already.
                    return Ok(Ok(Applied::Observed { servers: 0 }));
                }
                self.flushes.insert(key, LastFlush { flush_id, at: Some(at) });
                self.observe(observations, at)?
            }
            Command::Count {
                origin,
                sequence,
                observations,
            } => {
                let key = count_key(origin);
                if self.last_flush(&key)?.is_some_and(|last| sequence <= last) {
                    // Resent after a lost answer, or a late copy of an older flush: counted already.
                    return Ok(Ok(Applied::Observed { servers: 0 }));
                }
                let counted = LastFlush {
                    flush_id: sequence,
                    at: Some(at),
                };
                self.flushes.insert(key, counted);
                self.observe(observations, at)?
            }
            Command::ImportServer {
                tenant,
                server_fqdn,
                build,
                first_seen,
            } => self.import(tenant, server_fqdn, build, first_seen, at)?,
            Command::Decommission { tenant, server_fqdn } => self.decommission(&tenant, &server_fqdn, at)?,
            Command::Pause {
                tenant,
                days,
                servers,
                request_id,
            } => self.pause(&tenant, days, &servers, request_id.as_deref(), at)?,
            Command::EndPause { tenant, server } => self.end_pause(&tenant, server.as_deref(), at),
            Command::SetPolicy { policy, effective_at } => self.set_policy(*policy, effective_at, index, at),
            Command::SetWebhook { tenant, url, secret } => self.tenant_mut(&tenant).map(|t| {
                t.webhook_url = url;
                t.webhook_secret = secret;
                Applied::WebhookSet
            }),
            Command::Notify { notices } => self.notify(notices, at)?,
            Command::MarkDelivered { tenant, ids } => self.mark_delivered(&tenant, &ids)?,
            Command::Audit { .. } => Ok(Applied::Nothing),
            Command::SetTenantMode { tenant, mode } => self.set_tenant_mode(&tenant, mode, at),
            Command::RemoveTenant { tenant } => self.remove_tenant(&tenant),
            Command::RemoveConnector { tenant, cidr, cert_name } => self.remove_connector(Connector { tenant, cidr, cert_name }, at),
            Command::Sweep { resume, budget } => self.sweep(resume, budget, at)?,
        })
    }

    /// Applies an admin write and records it in the audit trail with its outcome.
    pub fn apply_audited(&mut self, index: u64, at: Timestamp, actor: String, command: Command) -> Result<Response, StoreError> {
        let (action, tenant) = (command.describe(), command.target_tenant().map(str::to_owned));
        let noted = match &command {
            Command::Audit { tenant, outcome, .. } => Some((tenant.clone(), outcome.clone())),
            _ => None,
        };
        let response = self.apply(index, at, command)?;
        let (tenant, outcome) = match (noted, &response) {
            (Some(noted), _) => noted,
            (None, Ok(_)) => (tenant, "ok".to_owned()),
            (None, Err(refusal)) => (tenant, format!("refused: {refusal}")),
        };
        self.audit.push(AuditRecord {
            index,
            at,
            actor,
            action,
            tenant,
            outcome,
        });
        Ok(response)
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
        self.tenants.insert(name.clone(), Tenant::new(name, at));
        Applied::TenantAdded { created: true }
    }

    /// Deletes the tenant's record (connectors, pauses, counts, webhook, notices) and, as
    /// key ranges, its servers and events. Applied in a batch of its own
    /// (`Command::applies_alone`): nothing pending can hide under the ranges it deletes.
    fn remove_tenant(&mut self, tenant: &str) -> Response {
        let Some(removed) = self.tenants.remove(tenant) else {
            return Err(CommandError::unknown_tenant(tenant));
        };
        for connector in removed.connectors {
            self.change_connector(connector, false);
        }
        self.tenants_dirty.insert(tenant.to_owned());
        let (from, to) = (tenant_prefix(tenant), after_tenant(tenant.as_bytes()));
        for family in [CF_SERVERS, CF_EVENTS, CF_PENDING_EVENTS] {
            self.deleted_ranges.push((family, from.clone(), to.clone()));
        }
        Ok(Applied::TenantRemoved)
    }

    fn remove_connector(&mut self, connector: Connector, at: Timestamp) -> Response {
        let same_claim = |c: &Connector| c.claims(connector.cidr, connector.cert_name.as_deref());
        let tenant = self
            .tenants
            .get(&connector.tenant)
            .ok_or_else(|| CommandError::unknown_tenant(&connector.tenant))?;
        let Some(position) = tenant.connectors.iter().position(same_claim) else {
            return Err(CommandError::not_found(
                if connector.cidr.is_some() { "cidr" } else { "cert_name" },
                format!("tenant {:?} has no connector {}", connector.tenant, connector.describe()),
            ));
        };
        self.tenant_mut(&connector.tenant)?.connectors.remove(position);
        let message = format!(
            "connector {} removed: mail from it is no longer attributed to {}",
            connector.describe(),
            connector.tenant
        );
        self.raise(&connector.tenant, EventKind::ConnectorRemoved, None, message, at);
        self.change_connector(connector, false);
        Ok(Applied::ConnectorRemoved)
    }

    /// One step of the retention sweep, by the policy in force at `at` (see `retention`).
    /// Applied in a batch of its own, so the stored state it reads is the whole state.
    fn sweep(&mut self, resume: Option<SweepCursor>, budget: u32, at: Timestamp) -> Result<Response, StoreError> {
        let retention = self.policy().retention;
        let found = retention::find(self.store, &retention, at, resume, budget)?;
        for key in &found.events {
            self.deleted.push((CF_EVENTS, key.clone()));
            self.deleted.push((CF_PENDING_EVENTS, key.clone()));
        }
        for key in &found.servers {
            self.servers.insert(key.clone(), None);
        }
        for key in &found.count_flushes {
            self.deleted.push((CF_META, key.clone()));
        }
        for (key, flush) in found.unstamped {
            self.flushes.insert(key, LastFlush { at: Some(at), ..flush });
        }
        for (tenant, servers) in &found.forgotten {
            let message = retention::forgotten_message(servers, &retention);
            self.raise(tenant, EventKind::ServersForgotten, None, message, at);
        }
        Ok(Ok(Applied::Swept {
            servers: found.servers.len(),
            events: found.events.len(),
            count_flushes: found.count_flushes.len(),
            resume: found.resume,
        }))
    }

    fn add_connector(&mut self, connector: Connector) -> Response {
        let same_claim = |c: &Connector| c.claims(connector.cidr, connector.cert_name.as_deref());
        if let Some(owner) = self
            .connectors
            .claimants(connector.cidr, connector.cert_name.as_deref())
            .find(|c| c.tenant != connector.tenant)
        {
            return Err(CommandError {
                kind: ErrorKind::AlreadyExists,
                field: if connector.cidr.is_some() { "cidr" } else { "cert_name" }.into(),
                message: format!("{} already belongs to tenant {:?}", connector.describe(), owner.tenant),
            });
        }
        let tenant = self.tenant_mut(&connector.tenant)?;
        if tenant.connectors.iter().any(same_claim) {
            return Ok(Applied::ConnectorAdded { created: false });
        }
        tenant.connectors.push(connector.clone());
        self.change_connector(connector, true);
        Ok(Applied::ConnectorAdded { created: true })
    }

    /// Keeps the connector table in step with a tenant's list, and journals the change.
    fn change_connector(&mut self, connector: Connector, added: bool) {
        match added {
            true => self.connectors.insert(connector.clone()),
            false => self.connectors.remove(&connector),
        };
        self.connector_changes.push(ConnectorChange {
            index: self.index,
            connector,
            added,
        });
    }

    /// Applies one piece of evidence about a server, seen at `seen_at` by the node that
    /// decided the message: creates the server if new, and moves its episode, whose
    /// instants are the entry's stamp `at`. Evidence older than the episode's last change
    /// (a sighting queued before a remediation, a late counter flush) moves nothing, and
    /// evidence older than a decommission is not the server's at all (`None`): nothing
    /// applied later moves a record backwards.
    fn record_sighting(
        &mut self,
        tenant: &str,
        server_fqdn: &str,
        build: &str,
        seen_at: Timestamp,
        at: Timestamp,
    ) -> Result<Option<(ServerEntry, SightingEffect)>, StoreError> {
        let status = classify(&self.policy().products, build).clock_status();
        let relapse_window = Duration::days(i64::from(self.policy().relapse_window_days));
        let seen_at = seen_at.min(at);
        let mut entry = match self.server(tenant, server_fqdn)? {
            Some(entry) if entry.decommissioned_at.is_some_and(|gone| seen_at < gone) => return Ok(None),
            Some(entry) if !entry.is_decommissioned() => entry,
            _ => ServerEntry::new(tenant, server_fqdn, build, seen_at),
        };
        let current = entry.record.episode.as_ref().is_none_or(|e| seen_at >= e.last_change());
        let effect = match current {
            true => Episode::sight(&mut entry.record.episode, Sighting { status, at }, relapse_window),
            false => SightingEffect::Unchanged,
        };
        if seen_at >= entry.record.last_seen {
            entry.record.last_seen = seen_at;
            entry.record.build = build.to_owned();
        }
        Ok(Some((entry, effect)))
    }

    fn sight(&mut self, sightings: Vec<ServerSighting>, at: Timestamp) -> Result<Response, StoreError> {
        let mut changed = 0;
        for sighting in sightings {
            if !self.is_evidence_for(&sighting.tenant, sighting.seen_at) {
                continue;
            }
            let recorded = self.record_sighting(&sighting.tenant, &sighting.server_fqdn, &sighting.build, sighting.seen_at, at)?;
            if let Some((mut entry, effect)) = recorded {
                changed += usize::from(effect != SightingEffect::Unchanged);
                self.raise_for_sighting(&mut entry, effect, at);
                self.put_server(entry);
            }
        }
        Ok(Ok(Applied::Sighted { changed }))
    }

    /// Adds counted messages to their servers and to their tenants' day.
    fn observe(&mut self, observations: Vec<Observation>, at: Timestamp) -> Result<Response, StoreError> {
        let day = at.format("%Y-%m-%d").to_string();
        let mut servers = 0;
        for observation in observations {
            if !self.is_evidence_for(&observation.tenant, observation.last_seen) {
                continue;
            }
            let recorded = self.record_sighting(
                &observation.tenant,
                &observation.server_fqdn,
                &observation.build,
                observation.last_seen,
                at,
            )?;
            let mut total = Counts::default();
            observation.counts.iter().for_each(|(_, counts)| total.add(*counts));
            // Counts from before a decommission still count for the tenant's day, not the server.
            if let Some((mut entry, effect)) = recorded {
                self.raise_for_sighting(&mut entry, effect, at);
                for (stage, counts) in &observation.counts {
                    entry.counters.entry(*stage).or_default().add(*counts);
                }
                self.put_server(entry);
                servers += 1;
            }
            self.tenant_mut(&observation.tenant)
                .expect("checked above")
                .count_day(day.clone(), total);
        }
        Ok(Ok(Applied::Observed { servers }))
    }

    /// Whether evidence seen at `seen_at` is the tenant's: not if no tenant has the name
    /// (removed since, or never attributed by this cluster), nor if it was seen before the
    /// tenant was added (a late flush or sighting of a removed tenant of the same name: a
    /// name added again starts from nothing).
    fn is_evidence_for(&self, tenant: &str, seen_at: Timestamp) -> bool {
        self.tenants.get(tenant).is_some_and(|t| seen_at >= t.created_at)
    }

    /// The last counted flush kept under `key` (see `flush_key`, `count_key`).
    fn last_flush(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.flushes.get(key) {
            Some(flush) => Ok(Some(flush.flush_id)),
            None => Ok(self.store.get::<LastFlush>(CF_META, key)?.map(|f| f.flush_id)),
        }
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
        let mut entry = match self.server(&tenant, &server_fqdn)? {
            Some(entry) if !entry.is_decommissioned() => entry,
            _ => ServerEntry::new(&tenant, &server_fqdn, &build, first_seen),
        };
        entry.record.build = build;
        entry.record.episode = Some(Episode::starting(first_seen));
        // The import is evidence that the server is there now: retention counts from it, not
        // from its first sighting, which may be years back.
        entry.record.last_seen = entry.record.last_seen.max(at);
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

    /// Takes a server out of the report. What remains is a tombstone with the instant, so
    /// that evidence from before it (a late flush) cannot bring the server back.
    fn decommission(&mut self, tenant: &str, server_fqdn: &str, at: Timestamp) -> Result<Response, StoreError> {
        if !self.tenants.contains_key(tenant) {
            return Ok(Err(CommandError::unknown_tenant(tenant)));
        }
        let Some(entry) = self.server(tenant, server_fqdn)?.filter(|e| !e.is_decommissioned()) else {
            return Ok(Err(CommandError::not_found(
                "server_fqdn",
                format!("tenant {tenant:?} has no server {server_fqdn:?}"),
            )));
        };
        let mut tombstone = ServerEntry::new(tenant, server_fqdn, &entry.record.build, entry.record.last_seen);
        tombstone.decommissioned_at = Some(at);
        self.put_server(tombstone);
        Ok(Ok(Applied::Decommissioned))
    }

    fn pause(
        &mut self,
        tenant: &str,
        days: u32,
        servers: &[String],
        request_id: Option<&str>,
        at: Timestamp,
    ) -> Result<Response, StoreError> {
        for server in servers {
            if self.server(tenant, server)?.is_none_or(|entry| entry.is_decommissioned()) {
                let message = format!("tenant {tenant:?} has no server {server}");
                return Ok(Err(CommandError::not_found("servers", message)));
            }
        }
        let budget = self.policy().pause_budget_days;
        let ledger = &mut match self.tenant_mut(tenant) {
            Ok(tenant) => tenant,
            Err(refusal) => return Ok(Err(refusal)),
        }
        .pauses;
        let retried = request_id.is_some_and(|id| ledger.grants().contains_key(id));
        let scopes: Vec<Option<&str>> = match servers {
            [] => vec![None],
            named => named.iter().map(|s| Some(s.as_str())).collect(),
        };
        let until = |ledger: &PauseLedger, scope: Option<&str>| match scope {
            None => ledger.paused_until(at),
            Some(server) => ledger.server_paused_until(server, at),
        };
        let extended: Vec<bool> = scopes.iter().map(|scope| until(ledger, *scope).is_some()).collect();
        let grant = match ledger.request(budget, days, servers, request_id, at) {
            Ok(grant) => grant,
            Err(error @ PauseError::OverBudget { .. }) => return Ok(Err(CommandError::precondition("days", error.to_string()))),
            Err(error) => return Ok(Err(CommandError::invalid("days", error.to_string()))),
        };
        let ends: Vec<_> = scopes.iter().map(|scope| until(ledger, *scope)).collect();
        if !retried {
            for ((scope, extended), end) in scopes.into_iter().zip(extended).zip(ends) {
                let until = end.expect("just paused").to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let what = scope.map_or_else(|| "enforcement".to_owned(), |server| format!("enforcement of {server}"));
                let (kind, message) = if extended {
                    (
                        EventKind::PauseExtended,
                        format!("{what} pause extended by {days} days, until {until}"),
                    )
                } else {
                    (EventKind::PauseStarted, format!("{what} paused for {days} days, until {until}"))
                };
                self.raise(tenant, kind, scope, message, at);
            }
        }
        Ok(Ok(Applied::Paused { grant }))
    }

    fn end_pause(&mut self, tenant: &str, server: Option<&str>, at: Timestamp) -> Response {
        let budget = self.policy().pause_budget_days;
        let ledger = &mut self.tenant_mut(tenant)?.pauses;
        match ledger.end(server, at) {
            Ok(end) => {
                let remaining_days = ledger.remaining_days(budget, at);
                let what = server.map_or_else(|| "enforcement".to_owned(), |server| format!("enforcement of {server}"));
                let message = format!("{what} pause ended early; {} unused days returned", end.refunded_days);
                self.raise(tenant, EventKind::PauseEnded, server, message, at);
                Ok(Applied::PauseEnded {
                    ended_at: end.ended_at,
                    refunded_days: end.refunded_days,
                    remaining_days,
                })
            }
            Err(error) => match server {
                Some(_) => Err(CommandError::precondition("server", error.to_string())),
                None => Err(CommandError::precondition("tenant", format!("tenant {tenant:?} is not paused"))),
            },
        }
    }

    /// A policy in force at once, or scheduled: a later schedule replaces an earlier one
    /// still pending, and a policy in force at once leaves a pending one in place.
    fn set_policy(&mut self, policy: Policy, effective_at: Option<Timestamp>, index: u64, at: Timestamp) -> Response {
        policy.validate().map_err(|e| CommandError::invalid("policy", e.to_string()))?;
        if let Some(effective_at) = effective_at.filter(|t| *t <= at) {
            return Err(CommandError::invalid(
                "effective_at",
                format!(
                    "{} is not in the future (the change committed at {})",
                    effective_at.to_rfc3339(),
                    at.to_rfc3339()
                ),
            ));
        }
        let version = VersionedPolicy {
            version: index,
            policy,
            effective_at,
        };
        let schedule = Arc::make_mut(&mut self.policy);
        match effective_at {
            Some(_) => schedule.pending = Some(version),
            None => schedule.current = version,
        }
        self.policy_changed = true;
        Ok(Applied::PolicySet {
            version: index,
            effective_at,
        })
    }

    /// Sets the tenant's mode; the mode it has already is a no-op that succeeds, and raises
    /// no event.
    fn set_tenant_mode(&mut self, tenant: &str, mode: TenantMode, at: Timestamp) -> Response {
        let record = self.tenants.get(tenant).ok_or_else(|| CommandError::unknown_tenant(tenant))?;
        let was = record.mode;
        if was == mode {
            return Ok(Applied::Nothing);
        }
        self.tenant_mut(tenant)?.mode = mode;
        let message = match mode {
            TenantMode::ReportOnly => format!("enforcement mode changed from {was} to {mode}: verdicts are reported, mail is accepted"),
            TenantMode::Enforce => format!("enforcement mode changed from {was} to {mode}: verdicts are given again"),
        };
        self.raise(tenant, EventKind::ModeChanged, None, message, at);
        Ok(Applied::Nothing)
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

    /// Marks the tenant's undelivered events with these ids delivered. Pending events are
    /// read through the batch: an event raised earlier in the same batch is found, so the
    /// outcome does not depend on where batch boundaries fall.
    fn mark_delivered(&mut self, tenant: &str, ids: &[String]) -> Result<Response, StoreError> {
        if !self.tenants.contains_key(tenant) {
            return Ok(Err(CommandError::unknown_tenant(tenant)));
        }
        let mut pending = BTreeMap::new();
        for key in self.store.keys_with_prefix(CF_PENDING_EVENTS, &tenant_prefix(tenant))? {
            if let Some(event) = self.store.get::<Event>(CF_EVENTS, &key)? {
                pending.insert(key, event);
            }
        }
        for (key, event) in self.events.iter().filter(|(_, e)| e.tenant == tenant) {
            pending.insert(key.clone(), event.clone());
        }
        let mut marked = 0;
        for (key, mut event) in pending {
            if !event.delivered && ids.contains(&event.id) {
                event.delivered = true;
                self.events.push((key, event));
                marked += 1;
            }
        }
        Ok(Ok(Applied::MarkedDelivered { events: marked }))
    }
}
