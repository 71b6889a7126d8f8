//! `ratchet ctl tenant add|list|remove`: the tenants, each with its server and connector
//! counts. Removing one deletes all it holds, so it asks for `--yes`; without it, it says
//! what would go and changes nothing.

use anyhow::bail;
use clap::Subcommand;
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
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum TenantOutput {
    Added { tenant: String, created: bool },
    Listed(Vec<Tenant>),
    Removed { tenant: String, removed: bool },
}

#[derive(Serialize)]
pub struct Tenant {
    name: String,
    servers: u32,
    connectors: u32,
    paused_until: Option<String>,
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
            });
            TenantOutput::Listed(tenants.collect())
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
                        ]
                    })
                    .collect();
                table::print(&["TENANT", "SERVERS", "CONNECTORS", "PAUSED UNTIL"], &rows);
            }
            TenantOutput::Removed { tenant, .. } => println!("tenant {tenant} removed"),
        }
    }
}
