//! `ratchet ctl`: the operator's client of the decision service, over gRPC.
//!
//! Talks to the first reachable decider of `--endpoints`; writes are forwarded to the
//! leader by the decider. Human output is aligned tables; `--json` prints the stable JSON
//! of shared/spec/cli.md. A refusal is one line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::cluster_client::ClusterClient;
use ratchet_tls::Dialer;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::tls_args::TlsArgs;

use crate::table;

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
    /// Tenants: add, list.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Connectors: how a tenant's servers are recognised.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// Servers: import a first-seen date, decommission.
    #[command(subcommand)]
    Server(ServerCommand),
    /// A tenant's report: every server, its stage, dates and counters.
    Report {
        #[arg(long)]
        tenant: String,
    },
    /// Pause enforcement for a tenant (start or extend), or `pause end`.
    #[command(args_conflicts_with_subcommands = true)]
    Pause(PauseArgs),
    /// A tenant's pauses and remaining pause days.
    Pauses {
        #[arg(long)]
        tenant: String,
    },
    /// A tenant's notifications, oldest first, and whether its webhook took them.
    Events {
        #[arg(long)]
        tenant: String,
    },
    /// Where the tenant's notifications are POSTed (an empty --url stops them).
    Webhook {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        url: String,
    },
    /// The audit trail: every admin write, who made it (from the certificate), and how it ended.
    Audit {
        /// Only this tenant's entries.
        #[arg(long)]
        tenant: Option<String>,
        /// Only entries at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
    /// Backups: `snapshot save FILE`, a consistent, checksummed copy of the whole state.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The replicated policy: show, set.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The decider group: status and membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Save a backup to FILE (refused if FILE exists); `ratchet restore` reads it.
    Save { file: PathBuf },
}

#[derive(Subcommand)]
enum TenantCommand {
    Add { name: String },
    List,
}

#[derive(Subcommand)]
enum ConnectorCommand {
    Add {
        #[arg(long)]
        tenant: String,
        /// Source address range of the tenant's servers, e.g. 203.0.113.0/24.
        #[arg(long)]
        cidr: String,
        /// Also require a TLS client certificate with this name.
        #[arg(long)]
        cert_name: Option<String>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ServerCommand {
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

#[derive(Args)]
struct PauseArgs {
    #[command(subcommand)]
    end: Option<PauseEnd>,
    #[arg(long, required = true)]
    tenant: Option<String>,
    /// Days to pause, or to extend the active pause by.
    #[arg(long, required = true)]
    days: Option<u32>,
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
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    Show,
    Set { file: PathBuf },
}

#[derive(Subcommand)]
enum ClusterCommand {
    Status,
    /// Add a running decider as a non-voting learner; waits until it has caught up.
    AddLearner {
        #[arg(long)]
        name: String,
        #[arg(long)]
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        #[arg(long)]
        name: String,
    },
    /// Remove a member, voter or learner.
    Remove {
        #[arg(long)]
        name: String,
    },
}

/// A pause is tried this many times while the group is unavailable (with the same id).
const PAUSE_ATTEMPTS: u32 = 3;
/// Reports of large tenants run past tonic's default 4 MiB.
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(endpoints: &[String], tls: &TlsArgs) -> anyhow::Result<Channel> {
    let dialer = Dialer::new(tls.files()?.as_ref(), None)?;
    let mut failures = Vec::new();
    for endpoint in endpoints {
        if !dialer.is_tls() {
            tls.check_plaintext_dial("--endpoints", endpoint)?;
        }
        let attempt = dialer
            .endpoint(endpoint)
            .map_err(|e| anyhow!("--endpoints {endpoint}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        match dialer.connect(attempt).await {
            Ok(channel) => return Ok(channel),
            Err(error) => failures.push(format!("{endpoint} ({})", with_causes(&error))),
        }
    }
    Err(anyhow!("no decider reachable at --endpoints: {}", failures.join(", ")))
}

/// Streams a backup into FILE.part, verifies it whole, and renames it to FILE: a file at
/// FILE is always a complete, checked backup.
async fn save_snapshot(
    admin: &mut AdminClient<Channel>,
    file: &std::path::Path,
) -> anyhow::Result<(ratchet_store::types::SnapshotMeta, u64)> {
    use std::io::Write;
    if file.exists() {
        return Err(anyhow!("{}: already exists; nothing was written", file.display()));
    }
    let part = file.with_extension("part");
    let mut out = std::fs::File::create(&part).with_context(|| format!("{}: cannot create", part.display()))?;
    let saved = async {
        let mut stream = admin.save_snapshot(pb::SaveSnapshotRequest {}).await.map_err(refusal)?.into_inner();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await.map_err(refusal)? {
            out.write_all(&chunk.data)
                .with_context(|| format!("{}: cannot write", part.display()))?;
            bytes += chunk.data.len() as u64;
        }
        out.sync_all().with_context(|| format!("{}: cannot write", part.display()))?;
        let reader = std::io::BufReader::new(std::fs::File::open(&part)?);
        let meta = ratchet_store::snapshot::verify(reader, ratchet_store::rocks::STATE_FAMILIES.len())
            .map_err(|e| anyhow!("the saved snapshot does not verify: {e}"))?;
        std::fs::rename(&part, file).with_context(|| format!("{}: cannot write", file.display()))?;
        anyhow::Ok((meta, bytes))
    }
    .await;
    if saved.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    saved
}

/// An error and its causes, on one line (tonic's own says only "transport error").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        line.push_str(": ");
        line.push_str(&next.to_string());
        cause = next.source();
    }
    line
}

/// A gRPC refusal as one line: what kind, and the decider's message naming the field.
fn refusal(status: tonic::Status) -> anyhow::Error {
    let kind = match status.code() {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::PermissionDenied => "permission denied",
        _ => "error",
    };
    anyhow!("{kind}: {}", status.message())
}

fn date(unix_ms: i64) -> Option<String> {
    (unix_ms != 0)
        .then(|| DateTime::<Utc>::from_timestamp_millis(unix_ms).map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .flatten()
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON values serialise"));
}

pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let channel = connect(&args.endpoints, &args.tls).await?;
    let mut admin = AdminClient::new(channel.clone()).max_decoding_message_size(MAX_REPLY_BYTES);
    let json = args.json;
    match args.command {
        CtlCommand::Tenant(TenantCommand::Add { name }) => {
            let reply = admin
                .add_tenant(pb::AddTenantRequest { name: name.clone() })
                .await
                .map_err(refusal)?
                .into_inner();
            if json {
                print_json(&json!({ "tenant": name, "created": reply.created }));
            } else {
                println!("tenant {name} {}", if reply.created { "added" } else { "already exists" });
            }
        }
        CtlCommand::Tenant(TenantCommand::List) => {
            let tenants = admin
                .list_tenants(pb::ListTenantsRequest {})
                .await
                .map_err(refusal)?
                .into_inner()
                .tenants;
            if json {
                let items: Vec<Value> = tenants
                    .iter()
                    .map(|t| json!({ "name": t.name, "servers": t.servers, "connectors": t.connectors, "paused_until": date(t.paused_until_unix_ms) }))
                    .collect();
                print_json(&Value::Array(items));
            } else {
                let rows: Vec<Vec<String>> = tenants
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.servers.to_string(),
                            t.connectors.to_string(),
                            date(t.paused_until_unix_ms).unwrap_or("-".into()),
                        ]
                    })
                    .collect();
                table::print(&["TENANT", "SERVERS", "CONNECTORS", "PAUSED UNTIL"], &rows);
            }
        }
        CtlCommand::Connector(ConnectorCommand::Add { tenant, cidr, cert_name }) => {
            let request = pb::AddConnectorRequest {
                tenant: tenant.clone(),
                cidr: cidr.clone(),
                cert_name: cert_name.unwrap_or_default(),
            };
            let reply = admin.add_connector(request).await.map_err(refusal)?.into_inner();
            if json {
                print_json(&json!({ "tenant": tenant, "cidr": cidr, "created": reply.created }));
            } else {
                println!(
                    "connector {cidr} for tenant {tenant} {}",
                    if reply.created { "added" } else { "already exists" }
                );
            }
        }
        CtlCommand::Connector(ConnectorCommand::List { tenant }) => {
            let connectors = admin
                .list_connectors(pb::ListConnectorsRequest { tenant })
                .await
                .map_err(refusal)?
                .into_inner()
                .connectors;
            if json {
                let items: Vec<Value> = connectors
                    .iter()
                    .map(|c| json!({ "tenant": c.tenant, "cidr": c.cidr, "cert_name": Some(&c.cert_name).filter(|n| !n.is_empty()) }))
                    .collect();
                print_json(&Value::Array(items));
            } else {
                let rows: Vec<Vec<String>> = connectors
                    .iter()
                    .map(|c| vec![c.tenant.clone(), c.cidr.clone(), or_dash(&c.cert_name)])
                    .collect();
                table::print(&["TENANT", "CIDR", "CERT NAME"], &rows);
            }
        }
        CtlCommand::Server(ServerCommand::Import {
            tenant,
            server,
            build,
            first_seen,
        }) => {
            let request = pb::ImportServerRequest {
                tenant: tenant.clone(),
                server_fqdn: server.clone(),
                build,
                first_seen,
            };
            let reply = admin.import_server(request).await.map_err(refusal)?.into_inner();
            if json {
                print_json(&json!({ "tenant": tenant, "server_fqdn": reply.server_fqdn, "first_seen": reply.first_seen }));
            } else {
                println!(
                    "server {} of tenant {tenant} imported, first seen {}",
                    reply.server_fqdn, reply.first_seen
                );
            }
        }
        CtlCommand::Server(ServerCommand::Decommission { tenant, server }) => {
            admin
                .decommission_server(pb::DecommissionServerRequest {
                    tenant: tenant.clone(),
                    server_fqdn: server.clone(),
                })
                .await
                .map_err(refusal)?;
            if json {
                print_json(&json!({ "tenant": tenant, "server_fqdn": server, "removed": true }));
            } else {
                println!("server {server} of tenant {tenant} decommissioned");
            }
        }
        CtlCommand::Report { tenant } => {
            let reply = admin.report(pb::ReportRequest { tenant }).await.map_err(refusal)?.into_inner();
            let report: Value = serde_json::from_str(&reply.report_json).context("the decider sent an unreadable report")?;
            if json {
                print_json(&report);
            } else {
                print_report(&report);
            }
        }
        CtlCommand::Pause(PauseArgs {
            end: Some(PauseEnd::End { tenant }),
            ..
        }) => {
            let reply = admin
                .end_pause(pb::EndPauseRequest { tenant: tenant.clone() })
                .await
                .map_err(refusal)?
                .into_inner();
            if json {
                print_json(
                    &json!({ "tenant": tenant, "ended_at": reply.ended_at, "refunded_days": reply.refunded_days, "pause_days_remaining": reply.remaining_days }),
                );
            } else {
                println!(
                    "pause of tenant {tenant} ended at {}; {} days returned, {} remain this year",
                    reply.ended_at, reply.refunded_days, reply.remaining_days
                );
            }
        }
        CtlCommand::Pause(PauseArgs {
            end: None,
            tenant,
            days,
            request_id,
        }) => {
            let tenant = tenant.ok_or_else(|| anyhow!("--tenant is required"))?;
            let days = days.ok_or_else(|| anyhow!("--days is required"))?;
            // Every pause carries a request id, drawn here when not given, so that a retry of
            // a pause whose answer was lost (here, or by the operator with --request-id) is
            // charged once.
            let request_id = request_id.unwrap_or_else(|| format!("ctl-{:032x}", rand::random::<u128>()));
            let request = pb::PauseRequest {
                tenant: tenant.clone(),
                days,
                request_id: request_id.clone(),
            };
            let mut attempt = 1;
            let reply = loop {
                match admin.pause(request.clone()).await {
                    Ok(reply) => break reply.into_inner(),
                    Err(status)
                        if attempt < PAUSE_ATTEMPTS
                            && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) =>
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
            if json {
                print_json(&json!({
                    "tenant": tenant, "days": reply.days, "paused_from": reply.paused_from,
                    "paused_until": reply.paused_until, "pause_days_remaining": reply.remaining_days,
                }));
            } else {
                println!(
                    "tenant {tenant} paused until {} ({} days granted, {} remain this year)",
                    reply.paused_until, reply.days, reply.remaining_days
                );
            }
        }
        CtlCommand::Pauses { tenant } => {
            let reply = admin
                .list_pauses(pb::ListPausesRequest { tenant: tenant.clone() })
                .await
                .map_err(refusal)?
                .into_inner();
            if json {
                let pauses: Vec<Value> = reply
                    .pauses
                    .iter()
                    .map(|p| json!({ "start": p.start, "end": p.end, "days_charged": p.days_charged, "ended_early": p.ended_early, "active": p.active }))
                    .collect();
                let paused_until = Some(&reply.paused_until).filter(|s| !s.is_empty());
                print_json(
                    &json!({ "tenant": tenant, "paused_until": paused_until, "pause_days_remaining": reply.remaining_days, "pauses": pauses }),
                );
            } else {
                println!(
                    "tenant {tenant}: paused until {}, {} pause days remain this year",
                    or_dash(&reply.paused_until),
                    reply.remaining_days
                );
                let rows: Vec<Vec<String>> = reply
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
                        vec![p.start.clone(), p.end.clone(), p.days_charged.to_string(), state.to_owned()]
                    })
                    .collect();
                table::print(&["START", "END", "DAYS", "STATE"], &rows);
            }
        }
        CtlCommand::Policy(PolicyCommand::Show) => {
            let reply = admin.get_policy(pb::GetPolicyRequest {}).await.map_err(refusal)?.into_inner();
            if json {
                print_json(&json!({ "version": reply.version, "policy_toml": reply.policy_toml }));
            } else {
                println!("# policy version {}\n{}", reply.version, reply.policy_toml);
            }
        }
        CtlCommand::Policy(PolicyCommand::Set { file }) => {
            let policy_toml = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let reply = admin
                .set_policy(pb::SetPolicyRequest { policy_toml })
                .await
                .map_err(refusal)?
                .into_inner();
            if json {
                print_json(&json!({ "version": reply.version }));
            } else {
                println!("policy version {} in force", reply.version);
            }
        }
        CtlCommand::Events { tenant } => {
            let reply = admin
                .list_events(pb::ListEventsRequest { tenant: tenant.clone() })
                .await
                .map_err(refusal)?
                .into_inner();
            if json {
                let events: Vec<Value> = reply
                    .events
                    .iter()
                    .map(|e| {
                        json!({ "id": e.id, "at": e.at, "kind": e.kind, "server_fqdn": Some(&e.server_fqdn).filter(|s| !s.is_empty()),
                                "message": e.message, "delivered": e.delivered })
                    })
                    .collect();
                print_json(
                    &json!({ "tenant": tenant, "webhook_url": Some(&reply.webhook_url).filter(|u| !u.is_empty()), "events": events }),
                );
            } else {
                println!("tenant {tenant}: webhook {}", or_dash(&reply.webhook_url));
                let rows: Vec<Vec<String>> = reply
                    .events
                    .iter()
                    .map(|e| {
                        let delivered = if e.delivered { "yes" } else { "no" };
                        vec![
                            e.at.clone(),
                            e.kind.clone(),
                            or_dash(&e.server_fqdn),
                            delivered.to_owned(),
                            e.message.clone(),
                            e.id.clone(),
                        ]
                    })
                    .collect();
                table::print(&["AT", "KIND", "SERVER", "DELIVERED", "MESSAGE", "ID"], &rows);
            }
        }
        CtlCommand::Snapshot(SnapshotCommand::Save { file }) => {
            let (meta, bytes) = save_snapshot(&mut admin, &file).await?;
            let index = meta.last_log_id.map_or(0, |id| id.index);
            if json {
                print_json(&json!({ "file": file, "snapshot_id": meta.snapshot_id, "index": index, "bytes": bytes }));
            } else {
                println!(
                    "saved {} (state at index {index}, {bytes} bytes, checksum verified) to {}",
                    meta.snapshot_id,
                    file.display()
                );
            }
        }
        CtlCommand::Audit { tenant, since } => {
            let since_unix_ms = match since {
                Some(text) => DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| anyhow!("--since: {text:?} is not an RFC 3339 instant: {e}"))?
                    .timestamp_millis(),
                None => 0,
            };
            let reply = admin
                .list_audit(pb::ListAuditRequest {
                    tenant: tenant.unwrap_or_default(),
                    since_unix_ms,
                })
                .await
                .map_err(refusal)?
                .into_inner();
            if json {
                let entries: Vec<Value> = reply
                    .entries
                    .iter()
                    .map(|e| {
                        json!({ "index": e.index, "at": date(e.at_unix_ms), "actor": e.actor, "action": e.action,
                                "tenant": Some(&e.tenant).filter(|t| !t.is_empty()), "outcome": e.outcome })
                    })
                    .collect();
                print_json(&json!({ "entries": entries }));
            } else {
                let rows: Vec<Vec<String>> = reply
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            date(e.at_unix_ms).unwrap_or_default(),
                            e.actor.clone(),
                            or_dash(&e.tenant),
                            e.action.clone(),
                            e.outcome.clone(),
                        ]
                    })
                    .collect();
                table::print(&["AT", "WHO", "TENANT", "WHAT", "OUTCOME"], &rows);
            }
        }
        CtlCommand::Webhook { tenant, url } => {
            let reply = admin
                .set_webhook(pb::SetWebhookRequest {
                    tenant: tenant.clone(),
                    url: url.clone(),
                })
                .await
                .map_err(refusal)?
                .into_inner();
            let secret = Some(&reply.secret).filter(|s| !s.is_empty());
            if json {
                print_json(&json!({ "tenant": tenant, "webhook_url": Some(&url).filter(|u| !u.is_empty()), "secret": secret }));
            } else if url.is_empty() {
                println!("tenant {tenant}: notifications are no longer delivered");
            } else {
                println!("tenant {tenant}: notifications go to {url}");
                println!(
                    "signing secret (HMAC-SHA256 of the body, header x-ratchet-signature: sha256=HEX): {}",
                    reply.secret
                );
                println!("it is shown once; setting the webhook again draws a new one");
            }
        }
        CtlCommand::Cluster(command) => run_cluster(ClusterClient::new(channel), command, json).await?,
    }
    Ok(())
}

async fn run_cluster(mut cluster: ClusterClient<Channel>, command: ClusterCommand, json: bool) -> anyhow::Result<()> {
    let membership = match command {
        ClusterCommand::Status => {
            let status = cluster
                .status(pb::StatusRequest { state_digest: json })
                .await
                .map_err(refusal)?
                .into_inner();
            print_status(&status, json);
            return Ok(());
        }
        ClusterCommand::AddLearner { name, address } => {
            let reply = cluster
                .add_learner(pb::AddLearnerRequest {
                    name: name.clone(),
                    address,
                })
                .await
                .map_err(refusal)?
                .into_inner();
            if json {
                print_json(&json!({ "name": name, "id": reply.id }));
            } else {
                println!("learner {name} (id {}) added and caught up", reply.id);
            }
            return Ok(());
        }
        ClusterCommand::Promote { name } => cluster.promote(pb::PromoteRequest { name }).await,
        ClusterCommand::Remove { name } => cluster.remove(pb::RemoveRequest { name }).await,
    }
    .map_err(refusal)?
    .into_inner();
    if json {
        print_json(&json!({ "voters": membership.voters, "learners": membership.learners }));
    } else {
        println!(
            "voters: {}\nlearners: {}",
            membership.voters.join(", "),
            or_dash(&membership.learners.join(", "))
        );
    }
    Ok(())
}

fn print_status(status: &pb::StatusResponse, json: bool) {
    if json {
        let members: Vec<Value> = status
            .members
            .iter()
            .map(|m| json!({ "id": m.id, "name": m.name, "address": m.address, "role": m.role, "matched_index": m.matched_index, "lag": m.lag }))
            .collect();
        print_json(&json!({
            "node_id": status.node_id, "node_name": status.node_name, "state": status.state, "leader_id": status.leader_id,
            "term": status.term, "last_log_index": status.last_log_index, "last_applied_index": status.last_applied_index, "members": members,
            "state_digest": status.state_digest, "digest_index": status.digest_index,
        }));
        return;
    }
    let leader = status
        .members
        .iter()
        .find(|m| m.id == status.leader_id)
        .map_or("none".to_owned(), |m| m.name.clone());
    println!(
        "node {} ({}): {}, term {}, leader {leader}, last log {}, applied {}",
        status.node_name, status.node_id, status.state, status.term, status.last_log_index, status.last_applied_index
    );
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.id.to_string(),
                m.address.clone(),
                m.role.clone(),
                m.matched_index.to_string(),
                m.lag.to_string(),
            ]
        })
        .collect();
    table::print(&["NAME", "ID", "ADDRESS", "ROLE", "MATCHED", "LAG"], &rows);
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// The date part of an RFC 3339 instant, for narrow table columns.
fn day(value: &Value) -> String {
    text(value).split('T').next().unwrap_or("-").to_owned()
}

fn print_report(report: &Value) {
    println!(
        "tenant {}: paused until {}, {} pause days remain this year",
        text(&report["tenant"]),
        text(&report["paused_until"]),
        text(&report["pause_days_remaining"])
    );
    let empty = Vec::new();
    let servers = report["servers"].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let totals = ["accepted", "throttled", "blocked"].map(|kind| {
                s["counters"]
                    .as_object()
                    .map_or(0, |stages| stages.values().map(|c| c[kind].as_u64().unwrap_or(0)).sum::<u64>())
            });
            let rates = |throttle: &Value, block: &Value| format!("{}/{}", text(throttle), text(block));
            vec![
                text(&s["server_fqdn"]),
                text(&s["build"]),
                text(&s["product"]),
                text(&s["status"]),
                day(&s["first_detected_date"]),
                text(&s["stage"]),
                rates(&s["current_throttle_rate"], &s["current_block_rate"]),
                day(&s["throttle_enabled_date"]),
                day(&s["blocking_enabled_date"]),
                day(&s["next_stage_start_date"]),
                rates(&s["next_stage_throttle_rate"], &s["next_stage_block_rate"]),
                text(&s["recommended_build_versions"]),
                text(&s["last_seen"]),
                format!("{}/{}/{}", totals[0], totals[1], totals[2]),
            ]
        })
        .collect();
    table::print(
        &[
            "SERVER",
            "BUILD",
            "PRODUCT",
            "STATUS",
            "FIRST DETECTED",
            "STAGE",
            "THR/BLK MIN",
            "THROTTLE FROM",
            "BLOCK FROM",
            "NEXT STAGE",
            "NEXT THR/BLK",
            "RECOMMENDED",
            "LAST SEEN",
            "ACC/THR/BLK",
        ],
        &rows,
    );
}
