//! The decision API: the verdict for one message, on the hot path of every edge.
//!
//! Every verdict is computed from this node's own state, which must be fresh (see
//! `freshness`): attribution from the in-memory connectors, the server record from
//! RocksDB, the verdict from the policy engine. No message waits on consensus: a
//! sighting that changes the server's episode (first seen, remediated, relapsed) is
//! answered from the change as this node computes it, and handed to `sightings` to be
//! committed in the background. Such an answer names no first-seen instant it has not
//! seen committed.
//!
//! In report-only mode (the tenant's or the product's, see `ratchet_policy::mode`) the
//! verdict is accept and `would_verdict` carries the one the rules reached, for the edge
//! to count; fronts need not know modes to keep accepting.
//!
//! Decide counts nothing: the edge counts the verdicts it gives (a message it answered
//! from a remembered verdict too, none it asked twice about) and sends them with `Count`,
//! in numbered flushes that apply counts once. Counting here lost what a node held when
//! it was killed, and counted twice a message an edge asked again after a timeout.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use futures::Stream;
use ratchet_policy::products::{classify, BuildStatus};
use ratchet_policy::window::verdict_valid_until;
use ratchet_policy::{evaluate, Episode, Mode, ServerFacts, Sighting, SightingEffect, Verdict};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::decision_server::Decision;
use ratchet_store::command::{validate_fqdn, MAX_BUILD_LEN};
use ratchet_store::model::Counts;
use ratchet_store::{Applied, Command, Observation, ServerSighting};
use tokio_stream::wrappers::{IntervalStream, WatchStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::admin::connector_message;
use crate::freshness::Freshness;
use crate::metrics::metrics;
use crate::proposer::Proposer;
use crate::sightings::SightingQueue;

/// How often an open connector watch checks that this node is still fresh.
const WATCH_FRESHNESS_EVERY: Duration = Duration::from_secs(1);

pub struct DecisionService {
    pub proposer: Proposer,
    pub sightings: Arc<SightingQueue>,
    pub freshness: Freshness,
}

fn verdict_code(verdict: Verdict) -> pb::Verdict {
    match verdict {
        Verdict::Accept => pb::Verdict::Accept,
        Verdict::Throttle => pb::Verdict::Throttle,
        Verdict::Block => pb::Verdict::Block,
    }
}

fn mode_code(mode: Mode) -> pb::EnforcementMode {
    match mode {
        Mode::Enforce => pb::EnforcementMode::Enforce,
        Mode::ReportOnly => pb::EnforcementMode::ReportOnly,
        Mode::Off => pb::EnforcementMode::Off,
    }
}

fn status_code(status: BuildStatus) -> pb::BuildStatus {
    match status {
        BuildStatus::OutOfDate => pb::BuildStatus::OutOfDate,
        BuildStatus::Compliant => pb::BuildStatus::Compliant,
        BuildStatus::Unidentified => pb::BuildStatus::Unidentified,
    }
}

impl DecisionService {
    fn fresh(&self) -> Result<(), Status> {
        self.freshness
            .check(&self.proposer.raft)
            .map_err(|reason| Status::unavailable(format!("this decider is not fresh: {reason}")))
    }

    #[tracing::instrument(name = "decider.decide", skip_all, fields(server = %request.server_fqdn, verdict = tracing::field::Empty))]
    async fn decide(&self, request: pb::DecideRequest) -> Result<pb::DecideResponse, Status> {
        let started = std::time::Instant::now();
        let connection = request.connection.unwrap_or_default();
        let client_ip: IpAddr = connection
            .client_ip
            .parse()
            .map_err(|_| Status::invalid_argument(format!("connection.client_ip: {:?} is not an IP address", connection.client_ip)))?;
        self.fresh()?;
        if request.linearizable {
            self.proposer.read_barrier().await?;
        }
        let cert_name = Some(connection.tls_client_cert_name.as_str()).filter(|name| !name.is_empty());
        let view = &self.proposer.view;
        let connectors = view.connector_table();
        let Some(tenant) = connectors.attribute(client_ip, cert_name).map(|c| c.tenant.clone()) else {
            return Ok(pb::DecideResponse {
                verdict: pb::Verdict::Accept.into(),
                ..Default::default()
            });
        };
        let server_fqdn = request.server_fqdn.trim().to_ascii_lowercase();
        // A stamp that cannot be a server's is an unidentified build: accepted and never
        // enforced, like a malformed one, and never refused (the edge would defer that
        // server's mail forever). An overlong build is counted (by the edge, from the
        // tally) under its server, cut and marked so that it cannot read as a build; a host
        // that cannot be a key (odd characters, too long) has no record to count under, so
        // only the verdict metric counts it.
        let unidentified = || pb::DecideResponse {
            verdict: pb::Verdict::Accept.into(),
            tenant: tenant.clone(),
            status: pb::BuildStatus::Unidentified.into(),
            ..Default::default()
        };
        if validate_fqdn("server_fqdn", &server_fqdn).is_err() {
            tracing::debug!(server = %request.server_fqdn, "a stamp whose host cannot be a server's: unidentified");
            metrics().decided(Verdict::Accept, 0, started.elapsed());
            return Ok(unidentified());
        }
        if request.build.len() > MAX_BUILD_LEN {
            metrics().decided(Verdict::Accept, 0, started.elapsed());
            return Ok(pb::DecideResponse {
                tally: Some(pb::Tally {
                    server_fqdn,
                    build: overlong_build(&request.build),
                    decided_at_unix_ms: self.proposer.now().timestamp_millis(),
                }),
                ..unidentified()
            });
        }

        let now = self.proposer.now();
        let policies = view.policies();
        let policy = policies.at(now);
        let entry = view.server(&tenant, &server_fqdn).map_err(|e| Status::internal(e.to_string()))?;
        let committed = entry.as_ref().and_then(|e| e.record.episode.clone());
        let status = classify(&policy.policy.products, &request.build).clock_status();
        let mut episode = committed.clone();
        let relapse_window = TimeDelta::days(i64::from(policy.policy.relapse_window_days));
        let effect = Episode::sight(&mut episode, Sighting { status, at: now }, relapse_window);
        if effect != SightingEffect::Unchanged {
            self.sightings.offer(ServerSighting {
                tenant: tenant.clone(),
                server_fqdn: server_fqdn.clone(),
                build: request.build.clone(),
                seen_at: now,
            });
        }
        // Borrowed from the shared map: a tenant record also holds its daily counts.
        let (pauses, tenant_mode) = view
            .tenants()
            .get(&tenant)
            .map(|t| (t.pauses.intervals_for(&server_fqdn), t.mode))
            .unwrap_or_default();
        let facts = ServerFacts {
            tenant: &tenant,
            server_fqdn: &server_fqdn,
            build: &request.build,
            episode: episode.as_ref(),
            pauses: &pauses,
            tenant_mode,
        };
        let evaluation = evaluate(&policy.policy, facts, now);
        let stage = evaluation.stage.unwrap_or(0);
        metrics().decided(evaluation.verdict, stage, started.elapsed());
        tracing::Span::current().record("verdict", tracing::field::debug(evaluation.verdict));

        // Only a committed instant is named: a new episode's first-seen is not yet one.
        let first_seen = match effect {
            SightingEffect::FirstDetected => None,
            _ => episode.as_ref().map(|e| e.first_seen),
        };
        Ok(pb::DecideResponse {
            verdict: verdict_code(evaluation.verdict).into(),
            would_verdict: evaluation.would_verdict.map_or(pb::Verdict::Unspecified, verdict_code).into(),
            mode: mode_code(evaluation.mode).into(),
            tenant,
            status: status_code(evaluation.status).into(),
            stage,
            reply: evaluation.reply.unwrap_or_default(),
            throttle_min: evaluation.throttle_min,
            block_min: evaluation.block_min,
            first_seen_unix_ms: first_seen.map_or(0, |at| at.timestamp_millis()),
            paused: evaluation.paused,
            valid_until_unix_ms: verdict_valid_until(now, policies.next_change_after(now)).timestamp_millis(),
            tally: Some(pb::Tally {
                server_fqdn,
                build: request.build,
                decided_at_unix_ms: now.timestamp_millis(),
            }),
        })
    }

    /// Commits one numbered flush of a caller's counts (see `Command::Count`).
    async fn count(&self, request: pb::CountRequest) -> Result<pb::CountResponse, Status> {
        let observations = request.servers.into_iter().map(observation).collect::<Result<_, _>>()?;
        let command = Command::Count {
            origin: request.origin,
            sequence: request.sequence,
            observations,
        };
        let servers = match self.proposer.propose(command).await? {
            Applied::Observed { servers } => servers,
            _ => 0,
        };
        Ok(pb::CountResponse {
            servers: u32::try_from(servers).unwrap_or(u32::MAX),
        })
    }
}

fn observation(counted: pb::ServerCounts) -> Result<Observation, Status> {
    let last_seen = chrono::DateTime::from_timestamp_millis(counted.last_seen_unix_ms)
        .ok_or_else(|| Status::invalid_argument(format!("servers.last_seen_unix_ms: {} is not a time", counted.last_seen_unix_ms)))?;
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

/// An overlong build as the report keeps it: cut to fit, and ending in `…`, so that it
/// can never read as a build (a cut `15.0.1497.000…0048` would otherwise read as 15.0.1497.0).
fn overlong_build(build: &str) -> String {
    const MARK: char = '…';
    let mut end = MAX_BUILD_LEN - MARK.len_utf8();
    while !build.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &build[..end])
}

type ConnectorStream = Pin<Box<dyn Stream<Item = Result<pb::ConnectorSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Decision for DecisionService {
    async fn decide(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::DecideResponse>, Status> {
        DecisionService::decide(self, request.into_inner()).await.map(Response::new)
    }

    async fn count(&self, request: Request<pb::CountRequest>) -> Result<Response<pb::CountResponse>, Status> {
        DecisionService::count(self, request.into_inner()).await.map(Response::new)
    }

    type WatchConnectorsStream = ConnectorStream;

    /// The connector table, only from a fresh node: a snapshot now, after each change of
    /// the connectors, and after each change that may alter a verdict already given (on
    /// which fronts drop the verdicts they remember), each with the applied index it was
    /// read at. The stream ends with UNAVAILABLE as soon as this node stops being fresh, so
    /// an edge moves to another decider.
    async fn watch_connectors(&self, _request: Request<pb::WatchConnectorsRequest>) -> Result<Response<ConnectorStream>, Status> {
        self.fresh()?;
        let view = self.proposer.view.clone();
        let changes = WatchStream::new(view.connectors())
            .map(drop)
            .merge(WatchStream::from_changes(view.verdicts_changed()).map(drop));
        let snapshots = changes.map(move |()| {
            Ok(pb::ConnectorSnapshot {
                connectors: view.connector_table().connectors().iter().map(connector_message).collect(),
                applied_index: *view.applied().borrow(),
            })
        });
        let (raft, freshness) = (self.proposer.raft.clone(), self.freshness.clone());
        let stale = IntervalStream::new(tokio::time::interval(WATCH_FRESHNESS_EVERY)).filter_map(move |_| {
            freshness
                .check(&raft)
                .err()
                .map(|reason| Err(Status::unavailable(format!("this decider is no longer fresh: {reason}"))))
        });
        let stream = snapshots
            .merge(stale)
            .take_while(Result::is_ok)
            .chain(tokio_stream::once(Err(Status::unavailable(
                "this decider is no longer fresh: ask another",
            ))));
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_build_is_cut_to_fit_and_never_reads_as_a_build() {
        let build = format!("15.0.1497.{}48", "0".repeat(80));
        let kept = overlong_build(&build);
        assert!(kept.len() <= MAX_BUILD_LEN && kept.ends_with('…'), "{kept}");
        assert!(kept.parse::<ratchet_policy::BuildVersion>().is_err());
        let wide = "é".repeat(40);
        assert!(overlong_build(&wide).len() <= MAX_BUILD_LEN);
    }
}
