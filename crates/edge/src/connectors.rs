//! The connector table: which tenant, if any, a connection belongs to.
//!
//! A background task holds a `WatchConnectors` stream open to one decider: the whole table
//! first, then only what changed, applied to a copy that shares all the rest with the
//! table before (see `ratchet_policy::connectors`); when the stream breaks it moves on to
//! the next decider, backing off. Until the first snapshot arrives the edge does not know who is a stranger,
//! so attribution is `Unknown` and the edge asks the decision service (which attributes
//! too) rather than letting a tenant's mail through unenforced.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ratchet_policy::connectors::{Connector, ConnectorTable as Attributor};
use ratchet_proto::v1::{Connector as WireConnector, ConnectorSnapshot, WatchConnectorsRequest};
use tokio::sync::watch;

use crate::deciders::DeciderPool;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    Tenant(String),
    Stranger,
    /// No connector snapshot yet.
    Unknown,
}

pub type Table = Option<Arc<Attributor>>;

#[derive(Clone)]
pub struct ConnectorTable {
    current: watch::Receiver<Table>,
}

impl ConnectorTable {
    pub fn new() -> (watch::Sender<Table>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self { current: rx })
    }

    pub fn attribute(&self, client_ip: IpAddr, cert_name: Option<&str>) -> Attribution {
        match &*self.current.borrow() {
            None => Attribution::Unknown,
            Some(connectors) => match connectors.attribute(client_ip, cert_name) {
                Some(c) => Attribution::Tenant(c.tenant.clone()),
                None => Attribution::Stranger,
            },
        }
    }

    /// How many connectors the loaded snapshot has; `None` before the first one.
    pub fn loaded(&self) -> Option<usize> {
        self.current.borrow().as_ref().map(|c| c.len())
    }
}

/// A certificate's name as connectors name it: lower-cased, without a trailing dot; `None`
/// for one that is empty or holds whitespace or control characters.
pub fn cert_name(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty() && !name.contains(|c: char| c.is_control() || c.is_whitespace())).then_some(name)
}

/// The table after one message of the watch: the whole table, or a delta applied to a
/// copy of the current one (an error if there is none to apply it to).
fn next_table(current: Option<&Attributor>, message: ConnectorSnapshot) -> Result<Attributor, &'static str> {
    if !message.delta {
        return Ok(Attributor::new(from_wire(message.connectors)));
    }
    let mut table = current.ok_or("a delta before any whole table")?.clone();
    for gone in from_wire(message.removed) {
        table.remove(&gone);
    }
    for added in from_wire(message.connectors) {
        table.insert(added);
    }
    Ok(table)
}

/// Connectors from the wire (an empty CIDR: certificate-only); one with an unreadable
/// CIDR is left out, with a warning.
fn from_wire(connectors: Vec<WireConnector>) -> impl Iterator<Item = Connector> {
    connectors.into_iter().filter_map(
        |c| match Some(c.cidr.as_str()).filter(|cidr| !cidr.is_empty()).map(str::parse).transpose() {
            Ok(cidr) => Some(Connector {
                tenant: c.tenant,
                cidr,
                cert_name: Some(c.cert_name).filter(|n| !n.is_empty()),
            }),
            Err(_) => {
                tracing::warn!(tenant = %c.tenant, cidr = %c.cidr, "ignoring connector with a malformed CIDR");
                None
            }
        },
    )
}

/// Keeps `table` current forever.
pub async fn keep_watching(pool: Arc<DeciderPool>, table: watch::Sender<Table>, backoff_max: Duration) {
    const BACKOFF_MIN: Duration = Duration::from_millis(100);
    let mut backoff = BACKOFF_MIN;
    loop {
        let order = pool.rotation();
        if order.is_empty() {
            pool.refresh().await;
        }
        for decider in order {
            let mut client = decider.client.clone();
            let mut stream = match client.watch_connectors(WatchConnectorsRequest { deltas: true }).await {
                Ok(response) => {
                    pool.answered();
                    response.into_inner()
                }
                Err(status) => {
                    tracing::warn!(decider = %decider.addr, code = ?status.code(), message = status.message(), "cannot watch connectors");
                    continue;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        let (index, delta) = (message.applied_index, message.delta);
                        let current = table.borrow().clone();
                        let next = match next_table(current.as_deref(), message) {
                            Ok(next) => next,
                            Err(problem) => {
                                tracing::warn!(decider = %decider.addr, problem, "connector watch out of step; watching afresh");
                                pool.set_watching(false);
                                break;
                            }
                        };
                        tracing::debug!(decider = %decider.addr, applied_index = index, delta, connectors = next.len(), "connector table");
                        pool.metrics.connectors_loaded(next.len(), delta);
                        pool.answered();
                        pool.set_watching(true);
                        // Every message may follow a change that alters verdicts given.
                        pool.forget_verdicts();
                        table.send_replace(Some(Arc::new(next)));
                        backoff = BACKOFF_MIN;
                    }
                    Ok(None) => {
                        pool.set_watching(false);
                        break;
                    }
                    Err(status) => {
                        tracing::warn!(decider = %decider.addr, code = ?status.code(), message = status.message(), "connector watch broke");
                        pool.set_watching(false);
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(backoff_max.max(BACKOFF_MIN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratchet_proto::v1::Connector as WireConnector;

    #[test]
    fn snapshots_drive_attribution() {
        let (tx, table) = ConnectorTable::new();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(table.attribute(ip, None), Attribution::Unknown);
        let wire = |tenant: &str, cidr: &str, cert: &str| WireConnector {
            tenant: tenant.into(),
            cidr: cidr.into(),
            cert_name: cert.into(),
        };
        let snapshot = ConnectorSnapshot {
            connectors: vec![
                wire("bear", "10.0.0.0/8", ""),
                wire("bad", "not-a-cidr", ""),
                wire("owl", "10.1.0.0/16", "mx.owl.example"),
                wire("lynx", "", "relay.lynx.example"),
            ],
            applied_index: 7,
            ..Default::default()
        };
        tx.send_replace(Some(Arc::new(next_table(None, snapshot).unwrap())));
        assert_eq!(table.attribute(ip, None), Attribution::Tenant("bear".into()));
        assert_eq!(table.attribute(ip, Some("mx.owl.example")), Attribution::Tenant("owl".into()));
        assert_eq!(table.attribute("192.0.2.1".parse().unwrap(), None), Attribution::Stranger);
        assert_eq!(
            table.attribute("192.0.2.1".parse().unwrap(), Some("relay.lynx.example")),
            Attribution::Tenant("lynx".into())
        );
    }

    #[test]
    fn deltas_change_a_copy_of_the_table() {
        let wire = |tenant: &str, cidr: &str| WireConnector {
            tenant: tenant.into(),
            cidr: cidr.into(),
            cert_name: String::new(),
        };
        let whole = ConnectorSnapshot {
            connectors: vec![wire("bear", "10.0.0.0/8"), wire("owl", "10.1.0.0/16")],
            ..Default::default()
        };
        let delta = ConnectorSnapshot {
            connectors: vec![wire("lynx", "10.2.0.0/16")],
            removed: vec![wire("owl", "10.1.0.0/16")],
            delta: true,
            ..Default::default()
        };
        assert_eq!(next_table(None, delta.clone()).err(), Some("a delta before any whole table"));
        let first = next_table(None, whole).unwrap();
        let second = next_table(Some(&first), delta).unwrap();
        let tenant = |table: &Attributor, ip: &str| table.attribute(ip.parse().unwrap(), None).map(|c| c.tenant.clone());
        assert_eq!(tenant(&second, "10.1.0.1").as_deref(), Some("bear"), "owl's range is gone");
        assert_eq!(tenant(&second, "10.2.0.1").as_deref(), Some("lynx"));
        assert_eq!(tenant(&first, "10.1.0.1").as_deref(), Some("owl"), "the table before is unchanged");
        let nothing = ConnectorSnapshot {
            delta: true,
            ..Default::default()
        };
        assert_eq!(
            next_table(Some(&second), nothing).unwrap(),
            second,
            "an empty delta: only verdicts may have changed"
        );
    }
}
