//! The admin API: tenants, connectors, servers, pauses and the policy, for `ratchet ctl`
//! and the report page. Writes go through the proposer (any node). Reads are answered
//! from this node's applied state after a read barrier, so an operator always sees the
//! writes acknowledged before, whichever node answers; this API is not on the hot path.

use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::Stream;
use ratchet_policy::{Policy, TenantMode};
use ratchet_proto::limits::{
    DEFAULT_AUDIT_PAGE_SIZE, DEFAULT_EVENTS_PAGE_SIZE, DEFAULT_REPORT_PAGE_SIZE, MAX_AUDIT_PAGE_SIZE, MAX_EVENTS_PAGE_SIZE,
    MAX_REPORT_PAGE_SIZE,
};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_server::Admin;
use ratchet_store::{Applied, Command, PageStart};
use tonic::{Request, Response, Status};

use crate::authorize::actor_of;
use crate::convert::{self, key};
use crate::error::Error;
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

/// What apply returned for a command it answers otherwise: a fault of this node's.
fn unexpected(applied: Applied) -> Error {
    Error::internal(format!("unexpected apply result {applied:?}"))
}

impl AdminService {
    /// A tenant as of every write acknowledged before this call.
    async fn read_tenant(&self, name: &str) -> Result<ratchet_store::Tenant, Error> {
        self.proposer.read_barrier().await?;
        let name = key(name);
        self.proposer.view.tenant(&name).ok_or_else(|| Error::unknown_tenant(&name))
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
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_tenants(&self, _request: Request<pb::ListTenantsRequest>) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.proposer.read_barrier().await?;
        let view = &self.proposer.view;
        let now = self.proposer.now();
        let mut tenants = Vec::new();
        for tenant in view.tenants().values() {
            let servers = view.servers(&tenant.name).map_err(Error::from)?.len();
            tenants.push(convert::tenant_summary(tenant, servers, now));
        }
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn set_tenant_mode(&self, request: Request<pb::SetTenantModeRequest>) -> Result<Response<pb::SetTenantModeResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let mode: TenantMode = request.mode.trim().parse().map_err(|unknown| Error::bad_field("mode", unknown))?;
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
            other => Err(unexpected(other).into()),
        }
    }

    async fn add_connector(&self, request: Request<pb::AddConnectorRequest>) -> Result<Response<pb::AddConnectorResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let (cidr, cert_name) = convert::connector_claim(&request.cidr, &request.cert_name)?;
        let command = Command::AddConnector {
            tenant: key(&request.tenant),
            cidr,
            cert_name,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::ConnectorAdded { created } => Ok(Response::new(pb::AddConnectorResponse { created })),
            other => Err(unexpected(other).into()),
        }
    }

    async fn remove_connector(
        &self,
        request: Request<pb::RemoveConnectorRequest>,
    ) -> Result<Response<pb::RemoveConnectorResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let (cidr, cert_name) = convert::connector_claim(&request.cidr, &request.cert_name)?;
        let command = Command::RemoveConnector {
            tenant: key(&request.tenant),
            cidr,
            cert_name,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::ConnectorRemoved => Ok(Response::new(pb::RemoveConnectorResponse {})),
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_connectors(&self, request: Request<pb::ListConnectorsRequest>) -> Result<Response<pb::ListConnectorsResponse>, Status> {
        let tenant = self.read_tenant(&request.into_inner().tenant).await?;
        let connectors = tenant.connectors.iter().map(convert::connector).collect();
        Ok(Response::new(pb::ListConnectorsResponse { connectors }))
    }

    async fn import_server(&self, request: Request<pb::ImportServerRequest>) -> Result<Response<pb::ImportServerResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let first_seen = convert::instant("first_seen", &request.first_seen)?;
        let command = Command::ImportServer {
            tenant: key(&request.tenant),
            server_fqdn: key(&request.server_fqdn),
            build: request.build.trim().to_owned(),
            first_seen,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::Server { entry } => Ok(Response::new(convert::imported(*entry))),
            other => Err(unexpected(other).into()),
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
        Ok(Response::new(convert::report(page)?))
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
            Applied::Paused { grant } => Ok(Response::new(convert::pause_granted(grant))),
            other => Err(unexpected(other).into()),
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
            } => Ok(Response::new(convert::pause_ended(ended_at, refunded_days, remaining_days))),
            other => Err(unexpected(other).into()),
        }
    }

    async fn list_pauses(&self, request: Request<pb::ListPausesRequest>) -> Result<Response<pb::ListPausesResponse>, Status> {
        let tenant = self.read_tenant(&request.into_inner().tenant).await?;
        let remaining_days = self.remaining_days(&tenant);
        Ok(Response::new(convert::pauses(&tenant, remaining_days, self.proposer.now())))
    }

    async fn get_policy(&self, _request: Request<pb::GetPolicyRequest>) -> Result<Response<pb::GetPolicyResponse>, Status> {
        self.proposer.read_barrier().await?;
        let policies = self.proposer.view.policies();
        Ok(Response::new(convert::policies(&policies, self.proposer.now())))
    }

    async fn set_policy(&self, request: Request<pb::SetPolicyRequest>) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let policy = Policy::from_toml(&request.policy_toml).map_err(|e| Error::bad_field("policy", e))?;
        let effective_at = match request.effective_at.trim() {
            "" => None,
            text => Some(convert::instant("effective_at", text)?),
        };
        let now = self.proposer.now();
        if let Some(effective_at) = effective_at.filter(|t| *t <= now) {
            let problem = format!(
                "{} is not in the future (it is {} now)",
                convert::precise_rfc3339(effective_at),
                convert::precise_rfc3339(now)
            );
            return Err(Error::bad_field("effective_at", problem).into());
        }
        let command = Command::SetPolicy {
            policy: Box::new(policy),
            effective_at,
        };
        match self.proposer.propose_as(actor, command).await? {
            Applied::PolicySet { version, effective_at } => Ok(Response::new(convert::policy_set(version, effective_at))),
            other => Err(unexpected(other).into()),
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
        let page = self.proposer.view.events_page(&tenant.name, &start, limit).map_err(Error::from)?;
        let next_page_token = match page.items.last() {
            Some((key, _)) if page.has_next => page_token::issue(Listing::Events, &tenant.name, &PageStart::After(key.clone())),
            _ => String::new(),
        };
        Ok(Response::new(convert::events(page, &tenant, next_page_token)))
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
                    let _ = chunks.blocking_send(Err(Error::Internal(format!("snapshot: {error}")).into()));
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
            .map_err(Error::from)?;
        let next_page_token = match page.items.last() {
            Some((key, _)) if page.has_next => page_token::issue(Listing::Audit, &tenant, &PageStart::After(key.clone())),
            _ => String::new(),
        };
        Ok(Response::new(convert::audit(page, next_page_token)))
    }
}
