//! The verdict: what happens to one message from one server at one instant.
//!
//! `evaluate` is a pure function of (what is known of the server, the tenant's pauses,
//! the policy, the instant). The decider calls it after recording the sighting; `ratchet
//! policy eval` calls it with facts given on the command line; reports call it for every
//! server. Where the server's mode (see `mode`) is `report-only` the verdict is accept and
//! the one the rules reached is `would_verdict`; `off`, the rules are not applied at all.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::clock::{as_days, counted_time, days, instant_when_counted, Interval, Timestamp};
use crate::episode::Episode;
use crate::mode::{effective_mode, Mode, TenantMode};
use crate::policy::Policy;
use crate::products::{classify, BuildStatus};
use crate::stages::{stage_for_age, Stage};
use crate::version::BuildVersion;
use crate::window::{minute_of_hour, window_at, window_offset, Window};

/// What the cluster knows of one server and its tenant, as input to a verdict.
#[derive(Clone, Copy, Debug)]
pub struct ServerFacts<'a> {
    pub tenant: &'a str,
    pub server_fqdn: &'a str,
    /// The build this message (or the latest one) carries, as stamped.
    pub build: &'a str,
    pub episode: Option<&'a Episode>,
    /// The tenant's paused intervals, past, present and planned.
    pub pauses: &'a [Interval],
    pub tenant_mode: TenantMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Throttle,
    Block,
}

impl Verdict {
    /// The serialised name, for text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Throttle => "throttle",
            Verdict::Block => "block",
        }
    }
}

/// The whole answer, with the report fields that follow from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub build: Option<BuildVersion>,
    pub product: Option<String>,
    pub status: BuildStatus,
    /// 1-based stage, while the server has an episode.
    pub stage: Option<u32>,
    pub age_days: Option<f64>,
    pub throttle_min: u32,
    pub block_min: u32,
    pub window_offset_min: u32,
    pub paused: bool,
    /// The least enforcing of the tenant's mode and the product's.
    pub mode: Mode,
    /// What the message gets: always accept unless the mode is `enforce`.
    pub verdict: Verdict,
    /// In `report-only` mode, the verdict the rules reached; `None` in the other modes.
    pub would_verdict: Option<Verdict>,
    pub reply: Option<String>,
    pub throttle_enabled_date: Option<Timestamp>,
    pub blocking_enabled_date: Option<Timestamp>,
    pub next_stage_start_date: Option<Timestamp>,
    pub next_stage_throttle_rate: Option<u32>,
    pub next_stage_block_rate: Option<u32>,
    pub recommended_build_versions: Vec<BuildVersion>,
}

pub fn evaluate(policy: &Policy, facts: ServerFacts<'_>, at: Timestamp) -> Evaluation {
    let class = classify(&policy.products, facts.build);
    let mode = effective_mode(facts.tenant_mode, class.mode);
    let paused = facts.pauses.iter().any(|p| p.contains(at));
    let window_offset_min = window_offset(facts.tenant, facts.server_fqdn);
    let mut evaluation = Evaluation {
        build: class.build,
        product: class.product,
        status: class.status,
        stage: None,
        age_days: None,
        throttle_min: 0,
        block_min: 0,
        window_offset_min,
        paused,
        mode,
        verdict: Verdict::Accept,
        would_verdict: (mode == Mode::ReportOnly).then_some(Verdict::Accept),
        reply: None,
        throttle_enabled_date: None,
        blocking_enabled_date: None,
        next_stage_start_date: None,
        next_stage_throttle_rate: None,
        next_stage_block_rate: None,
        recommended_build_versions: class.recommended,
    };
    // A product switched off has no clock: not even an imported episode puts it in a stage.
    let Some(episode) = facts.episode.filter(|_| mode != Mode::Off) else {
        return evaluation;
    };

    let mut stopped = episode.stopped_intervals();
    if policy.pause_freezes_clock {
        stopped.extend_from_slice(facts.pauses);
    }
    let date_at_age = |from_days: u32| instant_when_counted(episode.first_seen, days(f64::from(from_days)), &stopped);
    let first_stage_where =
        |enforces: fn(&Stage) -> bool| policy.stages.iter().find(|s| enforces(s)).and_then(|s| date_at_age(s.from_days));

    let age = counted_time(episode.first_seen, at, &stopped).max(Duration::zero());
    let current = stage_for_age(&policy.stages, as_days(age));
    evaluation.stage = Some(current.number);
    evaluation.age_days = Some(as_days(age));
    evaluation.throttle_min = current.stage.throttle_min;
    evaluation.block_min = current.stage.block_min;
    evaluation.throttle_enabled_date = first_stage_where(|s| s.throttle_min > 0);
    evaluation.blocking_enabled_date = first_stage_where(|s| s.block_min > 0);
    if let Some(next) = current.next {
        evaluation.next_stage_start_date = date_at_age(next.from_days);
        evaluation.next_stage_throttle_rate = Some(next.throttle_min);
        evaluation.next_stage_block_rate = Some(next.block_min);
    }

    let enforced = class.status == BuildStatus::OutOfDate && episode.is_open() && !paused;
    if enforced {
        let window = window_at(
            window_offset_min,
            current.stage.throttle_min,
            current.stage.block_min,
            minute_of_hour(at),
        );
        let verdict = match window {
            Window::Accept => Verdict::Accept,
            Window::Throttle => Verdict::Throttle,
            Window::Block => Verdict::Block,
        };
        if mode == Mode::ReportOnly {
            evaluation.would_verdict = Some(verdict);
        } else {
            evaluation.verdict = verdict;
            evaluation.reply = reply_text(policy, verdict, current.stage);
        }
    }
    evaluation
}

/// The SMTP reply line for a verdict; none for accept.
pub fn reply_text(policy: &Policy, verdict: Verdict, stage: Stage) -> Option<String> {
    let (code, enhanced, action, minutes) = match verdict {
        Verdict::Accept => return None,
        Verdict::Throttle => (450, "4.7.230", "throttled", stage.throttle_min),
        Verdict::Block => (550, "5.7.230", "blocked", stage.block_min),
    };
    Some(format!(
        "{code} {enhanced} Connecting Exchange server version is out-of-date; connection to {service} {action} for {minutes} mins/hr. For more information see {url}.",
        service = policy.service_name,
        url = policy.info_url,
    ))
}
