//! Decide over one long-lived `DecideStream` per decider, shared by every message the
//! front is deciding: a call is one frame each way on it, where a unary Decide is a whole
//! HTTP/2 request. Calls carry an id; a reader task hands each result to the caller that
//! waits for that id, so any number of calls are in flight at once, answered in any order.
//!
//! The stream opens on the first call and again on the call after it breaks; a break fails
//! the calls in flight on it with UNAVAILABLE, and the caller's failover asks another
//! decider. A decider that predates the stream answers UNIMPLEMENTED: it is then asked
//! with unary Decide, and the stream tried again a minute later (a rolling upgrade).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratchet_proto::v1::decide_result::Outcome;
use ratchet_proto::v1::decision_client::DecisionClient;
use ratchet_proto::v1::{DecideCall, DecideRequest, DecideResponse, DecideResult};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::deciders::unary_request;

/// How long a decider that did not know `DecideStream` is asked with unary Decide before
/// the stream is tried again.
const RETRY_STREAM_AFTER: Duration = Duration::from_secs(60);

/// Who waits for which answer on one stream; `None` once the stream has ended.
type Waiters = Mutex<Option<HashMap<u64, oneshot::Sender<Result<DecideResponse, Status>>>>>;

/// Decide on one decider, by stream when it has one.
pub struct DecideStream {
    client: DecisionClient<Channel>,
    /// The stream now open, if any; opening holds the lock, so one caller opens it.
    open: tokio::sync::Mutex<Option<Arc<OpenStream>>>,
    /// When the decider answered UNIMPLEMENTED to the stream.
    unary_since: Mutex<Option<Instant>>,
}

/// One open stream: where calls go, and who waits for which answer.
struct OpenStream {
    calls: mpsc::UnboundedSender<DecideCall>,
    waiters: Arc<Waiters>,
    next_id: AtomicU64,
}

impl DecideStream {
    pub fn new(client: DecisionClient<Channel>) -> Self {
        Self {
            client,
            open: tokio::sync::Mutex::default(),
            unary_since: Mutex::new(None),
        }
    }

    /// The decider's answer to `request`. `budget` is sent as the call's gRPC timeout when
    /// it goes unary; on the stream the caller bounds the wait.
    pub async fn decide(&self, request: DecideRequest, budget: Duration) -> Result<DecideResponse, Status> {
        match self.stream().await? {
            Some(stream) => stream.call(request).await,
            None => self.decide_unary(request, budget).await,
        }
    }

    async fn decide_unary(&self, request: DecideRequest, budget: Duration) -> Result<DecideResponse, Status> {
        let mut client = self.client.clone();
        Ok(client.decide(unary_request(request, budget)).await?.into_inner())
    }

    /// The open stream, opened now if there is none; `None` when the decider is asked unary.
    async fn stream(&self) -> Result<Option<Arc<OpenStream>>, Status> {
        if self.asked_unary() {
            return Ok(None);
        }
        let mut open = self.open.lock().await;
        if let Some(stream) = open.as_ref().filter(|s| s.is_open()) {
            return Ok(Some(stream.clone()));
        }
        let (calls, outgoing) = mpsc::unbounded_channel();
        let results = match self.client.clone().decide_stream(UnboundedReceiverStream::new(outgoing)).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::info!("this decider has no DecideStream; asking it with unary Decide");
                *self.unary_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                return Ok(None);
            }
            Err(status) => return Err(status),
        };
        let stream = Arc::new(OpenStream {
            calls,
            waiters: Arc::new(Mutex::new(Some(HashMap::new()))),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(hand_out(results, stream.waiters.clone()));
        *open = Some(stream.clone());
        Ok(Some(stream))
    }

    fn asked_unary(&self) -> bool {
        let mut since = self.unary_since.lock().unwrap_or_else(|e| e.into_inner());
        match *since {
            Some(at) if at.elapsed() < RETRY_STREAM_AFTER => true,
            Some(_) => {
                *since = None;
                false
            }
            None => false,
        }
    }
}

impl OpenStream {
    fn is_open(&self) -> bool {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    async fn call(&self, request: DecideRequest) -> Result<DecideResponse, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        match self.waiters.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(waiters) => waiters.insert(id, answer),
            None => return Err(closed()),
        };
        // Forgets the call if its caller stops waiting (a deadline) before the answer.
        let _waiting = Waiting {
            waiters: &self.waiters,
            id,
        };
        let call = DecideCall {
            id,
            request: Some(request),
            traceparent: ratchet_proto::trace_context::current_traceparent().unwrap_or_default(),
        };
        if self.calls.send(call).is_err() {
            return Err(closed());
        }
        answered.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn closed() -> Status {
    Status::unavailable("the decide stream to this decider closed")
}

struct Waiting<'a> {
    waiters: &'a Waiters,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(waiters) = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            waiters.remove(&self.id);
        }
    }
}

/// Hands each result to the call waiting for its id until the stream ends; then fails the
/// calls still waiting, with the reason.
async fn hand_out(mut results: Streaming<DecideResult>, waiters: Arc<Waiters>) {
    let reason = loop {
        match results.message().await {
            Ok(Some(result)) => {
                let waiter = waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .and_then(|waiting| waiting.remove(&result.id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome(result));
                }
            }
            Ok(None) => {
                tracing::debug!("the decider ended the decide stream");
                break Status::unavailable("the decider ended it");
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "decide stream broke");
                break status;
            }
        }
    };
    let waiting = waiters.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(Status::unavailable(format!("decide stream closed: {}", reason.message()))));
    }
}

fn outcome(result: DecideResult) -> Result<DecideResponse, Status> {
    match result.outcome {
        Some(Outcome::Response(response)) => Ok(response),
        Some(Outcome::Failure(failure)) => Err(Status::new(Code::from(failure.code), failure.message)),
        None => Err(Status::internal(format!(
            "the decider sent result {} without an outcome",
            result.id
        ))),
    }
}
