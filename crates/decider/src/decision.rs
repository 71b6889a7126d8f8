//! The decision API: the verdict for one message, on the hot path of every edge.
//!
//! A known server is a local read: attribution from the in-memory connectors, the server
//! record from RocksDB, the verdict from the policy engine. Only a sighting that changes
//! a server's episode (first seen, remediated, relapsed) goes through consensus, and the
//! answer then uses the record as committed: the winner's first-seen, whichever node won.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DurationRound, TimeDelta};
use futures::Stream;
use ratchet_policy::connectors::attribute;
use ratchet_policy::products::{classify, BuildStatus};
use ratchet_policy::{evaluate, Episode, ServerFacts, Sighting, SightingEffect, Verdict};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::decision_server::Decision;
use ratchet_store::command::{validate_fqdn, MAX_BUILD_LEN};
use ratchet_store::{Applied, Command, ServerEntry};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::admin::connector_message;
use crate::counters::CounterBuffer;
use crate::metrics::metrics;
use crate::proposer::Proposer;

pub struct DecisionService {
    pub proposer: Proposer,
    pub counters: Arc<CounterBuffer>,
}

fn verdict_code(verdict: Verdict) -> pb::Verdict {
    match verdict {
        Verdict::Accept => pb::Verdict::Accept,
        Verdict::Throttle => pb::Verdict::Throttle,
        Verdict::Block => pb::Verdict::Block,
    }
}

fn status_code(status: BuildStatus) -> pb::BuildStatus {
    match status {
        BuildStatus::OutOfDate => pb::BuildStatus::OutOfDate,
        BuildStatus::Compliant => pb::BuildStatus::Compliant,
        BuildStatus::Unidentified => pb::BuildStatus::Unidentified,
    }
}

/// Whether this sighting would change the server's episode, so it must be committed now.
fn changes_episode(entry: Option<&ServerEntry>, sighting: Sighting, relapse_window_days: u32) -> bool {
    let mut episode = entry.and_then(|e| e.record.episode.clone());
    Episode::sight(&mut episode, sighting, TimeDelta::days(i64::from(relapse_window_days))) != SightingEffect::Unchanged
}

impl DecisionService {
    #[tracing::instrument(name = "decider.decide", skip_all, fields(server = %request.server_fqdn, verdict = tracing::field::Empty))]
    async fn decide(&self, request: pb::DecideRequest) -> Result<pb::DecideResponse, Status> {
        let started = std::time::Instant::now();
        let connection = request.connection.unwrap_or_default();
        let client_ip: IpAddr = connection
            .client_ip
            .parse()
            .map_err(|_| Status::invalid_argument(format!("connection.client_ip: {:?} is not an IP address", connection.client_ip)))?;
        let server_fqdn = request.server_fqdn.trim().to_ascii_lowercase();
        validate_fqdn("server_fqdn", &server_fqdn).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if request.build.len() > MAX_BUILD_LEN {
            return Err(Status::invalid_argument(format!(
                "build: is {} bytes long, over the limit of {MAX_BUILD_LEN}",
                request.build.len()
            )));
        }
        let cert_name = Some(connection.tls_client_cert_name.as_str()).filter(|name| !name.is_empty());

        let view = &self.proposer.view;
        let connectors = view.connectors().borrow().clone();
        let Some(tenant) = attribute(&connectors, client_ip, cert_name).map(|c| c.tenant.clone()) else {
            return Ok(pb::DecideResponse {
                verdict: pb::Verdict::Accept.into(),
                ..Default::default()
            });
        };
        if request.linearizable {
            self.proposer.read_barrier().await?;
        }

        let now = self.proposer.now();
        let policy = view.policy();
        let status = classify(&policy.policy.products, &request.build).status;
        let mut entry = view.server(&tenant, &server_fqdn).map_err(|e| Status::internal(e.to_string()))?;
        if changes_episode(entry.as_ref(), Sighting { status, at: now }, policy.policy.relapse_window_days) {
            let sight = Command::Sight {
                tenant: tenant.clone(),
                server_fqdn: server_fqdn.clone(),
                build: request.build.clone(),
            };
            if let Applied::Server { entry: committed } = self.proposer.propose(sight).await? {
                entry = Some(*committed);
            }
        }
        let episode = entry.as_ref().and_then(|e| e.record.episode.as_ref());
        // Borrowed from the shared map: a tenant record also holds its events and daily counts.
        let pauses = view.tenants().get(&tenant).map(|t| t.pauses.intervals()).unwrap_or_default();
        let facts = ServerFacts {
            tenant: &tenant,
            server_fqdn: &server_fqdn,
            build: &request.build,
            episode,
            pauses: &pauses,
        };
        let evaluation = evaluate(&policy.policy, facts, now);
        self.counters.record(
            &tenant,
            &server_fqdn,
            &request.build,
            now,
            evaluation.stage.unwrap_or(0),
            evaluation.verdict,
        );

        metrics().decided(evaluation.verdict, evaluation.stage.unwrap_or(0), started.elapsed());
        tracing::Span::current().record("verdict", tracing::field::debug(evaluation.verdict));

        let minute_end = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now) + TimeDelta::minutes(1);
        Ok(pb::DecideResponse {
            verdict: verdict_code(evaluation.verdict).into(),
            tenant,
            status: status_code(evaluation.status).into(),
            stage: evaluation.stage.unwrap_or(0),
            reply: evaluation.reply.unwrap_or_default(),
            throttle_min: evaluation.throttle_min,
            block_min: evaluation.block_min,
            first_seen_unix_ms: episode.map_or(0, |e| e.first_seen.timestamp_millis()),
            paused: evaluation.paused,
            valid_until_unix_ms: minute_end.timestamp_millis(),
        })
    }
}

type ConnectorStream = Pin<Box<dyn Stream<Item = Result<pb::ConnectorSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Decision for DecisionService {
    async fn decide(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::DecideResponse>, Status> {
        DecisionService::decide(self, request.into_inner()).await.map(Response::new)
    }

    type WatchConnectorsStream = ConnectorStream;

    async fn watch_connectors(&self, _request: Request<pb::WatchConnectorsRequest>) -> Result<Response<ConnectorStream>, Status> {
        let view = self.proposer.view.clone();
        let stream = WatchStream::new(view.connectors()).map(move |connectors| {
            Ok(pb::ConnectorSnapshot {
                connectors: connectors.iter().map(connector_message).collect(),
                applied_index: *view.applied().borrow(),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
