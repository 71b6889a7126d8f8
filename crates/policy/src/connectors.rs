//! Tenant attribution: which tenant's connector, if any, a connection arrived through.
//!
//! A connector claims a source address range, a TLS client certificate name, or both
//! (the spec's "CIDR and/or certificate"). A certificate-only connector claims its
//! certificate from any address: it ranks as the whole address space (`/0`) does. The
//! most specific claim wins: the longest matching prefix, and at equal length a connector
//! that requires a certificate over one that does not. Mail that matches no connector
//! belongs to no tenant and is never enforced.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connector {
    pub tenant: String,
    /// The source address range; `None` for a certificate-only connector (any address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
    /// When set, the connection must also present a TLS client certificate of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_name: Option<String>,
}

impl Connector {
    /// The address range the connector claims: its CIDR, or every address of `family`
    /// (`0.0.0.0/0` or `::/0`) for a certificate-only connector.
    fn ranges(&self) -> Vec<IpNet> {
        match self.cidr {
            Some(cidr) => vec![cidr],
            None => vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())],
        }
    }

    /// How the connector reads in a line: `203.0.113.0/24`, `cert mx.bear.example`, or both.
    pub fn describe(&self) -> String {
        match (&self.cidr, &self.cert_name) {
            (Some(cidr), Some(name)) => format!("{cidr} cert_name={name}"),
            (Some(cidr), None) => cidr.to_string(),
            (None, Some(name)) => format!("cert_name={name}"),
            (None, None) => "no claim".to_owned(),
        }
    }
}

/// The connectors that claim one prefix: indexes into `ConnectorTable::connectors`.
#[derive(Default)]
struct Claims {
    /// The connector that needs no certificate; of several, the last one listed.
    plain: Option<usize>,
    /// Connectors that need a certificate, by its ASCII-lowercased name; of several with
    /// the same name, the last one listed.
    by_cert: HashMap<String, usize>,
}

impl Claims {
    /// The claim that wins at this prefix: a matching certificate's, else the plain one.
    fn pick(&self, cert_name: Option<&str>) -> Option<usize> {
        cert_name.and_then(|name| self.by_cert.get(name)).or(self.plain.as_ref()).copied()
    }
}

/// Every connector, indexed for attribution by longest-prefix match. Built once per
/// connector set (when it changes) and shared behind an `Arc`; `attribute` is a walk down
/// a prefix trie, not a scan of the list.
pub struct ConnectorTable {
    connectors: Vec<Connector>,
    v4: PrefixMap<Ipv4Net, Claims>,
    v6: PrefixMap<Ipv6Net, Claims>,
}

impl ConnectorTable {
    pub fn new(connectors: Vec<Connector>) -> Self {
        let (mut v4, mut v6) = (PrefixMap::new(), PrefixMap::new());
        for (index, connector) in connectors.iter().enumerate() {
            for range in connector.ranges() {
                let claims: &mut Claims = match range {
                    IpNet::V4(net) => v4.entry(net.trunc()).or_default(),
                    IpNet::V6(net) => v6.entry(net.trunc()).or_default(),
                };
                match &connector.cert_name {
                    Some(name) => {
                        claims.by_cert.insert(name.to_ascii_lowercase(), index);
                    }
                    None => claims.plain = Some(index),
                }
            }
        }
        ConnectorTable { connectors, v4, v6 }
    }

    /// The connectors, in the order the table was built from.
    pub fn connectors(&self) -> &[Connector] {
        &self.connectors
    }

    pub fn len(&self) -> usize {
        self.connectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connectors.is_empty()
    }

    /// The connector the connection belongs to, if any: of those whose range holds
    /// `client_ip` and whose certificate, if they need one, is `cert_name` (ASCII case
    /// ignored), the one with the longest prefix; at equal length one that needs a
    /// certificate over one that does not.
    pub fn attribute(&self, client_ip: IpAddr, cert_name: Option<&str>) -> Option<&Connector> {
        let cert_name = cert_name.map(str::to_ascii_lowercase);
        let cert_name = cert_name.as_deref();
        // `cover` yields the prefixes holding the address from the shortest to the longest.
        let index = match client_ip {
            IpAddr::V4(ip) => self
                .v4
                .cover(&Ipv4Net::from(ip))
                .filter_map(|(_, claims)| claims.pick(cert_name))
                .last(),
            IpAddr::V6(ip) => self
                .v6
                .cover(&Ipv6Net::from(ip))
                .filter_map(|(_, claims)| claims.pick(cert_name))
                .last(),
        }?;
        Some(&self.connectors[index])
    }
}

impl Default for ConnectorTable {
    fn default() -> Self {
        ConnectorTable::new(Vec::new())
    }
}

impl PartialEq for ConnectorTable {
    fn eq(&self, other: &Self) -> bool {
        self.connectors == other.connectors
    }
}

impl Eq for ConnectorTable {}

impl fmt::Debug for ConnectorTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorTable").field("connectors", &self.connectors).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn connector(tenant: &str, cidr: &str, cert_name: Option<&str>) -> Connector {
        Connector {
            tenant: tenant.into(),
            cidr: Some(cidr).filter(|c| !c.is_empty()).map(|c| c.parse().unwrap()),
            cert_name: cert_name.map(Into::into),
        }
    }

    fn tenant_of(connectors: &[Connector], ip: &str, cert: Option<&str>) -> Option<String> {
        ConnectorTable::new(connectors.to_vec())
            .attribute(ip.parse().unwrap(), cert)
            .map(|c| c.tenant.clone())
    }

    #[test]
    fn the_most_specific_connector_wins() {
        let connectors = [
            connector("wide", "10.0.0.0/8", None),
            connector("narrow", "10.1.0.0/16", None),
            connector("v6", "2001:db8::/32", None),
        ];
        assert_eq!(tenant_of(&connectors, "10.1.2.3", None).as_deref(), Some("narrow"));
        assert_eq!(tenant_of(&connectors, "10.2.2.3", None).as_deref(), Some("wide"));
        assert_eq!(tenant_of(&connectors, "2001:db8::5", None).as_deref(), Some("v6"));
        assert_eq!(tenant_of(&connectors, "192.0.2.1", None), None);
    }

    #[test]
    fn a_certificate_connector_needs_the_certificate() {
        let connectors = [
            connector("plain", "10.0.0.0/8", None),
            connector("bear", "10.0.0.0/8", Some("mail.bear.example")),
        ];
        assert_eq!(
            tenant_of(&connectors, "10.0.0.1", Some("MAIL.bear.example")).as_deref(),
            Some("bear")
        );
        assert_eq!(tenant_of(&connectors, "10.0.0.1", Some("other")).as_deref(), Some("plain"));
        assert_eq!(tenant_of(&connectors, "10.0.0.1", None).as_deref(), Some("plain"));
        assert_eq!(tenant_of(&connectors[1..], "10.0.0.1", None), None);
    }

    #[test]
    fn a_certificate_only_connector_claims_its_certificate_from_any_address() {
        let connectors = [
            connector("owl", "", Some("relay.owl.example")),
            connector("plain", "10.0.0.0/8", None),
        ];
        for ip in ["192.0.2.7", "2001:db8::7"] {
            assert_eq!(
                tenant_of(&connectors, ip, Some("Relay.Owl.Example")).as_deref(),
                Some("owl"),
                "{ip}"
            );
            assert_eq!(tenant_of(&connectors, ip, None), None, "{ip}: no certificate, no claim");
            assert_eq!(tenant_of(&connectors, ip, Some("other.example")), None, "{ip}");
        }
        // A range claim is more specific than the whole address space.
        assert_eq!(
            tenant_of(&connectors, "10.0.0.1", Some("relay.owl.example")).as_deref(),
            Some("plain")
        );
    }

    /// The reference: a scan of every connector, which the table must agree with.
    fn attribute_by_scan<'a>(connectors: &'a [Connector], client_ip: IpAddr, cert_name: Option<&str>) -> Option<&'a Connector> {
        connectors
            .iter()
            .filter(|c| {
                let cert_ok = match &c.cert_name {
                    Some(required) => cert_name.is_some_and(|presented| presented.eq_ignore_ascii_case(required)),
                    None => true,
                };
                cert_ok && c.cidr.is_none_or(|cidr| cidr.contains(&client_ip))
            })
            .max_by_key(|c| (c.cidr.map_or(0, |cidr| cidr.prefix_len()), c.cert_name.is_some()))
    }

    /// Addresses from a small space (the top byte and a few low bits) so that ranges overlap.
    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (prop::sample::select(vec![0u8, 10, 255]), any::<u8>(), 0u8..4).prop_map(|(top, mid, low)| IpAddr::V4(Ipv4Addr::new(
                top,
                mid & 0x81,
                0,
                low
            ))),
            (prop::sample::select(vec![0u16, 0x2001, 0xffff]), any::<u16>(), 0u16..4)
                .prop_map(|(top, mid, low)| IpAddr::V6(Ipv6Addr::new(top, mid & 0x8001, 0, 0, 0, 0, 0, low))),
        ]
    }

    fn cert_name() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop::sample::select(vec!["mx.a.example", "MX.A.example", "mx.b.example", ""]).prop_map(String::from))
    }

    fn connectors() -> impl Strategy<Value = Vec<Connector>> {
        let one = (address(), 0u8..=128, cert_name(), any::<bool>()).prop_map(|(ip, len, cert_name, ranged)| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            // Host bits are kept as given: a connector may name 10.1.2.3/8.
            Connector {
                tenant: String::new(),
                // Certificate-only when it has a certificate and no range.
                cidr: (ranged || cert_name.is_none()).then(|| IpNet::new(ip, len % (max + 1)).unwrap()),
                cert_name,
            }
        });
        prop::collection::vec(one, 0..24).prop_map(|mut connectors| {
            for (i, c) in connectors.iter_mut().enumerate() {
                c.tenant = format!("t{i}");
            }
            connectors
        })
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_a_scan(
            connectors in connectors(),
            probes in prop::collection::vec((address(), cert_name()), 1..16),
        ) {
            let table = ConnectorTable::new(connectors.clone());
            for (ip, cert) in probes {
                prop_assert_eq!(
                    table.attribute(ip, cert.as_deref()),
                    attribute_by_scan(&connectors, ip, cert.as_deref()),
                    "{} with {:?}", ip, cert
                );
            }
        }
    }
}
