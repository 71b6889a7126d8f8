//! The enforcement rules of `enforcement.md`, checked through the crate's public API only:
//! stage boundaries, windows, pauses, relapse, remediation and reply texts.

use chrono::{Duration, TimeZone, Utc};
use ratchet_policy::window::window_offset;
use ratchet_policy::{
    evaluate, BuildStatus, Episode, Evaluation, Interval, Mode, Policy, ServerFacts, Sighting, SightingEffect, TenantMode, Timestamp,
    Verdict,
};

const TENANT: &str = "bear";
const SERVER: &str = "exch1.bear.local";
const OUT_OF_DATE: &str = "15.1.2507.16";
const COMPLIANT: &str = "15.1.2507.61";

/// Day 0 of every episode here, on the hour so that minutes of the hour are easy to read.
fn first_seen() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap()
}

fn day(n: i64) -> Timestamp {
    first_seen() + Duration::days(n)
}

fn eval_with(policy: &Policy, build: &str, episode: Option<&Episode>, pauses: &[Interval], at: Timestamp) -> Evaluation {
    eval_in(TenantMode::Enforce, policy, build, episode, pauses, at)
}

fn eval_in(
    tenant_mode: TenantMode,
    policy: &Policy,
    build: &str,
    episode: Option<&Episode>,
    pauses: &[Interval],
    at: Timestamp,
) -> Evaluation {
    evaluate(
        policy,
        ServerFacts {
            tenant: TENANT,
            server_fqdn: SERVER,
            build,
            episode,
            pauses,
            tenant_mode,
        },
        at,
    )
}

/// An out-of-date server first seen at `first_seen()`, under the default policy.
fn eval(pauses: &[Interval], at: Timestamp) -> Evaluation {
    eval_with(&Policy::default(), OUT_OF_DATE, Some(&Episode::starting(first_seen())), pauses, at)
}

/// How many minutes of the hour starting at `hour_start` get each verdict: (accept, throttle, block).
fn count_verdicts(mut evaluate_at: impl FnMut(Timestamp) -> Evaluation, hour_start: Timestamp) -> (u32, u32, u32) {
    let mut counts = (0, 0, 0);
    for minute in 0..60 {
        match evaluate_at(hour_start + Duration::minutes(minute)).verdict {
            Verdict::Accept => counts.0 += 1,
            Verdict::Throttle => counts.1 += 1,
            Verdict::Block => counts.2 += 1,
        }
    }
    counts
}

/// The spec's stage table: (stage, from day, throttle min/hr, block min/hr).
const STAGES: [(u32, i64, u32, u32); 8] = [
    (1, 0, 0, 0),
    (2, 30, 5, 0),
    (3, 40, 10, 0),
    (4, 50, 20, 0),
    (5, 60, 30, 5),
    (6, 70, 30, 10),
    (7, 80, 30, 20),
    (8, 90, 0, 60),
];

#[test]
fn every_stage_boundary_switches_exactly_at_its_day() {
    for pair in STAGES.windows(2) {
        let ((before, _, before_throttle, before_block), (stage, from, throttle, block)) = (pair[0], pair[1]);
        let just_before = eval(&[], day(from) - Duration::seconds(1));
        assert_eq!(
            (just_before.stage, just_before.throttle_min, just_before.block_min),
            (Some(before), before_throttle, before_block),
            "one second before day {from}"
        );
        assert_eq!(just_before.next_stage_start_date, Some(day(from)), "before day {from}");
        assert_eq!(
            (just_before.next_stage_throttle_rate, just_before.next_stage_block_rate),
            (Some(throttle), Some(block))
        );

        let at = eval(&[], day(from));
        assert_eq!(
            (at.stage, at.throttle_min, at.block_min),
            (Some(stage), throttle, block),
            "exactly day {from}"
        );
        assert_eq!(at.age_days, Some(from as f64));
    }
}

#[test]
fn report_dates_follow_the_stage_table() {
    for (stage, from, _, _) in STAGES {
        let evaluation = eval(&[], day(from) + Duration::hours(1));
        assert_eq!(evaluation.stage, Some(stage));
        assert_eq!(evaluation.throttle_enabled_date, Some(day(30)), "stage {stage}");
        assert_eq!(evaluation.blocking_enabled_date, Some(day(60)), "stage {stage}");
        assert_eq!(evaluation.product.as_deref(), Some("Exchange 2016"));
        assert_eq!(evaluation.status, BuildStatus::OutOfDate);
        assert_eq!(evaluation.recommended_build_versions, vec![COMPLIANT.parse().unwrap()]);
    }
    let last = eval(&[], day(400));
    assert_eq!(last.stage, Some(8));
    assert_eq!(
        (
            last.next_stage_start_date,
            last.next_stage_throttle_rate,
            last.next_stage_block_rate
        ),
        (None, None, None)
    );
}

#[test]
fn every_stage_gets_its_minutes_in_every_hour() {
    for (stage, from, throttle, block) in STAGES {
        // An hour that starts on the hour, and one that starts mid-hour.
        for hour_start in [
            day(from) + Duration::hours(2),
            day(from) + Duration::hours(5) + Duration::minutes(37),
        ] {
            let counts = count_verdicts(|at| eval(&[], at), hour_start);
            assert_eq!(counts, (60 - throttle - block, throttle, block), "stage {stage} from {hour_start}");
        }
    }
}

#[test]
fn windows_wrap_the_hour() {
    // A server whose offset is late in the hour, so that its windows cross minute 0.
    let server = (0..)
        .map(|i| format!("exch{i}.bear.local"))
        .find(|s| window_offset(TENANT, s) >= 55)
        .unwrap();
    let offset = window_offset(TENANT, &server);
    let episode = Episode::starting(first_seen());
    let evaluate_at = |at| {
        evaluate(
            &Policy::default(),
            ServerFacts {
                tenant: TENANT,
                server_fqdn: &server,
                build: OUT_OF_DATE,
                episode: Some(&episode),
                pauses: &[],
                tenant_mode: TenantMode::Enforce,
            },
            at,
        )
    };

    // Stage 7: block 20, throttle 30. Block runs [o, o+20), throttle [o+20, o+50), mod 60.
    let hour = day(85);
    for minute in 0..60u32 {
        let evaluation = evaluate_at(hour + Duration::minutes(minute.into()));
        assert_eq!(evaluation.window_offset_min, offset);
        let since_offset = (minute + 60 - offset) % 60;
        let expected = match since_offset {
            0..20 => Verdict::Block,
            20..50 => Verdict::Throttle,
            _ => Verdict::Accept,
        };
        assert_eq!(evaluation.verdict, expected, "minute {minute}, offset {offset}");
    }
    assert_eq!(
        evaluate_at(hour + Duration::minutes(59)).verdict,
        Verdict::Block,
        "block spans the end of the hour"
    );
    assert_eq!(evaluate_at(hour).verdict, Verdict::Block, "and goes on past minute 0");
    assert_eq!(count_verdicts(evaluate_at, hour + Duration::minutes(13)), (10, 30, 20));
}

#[test]
fn overlapping_pauses_and_pauses_before_first_seen_count_once() {
    let pauses = [
        // Starts before first-seen: only its part after day 0 counts.
        Interval::new(day(-5), day(3)),
        // Overlaps the first and the third, and holds the next one whole.
        Interval::new(day(2), day(10)),
        Interval::new(day(4), day(6)),
        Interval::new(day(8), day(12)),
        // A planned pause, later on: it shifts the dates past it.
        Interval::new(day(65), day(70)),
    ];
    // Paused from day -5 to day 12: 12 days of age do not count.
    let evaluation = eval(&pauses, day(50));
    assert_eq!(evaluation.age_days, Some(38.0));
    assert_eq!(evaluation.stage, Some(2));
    assert_eq!(evaluation.throttle_enabled_date, Some(day(42)));
    assert_eq!(evaluation.next_stage_start_date, Some(day(52)));
    // Age 60 is reached on day 72, and the planned pause from day 65 to 70 moves it to day 77.
    assert_eq!(evaluation.blocking_enabled_date, Some(day(77)));

    // Inside the overlapping pauses the clock is frozen at the age it had when they began.
    for at in [day(1), day(9), day(11)] {
        let paused = eval(&pauses, at);
        assert_eq!((paused.age_days, paused.paused), (Some(0.0), true), "at {at}");
    }
    assert!(!eval(&pauses, day(12)).paused, "pauses are closed-open");

    // The stage boundaries move with the pauses: stage 3 starts on day 52, not day 40.
    assert_eq!(eval(&pauses, day(52) - Duration::seconds(1)).stage, Some(2));
    assert_eq!(eval(&pauses, day(52)).stage, Some(3));
    // During the planned pause the age stands still at 53 days.
    assert_eq!(eval(&pauses, day(67)).age_days, Some(53.0));
    assert_eq!(eval(&pauses, day(77)).stage, Some(5));
}

#[test]
fn when_pauses_do_not_freeze_the_clock_age_runs_on() {
    let policy = Policy::from_toml("pause_freezes_clock = false").unwrap();
    let episode = Episode::starting(first_seen());
    let pauses = [Interval::new(day(-5), day(12)), Interval::new(day(60), day(95))];
    let at = |d: i64| eval_with(&policy, OUT_OF_DATE, Some(&episode), &pauses, day(d));

    let evaluation = at(50);
    assert_eq!((evaluation.age_days, evaluation.stage), (Some(50.0), Some(4)));
    assert_eq!(evaluation.throttle_enabled_date, Some(day(30)));
    assert_eq!(evaluation.blocking_enabled_date, Some(day(60)));
    assert_eq!(evaluation.next_stage_start_date, Some(day(60)));

    // Still, a paused tenant is not enforced: the stage advances, the verdict does not.
    let paused = at(92);
    assert_eq!(
        (paused.stage, paused.paused, paused.verdict, paused.reply),
        (Some(8), true, Verdict::Accept, None)
    );
    assert_eq!(at(95).verdict, Verdict::Block, "enforced again, in stage 8, once the pause ends");
}

/// Applies sightings in order to an episode, as the decider does.
fn sight_all(sightings: &[(BuildStatus, i64)]) -> (Option<Episode>, Vec<SightingEffect>) {
    let relapse_window = Duration::days(Policy::default().relapse_window_days.into());
    let mut episode = None;
    let effects = sightings
        .iter()
        .map(|&(status, d)| Episode::sight(&mut episode, Sighting { status, at: day(d) }, relapse_window))
        .collect();
    (episode, effects)
}

#[test]
fn a_relapse_inside_the_window_resumes_the_age_where_it_stopped() {
    use BuildStatus::{Compliant, OutOfDate};
    use SightingEffect::{FirstDetected, Relapsed, Remediated};

    let (remediated, effects) = sight_all(&[(OutOfDate, 0), (Compliant, 45)]);
    assert_eq!(effects, [FirstDetected, Remediated]);
    // While remediated, the clock stands still at 45 days.
    let meanwhile = eval_with(&Policy::default(), COMPLIANT, remediated.as_ref(), &[], day(60));
    assert_eq!(
        (meanwhile.age_days, meanwhile.verdict, meanwhile.reply),
        (Some(45.0), Verdict::Accept, None)
    );

    // Exactly 30 days after remediation is still inside the window.
    let (relapsed, effects) = sight_all(&[(OutOfDate, 0), (Compliant, 45), (OutOfDate, 75)]);
    assert_eq!(effects, [FirstDetected, Remediated, Relapsed]);
    let relapsed = relapsed.unwrap();
    assert_eq!(relapsed.first_seen, day(0));
    let at = |d: i64| eval_with(&Policy::default(), OUT_OF_DATE, Some(&relapsed), &[], day(d));
    assert_eq!((at(75).age_days, at(75).stage), (Some(45.0), Some(3)));
    assert_eq!((at(80).age_days, at(80).stage), (Some(50.0), Some(4)));
    // The remediated gap shifts the dates still ahead: age 60 comes on day 90, not day 60.
    assert_eq!(at(80).blocking_enabled_date, Some(day(90)));
    assert_eq!(
        at(80).throttle_enabled_date,
        Some(day(30)),
        "dates already past stay where they were"
    );
    assert_eq!(
        count_verdicts(|t| eval_with(&Policy::default(), OUT_OF_DATE, Some(&relapsed), &[], t), day(80)),
        (40, 20, 0)
    );
}

#[test]
fn a_relapse_after_the_window_starts_a_new_episode_at_stage_1() {
    use BuildStatus::{Compliant, OutOfDate};

    let (episode, effects) = sight_all(&[(OutOfDate, 0), (Compliant, 45), (OutOfDate, 76)]);
    assert_eq!(effects.last(), Some(&SightingEffect::FirstDetected));
    let episode = episode.unwrap();
    assert_eq!(episode.first_seen, day(76));
    let evaluation = eval_with(&Policy::default(), OUT_OF_DATE, Some(&episode), &[], day(80));
    assert_eq!(
        (evaluation.age_days, evaluation.stage, evaluation.verdict),
        (Some(4.0), Some(1), Verdict::Accept)
    );
    assert_eq!(evaluation.throttle_enabled_date, Some(day(106)));
}

#[test]
fn a_remediated_server_is_accepted_at_once() {
    let (episode, _) = sight_all(&[(BuildStatus::OutOfDate, 0), (BuildStatus::Compliant, 95)]);
    let episode = episode.unwrap();
    assert!(!episode.is_open());
    let evaluate_at = |at| eval_with(&Policy::default(), COMPLIANT, Some(&episode), &[], at);
    let evaluation = evaluate_at(day(95));
    assert_eq!(
        (evaluation.status, evaluation.verdict, evaluation.reply),
        (BuildStatus::Compliant, Verdict::Accept, None)
    );
    assert!(evaluation.recommended_build_versions.is_empty());
    assert_eq!(count_verdicts(evaluate_at, day(95)), (60, 0, 0));
}

#[test]
fn compliant_and_unidentified_servers_have_no_stage_and_are_accepted() {
    for (build, status) in [
        (COMPLIANT, BuildStatus::Compliant),
        ("garbage", BuildStatus::Unidentified),
        ("", BuildStatus::Unidentified),
    ] {
        let evaluation = eval_with(&Policy::default(), build, None, &[], day(200));
        assert_eq!(
            (evaluation.status, evaluation.stage, evaluation.age_days),
            (status, None, None),
            "build {build:?}"
        );
        assert_eq!((evaluation.verdict, evaluation.reply), (Verdict::Accept, None));
        assert_eq!(
            (
                evaluation.throttle_enabled_date,
                evaluation.blocking_enabled_date,
                evaluation.next_stage_start_date
            ),
            (None, None, None)
        );
    }
}

#[test]
fn a_paused_tenant_is_accepted_with_no_reply() {
    // Stage 8 (every minute blocked) from day 90; the tenant pauses on day 100 for 10 days.
    let pauses = [Interval::new(day(100), day(110))];
    for minute in 0..60 {
        let evaluation = eval(&pauses, day(105) + Duration::minutes(minute));
        assert_eq!((evaluation.stage, evaluation.paused), (Some(8), true));
        assert_eq!((evaluation.verdict, evaluation.reply), (Verdict::Accept, None), "minute {minute}");
    }
    assert_eq!(eval(&pauses, day(110)).verdict, Verdict::Block);
}

#[test]
fn reply_texts_are_the_spec_lines() {
    let reply = |d: i64, verdict: Verdict| {
        let hour = day(d);
        (0..60)
            .map(|m| eval(&[], hour + Duration::minutes(m)))
            .find(|e| e.verdict == verdict)
            .and_then(|e| e.reply)
            .unwrap()
    };
    let info = "For more information see https://aka.ms/BlockUnsafeExchange.";
    for (d, minutes) in [(30, 5), (40, 10), (50, 20), (60, 30)] {
        assert_eq!(
            reply(d, Verdict::Throttle),
            format!("450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online throttled for {minutes} mins/hr. {info}")
        );
    }
    for (d, minutes) in [(60, 5), (70, 10), (80, 20), (90, 60)] {
        assert_eq!(
            reply(d, Verdict::Block),
            format!("550 5.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online blocked for {minutes} mins/hr. {info}")
        );
    }
    assert_eq!(
        reply(30, Verdict::Throttle),
        "450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange."
    );
}

#[test]
fn reply_texts_use_the_policy_service_name_and_url() {
    let policy = Policy::from_toml("service_name = \"Bear Mail\"\ninfo_url = \"https://bear.example/patch\"").unwrap();
    let episode = Episode::starting(first_seen());
    let evaluation = eval_with(&policy, OUT_OF_DATE, Some(&episode), &[], day(95));
    assert_eq!(
        evaluation.reply.as_deref(),
        Some(
            "550 5.7.230 Connecting Exchange server version is out-of-date; connection to Bear Mail blocked for 60 mins/hr. For more information see https://bear.example/patch."
        )
    );
}

/// The default policy with one product's mode changed.
fn policy_with_mode(product: &str, mode: Mode) -> Policy {
    let mut policy = Policy::default();
    policy.products.iter_mut().filter(|p| p.name == product).for_each(|p| p.mode = mode);
    policy
}

#[test]
fn a_report_only_tenant_is_accepted_with_the_verdict_it_would_have_got() {
    let episode = Episode::starting(first_seen());
    let policy = Policy::default();
    for minute in 0..60 {
        let at = day(95) + Duration::minutes(minute);
        let enforced = eval_in(TenantMode::Enforce, &policy, OUT_OF_DATE, Some(&episode), &[], at);
        let reported = eval_in(TenantMode::ReportOnly, &policy, OUT_OF_DATE, Some(&episode), &[], at);
        assert_eq!(
            (enforced.mode, enforced.verdict, enforced.would_verdict),
            (Mode::Enforce, Verdict::Block, None)
        );
        assert_eq!(
            (reported.mode, reported.verdict, reported.would_verdict, reported.reply.as_deref()),
            (Mode::ReportOnly, Verdict::Accept, Some(Verdict::Block), None),
            "minute {minute}"
        );
        assert_eq!(reported.stage, Some(8), "the clock and stage are reported as they are");
    }
    // A report-only product does the same for a tenant that enforces.
    let product_report_only = policy_with_mode("Exchange 2016", Mode::ReportOnly);
    let reported = eval_in(TenantMode::Enforce, &product_report_only, OUT_OF_DATE, Some(&episode), &[], day(95));
    assert_eq!((reported.verdict, reported.would_verdict), (Verdict::Accept, Some(Verdict::Block)));
}

#[test]
fn a_product_switched_off_has_no_stage_and_is_accepted_whatever_the_tenant_mode() {
    let episode = Episode::starting(first_seen());
    let policy = policy_with_mode("Exchange 2016", Mode::Off);
    for tenant_mode in TenantMode::ALL {
        let evaluation = eval_in(tenant_mode, &policy, OUT_OF_DATE, Some(&episode), &[], day(95));
        assert_eq!(
            (evaluation.mode, evaluation.verdict, evaluation.would_verdict, evaluation.stage),
            (Mode::Off, Verdict::Accept, None, None),
            "tenant {tenant_mode}"
        );
    }
    // Another product's servers are enforced as before.
    let other = eval_in(TenantMode::Enforce, &policy, "15.0.1497.48", Some(&episode), &[], day(95));
    assert_eq!((other.mode, other.verdict), (Mode::Enforce, Verdict::Block));
}
