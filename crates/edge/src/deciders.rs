//! The decision service as the edge sees it: a set of addresses, each a gRPC channel, and
//! its calls (Decide, Count) with a deadline and failover.
//!
//! `--deciders` names hosts or addresses. A host name may resolve to many nodes (a
//! Kubernetes headless Service), so names are resolved again every few seconds and calls
//! are spread over every address found, round-robin; a name that fails to resolve keeps
//! its last known addresses, so a DNS blip does not take the deciders away.
//!
//! Decide goes over one stream per decider (see `decide_stream`); Count is a unary call.
//!
//! Every front that enforces (the edge, the milter) asks through a pool of its own, which
//! records into the front's [`DeciderMetrics`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ratchet_proto::limits::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES};
use ratchet_proto::v1::decision_client::DecisionClient;
use ratchet_proto::v1::{CountRequest, CountResponse, DecideRequest, DecideResponse};
use ratchet_tls::Dialer;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::decide_stream::DecideStream;
use crate::metrics::{DeciderMetrics, Fallback};
use crate::verdict_cache::VerdictCache;

/// The pause before asking every decider again once all of them have failed fast.
const RETRY_ROUND: Duration = Duration::from_millis(25);

#[derive(Clone)]
pub struct Decider {
    pub addr: SocketAddr,
    pub client: DecisionClient<Channel>,
    pub decide: Arc<DecideStream>,
}

pub struct DeciderPool {
    targets: Vec<String>,
    /// Plaintext, or mutual TLS with the edge's certificate (role edge).
    dialer: Dialer,
    connect_timeout: Duration,
    resolved: Mutex<HashMap<String, Vec<SocketAddr>>>,
    deciders: RwLock<Arc<Vec<Decider>>>,
    next: AtomicUsize,
    /// When a decider last answered (a Decide, or the connector watch), for readiness.
    last_answer: Mutex<Option<Instant>>,
    /// Whether the connector watch stream to some decider is open.
    watching: AtomicBool,
    /// Answers that still hold, for the same question asked again (None: off).
    verdicts: Option<VerdictCache>,
    pub(crate) metrics: &'static DeciderMetrics,
}

impl DeciderPool {
    pub fn new(
        targets: Vec<String>,
        dialer: Dialer,
        connect_timeout: Duration,
        verdict_cache_entries: usize,
        metrics: &'static DeciderMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            targets,
            dialer,
            connect_timeout,
            resolved: Mutex::default(),
            deciders: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            last_answer: Mutex::new(None),
            watching: AtomicBool::new(false),
            verdicts: VerdictCache::new(verdict_cache_entries),
            metrics,
        })
    }

    pub fn answered(&self) {
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Drops every remembered verdict: the deciders applied a change that may alter them.
    pub fn forget_verdicts(&self) {
        if let Some(cache) = &self.verdicts {
            cache.clear();
        }
    }

    pub fn set_watching(&self, open: bool) {
        self.watching.store(open, Ordering::Relaxed);
    }

    /// Whether a decider is reachable: the connector watch is open, or one answered
    /// within `recent`.
    pub fn answered_within(&self, recent: Duration) -> bool {
        self.watching.load(Ordering::Relaxed)
            || self
                .last_answer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|at| at.elapsed() <= recent)
    }

    /// Resolves every target again and rebuilds the set, keeping the channels of
    /// addresses that are still there.
    pub async fn refresh(&self) {
        let mut found = Vec::with_capacity(self.targets.len());
        for target in &self.targets {
            let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(target.as_str())).await;
            match lookup {
                Ok(Ok(addrs)) => found.push((target.clone(), Some(addrs.collect::<Vec<_>>()))),
                Ok(Err(e)) => {
                    tracing::warn!(decider = %target, error = %e, "cannot resolve decider; keeping its last addresses");
                    found.push((target.clone(), None));
                }
                Err(_) => {
                    tracing::warn!(decider = %target, "resolving decider timed out; keeping its last addresses");
                    found.push((target.clone(), None));
                }
            }
        }
        let addrs: Vec<SocketAddr> = {
            let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
            for (target, addrs) in found {
                if let Some(addrs) = addrs.filter(|a| !a.is_empty()) {
                    resolved.insert(target, addrs);
                }
            }
            let mut seen = HashSet::new();
            self.targets
                .iter()
                .flat_map(|t| resolved.get(t).cloned().unwrap_or_default())
                .filter(|a| seen.insert(*a))
                .collect()
        };
        let current = self.current();
        let deciders: Vec<Decider> = addrs
            .into_iter()
            .map(|addr| match current.iter().find(|d| d.addr == addr) {
                Some(existing) => existing.clone(),
                None => {
                    let client = DecisionClient::new(self.channel(addr))
                        .max_decoding_message_size(MAX_REPLY_BYTES)
                        .max_encoding_message_size(MAX_REQUEST_BYTES);
                    Decider {
                        addr,
                        decide: Arc::new(DecideStream::new(client.clone())),
                        client,
                    }
                }
            })
            .collect();
        if deciders.iter().map(|d| d.addr).ne(current.iter().map(|d| d.addr)) {
            tracing::info!(deciders = ?deciders.iter().map(|d| d.addr).collect::<Vec<_>>(), "decider addresses");
        }
        *self.deciders.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(deciders);
    }

    fn channel(&self, addr: SocketAddr) -> Channel {
        let endpoint = self
            .dialer
            .endpoint(&addr.to_string())
            .expect("a socket address is a valid URI authority")
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        self.dialer.connect_lazy(endpoint)
    }

    fn current(&self) -> Arc<Vec<Decider>> {
        self.deciders.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every known decider, starting with the next one in round-robin order.
    pub fn rotation(&self) -> Vec<Decider> {
        let all = self.current();
        if all.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % all.len();
        all[start..].iter().chain(&all[..start]).cloned().collect()
    }

    /// A verdict within `deadline`, or None (see `call_with_failover`): the answer a
    /// decider gave to the same question while it holds (see `verdict_cache`), or a new one.
    #[tracing::instrument(name = "edge.decide", skip_all, fields(otel.kind = "client", server = %request.server_fqdn))]
    pub async fn decide(&self, request: DecideRequest, deadline: Duration) -> Option<DecideResponse> {
        let cache = self.verdicts.as_ref();
        let asked = match cache.map(|c| c.get(&request, chrono::Utc::now().timestamp_millis())) {
            Some(Ok(answer)) => {
                self.metrics.verdict_cache(true);
                return Some(answer);
            }
            Some(Err(asked)) => {
                self.metrics.verdict_cache(false);
                Some(asked)
            }
            None => None,
        };
        let started = Instant::now();
        let (answer, attempts) = self
            .call_with_failover("Decide", request, deadline, |decider, request, budget| async move {
                decider.decide.decide(request, budget).await
            })
            .await;
        self.metrics.decided(started.elapsed());
        (1..attempts).for_each(|_| self.metrics.fallback(Fallback::Failover));
        match answer {
            Ok(answer) => {
                if let (Some(cache), Some(asked)) = (cache, asked) {
                    cache.remember(asked, &answer, chrono::Utc::now().timestamp_millis());
                }
                Some(answer)
            }
            Err(_) => {
                self.metrics.fallback(Fallback::NoVerdict);
                None
            }
        }
    }

    /// Commits one numbered flush of this edge's counts within `deadline`.
    #[tracing::instrument(name = "edge.count", skip_all, fields(otel.kind = "client", sequence = request.sequence))]
    pub async fn count(&self, request: CountRequest, deadline: Duration) -> Result<CountResponse, Status> {
        let (answer, _) = self
            .call_with_failover("Count", request, deadline, |decider, request, budget| async move {
                let answer = decider.client.clone().count(unary_request(request, budget)).await?;
                Ok(answer.into_inner())
            })
            .await;
        answer
    }

    /// Asks the deciders in turn until one answers, within `deadline`; also returns how
    /// many were asked. Each attempt gets half the time left (the only decider all of it),
    /// so one node that hangs cannot eat the whole deadline; when every decider has failed
    /// fast (stopping, restarting, not fresh), they are tried again after a short pause
    /// until the deadline, as during a rolling restart one of them is soon back. A request
    /// refused as invalid is not asked again.
    async fn call_with_failover<Req, Resp, Call, Answer>(
        &self,
        method: &'static str,
        request: Req,
        deadline: Duration,
        call: Call,
    ) -> (Result<Resp, Status>, usize)
    where
        Req: Clone,
        Call: Fn(Decider, Req, Duration) -> Answer,
        Answer: Future<Output = Result<Resp, Status>>,
    {
        let until = Instant::now() + deadline;
        let mut order = self.rotation();
        if order.is_empty() {
            let _ = tokio::time::timeout_at(until, self.refresh()).await;
            order = self.rotation();
        }
        let mut attempts = 0;
        let mut last = Status::unavailable("no decider is known");
        loop {
            for decider in &order {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (Err(last), attempts);
                }
                let budget = if order.len() == 1 { left } else { left / 2 };
                attempts += 1;
                match tokio::time::timeout(budget, call(decider.clone(), request.clone(), budget)).await {
                    Ok(Ok(answer)) => {
                        self.answered();
                        return (Ok(answer), attempts);
                    }
                    Ok(Err(status)) if status.code() == Code::InvalidArgument => return (Err(status), attempts),
                    Ok(Err(status)) => {
                        tracing::warn!(decider = %decider.addr, code = ?status.code(), message = status.message(), "{method} failed");
                        last = status;
                    }
                    Err(_) => {
                        tracing::warn!(decider = %decider.addr, budget_ms = budget.as_millis() as u64, "{method} timed out");
                        last = Status::deadline_exceeded(format!("{method} timed out at {}", decider.addr));
                    }
                }
            }
            if order.is_empty() {
                return (Err(last), attempts);
            }
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(RETRY_ROUND.min(left)).await;
        }
    }
}

/// A unary call with the caller's budget as its gRPC timeout and the current trace context.
pub(crate) fn unary_request<T>(message: T, budget: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(budget);
    ratchet_proto::trace_context::inject(request.metadata_mut());
    request
}

/// Re-resolves the decider names forever.
pub async fn keep_resolving(pool: Arc<DeciderPool>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        pool.refresh().await;
    }
}
