//! Posting one tenant's event to its webhook: signed, and only to public addresses.
//!
//! - Every POST carries `x-ratchet-signature: sha256=HEX`, the HMAC-SHA256 of the body with
//!   the tenant's secret (drawn when the webhook was set, shown once to the operator), so
//!   a receiver can tell Ratchet's events from anyone else's.
//! - A tenant's URL must not reach into the provider's own network: loopback, link-local,
//!   private and other non-public destinations are refused, unless the decider's
//!   `webhook_allow_private` says otherwise. The check is made on the addresses the
//!   connection will use (a resolver that drops the refused ones), so a name that
//!   resolves to a public address when set and a private one later gains nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use ratchet_store::Event;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

const POST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(allow_private: bool) -> anyhow::Result<WebhookClient> {
        // reqwest is built without a TLS provider of its own; ring is the one Ratchet uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .user_agent("ratchet-decider")
            // A redirect could lead anywhere: a webhook answers, it does not send us on.
            .redirect(reqwest::redirect::Policy::none());
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(WebhookClient {
            http: builder.build()?,
            allow_private,
        })
    }

    /// POSTs one event, signed with `secret`; an error says why it was not taken.
    pub async fn post(&self, url: &str, secret: &str, event: &Event) -> anyhow::Result<()> {
        let parsed = reqwest::Url::parse(url).map_err(|e| anyhow!("{url:?}: {e}"))?;
        // An address in the URL is not resolved, so the resolver never sees it.
        if let Some(ip) = literal_ip(&parsed).filter(|ip| !self.allow_private && !is_public(*ip)) {
            bail!("{url}: {ip} is not a public address (set webhook_allow_private to allow it)");
        }
        let body = serde_json::to_vec(event)?;
        let response = self
            .http
            .post(parsed)
            .header("content-type", "application/json")
            .header("x-ratchet-event-id", &event.id)
            .header("x-ratchet-signature", signature(secret, &body))
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "webhook answered {}", response.status());
        Ok(())
    }
}

/// `sha256=HEX` of the body, keyed with the tenant's secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Whether an address is on the public internet: not loopback, private, link-local,
/// shared (CGNAT), documentation, multicast, unspecified or otherwise reserved.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(v4.into()),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || first == 0x2001 && v6.segments()[1] == 0x0db8)
            }
        },
    }
}

/// The system resolver, keeping only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refused = found.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
                return Err(format!("{host} resolves to no public address ({refused}); set webhook_allow_private to allow it").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "203.0.114.1", "2a00:1450:4001::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
