//! The decider's HTTP listener: liveness, readiness, the report API, and the admin pages
//! (`/`, `/tenants/NAME` and its pause form, in `page`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::Router;
use ratchet_store::types::Raft;
use ratchet_store::StateView;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::page;
use crate::proposer::Proposer;
use crate::report::tenant_report;

/// A node is ready when it knows a leader and has applied what it has logged, within this.
const READY_MAX_APPLY_LAG: u64 = 1_000;

#[derive(Clone)]
pub struct HttpState {
    pub raft: Raft,
    pub view: StateView,
    pub clock: Clock,
    /// The pause form's writes, and the pages' read barrier.
    pub proposer: Proposer,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/tenants/{name}/report", get(report))
        .route("/", get(page::index))
        .route("/tenants/{name}", get(page::tenant_page))
        .route("/tenants/{name}/pause", post(page::pause))
        .with_state(state)
}

/// Prometheus metrics (OpenMetrics text): see `crate::metrics`.
async fn metrics(State(state): State<HttpState>) -> Response {
    let text = crate::metrics::metrics().render(&state.raft, &state.view);
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let metrics = state.raft.metrics().borrow().clone();
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    let logged = metrics.last_log_index.unwrap_or(0);
    match metrics.current_leader {
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no leader known\n".to_owned()).into_response(),
        Some(_) if logged.saturating_sub(applied) > READY_MAX_APPLY_LAG => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: applied {applied} of {logged}\n"),
        )
            .into_response(),
        Some(leader) => format!("ready: leader {leader}, applied {applied}\n").into_response(),
    }
}

async fn report(State(state): State<HttpState>, Path(name): Path<String>) -> Response {
    match tenant_report(&state.view, &name.to_ascii_lowercase(), state.clock.now()) {
        Ok(report) => Json(report).into_response(),
        Err(status) if status.code() == tonic::Code::NotFound => (StatusCode::NOT_FOUND, format!("{}\n", status.message())).into_response(),
        Err(status) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", status.message())).into_response(),
    }
}

pub async fn serve(listener: TcpListener, state: HttpState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
