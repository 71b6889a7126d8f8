//! Why this exists: the admin HTTP pages of a decider (`/`, `/tenants/NAME` and its pause
//! form), for operators and tenant admins who would rather look than type `ratchet ctl`.
//! These handlers read the applied state after a read barrier (so a page shows every write
//! acknowledged before it, whichever node serves it), and write only through the proposer,
//! like the admin gRPC API. Rendering lives in the submodules.
//!
//! - `html`: escaping, the page shell, formatting.
//! - `chart`: the stacked bar charts, as inline SVG.
//! - `report`: the tenant report page.
//! - `tenants`: the list of tenants.

mod chart;
mod html;
mod report;
mod tenants;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ratchet_store::{Command, ErrorKind};
use serde::Deserialize;
use tonic::Code;

use self::html::message_page;
use crate::http_state::HttpState;
use crate::http_tls::PageCaller;
use crate::proposer::WriteError;
use crate::report::tenant_report;

/// What the pause form posts.
#[derive(Debug, Deserialize)]
pub struct PauseForm {
    #[serde(default)]
    days: String,
    /// Rendered into the form, so that a double submit or a retry pauses once.
    #[serde(default)]
    request_id: String,
}

/// Tenant names are keys in lower case, as in the admin API.
fn key(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn status_code(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists => StatusCode::CONFLICT,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn unknown_tenant(name: &str) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Unknown tenant",
        &format!("There is no tenant named {name:?}."),
    )
}

/// `GET /`: every tenant, linked.
pub async fn index(State(state): State<HttpState>) -> Response {
    // An unconfirmed read still shows what this node has; the tenant pages say so.
    let _ = state.proposer.read_barrier().await;
    let now = state.clock.now();
    let mut reports = Vec::new();
    for name in state.view.tenants().keys() {
        match tenant_report(&state.view, name, now) {
            Ok(report) => reports.push(report),
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", status.message()),
        }
    }
    let budget = state.view.policy().policy.pause_budget_days;
    html::respond(StatusCode::OK, tenants::render(&reports, budget, now))
}

/// `GET /tenants/{name}`: the report page.
pub async fn tenant_page(State(state): State<HttpState>, Path(name): Path<String>) -> Response {
    let stale = state.proposer.read_barrier().await.err().map(|status| status.message().to_owned());
    render_tenant(&state, &key(&name), StatusCode::OK, None, None, None, stale.as_deref())
}

/// The report page, with a refused pause's error and the values to resubmit, if any.
fn render_tenant(
    state: &HttpState,
    name: &str,
    status: StatusCode,
    error: Option<&str>,
    days: Option<&str>,
    request_id: Option<&str>,
    stale: Option<&str>,
) -> Response {
    let now = state.clock.now();
    let report = match tenant_report(&state.view, name, now) {
        Ok(report) => report,
        Err(refusal) if refusal.code() == Code::NotFound => return unknown_tenant(name),
        Err(refusal) => return message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", refusal.message()),
    };
    let policy = state.view.policy();
    let default_days = report.pause_days_remaining.clamp(1, 7).to_string();
    let fresh_id = new_request_id();
    let context = report::PageContext {
        now,
        pause_budget_days: policy.policy.pause_budget_days,
        pause_freezes_clock: policy.policy.pause_freezes_clock,
        stage_count: policy.policy.stages.len() as u32,
        error,
        days_value: days.unwrap_or(&default_days),
        request_id: request_id.unwrap_or(&fresh_id),
        stale,
    };
    html::respond(status, report::render(&report, &context))
}

/// A form posted from a page of another site (its `Origin` is not this host): a browser
/// that an operator uses must not be made to pause enforcement by a third party's page.
fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    authority.is_none_or(|authority| !authority.eq_ignore_ascii_case(host))
}

/// `POST /tenants/{name}/pause`: pauses (or extends the pause) and goes back to the page.
pub async fn pause(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    caller: Option<Extension<ConnectInfo<PageCaller>>>,
    headers: HeaderMap,
    Form(form): Form<PauseForm>,
) -> Response {
    let name = key(&name);
    if cross_origin(&headers) {
        return message_page(StatusCode::FORBIDDEN, "Refused", "The pause form was posted from another site.");
    }
    let request_id = Some(form.request_id.trim())
        .filter(|id| !id.is_empty())
        .map_or_else(new_request_id, str::to_owned);
    let refused =
        |status: StatusCode, error: &str| render_tenant(&state, &name, status, Some(error), Some(&form.days), Some(&request_id), None);
    let days = match form.days.trim().parse::<u32>() {
        Ok(days) => days,
        Err(_) => {
            let error = format!("days: {:?} is not a whole number of days", form.days.trim());
            return refused(StatusCode::BAD_REQUEST, &error);
        }
    };
    let command = Command::Pause {
        tenant: name.clone(),
        days,
        servers: Vec::new(),
        request_id: Some(request_id.clone()),
    };
    // Who, for the audit trail: the browser's certificate, or "plaintext page" on a
    // plaintext listener (loopback or --insecure).
    let actor = match caller
        .as_ref()
        .and_then(|Extension(ConnectInfo(PageCaller(caller)))| caller.identity.as_ref())
    {
        Some(identity) => identity.spiffe_id(),
        None => "plaintext page".to_owned(),
    };
    match state.proposer.propose_as(actor, command).await {
        Ok(_) => Redirect::to(&format!("/tenants/{name}")).into_response(),
        Err(WriteError::Invalid(refusal)) if refusal.kind == ErrorKind::NotFound && refusal.field == "tenant" => unknown_tenant(&name),
        Err(error) => {
            let status = tonic::Status::from(error);
            refused(status_code(status.code()), status.message())
        }
    }
}
