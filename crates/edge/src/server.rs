//! The listener: admits connections, runs one task per session, and shuts down gracefully.
//!
//! Shutdown turns `/readyz` to 503 at once, stops accepting after `shutdown_delay_secs`
//! (0 unless a load balancer needs time to notice), lets sessions finish within the grace period, then
//! tells the rest `421 4.3.2` (a sender keeps and retries whatever was not acknowledged),
//! so a rolling restart of edges never loses or half-acknowledges mail. Last, the idle
//! sessions to the next hop get QUIT.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::build::ExchangeDetector;
use crate::client::{ClientSettings, DecisionClient};
use crate::config::EdgeConfig;
use crate::connection::Connection;
use crate::limits::{Refusal, SessionLimits};
use crate::relay_pool::RelayPool;
use crate::reply;
use crate::session::{Session, Shared};
use crate::tls::{self, EdgeStream};

/// Sessions still running this long after their `421 4.3.2` are dropped.
const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Runs the edge on `listener` until `shutdown` resolves, then drains gracefully.
///
/// Fails at once, naming the key, if `config` is invalid.
pub async fn serve(config: EdgeConfig, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    serve_with_http(config, listener, None, shutdown).await
}

/// [`serve`], with `/healthz`, `/readyz` and `/metrics` on `http` when given.
pub async fn serve_with_http(
    config: EdgeConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let tls = config.tls_files().map(tls::settings).transpose()?;
    let mut background = JoinSet::new();
    let decider_tls = config.decider_tls()?;
    let settings = ClientSettings {
        deciders: &config.deciders,
        tls: decider_tls.as_ref(),
        connect_timeout: Duration::from_millis(config.decider_connect_timeout_ms),
        resolve_every: Duration::from_secs(config.resolve_interval_secs),
        watch_backoff_max: Duration::from_millis(config.watch_backoff_max_ms),
        count_flush_every: config.count_flush(),
        verdict_cache_entries: config.verdict_cache_entries,
        metrics: &crate::metrics::metrics().decider,
    };
    let client = DecisionClient::start(settings, &mut background).await?;

    if let Some(tls) = &tls {
        background.spawn(ratchet_tls::files::keep_checking(tls.clone()));
    }
    let next_hop_tls = config.next_hop_client()?;
    let relay_pool = Arc::new(RelayPool::new(&config));
    background.spawn(relay_pool.clone().keep_sweeping());
    if let (Some(client), Some(_)) = (&next_hop_tls, &config.next_hop_ca_file) {
        background.spawn(ratchet_tls::files::keep_checking(client.connector.clone()));
    }
    if config.accepted_domains.iter().any(|d| d == "*") {
        tracing::warn!("accepted_domains = [\"*\"]: this edge relays mail for any domain; it is an open relay unless only trusted clients can reach it");
    }
    let (draining_tx, draining) = watch::channel(false);
    if let Some(http) = http {
        background.spawn(client.serve_http(http, draining, crate::metrics::render));
    }
    let DecisionClient {
        deciders,
        connectors,
        counts,
    } = client;

    let limits = SessionLimits::new(config.max_sessions, config.max_sessions_per_ip);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let shared = Arc::new(Shared {
        config,
        deciders,
        counts,
        connectors,
        detector: Box::new(ExchangeDetector),
        tls,
        next_hop_tls,
        relay_pool,
    });
    let (force_tx, force_rx) = watch::channel(false);
    let mut sessions = JoinSet::new();
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, next_hop = %shared.config.next_hop, deciders = ?shared.config.deciders, starttls = shared.tls.is_some(), require_tls = shared.config.require_tls, next_hop_tls = ?shared.config.next_hop_tls, accepted_domains = ?shared.config.accepted_domains, "edge serving");

    // Until shutdown, then for `shutdown_delay_secs` more while /readyz says 503.
    let delay = Duration::from_secs(shared.config.shutdown_delay_secs);
    let stop_accepting = async {
        shutdown.await;
        let _ = draining_tx.send(true);
        if !delay.is_zero() {
            tracing::info!(delay_secs = delay.as_secs(), "not ready: accepting sessions a little longer");
            tokio::time::sleep(delay).await;
        }
    };
    tokio::pin!(stop_accepting);
    loop {
        tokio::select! {
            _ = &mut stop_accepting => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => admit(&shared, &limits, &force_rx, &mut sessions, stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(sessions = sessions.len(), grace_secs = grace.as_secs(), "edge shutting down");
    if tokio::time::timeout(grace, drain(&mut sessions)).await.is_err() {
        tracing::info!(sessions = sessions.len(), "grace period over; closing the remaining sessions");
        let _ = force_tx.send(true);
        if tokio::time::timeout(FORCE_CLOSE_WAIT, drain(&mut sessions)).await.is_err() {
            sessions.abort_all();
        }
    }
    // Sessions given back from now on get QUIT too.
    shared.relay_pool.close().await;
    background.abort_all();
    // What the last sessions counted, and anything still unsure; one more try if that fails.
    shared.counts.flush_on_exit(&shared.deciders).await;
    Ok(())
}

async fn drain(sessions: &mut JoinSet<()>) {
    while sessions.join_next().await.is_some() {}
}

fn admit(
    shared: &Arc<Shared>,
    limits: &Arc<SessionLimits>,
    force: &watch::Receiver<bool>,
    sessions: &mut JoinSet<()>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    // A dual-stack listener shows IPv4 clients as ::ffff:a.b.c.d; connectors name a.b.c.d.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let host = &shared.config.hostname;
    // A trusted proxy's sessions count under the clients its PROXY headers name.
    let counted_under = (!shared.config.trusts(peer.ip())).then_some(peer.ip());
    let permit = match limits.try_acquire(counted_under) {
        Ok(permit) => permit,
        Err(refusal) => {
            let reply = match refusal {
                Refusal::TooManySessions => reply::too_many_sessions(host),
                Refusal::TooManyFromIp => reply::too_many_from_ip(host),
            };
            tracing::info!(peer = %peer, ?refusal, "connection refused");
            crate::metrics::metrics().reply(reply.code);
            sessions.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(reply.to_wire().as_bytes())).await;
            });
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let conn = Connection::new(EdgeStream::Plain(stream), shared.config.command_timeout(), force.clone());
    let id = session_id();
    // `client`: the client a trusted proxy's PROXY header names, when it names one.
    let span = tracing::info_span!("smtp.session", otel.kind = "server", session = %id, peer = %peer, client = tracing::field::Empty);
    let session = Session::new(conn, shared.clone(), peer, permit, id);
    let active = crate::metrics::metrics().session_started();
    sessions.spawn(
        async move {
            session.run().await;
            drop(active);
        }
        .instrument(span),
    );
}

/// A short id, unique within this process and unlikely to repeat across edges (and milters).
pub fn session_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    format!("{start:X}{:06X}", NEXT.fetch_add(1, Ordering::Relaxed))
}
