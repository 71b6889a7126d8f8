//! The other deciders: one gRPC channel per address, made once and shared by everything
//! that talks to a peer (Raft replication, forwarded writes, read indexes, membership
//! changes, founding), and the one place that finds the leader.
//!
//! A tonic `Channel` is a multiplexed HTTP/2 connection that reconnects by itself, so one
//! per peer is all a node needs: no call pays for a TCP and HTTP/2 handshake, and a
//! forwarded write or follower read adds one round trip, not three.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratchet_proto::v1::cluster_client::ClusterClient;
use ratchet_proto::v1::raft_client::RaftClient;
use ratchet_store::types::Raft;
use ratchet_store::Node;
use ratchet_tls::Dialer;
use tonic::transport::Channel;
use tonic::Status;

use crate::config::MAX_RAFT_MESSAGE_BYTES;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Plaintext, or mutual TLS with this node's peer certificate.
    dialer: Dialer,
}

/// Where the leader is, as this node knows it.
pub enum Leader {
    Here,
    Elsewhere(Node),
}

impl Peers {
    pub fn new(dialer: Dialer) -> Peers {
        Peers {
            channels: Arc::default(),
            dialer,
        }
    }

    /// The channel to a decider's address, made on first use.
    pub fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("peer channels lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = self
            .dialer
            .endpoint(address)
            .map_err(|e| Status::invalid_argument(format!("address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = self.dialer.connect_lazy(endpoint);
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A client of a peer's internal Raft service.
    pub fn raft(&self, address: &str) -> Result<RaftClient<Channel>, Status> {
        Ok(RaftClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    /// A client of a peer's cluster (membership) service.
    pub fn cluster(&self, address: &str) -> Result<ClusterClient<Channel>, Status> {
        Ok(ClusterClient::new(self.channel(address)?))
    }
}

/// The current leader, or UNAVAILABLE while there is none (an election).
pub fn leader(raft: &Raft) -> Result<Leader, Status> {
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics
        .current_leader
        .ok_or_else(|| Status::unavailable("no leader: try again once one is elected"))?;
    if leader == metrics.id {
        return Ok(Leader::Here);
    }
    metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .cloned()
        .map(Leader::Elsewhere)
        .ok_or_else(|| Status::unavailable(format!("the leader (node {leader}) is not in this node's membership yet")))
}
