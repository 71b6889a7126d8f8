//! The Decision API's messages: an edge's question in, the verdict out, its counts in, and
//! the connector table it watches.

use ratchet_policy::connectors::ConnectorTable;
use ratchet_policy::products::BuildStatus;
use ratchet_policy::{Mode, Verdict};
use ratchet_proto::v1 as pb;
use ratchet_store::model::Counts;
use ratchet_store::{ConnectorDelta, Observation};

use crate::error::Error;
use crate::verdict::{Decided, Question, Tally};

/// An edge's question; refused only for a client address that is none.
pub fn question(request: pb::DecideRequest) -> Result<Question, Error> {
    let connection = request.connection.unwrap_or_default();
    let client_ip = connection
        .client_ip
        .parse()
        .map_err(|_| Error::bad_field("connection.client_ip", format!("{:?} is not an IP address", connection.client_ip)))?;
    Ok(Question {
        client_ip,
        cert_name: Some(connection.tls_client_cert_name).filter(|name| !name.is_empty()),
        server_fqdn: request.server_fqdn,
        build: request.build,
    })
}

impl From<Decided> for pb::DecideResponse {
    fn from(decided: Decided) -> pb::DecideResponse {
        match decided {
            Decided::Stranger => pb::DecideResponse {
                verdict: pb::Verdict::Accept.into(),
                ..Default::default()
            },
            Decided::Unidentified { tenant, tally } => pb::DecideResponse {
                verdict: pb::Verdict::Accept.into(),
                tenant,
                status: pb::BuildStatus::Unidentified.into(),
                tally: tally.map(self::tally),
                ..Default::default()
            },
            Decided::Judged {
                tenant,
                evaluation,
                first_seen,
                valid_until,
                tally,
            } => pb::DecideResponse {
                verdict: verdict(evaluation.verdict).into(),
                would_verdict: evaluation.would_verdict.map_or(pb::Verdict::Unspecified, verdict).into(),
                mode: mode(evaluation.mode).into(),
                tenant,
                status: build_status(evaluation.status).into(),
                stage: evaluation.stage.unwrap_or(0),
                reply: evaluation.reply.unwrap_or_default(),
                throttle_min: evaluation.throttle_min,
                block_min: evaluation.block_min,
                first_seen_unix_ms: first_seen.map_or(0, |at| at.timestamp_millis()),
                paused: evaluation.paused,
                valid_until_unix_ms: valid_until.timestamp_millis(),
                tally: Some(self::tally(tally)),
            },
        }
    }
}

fn tally(tally: Tally) -> pb::Tally {
    pb::Tally {
        server_fqdn: tally.server_fqdn,
        build: tally.build,
        decided_at_unix_ms: tally.decided_at.timestamp_millis(),
    }
}

fn verdict(verdict: Verdict) -> pb::Verdict {
    match verdict {
        Verdict::Accept => pb::Verdict::Accept,
        Verdict::Throttle => pb::Verdict::Throttle,
        Verdict::Block => pb::Verdict::Block,
    }
}

fn mode(mode: Mode) -> pb::EnforcementMode {
    match mode {
        Mode::Enforce => pb::EnforcementMode::Enforce,
        Mode::ReportOnly => pb::EnforcementMode::ReportOnly,
        Mode::Off => pb::EnforcementMode::Off,
    }
}

fn build_status(status: BuildStatus) -> pb::BuildStatus {
    match status {
        BuildStatus::OutOfDate => pb::BuildStatus::OutOfDate,
        BuildStatus::Compliant => pb::BuildStatus::Compliant,
        BuildStatus::Unidentified => pb::BuildStatus::Unidentified,
    }
}

/// One server's counts from an edge's flush.
pub fn observation(counted: pb::ServerCounts) -> Result<Observation, Error> {
    let last_seen = chrono::DateTime::from_timestamp_millis(counted.last_seen_unix_ms)
        .ok_or_else(|| Error::bad_field("servers.last_seen_unix_ms", format!("{} is not a time", counted.last_seen_unix_ms)))?;
    let counts = counted
        .stages
        .into_iter()
        .map(|s| {
            let counts = Counts {
                accepted: s.accepted,
                throttled: s.throttled,
                blocked: s.blocked,
                would_throttle: s.would_throttle,
                would_block: s.would_block,
            };
            (s.stage, counts)
        })
        .collect();
    Ok(Observation {
        tenant: counted.tenant,
        server_fqdn: counted.server_fqdn,
        build: counted.build,
        last_seen,
        counts,
    })
}

/// A connector, for the admin and decision APIs alike.
pub fn connector(connector: &ratchet_store::Connector) -> pb::Connector {
    pb::Connector {
        tenant: connector.tenant.clone(),
        cidr: connector.cidr.map(|cidr| cidr.to_string()).unwrap_or_default(),
        cert_name: connector.cert_name.clone().unwrap_or_default(),
    }
}

/// The connector table an edge watches, with the applied index it was read at.
pub fn connector_snapshot(table: &ConnectorTable, applied_index: u64) -> pb::ConnectorSnapshot {
    pb::ConnectorSnapshot {
        connectors: table.connectors().map(connector).collect(),
        applied_index,
        ..Default::default()
    }
}

/// What changed in the table since the watcher's last message.
pub fn connector_delta(delta: &ConnectorDelta, applied_index: u64) -> pb::ConnectorSnapshot {
    pb::ConnectorSnapshot {
        connectors: delta.added.iter().map(connector).collect(),
        applied_index,
        delta: true,
        removed: delta.removed.iter().map(connector).collect(),
    }
}
