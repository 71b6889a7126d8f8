//! The accept loop: admits MTA connections (over TCP only from `mta_cidrs`; on a Unix
//! socket whoever may open it; at most `max_connections`), runs one milter conversation per
//! connection (closed after `idle_timeout_secs` without a packet), and shuts down gracefully.
//!
//! Shutdown turns `/readyz` to 503 and stops accepting at once, lets conversations finish
//! within `shutdown_grace_secs`, then closes the rest: Postfix applies its
//! `milter_default_action` to what it was still asking about.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ratchet_edge::build::ExchangeDetector;
use ratchet_edge::client::{ClientSettings, DecisionClient};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::MilterConfig;
use crate::conversation::{converse, Ended};
use crate::listener::MilterListener;
use crate::metrics::{metrics, Refusal};
use crate::quickack::QuickAck;
use crate::session::{Session, Shared};

/// Runs the milter on `listener` until `shutdown` resolves, then drains gracefully; with
/// `/healthz`, `/readyz` and `/metrics` on `http` when given.
///
/// Fails at once, naming the key, if `config` is invalid.
pub async fn serve(
    config: MilterConfig,
    listener: MilterListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let mut background = JoinSet::new();
    let decider_tls = config.decider_tls()?;
    let settings = ClientSettings {
        deciders: &config.deciders,
        tls: decider_tls.as_ref(),
        connect_timeout: Duration::from_millis(config.decider_connect_timeout_ms),
        resolve_every: Duration::from_secs(config.resolve_interval_secs),
        watch_backoff_max: Duration::from_millis(config.watch_backoff_max_ms),
        count_flush_every: Duration::from_millis(config.count_flush_ms),
        verdict_cache_entries: config.verdict_cache_entries,
        metrics: &metrics().decider,
    };
    let client = DecisionClient::start(settings, &mut background).await?;
    let (draining_tx, draining) = watch::channel(false);
    if let Some(http) = http {
        background.spawn(client.serve_http(http, draining, crate::metrics::render));
    }
    let DecisionClient {
        deciders,
        connectors,
        counts,
    } = client;
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let shared = Arc::new(Shared {
        config,
        deciders,
        counts,
        connectors,
        detector: Box::new(ExchangeDetector),
    });
    tracing::info!(deciders = ?shared.config.deciders, mta_cidrs = ?shared.config.mta_cidrs, "milter serving");

    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = accept(&listener) => match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    if allowed(&shared.config, peer) {
                        let _ = stream.set_nodelay(true);
                        admit(&shared, &slots, &mut connections, QuickAck(stream), peer.to_string());
                    }
                }
                Ok(Accepted::Unix(stream)) => admit(&shared, &slots, &mut connections, stream, "unix socket".into()),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    let _ = draining_tx.send(true);
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        grace_secs = grace.as_secs(),
        "milter shutting down"
    );
    if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::info!(
            connections = connections.len(),
            "grace period over; closing the remaining connections"
        );
        connections.abort_all();
    }
    background.abort_all();
    shared.counts.flush_on_exit(&shared.deciders).await;
    Ok(())
}

/// A connection the listener took.
enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &MilterListener) -> std::io::Result<Accepted> {
    match listener {
        MilterListener::Tcp(listener) => listener.accept().await.map(|(stream, peer)| Accepted::Tcp(stream, peer)),
        MilterListener::Unix(listener, _) => listener.accept().await.map(|(stream, _)| Accepted::Unix(stream)),
    }
}

/// Whether a TCP peer is in `mta_cidrs`; one that is not is counted and closed.
fn allowed(config: &MilterConfig, peer: SocketAddr) -> bool {
    let allowed = config.allows_mta(peer.ip());
    if !allowed {
        tracing::warn!(peer = %peer, "connection from outside mta_cidrs closed");
        metrics().refused(Refusal::NotAnMta);
    }
    allowed
}

/// Runs the conversation of an admitted MTA (`peer` names it in logs), if a slot is free.
fn admit<S>(shared: &Arc<Shared>, slots: &Arc<Semaphore>, connections: &mut JoinSet<()>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        tracing::warn!(peer = %peer, max_connections = shared.config.max_connections, "too many milter connections; closed");
        metrics().refused(Refusal::TooMany);
        return;
    };
    let id = ratchet_edge::session_id();
    let span = tracing::info_span!("milter.connection", otel.kind = "server", session = %id, peer = %peer);
    let mut session = Session::new(shared.clone(), id);
    let max_packet = shared.config.max_packet();
    let idle = Duration::from_secs(shared.config.idle_timeout_secs);
    let active = metrics().connection_started();
    connections.spawn(
        async move {
            match converse(stream, &mut session, max_packet, idle).await {
                Ok(()) => tracing::debug!("milter connection closed"),
                Err(Ended::Idle(_)) => {
                    metrics().idle_closed();
                    tracing::info!("milter connection idle past idle_timeout_secs; closed");
                }
                Err(Ended::Protocol(error)) => {
                    metrics().protocol_error();
                    tracing::warn!(%error, "milter protocol error; connection closed");
                }
                Err(Ended::Io(error)) => tracing::debug!(%error, "milter connection lost"),
            }
            drop(slot);
            drop(active);
        }
        .instrument(span),
    );
}
