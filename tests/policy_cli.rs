//! `ratchet policy eval|show|check`, run as the real binary against the contract of
//! `cli.md` and the rules of `enforcement.md`.

mod common;

use std::collections::BTreeMap;

use common::{json_of, stderr_of_failure, stdout_of};
use serde_json::{json, Value};

const FIRST_SEEN: &str = "2026-01-01T10:00:00Z";

/// `ratchet policy eval --json` for tenant `bear`, server `exch1.bear.local`, with extra flags.
fn eval(build: &str, at: &str, extra: &[&str]) -> Value {
    let mut args = vec!["policy", "eval", "--json", "--tenant", "bear", "--server", "exch1.bear.local"];
    args.extend(["--build", build, "--first-seen", FIRST_SEEN, "--at", at]);
    args.extend(extra);
    json_of(args)
}

/// The one line a failed run printed on stderr.
fn one_line_error(args: &[&str]) -> String {
    let stderr = stderr_of_failure(args);
    assert_eq!(stderr.lines().count(), 1, "exactly one line on stderr: {stderr:?}");
    stderr.trim_end().to_owned()
}

fn eval_args<'a>(first_seen: &'a str, at: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "policy",
        "eval",
        "--tenant",
        "bear",
        "--server",
        "exch1.bear.local",
        "--build",
        "15.1.2507.16",
    ];
    args.extend(["--first-seen", first_seen, "--at", at]);
    args.extend(extra);
    args
}

#[test]
fn eval_follows_the_stages_as_the_server_ages() {
    // (at, stage, throttle, block, next stage start, next throttle, next block)
    let cases = [
        ("2026-01-11T10:00:00Z", 1, 0, 0, json!("2026-01-31T10:00:00Z"), json!(5), json!(0)),
        ("2026-01-31T09:59:59Z", 1, 0, 0, json!("2026-01-31T10:00:00Z"), json!(5), json!(0)),
        ("2026-01-31T10:00:00Z", 2, 5, 0, json!("2026-02-10T10:00:00Z"), json!(10), json!(0)),
        ("2026-02-15T10:00:00Z", 3, 10, 0, json!("2026-02-20T10:00:00Z"), json!(20), json!(0)),
        (
            "2026-03-02T10:00:00Z",
            5,
            30,
            5,
            json!("2026-03-12T10:00:00Z"),
            json!(30),
            json!(10),
        ),
        (
            "2026-03-22T10:00:00Z",
            7,
            30,
            20,
            json!("2026-04-01T10:00:00Z"),
            json!(0),
            json!(60),
        ),
        ("2026-04-01T10:00:00Z", 8, 0, 60, Value::Null, Value::Null, Value::Null),
    ];
    for (at, stage, throttle, block, next_start, next_throttle, next_block) in cases {
        let out = eval("15.1.2507.16", at, &[]);
        assert_eq!(out["status"], "out_of_date", "{at}");
        assert_eq!(out["product"], "Exchange 2016");
        assert_eq!(
            (&out["stage"], &out["throttle_min"], &out["block_min"]),
            (&json!(stage), &json!(throttle), &json!(block)),
            "{at}"
        );
        assert_eq!(out["throttle_enabled_date"], "2026-01-31T10:00:00Z");
        assert_eq!(out["blocking_enabled_date"], "2026-03-02T10:00:00Z");
        assert_eq!(
            (
                &out["next_stage_start_date"],
                &out["next_stage_throttle_rate"],
                &out["next_stage_block_rate"]
            ),
            (&next_start, &next_throttle, &next_block),
            "{at}"
        );
        assert_eq!(out["recommended_build_versions"], json!(["15.1.2507.61"]));
        assert_eq!(out["paused"], false);
        assert!(out["age_days"].is_number());
        assert_eq!(
            (&out["tenant"], &out["server"], &out["build"]),
            (&json!("bear"), &json!("exch1.bear.local"), &json!("15.1.2507.16"))
        );
    }
    assert_eq!(eval("15.1.2507.16", "2026-02-15T22:00:00Z", &[])["age_days"], 45.5);
    // Zero-padded builds and offsets other than Z mean the same as their canonical forms.
    let padded = eval("15.01.2507.016", "2026-03-02T11:00:00+01:00", &[]);
    assert_eq!(
        (&padded["status"], &padded["stage"], &padded["age_days"]),
        (&json!("out_of_date"), &json!(5), &json!(60.0))
    );
}

#[test]
fn over_an_hour_the_verdicts_match_the_stage_minutes() {
    // Stage 5: 5 minutes blocked, 30 throttled, 25 accepted, in every hour.
    let mut counts = BTreeMap::new();
    let mut offset = None;
    for minute in 0..60 {
        let out = eval("15.1.2507.16", &format!("2026-03-05T14:{minute:02}:30Z"), &[]);
        let verdict = out["verdict"].as_str().unwrap().to_owned();
        match verdict.as_str() {
            "accept" => assert_eq!(out["reply"], Value::Null),
            "throttle" => assert!(out["reply"].as_str().unwrap().starts_with("450 4.7.230 "), "{out}"),
            "block" => assert!(out["reply"].as_str().unwrap().starts_with("550 5.7.230 "), "{out}"),
            other => panic!("unexpected verdict {other}"),
        }
        let o = out["window_offset_min"].as_u64().unwrap();
        assert_eq!(*offset.get_or_insert(o), o, "the offset is fixed for a server");
        if minute == o {
            assert_eq!(verdict, "block", "the block window opens at the server's offset");
        }
        *counts.entry(verdict).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("accept".to_owned(), 25), ("block".to_owned(), 5), ("throttle".to_owned(), 30)])
    );
}

#[test]
fn paused_intervals_freeze_the_clock_and_the_verdict() {
    // Overlapping pauses, one of them from before first-seen: 10 paused days after day 0.
    let pauses = [
        "--paused",
        "2025-12-20T00:00:00Z/2026-01-05T10:00:00Z",
        "--paused",
        "2026-01-03T10:00:00Z/2026-01-11T10:00:00Z",
    ];
    let out = eval("15.1.2507.16", "2026-02-15T10:00:00Z", &pauses);
    assert_eq!((&out["age_days"], &out["stage"]), (&json!(35.0), &json!(2)));
    assert_eq!(out["throttle_enabled_date"], "2026-02-10T10:00:00Z");
    assert_eq!(out["blocking_enabled_date"], "2026-03-12T10:00:00Z");
    assert_eq!(out["next_stage_start_date"], "2026-02-20T10:00:00Z");

    // Inside a pause: stage 8 by age, yet accepted with no reply, and the clock stands still.
    let during = ["--paused", "2026-04-10T00:00:00Z/2026-04-20T00:00:00Z"];
    for minute in ["00", "15", "30", "45"] {
        let out = eval("15.1.2507.16", &format!("2026-04-15T12:{minute}:00Z"), &during);
        assert_eq!(
            (&out["paused"], &out["stage"], &out["verdict"], &out["reply"]),
            (&json!(true), &json!(8), &json!("accept"), &Value::Null)
        );
        let age = out["age_days"].as_f64().unwrap();
        assert!((age - (98.0 + 14.0 / 24.0)).abs() < 1e-9, "frozen at the start of the pause: {age}");
    }
    assert_eq!(eval("15.1.2507.16", "2026-04-20T00:00:00Z", &during)["verdict"], "block");
}

#[test]
fn malformed_dates_and_intervals_fail_with_one_line_naming_the_flag() {
    let cases = [
        (
            eval_args("2026-01-01", "2026-02-01T00:00:00Z", &[]),
            vec!["--first-seen", "\"2026-01-01\""],
        ),
        (eval_args(FIRST_SEEN, "2026-13-01", &[]), vec!["--at", "\"2026-13-01\""]),
        (eval_args(FIRST_SEEN, "2026-02-30T00:00:00Z", &[]), vec!["--at", "2026-02-30"]),
        (
            eval_args(FIRST_SEEN, "2026-02-01T00:00:00Z", &["--paused", "2026-01-05T00:00:00Z"]),
            vec!["--paused", "START/END"],
        ),
        (
            eval_args(FIRST_SEEN, "2026-02-01T00:00:00Z", &["--paused", "2026-01-05T00:00:00Z/soon"]),
            vec!["--paused", "\"soon\""],
        ),
        (
            eval_args(
                FIRST_SEEN,
                "2026-02-01T00:00:00Z",
                &["--paused", "2026-01-05T00:00:00Z/2026-01-04T00:00:00Z"],
            ),
            vec!["--paused", "2026-01-05T00:00:00Z/2026-01-04T00:00:00Z"],
        ),
        (
            eval_args(FIRST_SEEN, "2025-12-31T00:00:00Z", &[]),
            vec!["--at", "--first-seen", "2025-12-31T00:00:00Z", FIRST_SEEN],
        ),
    ];
    for (args, named) in cases {
        let line = one_line_error(&args);
        assert!(line.starts_with("ratchet: "), "{line}");
        for name in named {
            assert!(line.contains(name), "{line:?} should name {name:?}");
        }
    }
}

#[test]
fn a_malformed_build_is_unidentified_not_an_error() {
    for build in ["garbage", "15", "", "15.2", "15.0.1497"] {
        let out = eval(build, "2026-06-01T00:00:00Z", &[]);
        assert_eq!(
            (&out["status"], &out["product"], &out["stage"]),
            (&json!("unidentified"), &Value::Null, &Value::Null),
            "{build:?}"
        );
        assert_eq!((&out["verdict"], &out["reply"]), (&json!("accept"), &Value::Null));
        assert_eq!(out["recommended_build_versions"], json!([]));
    }
    let compliant = eval("15.2.2562.17", "2026-06-01T00:00:00Z", &[]);
    assert_eq!(
        (&compliant["status"], &compliant["product"], &compliant["stage"]),
        (&json!("compliant"), &json!("Exchange SE"), &Value::Null)
    );
}

#[test]
fn without_json_eval_prints_an_aligned_listing() {
    let stdout = stdout_of(eval_args(FIRST_SEEN, "2026-01-31T10:00:00Z", &[]));
    let lines: Vec<&str> = stdout.lines().collect();
    let value_column = |line: &str| {
        line.find(": ")
            .map(|colon| colon + 1 + line[colon + 1..].len() - line[colon + 1..].trim_start().len())
    };
    let column = value_column(lines[0]).unwrap();
    for line in &lines {
        assert_eq!(value_column(line), Some(column), "values line up: {line:?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("stage:") && l.ends_with(" 2")), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("next_stage_start_date:") && l.ends_with(" 2026-02-10T10:00:00Z")),
        "{stdout}"
    );
}

#[test]
fn policy_show_round_trips_through_policy_check() {
    let shown = stdout_of(["policy", "show"]);
    assert!(shown.contains("[[stage]]") && shown.contains("[[product]]"), "{shown}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, &shown).unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(stdout_of(["policy", "check", path]), format!("ok: {path}\n"));
    assert_eq!(stdout_of(["policy", "show", "--policy", path]), shown);
}

#[test]
fn a_policy_file_changes_what_eval_answers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "service_name = \"Bear Mail\"\n[[stage]]\nfrom_days = 0\nthrottle_min = 0\nblock_min = 60\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = eval("15.1.2507.16", "2026-01-02T00:00:00Z", &["--policy", path]);
    assert_eq!((&out["stage"], &out["verdict"]), (&json!(1), &json!("block")));
    assert_eq!(
        out["reply"],
        "550 5.7.230 Connecting Exchange server version is out-of-date; connection to Bear Mail blocked for 60 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange."
    );
    assert!(stdout_of(["policy", "show", "--policy", path]).contains("service_name = \"Bear Mail\""));
}

#[test]
fn policy_check_names_the_broken_rule() {
    let dir = tempfile::tempdir().unwrap();
    let stage =
        |from: u32, throttle: u32, block: u32| format!("[[stage]]\nfrom_days = {from}\nthrottle_min = {throttle}\nblock_min = {block}\n");
    let cases = [
        (
            stage(0, 0, 0) + &stage(30, 40, 30),
            vec!["stage 2", "throttle_min + block_min = 70", "over 60"],
        ),
        (
            stage(0, 0, 0) + &stage(30, 5, 0) + &stage(20, 10, 0),
            vec!["stages not increasing", "stage 3"],
        ),
        ("stage = []\n".to_owned(), vec!["stage table is empty"]),
        ("servce_name = \"typo\"\n".to_owned(), vec!["line 1", "unknown field `servce_name`"]),
        (
            "[[stage]]\nfrom_days = 0\nthrottle_min = 5 5\nblock_min = 0\n".to_owned(),
            vec!["not valid TOML", "line 3"],
        ),
    ];
    for (index, (text, named)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad-{index}.toml"));
        std::fs::write(&file, &text).unwrap();
        let path = file.to_str().unwrap();
        let line = one_line_error(&["policy", "check", path]);
        assert!(line.contains(path), "{line:?} names the file");
        for name in named {
            assert!(line.contains(name), "{line:?} should name {name:?}");
        }
        // The same file is refused wherever a policy is read.
        one_line_error(&eval_args(FIRST_SEEN, "2026-02-01T00:00:00Z", &["--policy", path]));
    }
    let missing = dir.path().join("missing.toml");
    assert!(one_line_error(&["policy", "check", missing.to_str().unwrap()]).contains("missing.toml"));
}

#[test]
fn every_policy_command_has_help() {
    for command in [
        &["policy", "--help"][..],
        &["policy", "eval", "--help"],
        &["policy", "show", "--help"],
        &["policy", "check", "--help"],
    ] {
        let help = stdout_of(command);
        assert!(help.contains("Usage:"), "{help}");
    }
    let eval_help = stdout_of(["policy", "eval", "--help"]);
    for flag in [
        "--tenant",
        "--server",
        "--build",
        "--first-seen",
        "--at",
        "--paused",
        "--policy",
        "--json",
    ] {
        assert!(eval_help.contains(flag), "eval --help lists {flag}");
    }
}
