//! What clients propose to the replicated state machine, and what apply answers.
//!
//! Every command travels in a `Request` stamped with the proposing node's clock; apply
//! uses that stamp (never its own clock), raised to the previous entry's stamp so that
//! time in the log never runs backwards. Each command's fields are checked by `validate`
//! before it is proposed, so that bad input is refused with the field named and never
//! reaches the log; apply checks what depends on state (does the tenant exist?).

use ipnet::IpNet;
use ratchet_policy::{Policy, TenantMode, Timestamp};
use serde::{Deserialize, Serialize};

use crate::model::{Counts, EventKind};
use crate::retention::{SweepCursor, MAX_SWEEP_BUDGET};

/// Longest tenant name, server FQDN (RFC 1035), build string, request id and certificate name.
pub const MAX_TENANT_LEN: usize = 64;
pub const MAX_FQDN_LEN: usize = 253;
pub const MAX_BUILD_LEN: usize = 64;
pub const MAX_REQUEST_ID_LEN: usize = 128;
pub const MAX_CERT_NAME_LEN: usize = 253;
/// Observations in one counter flush; a caller with more flushes several entries.
pub const MAX_OBSERVATIONS: usize = 10_000;
/// Sightings in one entry; a node with more proposes several.
pub const MAX_SIGHTINGS: usize = 10_000;
/// Notices in one entry; a scan that finds more proposes several, so that no entry grows
/// past what one Raft message carries.
pub const MAX_NOTICES: usize = 10_000;
/// Servers one pause request may name.
pub const MAX_PAUSED_SERVERS: usize = 1_000;
pub const MAX_MESSAGE_LEN: usize = 1024;
pub const MAX_URL_LEN: usize = 2048;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// When the proposing node created the request.
    pub at: Timestamp,
    pub command: Command,
    /// The W3C `traceparent` of the span that proposed it, when trace export is on: the
    /// apply span of this entry joins that trace (see `state_machine`). Not part of what
    /// the command means; absent from entries written without tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    /// Who asked for it (an operator's certificate identity): set on admin writes, which
    /// apply then records in the audit trail with their outcome; `None` for the system's
    /// own writes (sightings, counts, notices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Command {
    AddTenant {
        name: String,
    },
    /// A source range, a certificate name, or both; `None` and `None` is refused.
    AddConnector {
        tenant: String,
        cidr: Option<IpNet>,
        cert_name: Option<String>,
    },
    /// Messages from servers that change their episodes (first seen, remediated,
    /// relapsed), gathered by one node and committed in the background, many per entry.
    /// Apply is insert-if-absent: a repeated or late sighting never moves first-seen.
    Sight {
        sightings: Vec<ServerSighting>,
    },
    /// Counters and last-seen of many servers, aggregated by one decider, as deciders
    /// wrote them before edges counted (see `Count`). Still applied as before, so that
    /// older logs replay to the same state: a flush resent with the same `flush_id` after
    /// an ambiguous failure is counted once.
    Observe {
        node_id: u64,
        flush_id: u64,
        observations: Vec<Observation>,
    },
    /// What one edge process answered (its verdicts, per server and stage) since its last
    /// flush. `origin` is drawn by the edge when it starts and `sequence` numbers its
    /// flushes from 1: a flush is counted only above the origin's last counted sequence,
    /// so a resent flush, or a late copy still being retried through another decider,
    /// counts once.
    Count {
        origin: u64,
        sequence: u64,
        observations: Vec<Observation>,
    },
    ImportServer {
        tenant: String,
        server_fqdn: String,
        build: String,
        first_seen: Timestamp,
    },
    Decommission {
        tenant: String,
        server_fqdn: String,
    },
    /// Pauses the tenant, or only the servers named (charged `days` each).
    Pause {
        tenant: String,
        days: u32,
        servers: Vec<String>,
        request_id: Option<String>,
    },
    /// Ends the tenant-wide pause, or the named server's own.
    EndPause {
        tenant: String,
        server: Option<String>,
    },
    /// A new policy, in force from its commit, or from `effective_at` if given (which
    /// must lie after the entry's own time).
    SetPolicy {
        policy: Box<Policy>,
        effective_at: Option<Timestamp>,
    },
    /// Where to POST the tenant's events; `None` stops delivery.
    SetWebhook {
        tenant: String,
        url: Option<String>,
        /// The signing key, drawn by the node that took the request; `None` with no url.
        secret: Option<String>,
    },
    /// Time-driven notices found by the leader's scan; each key is raised once.
    Notify {
        notices: Vec<Notice>,
    },
    /// Events the webhook has taken.
    MarkDelivered {
        tenant: String,
        ids: Vec<String>,
    },
    /// An admin action that is not itself a command (a membership change, a request
    /// refused before it reached the log): recorded in the audit trail, nothing else.
    Audit {
        action: String,
        tenant: Option<String>,
        outcome: String,
    },
    /// Whether the tenant's verdicts are given or only reported; setting the mode it has
    /// already changes nothing.
    SetTenantMode {
        tenant: String,
        mode: TenantMode,
    },
    /// Deletes a tenant and everything kept under it (connectors, servers, pauses, counts,
    /// webhook, notices, events); its audit records stay. The name may be added again, afresh.
    RemoveTenant {
        tenant: String,
    },
    /// Deletes exactly the connector with this claim, as `AddConnector` made it.
    RemoveConnector {
        tenant: String,
        cidr: Option<IpNet>,
        cert_name: Option<String>,
    },
    /// One step of the retention sweep (see `retention`): `resume` is where the previous
    /// step of the pass stopped (`None`: a new pass), `budget` the most records it looks at.
    Sweep {
        resume: Option<SweepCursor>,
        budget: u32,
    },
}

/// A notice that the clock, not a command, brought about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub tenant: String,
    /// Set for a server's notice; `None` for the tenant's own.
    pub server_fqdn: Option<String>,
    /// Raised at most once per server episode (or tenant): the event id derives from it.
    pub key: String,
    pub kind: EventKind,
    pub message: String,
}

/// One message's evidence about a server's episode, as the deciding node saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerSighting {
    pub tenant: String,
    pub server_fqdn: String,
    pub build: String,
    /// When the deciding node saw it (its clock): older than the episode's last change,
    /// it changes nothing.
    pub seen_at: Timestamp,
}

/// What one node saw of one server since its last flush.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub tenant: String,
    pub server_fqdn: String,
    /// The build of the latest message.
    pub build: String,
    pub last_seen: Timestamp,
    /// Messages by the stage they were decided in (0: no stage).
    pub counts: Vec<(u32, Counts)>,
}

/// A successful apply.
/// Externally tagged: an internally tagged enum cannot carry maps with integer keys
/// (the counters) through serde_json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// Membership changes and blank entries.
    Nothing,
    TenantAdded {
        created: bool,
    },
    ConnectorAdded {
        created: bool,
    },
    Server {
        entry: Box<crate::model::ServerEntry>,
    },
    /// Sightings applied, and how many changed an episode.
    Sighted {
        changed: usize,
    },
    Observed {
        servers: usize,
    },
    Decommissioned,
    Paused {
        grant: ratchet_policy::PauseGrant,
    },
    PauseEnded {
        ended_at: Timestamp,
        refunded_days: u32,
        remaining_days: u32,
    },
    PolicySet {
        version: u64,
        effective_at: Option<Timestamp>,
    },
    WebhookSet,
    Notified {
        events: usize,
    },
    MarkedDelivered {
        events: usize,
    },
    TenantRemoved,
    ConnectorRemoved,
    /// What one sweep step deleted, and where the pass goes on (`None`: it is over).
    Swept {
        servers: usize,
        events: usize,
        count_flushes: usize,
        resume: Option<SweepCursor>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
}

/// A refusal: nothing was written. `field` names the request field at fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CommandError {
    pub kind: ErrorKind,
    pub field: String,
    pub message: String,
}

pub type Response = Result<Applied, CommandError>;

impl CommandError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        CommandError {
            kind: ErrorKind::InvalidArgument,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn not_found(field: &str, message: impl Into<String>) -> Self {
        CommandError {
            kind: ErrorKind::NotFound,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn precondition(field: &str, message: impl Into<String>) -> Self {
        CommandError {
            kind: ErrorKind::FailedPrecondition,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn unknown_tenant(name: &str) -> Self {
        Self::not_found("tenant", format!("no tenant named {name:?}"))
    }
}

/// Checks a tenant name: 1 to 64 of lower-case letters, digits, '-', '_' and '.'.
pub fn validate_tenant(field: &str, name: &str) -> Result<(), CommandError> {
    validate_nonempty(field, name, MAX_TENANT_LEN)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(CommandError::invalid(
            field,
            format!("{name:?} may hold only a-z, 0-9, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Checks a server FQDN (already lower-cased): 1 to 253 bytes of host-name characters.
pub fn validate_fqdn(field: &str, fqdn: &str) -> Result<(), CommandError> {
    validate_nonempty(field, fqdn, MAX_FQDN_LEN)?;
    if !fqdn.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(CommandError::invalid(field, format!("{fqdn:?} is not a host name")));
    }
    Ok(())
}

/// Checks a webhook URL: http or https, no spaces, at most 2048 bytes.
pub fn validate_url(url: &str) -> Result<(), CommandError> {
    validate_nonempty("url", url, MAX_URL_LEN)?;
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.chars().any(char::is_whitespace) {
        return Err(CommandError::invalid("url", format!("{url:?} is not an http:// or https:// URL")));
    }
    Ok(())
}

fn validate_len(field: &str, value: &str, max: usize) -> Result<(), CommandError> {
    if value.len() > max {
        return Err(CommandError::invalid(
            field,
            format!("is {} bytes long, over the limit of {max}", value.len()),
        ));
    }
    Ok(())
}

fn validate_count(field: &str, count: usize, max: usize) -> Result<(), CommandError> {
    if count > max {
        return Err(CommandError::invalid(field, format!("{count} is over the limit of {max}")));
    }
    Ok(())
}

fn validate_nonempty(field: &str, value: &str, max: usize) -> Result<(), CommandError> {
    if value.trim().is_empty() {
        return Err(CommandError::invalid(field, "must not be empty"));
    }
    validate_len(field, value, max)
}

/// A connector's claim in words ("10.0.0.0/8 cert_name=mx.bear.example").
fn claim(tenant: &str, cidr: &Option<IpNet>, cert_name: &Option<String>) -> String {
    let connector = crate::model::Connector {
        tenant: tenant.to_owned(),
        cidr: *cidr,
        cert_name: cert_name.clone(),
    };
    connector.describe()
}

impl Command {
    /// The existing tenant this command acts on, if it acts on one.
    pub fn target_tenant(&self) -> Option<&str> {
        match self {
            Command::AddTenant { .. }
            | Command::Sight { .. }
            | Command::Observe { .. }
            | Command::Count { .. }
            | Command::SetPolicy { .. }
            | Command::Notify { .. }
            | Command::Audit { .. }
            | Command::Sweep { .. } => None,
            Command::AddConnector { tenant, .. }
            | Command::RemoveTenant { tenant }
            | Command::RemoveConnector { tenant, .. }
            | Command::ImportServer { tenant, .. }
            | Command::Decommission { tenant, .. }
            | Command::Pause { tenant, .. }
            | Command::EndPause { tenant, .. }
            | Command::SetWebhook { tenant, .. }
            | Command::MarkDelivered { tenant, .. }
            | Command::SetTenantMode { tenant, .. } => Some(tenant),
        }
    }

    /// Whether applying it can change the verdict for a question a front already asked
    /// (the same client, server and build), other than by time passing: readers that keep
    /// verdicts until their `valid_until` drop them (see `StateView::verdicts_changed`).
    /// A sighting is not among these: the Decide that sees it answers from its outcome.
    pub fn changes_verdicts(&self) -> bool {
        match self {
            Command::AddConnector { .. }
            | Command::RemoveConnector { .. }
            | Command::RemoveTenant { .. }
            | Command::ImportServer { .. }
            | Command::Decommission { .. }
            | Command::Pause { .. }
            | Command::EndPause { .. }
            | Command::SetPolicy { .. }
            | Command::SetTenantMode { .. } => true,
            Command::AddTenant { .. }
            | Command::Sight { .. }
            | Command::Observe { .. }
            | Command::Count { .. }
            | Command::SetWebhook { .. }
            | Command::Notify { .. }
            | Command::MarkDelivered { .. }
            | Command::Audit { .. }
            | Command::Sweep { .. } => false,
        }
    }

    /// Whether apply runs it in a write batch of its own: it reads stored records past the
    /// changes pending in a batch (a sweep), or deletes key ranges that later entries of
    /// the same batch must not read through (a tenant's removal).
    pub fn applies_alone(&self) -> bool {
        matches!(self, Command::RemoveTenant { .. } | Command::Sweep { .. })
    }

    /// Checks every field that can be checked without the state.
    pub fn validate(&self, at: Timestamp) -> Result<(), CommandError> {
        match self {
            Command::AddTenant { name } => validate_tenant("name", name),
            Command::AddConnector { tenant, cidr, cert_name } | Command::RemoveConnector { tenant, cidr, cert_name } => {
                validate_tenant("tenant", tenant)?;
                if cidr.is_none() && cert_name.is_none() {
                    return Err(CommandError::invalid(
                        "cidr",
                        "a connector needs a source range (cidr), a certificate name (cert_name), or both",
                    ));
                }
                cert_name
                    .as_deref()
                    .map_or(Ok(()), |name| validate_nonempty("cert_name", name, MAX_CERT_NAME_LEN))
            }
            Command::Sight { sightings } => {
                validate_count("sightings", sightings.len(), MAX_SIGHTINGS)?;
                sightings.iter().try_for_each(|s| {
                    validate_tenant("sightings.tenant", &s.tenant)?;
                    validate_fqdn("sightings.server_fqdn", &s.server_fqdn)?;
                    validate_len("sightings.build", &s.build, MAX_BUILD_LEN)
                })
            }
            Command::Count { origin: 0, .. } => Err(CommandError::invalid("origin", "must not be 0")),
            Command::Count { sequence: 0, .. } => Err(CommandError::invalid("sequence", "must start at 1")),
            Command::Observe { observations, .. } | Command::Count { observations, .. } => {
                validate_count("observations", observations.len(), MAX_OBSERVATIONS)?;
                observations.iter().try_for_each(|o| {
                    validate_tenant("observations.tenant", &o.tenant)?;
                    validate_fqdn("observations.server_fqdn", &o.server_fqdn)?;
                    validate_len("observations.build", &o.build, MAX_BUILD_LEN)
                })
            }
            Command::ImportServer {
                tenant,
                server_fqdn,
                build,
                first_seen,
            } => {
                validate_tenant("tenant", tenant)?;
                validate_fqdn("server_fqdn", server_fqdn)?;
                validate_nonempty("build", build, MAX_BUILD_LEN)?;
                if *first_seen > at {
                    return Err(CommandError::invalid(
                        "first_seen",
                        format!("{} is in the future", first_seen.to_rfc3339()),
                    ));
                }
                Ok(())
            }
            Command::Decommission { tenant, server_fqdn } => {
                validate_tenant("tenant", tenant)?;
                validate_fqdn("server_fqdn", server_fqdn)
            }
            Command::Pause {
                tenant,
                days,
                servers,
                request_id,
            } => {
                validate_tenant("tenant", tenant)?;
                if *days == 0 {
                    return Err(CommandError::invalid("days", "must be at least 1"));
                }
                validate_count("servers", servers.len(), MAX_PAUSED_SERVERS)?;
                for (n, server) in servers.iter().enumerate() {
                    validate_fqdn("servers", server)?;
                    if servers[..n].contains(server) {
                        return Err(CommandError::invalid("servers", format!("{server} is named twice")));
                    }
                }
                request_id
                    .as_deref()
                    .map_or(Ok(()), |id| validate_nonempty("request_id", id, MAX_REQUEST_ID_LEN))
            }
            Command::EndPause { tenant, server } => {
                validate_tenant("tenant", tenant)?;
                server.as_deref().map_or(Ok(()), |server| validate_fqdn("server", server))
            }
            Command::SetPolicy { policy, .. } => policy.validate().map_err(|e| CommandError::invalid("policy", e.to_string())),
            Command::SetWebhook { tenant, url, secret } => {
                validate_tenant("tenant", tenant)?;
                if url.is_some() != secret.is_some() {
                    return Err(CommandError::invalid("secret", "a webhook url and its signing secret go together"));
                }
                secret
                    .as_deref()
                    .map_or(Ok(()), |s| validate_nonempty("secret", s, MAX_REQUEST_ID_LEN))?;
                url.as_deref().map_or(Ok(()), validate_url)
            }
            Command::Notify { notices } => {
                validate_count("notices", notices.len(), MAX_NOTICES)?;
                notices.iter().try_for_each(|n| {
                    validate_tenant("notices.tenant", &n.tenant)?;
                    validate_len("notices.key", &n.key, MAX_FQDN_LEN + 64)?;
                    validate_len("notices.message", &n.message, MAX_MESSAGE_LEN)
                })
            }
            Command::MarkDelivered { tenant, .. } | Command::SetTenantMode { tenant, .. } | Command::RemoveTenant { tenant } => {
                validate_tenant("tenant", tenant)
            }
            Command::Sweep { budget, .. } => match *budget {
                1..=MAX_SWEEP_BUDGET => Ok(()),
                _ => Err(CommandError::invalid(
                    "budget",
                    format!("{budget} is not between 1 and {MAX_SWEEP_BUDGET}"),
                )),
            },
            Command::Audit { action, tenant, outcome } => {
                validate_nonempty("action", action, MAX_MESSAGE_LEN)?;
                validate_len("outcome", outcome, MAX_MESSAGE_LEN)?;
                tenant.as_deref().map_or(Ok(()), |t| validate_len("tenant", t, MAX_TENANT_LEN))
            }
        }
    }

    /// What the command does, in one line for the audit trail (no secrets in it).
    pub fn describe(&self) -> String {
        match self {
            Command::AddTenant { name } => format!("tenant add {name}"),
            Command::AddConnector { tenant, cidr, cert_name } => format!("connector add {}", claim(tenant, cidr, cert_name)),
            Command::RemoveConnector { tenant, cidr, cert_name } => {
                format!("connector remove {}", claim(tenant, cidr, cert_name))
            }
            Command::RemoveTenant { tenant } => format!("tenant remove {tenant}"),
            Command::Sweep { .. } => "retention sweep".into(),
            Command::Sight { sightings } => format!("sight {} servers", sightings.len()),
            Command::Observe { observations, .. } => format!("observe {} servers", observations.len()),
            Command::Count { observations, .. } => format!("count {} servers", observations.len()),
            Command::ImportServer {
                server_fqdn, first_seen, ..
            } => format!("server import {server_fqdn} first_seen={}", first_seen.to_rfc3339()),
            Command::Decommission { server_fqdn, .. } => format!("server decommission {server_fqdn}"),
            Command::Pause {
                days, servers, request_id, ..
            } => {
                let servers: String = servers.iter().map(|s| format!(" server={s}")).collect();
                match request_id {
                    Some(id) => format!("pause {days} days{servers} request_id={id}"),
                    None => format!("pause {days} days{servers}"),
                }
            }
            Command::EndPause { server, .. } => match server {
                Some(server) => format!("pause end server={server}"),
                None => "pause end".into(),
            },
            Command::SetPolicy { effective_at, .. } => match effective_at {
                Some(at) => format!("policy set effective_at={}", at.to_rfc3339()),
                None => "policy set".into(),
            },
            Command::SetWebhook { url, .. } => match url {
                Some(url) => format!("webhook set {url}"),
                None => "webhook off".into(),
            },
            Command::Notify { notices } => format!("notify {} notices", notices.len()),
            Command::MarkDelivered { ids, .. } => format!("mark delivered {} events", ids.len()),
            Command::Audit { action, .. } => action.clone(),
            Command::SetTenantMode { mode, .. } => format!("tenant mode {mode}"),
        }
    }
}
