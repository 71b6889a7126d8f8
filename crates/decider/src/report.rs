//! The tenant report: one schema (the JSON of `ratchet ctl report --json`, see
//! shared/spec/cli.md), built here for the gRPC API, the HTTP API and the report page,
//! and read back by `ratchet ctl report` into the same types. A tenant may have hundreds
//! of thousands of servers, so the report is served in pages (`tenant_report_page`), and
//! what the page sums over all servers is read one server at a time (`tenant_totals`).

use std::collections::BTreeMap;

use crate::error::Error;
use crate::page_token::{self, Listing};
use ratchet_policy::{server_report, ReportStatus, ServerReport, TenantMode, Timestamp};
use ratchet_store::model::Counts;
use ratchet_store::{PageStart, PolicySchedule, ServerEntry, StateView};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantReport {
    pub tenant: String,
    /// Whether the tenant's verdicts are given or only reported (each server's own `mode`
    /// also follows its product's).
    #[serde(default)]
    pub mode: TenantMode,
    pub paused_until: Option<Timestamp>,
    pub pause_days_remaining: u32,
    pub servers: Vec<ServerRow>,
    /// Messages per UTC day, oldest first, for the report's chart.
    pub daily: BTreeMap<String, Counts>,
    /// A policy scheduled to take effect (`ctl policy set --effective-at`), if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcoming_policy: Option<UpcomingPolicy>,
    /// Every pause of the tenant, tenant-wide and per server, oldest first: the bands of the
    /// page's message chart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pauses: Vec<PauseSpan>,
}

/// One pause as the report shows it: of the whole tenant (`server` absent) or of one server,
/// with the instant it ended (earlier than planned when it was ended early).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PauseSpan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpcomingPolicy {
    pub version: u64,
    pub effective_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerRow {
    #[serde(flatten)]
    pub report: ServerReport,
    /// Until when the server is paused, by a pause of its own or the tenant's (the later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<Timestamp>,
    /// When the upcoming policy starts enforcing this server, which the policy in force
    /// now holds compliant or does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_from: Option<Timestamp>,
    /// Messages per stage ("0": decided outside any stage).
    pub counters: BTreeMap<u32, Counts>,
}

impl ServerRow {
    /// The server's messages over all stages.
    pub fn total(&self) -> Counts {
        let mut sum = Counts::default();
        self.counters.values().for_each(|counts| sum.add(*counts));
        sum
    }
}

/// One page of a tenant's report: the tenant's part (pause state, daily counts) and the
/// page's servers, with the tokens of the pages after and before it. Its JSON is the
/// report's, plus the two tokens (null for none): what the HTTP API serves for a page and
/// `ctl report --page-size` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportPage {
    #[serde(flatten)]
    pub report: TenantReport,
    pub next_page_token: Option<String>,
    pub previous_page_token: Option<String>,
}

/// What the report page and the tenant list sum over all of a tenant's servers, however
/// many: read one server at a time, never all at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantTotals {
    pub servers: usize,
    pub out_of_date: usize,
    /// Servers whose mail is throttled or blocked in some minutes of the hour now.
    pub enforced_now: usize,
    /// Servers that the upcoming policy will enforce and the one in force does not.
    pub enforced_from_upcoming: usize,
    pub messages: Counts,
    /// How many servers stand at each (stage, status, product): what the stage chart stacks.
    pub placements: Vec<Placement>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub stage: Option<u32>,
    pub status: ReportStatus,
    pub product: Option<String>,
    pub servers: usize,
}

impl TenantTotals {
    fn add(&mut self, row: &ServerRow) {
        let server = &row.report;
        self.servers += 1;
        if server.status == ReportStatus::OutOfDate {
            self.out_of_date += 1;
        }
        if row.enforced_now() {
            self.enforced_now += 1;
        }
        if row.enforced_from.is_some() {
            self.enforced_from_upcoming += 1;
        }
        self.messages.add(row.total());
        let same = |p: &&mut Placement| p.stage == server.stage && p.status == server.status && p.product == server.product;
        match self.placements.iter_mut().find(same) {
            Some(placement) => placement.servers += 1,
            None => self.placements.push(Placement {
                stage: server.stage,
                status: server.status,
                product: server.product.clone(),
                servers: 1,
            }),
        }
    }
}

impl ServerRow {
    /// Whether the server's mail is throttled or blocked in some minutes of the hour now
    /// (its episode open, not paused: the report's current rates are zero otherwise).
    pub fn enforced_now(&self) -> bool {
        self.report.status == ReportStatus::OutOfDate && (self.report.current_throttle_rate > 0 || self.report.current_block_rate > 0)
    }
}

/// What turns a tenant's server records into report rows, read once per request.
struct Reader {
    tenant: String,
    now: Timestamp,
    policies: std::sync::Arc<PolicySchedule>,
    /// The tenant's pauses: each server is paused by its own and by the tenant's.
    pauses: ratchet_policy::PauseLedger,
    header: TenantReport,
}

impl Reader {
    fn new(view: &StateView, tenant: &str, now: Timestamp) -> Result<Self, Error> {
        let record = view.tenant(tenant).ok_or_else(|| Error::unknown_tenant(tenant))?;
        let policies = view.policies();
        let header = TenantReport {
            tenant: tenant.to_owned(),
            mode: record.mode,
            paused_until: record.pauses.paused_until(now),
            pause_days_remaining: record.pauses.remaining_days(policies.at(now).policy.pause_budget_days, now),
            servers: Vec::new(),
            daily: record.daily,
            upcoming_policy: upcoming(&policies, now),
            pauses: record
                .pauses
                .pauses()
                .iter()
                .map(|pause| PauseSpan {
                    server: pause.server.clone(),
                    start: pause.start,
                    end: pause.end,
                })
                .collect(),
        };
        Ok(Reader {
            tenant: tenant.to_owned(),
            now,
            pauses: record.pauses,
            policies,
            header,
        })
    }

    fn row(&self, entry: ServerEntry) -> ServerRow {
        let server = &entry.record.server_fqdn;
        let pauses = self.pauses.intervals_for(server);
        let own = self.pauses.server_paused_until(server, self.now);
        ServerRow {
            report: server_report(
                &self.policies.at(self.now).policy,
                &entry.record,
                &pauses,
                self.header.mode,
                self.now,
            ),
            paused_until: self.header.paused_until.max(own),
            enforced_from: self.policies.newly_enforces(self.now, &entry.record.build),
            counters: entry.counters,
        }
    }
}

/// The policy scheduled after `now`, if any.
pub fn upcoming(policies: &PolicySchedule, now: Timestamp) -> Option<UpcomingPolicy> {
    let effective_at = policies.next_change_after(now)?;
    let version = policies.pending.as_ref()?.version;
    Some(UpcomingPolicy { version, effective_at })
}

/// A tenant's whole report, every server in it.
pub fn tenant_report(view: &StateView, tenant: &str, now: Timestamp) -> Result<TenantReport, Error> {
    let reader = Reader::new(view, tenant, now)?;
    let mut servers = Vec::new();
    view.for_each_server(tenant, |entry| servers.push(reader.row(entry)))?;
    Ok(TenantReport { servers, ..reader.header })
}

/// One page of a tenant's report: at most `limit` servers, in FQDN order, from `start`.
pub fn tenant_report_page(view: &StateView, tenant: &str, now: Timestamp, start: &PageStart, limit: usize) -> Result<ReportPage, Error> {
    let reader = Reader::new(view, tenant, now)?;
    let page = view.servers_page(tenant, start, limit)?;
    let token = |start: PageStart| page_token::issue(Listing::Report, &reader.tenant, &start);
    let next_page_token = match page.items.last() {
        Some((key, _)) if page.has_next => Some(token(PageStart::After(key.clone()))),
        _ => None,
    };
    let previous_page_token = match page.items.first() {
        Some((key, _)) if page.has_previous => Some(token(PageStart::Before(key.clone()))),
        _ => None,
    };
    let servers = page.items.into_iter().map(|(_, entry)| reader.row(entry)).collect();
    Ok(ReportPage {
        report: TenantReport { servers, ..reader.header },
        next_page_token,
        previous_page_token,
    })
}

/// The tenant's header (pause state, daily counts; no servers) and its totals over every server.
pub fn tenant_totals(view: &StateView, tenant: &str, now: Timestamp) -> Result<(TenantReport, TenantTotals), Error> {
    let reader = Reader::new(view, tenant, now)?;
    let mut totals = TenantTotals::default();
    view.for_each_server(tenant, |entry| totals.add(&reader.row(entry)))?;
    Ok((reader.header, totals))
}
