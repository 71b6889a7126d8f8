//! Why this exists: the tenant report page, what the hosted service's mail-flow report shows
//! its admins and more. It renders the same `TenantReport` the JSON API and `ratchet ctl
//! report` serve (so the three never disagree): the pause state with the pause form, totals,
//! the two charts, and a table with every report field and the counters of each server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use chrono::{Datelike, Days, NaiveDate, TimeZone, Utc};
use ratchet_policy::{Mode, ReportStatus, ServerReport, TenantMode, Timestamp};
use ratchet_store::model::Counts;

use super::chart::{Band, Bar, Series, StackedBars};
use super::html::{date, date_time, document, thousands, Esc};
use crate::report::{PauseSpan, Placement, ServerRow, TenantReport, TenantTotals};

/// What the page needs besides the report.
pub struct PageContext<'a> {
    pub now: Timestamp,
    pub pause_budget_days: u32,
    /// Whether paused time is left out of servers' ages (the policy's `pause_freezes_clock`).
    pub pause_freezes_clock: bool,
    /// Stages in the policy's table (the chart has a bar for each).
    pub stage_count: u32,
    /// The refusal of the pause just submitted, shown above the form.
    pub error: Option<&'a str>,
    /// What the form's days field holds (the refused value, so it can be corrected).
    pub days_value: &'a str,
    /// Sent back with the form, so that submitting it twice pauses once.
    pub request_id: &'a str,
    /// Set when this node could not confirm with the leader that its state is current.
    pub stale: Option<&'a str>,
    /// Servers per page, and the tokens of the pages after and before this one.
    pub page_size: usize,
    pub next_page: Option<&'a str>,
    pub previous_page: Option<&'a str>,
}

pub const ACCEPTED: &str = "#2f9e5f";
pub const THROTTLED: &str = "#eda31c";
pub const BLOCKED: &str = "#d64545";
const TENANT_PAUSED: &str = "#f7e3b5";
const SERVERS_PAUSED: &str = "#dde8f7";
/// Servers a pause band's tooltip names before "and N more".
const BAND_NAMES: usize = 3;
const PRODUCT_COLORS: [&str; 6] = ["#3568d4", "#8a5cc8", "#1c9aa6", "#c8559a", "#6f7f90", "#b7832b"];
/// Days the message chart shows at least (up to today), and at most.
const MIN_DAYS: u64 = 14;
const MAX_DAYS: u64 = ratchet_store::model::DAILY_COUNT_DAYS as u64;

fn status_badge(status: ReportStatus) -> String {
    let (class, label) = match status {
        ReportStatus::OutOfDate => ("b-red", "Out of date"),
        ReportStatus::Remediated => ("b-green", "Remediated"),
        ReportStatus::Compliant => ("b-green", "Compliant"),
        ReportStatus::Unidentified => ("b-grey", "Unidentified"),
    };
    format!("<span class=\"badge {class}\">{}</span>", Esc(label))
}

/// Whether the server's stage is enforced (the tenant's pause aside): its episode is open.
fn enforced(server: &ServerReport) -> bool {
    server.status == ReportStatus::OutOfDate
}

/// What a server in report-only mode would get now, for a badge's title and the table.
fn would_get(server: &ServerReport) -> String {
    format!("report-only: would {}", server.would_verdict.map_or("accept", |v| v.as_str()))
}

/// "Stage 3", coloured by what the stage does now: report only, throttle, block. A
/// remediated server keeps the stage its clock stopped in, no longer enforced: grey; so
/// does a server in report-only mode, whose verdicts are only reported.
fn stage_badge(server: &ServerReport) -> String {
    let Some(stage) = server.stage else {
        return "<span class=\"muted\">—</span>".to_owned();
    };
    if !enforced(server) {
        return format!("<span class=\"badge b-grey\" title=\"Stage {stage} when its clock stopped: not enforced\">Stage {stage}</span>");
    }
    if server.mode == Mode::ReportOnly {
        return format!(
            "<span class=\"badge b-grey\" title=\"Stage {stage}, {}\">Stage {stage}</span>",
            would_get(server)
        );
    }
    let (class, meaning) = match (server.current_throttle_rate, server.current_block_rate) {
        (0, 0) => ("b-blue", "report only"),
        (_, 0) => ("b-amber", "throttled"),
        (0, _) => ("b-dark", "blocked"),
        _ => ("b-red", "throttled and blocked"),
    };
    format!("<span class=\"badge {class}\" title=\"Stage {stage}: {meaning}\">Stage {stage}</span>")
}

/// "30 / 10 min/h": minutes of every hour throttled / blocked.
fn rates(throttle: u32, block: u32) -> String {
    format!("{throttle} / {block} min/h")
}

fn optional_date(at: Option<Timestamp>) -> String {
    at.map_or_else(|| "<span class=\"muted\">—</span>".to_owned(), date)
}

const NONE: &str = "<td class=\"muted\">—</td>";

fn server_row(out: &mut String, row: &ServerRow) {
    let server = &row.report;
    let _ = write!(
        out,
        "<tr><td class=\"server\"><strong>{}</strong><div class=\"muted small\">{} · <span class=\"mono\">{}</span></div></td>\
         <td><div>{}</div><div class=\"stage\">{}</div>{}</td><td class=\"nowrap\">{}</td>",
        Esc(&server.server_fqdn),
        Esc(server.product.as_deref().unwrap_or("Unknown product")),
        Esc(&server.build),
        status_badge(server.status),
        stage_badge(server),
        row.enforced_from
            .map(|at| format!("<div class=\"muted small\">enforced from {} by the new policy</div>", date_time(at)))
            .unwrap_or_default(),
        optional_date(server.first_detected_date),
    );
    match server.stage {
        Some(_) if !enforced(server) => out.push_str("<td class=\"muted nowrap\">not enforced</td>"),
        Some(_) if server.mode == Mode::ReportOnly => {
            let _ = write!(out, "<td class=\"nowrap\">{}</td>", Esc(&would_get(server)));
        }
        None if server.mode == Mode::Off => out.push_str("<td class=\"muted nowrap\">off: product not enforced</td>"),
        Some(_) => {
            let _ = write!(
                out,
                "<td class=\"nowrap\">{} / {}{}</td>",
                server.current_throttle_rate,
                server.current_block_rate,
                // Paused on its own or with the whole tenant.
                row.paused_until
                    .map(|until| format!("<div class=\"muted small\">paused until {}</div>", date_time(until)))
                    .unwrap_or_default()
            );
        }
        None => out.push_str(NONE),
    }
    if server.throttle_enabled_date.is_none() && server.blocking_enabled_date.is_none() {
        out.push_str(NONE);
    } else {
        let _ = write!(
            out,
            "<td class=\"nowrap\"><div><span class=\"muted\">throttling</span> {}</div><div><span class=\"muted\">blocking</span> {}</div></td>",
            optional_date(server.throttle_enabled_date),
            optional_date(server.blocking_enabled_date)
        );
    }
    match (
        server.next_stage_start_date,
        server.next_stage_throttle_rate,
        server.next_stage_block_rate,
    ) {
        (Some(start), throttle, block) => {
            let _ = write!(
                out,
                "<td class=\"nowrap\">{}<div class=\"muted small\">{}</div></td>",
                date(start),
                rates(throttle.unwrap_or(0), block.unwrap_or(0))
            );
        }
        (None, _, _) => out.push_str(NONE),
    }
    if server.recommended_build_versions.is_empty() {
        out.push_str(NONE);
    } else {
        let builds: Vec<String> = server.recommended_build_versions.iter().map(|b| Esc(b).to_string()).collect();
        let _ = write!(out, "<td class=\"mono\">{}</td>", builds.join("<br>"));
    }
    let counts = row.total();
    let breakdown: Vec<String> = row
        .counters
        .iter()
        .map(|(stage, c)| {
            let when = if *stage == 0 {
                "outside any stage".to_owned()
            } else {
                format!("in stage {stage}")
            };
            let would = match (c.would_throttle, c.would_block) {
                (0, 0) => String::new(),
                (throttle, block) => format!(" (of the accepted, {throttle} would have been throttled, {block} blocked)"),
            };
            format!(
                "{when}: {} accepted, {} throttled, {} blocked{would}",
                c.accepted, c.throttled, c.blocked
            )
        })
        .collect();
    let _ = write!(
        out,
        "<td class=\"nowrap\"><time datetime=\"{}\">{}<div class=\"muted small\">{}</div></time></td><td class=\"num\" title=\"{title}\">{}</td><td class=\"num\" title=\"{title}\">{}</td>\
         <td class=\"num\" title=\"{title}\">{}</td></tr>",
        server.last_seen.to_rfc3339(),
        server.last_seen.format("%Y-%m-%d"),
        server.last_seen.format("%H:%M:%S"),
        thousands(counts.accepted),
        thousands(counts.throttled),
        thousands(counts.blocked),
        title = Esc(&breakdown.join("\n")),
    );
}

fn server_table(out: &mut String, report: &TenantReport) {
    out.push_str("<h2>Servers</h2><div class=\"table-wrap\"><table><thead><tr>");
    let headers = [
        ("Server", "ServerFQDN, with its Product and Build", ""),
        ("Status · stage", "Status, Stage", ""),
        ("First detected", "FirstDetectedDate", ""),
        (
            "Now, min/h",
            "CurrentThrottleRate / CurrentBlockRate: minutes of every hour throttled / blocked",
            "",
        ),
        ("Enforcement from", "ThrottleEnabledDate, BlockingEnabledDate", ""),
        ("Next stage", "NextStageStartDate, NextStageThrottleRate / NextStageBlockRate", ""),
        ("Recommended builds", "RecommendedBuildVersions", ""),
        ("Last seen", "LastSeen (UTC)", ""),
        ("Accepted", "Messages accepted, all stages", "num"),
        ("Throttled", "Messages throttled (450 4.7.230), all stages", "num"),
        ("Blocked", "Messages blocked (550 5.7.230), all stages", "num"),
    ];
    for (label, field, class) in headers {
        let _ = write!(out, "<th scope=\"col\" class=\"{class}\" title=\"{field}\">{label}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    // The most advanced stage first: what needs patching soonest.
    let mut rows: Vec<&ServerRow> = report.servers.iter().collect();
    rows.sort_by_key(|row| {
        (
            std::cmp::Reverse(enforced(&row.report).then_some(row.report.stage)),
            &row.report.server_fqdn,
        )
    });
    for row in rows {
        server_row(out, row);
    }
    if report.servers.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"muted\">No servers yet: a server appears here when its first message arrives \
             through one of the tenant's connectors, or when it is imported.</td></tr>",
            headers.len()
        );
    }
    out.push_str("</tbody></table></div>");
}

/// Servers per stage (then remediated, compliant, unidentified), stacked by product: over
/// all of the tenant's servers, not only the page shown.
pub fn stage_chart(tenant: &str, totals: &TenantTotals, stage_count: u32) -> StackedBars {
    let stages = totals.placements.iter().filter_map(|p| p.stage).max().unwrap_or(0).max(stage_count);
    let buckets = ["Remediated", "Compliant", "Unidentified"];
    let product_of = |p: &Placement| p.product.clone().unwrap_or_else(|| "Unknown product".to_owned());
    let mut products: Vec<String> = totals.placements.iter().map(product_of).collect();
    products.sort();
    products.dedup();
    let mut bars: Vec<Bar> = (1..=stages)
        .map(|stage| Bar {
            label: format!("Stage {stage}"),
            name: format!("Stage {stage}"),
            values: vec![0; products.len()],
        })
        .chain(buckets.iter().map(|bucket| Bar {
            label: (*bucket).to_owned(),
            name: (*bucket).to_owned(),
            values: vec![0; products.len()],
        }))
        .collect();
    let mut in_stages = 0;
    for placement in &totals.placements {
        let bar = match (placement.status, placement.stage) {
            (ReportStatus::Remediated, _) => stages as usize,
            (_, Some(stage)) => stage as usize - 1,
            (ReportStatus::Compliant, None) => stages as usize + 1,
            (_, None) => stages as usize + 2,
        };
        let product = product_of(placement);
        let series = products.iter().position(|p| *p == product).unwrap_or(0);
        bars[bar].values[series] += placement.servers as u64;
        if placement.status == ReportStatus::OutOfDate {
            in_stages += placement.servers;
        }
    }
    StackedBars {
        id: "stages",
        title: format!("Servers of tenant {tenant} per enforcement stage, by product"),
        description: format!(
            "{} servers: {in_stages} in an enforcement stage (1 to {stages}), the others remediated, compliant or unidentified.",
            totals.servers
        ),
        series: products
            .into_iter()
            .enumerate()
            .map(|(index, name)| Series {
                name,
                color: PRODUCT_COLORS[index % PRODUCT_COLORS.len()],
            })
            .collect(),
        bars,
        unit: "servers",
        category_axis: "Stage",
        bands: Vec::new(),
        empty_note: "No servers yet",
    }
}

/// Messages per UTC day, from the first day counted (or two weeks back) to today.
pub fn daily_chart(report: &TenantReport, now: Timestamp) -> StackedBars {
    let today = now.date_naive();
    let days: BTreeMap<NaiveDate, Counts> = report
        .daily
        .iter()
        .filter_map(|(day, counts)| Some((NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?, *counts)))
        .collect();
    let last = days.keys().next_back().copied().unwrap_or(today).max(today);
    let earliest = last.checked_sub_days(Days::new(MAX_DAYS - 1)).unwrap_or(last);
    let first = days
        .keys()
        .next()
        .copied()
        .unwrap_or(today)
        .min(last.checked_sub_days(Days::new(MIN_DAYS - 1)).unwrap_or(last))
        .max(earliest);
    let shown: Vec<NaiveDate> = first.iter_days().take_while(|day| *day <= last).collect();
    let bars: Vec<Bar> = shown
        .iter()
        .map(|&day| {
            let counts = days.get(&day).copied().unwrap_or_default();
            Bar {
                label: format!("{} {}", day.format("%b"), day.day()),
                name: day.format("%Y-%m-%d").to_string(),
                values: vec![counts.accepted, counts.throttled, counts.blocked],
            }
        })
        .collect();
    let mut sum = Counts::default();
    days.range(first..=last).for_each(|(_, counts)| sum.add(*counts));
    StackedBars {
        id: "daily",
        title: format!("Messages of tenant {} per day, accepted, throttled and blocked", report.tenant),
        description: format!(
            "From {first} to {last} (UTC): {} accepted, {} throttled, {} blocked.",
            sum.accepted, sum.throttled, sum.blocked
        ),
        series: vec![
            Series {
                name: "Accepted".into(),
                color: ACCEPTED,
            },
            Series {
                name: "Throttled".into(),
                color: THROTTLED,
            },
            Series {
                name: "Blocked".into(),
                color: BLOCKED,
            },
        ],
        bars,
        unit: "messages",
        category_axis: "Day (UTC)",
        empty_note: "No messages in this period",
        bands: pause_bands(&report.pauses, &shown),
    }
}

/// Who was paused during one day.
#[derive(PartialEq)]
enum PausedOn<'a> {
    Nobody,
    WholeTenant,
    Servers(BTreeSet<&'a str>),
}

fn paused_on<'a>(pauses: &'a [PauseSpan], day: NaiveDate) -> PausedOn<'a> {
    let midnight = |day: NaiveDate| Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"));
    let (start, end) = (midnight(day), midnight(day + Days::new(1)));
    let during = pauses.iter().filter(|pause| pause.start < end && pause.end > start);
    let mut servers = BTreeSet::new();
    for pause in during {
        match &pause.server {
            None => return PausedOn::WholeTenant,
            Some(server) => servers.insert(server.as_str()),
        };
    }
    if servers.is_empty() {
        PausedOn::Nobody
    } else {
        PausedOn::Servers(servers)
    }
}

/// One band per run of consecutive days on which the same servers (or the whole tenant)
/// were paused, so that the chart shows when enforcement stood still and for whom.
fn pause_bands(pauses: &[PauseSpan], days: &[NaiveDate]) -> Vec<Band> {
    let states: Vec<PausedOn> = days.iter().map(|day| paused_on(pauses, *day)).collect();
    let mut bands = Vec::new();
    let mut first = 0;
    while first < states.len() {
        let last = first + states[first..].iter().take_while(|state| **state == states[first]).count() - 1;
        let label = |index: usize| format!("{} {}", days[index].format("%b"), days[index].day());
        let span = if first == last {
            label(first)
        } else {
            format!("{} – {}", label(first), label(last))
        };
        let band = |name: &str, color, who: String| Band {
            first,
            last,
            kind: Series { name: name.into(), color },
            title: format!("{span}: {who}"),
        };
        match &states[first] {
            PausedOn::Nobody => {}
            PausedOn::WholeTenant => bands.push(band(
                "Tenant paused",
                TENANT_PAUSED,
                "enforcement paused for the whole tenant".into(),
            )),
            PausedOn::Servers(servers) => bands.push(band("Servers paused", SERVERS_PAUSED, servers_paused(servers))),
        }
        first = last + 1;
    }
    bands
}

/// "2 servers paused: a.example, b.example" (the first few named).
fn servers_paused(servers: &BTreeSet<&str>) -> String {
    let named: Vec<&str> = servers.iter().take(BAND_NAMES).copied().collect();
    let more = servers.len() - named.len();
    let noun = if servers.len() == 1 { "server" } else { "servers" };
    let tail = if more > 0 { format!(", and {more} more") } else { String::new() };
    format!("{} {noun} paused: {}{tail}", servers.len(), named.join(", "))
}

fn pause_panel(out: &mut String, report: &TenantReport, context: &PageContext) {
    let year = context.now.year();
    out.push_str("<section class=\"card pause\" aria-labelledby=\"pause-h\"><div>");
    match report.paused_until {
        Some(until) => {
            let _ = write!(
                out,
                "<div class=\"state\" id=\"pause-h\"><span class=\"badge b-amber\">Paused</span> Enforcement is paused until \
                 <strong>{}</strong>: all mail is accepted{}.</div>",
                date_time(until),
                if context.pause_freezes_clock {
                    " and stage clocks stand still"
                } else {
                    ""
                }
            );
        }
        None if report.mode == TenantMode::ReportOnly => out.push_str(
            "<div class=\"state\" id=\"pause-h\"><span class=\"badge b-blue\">Report-only</span> Enforcement is in \
             report-only mode: verdicts are computed, counted and reported, and all mail is accepted.</div>",
        ),
        None => out.push_str(
            "<div class=\"state\" id=\"pause-h\"><span class=\"badge b-green\">Enforcing</span> Enforcement is active: \
             out-of-date servers are throttled and blocked as their stages say.</div>",
        ),
    }
    let _ = write!(
        out,
        "<div class=\"muted\" id=\"pause-remaining\"><strong>{}</strong> of {} pause days remaining in {year}</div></div>",
        report.pause_days_remaining, context.pause_budget_days
    );
    let action = if report.paused_until.is_some() {
        "Extend pause"
    } else {
        "Pause enforcement"
    };
    let disabled = if report.pause_days_remaining == 0 { " disabled" } else { "" };
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/tenants/{tenant}/pause\"><input type=\"hidden\" name=\"request_id\" value=\"{}\">\
         <label for=\"days\">{}</label><input id=\"days\" name=\"days\" type=\"number\" min=\"1\" max=\"{remaining}\" \
         value=\"{}\" required{disabled}><span>days</span><button type=\"submit\"{disabled}>{action}</button></form></section>",
        Esc(context.request_id),
        if report.paused_until.is_some() { "Extend by" } else { "Pause for" },
        Esc(context.days_value),
        tenant = Esc(&report.tenant),
        remaining = report.pause_days_remaining.max(1),
    );
}

fn summary_cards(out: &mut String, totals: &TenantTotals) {
    let _ = write!(
        out,
        "<div class=\"cards\">\
         <div class=\"card\"><div class=\"k\">Servers</div><div class=\"v\">{}</div></div>\
         <div class=\"card\"><div class=\"k\">Out of date</div><div class=\"v\">{}</div></div>\
         <div class=\"card\"><div class=\"k\">Throttled or blocked now</div><div class=\"v\">{}</div></div>\
         <div class=\"card\"><div class=\"k\">Messages, all time</div><div class=\"v\">{} <small>accepted · {} throttled · {} blocked</small></div>{}</div>\
         </div>",
        thousands(totals.servers as u64),
        thousands(totals.out_of_date as u64),
        thousands(totals.enforced_now as u64),
        thousands(totals.messages.accepted),
        thousands(totals.messages.throttled),
        thousands(totals.messages.blocked),
        would_have(&totals.messages),
    );
}

/// What report-only mode let through that enforcing would have refused, if anything.
fn would_have(counts: &Counts) -> String {
    if counts.would_throttle == 0 && counts.would_block == 0 {
        return String::new();
    }
    format!(
        "<div class=\"muted small\" id=\"would-have\">report-only: would have throttled {} · blocked {}</div>",
        thousands(counts.would_throttle),
        thousands(counts.would_block)
    )
}

/// Links to the pages before and after the one shown, if there are any.
fn pager(out: &mut String, report: &TenantReport, totals: &TenantTotals, context: &PageContext) {
    if context.previous_page.is_none() && context.next_page.is_none() {
        return;
    }
    let _ = write!(
        out,
        "<nav class=\"pager\" aria-label=\"Pages of servers\"><span class=\"muted\">{} of {} servers on this page</span>",
        thousands(report.servers.len() as u64),
        thousands(totals.servers as u64)
    );
    for (rel, label, token) in [("prev", "← Previous", context.previous_page), ("next", "Next →", context.next_page)] {
        if let Some(token) = token {
            let _ = write!(
                out,
                " <a rel=\"{rel}\" href=\"/tenants/{}?page_size={}&amp;page_token={}\">{label}</a>",
                Esc(&report.tenant),
                context.page_size,
                Esc(token)
            );
        }
    }
    out.push_str("</nav>");
}

/// What a scheduled policy will change for this tenant, and when.
fn upcoming_policy(out: &mut String, report: &TenantReport, totals: &TenantTotals) {
    let Some(upcoming) = &report.upcoming_policy else {
        return;
    };
    let effect = match totals.enforced_from_upcoming {
        0 => "It enforces none of your servers that are not enforced today.".to_owned(),
        1 => "It enforces <strong>1</strong> of your servers that is not enforced today (marked below).".to_owned(),
        n => format!(
            "It enforces <strong>{}</strong> of your servers that are not enforced today (marked below).",
            thousands(n as u64)
        ),
    };
    let _ = write!(
        out,
        "<div class=\"alert info\" role=\"status\"><strong>A new policy (version {}) takes effect on {}.</strong> {effect}</div>",
        upcoming.version,
        date_time(upcoming.effective_at),
    );
}

/// The report page of one tenant: its totals and charts over every server, and one page
/// of its servers (`report.servers`) with links to the pages around it.
pub fn render(report: &TenantReport, totals: &TenantTotals, context: &PageContext) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{tenant}</h1><p class=\"sub\">Out-of-date mail servers and enforcement · as of {} · \
         <a href=\"/api/v1/tenants/{tenant}/report\">JSON</a></p>",
        date_time(context.now),
        tenant = Esc(&report.tenant),
    );
    if let Some(reason) = context.stale {
        let _ = write!(
            body,
            "<div class=\"alert warn\" role=\"status\">This node could not confirm it is up to date with the leader ({}); \
             it shows the state it has applied.</div>",
            Esc(reason)
        );
    }
    if let Some(error) = context.error {
        let _ = write!(
            body,
            "<div class=\"alert error\" role=\"alert\"><strong>The pause was not made.</strong> {}</div>",
            Esc(error)
        );
    }
    upcoming_policy(&mut body, report, totals);
    pause_panel(&mut body, report, context);
    summary_cards(&mut body, totals);
    let _ = write!(
        body,
        "<div class=\"split\"><section class=\"card\"><h2>Servers per stage</h2>{}</section>\
         <section class=\"card\"><h2>Messages per day</h2>{}</section></div>",
        stage_chart(&report.tenant, totals, context.stage_count).horizontal(),
        daily_chart(report, context.now).vertical()
    );
    server_table(&mut body, report);
    pager(&mut body, report, totals, context);
    body.push_str(
        "<footer>Stages, rates and dates follow the cluster's enforcement policy. Counters are committed in batches and \
         may trail live traffic by a few seconds.</footer>",
    );
    document(&report.tenant, &[("Tenants", Some("/")), (&report.tenant, None)], &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    fn span(server: Option<&str>, from: Timestamp, to: Timestamp) -> PauseSpan {
        PauseSpan {
            server: server.map(str::to_owned),
            start: from,
            end: to,
        }
    }

    #[test]
    fn pause_bands_merge_days_paused_alike() {
        let days: Vec<NaiveDate> = (1..=8).map(|day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap()).collect();
        let pauses = [
            // The whole tenant from the 2nd at noon to the 4th at midnight: the 2nd and 3rd.
            span(None, at(2, 12), at(4, 0)),
            span(Some("a.example"), at(5, 1), at(7, 6)),
            span(Some("b.example"), at(6, 0), at(6, 23)),
            // A server paused inside a tenant-wide pause adds nothing to that band.
            span(Some("c.example"), at(3, 0), at(3, 5)),
        ];
        let bands = pause_bands(&pauses, &days);
        let described: Vec<(usize, usize, &str, &str)> = bands
            .iter()
            .map(|b| (b.first, b.last, b.kind.name.as_str(), b.title.as_str()))
            .collect();
        assert_eq!(
            described,
            [
                (1, 2, "Tenant paused", "Nov 2 – Nov 3: enforcement paused for the whole tenant"),
                (4, 4, "Servers paused", "Nov 5: 1 server paused: a.example"),
                (5, 5, "Servers paused", "Nov 6: 2 servers paused: a.example, b.example"),
                (6, 6, "Servers paused", "Nov 7: 1 server paused: a.example"),
            ]
        );
    }

    #[test]
    fn a_band_names_a_few_servers_and_counts_the_rest() {
        let names = ["a", "b", "c", "d", "e"];
        assert_eq!(
            servers_paused(&names.into_iter().collect()),
            "5 servers paused: a, b, c, and 2 more"
        );
    }
}
