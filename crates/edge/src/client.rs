//! The decision service as every enforcing front starts it (the edge, the milter): a pool
//! of deciders, dialled in plaintext or with the front's certificate (role edge), resolved
//! again and again, the connector table kept current from them, and the front's message
//! counts flushed to them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ratchet_tls::{Dialer, Role, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::connectors::{self, ConnectorTable};
use crate::counting::MessageCounts;
use crate::deciders::{self, DeciderPool};
use crate::http::{self, HttpState};
use crate::metrics::DeciderMetrics;

/// How to reach the deciders.
pub struct ClientSettings<'a> {
    /// `host:port` each; a host name may resolve to several deciders.
    pub deciders: &'a [String],
    /// The front's certificate, key and the cluster CA; `None`: plaintext.
    pub tls: Option<&'a TlsFiles>,
    pub connect_timeout: Duration,
    /// How often decider host names are resolved again.
    pub resolve_every: Duration,
    /// Longest pause between attempts to re-open the connector watch.
    pub watch_backoff_max: Duration,
    /// How often the verdicts given are sent to the deciders (see `counting`).
    pub count_flush_every: Duration,
    /// Decider answers kept for the same question asked again while they hold (see
    /// `verdict_cache`); 0: ask every time.
    pub verdict_cache_entries: usize,
    pub metrics: &'static DeciderMetrics,
}

/// The deciders and the connector table, kept current by tasks in the caller's set.
pub struct DecisionClient {
    pub deciders: Arc<DeciderPool>,
    pub connectors: ConnectorTable,
    /// Every verdict the front gives is recorded here.
    pub counts: Arc<MessageCounts>,
}

impl DecisionClient {
    /// Resolves the deciders once, then spawns into `background` the tasks that keep
    /// resolving them, watching the connectors and flushing the counts. Fails on
    /// certificates that do not load.
    pub async fn start(settings: ClientSettings<'_>, background: &mut JoinSet<()>) -> anyhow::Result<Self> {
        let dialer = Dialer::new(settings.tls, Some(Role::Edge))?;
        let deciders = DeciderPool::new(
            settings.deciders.to_vec(),
            dialer,
            settings.connect_timeout,
            settings.verdict_cache_entries,
            settings.metrics,
        );
        deciders.refresh().await;
        let (table_tx, connectors) = ConnectorTable::new();
        background.spawn(deciders::keep_resolving(deciders.clone(), settings.resolve_every));
        background.spawn(connectors::keep_watching(deciders.clone(), table_tx, settings.watch_backoff_max));
        let counts = MessageCounts::new(settings.metrics);
        background.spawn(counts.clone().keep_flushing(deciders.clone(), settings.count_flush_every));
        Ok(Self {
            deciders,
            connectors,
            counts,
        })
    }

    /// `/healthz`, `/readyz` (a connector snapshot loaded, a decider answered recently, not
    /// `draining`) and `/metrics` (the front's, as `metrics` renders them) on `listener`.
    pub fn serve_http(
        &self,
        listener: TcpListener,
        draining: watch::Receiver<bool>,
        metrics: fn() -> String,
    ) -> impl Future<Output = ()> + Send + 'static {
        let state = HttpState {
            connectors: self.connectors.clone(),
            deciders: self.deciders.clone(),
            draining,
            metrics,
        };
        http::serve(listener, state)
    }
}
