//! Tenant attribution: which tenant's connector, if any, a connection arrived through.
//!
//! A connector claims a source address range, a TLS client certificate name, or both
//! (the spec's "CIDR and/or certificate"). A certificate-only connector claims its
//! certificate from any address: it ranks as the whole address space (`/0`) does. The
//! most specific claim wins: the longest matching prefix, and at equal length a connector
//! that requires a certificate over one that does not. Mail that matches no connector
//! belongs to no tenant and is never enforced.

use std::fmt;
use std::net::IpAddr;

use imbl::{HashMap, OrdSet};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Ordered by tenant, then claim: the order `ConnectorTable::connectors` lists them in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// The address ranges the connector claims (see `claimed_ranges`).
    fn ranges(&self) -> impl Iterator<Item = IpNet> {
        claimed_ranges(self.cidr)
    }

    /// Whether it makes exactly this claim (the same range as written, the same name).
    pub fn claims(&self, cidr: Option<IpNet>, cert_name: Option<&str>) -> bool {
        self.cidr == cidr && self.cert_name.as_deref() == cert_name
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

/// The address ranges a claim of `cidr` covers, with host bits cleared: the CIDR, or every
/// address of both families (`0.0.0.0/0`, `::/0`) for a certificate-only claim.
fn claimed_ranges(cidr: Option<IpNet>) -> impl Iterator<Item = IpNet> {
    let (one, both) = match cidr {
        Some(cidr) => (Some(cidr.trunc()), None),
        None => (None, Some([IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())])),
    };
    one.into_iter().chain(both.into_iter().flatten())
}

/// The connectors that claim one prefix and one certificate name (or none), in
/// `Connector` order; the last one wins. Normally exactly one: two tenants cannot make the
/// same claim, so more are left only by claims that differ in host bits or in the case of
/// the name.
type Claimants = Vec<Connector>;

/// The connectors whose ranges are one prefix.
#[derive(Clone, Default)]
struct Prefix {
    plain: Claimants,
    /// By the ASCII-lowercased certificate name.
    certified: HashMap<String, Claimants>,
}

impl Prefix {
    /// The claim that wins at this prefix: a matching certificate's, else the plain one.
    fn pick(&self, cert_name: Option<&str>) -> Option<&Connector> {
        cert_name
            .and_then(|name| self.certified.get(name))
            .and_then(|claimants| claimants.last())
            .or_else(|| self.plain.last())
    }

    fn claimants_mut(&mut self, cert_name: Option<&str>) -> &mut Claimants {
        match cert_name {
            Some(name) => self.certified.entry(name.to_ascii_lowercase()).or_default(),
            None => &mut self.plain,
        }
    }

    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.certified.is_empty()
    }
}

/// Every connector, indexed for attribution by longest-prefix match.
///
/// Persistent (structurally shared, on `imbl`): a clone costs a few pointer copies and
/// adding or removing a connector O(log n), so the state machine and the fronts keep one
/// table current with each change instead of rebuilding it, and readers hold it behind an
/// `Arc` without copying. Attribution looks the address up at each prefix length that some
/// connector uses, longest first: a hash lookup per distinct length (a handful in
/// practice), not a scan of the connectors. Written here rather than on a prefix-trie crate
/// because none of those shares structure between versions: each change would copy the
/// whole trie.
#[derive(Clone)]
pub struct ConnectorTable {
    all: OrdSet<Connector>,
    prefixes: HashMap<IpNet, Prefix>,
    /// How many ranges of each length (IPv4 /0-/32, IPv6 /0-/128) the table holds.
    v4_lengths: [u32; 33],
    v6_lengths: [u32; 129],
}

impl ConnectorTable {
    pub fn new(connectors: impl IntoIterator<Item = Connector>) -> Self {
        let mut table = ConnectorTable::default();
        for connector in connectors {
            table.insert(connector);
        }
        table
    }

    /// Adds a connector; false if the table has it already.
    pub fn insert(&mut self, connector: Connector) -> bool {
        if self.all.contains(&connector) {
            return false;
        }
        for range in connector.ranges() {
            *self.length_count(range) += 1;
            let claimants = self
                .prefixes
                .entry(range)
                .or_default()
                .claimants_mut(connector.cert_name.as_deref());
            let at = claimants.binary_search(&connector).unwrap_or_else(|at| at);
            claimants.insert(at, connector.clone());
        }
        self.all.insert(connector);
        true
    }

    /// Removes a connector; false if the table does not have it.
    pub fn remove(&mut self, connector: &Connector) -> bool {
        if self.all.remove(connector).is_none() {
            return false;
        }
        for range in connector.ranges() {
            *self.length_count(range) -= 1;
            let prefix = self.prefixes.get_mut(&range).expect("a listed connector is indexed");
            let claimants = prefix.claimants_mut(connector.cert_name.as_deref());
            claimants.retain(|c| c != connector);
            if claimants.is_empty() {
                if let Some(name) = &connector.cert_name {
                    prefix.certified.remove(&name.to_ascii_lowercase());
                }
            }
            if prefix.is_empty() {
                self.prefixes.remove(&range);
            }
        }
        true
    }

    fn length_count(&mut self, range: IpNet) -> &mut u32 {
        match range {
            IpNet::V4(net) => &mut self.v4_lengths[usize::from(net.prefix_len())],
            IpNet::V6(net) => &mut self.v6_lengths[usize::from(net.prefix_len())],
        }
    }

    /// The connectors, ordered by tenant, then claim.
    pub fn connectors(&self) -> impl Iterator<Item = &Connector> {
        self.all.iter()
    }

    /// The connectors that make exactly this claim (normally none or one).
    pub fn claimants<'a>(&'a self, cidr: Option<IpNet>, cert_name: Option<&'a str>) -> impl Iterator<Item = &'a Connector> + 'a {
        // Every range of a claim holds the same claimants: the first one is enough.
        let prefix = claimed_ranges(cidr).next().and_then(|range| self.prefixes.get(&range));
        let claimants = prefix.map(|prefix| match cert_name {
            Some(name) => prefix.certified.get(&name.to_ascii_lowercase()).map_or(&[][..], Vec::as_slice),
            None => prefix.plain.as_slice(),
        });
        claimants.unwrap_or_default().iter().filter(move |c| c.claims(cidr, cert_name))
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The connector the connection belongs to, if any: of those whose range holds
    /// `client_ip` and whose certificate, if they need one, is `cert_name` (ASCII case
    /// ignored), the one with the longest prefix; at equal length one that needs a
    /// certificate over one that does not; of claims still equal, the last in `Connector`
    /// order.
    pub fn attribute(&self, client_ip: IpAddr, cert_name: Option<&str>) -> Option<&Connector> {
        let cert_name = cert_name.map(str::to_ascii_lowercase);
        let lengths = match client_ip {
            IpAddr::V4(_) => &self.v4_lengths[..],
            IpAddr::V6(_) => &self.v6_lengths[..],
        };
        (0..lengths.len()).rev().filter(|&len| lengths[len] > 0).find_map(|len| {
            let len = u8::try_from(len).expect("a prefix length fits a u8");
            let range = IpNet::new(client_ip, len).expect("a length the family has").trunc();
            self.prefixes.get(&range)?.pick(cert_name.as_deref())
        })
    }
}

impl Default for ConnectorTable {
    fn default() -> Self {
        ConnectorTable {
            all: OrdSet::new(),
            prefixes: HashMap::new(),
            v4_lengths: [0; 33],
            v6_lengths: [0; 129],
        }
    }
}

impl PartialEq for ConnectorTable {
    fn eq(&self, other: &Self) -> bool {
        self.all == other.all
    }
}

impl Eq for ConnectorTable {}

impl fmt::Debug for ConnectorTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorTable").field("connectors", &self.all).finish()
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
            .max_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)))
    }

    fn rank(connector: &Connector) -> (u8, bool) {
        (connector.cidr.map_or(0, |cidr| cidr.prefix_len()), connector.cert_name.is_some())
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

        /// A table kept current one change at a time answers as one built afresh, and the
        /// version it was cloned from is left as it was.
        #[test]
        fn a_table_changed_in_place_agrees_with_a_scan(
            connectors in connectors(),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            probes in prop::collection::vec((address(), cert_name()), 1..16),
        ) {
            let full = ConnectorTable::new(connectors.clone());
            let mut table = full.clone();
            let mut kept = connectors.clone();
            for index in removed {
                if kept.is_empty() {
                    break;
                }
                let gone = kept.remove(index.index(kept.len()));
                prop_assert!(table.remove(&gone));
                prop_assert!(!table.remove(&gone), "removed twice");
            }
            prop_assert_eq!(table.len(), kept.len());
            prop_assert_eq!(table.claimants(None, None).count(), 0);
            for c in &kept {
                prop_assert!(table.claimants(c.cidr, c.cert_name.as_deref()).any(|claimant| claimant == c));
            }
            for (ip, cert) in probes {
                prop_assert_eq!(
                    table.attribute(ip, cert.as_deref()),
                    attribute_by_scan(&kept, ip, cert.as_deref()),
                    "{} with {:?}", ip, cert
                );
                prop_assert_eq!(
                    full.attribute(ip, cert.as_deref()),
                    attribute_by_scan(&connectors, ip, cert.as_deref()),
                    "the original, {} with {:?}", ip, cert
                );
            }
        }
    }
}
