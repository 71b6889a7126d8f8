//! Helpers shared by the command-line tests: they run the real `ratchet` binary that Cargo
//! built for the test, as operators and acceptance checks do.

// Each test file includes this module and uses only some of the helpers.
#![allow(dead_code)]

pub mod browser;
pub mod chart;
pub mod cluster;
pub mod haproxy;
pub mod metrics;
pub mod otlp;
pub mod postfix;
pub mod smtp;
pub mod stages;

use std::ffi::OsStr;
use std::process::{Command, Output};

/// A command for the `ratchet` binary under test.
pub fn ratchet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ratchet"))
}

/// Runs `ratchet ARGS...` to completion.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ratchet().args(args).output().expect("the ratchet binary runs")
}

/// Runs `ratchet ARGS...`, which must succeed, and returns its stdout.
pub fn stdout_of<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ratchet failed ({}): {stderr}", output.status);
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// Runs `ratchet ARGS...`, which must fail, and returns its stderr.
pub fn stderr_of_failure<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(args);
    assert!(
        !output.status.success(),
        "ratchet should have failed; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).expect("stderr is UTF-8")
}

/// Runs `ratchet ARGS...`, which must succeed and print one JSON document.
pub fn json_of<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let stdout = stdout_of(args);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {stdout}"))
}

/// Runs `ratchet ctl --endpoints ENDPOINT ARGS...`, which must succeed, and returns its stdout.
pub fn ctl(endpoint: &str, args: &[&str]) -> String {
    let mut full = vec!["ctl", "--endpoints", endpoint];
    full.extend_from_slice(args);
    stdout_of(full)
}

/// The arguments of `ctl server import` of `server` of `tenant` at `build`, first seen at
/// `first_seen` (RFC 3339).
pub fn import_args<'a>(tenant: &'a str, server: &'a str, build: &'a str, first_seen: &'a str) -> [&'a str; 10] {
    [
        "server",
        "import",
        "--tenant",
        tenant,
        "--server",
        server,
        "--build",
        build,
        "--first-seen",
        first_seen,
    ]
}

/// Imports a server with `ctl` (see [`import_args`]).
pub fn import_server(endpoint: &str, tenant: &str, server: &str, build: &str, first_seen: &str) {
    ctl(endpoint, &import_args(tenant, server, build, first_seen));
}

/// Waits until a decider answers `ctl` at `endpoint`.
pub fn wait_for_ctl(endpoint: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !run(["ctl", "--endpoints", endpoint, "tenant", "list"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "decider at {endpoint} never answered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Sends SIGTERM to `child` and waits (up to a minute) for it to exit.
pub fn terminate(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "could not send SIGTERM to {what}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not exit within a minute of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
