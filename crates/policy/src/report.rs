//! One server's row of the tenant report, in the field names of the spec.

use serde::{Deserialize, Serialize};

use crate::clock::{Interval, Timestamp};
use crate::episode::Episode;
use crate::evaluate::{evaluate, ServerFacts};
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

/// The report status of a server: its build's status, or `remediated` once an episode closed.
pub fn report_status(record: &ServerRecord, policy: &Policy) -> &'static str {
    match &record.episode {
        Some(episode) if !episode.is_open() => "remediated",
        Some(_) => "out_of_date",
        None => crate::products::classify(&policy.products, &record.build).status.as_str(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerReport {
    pub server_fqdn: String,
    pub build: String,
    pub product: Option<String>,
    pub status: &'static str,
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
}

pub fn server_report(policy: &Policy, record: &ServerRecord, pauses: &[Interval], now: Timestamp) -> ServerReport {
    let facts = ServerFacts {
        tenant: &record.tenant,
        server_fqdn: &record.server_fqdn,
        build: &record.build,
        episode: record.episode.as_ref(),
        pauses,
    };
    let evaluation = evaluate(policy, facts, now);
    // Current rates are what the server's mail meets now: none while remediated or paused,
    // though the stage its clock stands at is still reported.
    let enforced =
        evaluation.status == BuildStatus::OutOfDate && record.episode.as_ref().is_some_and(Episode::is_open) && !evaluation.paused;
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
    }
}
