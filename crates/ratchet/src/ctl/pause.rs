//! `ratchet ctl pause`, `pause end` and `pauses`: a tenant's pause of enforcement (the
//! whole tenant, or only the servers named), started, extended or ended early, and its
//! pauses with the days left in this year's budget.

use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{nonempty, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Args)]
pub struct PauseArgs {
    #[command(subcommand)]
    end: Option<PauseEnd>,
    #[arg(long, required = true)]
    tenant: Option<String>,
    /// Days to pause, or to extend the active pause by.
    #[arg(long, required = true)]
    days: Option<u32>,
    /// Pause only this server (repeatable), charged the days once per server named.
    #[arg(long = "server", value_name = "FQDN")]
    servers: Vec<String>,
    /// Makes a retry safe: the same id is charged once.
    #[arg(long)]
    request_id: Option<String>,
}

#[derive(Subcommand)]
enum PauseEnd {
    /// End the active pause now; whole unused days return to the budget.
    End {
        #[arg(long)]
        tenant: String,
        /// End this server's own pause instead of the tenant-wide one.
        #[arg(long, value_name = "FQDN")]
        server: Option<String>,
    },
}

/// A pause is tried this many times while the group is unavailable (with the same id).
const PAUSE_ATTEMPTS: u32 = 3;

#[derive(Serialize)]
#[serde(untagged)]
pub enum PauseOutput {
    Paused {
        tenant: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        servers: Vec<String>,
        days: u32,
        paused_from: String,
        paused_until: String,
        pause_days_remaining: u32,
    },
    Ended {
        tenant: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        ended_at: String,
        refunded_days: u32,
        pause_days_remaining: u32,
    },
}

/// `ratchet ctl pauses`.
#[derive(Serialize)]
pub struct Pauses {
    tenant: String,
    paused_until: Option<String>,
    pause_days_remaining: u32,
    pauses: Vec<Pause>,
}

#[derive(Serialize)]
struct Pause {
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    start: String,
    end: String,
    days_charged: u32,
    ended_early: bool,
    active: bool,
}

pub async fn run(admin: &mut Admin, args: PauseArgs) -> anyhow::Result<PauseOutput> {
    if let Some(PauseEnd::End { tenant, server }) = args.end {
        let request = pb::EndPauseRequest {
            tenant: tenant.clone(),
            server: server.clone().unwrap_or_default(),
        };
        let reply = admin.end_pause(request).await.map_err(refusal)?.into_inner();
        return Ok(PauseOutput::Ended {
            tenant,
            server,
            ended_at: reply.ended_at,
            refunded_days: reply.refunded_days,
            pause_days_remaining: reply.remaining_days,
        });
    }
    let tenant = args.tenant.ok_or_else(|| anyhow!("--tenant is required"))?;
    let days = args.days.ok_or_else(|| anyhow!("--days is required"))?;
    // Every pause carries a request id, drawn here when not given, so that a retry of a
    // pause whose answer was lost (here, or by the operator with --request-id) is charged
    // once.
    let request_id = args.request_id.unwrap_or_else(|| format!("ctl-{:032x}", rand::random::<u128>()));
    let request = pb::PauseRequest {
        tenant: tenant.clone(),
        days,
        request_id: request_id.clone(),
        servers: args.servers.clone(),
    };
    let mut attempt = 1;
    let reply = loop {
        match admin.pause(request.clone()).await {
            Ok(reply) => break reply.into_inner(),
            Err(status)
                if attempt < PAUSE_ATTEMPTS && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(status) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => {
                return Err(anyhow!(
                    "{} (retry with --request-id {request_id}: it is charged once)",
                    refusal(status)
                ));
            }
            Err(status) => return Err(refusal(status)),
        }
    };
    Ok(PauseOutput::Paused {
        tenant,
        servers: args.servers,
        days: reply.days,
        paused_from: reply.paused_from,
        paused_until: reply.paused_until,
        pause_days_remaining: reply.remaining_days,
    })
}

pub async fn list(admin: &mut Admin, tenant: String) -> anyhow::Result<Pauses> {
    let request = pb::ListPausesRequest { tenant: tenant.clone() };
    let reply = admin.list_pauses(request).await.map_err(refusal)?.into_inner();
    let pauses = reply.pauses.into_iter().map(|p| Pause {
        server: nonempty(&p.server),
        start: p.start,
        end: p.end,
        days_charged: p.days_charged,
        ended_early: p.ended_early,
        active: p.active,
    });
    Ok(Pauses {
        tenant,
        paused_until: nonempty(&reply.paused_until),
        pause_days_remaining: reply.remaining_days,
        pauses: pauses.collect(),
    })
}

impl Output for PauseOutput {
    fn human(&self) {
        match self {
            PauseOutput::Paused {
                tenant,
                servers,
                days,
                paused_until,
                pause_days_remaining,
                ..
            } => {
                let what = match servers.as_slice() {
                    [] => format!("tenant {tenant}"),
                    servers => format!("{} of tenant {tenant}", servers.join(", ")),
                };
                let charged = days * servers.len().max(1) as u32;
                println!("{what} paused until {paused_until} ({charged} days charged, {pause_days_remaining} remain this year)")
            }
            PauseOutput::Ended {
                tenant,
                server,
                ended_at,
                refunded_days,
                pause_days_remaining,
            } => {
                let what = server
                    .as_ref()
                    .map_or_else(|| format!("tenant {tenant}"), |s| format!("{s} of tenant {tenant}"));
                println!("pause of {what} ended at {ended_at}; {refunded_days} days returned, {pause_days_remaining} remain this year")
            }
        }
    }
}

impl Output for Pauses {
    fn human(&self) {
        println!(
            "tenant {}: paused until {}, {} pause days remain this year",
            self.tenant,
            or_dash(self.paused_until.as_deref()),
            self.pause_days_remaining
        );
        let rows: Vec<Vec<String>> = self
            .pauses
            .iter()
            .map(|p| {
                let state = if p.active {
                    "active"
                } else if p.ended_early {
                    "ended early"
                } else {
                    "over"
                };
                let scope = or_dash(p.server.as_deref());
                vec![scope, p.start.clone(), p.end.clone(), p.days_charged.to_string(), state.to_owned()]
            })
            .collect();
        table::print(&["SERVER", "START", "END", "DAYS", "STATE"], &rows);
    }
}
