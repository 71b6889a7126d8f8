//! The edge's Prometheus metrics, served at `/metrics` by [`crate::http`].
//!
//! Labels are bounded: reply code (three digits, 2xx to 5xx) and its class, verdict (a few
//! outcomes), fallback kind, relay outcome, the kind and outcome of a client claim (a
//! PROXY header, XFORWARD), and why a next-hop session ended. No tenant, server or client
//! address.
//!
//! The decision client's own metrics ([`DeciderMetrics`]: Decide latency, fallbacks,
//! connectors loaded) are a set of their own, so that every front that asks the deciders
//! (the edge, the milter) registers them under its own prefix.
//!
//! Two gauges follow what sessions hold, through values that count themselves while they
//! live ([`SessionGuard`], [`HeldMessage`]), so that every way a session or a message ends,
//! errors and disconnects included, gives back what it took.

use std::ops::Deref;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;

pub(crate) struct EdgeMetrics {
    registry: Registry,
    sessions_active: Gauge,
    sessions: Counter,
    message_in_flight_bytes: Gauge,
    replies: Family<Labels, Counter>,
    messages: Family<Labels, Counter>,
    pub(crate) decider: DeciderMetrics,
    next_hop_seconds: Histogram,
    relays: Family<Labels, Counter>,
    client_claims: Family<Labels, Counter>,
    clients_forwarded: Family<Labels, Counter>,
    hop_opened: Counter,
    hop_reused: Counter,
    /// One counter per [`HopClosed`], made once (no label built per message).
    hop_closed: [Counter; HopClosed::ALL.len()],
    hop_idle: Gauge,
}

/// Why a session to the next hop ended, for `ratchet_edge_next_hop_sessions_closed_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HopClosed {
    /// QUIT after its one message: the pool is off (or XCLIENT).
    Unpooled,
    /// Idle longer than `next_hop_pool_idle_secs`.
    Expired,
    /// It carried `next_hop_pool_max_messages`.
    MaxMessages,
    /// Given back to a pool already holding `next_hop_pool_max_idle`.
    PoolFull,
    /// Found closed by the next hop (or a `421`) when taken from the pool or used.
    ByNextHop,
    /// A connection error, a timeout or a `421` in a transaction, or a failed greeting.
    Failed,
    /// The edge shut down.
    Shutdown,
}

impl HopClosed {
    const ALL: [HopClosed; 7] = [
        HopClosed::Unpooled,
        HopClosed::Expired,
        HopClosed::MaxMessages,
        HopClosed::PoolFull,
        HopClosed::ByNextHop,
        HopClosed::Failed,
        HopClosed::Shutdown,
    ];

    /// The `reason` label.
    fn label(self) -> &'static str {
        match self {
            HopClosed::Unpooled => "unpooled",
            HopClosed::Expired => "idle_timeout",
            HopClosed::MaxMessages => "max_messages",
            HopClosed::PoolFull => "pool_full",
            HopClosed::ByNextHop => "next_hop_closed",
            HopClosed::Failed => "failed",
            HopClosed::Shutdown => "shutdown",
        }
    }
}

/// What the decision client measures: Decide latency with failover, fallbacks, the
/// connectors loaded, and the flushes of the front's message counts. Each front registers
/// one set in its own registry.
pub struct DeciderMetrics {
    decide_seconds: Histogram,
    fallbacks: Family<Labels, Counter>,
    connectors_loaded: Gauge,
    connector_updates: Family<ConnectorUpdate, Counter>,
    count_flushes: Family<Labels, Counter>,
    counts_pending: Gauge,
    verdict_cache_lookups: Family<CacheLookup, Counter>,
}

/// The label of `..._connector_updates_total`: whether the decider sent the whole table
/// or only what changed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorUpdate {
    kind: UpdateKind,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum UpdateKind {
    Whole,
    Delta,
}

impl EncodeLabelValue for UpdateKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            UpdateKind::Whole => "whole",
            UpdateKind::Delta => "delta",
        })
    }
}

/// The label of `..._verdict_cache_lookups_total`: a typed set, so that counting a lookup
/// on the hot path builds no strings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLookup {
    outcome: CacheOutcome,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum CacheOutcome {
    Hit,
    Miss,
}

impl EncodeLabelValue for CacheOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        })
    }
}

/// What became of one message, for `ratchet_edge_messages_total{verdict}` (and the
/// milter's `ratchet_milter_messages_total{verdict}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageVerdict {
    Accept,
    Throttle,
    Block,
    /// No verdict within the deadline (answered 451, or accepted if so configured).
    NoVerdict,
    /// Not enforced: no tenant's connector, or no server stamp.
    Unenforced,
}

impl MessageVerdict {
    /// The `verdict` label.
    pub fn label(self) -> &'static str {
        match self {
            MessageVerdict::Accept => "accept",
            MessageVerdict::Throttle => "throttle",
            MessageVerdict::Block => "block",
            MessageVerdict::NoVerdict => "no_verdict",
            MessageVerdict::Unenforced => "unenforced",
        }
    }
}

/// How one flush of a front's message counts ended, for `..._count_flushes_total`.
#[derive(Clone, Copy)]
pub(crate) enum CountFlush {
    Committed,
    /// Not confirmed: sent again, unchanged, next time.
    Unsure,
    /// Refused as invalid: its counts are lost.
    Refused,
}

/// Why the edge had to go past the first decider it asked.
#[derive(Clone, Copy)]
pub(crate) enum Fallback {
    /// One decider failed or timed out and the next one was asked.
    Failover,
    /// No decider answered within the deadline.
    NoVerdict,
}

pub(crate) fn metrics() -> &'static EdgeMetrics {
    static METRICS: OnceLock<EdgeMetrics> = OnceLock::new();
    METRICS.get_or_init(EdgeMetrics::new)
}

impl EdgeMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ratchet_edge");
        // The counters of `hop_closed` are made here, once, and kept.
        let hop_closed = Family::<Labels, Counter>::default();
        let m = EdgeMetrics {
            registry: Registry::default(),
            sessions_active: Gauge::default(),
            sessions: Counter::default(),
            message_in_flight_bytes: Gauge::default(),
            replies: Family::default(),
            messages: Family::default(),
            decider: DeciderMetrics::register(&mut registry),
            next_hop_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            relays: Family::default(),
            client_claims: Family::default(),
            clients_forwarded: Family::default(),
            hop_opened: Counter::default(),
            hop_reused: Counter::default(),
            hop_closed: HopClosed::ALL.map(|reason| hop_closed.get_or_create(&vec![("reason", reason.label().to_owned())]).clone()),
            hop_idle: Gauge::default(),
        };
        register_build_info(&mut registry);
        registry.register("smtp_sessions_active", "SMTP sessions open now", m.sessions_active.clone());
        registry.register("smtp_sessions", "SMTP sessions admitted", m.sessions.clone());
        registry.register_with_unit(
            "message_in_flight",
            "Message content received and held, not yet relayed or answered, over all sessions",
            Unit::Bytes,
            m.message_in_flight_bytes.clone(),
        );
        registry.register("smtp_replies", "SMTP replies sent, by reply code and its class", m.replies.clone());
        registry.register(
            "messages",
            "Messages at the end of DATA, by verdict (accept, throttle, block, no_verdict, unenforced)",
            m.messages.clone(),
        );
        registry.register_with_unit(
            "next_hop_duration",
            "Time to relay one message to the next hop",
            Unit::Seconds,
            m.next_hop_seconds.clone(),
        );
        registry.register(
            "next_hop_relays",
            "Relays to the next hop by outcome (relayed, refused, down, tls_failed)",
            m.relays.clone(),
        );
        registry.register(
            "client_claims",
            "PROXY headers (kind proxy) and XFORWARD commands (xforward) naming a client, by outcome (accepted, local, untrusted, malformed)",
            m.client_claims.clone(),
        );
        registry.register(
            "client_forwarded",
            "Relays that named the original client to the next hop (next_hop_forward_client), by command (xforward, xclient) and outcome (sent, not_offered)",
            m.clients_forwarded.clone(),
        );
        registry.register(
            "next_hop_sessions_opened",
            "SMTP sessions opened to the next hop (connections)",
            m.hop_opened.clone(),
        );
        registry.register(
            "next_hop_sessions_reused",
            "Messages relayed on an idle session taken from the pool",
            m.hop_reused.clone(),
        );
        registry.register(
            "next_hop_sessions_closed",
            "SMTP sessions to the next hop ended, by reason (unpooled, idle_timeout, max_messages, pool_full, next_hop_closed, failed, shutdown)",
            hop_closed,
        );
        registry.register(
            "next_hop_sessions_idle",
            "Idle SMTP sessions to the next hop held in the pool",
            m.hop_idle.clone(),
        );
        EdgeMetrics { registry, ..m }
    }

    pub fn session_started(&self) -> SessionGuard {
        self.sessions.inc();
        self.sessions_active.inc();
        SessionGuard
    }

    pub fn reply(&self, code: u16) {
        let class = format!("{}xx", code / 100);
        self.replies
            .get_or_create(&vec![("class", class), ("code", code.to_string())])
            .inc();
    }

    pub fn message(&self, verdict: MessageVerdict) {
        self.messages.get_or_create(&vec![("verdict", verdict.label().to_owned())]).inc();
    }

    pub fn relayed(&self, outcome: &'static str, took: Duration) {
        self.next_hop_seconds.observe(took.as_secs_f64());
        self.relays.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }

    /// A PROXY header (`kind` "proxy") or XFORWARD ("xforward"): `accepted` (the session
    /// or transaction is the named client's), `local` (the proxy's own), `untrusted`,
    /// `malformed`.
    pub fn client_claim(&self, kind: &'static str, outcome: &'static str) {
        self.client_claims
            .get_or_create(&vec![("kind", kind.to_owned()), ("outcome", outcome.to_owned())])
            .inc();
    }

    /// A relay's XFORWARD or XCLIENT (`command`): `sent`, or `not_offered` by the next hop.
    pub fn client_forwarded(&self, command: &'static str, outcome: &'static str) {
        self.clients_forwarded
            .get_or_create(&vec![("command", command.to_ascii_lowercase()), ("outcome", outcome.to_owned())])
            .inc();
    }

    pub(crate) fn hop_opened(&self) {
        self.hop_opened.inc();
    }

    pub(crate) fn hop_reused(&self) {
        self.hop_reused.inc();
    }

    pub(crate) fn hop_closed(&self, reason: HopClosed) {
        // `ALL` lists the reasons in declaration order.
        self.hop_closed[reason as usize].inc();
    }

    /// Idle sessions given to (`delta` > 0) or taken from the pool.
    pub(crate) fn hop_idle(&self, delta: i64) {
        self.hop_idle.inc_by(delta);
    }

    pub fn render(&self) -> String {
        render_registry(&self.registry)
    }
}

impl DeciderMetrics {
    /// A new set, registered in `registry` (under its prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = DeciderMetrics {
            decide_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            fallbacks: Family::default(),
            connectors_loaded: Gauge::default(),
            connector_updates: Family::default(),
            count_flushes: Family::default(),
            counts_pending: Gauge::default(),
            verdict_cache_lookups: Family::default(),
        };
        registry.register_with_unit(
            "decide_duration",
            "Time to get a verdict from the deciders, failover included",
            Unit::Seconds,
            m.decide_seconds.clone(),
        );
        registry.register(
            "decider_fallbacks",
            "Failovers to another decider, and messages left without a verdict in time",
            m.fallbacks.clone(),
        );
        registry.register(
            "connectors_loaded",
            "Connectors in the snapshot loaded from the deciders (-1: none loaded yet)",
            m.connectors_loaded.clone(),
        );
        registry.register(
            "connector_updates",
            "Connector tables taken from the deciders: whole, or as a delta; each one also drops the remembered verdicts",
            m.connector_updates.clone(),
        );
        registry.register(
            "count_flushes",
            "Flushes of the message counts to the deciders, by outcome (committed, unsure, refused)",
            m.count_flushes.clone(),
        );
        registry.register(
            "counts_pending_servers",
            "Servers whose message counts are held here, not yet sent to the deciders",
            m.counts_pending.clone(),
        );
        registry.register(
            "verdict_cache_lookups",
            "Decide questions answered from an earlier answer that still held (hit) or asked of a decider (miss)",
            m.verdict_cache_lookups.clone(),
        );
        m.connectors_loaded.set(-1);
        m
    }

    pub(crate) fn decided(&self, took: Duration) {
        self.decide_seconds.observe(took.as_secs_f64());
    }

    /// A Decide question answered from the verdict cache (`hit`) or asked of a decider.
    pub(crate) fn verdict_cache(&self, hit: bool) {
        let outcome = if hit { CacheOutcome::Hit } else { CacheOutcome::Miss };
        self.verdict_cache_lookups.get_or_create(&CacheLookup { outcome }).inc();
    }

    pub(crate) fn fallback(&self, kind: Fallback) {
        let kind = match kind {
            Fallback::Failover => "failover",
            Fallback::NoVerdict => "no_verdict",
        };
        self.fallbacks.get_or_create(&vec![("kind", kind.to_owned())]).inc();
    }

    pub(crate) fn connectors_loaded(&self, count: usize, delta: bool) {
        self.connectors_loaded.set(count as i64);
        let kind = if delta { UpdateKind::Delta } else { UpdateKind::Whole };
        self.connector_updates.get_or_create(&ConnectorUpdate { kind }).inc();
    }

    pub(crate) fn count_flush(&self, outcome: CountFlush) {
        let outcome = match outcome {
            CountFlush::Committed => "committed",
            CountFlush::Unsure => "unsure",
            CountFlush::Refused => "refused",
        };
        self.count_flushes.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }

    pub(crate) fn counts_pending(&self, servers: usize) {
        self.counts_pending.set(servers as i64);
    }
}

/// `build_info{version}` = 1, the running binary's version, in `registry` (under its prefix).
pub fn register_build_info(registry: &mut Registry) {
    let build_info = Family::<Labels, Gauge>::default();
    build_info
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
        .set(1);
    registry.register("build_info", "1, labelled with the version of the running binary", build_info);
}

/// The OpenMetrics text of `registry`.
pub fn render_registry(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String");
    text
}

/// Counts a session as active while it lives.
pub(crate) struct SessionGuard;

impl Drop for SessionGuard {
    fn drop(&mut self) {
        metrics().sessions_active.dec();
    }
}

/// A message's content as the edge holds it from DATA until its answer, counted in
/// `ratchet_edge_message_in_flight_bytes` for exactly as long as it is held: dropping it
/// (relayed, refused, answered, or the session gone mid-DATA or mid-relay) gives its bytes
/// back.
#[derive(Default)]
pub(crate) struct HeldMessage {
    content: Vec<u8>,
}

impl HeldMessage {
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.content.extend_from_slice(bytes);
        metrics().message_in_flight_bytes.inc_by(bytes.len() as i64);
    }
}

impl Deref for HeldMessage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.content
    }
}

impl Drop for HeldMessage {
    fn drop(&mut self) {
        metrics().message_in_flight_bytes.dec_by(self.content.len() as i64);
    }
}

/// The OpenMetrics text of the edge's metrics (for `ratchet dev`, which serves them too).
pub fn render() -> String {
    metrics().render()
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
