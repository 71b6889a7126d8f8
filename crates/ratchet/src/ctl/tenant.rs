//! `ratchet ctl tenant add|list`: the tenants, each with its server and connector counts.

use clap::Subcommand;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{added, date, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Subcommand)]
pub enum TenantCommand {
    Add { name: String },
    List,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum TenantOutput {
    Added { tenant: String, created: bool },
    Listed(Vec<Tenant>),
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
    })
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
        }
    }
}
