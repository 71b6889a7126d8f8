//! The edge's HTTP listener: `/healthz` (the process is alive), `/readyz` and `/metrics`;
//! the milter serves the same, with its own metrics.
//!
//! Ready means able to enforce: a connector snapshot has been loaded (so the front knows
//! whose mail it carries) and a decider answered recently (the connector watch is open,
//! or a Decide succeeded within [`RECENT`]); and the front is not shutting down.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connectors::ConnectorTable;
use crate::deciders::DeciderPool;

/// How long ago a Decide may have succeeded and still count as a decider reachable.
pub(crate) const RECENT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct HttpState {
    pub connectors: ConnectorTable,
    pub deciders: Arc<DeciderPool>,
    /// True once the front is shutting down.
    pub draining: watch::Receiver<bool>,
    /// The OpenMetrics text of the front's metrics.
    pub metrics: fn() -> String,
}

fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let not_ready = |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response();
    if *state.draining.borrow() {
        return not_ready("shutting down");
    }
    let Some(connectors) = state.connectors.loaded() else {
        return not_ready("no connector snapshot loaded yet");
    };
    if !state.deciders.answered_within(RECENT) {
        return not_ready("no decider answered recently");
    }
    format!("ready: {connectors} connectors\n").into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], (state.metrics)()).into_response()
}

pub(crate) async fn serve(listener: TcpListener, state: HttpState) {
    if let Err(error) = axum::serve(listener, router(state)).await {
        tracing::warn!(%error, "HTTP listener failed");
    }
}
