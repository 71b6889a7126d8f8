//! `ratchet ctl`: the operator's client of the decision service, over gRPC.
//!
//! One file per noun; each runs its command and returns a typed output that prints as a
//! table or, with `--json`, as the stable JSON of shared/spec/cli.md (see `output`). A
//! refusal is one line on stderr and a non-zero exit (see `client`).

mod audit;
mod client;
mod cluster;
mod connector;
mod events;
mod output;
mod pages;
mod pause;
mod policy;
mod report;
mod server;
mod snapshot;
mod tenant;
mod webhook;

use clap::{Args, Subcommand};
use ratchet_proto::limits::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES};
use ratchet_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::tls_args::TlsArgs;
use output::Output;

/// The admin API, which every noun but `cluster` speaks.
type Admin = AdminClient<Channel>;

#[derive(Args)]
pub struct CtlArgs {
    /// Deciders to talk to, tried in order.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7001", global = true)]
    endpoints: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// This operator's certificate (any role), key and the cluster CA.
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Tenants: add, list, remove.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Connectors: how a tenant's servers are recognised.
    #[command(subcommand)]
    Connector(connector::ConnectorCommand),
    /// Servers: import a first-seen date, decommission.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// A tenant's report: every server, its stage, dates and counters; or, with --all, every
    /// tenant's servers as JSON lines or CSV.
    Report(report::ReportArgs),
    /// Pause enforcement for a tenant (start or extend), or `pause end`.
    #[command(args_conflicts_with_subcommands = true)]
    Pause(pause::PauseArgs),
    /// A tenant's pauses and remaining pause days.
    Pauses {
        #[arg(long)]
        tenant: String,
    },
    /// A tenant's notifications, oldest first, and whether its webhook took them.
    Events(events::EventsArgs),
    /// Where the tenant's notifications are POSTed (an empty --url stops them).
    Webhook {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        url: String,
    },
    /// The audit trail: every admin write, who made it (from the certificate), and how it ended.
    Audit(audit::AuditArgs),
    /// Backups: `snapshot save FILE`, a consistent, checksummed copy of the whole state.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// The replicated policy: show, set.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The decider group: status and membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let channel = client::connect(&args.endpoints, &args.tls).await?;
    let mut admin = AdminClient::new(channel.clone())
        .max_decoding_message_size(MAX_REPLY_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES);
    let admin = &mut admin;
    let json = args.json;
    match args.command {
        CtlCommand::Tenant(command) => tenant::run(admin, command).await?.print(json),
        CtlCommand::Connector(command) => connector::run(admin, command).await?.print(json),
        CtlCommand::Server(command) => server::run(admin, command).await?.print(json),
        CtlCommand::Report(args) if args.all => report::export(admin, args).await?,
        CtlCommand::Report(args) => report::run(admin, args).await?.print(json),
        CtlCommand::Pause(args) => pause::run(admin, args).await?.print(json),
        CtlCommand::Pauses { tenant } => pause::list(admin, tenant).await?.print(json),
        CtlCommand::Events(args) => events::run(admin, args).await?.print(json),
        CtlCommand::Webhook { tenant, url } => webhook::run(admin, tenant, url).await?.print(json),
        CtlCommand::Audit(args) => audit::run(admin, args).await?.print(json),
        CtlCommand::Snapshot(command) => snapshot::run(admin, command).await?.print(json),
        CtlCommand::Policy(command) => policy::run(admin, command).await?.print(json),
        CtlCommand::Cluster(command) => cluster::run(channel, command, json).await?.print(json),
    }
    Ok(())
}
