//! The decider's HTTP listener: liveness, readiness, the report API (whole, or a page at a
//! time), and the admin pages (`/`, `/tenants/NAME` and its pause form, in `page`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

use ratchet_tls::Watched;
use tokio::net::TcpListener;

use crate::error::Error;
use crate::http_state::HttpState;
use crate::page;
use crate::page_token::{self, page_size, Listing};
use crate::report::{tenant_report, tenant_report_page};
use ratchet_proto::limits::{DEFAULT_REPORT_PAGE_SIZE, MAX_REPORT_PAGE_SIZE};
use serde::Deserialize;

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

/// Ready means fresh: what a Decide would answer from (see `freshness`).
async fn readyz(State(state): State<HttpState>) -> Response {
    let metrics = state.raft.metrics().borrow().clone();
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    match (state.freshness.check(&state.raft), metrics.current_leader) {
        (Ok(()), Some(leader)) => format!("ready: leader {leader}, applied {applied}\n").into_response(),
        (Ok(()), None) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no leader known\n".to_owned()).into_response(),
        (Err(reason), _) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

/// `?page_size=N&page_token=T` on the report API: one page, with the tokens around it.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    page_size: Option<u32>,
    page_token: Option<String>,
}

/// The report JSON of `ctl report --json`: the whole report, or with `page_size` or
/// `page_token` one page of it and the tokens of the pages around it.
/// A refusal is its message as plain text, with the status `Error::http_status` gives.
async fn report(State(state): State<HttpState>, Path(name): Path<String>, Query(query): Query<PageQuery>) -> Result<Response, Error> {
    let (tenant, now) = (name.to_ascii_lowercase(), state.clock.now());
    if query.page_size.is_none() && query.page_token.is_none() {
        return Ok(Json(tenant_report(&state.view, &tenant, now)?).into_response());
    }
    let limit = page_size(query.page_size.unwrap_or(0), DEFAULT_REPORT_PAGE_SIZE, MAX_REPORT_PAGE_SIZE)?;
    let start = page_token::redeem(Listing::Report, &tenant, query.page_token.as_deref().unwrap_or(""))?;
    Ok(Json(tenant_report_page(&state.view, &tenant, now, &start, limit)?).into_response())
}

/// Serves plaintext, or TLS with the page roles of `http_tls` when given a configuration.
pub async fn serve(listener: TcpListener, state: HttpState, tls: Option<Arc<Watched<Arc<rustls::ServerConfig>>>>) -> std::io::Result<()> {
    match tls {
        None => axum::serve(listener, router(state)).await,
        Some(config) => {
            let app = router(state).layer(axum::middleware::from_fn(crate::http_tls::require_role));
            let listener = crate::http_tls::TlsListener::new(listener, config)?;
            axum::serve(listener, app.into_make_service_with_connect_info::<crate::http_tls::PageCaller>()).await
        }
    }
}
