//! `ratchet ctl connector add|list|remove`: how a tenant's servers are recognised: by
//! source address range, by the name on their TLS client certificate, or by both.

use clap::{Args, Subcommand};
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{added, nonempty, or_dash, Output};
use super::Admin;
use crate::table;

/// One connector: its tenant, and the range, the certificate name or both that it matches.
/// The arguments of `add` and `remove`, and a row of `list`.
#[derive(Args, Serialize)]
pub struct Connector {
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
}

impl Connector {
    /// Its claim in words: "203.0.113.0/24", "203.0.113.0/24 with certificate
    /// mx.example", or "certificate mx.example from any address".
    fn claim(&self) -> String {
        match (&self.cidr, &self.cert_name) {
            (Some(cidr), Some(name)) => format!("{cidr} with certificate {name}"),
            (Some(cidr), None) => cidr.clone(),
            (None, name) => format!("certificate {} from any address", or_dash(name.as_deref())),
        }
    }
}

#[derive(Subcommand)]
pub enum ConnectorCommand {
    Add(Connector),
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Remove exactly the connector with this range and certificate name, as it was added:
    /// mail from it is no longer attributed to the tenant.
    Remove(Connector),
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum ConnectorOutput {
    Added {
        #[serde(flatten)]
        connector: Connector,
        created: bool,
    },
    Listed(Vec<Connector>),
    Removed {
        #[serde(flatten)]
        connector: Connector,
        removed: bool,
    },
}

pub async fn run(admin: &mut Admin, command: ConnectorCommand) -> anyhow::Result<ConnectorOutput> {
    Ok(match command {
        ConnectorCommand::Add(connector) => {
            let request = pb::AddConnectorRequest {
                tenant: connector.tenant.clone(),
                cidr: connector.cidr.clone().unwrap_or_default(),
                cert_name: connector.cert_name.clone().unwrap_or_default(),
            };
            let reply = admin.add_connector(request).await.map_err(refusal)?.into_inner();
            ConnectorOutput::Added {
                connector,
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
        ConnectorCommand::Remove(connector) => {
            let request = pb::RemoveConnectorRequest {
                tenant: connector.tenant.clone(),
                cidr: connector.cidr.clone().unwrap_or_default(),
                cert_name: connector.cert_name.clone().unwrap_or_default(),
            };
            admin.remove_connector(request).await.map_err(refusal)?;
            ConnectorOutput::Removed { connector, removed: true }
        }
    })
}

impl Output for ConnectorOutput {
    fn human(&self) {
        match self {
            ConnectorOutput::Added { connector, created } => {
                println!(
                    "connector {} for tenant {} {}",
                    connector.claim(),
                    connector.tenant,
                    added(*created)
                )
            }
            ConnectorOutput::Removed { connector, .. } => {
                println!("connector {} of tenant {} removed", connector.claim(), connector.tenant)
            }
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
