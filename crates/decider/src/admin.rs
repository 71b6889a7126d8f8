//! The admin API: tenants, connectors, servers, pauses and the policy, for `ratchet ctl`
//! and the report page. Writes go through the proposer (any node). Reads are answered
//! from this node's applied state after a read barrier, so an operator always sees the
//! writes acknowledged before, whichever node answers; this API is not on the hot path.

use std::pin::Pin;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::Stream;
use ipnet::IpNet;
use ratchet_policy::{Policy, TenantMode, Timestamp};
use ratchet_proto::limits::{
    DEFAULT_AUDIT_PAGE_SIZE, DEFAULT_EVENTS_PAGE_SIZE, DEFAULT_REPORT_PAGE_SIZE, MAX_AUDIT_PAGE_SIZE, MAX_EVENTS_PAGE_SIZE,
    MAX_REPORT_PAGE_SIZE,
};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_server::Admin;
use ratchet_store::{Applied, Command, PageStart};
use tonic::{Request, Response, Status};

use crate::authorize::actor_of;
use crate::page_token::{self, page_size, Listing};
use crate::proposer::Proposer;
use crate::report::tenant_report_page;

pub struct AdminService {
    pub proposer: Proposer,
}

/// The size of one chunk of a streamed backup.
const CHUNK_BYTES: usize = 1 << 20;

/// Cuts what a backup writes into chunks for the gRPC stream; fails the write (ending the
/// backup) once the caller has gone.
struct ChunkWriter {
    chunks: tokio::sync::mpsc::Sender<Result<pb::SnapshotChunk, Status>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.chunks
            .blocking_send(Ok(pb::SnapshotChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the caller went away"))
    }

    fn finish(mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn rfc3339(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An instant to the millisecond: a scheduled policy's time, which may not fall on a second.
pub fn precise_rfc3339(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_instant(field: &str, text: &str) -> Result<Timestamp, Status> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| Status::invalid_argument(format!("{field}: {text:?} is not an RFC 3339 instant: {e}")))
}

/// A connector's source range; none (empty) for a certificate-only connector.
fn parse_cidr(text: &str) -> Result<Option<IpNet>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse::<IpNet>()
        .map(|net| Some(net.trunc()))
        .map_err(|_| Status::invalid_argument(format!("cidr: {text:?} is not an address range like 203.0.113.0/24")))
}

/// A connector's claim as a request gives it: a range, a certificate name, or both.
fn connector_claim(cidr: &str, cert_name: &str) -> Result<(Option<IpNet>, Option<String>), Status> {
    let cert_name = Some(cert_name.trim().to_owned()).filter(|name| !name.is_empty());
    Ok((parse_cidr(cidr)?, cert_name))
}

fn unexpected(applied: Applied) -> Status {
    Status::internal(format!("unexpected apply result {applied:?}"))
}

/// Tenant names and server FQDNs are keys in lower case; operators may type them in any.
fn key(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// The wire form of a connector, for the admin and decision APIs alike.
pub fn connector_message(connector: &ratchet_store::Connector) -> pb::Connector {
    pb::Connector {
        tenant: connector.tenant.clone(),
        cidr: connector.cidr.map(|cidr| cidr.to_string()).unwrap_or_default(),
        cert_name: connector.cert_name.clone().unwrap_or_default(),
    }
}

impl AdminService {
    /// A tenant as of every write acknowledged before this call.
    async fn read_tenant(&self, name: &str) -> Result<ratchet_store::Tenant, Status> {
        self.proposer.read_barrier().await?;
        let name = key(name);
        self.proposer
            .view
            .tenant(&name)
            .ok_or_else(|| Status::not_found(format!("tenant: no tenant named {name:?}")))
    }

    /// The pause budget of the policy in force now.
    fn budget_days(&self) -> u32 {
        self.proposer.view.policies().at(self.proposer.now()).policy.pause_budget_days
    }

    fn remaining_days(&self, tenant: &ratchet_store::Tenant) -> u32 {
        tenant.pauses.remaining_days(self.budget_days(), self.proposer.now())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_tenant(&self, request: Request<pb::AddTenantRequest>) -> Result<Response<pb::AddTenantResponse>, Status> {
        let actor = actor_of(&request);
        let name = key(&request.into_inner().name);
        match self.proposer.propose_as(actor, Command::AddTenant { name }).await? {
            Applied::TenantAdded { created } => Ok(Response::new(pb::AddTenantResponse { created })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_tenants(&self, _request: Request<pb::ListTenantsRequest>) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.proposer.read_barrier().await?;
        let view = &self.proposer.view;
        let now = self.proposer.now();
        let mut tenants = Vec::new();
        for tenant in view.tenants().values() {
            let servers = view.servers(&tenant.name).map_err(|e| Status::internal(e.to_string()))?.len() as u32;
            tenants.push(pb::TenantSummary {
                name: tenant.name.clone(),
                servers,
                connectors: tenant.connectors.len() as u32,
                paused_until_unix_ms: tenant.pauses.paused_until(now).map_or(0, |at| at.timestamp_millis()),
                mode: tenant.mode.to_string(),
            });
        }
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn set_tenant_mode(&self, request: Request<pb::SetTenantModeRequest>) -> Result<Response<pb::SetTenantModeResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let mode: TenantMode = request
            .mode
            .trim()
            .parse()
            .map_err(|unknown| Status::invalid_argument(format!("mode: {unknown}")))?;
        let tenant = key(&request.tenant);
        self.proposer
            .propose_as(
                actor,
                Command::SetTenantMode {
                    tenant: tenant.clone(),
                    mode,
                },
            )
            .await?;
        Ok(Response::new(pb::SetTenantModeResponse {
            tenant,
            mode: mode.to_string(),
        }))
    }
    async fn remove_tenant(&self, request: Request<pb::RemoveTenantRequest>) -> Result<Response<pb::RemoveTenantResponse>, Status> {
        let actor = actor_of(&request);
        let tenant = key(&request.into_inner().tenant);
        match self.proposer.propose_as(actor, Command::RemoveTenant { tenant }).await? {
            Applied::TenantRemoved => Ok(Response::new(pb::RemoveTenantResponse {})),
            other => Err(unexpected(other)),
        }
    }

    async fn add_connector(&self, request: Request<pb::AddConnectorRequest>) -> Result<Response<pb::AddConnectorResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let (cidr, cert_name) = connector_claim(&request.cidr, &request.cert_name)?;
        let command = Command::AddConnector {
            tenant: key(&request.tenant),
            cidr,
            cert_name,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::ConnectorAdded { created } => Ok(Response::new(pb::AddConnectorResponse { created })),
            other => Err(unexpected(other)),
        }
    }

    async fn remove_connector(
        &self,
        request: Request<pb::RemoveConnectorRequest>,
    ) -> Result<Response<pb::RemoveConnectorResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let (cidr, cert_name) = connector_claim(&request.cidr, &request.cert_name)?;
        let command = Command::RemoveConnector {
            tenant: key(&request.tenant),
            cidr,
            cert_name,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::ConnectorRemoved => Ok(Response::new(pb::RemoveConnectorResponse {})),
            other => Err(unexpected(other)),
        }
    }

    async fn list_connectors(&self, request: Request<pb::ListConnectorsRequest>) -> Result<Response<pb::ListConnectorsResponse>, Status> {
        let tenant = self.read_tenant(&request.into_inner().tenant).await?;
        let connectors = tenant.connectors.iter().map(connector_message).collect();
        Ok(Response::new(pb::ListConnectorsResponse { connectors }))
    }

    async fn import_server(&self, request: Request<pb::ImportServerRequest>) -> Result<Response<pb::ImportServerResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let first_seen = parse_instant("first_seen", &request.first_seen)?;
        let command = Command::ImportServer {
            tenant: key(&request.tenant),
            server_fqdn: key(&request.server_fqdn),
            build: request.build.trim().to_owned(),
            first_seen,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::Server { entry } => {
                let first_seen = entry.record.episode.map(|e| rfc3339(e.first_seen)).unwrap_or_default();
                Ok(Response::new(pb::ImportServerResponse {
                    first_seen,
                    server_fqdn: entry.record.server_fqdn,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn decommission_server(
        &self,
        request: Request<pb::DecommissionServerRequest>,
    ) -> Result<Response<pb::DecommissionServerResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let command = Command::Decommission {
            tenant: key(&request.tenant),
            server_fqdn: key(&request.server_fqdn),
        };
        self.proposer.propose_as(actor, command).await?;
        Ok(Response::new(pb::DecommissionServerResponse { removed: true }))
    }

    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let request = request.into_inner();
        let tenant = key(&request.tenant);
        let limit = page_size(request.page_size, DEFAULT_REPORT_PAGE_SIZE, MAX_REPORT_PAGE_SIZE)?;
        let start = page_token::redeem(Listing::Report, &tenant, &request.page_token)?;
        self.proposer.read_barrier().await?;
        let page = tenant_report_page(&self.proposer.view, &tenant, self.proposer.now(), &start, limit)?;
        let report_json = serde_json::to_string(&page.report).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ReportResponse {
            report_json,
            next_page_token: page.next_page_token.unwrap_or_default(),
            previous_page_token: page.previous_page_token.unwrap_or_default(),
        }))
    }

    async fn pause(&self, request: Request<pb::PauseRequest>) -> Result<Response<pb::PauseResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        // Every pause carries a request id, so that no retry can charge it twice.
        let request_id = Some(request.request_id)
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        let command = Command::Pause {
            tenant: key(&request.tenant),
            days: request.days,
            servers: request.servers.iter().map(|s| key(s)).collect(),
            request_id: Some(request_id),
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::Paused { grant } => Ok(Response::new(pb::PauseResponse {
                days: grant.days,
                paused_from: rfc3339(grant.paused_from),
                paused_until: rfc3339(grant.paused_until),
                remaining_days: grant.remaining_days,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn end_pause(&self, request: Request<pb::EndPauseRequest>) -> Result<Response<pb::EndPauseResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let command = Command::EndPause {
            tenant: key(&request.tenant),
            server: Some(key(&request.server)).filter(|s| !s.is_empty()),
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::PauseEnded {
                ended_at,
                refunded_days,
                remaining_days,
            } => Ok(Response::new(pb::EndPauseResponse {
                ended_at: rfc3339(ended_at),
                refunded_days,
                remaining_days,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_pauses(&self, request: Request<pb::ListPausesRequest>) -> Result<Response<pb::ListPausesResponse>, Status> {
        let tenant = self.read_tenant(&request.into_inner().tenant).await?;
        let now = self.proposer.now();
        let pauses = tenant
            .pauses
            .pauses()
            .iter()
            .map(|p| pb::PauseEntry {
                start: rfc3339(p.start),
                end: rfc3339(p.end),
                ended_early: p.ended_early,
                days_charged: p.days_charged(),
                active: p.interval().contains(now),
                server: p.server.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListPausesResponse {
            pauses,
            remaining_days: self.remaining_days(&tenant),
            paused_until: tenant.pauses.paused_until(now).map(rfc3339).unwrap_or_default(),
        }))
    }

    async fn get_policy(&self, _request: Request<pb::GetPolicyRequest>) -> Result<Response<pb::GetPolicyResponse>, Status> {
        self.proposer.read_barrier().await?;
        let now = self.proposer.now();
        let policies = self.proposer.view.policies();
        let in_force = policies.at(now);
        let pending = policies.pending.as_ref().filter(|_| policies.next_change_after(now).is_some());
        Ok(Response::new(pb::GetPolicyResponse {
            policy_toml: in_force.policy.to_toml(),
            version: in_force.version,
            pending_policy_toml: pending.map(|p| p.policy.to_toml()).unwrap_or_default(),
            pending_version: pending.map_or(0, |p| p.version),
            pending_effective_at: pending.and_then(|p| p.effective_at).map(precise_rfc3339).unwrap_or_default(),
        }))
    }

    async fn set_policy(&self, request: Request<pb::SetPolicyRequest>) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let policy = Policy::from_toml(&request.policy_toml).map_err(|e| Status::invalid_argument(format!("policy: {e}")))?;
        let effective_at = match request.effective_at.trim() {
            "" => None,
            text => Some(parse_instant("effective_at", text)?),
        };
        let now = self.proposer.now();
        if let Some(effective_at) = effective_at.filter(|t| *t <= now) {
            return Err(Status::invalid_argument(format!(
                "effective_at: {} is not in the future (it is {} now)",
                precise_rfc3339(effective_at),
                precise_rfc3339(now)
            )));
        }
        let command = Command::SetPolicy {
            policy: Box::new(policy),
            effective_at,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::PolicySet { version, effective_at } => Ok(Response::new(pb::SetPolicyResponse {
                version,
                effective_at: effective_at.map(precise_rfc3339).unwrap_or_default(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn set_webhook(&self, request: Request<pb::SetWebhookRequest>) -> Result<Response<pb::SetWebhookResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let url = Some(request.url.trim().to_owned()).filter(|url| !url.is_empty());
        // A new key with every url: setting the webhook again rotates it.
        let secret = url
            .as_ref()
            .map(|_| format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>()));
        self.proposer
            .propose_as(
                actor,
                Command::SetWebhook {
                    tenant: key(&request.tenant),
                    url,
                    secret: secret.clone(),
                },
            )
            .await?;
        Ok(Response::new(pb::SetWebhookResponse {
            secret: secret.unwrap_or_default(),
        }))
    }

    async fn list_events(&self, request: Request<pb::ListEventsRequest>) -> Result<Response<pb::ListEventsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size, DEFAULT_EVENTS_PAGE_SIZE, MAX_EVENTS_PAGE_SIZE)?;
        let start = page_token::redeem(Listing::Events, &key(&request.tenant), &request.page_token)?;
        let tenant = self.read_tenant(&request.tenant).await?;
        let page = self
            .proposer
            .view
            .events_page(&tenant.name, &start, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        let next_page_token = match page.items.last() {
            Some((key, _)) if page.has_next => page_token::issue(Listing::Events, &tenant.name, &PageStart::After(key.clone())),
            _ => String::new(),
        };
        let events = page
            .items
            .iter()
            .map(|(_, e)| pb::Event {
                id: e.id.clone(),
                at: rfc3339(e.at),
                kind: serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                server_fqdn: e.server_fqdn.clone().unwrap_or_default(),
                message: e.message.clone(),
                delivered: e.delivered,
            })
            .collect();
        Ok(Response::new(pb::ListEventsResponse {
            events,
            webhook_url: tenant.webhook_url.unwrap_or_default(),
            next_page_token,
        }))
    }

    type SaveSnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

    /// Streams a backup of the state as of every write acknowledged before the call.
    async fn save_snapshot(&self, request: Request<pb::SaveSnapshotRequest>) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let actor = actor_of(&request);
        self.proposer.read_barrier().await?;
        let (chunks, stream) = tokio::sync::mpsc::channel(4);
        let view = self.proposer.view.clone();
        let written = tokio::task::spawn_blocking(move || {
            let out = ChunkWriter {
                chunks: chunks.clone(),
                buffer: Vec::with_capacity(CHUNK_BYTES),
            };
            let written = view.backup(out).map_err(|e| e.to_string());
            match written.and_then(|(meta, out)| out.finish().map(|()| meta).map_err(|e| e.to_string())) {
                Ok(meta) => Ok(meta),
                Err(error) => {
                    let _ = chunks.blocking_send(Err(Status::internal(format!("snapshot: {error}"))));
                    Err(error)
                }
            }
        });
        let proposer = self.proposer.clone();
        tokio::spawn(async move {
            let outcome = match written.await {
                Ok(Ok(meta)) => format!("ok: {} at {:?}", meta.snapshot_id, meta.last_log_id.map(|id| id.index)),
                Ok(Err(error)) => format!("failed: {error}"),
                Err(error) => format!("failed: {error}"),
            };
            let note = Command::Audit {
                action: "snapshot save".into(),
                tenant: None,
                outcome,
            };
            if let Err(error) = proposer.propose_as(actor, note).await {
                tracing::warn!(%error, "a snapshot save could not be recorded in the audit trail");
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(stream))))
    }

    async fn list_audit(&self, request: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size, DEFAULT_AUDIT_PAGE_SIZE, MAX_AUDIT_PAGE_SIZE)?;
        let tenant = key(&request.tenant);
        let start = page_token::redeem(Listing::Audit, &tenant, &request.page_token)?;
        self.proposer.read_barrier().await?;
        let since = (request.since_unix_ms != 0)
            .then(|| DateTime::<Utc>::from_timestamp_millis(request.since_unix_ms))
            .flatten();
        let page = self
            .proposer
            .view
            .audit_page(Some(tenant.as_str()).filter(|t| !t.is_empty()), since, &start, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        let next_page_token = match page.items.last() {
            Some((key, _)) if page.has_next => page_token::issue(Listing::Audit, &tenant, &PageStart::After(key.clone())),
            _ => String::new(),
        };
        let entries = page
            .items
            .into_iter()
            .map(|(_, record)| pb::AuditEntry {
                index: record.index,
                at_unix_ms: record.at.timestamp_millis(),
                actor: record.actor,
                action: record.action,
                tenant: record.tenant.unwrap_or_default(),
                outcome: record.outcome,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries, next_page_token }))
    }
}
