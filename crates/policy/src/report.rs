//! One server's row of the tenant report, in the field names of the spec.

use serde::{Deserialize, Serialize};

use crate::clock::{Interval, Timestamp};
use crate::episode::Episode;
use crate::evaluate::{evaluate, ServerFacts, Verdict};
use crate::mode::{Mode, TenantMode};
use crate::policy::Policy;
use crate::products::BuildStatus;

/// What the cluster stores of one server, as far as the rules are concerned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub tenant: String,
    pub server_fqdn: String,
    /// The build of the latest sighting, as stamped.
    pub build: String,
    pub last_seen: Timestamp,
    pub episode: Option<Episode>,
}

/// A server's status in the report: its build's status, or `remediated` once its episode
/// closed. Serialised as the spec's strings, so the decider, `ratchet ctl` and the report
/// page read one type instead of comparing text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    OutOfDate,
    Compliant,
    Unidentified,
    Remediated,
}

impl ReportStatus {
    /// The serialised name, for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::OutOfDate => "out_of_date",
            ReportStatus::Compliant => "compliant",
            ReportStatus::Unidentified => "unidentified",
            ReportStatus::Remediated => "remediated",
        }
    }
}

impl From<BuildStatus> for ReportStatus {
    fn from(status: BuildStatus) -> Self {
        match status {
            BuildStatus::OutOfDate => ReportStatus::OutOfDate,
            BuildStatus::Compliant => ReportStatus::Compliant,
            BuildStatus::Unidentified => ReportStatus::Unidentified,
        }
    }
}

/// The report status of a server: its build's status, or `remediated` once an episode closed.
pub fn report_status(record: &ServerRecord, policy: &Policy) -> ReportStatus {
    match &record.episode {
        Some(episode) if !episode.is_open() => ReportStatus::Remediated,
        Some(_) => ReportStatus::OutOfDate,
        None => crate::products::classify(&policy.products, &record.build).status.into(),
    }
}

/// One server's row of the tenant report. Deserialisable, so that `ratchet ctl report`
/// reads the decider's JSON back into this type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    pub server_fqdn: String,
    pub build: String,
    pub product: Option<String>,
    pub status: ReportStatus,
    pub first_detected_date: Option<Timestamp>,
    pub stage: Option<u32>,
    pub throttle_enabled_date: Option<Timestamp>,
    pub blocking_enabled_date: Option<Timestamp>,
    pub current_throttle_rate: u32,
    pub current_block_rate: u32,
    pub next_stage_throttle_rate: Option<u32>,
    pub next_stage_block_rate: Option<u32>,
    pub next_stage_start_date: Option<Timestamp>,
    pub recommended_build_versions: Vec<String>,
    pub last_seen: Timestamp,
    /// The least enforcing of the tenant's mode and the product's.
    #[serde(default)]
    pub mode: Mode,
    /// In `report-only` mode, what a message from the server would get now; else null.
    #[serde(default)]
    pub would_verdict: Option<Verdict>,
}

pub fn server_report(policy: &Policy, record: &ServerRecord, pauses: &[Interval], tenant_mode: TenantMode, now: Timestamp) -> ServerReport {
    let facts = ServerFacts {
        tenant: &record.tenant,
        server_fqdn: &record.server_fqdn,
        build: &record.build,
        episode: record.episode.as_ref(),
        pauses,
        tenant_mode,
    };
    let evaluation = evaluate(policy, facts, now);
    // Current rates are what the server's mail meets now: none while remediated, paused or
    // not enforced (report-only, off), though the stage its clock stands at is still reported.
    let enforced = evaluation.mode == Mode::Enforce
        && evaluation.status == BuildStatus::OutOfDate
        && record.episode.as_ref().is_some_and(Episode::is_open)
        && !evaluation.paused;
    ServerReport {
        server_fqdn: record.server_fqdn.clone(),
        build: record.build.clone(),
        product: evaluation.product,
        status: report_status(record, policy),
        first_detected_date: record.episode.as_ref().map(|e| e.first_seen),
        stage: evaluation.stage,
        throttle_enabled_date: evaluation.throttle_enabled_date,
        blocking_enabled_date: evaluation.blocking_enabled_date,
        current_throttle_rate: if enforced { evaluation.throttle_min } else { 0 },
        current_block_rate: if enforced { evaluation.block_min } else { 0 },
        next_stage_throttle_rate: evaluation.next_stage_throttle_rate,
        next_stage_block_rate: evaluation.next_stage_block_rate,
        next_stage_start_date: evaluation.next_stage_start_date,
        recommended_build_versions: evaluation.recommended_build_versions.iter().map(ToString::to_string).collect(),
        last_seen: record.last_seen,
        mode: evaluation.mode,
        would_verdict: evaluation.would_verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::ReportStatus;

    #[test]
    fn status_text_is_its_serialised_name() {
        use ReportStatus::*;
        for status in [OutOfDate, Compliant, Unidentified, Remediated] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(serde_json::from_value::<ReportStatus>(status.as_str().into()).unwrap(), status);
        }
    }
}
