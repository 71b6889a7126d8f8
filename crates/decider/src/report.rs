//! The tenant report: one schema (the JSON of `ratchet ctl report --json`, see
//! shared/spec/cli.md), built here for the gRPC API, the HTTP API and the report page.

use std::collections::BTreeMap;

use ratchet_policy::{server_report, ServerReport, Timestamp};
use ratchet_store::model::Counts;
use ratchet_store::StateView;
use serde::Serialize;
use tonic::Status;

#[derive(Clone, Debug, Serialize)]
pub struct TenantReport {
    pub tenant: String,
    pub paused_until: Option<Timestamp>,
    pub pause_days_remaining: u32,
    pub servers: Vec<ServerRow>,
    /// Messages per UTC day, oldest first, for the report's chart.
    pub daily: BTreeMap<String, Counts>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerRow {
    #[serde(flatten)]
    pub report: ServerReport,
    /// Messages per stage ("0": decided outside any stage).
    pub counters: BTreeMap<u32, Counts>,
}

pub fn tenant_report(view: &StateView, tenant: &str, now: Timestamp) -> Result<TenantReport, Status> {
    let record = view
        .tenant(tenant)
        .ok_or_else(|| Status::not_found(format!("tenant: no tenant named {tenant:?}")))?;
    let policy = view.policy();
    let pauses = record.pauses.intervals();
    let servers = view
        .servers(tenant)
        .map_err(|e| Status::internal(e.to_string()))?
        .into_iter()
        .map(|entry| ServerRow {
            report: server_report(&policy.policy, &entry.record, &pauses, now),
            counters: entry.counters,
        })
        .collect();
    Ok(TenantReport {
        tenant: tenant.to_owned(),
        paused_until: record.pauses.paused_until(now),
        pause_days_remaining: record.pauses.remaining_days(policy.policy.pause_budget_days, now),
        servers,
        daily: record.daily,
    })
}
