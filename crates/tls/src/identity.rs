//! Who a certificate speaks for: a SPIFFE ID, `spiffe://TRUST_DOMAIN/ROLE/NAME`, in the
//! certificate's URI subject alternative name (the convention of service meshes), and what
//! each role may do (shared/spec/cli.md, "Transport security and roles").

use std::fmt;
use std::str::FromStr;

/// The roles of the contract, each allowed a set of calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Another decider: the internal Raft service and everything else.
    Peer,
    /// Policy, cluster membership, snapshots, and all of operator.
    Admin,
    /// Tenants, connectors, servers, pauses, webhooks, and all of viewer.
    Operator,
    /// Every read.
    Viewer,
    /// Decide and WatchConnectors only.
    Edge,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Peer, Role::Admin, Role::Operator, Role::Viewer, Role::Edge];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Edge => "edge",
        }
    }

    /// Whether this role may do what `needed` may: the administrative roles nest
    /// (peer > admin > operator > viewer), and peer may also do what an edge may.
    pub fn includes(self, needed: Role) -> bool {
        use Role::*;
        match (self, needed) {
            (Peer, _) => true,
            (Admin, Admin | Operator | Viewer) => true,
            (Operator, Operator | Viewer) => true,
            (Viewer, Viewer) => true,
            (Edge, Edge) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a role (peer, admin, operator, viewer or edge)"))
    }
}

/// A caller as its certificate names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub role: Role,
    pub name: String,
}

impl Identity {
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{}/{}/{}", self.trust_domain, self.role, self.name)
    }

    /// Reads `spiffe://TRUST_DOMAIN/ROLE/NAME`.
    pub fn parse(uri: &str) -> Result<Identity, String> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("{uri:?} is not a spiffe:// URI"))?;
        let mut parts = rest.split('/');
        let (Some(trust_domain), Some(role), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{uri:?} is not spiffe://TRUST_DOMAIN/ROLE/NAME"));
        };
        if trust_domain.is_empty() || name.is_empty() {
            return Err(format!("{uri:?} is not spiffe://TRUST_DOMAIN/ROLE/NAME"));
        }
        Ok(Identity {
            trust_domain: trust_domain.to_owned(),
            role: role.parse()?,
            name: name.to_owned(),
        })
    }

    /// The identity a certificate (DER) carries in its URI SANs: exactly one SPIFFE ID.
    pub fn of_certificate(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
        let mut ids = sans
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
                _ => None,
            });
        match (ids.next(), ids.next()) {
            (Some(uri), None) => Identity::parse(uri),
            (None, _) => Err("the certificate names no spiffe:// identity (URI SAN)".into()),
            (Some(_), Some(_)) => Err("the certificate names more than one spiffe:// identity".into()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spiffe_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_and_bad_ones_are_named() {
        let id = Identity::parse("spiffe://ratchet.local/operator/alice").unwrap();
        assert_eq!(
            (id.trust_domain.as_str(), id.role, id.name.as_str()),
            ("ratchet.local", Role::Operator, "alice")
        );
        assert_eq!(id.spiffe_id(), "spiffe://ratchet.local/operator/alice");
        for bad in [
            "https://x/peer/a",
            "spiffe://x/king/a",
            "spiffe://x/peer",
            "spiffe://x/peer/a/b",
            "spiffe:///peer/a",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_roles_nest_as_the_contract_says() {
        use Role::*;
        assert!(Peer.includes(Edge) && Peer.includes(Admin));
        assert!(Admin.includes(Viewer) && !Admin.includes(Edge) && !Admin.includes(Peer));
        assert!(Operator.includes(Viewer) && !Operator.includes(Admin));
        assert!(!Viewer.includes(Operator) && !Viewer.includes(Edge));
        assert!(Edge.includes(Edge) && !Edge.includes(Viewer));
    }
}
