//! The connection of `ratchet ctl` to the decider group, and how its refusals read: the
//! first reachable decider of `--endpoints` (writes are forwarded to the leader by the
//! decider), and each gRPC refusal as one line naming its kind.

use std::time::Duration;

use anyhow::anyhow;
use ratchet_tls::Dialer;
use tonic::transport::Channel;

use crate::tls_args::TlsArgs;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn connect(endpoints: &[String], tls: &TlsArgs) -> anyhow::Result<Channel> {
    let dialer = Dialer::new(tls.files()?.as_ref(), None)?;
    let mut failures = Vec::new();
    for endpoint in endpoints {
        if !dialer.is_tls() {
            tls.check_plaintext_dial("--endpoints", endpoint)?;
        }
        let attempt = dialer
            .endpoint(endpoint)
            .map_err(|e| anyhow!("--endpoints {endpoint}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        match dialer.connect(attempt).await {
            Ok(channel) => return Ok(channel),
            Err(error) => failures.push(format!("{endpoint} ({})", with_causes(&error))),
        }
    }
    Err(anyhow!("no decider reachable at --endpoints: {}", failures.join(", ")))
}

/// An error and its causes, on one line (tonic's own says only "transport error").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        line.push_str(": ");
        line.push_str(&next.to_string());
        cause = next.source();
    }
    line
}

/// A gRPC refusal as one line: what kind, and the decider's message naming the field.
pub fn refusal(status: tonic::Status) -> anyhow::Error {
    let kind = match status.code() {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::PermissionDenied => "permission denied",
        _ => "error",
    };
    anyhow!("{kind}: {}", status.message())
}
