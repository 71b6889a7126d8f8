//! `ratchet ctl connector add|list|remove`: how a tenant's servers are recognised: by
//! source address range, by the name on their TLS client certificate, or by both.

use clap::Subcommand;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{added, nonempty, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Subcommand)]
pub enum ConnectorCommand {
    Add {
        #[arg(long)]
        tenant: String,
        /// Source address range of the tenant's servers, e.g. 203.0.113.0/24. Without it the
        /// connector is certificate-only: --cert-name from any address.
        #[arg(long, required_unless_present = "cert_name")]
        cidr: Option<String>,
        /// Require a TLS client certificate with this name (verified by the edge against its
        /// `tls_client_ca_file`).
        #[arg(long)]
        cert_name: Option<String>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Remove exactly the connector with this range and certificate name, as it was added:
    /// mail from it is no longer attributed to the tenant.
    Remove {
        #[arg(long)]
        tenant: String,
        #[arg(long, required_unless_present = "cert_name")]
        cidr: Option<String>,
        #[arg(long)]
        cert_name: Option<String>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum ConnectorOutput {
    Added {
        tenant: String,
        cidr: Option<String>,
        cert_name: Option<String>,
        created: bool,
    },
    Listed(Vec<Connector>),
    Removed {
        tenant: String,
        cidr: Option<String>,
        cert_name: Option<String>,
        removed: bool,
    },
}

#[derive(Serialize)]
pub struct Connector {
    tenant: String,
    cidr: Option<String>,
    cert_name: Option<String>,
}

pub async fn run(admin: &mut Admin, command: ConnectorCommand) -> anyhow::Result<ConnectorOutput> {
    Ok(match command {
        ConnectorCommand::Add { tenant, cidr, cert_name } => {
            let request = pb::AddConnectorRequest {
                tenant: tenant.clone(),
                cidr: cidr.clone().unwrap_or_default(),
                cert_name: cert_name.clone().unwrap_or_default(),
            };
            let reply = admin.add_connector(request).await.map_err(refusal)?.into_inner();
            ConnectorOutput::Added {
                tenant,
                cidr,
                cert_name,
                created: reply.created,
            }
        }
        ConnectorCommand::List { tenant } => {
            let request = pb::ListConnectorsRequest { tenant };
            let reply = admin.list_connectors(request).await.map_err(refusal)?.into_inner();
            let connectors = reply.connectors.into_iter().map(|c| Connector {
                cert_name: nonempty(&c.cert_name),
                cidr: nonempty(&c.cidr),
                tenant: c.tenant,
            });
            ConnectorOutput::Listed(connectors.collect())
        }
        ConnectorCommand::Remove { tenant, cidr, cert_name } => {
            let request = pb::RemoveConnectorRequest {
                tenant: tenant.clone(),
                cidr: cidr.clone().unwrap_or_default(),
                cert_name: cert_name.clone().unwrap_or_default(),
            };
            admin.remove_connector(request).await.map_err(refusal)?;
            ConnectorOutput::Removed {
                tenant,
                cidr,
                cert_name,
                removed: true,
            }
        }
    })
}

/// A connector's claim in words: "203.0.113.0/24", "203.0.113.0/24 with certificate
/// mx.example", or "certificate mx.example from any address".
fn claim(cidr: &Option<String>, cert_name: &Option<String>) -> String {
    match (cidr, cert_name) {
        (Some(cidr), Some(name)) => format!("{cidr} with certificate {name}"),
        (Some(cidr), None) => cidr.clone(),
        (None, name) => format!("certificate {} from any address", or_dash(name.as_deref())),
    }
}

impl Output for ConnectorOutput {
    fn human(&self) {
        match self {
            ConnectorOutput::Added {
                tenant,
                cidr,
                cert_name,
                created,
            } => println!("connector {} for tenant {tenant} {}", claim(cidr, cert_name), added(*created)),
            ConnectorOutput::Removed {
                tenant, cidr, cert_name, ..
            } => println!("connector {} of tenant {tenant} removed", claim(cidr, cert_name)),
            ConnectorOutput::Listed(connectors) => {
                let rows: Vec<Vec<String>> = connectors
                    .iter()
                    .map(|c| {
                        vec![
                            c.tenant.clone(),
                            c.cidr.clone().unwrap_or_else(|| "any".to_owned()),
                            or_dash(c.cert_name.as_deref()),
                        ]
                    })
                    .collect();
                table::print(&["TENANT", "CIDR", "CERT NAME"], &rows);
            }
        }
    }
}
