//! A server's enforcement episode, and how sightings move it.
//!
//! An episode starts when the cluster first accepts a sighting of an out-of-date build
//! (its first-seen, day 0, never moves afterwards). A compliant sighting remediates it at
//! once. A relapse within the policy's relapse window reopens it, its age resuming where it
//! stopped (the remediated gap does not count); a later relapse starts a new episode.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::clock::{Interval, Timestamp};
use crate::products::BuildStatus;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub first_seen: Timestamp,
    /// Gaps during which the server was remediated, before it relapsed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remediated_gaps: Vec<Interval>,
    /// When the server was remediated, while it still is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediated_at: Option<Timestamp>,
}

/// One message's evidence about a server: the status of its build, and when.
#[derive(Clone, Copy, Debug)]
pub struct Sighting {
    pub status: BuildStatus,
    pub at: Timestamp,
}

/// What a sighting did to the episode: the decider reports these as events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SightingEffect {
    /// Nothing changed for enforcement.
    Unchanged,
    /// A new episode started: the server's clock is running.
    FirstDetected,
    Remediated,
    /// An old episode reopened within the relapse window.
    Relapsed,
}

impl Episode {
    pub fn starting(first_seen: Timestamp) -> Self {
        Episode {
            first_seen,
            remediated_gaps: Vec::new(),
            remediated_at: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.remediated_at.is_none()
    }

    /// When the episode last changed: it started, was remediated, or relapsed. Evidence
    /// older than this (a late counter flush, a sighting queued before a remediation) must
    /// not move the episode again.
    pub fn last_change(&self) -> Timestamp {
        let relapsed = self.remediated_gaps.last().map(|gap| gap.end);
        [Some(self.first_seen), self.remediated_at, relapsed]
            .into_iter()
            .flatten()
            .max()
            .expect("first_seen is always there")
    }

    /// The intervals that do not count toward age: remediated gaps, and the current
    /// remediation, which stops the clock until a relapse.
    pub fn stopped_intervals(&self) -> Vec<Interval> {
        let mut stopped = self.remediated_gaps.clone();
        stopped.extend(self.remediated_at.map(|at| Interval::new(at, Timestamp::MAX_UTC)));
        stopped
    }

    /// Applies a sighting to a server's (possibly absent) episode.
    pub fn sight(episode: &mut Option<Episode>, sighting: Sighting, relapse_window: Duration) -> SightingEffect {
        match (episode.as_mut(), sighting.status) {
            (None, BuildStatus::OutOfDate) => {
                *episode = Some(Episode::starting(sighting.at));
                SightingEffect::FirstDetected
            }
            (Some(open), BuildStatus::Compliant) if open.is_open() => {
                open.remediated_at = Some(sighting.at);
                SightingEffect::Remediated
            }
            (Some(remediated), BuildStatus::OutOfDate) => match remediated.remediated_at {
                None => SightingEffect::Unchanged,
                Some(since) if sighting.at - since <= relapse_window => {
                    remediated.remediated_gaps.push(Interval::new(since, sighting.at));
                    remediated.remediated_at = None;
                    SightingEffect::Relapsed
                }
                Some(_) => {
                    *episode = Some(Episode::starting(sighting.at));
                    SightingEffect::FirstDetected
                }
            },
            _ => SightingEffect::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn day(n: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(n)
    }

    fn sight(episode: &mut Option<Episode>, status: BuildStatus, at: i64) -> SightingEffect {
        Episode::sight(episode, Sighting { status, at: day(at) }, Duration::days(30))
    }

    #[test]
    fn first_seen_never_moves() {
        let mut episode = None;
        assert_eq!(sight(&mut episode, BuildStatus::OutOfDate, 0), SightingEffect::FirstDetected);
        assert_eq!(sight(&mut episode, BuildStatus::OutOfDate, 5), SightingEffect::Unchanged);
        assert_eq!(episode.unwrap().first_seen, day(0));
    }

    #[test]
    fn compliant_and_unidentified_builds_start_nothing() {
        let mut episode = None;
        assert_eq!(sight(&mut episode, BuildStatus::Compliant, 0), SightingEffect::Unchanged);
        assert_eq!(sight(&mut episode, BuildStatus::Unidentified, 0), SightingEffect::Unchanged);
        assert_eq!(episode, None);
    }

    #[test]
    fn relapse_inside_the_window_resumes_the_old_episode() {
        let mut episode = None;
        sight(&mut episode, BuildStatus::OutOfDate, 0);
        assert_eq!(sight(&mut episode, BuildStatus::Compliant, 40), SightingEffect::Remediated);
        assert_eq!(sight(&mut episode, BuildStatus::Compliant, 45), SightingEffect::Unchanged);
        assert_eq!(sight(&mut episode, BuildStatus::OutOfDate, 70), SightingEffect::Relapsed);
        let episode = episode.unwrap();
        assert_eq!(episode.first_seen, day(0));
        assert_eq!(episode.remediated_gaps, vec![Interval::new(day(40), day(70))]);
        assert!(episode.is_open());
    }

    #[test]
    fn relapse_after_the_window_starts_a_new_episode() {
        let mut episode = None;
        sight(&mut episode, BuildStatus::OutOfDate, 0);
        sight(&mut episode, BuildStatus::Compliant, 40);
        assert_eq!(sight(&mut episode, BuildStatus::OutOfDate, 71), SightingEffect::FirstDetected);
        assert_eq!(episode.unwrap(), Episode::starting(day(71)));
    }
}
