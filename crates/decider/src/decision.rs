//! The decision API: the verdict for one message, on the hot path of every edge.
//!
//! Every verdict is computed (in `verdict`) from this node's own state, which must be
//! fresh (see `freshness`): a node out of touch with its group answers nothing, and an
//! edge asks another.
//!
//! In report-only mode (the tenant's or the product's, see `ratchet_policy::mode`) the
//! verdict is accept and `would_verdict` carries the one the rules reached, for the edge
//! to count; fronts need not know modes to keep accepting.
//!
//! Fronts ask on one long-lived `DecideStream` per decider: each call is one frame each
//! way on it, where a unary Decide is a whole HTTP/2 request (headers, data, trailers, a
//! task on each side). Calls on a stream are decided concurrently (a linearizable one
//! waits for its read barrier without holding up the rest) and answered as they finish,
//! tagged with the caller's id.
//!
//! Decide counts nothing: the edge counts the verdicts it gives (a message it answered
//! from a remembered verdict too, none it asked twice about) and sends them with `Count`,
//! in numbered flushes that apply counts once. Counting here lost what a node held when
//! it was killed, and counted twice a message an edge asked again after a timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::decision_server::Decision;
use ratchet_store::{Applied, Command};
use tokio_stream::wrappers::{IntervalStream, WatchStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::convert;
use crate::error::Error;
use crate::freshness::Freshness;
use crate::metrics::metrics;
use crate::proposer::Proposer;
use crate::sightings::SightingQueue;
use crate::verdict::{self, Decided};

/// How often an open connector watch checks that this node is still fresh.
const WATCH_FRESHNESS_EVERY: Duration = Duration::from_secs(1);

/// The calls of one stream decided at once, at most: more wait on the stream (and, past
/// HTTP/2's flow-control window, at the caller) until one is answered.
const STREAM_CALLS_IN_FLIGHT: usize = 256;

#[derive(Clone)]
pub struct DecisionService {
    pub proposer: Proposer,
    pub sightings: Arc<SightingQueue>,
    pub freshness: Freshness,
}

impl DecisionService {
    fn fresh(&self) -> Result<(), Error> {
        self.freshness
            .check(&self.proposer.raft)
            .map_err(|reason| Error::NotFresh(format!("this decider is not fresh: {reason}")))
    }

    /// Converts the question in, decides it, and the answer out.
    #[tracing::instrument(name = "decider.decide", skip_all, fields(server = %request.server_fqdn, verdict = tracing::field::Empty))]
    async fn decide(&self, request: pb::DecideRequest) -> Result<pb::DecideResponse, Error> {
        let started = std::time::Instant::now();
        let linearizable = request.linearizable;
        let question = convert::question(request)?;
        self.fresh()?;
        if linearizable {
            self.proposer.read_barrier().await?;
        }
        let decided = verdict::decide(&self.proposer.view, &self.sightings, self.proposer.now(), question)?;
        if let Some((verdict, stage)) = decided.counted() {
            metrics().decided(verdict, stage, started.elapsed());
        }
        if let Decided::Judged { evaluation, .. } = &decided {
            tracing::Span::current().record("verdict", tracing::field::debug(evaluation.verdict));
        }
        Ok(decided.into())
    }

    /// One call of a stream: its answer, or the status a unary Decide would have failed
    /// with, under the caller's id. The call's span joins the caller's trace when it sent one.
    async fn answer(&self, call: pb::DecideCall) -> pb::DecideResult {
        let span = if call.traceparent.is_empty() {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(
                "grpc.server",
                otel.name = "ratchet.v1.Decision/DecideStream",
                otel.kind = "server",
                rpc.system = "grpc"
            );
            let _ = span.set_parent(ratchet_proto::trace_context::context_of(&call.traceparent));
            span
        };
        let answered = match call.request {
            Some(request) => self.decide(request).instrument(span).await.map_err(Status::from),
            None => Err(Status::invalid_argument(format!("DecideCall {} has no request", call.id))),
        };
        let outcome = match answered {
            Ok(response) => pb::decide_result::Outcome::Response(response),
            Err(status) => pb::decide_result::Outcome::Failure(pb::CallFailure {
                code: status.code() as i32,
                message: status.message().to_owned(),
            }),
        };
        pb::DecideResult {
            id: call.id,
            outcome: Some(outcome),
        }
    }
}

type ConnectorStream = Pin<Box<dyn Stream<Item = Result<pb::ConnectorSnapshot, Status>> + Send>>;
type DecideResults = Pin<Box<dyn Stream<Item = Result<pb::DecideResult, Status>> + Send>>;

#[tonic::async_trait]
impl Decision for DecisionService {
    async fn decide(&self, request: Request<pb::DecideRequest>) -> Result<Response<pb::DecideResponse>, Status> {
        Ok(Response::new(DecisionService::decide(self, request.into_inner()).await?))
    }

    type DecideStreamStream = DecideResults;

    /// Decides every call of the stream, up to `STREAM_CALLS_IN_FLIGHT` at once, and
    /// answers each as it is decided. The stream ends when the caller ends it or breaks it.
    async fn decide_stream(&self, request: Request<Streaming<pb::DecideCall>>) -> Result<Response<DecideResults>, Status> {
        let service = Arc::new(self.clone());
        let answers = request.into_inner().map(move |call| {
            let service = service.clone();
            async move { Ok::<_, Status>(service.answer(call?).await) }
        });
        Ok(Response::new(Box::pin(futures::StreamExt::buffer_unordered(
            answers,
            STREAM_CALLS_IN_FLIGHT,
        ))))
    }

    /// Commits one numbered flush of a caller's counts (see `Command::Count`).
    async fn count(&self, request: Request<pb::CountRequest>) -> Result<Response<pb::CountResponse>, Status> {
        let request = request.into_inner();
        let observations = request.servers.into_iter().map(convert::observation).collect::<Result<_, _>>()?;
        let command = Command::Count {
            origin: request.origin,
            sequence: request.sequence,
            observations,
        };
        let servers = match self.proposer.propose(command).await? {
            Applied::Observed { servers } => servers,
            _ => 0,
        };
        Ok(Response::new(pb::CountResponse {
            servers: u32::try_from(servers).unwrap_or(u32::MAX),
        }))
    }

    type WatchConnectorsStream = ConnectorStream;

    /// The connector table, only from a fresh node: the whole table now; then after each
    /// change of the connectors, and after each change that may alter a verdict already
    /// given (on which fronts drop the verdicts they remember), the whole table again or,
    /// to a watcher that asked for deltas, what changed since its last message. Each
    /// message has the applied index it was read at. The stream ends with UNAVAILABLE as
    /// soon as this node stops being fresh, so an edge moves to another decider.
    async fn watch_connectors(&self, request: Request<pb::WatchConnectorsRequest>) -> Result<Response<ConnectorStream>, Status> {
        self.fresh()?;
        let deltas = request.into_inner().deltas;
        let view = self.proposer.view.clone();
        let changes = WatchStream::new(view.connectors())
            .map(drop)
            .merge(WatchStream::from_changes(view.verdicts_changed()).map(drop));
        // The version of the table the watcher has, once it has one and wants deltas.
        let mut seen: Option<u64> = None;
        let snapshots = changes.map(move |()| {
            let (feed, applied) = (view.connector_feed(), *view.applied().borrow());
            let message = match seen.and_then(|seen| feed.changes_since(seen)) {
                Some(delta) => convert::connector_delta(&delta, applied),
                None => convert::connector_snapshot(&feed.table, applied),
            };
            seen = deltas.then_some(feed.index);
            Ok(message)
        });
        let (raft, freshness) = (self.proposer.raft.clone(), self.freshness.clone());
        let stale = IntervalStream::new(tokio::time::interval(WATCH_FRESHNESS_EVERY)).filter_map(move |_| {
            freshness
                .check(&raft)
                .err()
                .map(|reason| Err(Error::NotFresh(format!("this decider is no longer fresh: {reason}")).into()))
        });
        let stream = snapshots
            .merge(stale)
            .take_while(Result::is_ok)
            .chain(tokio_stream::once(Err(Error::NotFresh(
                "this decider is no longer fresh: ask another".into(),
            )
            .into())));
        Ok(Response::new(Box::pin(stream)))
    }
}
