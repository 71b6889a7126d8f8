//! Requests, the commands they carry, and what apply answers, in the stored schema.

use ipnet::IpNet;

use super::policy::{mode_number, tenant_mode_from};
use super::records::{event_kind, event_kind_from};
use super::{each, messages, optional, pb, required, Codec, DecodeError};
use crate::command::{Applied, Command, CommandError, ErrorKind, Notice, Observation, Request, Response, ServerSighting};
use crate::model::Counts;
use crate::retention::{SweepCursor, SweepPhase};

impl Codec for Request {
    type Message = pb::Request;

    fn to_message(&self) -> pb::Request {
        pb::Request {
            at: Some(self.at.to_message()),
            command: Some(self.command.to_message()),
            trace_parent: self.trace_parent.clone().unwrap_or_default(),
            actor: self.actor.clone().unwrap_or_default(),
        }
    }

    fn from_message(message: pb::Request) -> Result<Self, DecodeError> {
        Ok(Request {
            at: required("request.at", message.at)?,
            command: required("request.command", message.command)?,
            trace_parent: Some(message.trace_parent).filter(|t| !t.is_empty()),
            actor: Some(message.actor).filter(|a| !a.is_empty()),
        })
    }
}

/// A connector's range: empty for a certificate-only connector.
pub(super) fn parse_cidr(field: &'static str, cidr: &str) -> Result<Option<IpNet>, DecodeError> {
    if cidr.is_empty() {
        return Ok(None);
    }
    cidr.parse()
        .map(Some)
        .map_err(|_| DecodeError::invalid(field, format!("{cidr:?} is not a CIDR")))
}

pub(super) fn cidr_text(cidr: Option<IpNet>) -> String {
    cidr.map(|cidr| cidr.to_string()).unwrap_or_default()
}

impl Codec for Command {
    type Message = pb::Command;

    fn to_message(&self) -> pb::Command {
        use pb::command::Command as C;
        let command = match self.clone() {
            Command::AddTenant { name } => C::AddTenant(pb::AddTenant { name }),
            Command::AddConnector { tenant, cidr, cert_name } => C::AddConnector(pb::AddConnector {
                tenant,
                cidr: cidr_text(cidr),
                cert_name,
            }),
            Command::Sight { sightings } => C::Sight(pb::Sight {
                sightings: messages(&sightings),
            }),
            Command::Observe {
                node_id,
                flush_id,
                observations,
            } => C::Observe(pb::Observe {
                node_id,
                flush_id,
                observations: messages(&observations),
            }),
            Command::Count {
                origin,
                sequence,
                observations,
            } => C::CountFlush(pb::CountFlush {
                origin,
                sequence,
                observations: messages(&observations),
            }),
            Command::ImportServer {
                tenant,
                server_fqdn,
                build,
                first_seen,
            } => C::ImportServer(pb::ImportServer {
                tenant,
                server_fqdn,
                build,
                first_seen: Some(first_seen.to_message()),
            }),
            Command::Decommission { tenant, server_fqdn } => C::Decommission(pb::Decommission { tenant, server_fqdn }),
            Command::Pause {
                tenant,
                days,
                servers,
                request_id,
            } => C::Pause(pb::Pause {
                tenant,
                days,
                request_id,
                servers,
            }),
            Command::EndPause { tenant, server } => C::EndPause(pb::EndPause { tenant, server }),
            Command::SetPolicy { policy, effective_at } => C::SetPolicy(pb::SetPolicy {
                policy: Some(policy.to_message()),
                effective_at: effective_at.as_ref().map(Codec::to_message),
            }),
            Command::SetWebhook { tenant, url, secret } => C::SetWebhook(pb::SetWebhook { tenant, url, secret }),
            Command::Notify { notices } => C::Notify(pb::Notify {
                notices: messages(&notices),
            }),
            Command::MarkDelivered { tenant, ids } => C::MarkDelivered(pb::MarkDelivered { tenant, ids }),
            Command::Audit { action, tenant, outcome } => C::Audit(pb::Audit {
                action,
                tenant: tenant.unwrap_or_default(),
                outcome,
            }),
            Command::SetTenantMode { tenant, mode } => C::SetTenantMode(pb::SetTenantMode {
                tenant,
                mode: mode_number(mode.into()),
            }),
            Command::RemoveTenant { tenant } => C::RemoveTenant(pb::RemoveTenant { tenant }),
            Command::RemoveConnector { tenant, cidr, cert_name } => C::RemoveConnector(pb::RemoveConnector {
                tenant,
                cidr: cidr_text(cidr),
                cert_name,
            }),
            Command::Sweep { resume, budget } => C::Sweep(pb::Sweep {
                resume: resume.as_ref().map(Codec::to_message),
                budget,
            }),
        };
        pb::Command { command: Some(command) }
    }

    fn from_message(message: pb::Command) -> Result<Self, DecodeError> {
        use pb::command::Command as C;
        let command = message.command.ok_or_else(|| {
            DecodeError::invalid(
                "command",
                "a command this release does not know (written by a newer one): upgrade this node",
            )
        })?;
        Ok(match command {
            C::AddTenant(c) => Command::AddTenant { name: c.name },
            C::AddConnector(c) => Command::AddConnector {
                cidr: parse_cidr("add_connector.cidr", &c.cidr)?,
                tenant: c.tenant,
                cert_name: c.cert_name,
            },
            C::Sight(c) => Command::Sight {
                sightings: each(c.sightings)?,
            },
            C::Observe(c) => Command::Observe {
                node_id: c.node_id,
                flush_id: c.flush_id,
                observations: each(c.observations)?,
            },
            C::CountFlush(c) => Command::Count {
                origin: c.origin,
                sequence: c.sequence,
                observations: each(c.observations)?,
            },
            C::ImportServer(c) => Command::ImportServer {
                first_seen: required("import_server.first_seen", c.first_seen)?,
                tenant: c.tenant,
                server_fqdn: c.server_fqdn,
                build: c.build,
            },
            C::Decommission(c) => Command::Decommission {
                tenant: c.tenant,
                server_fqdn: c.server_fqdn,
            },
            C::Pause(c) => Command::Pause {
                tenant: c.tenant,
                days: c.days,
                servers: c.servers,
                request_id: c.request_id,
            },
            C::EndPause(c) => Command::EndPause {
                tenant: c.tenant,
                server: c.server,
            },
            C::SetPolicy(c) => Command::SetPolicy {
                policy: Box::new(required("set_policy.policy", c.policy)?),
                effective_at: optional(c.effective_at)?,
            },
            C::SetWebhook(c) => Command::SetWebhook {
                tenant: c.tenant,
                url: c.url,
                secret: c.secret,
            },
            C::Notify(c) => Command::Notify { notices: each(c.notices)? },
            C::MarkDelivered(c) => Command::MarkDelivered {
                tenant: c.tenant,
                ids: c.ids,
            },
            C::Audit(c) => Command::Audit {
                action: c.action,
                tenant: Some(c.tenant).filter(|t| !t.is_empty()),
                outcome: c.outcome,
            },
            C::SetTenantMode(c) => Command::SetTenantMode {
                mode: tenant_mode_from("set_tenant_mode.mode", c.mode)?,
                tenant: c.tenant,
            },
            C::RemoveTenant(c) => Command::RemoveTenant { tenant: c.tenant },
            C::RemoveConnector(c) => Command::RemoveConnector {
                cidr: parse_cidr("remove_connector.cidr", &c.cidr)?,
                tenant: c.tenant,
                cert_name: c.cert_name,
            },
            C::Sweep(c) => Command::Sweep {
                resume: optional(c.resume)?,
                budget: c.budget,
            },
        })
    }
}

impl Codec for ServerSighting {
    type Message = pb::ServerSighting;

    fn to_message(&self) -> pb::ServerSighting {
        pb::ServerSighting {
            tenant: self.tenant.clone(),
            server_fqdn: self.server_fqdn.clone(),
            build: self.build.clone(),
            seen_at: Some(self.seen_at.to_message()),
        }
    }

    fn from_message(message: pb::ServerSighting) -> Result<Self, DecodeError> {
        Ok(ServerSighting {
            seen_at: required("sighting.seen_at", message.seen_at)?,
            tenant: message.tenant,
            server_fqdn: message.server_fqdn,
            build: message.build,
        })
    }
}

impl Codec for Observation {
    type Message = pb::Observation;

    fn to_message(&self) -> pb::Observation {
        pb::Observation {
            tenant: self.tenant.clone(),
            server_fqdn: self.server_fqdn.clone(),
            build: self.build.clone(),
            last_seen: Some(self.last_seen.to_message()),
            counts: self
                .counts
                .iter()
                .map(|(stage, counts)| pb::StageCounts {
                    stage: *stage,
                    counts: Some(counts.to_message()),
                })
                .collect(),
        }
    }

    fn from_message(message: pb::Observation) -> Result<Self, DecodeError> {
        Ok(Observation {
            tenant: message.tenant,
            server_fqdn: message.server_fqdn,
            build: message.build,
            last_seen: required("observation.last_seen", message.last_seen)?,
            counts: stage_counts(message.counts)?,
        })
    }
}

/// Counts per stage, in the order given.
pub(super) fn stage_counts(counts: Vec<pb::StageCounts>) -> Result<Vec<(u32, Counts)>, DecodeError> {
    counts.into_iter().map(|c| Ok((c.stage, required("counts", c.counts)?))).collect()
}

impl Codec for Notice {
    type Message = pb::Notice;

    fn to_message(&self) -> pb::Notice {
        pb::Notice {
            tenant: self.tenant.clone(),
            server_fqdn: self.server_fqdn.clone(),
            key: self.key.clone(),
            kind: event_kind(self.kind),
            message: self.message.clone(),
        }
    }

    fn from_message(message: pb::Notice) -> Result<Self, DecodeError> {
        Ok(Notice {
            tenant: message.tenant,
            server_fqdn: message.server_fqdn,
            key: message.key,
            kind: event_kind_from(message.kind)?,
            message: message.message,
        })
    }
}

impl Codec for Response {
    type Message = pb::Response;

    fn to_message(&self) -> pb::Response {
        use pb::response::Outcome;
        pb::Response {
            outcome: Some(match self {
                Ok(applied) => Outcome::Applied(applied.to_message()),
                Err(error) => Outcome::Refused(error.to_message()),
            }),
        }
    }

    fn from_message(message: pb::Response) -> Result<Self, DecodeError> {
        use pb::response::Outcome;
        match message.outcome.ok_or(DecodeError::Missing("response.outcome"))? {
            Outcome::Applied(applied) => Ok(Ok(Applied::from_message(applied)?)),
            Outcome::Refused(error) => Ok(Err(CommandError::from_message(error)?)),
        }
    }
}

impl Codec for Applied {
    type Message = pb::Applied;

    fn to_message(&self) -> pb::Applied {
        use pb::applied::Applied as A;
        let count = |n: usize| pb::Count { count: n as u64 };
        let applied = match self {
            Applied::Nothing => A::Nothing(pb::Nothing {}),
            Applied::TenantAdded { created } => A::TenantAdded(pb::Created { created: *created }),
            Applied::ConnectorAdded { created } => A::ConnectorAdded(pb::Created { created: *created }),
            Applied::Server { entry } => A::Server(entry.to_message()),
            Applied::Observed { servers } => A::Observed(count(*servers)),
            Applied::Sighted { changed } => A::Sighted(count(*changed)),
            Applied::Decommissioned => A::Decommissioned(pb::Nothing {}),
            Applied::Paused { grant } => A::Paused(grant.to_message()),
            Applied::PauseEnded {
                ended_at,
                refunded_days,
                remaining_days,
            } => A::PauseEnded(pb::PauseEnded {
                ended_at: Some(ended_at.to_message()),
                refunded_days: *refunded_days,
                remaining_days: *remaining_days,
            }),
            Applied::PolicySet { version, effective_at } => A::PolicySet(pb::PolicySet {
                version: *version,
                effective_at: effective_at.as_ref().map(Codec::to_message),
            }),
            Applied::WebhookSet => A::WebhookSet(pb::Nothing {}),
            Applied::Notified { events } => A::Notified(count(*events)),
            Applied::MarkedDelivered { events } => A::MarkedDelivered(count(*events)),
            Applied::TenantRemoved => A::TenantRemoved(pb::Nothing {}),
            Applied::ConnectorRemoved => A::ConnectorRemoved(pb::Nothing {}),
            Applied::Swept {
                servers,
                events,
                count_flushes,
                resume,
            } => A::Swept(pb::Swept {
                servers: *servers as u64,
                events: *events as u64,
                count_flushes: *count_flushes as u64,
                resume: resume.as_ref().map(Codec::to_message),
            }),
        };
        pb::Applied { applied: Some(applied) }
    }

    fn from_message(message: pb::Applied) -> Result<Self, DecodeError> {
        use pb::applied::Applied as A;
        let count = |c: pb::Count| c.count as usize;
        Ok(match message.applied.ok_or(DecodeError::Missing("applied"))? {
            A::Nothing(_) => Applied::Nothing,
            A::TenantAdded(c) => Applied::TenantAdded { created: c.created },
            A::ConnectorAdded(c) => Applied::ConnectorAdded { created: c.created },
            A::Server(server) => Applied::Server {
                entry: Box::new(Codec::from_message(server)?),
            },
            A::Observed(c) => Applied::Observed { servers: count(c) },
            A::Sighted(c) => Applied::Sighted { changed: count(c) },
            A::Decommissioned(_) => Applied::Decommissioned,
            A::Paused(grant) => Applied::Paused {
                grant: Codec::from_message(grant)?,
            },
            A::PauseEnded(p) => Applied::PauseEnded {
                ended_at: required("pause_ended.ended_at", p.ended_at)?,
                refunded_days: p.refunded_days,
                remaining_days: p.remaining_days,
            },
            A::PolicySet(p) => Applied::PolicySet {
                version: p.version,
                effective_at: optional(p.effective_at)?,
            },
            A::WebhookSet(_) => Applied::WebhookSet,
            A::Notified(c) => Applied::Notified { events: count(c) },
            A::MarkedDelivered(c) => Applied::MarkedDelivered { events: count(c) },
            A::TenantRemoved(_) => Applied::TenantRemoved,
            A::ConnectorRemoved(_) => Applied::ConnectorRemoved,
            A::Swept(s) => Applied::Swept {
                servers: s.servers as usize,
                events: s.events as usize,
                count_flushes: s.count_flushes as usize,
                resume: optional(s.resume)?,
            },
        })
    }
}

impl Codec for SweepCursor {
    type Message = pb::SweepCursor;

    fn to_message(&self) -> pb::SweepCursor {
        let phase = match self.phase {
            SweepPhase::Events => pb::SweepPhase::Events,
            SweepPhase::Servers => pb::SweepPhase::Servers,
            SweepPhase::CountFlushes => pb::SweepPhase::CountFlushes,
        };
        pb::SweepCursor {
            phase: phase.into(),
            from: self.from.clone(),
        }
    }

    fn from_message(message: pb::SweepCursor) -> Result<Self, DecodeError> {
        let phase = match pb::SweepPhase::try_from(message.phase) {
            Ok(pb::SweepPhase::Events) => SweepPhase::Events,
            Ok(pb::SweepPhase::Servers) => SweepPhase::Servers,
            Ok(pb::SweepPhase::CountFlushes) => SweepPhase::CountFlushes,
            _ => {
                return Err(DecodeError::invalid(
                    "sweep_cursor.phase",
                    format!("{} is not a sweep phase this release knows", message.phase),
                ))
            }
        };
        Ok(SweepCursor { phase, from: message.from })
    }
}

impl Codec for CommandError {
    type Message = pb::CommandError;

    fn to_message(&self) -> pb::CommandError {
        let kind = match self.kind {
            ErrorKind::InvalidArgument => pb::ErrorKind::InvalidArgument,
            ErrorKind::NotFound => pb::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => pb::ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition => pb::ErrorKind::FailedPrecondition,
        };
        pb::CommandError {
            kind: kind.into(),
            field: self.field.clone(),
            message: self.message.clone(),
        }
    }

    fn from_message(message: pb::CommandError) -> Result<Self, DecodeError> {
        let kind = match pb::ErrorKind::try_from(message.kind) {
            Ok(pb::ErrorKind::InvalidArgument) => ErrorKind::InvalidArgument,
            Ok(pb::ErrorKind::NotFound) => ErrorKind::NotFound,
            Ok(pb::ErrorKind::AlreadyExists) => ErrorKind::AlreadyExists,
            Ok(pb::ErrorKind::FailedPrecondition) => ErrorKind::FailedPrecondition,
            _ => {
                return Err(DecodeError::invalid(
                    "command_error.kind",
                    format!("{} is not a kind of refusal", message.kind),
                ))
            }
        };
        Ok(CommandError {
            kind,
            field: message.field,
            message: message.message,
        })
    }
}
