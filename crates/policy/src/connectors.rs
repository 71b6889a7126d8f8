//! Tenant attribution: which tenant's connector, if any, a connection arrived through.
//!
//! A connector claims a source address range and may also require a TLS client
//! certificate name. The most specific claim wins: the longest matching prefix, and at
//! equal length a connector that requires a certificate over one that does not. Mail
//! that matches no connector belongs to no tenant and is never enforced.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connector {
    pub tenant: String,
    pub cidr: IpNet,
    /// When set, the connection must also present a TLS client certificate of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_name: Option<String>,
}

impl Connector {
    fn matches(&self, client_ip: IpAddr, cert_name: Option<&str>) -> bool {
        let cert_ok = match &self.cert_name {
            Some(required) => cert_name.is_some_and(|presented| presented.eq_ignore_ascii_case(required)),
            None => true,
        };
        cert_ok && self.cidr.contains(&client_ip)
    }
}

/// The tenant the connection belongs to, if any.
pub fn attribute<'a>(connectors: &'a [Connector], client_ip: IpAddr, cert_name: Option<&str>) -> Option<&'a Connector> {
    connectors
        .iter()
        .filter(|c| c.matches(client_ip, cert_name))
        .max_by_key(|c| (c.cidr.prefix_len(), c.cert_name.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(tenant: &str, cidr: &str, cert_name: Option<&str>) -> Connector {
        Connector {
            tenant: tenant.into(),
            cidr: cidr.parse().unwrap(),
            cert_name: cert_name.map(Into::into),
        }
    }

    fn tenant_of(connectors: &[Connector], ip: &str, cert: Option<&str>) -> Option<String> {
        attribute(connectors, ip.parse().unwrap(), cert).map(|c| c.tenant.clone())
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
}
