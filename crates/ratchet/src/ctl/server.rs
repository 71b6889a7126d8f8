//! `ratchet ctl server import|decommission`: a server's first-seen date as an earlier system
//! knew it, and its removal from the report.

use clap::Subcommand;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::Output;
use super::Admin;

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Record a server's first-seen date as an earlier system knew it.
    Import {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        server: String,
        #[arg(long)]
        build: String,
        /// RFC 3339, not in the future.
        #[arg(long)]
        first_seen: String,
    },
    /// Remove a server from the report; a later sighting starts a new episode.
    Decommission {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        server: String,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum ServerOutput {
    /// `server_fqdn` as the decider normalised it.
    Imported {
        tenant: String,
        server_fqdn: String,
        first_seen: String,
    },
    /// `server_fqdn` as given.
    Decommissioned {
        tenant: String,
        server_fqdn: String,
        removed: bool,
    },
}

pub async fn run(admin: &mut Admin, command: ServerCommand) -> anyhow::Result<ServerOutput> {
    Ok(match command {
        ServerCommand::Import {
            tenant,
            server,
            build,
            first_seen,
        } => {
            let request = pb::ImportServerRequest {
                tenant: tenant.clone(),
                server_fqdn: server,
                build,
                first_seen,
            };
            let reply = admin.import_server(request).await.map_err(refusal)?.into_inner();
            ServerOutput::Imported {
                tenant,
                server_fqdn: reply.server_fqdn,
                first_seen: reply.first_seen,
            }
        }
        ServerCommand::Decommission { tenant, server } => {
            let request = pb::DecommissionServerRequest {
                tenant: tenant.clone(),
                server_fqdn: server.clone(),
            };
            admin.decommission_server(request).await.map_err(refusal)?;
            ServerOutput::Decommissioned {
                tenant,
                server_fqdn: server,
                removed: true,
            }
        }
    })
}

impl Output for ServerOutput {
    fn human(&self) {
        match self {
            ServerOutput::Imported {
                tenant,
                server_fqdn,
                first_seen,
            } => println!("server {server_fqdn} of tenant {tenant} imported, first seen {first_seen}"),
            ServerOutput::Decommissioned { tenant, server_fqdn, .. } => {
                println!("server {server_fqdn} of tenant {tenant} decommissioned")
            }
        }
    }
}
