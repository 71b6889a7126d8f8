//! `ratchet ctl report --tenant T`: every server of a tenant, its stage, dates and counters.
//! The decider sends the report as JSON; it is read back into the decider's own
//! `TenantReport`, the type the report page renders, so the two cannot disagree.

use anyhow::Context;
use chrono::SecondsFormat;
use ratchet_decider::report::TenantReport;
use ratchet_policy::Timestamp;
use ratchet_proto::v1 as pb;

use super::client::refusal;
use super::output::{nonempty, or_dash, Output};
use super::Admin;
use crate::table;

pub async fn run(admin: &mut Admin, tenant: String) -> anyhow::Result<TenantReport> {
    let reply = admin.report(pb::ReportRequest { tenant }).await.map_err(refusal)?.into_inner();
    serde_json::from_str(&reply.report_json).context("the decider sent an unreadable report")
}

/// An instant as the JSON has it.
fn instant(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The date part of an instant, for narrow table columns.
fn day(at: Option<Timestamp>) -> String {
    or_dash(at.map(|at| instant(at).split('T').next().unwrap_or_default().to_owned()))
}

/// Minutes of every hour throttled / blocked.
fn rates(throttle: Option<u32>, block: Option<u32>) -> String {
    format!("{}/{}", or_dash(throttle), or_dash(block))
}

impl Output for TenantReport {
    fn human(&self) {
        println!(
            "tenant {}: paused until {}, {} pause days remain this year",
            self.tenant,
            or_dash(self.paused_until.map(instant)),
            self.pause_days_remaining
        );
        let rows: Vec<Vec<String>> = self
            .servers
            .iter()
            .map(|row| {
                let s = &row.report;
                let total = row.total();
                let recommended = nonempty(&s.recommended_build_versions.join(" "));
                vec![
                    s.server_fqdn.clone(),
                    s.build.clone(),
                    or_dash(s.product.as_deref()),
                    s.status.as_str().to_owned(),
                    day(s.first_detected_date),
                    or_dash(s.stage),
                    rates(Some(s.current_throttle_rate), Some(s.current_block_rate)),
                    day(s.throttle_enabled_date),
                    day(s.blocking_enabled_date),
                    day(s.next_stage_start_date),
                    rates(s.next_stage_throttle_rate, s.next_stage_block_rate),
                    or_dash(recommended),
                    instant(s.last_seen),
                    format!("{}/{}/{}", total.accepted, total.throttled, total.blocked),
                ]
            })
            .collect();
        table::print(
            &[
                "SERVER",
                "BUILD",
                "PRODUCT",
                "STATUS",
                "FIRST DETECTED",
                "STAGE",
                "THR/BLK MIN",
                "THROTTLE FROM",
                "BLOCK FROM",
                "NEXT STAGE",
                "NEXT THR/BLK",
                "RECOMMENDED",
                "LAST SEEN",
                "ACC/THR/BLK",
            ],
            &rows,
        );
    }
}
