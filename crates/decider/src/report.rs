//! The tenant report: one schema (the JSON of `ratchet ctl report --json`, see
//! shared/spec/cli.md), built here for the gRPC API, the HTTP API and the report page,
//! and read back by `ratchet ctl report` into the same types.

use std::collections::BTreeMap;

use ratchet_policy::{server_report, ReportStatus, ServerReport, Timestamp};
use ratchet_store::model::Counts;
use ratchet_store::StateView;
use serde::{Deserialize, Serialize};
use tonic::Status;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantReport {
    pub tenant: String,
    pub paused_until: Option<Timestamp>,
    pub pause_days_remaining: u32,
    pub servers: Vec<ServerRow>,
    /// Messages per UTC day, oldest first, for the report's chart.
    pub daily: BTreeMap<String, Counts>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerRow {
    #[serde(flatten)]
    pub report: ServerReport,
    /// Until when the server is paused, by a pause of its own or the tenant's (the later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<Timestamp>,
    /// Messages per stage ("0": decided outside any stage).
    pub counters: BTreeMap<u32, Counts>,
}

impl TenantReport {
    /// How many of the tenant's servers have the status `out_of_date`.
    pub fn out_of_date(&self) -> usize {
        self.servers
            .iter()
            .filter(|row| row.report.status == ReportStatus::OutOfDate)
            .count()
    }
}

impl ServerRow {
    /// The server's messages over all stages.
    pub fn total(&self) -> Counts {
        let mut sum = Counts::default();
        self.counters.values().for_each(|counts| sum.add(*counts));
        sum
    }
}

pub fn tenant_report(view: &StateView, tenant: &str, now: Timestamp) -> Result<TenantReport, Status> {
    let record = view
        .tenant(tenant)
        .ok_or_else(|| Status::not_found(format!("tenant: no tenant named {tenant:?}")))?;
    let policy = view.policy();
    let tenant_paused_until = record.pauses.paused_until(now);
    let servers = view
        .servers(tenant)
        .map_err(|e| Status::internal(e.to_string()))?
        .into_iter()
        .map(|entry| {
            let server = &entry.record.server_fqdn;
            let pauses = record.pauses.intervals_for(server);
            let paused_until = tenant_paused_until.max(record.pauses.server_paused_until(server, now));
            ServerRow {
                report: server_report(&policy.policy, &entry.record, &pauses, now),
                paused_until,
                counters: entry.counters,
            }
        })
        .collect();
    Ok(TenantReport {
        tenant: tenant.to_owned(),
        paused_until: tenant_paused_until,
        pause_days_remaining: record.pauses.remaining_days(policy.policy.pause_budget_days, now),
        servers,
        daily: record.daily,
    })
}
