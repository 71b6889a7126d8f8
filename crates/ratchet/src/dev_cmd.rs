//! `ratchet dev`: the whole system in one process on loopback, for a first look: a
//! single-node decider, an edge, and a tenant `demo` whose connector is 127.0.0.0/8.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use ratchet_decider::Clock;
use ratchet_decider::{Decider, DeciderConfig, DeciderOptions};
use ratchet_edge::EdgeConfig;
use ratchet_store::Command;
use tokio::net::TcpListener;

use crate::listen::bind;
use crate::signal::terminated;

const DEMO_TENANT: &str = "demo";
const DEMO_CONNECTOR: &str = "127.0.0.0/8";

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where the decider keeps its data.
    #[arg(long, default_value = "./ratchet-data")]
    data_dir: PathBuf,
    /// The edge's SMTP listen address.
    #[arg(long, default_value = "127.0.0.1:2525")]
    smtp: SocketAddr,
    /// The decider's gRPC listen address (for `ratchet ctl`).
    #[arg(long, default_value = "127.0.0.1:7001")]
    grpc: SocketAddr,
    /// The decider's HTTP listen address (health and report API).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The edge's HTTP listen address (health, readiness and its metrics).
    #[arg(long, default_value = "127.0.0.1:8081")]
    edge_http: SocketAddr,
    /// Relay accepted mail here instead of to the built-in sink.
    #[arg(long)]
    next_hop: Option<String>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let grpc = bind("--grpc", args.grpc).await?;
    let http = bind("--http", args.http).await?;
    let smtp = bind("--smtp", args.smtp).await?;
    let edge_http = bind("--edge-http", args.edge_http).await?;
    let grpc_addr = grpc.local_addr()?.to_string();
    let decider = Decider::start(DeciderOptions {
        name: "dev".into(),
        data_dir: args.data_dir.clone(),
        grpc,
        advertise: grpc_addr.clone(),
        http: Some(http),
        initial_cluster: vec![("dev".into(), grpc_addr.clone())],
        // Everything runs on loopback: a webhook receiver tried out next to it is local too.
        config: DeciderConfig {
            webhook_allow_private: true,
            ..DeciderConfig::default()
        },
        clock: Clock::default(),
        tls: None,
    })
    .await?;
    wait_for_leadership(&decider).await?;
    decider
        .proposer
        .propose(Command::AddTenant { name: DEMO_TENANT.into() })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let connector = Command::AddConnector {
        tenant: DEMO_TENANT.into(),
        cidr: Some(DEMO_CONNECTOR.parse()?),
        cert_name: None,
    };
    decider.proposer.propose(connector).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let (next_hop, sink) = match args.next_hop {
        Some(next_hop) => (next_hop, None),
        None => {
            let sink = TcpListener::bind("127.0.0.1:0").await?;
            (sink.local_addr()?.to_string(), Some(sink))
        }
    };
    let edge_config = EdgeConfig {
        deciders: vec![grpc_addr.clone()],
        next_hop: next_hop.clone(),
        // A first look on loopback: mail for any domain (swaks' default is the local host's).
        accepted_domains: vec!["*".into()],
        ..EdgeConfig::default()
    };
    let sink_note = if sink.is_some() {
        " (built-in sink: accepted mail is printed here)"
    } else {
        ""
    };
    println!(
        "ratchet dev is running:\n  \
         decider  gRPC {grpc_addr}, HTTP http://{http}/healthz, data in {data}\n  \
         edge     SMTP {smtp}, HTTP http://{edge_http}/metrics\n  \
         next hop {next_hop}{sink_note}\n  \
         tenant   {DEMO_TENANT}, connector {DEMO_CONNECTOR}, report page http://{http}/tenants/{DEMO_TENANT}\n\
         Try (see README.md):\n  \
         swaks --server {smtp} --to user@example.com --add-header 'Received: from exch1.demo.local (127.0.0.1) by exch1.demo.local (127.0.0.1) with Microsoft SMTP Server id 15.2.2562.17; Mon, 20 May 2024 10:00:00 +0000'\n  \
         ratchet ctl --endpoints {grpc_addr} report --tenant {DEMO_TENANT}",
        http = decider.http_addr.map(|a| a.to_string()).unwrap_or_default(),
        data = args.data_dir.display(),
        smtp = args.smtp,
        edge_http = args.edge_http,
    );
    if let Some(sink) = sink {
        tokio::spawn(crate::dev_sink::serve(sink));
    }
    // The edge drains and stops on SIGTERM; the decider then commits what it holds and stops.
    let (stop_decider, decider_stopped) = tokio::sync::oneshot::channel::<()>();
    let decider = decider.run_until(async {
        let _ = decider_stopped.await;
    });
    tokio::pin!(decider);
    tokio::select! {
        outcome = ratchet_edge::serve_with_http(edge_config, smtp, Some(edge_http), terminated()) => {
            let _ = stop_decider.send(());
            decider.await?;
            outcome
        }
        outcome = &mut decider => outcome,
    }
}

async fn wait_for_leadership(decider: &Decider) -> anyhow::Result<()> {
    let mut metrics = decider.raft.metrics();
    let me = decider.identity.id;
    let elected = tokio::time::timeout(Duration::from_secs(10), metrics.wait_for(|m| m.current_leader == Some(me))).await;
    match elected {
        Ok(Ok(_)) => Ok(()),
        _ => bail!(
            "the single-node decider did not become leader within 10 s; is {} from another cluster?",
            decider.identity.name
        ),
    }
}
