//! `ratchet ctl tenant add|list|mode|remove`: the tenants, each with its server and
//! connector counts and its enforcement mode; `tenant mode` to switch a tenant between
//! enforcing and reporting only. Removing one deletes all it holds, so it asks for `--yes`;
//! without it, it says what would go and changes nothing.

use anyhow::bail;
use clap::builder::PossibleValue;
use clap::{Subcommand, ValueEnum};
use ratchet_policy::TenantMode;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{added, date, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Subcommand)]
pub enum TenantCommand {
    Add {
        name: String,
    },
    List,
    /// Remove a tenant and everything kept under it: connectors, servers, pauses, counts,
    /// webhook and events (its audit records stay). Asks for --yes.
    Remove {
        #[arg(long)]
        tenant: String,
        /// Remove it: without this, nothing is removed, and what would be is told.
        #[arg(long)]
        yes: bool,
    },
    /// Enforce the tenant's verdicts, or only compute, count and report them (report-only:
    /// its mail is always accepted).
    Mode {
        /// The tenant whose mode to set.
        #[arg(long)]
        tenant: String,
        /// enforce: throttle and block as the stages say; report-only: accept all mail,
        /// and report and count what enforcing would have done.
        mode: ModeWord,
    },
}

/// A tenant mode as the command line takes it: its words are the policy crate's own.
#[derive(Clone, Copy)]
pub struct ModeWord(TenantMode);

impl ValueEnum for ModeWord {
    fn value_variants<'a>() -> &'a [Self] {
        &[ModeWord(TenantMode::Enforce), ModeWord(TenantMode::ReportOnly)]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.as_str()))
    }
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum TenantOutput {
    Added { tenant: String, created: bool },
    Listed(Vec<Tenant>),
    ModeSet { tenant: String, mode: String },
    Removed { tenant: String, removed: bool },
}

#[derive(Serialize)]
pub struct Tenant {
    name: String,
    servers: u32,
    connectors: u32,
    paused_until: Option<String>,
    mode: String,
}

pub async fn run(admin: &mut Admin, command: TenantCommand) -> anyhow::Result<TenantOutput> {
    Ok(match command {
        TenantCommand::Add { name } => {
            let request = pb::AddTenantRequest { name: name.clone() };
            let reply = admin.add_tenant(request).await.map_err(refusal)?.into_inner();
            TenantOutput::Added {
                tenant: name,
                created: reply.created,
            }
        }
        TenantCommand::List => {
            let reply = admin.list_tenants(pb::ListTenantsRequest {}).await.map_err(refusal)?.into_inner();
            let tenants = reply.tenants.into_iter().map(|t| Tenant {
                paused_until: date(t.paused_until_unix_ms),
                name: t.name,
                servers: t.servers,
                connectors: t.connectors,
                mode: t.mode,
            });
            TenantOutput::Listed(tenants.collect())
        }
        TenantCommand::Mode { tenant, mode } => {
            let request = pb::SetTenantModeRequest {
                tenant,
                mode: mode.0.to_string(),
            };
            let reply = admin.set_tenant_mode(request).await.map_err(refusal)?.into_inner();
            TenantOutput::ModeSet {
                tenant: reply.tenant,
                mode: reply.mode,
            }
        }
        TenantCommand::Remove { tenant, yes: false } => bail!(unconfirmed_removal(admin, &tenant).await?),
        TenantCommand::Remove { tenant, yes: true } => {
            let request = pb::RemoveTenantRequest { tenant: tenant.clone() };
            admin.remove_tenant(request).await.map_err(refusal)?;
            TenantOutput::Removed { tenant, removed: true }
        }
    })
}

/// What removing `tenant` would delete, as the refusal of a removal without --yes; an
/// unknown tenant is refused by name, as the removal itself would be.
async fn unconfirmed_removal(admin: &mut Admin, tenant: &str) -> anyhow::Result<String> {
    let name = tenant.trim().to_ascii_lowercase();
    let reply = admin.list_tenants(pb::ListTenantsRequest {}).await.map_err(refusal)?.into_inner();
    let Some(found) = reply.tenants.into_iter().find(|t| t.name == name) else {
        bail!("not found: tenant: no tenant named {name:?}");
    };
    Ok(format!(
        "tenant remove: would remove tenant {name} (servers: {}, connectors: {}) and its pauses, counts, \
         webhook and events; nothing was removed: add --yes to remove it",
        found.servers, found.connectors
    ))
}

impl Output for TenantOutput {
    fn human(&self) {
        match self {
            TenantOutput::Added { tenant, created } => println!("tenant {tenant} {}", added(*created)),
            TenantOutput::Listed(tenants) => {
                let rows: Vec<Vec<String>> = tenants
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.servers.to_string(),
                            t.connectors.to_string(),
                            or_dash(t.paused_until.as_deref()),
                            t.mode.clone(),
                        ]
                    })
                    .collect();
                table::print(&["TENANT", "SERVERS", "CONNECTORS", "PAUSED UNTIL", "MODE"], &rows);
            }
            TenantOutput::ModeSet { tenant, mode } => println!("tenant {tenant}: mode {mode}"),
            TenantOutput::Removed { tenant, .. } => println!("tenant {tenant} removed"),
        }
    }
}
