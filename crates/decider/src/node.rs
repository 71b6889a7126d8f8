//! Starting one decider: identity, storage, Raft, the gRPC and HTTP listeners, the counter
//! flusher, and the founding of a new group from `--initial-cluster`.
//!
//! Founding is safe whichever member starts first: a founding member waits until it can
//! reach every member listed and learn its persisted id, and founds the group only if
//! none of them already belongs to one. Every member then proposes the same membership,
//! which openraft accepts as the same first log entry. A restarted node finds its group in
//! its own log and ignores `--initial-cluster`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ratchet_proto::v1 as pb;
use ratchet_store::types::Raft;
use ratchet_store::{LogStore, Node, NodeId, StateMachine, StateView, Store};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;

use crate::admin::AdminService;
use crate::clock::Clock;
use crate::cluster::ClusterService;
use crate::config::{DeciderConfig, MAX_RAFT_MESSAGE_BYTES};
use crate::counters::CounterBuffer;
use crate::decision::DecisionService;
use crate::http::HttpState;
use crate::identity::{load_or_create, Identity};
use crate::network::{raft_client, Network};
use crate::proposer::Proposer;
use crate::raft_service::RaftService;

const FOUNDING_RETRY: Duration = Duration::from_millis(300);

pub struct DeciderOptions {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the gRPC listener is already bound.
    pub grpc: TcpListener,
    /// The address other deciders reach this one at (its `--initial-cluster` entry).
    pub advertise: String,
    pub http: Option<TcpListener>,
    /// Founding members, name and address, this node included; empty on restart or join.
    pub initial_cluster: Vec<(String, String)>,
    pub config: DeciderConfig,
    pub clock: Clock,
}

/// A running decider. Dropping it stops its tasks.
pub struct Decider {
    pub identity: Identity,
    pub raft: Raft,
    pub view: StateView,
    pub proposer: Proposer,
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Decider {
    pub async fn start(options: DeciderOptions) -> anyhow::Result<Decider> {
        if !options.initial_cluster.is_empty() && !options.initial_cluster.iter().any(|(name, _)| *name == options.name) {
            anyhow::bail!("--initial-cluster does not list this node's --name {:?}", options.name);
        }
        let identity = load_or_create(&options.data_dir, &options.name)?;
        let db_path = options.data_dir.join("db");
        let store = Store::open(&db_path).with_context(|| format!("opening the store in {}", db_path.display()))?;
        let state_machine = StateMachine::open(store.clone()).context("loading the state machine")?;
        let view = state_machine.view();
        let raft_config = Arc::new(options.config.raft_config()?);
        let raft = Raft::new(identity.id, raft_config, Network, LogStore::new(store), state_machine)
            .await
            .context("starting raft")?;
        let proposer = Proposer {
            raft: raft.clone(),
            view: view.clone(),
            clock: options.clock,
            write_timeout: options.config.write_timeout(),
        };
        let counters = Arc::new(CounterBuffer::default());

        let grpc_addr = options.grpc.local_addr()?;
        let http_addr = options.http.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_grpc(
            options.grpc,
            raft.clone(),
            proposer.clone(),
            counters.clone(),
            identity.clone(),
        ));
        if let Some(listener) = options.http {
            let state = HttpState {
                raft: raft.clone(),
                view: view.clone(),
                clock: options.clock,
                proposer: proposer.clone(),
            };
            tasks.spawn(async move { Ok(crate::http::serve(listener, state).await?) });
        }
        let metrics_raft = raft.clone();
        let flush_every = Duration::from_millis(options.config.counter_flush_ms);
        let flusher = proposer.clone();
        tasks.spawn(async move {
            counters.run(flusher, flush_every).await;
            Ok(())
        });
        tasks.spawn(async move {
            crate::metrics::watch_raft(metrics_raft).await;
            Ok(())
        });
        let notifier = crate::notifications::Notifier::new(proposer.clone(), Duration::from_millis(options.config.notify_scan_ms))?;
        tasks.spawn(async move {
            notifier.run().await;
            Ok(())
        });
        if !options.initial_cluster.is_empty() && !raft.is_initialized().await? {
            let me = (
                identity.id,
                Node {
                    name: identity.name.clone(),
                    address: options.advertise.clone(),
                },
            );
            tasks.spawn(found_group(raft.clone(), me, options.initial_cluster));
        }
        tracing::info!(id = identity.id, name = %identity.name, grpc = %grpc_addr, "decider started");
        Ok(Decider {
            identity,
            raft,
            view,
            proposer,
            grpc_addr,
            http_addr,
            tasks,
        })
    }

    /// Runs until a task fails or the process is stopped.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(finished) = self.tasks.join_next().await {
            finished??;
        }
        Ok(())
    }
}

async fn serve_grpc(
    listener: TcpListener,
    raft: Raft,
    proposer: Proposer,
    counters: Arc<CounterBuffer>,
    identity: Identity,
) -> anyhow::Result<()> {
    use pb::{admin_server::AdminServer, cluster_server::ClusterServer, decision_server::DecisionServer, raft_server::RaftServer};
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<DecisionServer<DecisionService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let raft_service = RaftService {
        raft: raft.clone(),
        proposer: proposer.clone(),
        identity: identity.clone(),
    };
    tonic::transport::Server::builder()
        .trace_fn(grpc_span)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(DecisionServer::new(DecisionService {
            proposer: proposer.clone(),
            counters,
        }))
        .add_service(AdminServer::new(AdminService { proposer }))
        .add_service(ClusterServer::new(ClusterService {
            raft: raft.clone(),
            identity,
        }))
        .add_service(
            RaftServer::new(raft_service)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        )
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// The span of one incoming gRPC call, child of the trace context the caller sent (W3C
/// `traceparent` in the metadata). Only calls that are part of a request's path get one:
/// Decide, Forward and the admin API; Raft's own traffic (heartbeats, replication) and
/// health checks run without, so they add neither cost nor noise.
fn grpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let traced =
        path.starts_with("/ratchet.v1.Decision/Decide") || path == "/ratchet.v1.Raft/Forward" || path.starts_with("/ratchet.v1.Admin/");
    if !traced {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc"
    );
    ratchet_proto::trace_context::set_parent_from_headers(&span, request.headers());
    span
}

/// Learns every founding member's id, then founds the group unless one already exists.
async fn found_group(raft: Raft, me: (NodeId, Node), initial_cluster: Vec<(String, String)>) -> anyhow::Result<()> {
    let members = loop {
        match identify_members(&me, &initial_cluster).await {
            Ok(Some(members)) => break members,
            Ok(None) => {
                tracing::warn!("a founding member already belongs to a group: not founding another; join this node with `ratchet ctl cluster add-learner`");
                return Ok(());
            }
            Err(waiting_for) => {
                tracing::info!(%waiting_for, "waiting for founding members");
                tokio::time::sleep(FOUNDING_RETRY).await;
            }
        }
        if raft.is_initialized().await? {
            return Ok(());
        }
    };
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("founded the group"),
        Err(error) => tracing::info!(%error, "group already founded"),
    }
    Ok(())
}

/// Every founding member's id, `None` if one already belongs to a group, or the name of
/// a member that cannot be reached yet.
async fn identify_members(me: &(NodeId, Node), initial_cluster: &[(String, String)]) -> Result<Option<BTreeMap<NodeId, Node>>, String> {
    let mut members = BTreeMap::from([me.clone()]);
    for (name, address) in initial_cluster.iter().filter(|(name, _)| *name != me.1.name) {
        let mut client = raft_client(address).map_err(|e| format!("{name} ({e})"))?;
        let reply = tokio::time::timeout(Duration::from_secs(1), client.identify(pb::IdentifyRequest {}))
            .await
            .map_err(|_| format!("{name} at {address} (timed out)"))?
            .map_err(|status| format!("{name} at {address} ({})", status.message()))?
            .into_inner();
        if reply.name != *name {
            return Err(format!("{name}: the node at {address} calls itself {:?}", reply.name));
        }
        if reply.initialized {
            return Ok(None);
        }
        members.insert(
            reply.id,
            Node {
                name: name.clone(),
                address: address.clone(),
            },
        );
    }
    Ok(Some(members))
}
