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
use ratchet_proto::limits::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES};
use ratchet_proto::v1 as pb;
use ratchet_store::types::Raft;
use ratchet_store::{LogStore, Node, NodeId, StateMachine, StateView, Store};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;

use ratchet_tls::{Dialer, Role, TlsFiles, TlsIncoming, Watched};

use crate::admin::AdminService;
use crate::authorize::AuthorizeLayer;
use crate::clock::Clock;
use crate::cluster::ClusterService;
use crate::config::{DeciderConfig, MAX_RAFT_MESSAGE_BYTES};
use crate::decision::DecisionService;
use crate::freshness::Freshness;
use crate::http_state::HttpState;
use crate::identity::{load_or_create, Identity};
use crate::network::Network;
use crate::peers::Peers;
use crate::proposer::Proposer;
use crate::raft_service::RaftService;
use crate::sightings::SightingQueue;
use crate::skew::SkewCheck;

const FOUNDING_RETRY: Duration = Duration::from_millis(300);
/// How long a stopping node lets Decide calls already answering finish.
const IN_FLIGHT_DECIDES: Duration = Duration::from_millis(100);

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
    /// This node's certificate (role peer), its key and the cluster CA: every gRPC caller
    /// must then present a certificate of that CA. `None`: plaintext (loopback, or
    /// `--insecure`; the command line decides).
    pub tls: Option<TlsFiles>,
}

/// A running decider. Dropping it stops its tasks.
pub struct Decider {
    pub identity: Identity,
    pub raft: Raft,
    pub view: StateView,
    pub proposer: Proposer,
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    sightings: Arc<SightingQueue>,
    tasks: JoinSet<anyhow::Result<()>>,
    /// Tells the gRPC server to stop taking calls and close its connections (each holds the
    /// services, and through them Raft and the store).
    stop_serving: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Decider {
    pub async fn start(options: DeciderOptions) -> anyhow::Result<Decider> {
        if !options.initial_cluster.is_empty() && !options.initial_cluster.iter().any(|(name, _)| *name == options.name) {
            anyhow::bail!("--initial-cluster does not list this node's --name {:?}", options.name);
        }
        let identity = load_or_create(&options.data_dir, &options.name)?;
        let db_path = options.data_dir.join("db");
        let store = Store::open(&db_path, options.config.storage_options())
            .with_context(|| format!("opening the store in {}", db_path.display()))?;
        let state_machine = StateMachine::open(store.clone(), &options.data_dir.join("snapshots"))
            .context("loading the state machine")?
            .observed_by(crate::metrics::metrics());
        let view = state_machine.view();
        if options.config.counter_flush_ms.is_some() {
            tracing::warn!("counter_flush_ms is ignored: edges count messages now (their count_flush_ms)");
        }
        let raft_config = Arc::new(options.config.raft_config()?);
        let peers = Peers::new(Dialer::new(options.tls.as_ref(), Some(Role::Peer))?);
        let grpc_tls = options.tls.as_ref().map(|files| tls_config(files, &[b"h2"])).transpose()?;
        let http_tls = options.tls.as_ref().map(|files| tls_config(files, &[b"http/1.1"])).transpose()?;
        let network = Network { peers: peers.clone() };
        let log_store = LogStore::new(store).observed_by(crate::metrics::metrics());
        let raft = Raft::new(identity.id, raft_config, network, log_store, state_machine)
            .await
            .context("starting raft")?;
        // No election until this node's clock has been compared with the group's (`skew`).
        raft.runtime_config().elect(false);
        let freshness = Freshness::new(options.config.max_staleness());
        let proposer = Proposer {
            raft: raft.clone(),
            view: view.clone(),
            peers: peers.clone(),
            clock: options.clock,
            freshness: freshness.clone(),
            write_timeout: options.config.write_timeout(),
            gate: Arc::default(),
        };
        let sightings = Arc::new(SightingQueue::new(options.config.sightings_queue));

        let grpc_addr = options.grpc.local_addr()?;
        let http_addr = options.http.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut tasks = JoinSet::new();
        let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel();
        tasks.spawn(serve_grpc(
            options.grpc,
            serving_stopped,
            proposer.clone(),
            DecisionService {
                proposer: proposer.clone(),
                sightings: sightings.clone(),
                freshness: freshness.clone(),
            },
            identity.clone(),
            grpc_tls.clone(),
        ));
        if let Some(watched) = grpc_tls {
            tasks.spawn(async move {
                ratchet_tls::files::keep_checking(watched).await;
                Ok(())
            });
        }
        if let Some(listener) = options.http {
            let state = HttpState {
                raft: raft.clone(),
                view: view.clone(),
                clock: options.clock,
                proposer: proposer.clone(),
                freshness: freshness.clone(),
            };
            tasks.spawn(async move { Ok(crate::http::serve(listener, state, http_tls).await?) });
        }
        let metrics_raft = raft.clone();
        let (committer, queue) = (proposer.clone(), sightings.clone());
        tasks.spawn(async move {
            queue.run(committer).await;
            Ok(())
        });
        let skew = SkewCheck {
            raft: raft.clone(),
            peers: peers.clone(),
            clock: options.clock,
            freshness: freshness.clone(),
            max_skew: options.config.max_clock_skew(),
        };
        tasks.spawn(async move {
            skew.run().await;
            Ok(())
        });
        tasks.spawn(stop_when_raft_stops(raft.clone()));
        tasks.spawn(async move {
            crate::metrics::watch_raft(metrics_raft).await;
            Ok(())
        });
        let notifier = crate::notifications::Notifier::new(
            proposer.clone(),
            Duration::from_millis(options.config.notify_scan_ms),
            options.config.webhook_allow_private,
        )?;
        tasks.spawn(async move {
            notifier.run().await;
            Ok(())
        });
        let sweeper = crate::retention::Sweeper {
            proposer: proposer.clone(),
            every: Duration::from_millis(options.config.sweep_every_ms),
        };
        tasks.spawn(async move {
            sweeper.run().await;
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
            tasks.spawn(found_group(raft.clone(), peers.clone(), me, options.initial_cluster));
        }
        tracing::info!(id = identity.id, name = %identity.name, grpc = %grpc_addr, "decider started");
        Ok(Decider {
            identity,
            raft,
            view,
            proposer,
            grpc_addr,
            http_addr,
            sightings,
            tasks,
            stop_serving: Some(stop_serving),
        })
    }

    /// Runs until a task fails (Raft stopping among them) or `stop` completes, then
    /// commits what this node still holds (queued sightings) and stops Raft.
    pub async fn run_until(mut self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            outcome = join_all(&mut self.tasks) => outcome,
            () = stop => Ok(()),
        };
        self.stop().await;
        outcome
    }

    /// Stops answering (clients go to another node), hands leadership over if this node
    /// leads, commits what only this node holds, within the write timeout, stops Raft, and
    /// closes the gRPC server's connections.
    async fn stop(&mut self) {
        self.proposer.freshness.stop_answering();
        // A Decide that was already past its freshness check may still queue a sighting,
        // without waiting on anything: this is ample time for it to finish before the
        // final flush.
        tokio::time::sleep(IN_FLIGHT_DECIDES).await;
        match crate::handover::hand_over(&self.proposer, self.proposer.write_timeout).await {
            Ok(to) => tracing::info!(to, "handed leadership over"),
            Err(reason) => tracing::info!(%reason, "stopping without a hand-over"),
        }
        let flushed = tokio::time::timeout(self.proposer.write_timeout, self.sightings.flush(&self.proposer));
        if flushed.await.is_err() {
            tracing::warn!("stopping without committing every queued sighting: the group did not answer in time");
        }
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "stopping raft");
        }
        if let Some(stop_serving) = self.stop_serving.take() {
            let _ = stop_serving.send(());
        }
    }
}

async fn join_all(tasks: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    while let Some(finished) = tasks.join_next().await {
        finished??;
    }
    Ok(())
}

/// Ends (with an error, so the process exits and is restarted) once Raft has stopped on
/// its own: a storage fault, a corrupt record, an apply that failed. Such a node must not
/// linger, serving nothing but looking alive.
async fn stop_when_raft_stops(raft: Raft) -> anyhow::Result<()> {
    let mut metrics = raft.metrics();
    let stopped = metrics.wait_for(|m| m.running_state.is_err()).await;
    match stopped {
        Ok(m) => Err(anyhow::anyhow!("raft stopped: {:?}", m.running_state)),
        Err(_) => Ok(()),
    }
}

/// The TLS configuration of a listener, reloaded when its files change.
fn tls_config(files: &TlsFiles, alpn: &'static [&'static [u8]]) -> anyhow::Result<Arc<Watched<Arc<rustls::ServerConfig>>>> {
    let owned = files.clone();
    let watched = Watched::of_files("decider certificate", files, move || {
        ratchet_tls::grpc::server_config(&owned, Role::Peer, alpn)
    })?;
    Ok(Arc::new(watched))
}

async fn serve_grpc(
    listener: TcpListener,
    stopped: tokio::sync::oneshot::Receiver<()>,
    proposer: Proposer,
    decision: DecisionService,
    identity: Identity,
    tls: Option<Arc<Watched<Arc<rustls::ServerConfig>>>>,
) -> anyhow::Result<()> {
    let raft = proposer.raft.clone();
    use pb::{admin_server::AdminServer, cluster_server::ClusterServer, decision_server::DecisionServer, raft_server::RaftServer};
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Runs beside the server and ends with it: nothing outlives a stopped node (in one
    // process, a task holding Raft would hold its RocksDB open).
    let readiness = follow_readiness(health_reporter, raft.clone(), decision.freshness.clone());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let raft_service = RaftService {
        raft: raft.clone(),
        proposer: proposer.clone(),
        identity: identity.clone(),
    };
    let peers = proposer.peers.clone();
    let router = tonic::transport::Server::builder()
        .trace_fn(grpc_span)
        .layer(AuthorizeLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            DecisionServer::new(decision)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_REPLY_BYTES),
        )
        .add_service(
            AdminServer::new(AdminService {
                proposer: proposer.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_REPLY_BYTES),
        )
        .add_service(
            ClusterServer::new(ClusterService {
                raft: raft.clone(),
                identity,
                peers,
                proposer,
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_REPLY_BYTES),
        )
        .add_service(
            RaftServer::new(raft_service)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        );
    let stopped = async {
        let _ = stopped.await;
    };
    let serving = async {
        match tls {
            Some(config) => {
                router
                    .serve_with_incoming_shutdown(TlsIncoming::new(listener, config), stopped)
                    .await
            }
            None => router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped).await,
        }
    };
    tokio::select! {
        served = serving => Ok(served?),
        never = readiness => match never {},
    }
}

/// Keeps gRPC health (the whole server, "", and the Decision service) in step with
/// readiness: SERVING only while this node is fresh.
async fn follow_readiness(reporter: tonic_health::server::HealthReporter, raft: Raft, freshness: Freshness) -> std::convert::Infallible {
    use pb::decision_server::DecisionServer;
    use tonic_health::ServingStatus;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        let status = match freshness.check(&raft) {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        reporter.set_service_status("", status).await;
        reporter
            .set_service_status(<DecisionServer<DecisionService> as tonic::server::NamedService>::NAME, status)
            .await;
    }
}

/// The span of one incoming gRPC call, child of the trace context the caller sent (W3C
/// `traceparent` in the metadata). Only calls that are part of a request's path get one:
/// Decide, Forward and the admin API; Raft's own traffic (heartbeats, replication) and
/// health checks run without, so they add neither cost nor noise. A DecideStream lives as
/// long as its front: each of its calls gets a span of its own (see `decision`).
fn grpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let traced = path == "/ratchet.v1.Decision/Decide" || path == "/ratchet.v1.Raft/Forward" || path.starts_with("/ratchet.v1.Admin/");
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
async fn found_group(raft: Raft, peers: Peers, me: (NodeId, Node), initial_cluster: Vec<(String, String)>) -> anyhow::Result<()> {
    let members = loop {
        match identify_members(&peers, &me, &initial_cluster).await {
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
async fn identify_members(
    peers: &Peers,
    me: &(NodeId, Node),
    initial_cluster: &[(String, String)],
) -> Result<Option<BTreeMap<NodeId, Node>>, String> {
    let mut members = BTreeMap::from([me.clone()]);
    for (name, address) in initial_cluster.iter().filter(|(name, _)| *name != me.1.name) {
        let mut client = peers.raft(address).map_err(|e| format!("{name} ({e})"))?;
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
