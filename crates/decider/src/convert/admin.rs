//! The Admin API's messages: names, instants and connector claims in; tenants, pauses, events,
//! audit records and the policy out. Instants travel as RFC 3339 text, to the second, or
//! to the millisecond where a scheduled policy's time may fall between seconds.

use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::IpNet;
use ratchet_policy::{Pause, PauseGrant, Timestamp};
use ratchet_proto::v1 as pb;
use ratchet_store::{AuditRecord, Event, Page, PolicySchedule, ServerEntry, Tenant};

use crate::error::Error;
use crate::report::ReportPage;

/// Tenant names and server FQDNs are keys in lower case; operators may type them in any
/// (in the admin API and the pages alike).
pub fn key(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

fn rfc3339(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An instant to the millisecond: a scheduled policy's time, which may not fall on a second.
pub fn precise_rfc3339(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An instant a request gives in `field`.
pub fn instant(field: &str, text: &str) -> Result<Timestamp, Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| Error::bad_field(field, format!("{text:?} is not an RFC 3339 instant: {e}")))
}

/// A connector's source range; none (empty) for a certificate-only connector.
fn cidr(text: &str) -> Result<Option<IpNet>, Error> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse::<IpNet>()
        .map(|net| Some(net.trunc()))
        .map_err(|_| Error::bad_field("cidr", format!("{text:?} is not an address range like 203.0.113.0/24")))
}

/// A connector's claim as a request gives it: a range, a certificate name, or both.
pub fn connector_claim(cidr: &str, cert_name: &str) -> Result<(Option<IpNet>, Option<String>), Error> {
    let cert_name = Some(cert_name.trim().to_owned()).filter(|name| !name.is_empty());
    Ok((self::cidr(cidr)?, cert_name))
}

/// A tenant in the list of tenants, with how many servers it has.
pub fn tenant_summary(tenant: &Tenant, servers: usize, now: Timestamp) -> pb::TenantSummary {
    pb::TenantSummary {
        name: tenant.name.clone(),
        servers: servers as u32,
        connectors: tenant.connectors.len() as u32,
        paused_until_unix_ms: tenant.pauses.paused_until(now).map_or(0, |at| at.timestamp_millis()),
        mode: tenant.mode.to_string(),
    }
}

/// An imported server, with the first-seen instant its record now holds.
pub fn imported(entry: ServerEntry) -> pb::ImportServerResponse {
    pb::ImportServerResponse {
        first_seen: entry.record.episode.map(|e| rfc3339(e.first_seen)).unwrap_or_default(),
        server_fqdn: entry.record.server_fqdn,
    }
}

pub fn pause_granted(grant: PauseGrant) -> pb::PauseResponse {
    pb::PauseResponse {
        days: grant.days,
        paused_from: rfc3339(grant.paused_from),
        paused_until: rfc3339(grant.paused_until),
        remaining_days: grant.remaining_days,
    }
}

pub fn pause_ended(ended_at: Timestamp, refunded_days: u32, remaining_days: u32) -> pb::EndPauseResponse {
    pb::EndPauseResponse {
        ended_at: rfc3339(ended_at),
        refunded_days,
        remaining_days,
    }
}

/// A tenant's pauses, each with whether it runs at `now`, and what is left of its budget.
pub fn pauses(tenant: &Tenant, remaining_days: u32, now: Timestamp) -> pb::ListPausesResponse {
    pb::ListPausesResponse {
        pauses: tenant.pauses.pauses().iter().map(|pause| pause_entry(pause, now)).collect(),
        remaining_days,
        paused_until: tenant.pauses.paused_until(now).map(rfc3339).unwrap_or_default(),
    }
}

fn pause_entry(pause: &Pause, now: Timestamp) -> pb::PauseEntry {
    pb::PauseEntry {
        start: rfc3339(pause.start),
        end: rfc3339(pause.end),
        ended_early: pause.ended_early,
        days_charged: pause.days_charged(),
        active: pause.interval().contains(now),
        server: pause.server.clone().unwrap_or_default(),
    }
}

/// The policy in force at `now`, and the one scheduled to follow it, if it has not yet.
pub fn policies(policies: &PolicySchedule, now: Timestamp) -> pb::GetPolicyResponse {
    let in_force = policies.at(now);
    let pending = policies.pending.as_ref().filter(|_| policies.next_change_after(now).is_some());
    pb::GetPolicyResponse {
        policy_toml: in_force.policy.to_toml(),
        version: in_force.version,
        pending_policy_toml: pending.map(|p| p.policy.to_toml()).unwrap_or_default(),
        pending_version: pending.map_or(0, |p| p.version),
        pending_effective_at: pending.and_then(|p| p.effective_at).map(precise_rfc3339).unwrap_or_default(),
    }
}

pub fn policy_set(version: u64, effective_at: Option<Timestamp>) -> pb::SetPolicyResponse {
    pb::SetPolicyResponse {
        version,
        effective_at: effective_at.map(precise_rfc3339).unwrap_or_default(),
    }
}

/// One page of the report; its JSON is the report's (see `report`).
pub fn report(page: ReportPage) -> Result<pb::ReportResponse, Error> {
    Ok(pb::ReportResponse {
        report_json: serde_json::to_string(&page.report).map_err(Error::internal)?,
        next_page_token: page.next_page_token.unwrap_or_default(),
        previous_page_token: page.previous_page_token.unwrap_or_default(),
    })
}

/// One page of a tenant's events, with where its webhook posts them.
pub fn events(page: Page<Event>, tenant: &Tenant, next_page_token: String) -> pb::ListEventsResponse {
    pb::ListEventsResponse {
        events: page.items.into_iter().map(|(_, e)| event(e)).collect(),
        webhook_url: tenant.webhook_url.clone().unwrap_or_default(),
        next_page_token,
    }
}

fn event(event: Event) -> pb::Event {
    pb::Event {
        id: event.id,
        at: rfc3339(event.at),
        // The kind's name in the events' JSON (snake case).
        kind: serde_json::to_value(event.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        server_fqdn: event.server_fqdn.unwrap_or_default(),
        message: event.message,
        delivered: event.delivered,
    }
}

/// One page of the audit trail.
pub fn audit(page: Page<AuditRecord>, next_page_token: String) -> pb::ListAuditResponse {
    pb::ListAuditResponse {
        entries: page.items.into_iter().map(|(_, record)| audit_entry(record)).collect(),
        next_page_token,
    }
}

fn audit_entry(record: AuditRecord) -> pb::AuditEntry {
    pb::AuditEntry {
        index: record.index,
        at_unix_ms: record.at.timestamp_millis(),
        actor: record.actor,
        action: record.action,
        tenant: record.tenant.unwrap_or_default(),
        outcome: record.outcome,
    }
}
