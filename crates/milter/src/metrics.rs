//! The milter's Prometheus metrics (prefix `ratchet_milter`), served at `/metrics` on
//! `--http`: connections, messages by verdict, what was refused, and the decision client's
//! own set (Decide latency, fallbacks, connectors loaded), shared with the edge.
//!
//! Labels are bounded: verdict and refusal reason, a few values each. No tenant, server or
//! client address.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ratchet_edge::metrics::{register_build_info, render_registry, DeciderMetrics, MessageVerdict};

type Labels = Vec<(&'static str, &'static str)>;

pub(crate) struct MilterMetrics {
    registry: Registry,
    connections_active: Gauge,
    connections: Counter,
    refused_connections: Family<Labels, Counter>,
    protocol_errors: Counter,
    messages: Family<Labels, Counter>,
    headers_over_limit: Counter,
    idle_closed: Counter,
    pub(crate) decider: DeciderMetrics,
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// From an address outside `mta_cidrs`.
    NotAnMta,
    /// `max_connections` reached.
    TooMany,
}

pub(crate) fn metrics() -> &'static MilterMetrics {
    static METRICS: OnceLock<MilterMetrics> = OnceLock::new();
    METRICS.get_or_init(MilterMetrics::new)
}

impl MilterMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ratchet_milter");
        register_build_info(&mut registry);
        let m = MilterMetrics {
            decider: DeciderMetrics::register(&mut registry),
            registry: Registry::default(),
            connections_active: Gauge::default(),
            connections: Counter::default(),
            refused_connections: Family::default(),
            protocol_errors: Counter::default(),
            messages: Family::default(),
            headers_over_limit: Counter::default(),
            idle_closed: Counter::default(),
        };
        registry.register("connections_active", "Milter connections open now", m.connections_active.clone());
        registry.register("connections", "Milter connections served", m.connections.clone());
        registry.register(
            "refused_connections",
            "Milter connections closed at once, by reason (not_an_mta, too_many)",
            m.refused_connections.clone(),
        );
        registry.register(
            "protocol_errors",
            "Milter connections ended by a malformed, oversized or unknown packet",
            m.protocol_errors.clone(),
        );
        registry.register(
            "messages",
            "Messages at the end of the message, by verdict (accept, throttle, block, no_verdict, unenforced)",
            m.messages.clone(),
        );
        registry.register(
            "headers_over_limit",
            "Messages answered 451 4.3.4 for headers past max_header_bytes",
            m.headers_over_limit.clone(),
        );
        registry.register(
            "idle_closed",
            "Milter connections closed after idle_timeout_secs without a packet",
            m.idle_closed.clone(),
        );
        MilterMetrics { registry, ..m }
    }

    /// Counts a connection as active while the guard lives.
    pub fn connection_started(&self) -> ConnectionGuard {
        self.connections.inc();
        self.connections_active.inc();
        ConnectionGuard
    }

    pub fn refused(&self, why: Refusal) {
        let reason = match why {
            Refusal::NotAnMta => "not_an_mta",
            Refusal::TooMany => "too_many",
        };
        self.refused_connections.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn protocol_error(&self) {
        self.protocol_errors.inc();
    }

    pub fn message(&self, verdict: MessageVerdict) {
        self.messages.get_or_create(&vec![("verdict", verdict.label())]).inc();
    }

    pub fn headers_over_limit(&self) {
        self.headers_over_limit.inc();
    }

    pub fn idle_closed(&self) {
        self.idle_closed.inc();
    }
}

pub(crate) struct ConnectionGuard;

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        metrics().connections_active.dec();
    }
}

/// The OpenMetrics text of the milter's metrics.
pub fn render() -> String {
    render_registry(&metrics().registry)
}
