//! Why this exists: the decider's front page, `/`, is where an operator starts: every tenant,
//! linked to its report page, with its server counts and whether its enforcement is paused
//! or report-only.

use std::fmt::Write;

use ratchet_policy::{TenantMode, Timestamp};

use super::html::{date_time, document, Esc};
use crate::report::{TenantReport, TenantTotals};

/// Each tenant's report header (no servers) and its totals.
pub fn render(reports: &[(TenantReport, TenantTotals)], pause_budget_days: u32, now: Timestamp) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Tenants</h1><p class=\"sub\">{} tenants · as of {}</p><div class=\"table-wrap\"><table><thead><tr>\
         <th scope=\"col\">Tenant</th><th scope=\"col\" class=\"num\">Servers</th><th scope=\"col\" class=\"num\">Out of date</th>\
         <th scope=\"col\" class=\"num\">Throttled or blocked now</th><th scope=\"col\">Enforcement</th>\
         <th scope=\"col\" class=\"num\">Pause days remaining</th></tr></thead><tbody>",
        reports.len(),
        date_time(now)
    );
    for (report, totals) in reports {
        let pause = match report.paused_until {
            Some(until) => format!("<span class=\"badge b-amber\">Paused</span> until {}", date_time(until)),
            None if report.mode == TenantMode::ReportOnly => "<span class=\"badge b-blue\">Report-only</span>".to_owned(),
            None => "<span class=\"badge b-green\">Enforcing</span>".to_owned(),
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/tenants/{name}\"><strong>{name}</strong></a></td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{pause}</td><td class=\"num\">{} of {pause_budget_days}</td></tr>",
            totals.servers,
            totals.out_of_date,
            totals.enforced_now,
            report.pause_days_remaining,
            name = Esc(&report.tenant),
        );
    }
    if reports.is_empty() {
        body.push_str(
            "<tr><td colspan=\"6\" class=\"muted\">No tenants yet: add one with <span class=\"mono\">ratchet ctl tenant add NAME</span>.</td></tr>",
        );
    }
    body.push_str("</tbody></table></div>");
    document("Tenants", &[("Tenants", None)], &body)
}
