//! The decision service as the edge sees it: a set of addresses, each a gRPC channel, and
//! one call (Decide) with a deadline and failover.
//!
//! `--deciders` names hosts or addresses. A host name may resolve to many nodes (a
//! Kubernetes headless Service), so names are resolved again every few seconds and calls
//! are spread over every address found, round-robin; a name that fails to resolve keeps
//! its last known addresses, so a DNS blip does not take the deciders away.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ratchet_proto::limits::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES};
use ratchet_proto::v1::decision_client::DecisionClient;
use ratchet_proto::v1::{DecideRequest, DecideResponse};
use ratchet_tls::Dialer;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::metrics::{metrics, Fallback};

/// The pause before asking every decider again once all of them have failed fast.
const RETRY_ROUND: Duration = Duration::from_millis(25);

#[derive(Clone)]
pub(crate) struct Decider {
    pub addr: SocketAddr,
    pub client: DecisionClient<Channel>,
}

pub(crate) struct DeciderPool {
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
}

impl DeciderPool {
    pub fn new(targets: Vec<String>, dialer: Dialer, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            targets,
            dialer,
            connect_timeout,
            resolved: Mutex::default(),
            deciders: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            last_answer: Mutex::new(None),
            watching: AtomicBool::new(false),
        })
    }

    pub fn answered(&self) {
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
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
                None => Decider {
                    addr,
                    client: DecisionClient::new(self.channel(addr))
                        .max_decoding_message_size(MAX_REPLY_BYTES)
                        .max_encoding_message_size(MAX_REQUEST_BYTES),
                },
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

    /// A verdict within `deadline`, or None. Each attempt gets half the time left (the
    /// only decider all of it), so one node that hangs cannot eat the whole deadline; when
    /// every decider has failed fast (stopping, restarting, not fresh), they are tried
    /// again after a short pause until the deadline, as during a rolling restart one of
    /// them is soon back.
    #[tracing::instrument(name = "edge.decide", skip_all, fields(otel.kind = "client", server = %request.server_fqdn))]
    pub async fn decide(&self, request: DecideRequest, deadline: Duration) -> Option<DecideResponse> {
        let started = Instant::now();
        let answer = self.decide_with_failover(request, deadline).await;
        metrics().decided(started.elapsed());
        if answer.is_none() {
            metrics().fallback(Fallback::NoVerdict);
        }
        answer
    }

    async fn decide_with_failover(&self, request: DecideRequest, deadline: Duration) -> Option<DecideResponse> {
        let until = Instant::now() + deadline;
        let mut order = self.rotation();
        if order.is_empty() {
            let _ = tokio::time::timeout_at(until, self.refresh()).await;
            order = self.rotation();
        }
        let mut attempt = 0;
        loop {
            for decider in &order {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                let budget = if order.len() == 1 { left } else { left / 2 };
                if attempt > 0 {
                    metrics().fallback(Fallback::Failover);
                }
                attempt += 1;
                let mut call = tonic::Request::new(request.clone());
                call.set_timeout(budget);
                ratchet_proto::trace_context::inject(call.metadata_mut());
                let mut client = decider.client.clone();
                match tokio::time::timeout(budget, client.decide(call)).await {
                    Ok(Ok(response)) => {
                        self.answered();
                        return Some(response.into_inner());
                    }
                    Ok(Err(status)) => {
                        tracing::warn!(decider = %decider.addr, code = ?status.code(), message = status.message(), "Decide failed")
                    }
                    Err(_) => tracing::warn!(decider = %decider.addr, budget_ms = budget.as_millis() as u64, "Decide timed out"),
                }
            }
            if order.is_empty() {
                return None;
            }
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(RETRY_ROUND.min(left)).await;
        }
    }
}

/// Re-resolves the decider names forever.
pub(crate) async fn keep_resolving(pool: Arc<DeciderPool>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        pool.refresh().await;
    }
}
