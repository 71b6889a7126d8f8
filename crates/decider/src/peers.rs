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
use crate::error::Error;

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
    pub fn channel(&self, address: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().expect("peer channels lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = self
            .dialer
            .endpoint(address)
            .map_err(|e| Error::bad_field("address", format!("{address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = self.dialer.connect_lazy(endpoint);
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A client of a peer's internal Raft service.
    pub fn raft(&self, address: &str) -> Result<RaftClient<Channel>, Error> {
        Ok(RaftClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    /// A client of a peer's cluster (membership) service.
    pub fn cluster(&self, address: &str) -> Result<ClusterClient<Channel>, Error> {
        Ok(ClusterClient::new(self.channel(address)?))
    }
}

/// The current leader, or `NoLeader` while there is none (an election).
pub fn leader(raft: &Raft) -> Result<Leader, Error> {
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics
        .current_leader
        .ok_or_else(|| Error::NoLeader("no leader: try again once one is elected".into()))?;
    if leader == metrics.id {
        return Ok(Leader::Here);
    }
    metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .cloned()
        .map(Leader::Elsewhere)
        .ok_or_else(|| Error::NoLeader(format!("the leader (node {leader}) is not in this node's membership yet")))
}

/// Whether a call to a peer failed before any of it was sent: its channel could not
/// connect (refused, timed out, TLS handshake failed), so making it again is safe. Told by
/// the error's type, which tonic keeps as the status's source: a status that a peer sent
/// back has none.
pub fn never_sent(status: &Status) -> bool {
    std::iter::successors(Some(status as &(dyn std::error::Error + 'static)), |error| error.source())
        .any(|error| error.is::<tonic::ConnectError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratchet_proto::v1 as pb;

    #[tokio::test]
    async fn a_call_to_a_closed_port_is_known_never_sent() {
        // Bound, then closed again: nothing listens there.
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut client = Peers::default().raft(&address.to_string()).unwrap();
        let status = client.identify(pb::IdentifyRequest {}).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(never_sent(&status), "{status:?}");
        // A peer's own answer is not taken for one, whatever its text says.
        assert!(!never_sent(&Status::unavailable("tcp connect error")));
    }
}
