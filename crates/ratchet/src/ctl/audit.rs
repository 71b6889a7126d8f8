//! `ratchet ctl audit`: the audit trail, every admin write with who made it (from the
//! certificate) and how it ended, optionally for one tenant or since an instant.

use anyhow::anyhow;
use chrono::DateTime;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{date, nonempty, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Serialize)]
pub struct Audit {
    entries: Vec<Entry>,
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

pub async fn run(admin: &mut Admin, tenant: Option<String>, since: Option<String>) -> anyhow::Result<Audit> {
    let since_unix_ms = match since {
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .map_err(|e| anyhow!("--since: {text:?} is not an RFC 3339 instant: {e}"))?
            .timestamp_millis(),
        None => 0,
    };
    let request = pb::ListAuditRequest {
        tenant: tenant.unwrap_or_default(),
        since_unix_ms,
    };
    let reply = admin.list_audit(request).await.map_err(refusal)?.into_inner();
    let entries = reply.entries.into_iter().map(|e| Entry {
        index: e.index,
        at: date(e.at_unix_ms),
        tenant: nonempty(&e.tenant),
        actor: e.actor,
        action: e.action,
        outcome: e.outcome,
    });
    Ok(Audit {
        entries: entries.collect(),
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
    }
}
