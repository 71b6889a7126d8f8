//! `ratchet ctl audit`: the audit trail, every admin write with who made it (from the
//! certificate) and how it ended, optionally for one tenant or since an instant, a page at
//! a time (see `pages`).

use anyhow::anyhow;
use chrono::DateTime;
use clap::Args;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{date, nonempty, or_dash, Output};
use super::pages::{PageArgs, Pager};
use super::Admin;
use crate::table;

#[derive(Args)]
pub struct AuditArgs {
    /// Only this tenant's entries.
    #[arg(long)]
    tenant: Option<String>,
    /// Only entries at or after this instant (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    #[command(flatten)]
    pages: PageArgs,
}

#[derive(Serialize)]
pub struct Audit {
    entries: Vec<Entry>,
    /// Set when one page was asked for and more follow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

#[derive(Serialize)]
struct Entry {
    index: u64,
    at: Option<String>,
    actor: String,
    action: String,
    tenant: Option<String>,
    outcome: String,
}

pub async fn run(admin: &mut Admin, args: AuditArgs) -> anyhow::Result<Audit> {
    let since_unix_ms = match args.since {
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .map_err(|e| anyhow!("--since: {text:?} is not an RFC 3339 instant: {e}"))?
            .timestamp_millis(),
        None => 0,
    };
    let tenant = args.tenant.unwrap_or_default();
    let mut pager = Pager::new(args.pages);
    let mut entries = Vec::new();
    while let Some((page_size, page_token)) = pager.next_request() {
        let request = pb::ListAuditRequest {
            tenant: tenant.clone(),
            since_unix_ms,
            page_size,
            page_token,
        };
        let reply = admin.list_audit(request).await.map_err(refusal)?.into_inner();
        entries.extend(reply.entries.into_iter().map(|e| Entry {
            index: e.index,
            at: date(e.at_unix_ms),
            tenant: nonempty(&e.tenant),
            actor: e.actor,
            action: e.action,
            outcome: e.outcome,
        }));
        pager.answered(reply.next_page_token);
    }
    Ok(Audit {
        entries,
        next_page_token: pager.next_page_token(),
    })
}

impl Output for Audit {
    fn human(&self) {
        let rows: Vec<Vec<String>> = self
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.at.clone().unwrap_or_default(),
                    e.actor.clone(),
                    or_dash(e.tenant.as_deref()),
                    e.action.clone(),
                    e.outcome.clone(),
                ]
            })
            .collect();
        table::print(&["AT", "WHO", "TENANT", "WHAT", "OUTCOME"], &rows);
        if let Some(token) = &self.next_page_token {
            println!("next page: --page-token {token}");
        }
    }
}
