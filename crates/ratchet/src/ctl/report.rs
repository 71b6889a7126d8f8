//! `ratchet ctl report --tenant T`: every server of a tenant, its stage, dates and counters;
//! `ratchet ctl report --all`: every tenant's servers, one line each, for spreadsheets.
//!
//! The decider sends the report a page at a time, as JSON; each page is read back into the
//! decider's own `TenantReport`, the type the report page renders, so the two cannot
//! disagree. By default ctl follows the pages itself and prints the whole report, in the
//! JSON shape of shared/spec/cli.md; `--page-size` or `--page-token` print one page and the
//! token of the next. `--all` writes each page out as it arrives (JSON lines or CSV), so a
//! tenant of any size streams through in bounded memory.

use std::io::Write;

use anyhow::Context;
use chrono::SecondsFormat;
use clap::{ArgGroup, Args, ValueEnum};
use ratchet_decider::{ReportPage, ServerRow, TenantReport};
use ratchet_policy::{Timestamp, Verdict};
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{nonempty, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Args)]
#[command(group(ArgGroup::new("which").required(true).args(["tenant", "all"])))]
pub struct ReportArgs {
    /// The tenant whose report to print.
    #[arg(long)]
    tenant: Option<String>,
    /// Every tenant's servers, one line per server (with --format), written as they arrive.
    #[arg(long)]
    pub all: bool,
    /// With --all: JSON lines (one object per server) or CSV (a header row, then one row per server).
    #[arg(long, value_enum, default_value_t = ExportFormat::Json, requires = "all")]
    format: ExportFormat,
    /// Servers per request (the decider's default: 1,000; at most 10,000). With --tenant, prints
    /// only one page of this size, and the token of the next.
    #[arg(long)]
    page_size: Option<u32>,
    /// With --tenant: prints only the page this token starts (a token an earlier page printed).
    #[arg(long, conflicts_with = "all")]
    page_token: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Json,
    Csv,
}

/// One page of the report, or all of it.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ReportOutput {
    Whole(TenantReport),
    Page(ReportPage),
}

/// Asks for one page of a tenant's report.
async fn page(admin: &mut Admin, tenant: &str, page_size: Option<u32>, page_token: Option<String>) -> anyhow::Result<ReportPage> {
    let request = pb::ReportRequest {
        tenant: tenant.to_owned(),
        page_size: page_size.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    };
    let reply = admin.report(request).await.map_err(refusal)?.into_inner();
    Ok(ReportPage {
        report: serde_json::from_str(&reply.report_json).context("the decider sent an unreadable report")?,
        next_page_token: nonempty(&reply.next_page_token),
        previous_page_token: nonempty(&reply.previous_page_token),
    })
}

pub async fn run(admin: &mut Admin, args: ReportArgs) -> anyhow::Result<ReportOutput> {
    let tenant = args.tenant.unwrap_or_default();
    if args.page_size.is_some() || args.page_token.is_some() {
        return Ok(ReportOutput::Page(page(admin, &tenant, args.page_size, args.page_token).await?));
    }
    let first = page(admin, &tenant, None, None).await?;
    let (mut whole, mut next) = (first.report, first.next_page_token);
    while next.is_some() {
        let more = page(admin, &tenant, None, next).await?;
        whole.servers.extend(more.report.servers);
        next = more.next_page_token;
    }
    Ok(ReportOutput::Whole(whole))
}

/// One server of `report --all --format json`: its tenant, the tenant's pause, and its row.
#[derive(Serialize)]
struct ExportLine<'a> {
    tenant: &'a str,
    tenant_paused_until: Option<Timestamp>,
    #[serde(flatten)]
    row: &'a ServerRow,
}

const CSV_HEADER: [&str; 24] = [
    "tenant",
    "tenant_paused_until",
    "server_fqdn",
    "build",
    "product",
    "status",
    "first_detected_date",
    "stage",
    "throttle_enabled_date",
    "blocking_enabled_date",
    "current_throttle_rate",
    "current_block_rate",
    "next_stage_throttle_rate",
    "next_stage_block_rate",
    "next_stage_start_date",
    "recommended_build_versions",
    "last_seen",
    "accepted",
    "throttled",
    "blocked",
    "mode",
    "would_verdict",
    "would_throttle",
    "would_block",
];

/// One server of `report --all --format csv`; empty cells for what is not set, and the
/// counters summed over stages.
fn csv_record(report: &TenantReport, row: &ServerRow) -> [String; 24] {
    let s = &row.report;
    let at = |at: Option<Timestamp>| at.map(instant).unwrap_or_default();
    let number = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    let total = row.total();
    [
        report.tenant.clone(),
        at(report.paused_until),
        s.server_fqdn.clone(),
        s.build.clone(),
        s.product.clone().unwrap_or_default(),
        s.status.as_str().to_owned(),
        at(s.first_detected_date),
        number(s.stage),
        at(s.throttle_enabled_date),
        at(s.blocking_enabled_date),
        s.current_throttle_rate.to_string(),
        s.current_block_rate.to_string(),
        number(s.next_stage_throttle_rate),
        number(s.next_stage_block_rate),
        at(s.next_stage_start_date),
        s.recommended_build_versions.join(" "),
        instant(s.last_seen),
        total.accepted.to_string(),
        total.throttled.to_string(),
        total.blocked.to_string(),
        s.mode.to_string(),
        s.would_verdict.map(Verdict::as_str).unwrap_or_default().to_owned(),
        total.would_throttle.to_string(),
        total.would_block.to_string(),
    ]
}

/// Where `report --all` writes its lines.
enum Export<W: Write> {
    /// Boxed: the CSV writer carries its own buffer and state.
    Csv(Box<csv::Writer<W>>),
    JsonLines(W),
}

impl<W: Write> Export<W> {
    fn new(format: ExportFormat, out: W) -> anyhow::Result<Self> {
        Ok(match format {
            ExportFormat::Json => Export::JsonLines(out),
            ExportFormat::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(CSV_HEADER)?;
                Export::Csv(Box::new(csv))
            }
        })
    }

    fn write(&mut self, report: &TenantReport, row: &ServerRow) -> anyhow::Result<()> {
        match self {
            Export::Csv(csv) => csv.write_record(csv_record(report, row))?,
            Export::JsonLines(out) => {
                let line = ExportLine {
                    tenant: &report.tenant,
                    tenant_paused_until: report.paused_until,
                    row,
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Export::Csv(csv) => csv.flush(),
            Export::JsonLines(out) => out.flush(),
        }
    }
}

/// `report --all`: every tenant, page by page, each page written out (and flushed) as it
/// arrives.
pub async fn export(admin: &mut Admin, args: ReportArgs) -> anyhow::Result<()> {
    let tenants = admin
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .map_err(refusal)?
        .into_inner()
        .tenants;
    let mut export = Export::new(args.format, std::io::BufWriter::new(std::io::stdout().lock()))?;
    for tenant in tenants {
        let mut token = None;
        loop {
            let page = page(admin, &tenant.name, args.page_size, token).await?;
            for row in &page.report.servers {
                export.write(&page.report, row)?;
            }
            export.flush()?;
            token = page.next_page_token;
            if token.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// An instant as the JSON has it.
fn instant(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The date part of an instant, for narrow table columns.
fn day(at: Option<Timestamp>) -> String {
    or_dash(at.map(|at| instant(at).split('T').next().unwrap_or_default().to_owned()))
}

/// Minutes of every hour throttled / blocked.
fn rates(throttle: Option<u32>, block: Option<u32>) -> String {
    format!("{}/{}", or_dash(throttle), or_dash(block))
}

impl Output for ReportOutput {
    fn human(&self) {
        match self {
            ReportOutput::Whole(report) => print_report(report),
            ReportOutput::Page(page) => {
                print_report(&page.report);
                for (which, token) in [("previous", &page.previous_page_token), ("next", &page.next_page_token)] {
                    if let Some(token) = token {
                        println!("{which} page: --page-token {token}");
                    }
                }
            }
        }
    }
}

fn print_report(report: &TenantReport) {
    println!(
        "tenant {} ({}): paused until {}, {} pause days remain this year",
        report.tenant,
        report.mode,
        or_dash(report.paused_until.map(instant)),
        report.pause_days_remaining
    );
    if let Some(upcoming) = &report.upcoming_policy {
        let newly: Vec<&str> = report
            .servers
            .iter()
            .filter(|row| row.enforced_from.is_some())
            .map(|row| row.report.server_fqdn.as_str())
            .collect();
        println!(
            "policy version {} takes effect at {}; it newly enforces: {}",
            upcoming.version,
            instant(upcoming.effective_at),
            or_dash(nonempty(&newly.join(" ")))
        );
    }
    let rows: Vec<Vec<String>> = report
        .servers
        .iter()
        .map(|row| {
            let s = &row.report;
            let total = row.total();
            let recommended = nonempty(&s.recommended_build_versions.join(" "));
            vec![
                s.server_fqdn.clone(),
                s.build.clone(),
                or_dash(s.product.as_deref()),
                s.status.as_str().to_owned(),
                day(s.first_detected_date),
                or_dash(s.stage),
                rates(Some(s.current_throttle_rate), Some(s.current_block_rate)),
                day(s.throttle_enabled_date),
                day(s.blocking_enabled_date),
                day(s.next_stage_start_date),
                rates(s.next_stage_throttle_rate, s.next_stage_block_rate),
                or_dash(recommended),
                instant(s.last_seen),
                format!("{}/{}/{}", total.accepted, total.throttled, total.blocked),
                s.mode.to_string(),
                or_dash(s.would_verdict.map(Verdict::as_str)),
                format!("{}/{}", total.would_throttle, total.would_block),
            ]
        })
        .collect();
    table::print(
        &[
            "SERVER",
            "BUILD",
            "PRODUCT",
            "STATUS",
            "FIRST DETECTED",
            "STAGE",
            "THR/BLK MIN",
            "THROTTLE FROM",
            "BLOCK FROM",
            "NEXT STAGE",
            "NEXT THR/BLK",
            "RECOMMENDED",
            "LAST SEEN",
            "ACC/THR/BLK",
            "MODE",
            "WOULD",
            "WOULD THR/BLK",
        ],
        &rows,
    );
}
