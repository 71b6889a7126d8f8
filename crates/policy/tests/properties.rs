//! Properties of the enforcement rules that must hold for every input, not just the
//! examples of `rules.rs`: exact minutes per hour, a clock that never runs backwards, a
//! stage that never drops without remediation, and build numbers that read back as written.

use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, Duration};
use proptest::prelude::*;
use ratchet_policy::stages::Stage;
use ratchet_policy::{
    evaluate, BuildStatus, BuildVersion, Episode, Evaluation, Interval, Policy, ServerFacts, Sighting, TenantMode, Timestamp, Verdict,
};

const OUT_OF_DATE: &str = "15.1.2507.16";

fn instant(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

/// Any instant from 2020 to 2033, to the second.
fn any_instant() -> impl Strategy<Value = Timestamp> {
    (1_580_000_000i64..2_000_000_000).prop_map(instant)
}

/// Any valid stage table: 1 to 8 stages, the first at day 0, each with at most 60 minutes.
fn any_stage_table() -> impl Strategy<Value = Vec<Stage>> {
    prop::collection::vec((1u32..40, 0u32..=60, 0u32..=60), 1..=8).prop_map(|rows| {
        let mut from_days = 0;
        rows.into_iter()
            .enumerate()
            .map(|(index, (gap, throttle, block_min))| {
                if index > 0 {
                    from_days += gap;
                }
                Stage {
                    from_days,
                    throttle_min: throttle.min(60 - block_min),
                    block_min,
                }
            })
            .collect()
    })
}

/// Paused intervals around day 0 (`first_seen`): any start from 100 days before to 300 days
/// after, any length up to 60 days, overlapping each other or not.
fn any_pauses(first_seen: Timestamp) -> impl Strategy<Value = Vec<Interval>> {
    prop::collection::vec((-100 * 86_400i64..300 * 86_400, 1i64..60 * 86_400), 0..6).prop_map(move |pauses| {
        pauses
            .into_iter()
            .map(|(start, length)| {
                let start = first_seen + Duration::seconds(start);
                Interval::new(start, start + Duration::seconds(length))
            })
            .collect()
    })
}

/// Facts for an out-of-date server of a tenant.
fn facts<'a>(tenant: &'a str, server: &'a str, episode: &'a Episode, pauses: &'a [Interval]) -> ServerFacts<'a> {
    ServerFacts {
        tenant,
        server_fqdn: server,
        build: OUT_OF_DATE,
        episode: Some(episode),
        pauses,
        tenant_mode: TenantMode::Enforce,
    }
}

/// Sorted offsets in seconds from day 0, up to 400 days.
fn any_offsets() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(0i64..400 * 86_400, 1..40).prop_map(|mut offsets| {
        offsets.sort_unstable();
        offsets
    })
}

fn hash_of(build: &BuildVersion) -> u64 {
    let mut hasher = DefaultHasher::new();
    build.hash(&mut hasher);
    hasher.finish()
}

proptest! {
    /// (a) Over any 60 consecutive minutes inside one stage, `evaluate` throttles exactly
    /// the stage's throttle minutes and blocks exactly its block minutes.
    #[test]
    fn every_hour_gets_exactly_the_stage_minutes(
        tenant in "[a-z][a-z0-9-]{0,15}",
        server in "[a-z0-9][a-z0-9.-]{0,40}",
        first_seen in any_instant(),
        stages in any_stage_table(),
        stage_pick in any::<prop::sample::Index>(),
        into_stage in any::<prop::sample::Index>(),
    ) {
        let index = stage_pick.index(stages.len());
        let stage = stages[index];
        // The hour starts anywhere in the stage that leaves it a whole hour: the last stage never ends.
        let stage_days = stages.get(index + 1).map_or(1000, |next| next.from_days - stage.from_days);
        let start_second = into_stage.index(stage_days as usize * 86_400 - 3600) as i64;
        let hour_start = first_seen + Duration::days(stage.from_days.into()) + Duration::seconds(start_second);
        let policy = Policy { stages: stages.clone(), ..Policy::default() };
        let episode = Episode::starting(first_seen);

        let (mut throttled, mut blocked) = (0, 0);
        for minute in 0..60 {
            let evaluation = evaluate(&policy, facts(&tenant, &server, &episode, &[]), hour_start + Duration::minutes(minute));
            prop_assert_eq!(evaluation.stage, Some(index as u32 + 1));
            match evaluation.verdict {
                Verdict::Throttle => throttled += 1,
                Verdict::Block => blocked += 1,
                Verdict::Accept => prop_assert_eq!(evaluation.reply, None),
            }
        }
        prop_assert_eq!((throttled, blocked), (stage.throttle_min, stage.block_min));
    }

    /// (b) Age never decreases as time goes on, whatever the pauses, and never exceeds the
    /// time since first seen.
    #[test]
    fn age_never_decreases(
        (first_seen, pauses) in any_instant().prop_flat_map(|first_seen| (Just(first_seen), any_pauses(first_seen))),
        offsets in any_offsets(),
        pause_freezes_clock in any::<bool>(),
    ) {
        let policy = Policy { pause_freezes_clock, ..Policy::default() };
        let episode = Episode::starting(first_seen);
        let mut previous = 0.0;
        for offset in offsets {
            let age = evaluate(&policy, facts("t", "s", &episode, &pauses), first_seen + Duration::seconds(offset)).age_days.unwrap();
            prop_assert!(age >= previous, "age went from {} to {} at offset {}s", previous, age, offset);
            prop_assert!(age <= offset as f64 / 86_400.0 + 1e-9);
            previous = age;
        }
    }

    /// (c) Without remediation (only out-of-date sightings), the stage never goes down.
    #[test]
    fn stage_never_drops_without_remediation(
        (first_seen, pauses) in any_instant().prop_flat_map(|first_seen| (Just(first_seen), any_pauses(first_seen))),
        offsets in any_offsets(),
    ) {
        let policy = Policy::default();
        let relapse_window = Duration::days(policy.relapse_window_days.into());
        let day_0 = first_seen + Duration::seconds(offsets[0]);
        let mut episode = None;
        let mut previous = 0;
        for offset in offsets {
            let at = first_seen + Duration::seconds(offset);
            Episode::sight(&mut episode, Sighting { status: BuildStatus::OutOfDate, at }, relapse_window);
            let current = episode.as_ref().unwrap();
            prop_assert_eq!(current.first_seen, day_0, "first seen never moves");
            let stage = evaluate(&policy, facts("t", "s", current, &pauses), at).stage.unwrap();
            prop_assert!(stage >= previous, "stage went from {} to {} at offset {}s", previous, stage, offset);
            previous = stage;
        }
    }

    /// The next stage starts exactly at `next_stage_start_date`, whatever the pauses.
    #[test]
    fn the_next_stage_starts_at_its_announced_date(
        (first_seen, pauses) in any_instant().prop_flat_map(|first_seen| (Just(first_seen), any_pauses(first_seen))),
        offset in 0i64..200 * 86_400,
    ) {
        let policy = Policy::default();
        let episode = Episode::starting(first_seen);
        let at = |instant| evaluate(&policy, facts("t", "s", &episode, &pauses), instant);
        let now: Evaluation = at(first_seen + Duration::seconds(offset));
        if let Some(next_start) = now.next_stage_start_date {
            let stage = now.stage.unwrap();
            prop_assert_eq!(at(next_start - Duration::seconds(1)).stage, Some(stage));
            prop_assert_eq!(at(next_start).stage, Some(stage + 1));
        } else {
            prop_assert_eq!(now.stage, Some(8));
        }
    }

    /// (d) A build reads back as written, and zero padding does not change it.
    #[test]
    fn builds_round_trip_and_ignore_zero_padding(
        parts in prop::collection::vec(any::<u32>(), 2..=4),
        padding in prop::collection::vec(0usize..4, 4),
    ) {
        let canonical = parts.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
        let padded = parts.iter().zip(&padding).map(|(part, zeros)| format!("{}{part}", "0".repeat(*zeros))).collect::<Vec<_>>().join(".");
        let build: BuildVersion = canonical.parse().unwrap();
        prop_assert_eq!(build.to_string(), canonical.clone());
        prop_assert_eq!(build.parts(), &parts[..]);
        let from_padded: BuildVersion = padded.parse().unwrap();
        prop_assert_eq!(from_padded, build);
        prop_assert_eq!(from_padded.to_string(), canonical);
        // Missing trailing parts count as zero, and equal builds hash alike.
        let with_zeros: BuildVersion = format!("{}{}", build, ".0".repeat(4 - parts.len())).parse().unwrap();
        prop_assert_eq!(with_zeros, build);
        prop_assert_eq!(hash_of(&with_zeros), hash_of(&build));
        prop_assert_eq!(hash_of(&from_padded), hash_of(&build));
    }
}
