//! The state machine's records in the stored schema: tenants (connectors, pause ledger,
//! daily counts), servers (episode, counters), events and the audit trail.

use std::collections::{BTreeMap, BTreeSet};

use ratchet_policy::clock::Interval;
use ratchet_policy::{Charge, Episode, Pause, PauseGrant, PauseLedger, ServerRecord, Timestamp};

use super::command::{cidr_text, parse_cidr, stage_counts};
use super::policy::{mode_number, tenant_mode_from};
use super::{each, messages, optional, pb, required, Codec, DecodeError};
use crate::model::{AuditRecord, Connector, Counts, Event, EventKind, LastFlush, ServerEntry, Tenant};

impl Codec for Tenant {
    type Message = pb::Tenant;

    fn to_message(&self) -> pb::Tenant {
        pb::Tenant {
            name: self.name.clone(),
            created_at: Some(self.created_at.to_message()),
            connectors: messages(&self.connectors),
            pauses: Some(self.pauses.to_message()),
            daily: self
                .daily
                .iter()
                .map(|(day, counts)| pb::DailyCounts {
                    day: day.clone(),
                    counts: Some(counts.to_message()),
                })
                .collect(),
            webhook_url: self.webhook_url.clone(),
            webhook_secret: self.webhook_secret.clone(),
            notices: self.notices.iter().cloned().collect(),
            mode: mode_number(self.mode.into()),
        }
    }

    fn from_message(message: pb::Tenant) -> Result<Self, DecodeError> {
        Ok(Tenant {
            name: message.name,
            created_at: required("tenant.created_at", message.created_at)?,
            connectors: each(message.connectors)?,
            pauses: optional(message.pauses)?.unwrap_or_default(),
            daily: message
                .daily
                .into_iter()
                .map(|d| Ok((d.day, required("tenant.daily.counts", d.counts)?)))
                .collect::<Result<_, DecodeError>>()?,
            webhook_url: message.webhook_url,
            webhook_secret: message.webhook_secret,
            notices: message.notices.into_iter().collect(),
            mode: tenant_mode_from("tenant.mode", message.mode)?,
        })
    }
}

impl Codec for Connector {
    type Message = pb::Connector;

    fn to_message(&self) -> pb::Connector {
        pb::Connector {
            tenant: self.tenant.clone(),
            cidr: cidr_text(self.cidr),
            cert_name: self.cert_name.clone(),
        }
    }

    fn from_message(message: pb::Connector) -> Result<Self, DecodeError> {
        Ok(Connector {
            cidr: parse_cidr("connector.cidr", &message.cidr)?,
            tenant: message.tenant,
            cert_name: message.cert_name,
        })
    }
}

impl Codec for Counts {
    type Message = pb::Counts;

    fn to_message(&self) -> pb::Counts {
        pb::Counts {
            accepted: self.accepted,
            throttled: self.throttled,
            blocked: self.blocked,
            would_throttle: self.would_throttle,
            would_block: self.would_block,
        }
    }

    fn from_message(message: pb::Counts) -> Result<Self, DecodeError> {
        Ok(Counts {
            accepted: message.accepted,
            throttled: message.throttled,
            blocked: message.blocked,
            would_throttle: message.would_throttle,
            would_block: message.would_block,
        })
    }
}

impl Codec for PauseLedger {
    type Message = pb::PauseLedger;

    fn to_message(&self) -> pb::PauseLedger {
        pb::PauseLedger {
            pauses: messages(self.pauses()),
            charged: self.charged().iter().map(|(year, days)| (*year, *days)).collect(),
            grants: self.grants().iter().map(|(id, grant)| (id.clone(), grant.to_message())).collect(),
        }
    }

    fn from_message(message: pb::PauseLedger) -> Result<Self, DecodeError> {
        let grants = message
            .grants
            .into_iter()
            .map(|(id, grant)| Ok((id, PauseGrant::from_message(grant)?)))
            .collect::<Result<BTreeMap<_, _>, DecodeError>>()?;
        Ok(PauseLedger::from_parts(
            each(message.pauses)?,
            message.charged.into_iter().collect(),
            grants,
        ))
    }
}

impl Codec for Pause {
    type Message = pb::PauseSpan;

    fn to_message(&self) -> pb::PauseSpan {
        pb::PauseSpan {
            start: Some(self.start.to_message()),
            end: Some(self.end.to_message()),
            ended_early: self.ended_early,
            server: self.server.clone(),
            charges: self
                .charges()
                .iter()
                .map(|c| pb::Charge {
                    year: c.year,
                    days: c.days,
                })
                .collect(),
        }
    }

    fn from_message(message: pb::PauseSpan) -> Result<Self, DecodeError> {
        Ok(Pause::from_parts(
            message.server,
            required("pause.start", message.start)?,
            required("pause.end", message.end)?,
            message.ended_early,
            message
                .charges
                .into_iter()
                .map(|c| Charge {
                    year: c.year,
                    days: c.days,
                })
                .collect(),
        ))
    }
}

impl Codec for PauseGrant {
    type Message = pb::PauseGrant;

    fn to_message(&self) -> pb::PauseGrant {
        pb::PauseGrant {
            days: self.days,
            paused_from: Some(self.paused_from.to_message()),
            paused_until: Some(self.paused_until.to_message()),
            year: self.year,
            remaining_days: self.remaining_days,
            servers: self.servers.clone(),
        }
    }

    fn from_message(message: pb::PauseGrant) -> Result<Self, DecodeError> {
        Ok(PauseGrant {
            days: message.days,
            paused_from: required("grant.paused_from", message.paused_from)?,
            paused_until: required("grant.paused_until", message.paused_until)?,
            year: message.year,
            remaining_days: message.remaining_days,
            servers: message.servers,
        })
    }
}

impl Codec for ServerEntry {
    type Message = pb::ServerRecord;

    fn to_message(&self) -> pb::ServerRecord {
        let record = &self.record;
        pb::ServerRecord {
            tenant: record.tenant.clone(),
            server_fqdn: record.server_fqdn.clone(),
            build: record.build.clone(),
            last_seen: Some(record.last_seen.to_message()),
            episode: record.episode.as_ref().map(Codec::to_message),
            counters: self
                .counters
                .iter()
                .map(|(stage, counts)| pb::StageCounts {
                    stage: *stage,
                    counts: Some(counts.to_message()),
                })
                .collect(),
            notices: self.notices.iter().cloned().collect(),
            decommissioned_at: self.decommissioned_at.as_ref().map(Codec::to_message),
        }
    }

    fn from_message(message: pb::ServerRecord) -> Result<Self, DecodeError> {
        Ok(ServerEntry {
            record: ServerRecord {
                tenant: message.tenant,
                server_fqdn: message.server_fqdn,
                build: message.build,
                last_seen: required("server.last_seen", message.last_seen)?,
                episode: optional(message.episode)?,
            },
            counters: stage_counts(message.counters)?.into_iter().collect(),
            notices: message.notices.into_iter().collect::<BTreeSet<_>>(),
            decommissioned_at: optional(message.decommissioned_at)?,
        })
    }
}

impl Codec for Episode {
    type Message = pb::Episode;

    fn to_message(&self) -> pb::Episode {
        pb::Episode {
            first_seen: Some(self.first_seen.to_message()),
            remediated_gaps: messages(&self.remediated_gaps),
            remediated_at: self.remediated_at.as_ref().map(Codec::to_message),
        }
    }

    fn from_message(message: pb::Episode) -> Result<Self, DecodeError> {
        Ok(Episode {
            first_seen: required("episode.first_seen", message.first_seen)?,
            remediated_gaps: each(message.remediated_gaps)?,
            remediated_at: optional::<Timestamp>(message.remediated_at)?,
        })
    }
}

impl Codec for Interval {
    type Message = pb::Interval;

    fn to_message(&self) -> pb::Interval {
        pb::Interval {
            start: Some(self.start.to_message()),
            end: Some(self.end.to_message()),
        }
    }

    fn from_message(message: pb::Interval) -> Result<Self, DecodeError> {
        Ok(Interval::new(
            required("interval.start", message.start)?,
            required("interval.end", message.end)?,
        ))
    }
}

impl Codec for Event {
    type Message = pb::Event;

    fn to_message(&self) -> pb::Event {
        pb::Event {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            at: Some(self.at.to_message()),
            kind: event_kind(self.kind),
            server_fqdn: self.server_fqdn.clone(),
            message: self.message.clone(),
            delivered: self.delivered,
        }
    }

    fn from_message(message: pb::Event) -> Result<Self, DecodeError> {
        Ok(Event {
            id: message.id,
            tenant: message.tenant,
            at: required("event.at", message.at)?,
            kind: event_kind_from(message.kind)?,
            server_fqdn: message.server_fqdn,
            message: message.message,
            delivered: message.delivered,
        })
    }
}

/// The stored number of an event kind (a protobuf enum is a number, not a message).
pub(super) fn event_kind(kind: EventKind) -> i32 {
    use pb::EventKind as K;
    let stored = match kind {
        EventKind::FirstDetected => K::FirstDetected,
        EventKind::Relapsed => K::Relapsed,
        EventKind::StageEntered => K::StageEntered,
        EventKind::ThrottlingSoon => K::ThrottlingSoon,
        EventKind::BlockingSoon => K::BlockingSoon,
        EventKind::Remediated => K::Remediated,
        EventKind::PauseStarted => K::PauseStarted,
        EventKind::PauseExtended => K::PauseExtended,
        EventKind::PauseEnded => K::PauseEnded,
        EventKind::PolicyAnnounced => K::PolicyAnnounced,
        EventKind::ModeChanged => K::ModeChanged,
        EventKind::ConnectorRemoved => K::ConnectorRemoved,
        EventKind::ServersForgotten => K::ServersForgotten,
    };
    stored.into()
}

pub(super) fn event_kind_from(stored: i32) -> Result<EventKind, DecodeError> {
    use pb::EventKind as K;
    Ok(match K::try_from(stored) {
        Ok(K::FirstDetected) => EventKind::FirstDetected,
        Ok(K::Relapsed) => EventKind::Relapsed,
        Ok(K::StageEntered) => EventKind::StageEntered,
        Ok(K::ThrottlingSoon) => EventKind::ThrottlingSoon,
        Ok(K::BlockingSoon) => EventKind::BlockingSoon,
        Ok(K::Remediated) => EventKind::Remediated,
        Ok(K::PauseStarted) => EventKind::PauseStarted,
        Ok(K::PauseExtended) => EventKind::PauseExtended,
        Ok(K::PauseEnded) => EventKind::PauseEnded,
        Ok(K::PolicyAnnounced) => EventKind::PolicyAnnounced,
        Ok(K::ModeChanged) => EventKind::ModeChanged,
        Ok(K::ConnectorRemoved) => EventKind::ConnectorRemoved,
        Ok(K::ServersForgotten) => EventKind::ServersForgotten,
        _ => {
            return Err(DecodeError::invalid(
                "event.kind",
                format!("{stored} is not an event kind this release knows"),
            ))
        }
    })
}

impl Codec for LastFlush {
    type Message = pb::LastFlush;

    fn to_message(&self) -> pb::LastFlush {
        pb::LastFlush {
            flush_id: self.flush_id,
            at: self.at.as_ref().map(Codec::to_message),
        }
    }

    fn from_message(message: pb::LastFlush) -> Result<Self, DecodeError> {
        Ok(LastFlush {
            flush_id: message.flush_id,
            at: optional(message.at)?,
        })
    }
}

impl Codec for AuditRecord {
    type Message = pb::AuditRecord;

    fn to_message(&self) -> pb::AuditRecord {
        pb::AuditRecord {
            index: self.index,
            at: Some(self.at.to_message()),
            actor: self.actor.clone(),
            action: self.action.clone(),
            tenant: self.tenant.clone().unwrap_or_default(),
            outcome: self.outcome.clone(),
        }
    }

    fn from_message(message: pb::AuditRecord) -> Result<Self, DecodeError> {
        Ok(AuditRecord {
            index: message.index,
            at: required("audit_record.at", message.at)?,
            actor: message.actor,
            action: message.action,
            tenant: Some(message.tenant).filter(|t| !t.is_empty()),
            outcome: message.outcome,
        })
    }
}
