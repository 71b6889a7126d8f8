//! The admin HTTP pages of a decider (`/`, `/tenants/NAME` and its pause
//! form), for operators and tenant admins who would rather look than type `ratchet ctl`.
//! A tenant's page shows one page of its servers (`?page_size=N&page_token=T`, with links
//! to the next and previous pages) and totals read over all of them, a server at a time.
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

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ratchet_store::Command;
use serde::Deserialize;

use self::html::message_page;
use crate::convert::key;
use crate::http_state::HttpState;
use crate::http_tls::PageCaller;
use crate::page_token::{self, page_size, Listing};
use crate::report::{tenant_report_page, tenant_totals};
use ratchet_proto::limits::MAX_REPORT_PAGE_SIZE;

/// What the pause form posts.
#[derive(Debug, Deserialize)]
pub struct PauseForm {
    #[serde(default)]
    days: String,
    /// Rendered into the form, so that a double submit or a retry pauses once.
    #[serde(default)]
    request_id: String,
}

fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn unknown_tenant(name: &str) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Unknown tenant",
        &format!("There is no tenant named {name:?}."),
    )
}

/// `GET /`: every tenant, linked, with its totals (read a server at a time).
pub async fn index(State(state): State<HttpState>) -> Response {
    // An unconfirmed read still shows what this node has; the tenant pages say so.
    let _ = state.proposer.read_barrier().await;
    let now = state.clock.now();
    let mut tenants = Vec::new();
    for name in state.view.tenants().keys() {
        match tenant_totals(&state.view, name, now) {
            Ok(totals) => tenants.push(totals),
            Err(error) if error.is_unknown_tenant() => {}
            Err(error) => return message_page(error.http_status(), "Error", &error.to_string()),
        }
    }
    let budget = state.view.policies().at(now).policy.pause_budget_days;
    html::respond(StatusCode::OK, tenants::render(&tenants, budget, now))
}

/// Which page of servers the report page shows: `?page_size=N&page_token=T`.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    page_size: Option<u32>,
    #[serde(default)]
    page_token: String,
}

/// Servers per report page when the link names none: fewer than the API's default, since
/// each is a table row a browser lays out.
const PAGE_SERVERS: u32 = 200;

/// `GET /tenants/{name}`: the report page.
pub async fn tenant_page(State(state): State<HttpState>, Path(name): Path<String>, Query(query): Query<PageQuery>) -> Response {
    let stale = state.proposer.read_barrier().await.err().map(|error| error.to_string());
    let shown = Shown {
        status: StatusCode::OK,
        stale: stale.as_deref(),
        ..Shown::default()
    };
    render_tenant(&state, &key(&name), &query, shown)
}

/// What the report page shows besides the report: a refused pause's error and the values
/// to resubmit, and whether this node could confirm it is current.
#[derive(Default)]
struct Shown<'a> {
    status: StatusCode,
    error: Option<&'a str>,
    days: Option<&'a str>,
    request_id: Option<&'a str>,
    stale: Option<&'a str>,
}

/// The report page: one page of servers (as `query` says) and the totals over all of them.
fn render_tenant(state: &HttpState, name: &str, query: &PageQuery, shown: Shown) -> Response {
    let now = state.clock.now();
    let page_size = match page_size(query.page_size.unwrap_or(PAGE_SERVERS), PAGE_SERVERS, MAX_REPORT_PAGE_SIZE) {
        Ok(size) => size,
        Err(refusal) => return message_page(refusal.http_status(), "Bad page size", &refusal.to_string()),
    };
    let start = match page_token::redeem(Listing::Report, name, &query.page_token) {
        Ok(start) => start,
        Err(refusal) => return message_page(refusal.http_status(), "Bad page link", &refusal.to_string()),
    };
    let read = tenant_report_page(&state.view, name, now, &start, page_size)
        .and_then(|page| tenant_totals(&state.view, name, now).map(|(_, totals)| (page, totals)));
    let (page, totals) = match read {
        Ok(read) => read,
        Err(error) if error.is_unknown_tenant() => return unknown_tenant(name),
        Err(error) => return message_page(error.http_status(), "Error", &error.to_string()),
    };
    let policies = state.view.policies();
    let policy = policies.at(now);
    let default_days = page.report.pause_days_remaining.clamp(1, 7).to_string();
    let fresh_id = new_request_id();
    let context = report::PageContext {
        now,
        pause_budget_days: policy.policy.pause_budget_days,
        pause_freezes_clock: policy.policy.pause_freezes_clock,
        stage_count: policy.policy.stages.len() as u32,
        error: shown.error,
        days_value: shown.days.unwrap_or(&default_days),
        request_id: shown.request_id.unwrap_or(&fresh_id),
        stale: shown.stale,
        page_size,
        next_page: page.next_page_token.as_deref(),
        previous_page: page.previous_page_token.as_deref(),
    };
    html::respond(shown.status, report::render(&page.report, &totals, &context))
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
    let refused = |status: StatusCode, error: &str| {
        let shown = Shown {
            status,
            error: Some(error),
            days: Some(form.days.as_str()),
            request_id: Some(request_id.as_str()),
            stale: None,
        };
        render_tenant(&state, &name, &PageQuery::default(), shown)
    };
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
        Err(error) if error.is_unknown_tenant() => unknown_tenant(&name),
        Err(error) => refused(error.http_status(), &error.to_string()),
    }
}
