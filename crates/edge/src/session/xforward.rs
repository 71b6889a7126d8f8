//! XFORWARD (Postfix's XFORWARD_README): an MTA in front of the edge, such as Postfix with
//! the edge as its `smtpd_proxy_filter`, names the client it is speaking for, so that the
//! next mail transaction is attributed to that client rather than to the MTA.
//!
//! - Offered in EHLO (`XFORWARD NAME ADDR PORT PROTO HELO SOURCE`) and accepted only when
//!   the client speaking is in `trusted_proxies`; anyone else gets `550 5.7.0`.
//! - Not inside a transaction (`503 5.5.1`). Values are xtext (RFC 1891); `[UNAVAILABLE]`
//!   erases an attribute. A command with any bad attribute changes nothing (`501 5.5.4`).
//! - The attributes hold until the end of the next transaction (the final dot or RSET),
//!   then the session is the MTA's own again. ADDR unavailable is a forwarded local
//!   submission: the transaction stays attributed to the MTA itself.
//!
//! smtp-proto has no XFORWARD, so the command is parsed here (its values with `xtext`).

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::metrics::metrics;
use crate::reply::{self, Reply};
use crate::xtext;

/// What EHLO lists after `XFORWARD`: the attributes this edge takes.
pub(crate) const ADVERTISED: &str = "XFORWARD NAME ADDR PORT PROTO HELO SOURCE";

/// The client an MTA speaks for, as far as it said (each attribute may be unavailable).
/// SOURCE is checked and not kept; NAME is only passed on (`next_hop_forward_client`): the
/// edge attributes by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    pub name: Option<String>,
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub helo: Option<String>,
    pub proto: Option<String>,
}

impl Forwarded {
    /// The address to attribute the transaction to, when the MTA named one.
    pub fn client(&self) -> Option<SocketAddr> {
        self.addr.map(|ip| SocketAddr::new(ip, self.port.unwrap_or(0)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `args` is what follows the command verb.
    pub(super) async fn xforward(&mut self, args: &str) -> Flow {
        if !self.shared.config.trusts(self.peer.ip()) {
            metrics().client_claim("xforward", "untrusted");
            tracing::info!(session = %self.id, peer = %self.peer, "XFORWARD refused: not a trusted proxy");
            return self.error(reply::not_trusted("XFORWARD")).await;
        }
        if self.transaction.is_some() {
            return self.error(reply::bad_sequence("MAIL transaction in progress")).await;
        }
        let mut forwarded = self.forwarded.clone().unwrap_or_default();
        if let Err(refusal) = apply(&mut forwarded, args) {
            metrics().client_claim("xforward", "malformed");
            return self.error(refusal).await;
        }
        metrics().client_claim("xforward", if forwarded.addr.is_some() { "accepted" } else { "local" });
        tracing::debug!(session = %self.id, peer = %self.peer, ?forwarded, "XFORWARD");
        self.forwarded = Some(forwarded);
        // A verdict remembered for one client is not another's.
        self.remembered = None;
        self.reply(reply::ok("2.0.0")).await
    }

    /// The transaction is over (the final dot, RSET): so is what XFORWARD said, and any
    /// verdict remembered for the client it named.
    pub(super) fn forget_forwarded(&mut self) {
        if self.forwarded.take().is_some() {
            self.remembered = None;
        }
    }
}

/// Applies every `NAME=value` of `args` to a copy of `forwarded`, which it replaces only
/// if all of them are good.
fn apply(forwarded: &mut Forwarded, args: &str) -> Result<(), Reply> {
    let mut next = forwarded.clone();
    let mut any = false;
    for pair in args.split_ascii_whitespace() {
        any = true;
        let Some((name, raw)) = pair.split_once('=') else {
            return Err(reply::syntax("XFORWARD attribute=value ..."));
        };
        let value = xtext::decode(raw).map_err(|why| bad_value(name, raw, why))?;
        let value = value.filter(|v| !v.eq_ignore_ascii_case("[UNAVAILABLE]") && !v.eq_ignore_ascii_case("[TEMPUNAVAIL]"));
        match name.to_ascii_uppercase().as_str() {
            "ADDR" => {
                next.addr = value
                    .map(|v| parse_addr(&v).ok_or_else(|| bad_value(name, raw, "not an IP address")))
                    .transpose()?
            }
            "PORT" => {
                next.port = value
                    .map(|v| v.parse().map_err(|_| bad_value(name, raw, "not a port number")))
                    .transpose()?
            }
            "NAME" => next.name = value,
            "SOURCE" => {}
            "HELO" => next.helo = value,
            "PROTO" if value.as_ref().is_some_and(|v| v.len() > 64) => return Err(bad_value(name, raw, "longer than 64 characters")),
            "PROTO" => next.proto = value,
            _ => return Err(Reply::new(501, format!("5.5.4 Bad XFORWARD attribute name: {name}"))),
        }
    }
    if !any {
        return Err(reply::syntax("XFORWARD attribute=value ..."));
    }
    *forwarded = next;
    Ok(())
}

/// An IPv4 or IPv6 address, the latter perhaps as `IPv6:...` (as in address literals).
fn parse_addr(value: &str) -> Option<IpAddr> {
    let bare = match value.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("IPv6:") => &value[5..],
        _ => value,
    };
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn bad_value(name: &str, raw: &str, why: &str) -> Reply {
    Reply::new(
        501,
        format!("5.5.4 Bad XFORWARD {} value {raw:?}: {why}", name.to_ascii_uppercase()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(args: &str) -> Result<Forwarded, String> {
        let mut f = Forwarded::default();
        apply(&mut f, args).map(|()| f).map_err(|r| r.to_wire())
    }

    #[test]
    fn postfix_attributes_are_taken_case_insensitively() {
        let f = applied("NAME=exch1.bear.example ADDR=127.0.0.7 PORT=4711 PROTO=ESMTP HELO=EXCH1.bear.local SOURCE=REMOTE").unwrap();
        assert_eq!(f.client(), Some("127.0.0.7:4711".parse().unwrap()));
        assert_eq!(f.helo.as_deref(), Some("EXCH1.bear.local"));
        assert_eq!(f.proto.as_deref(), Some("ESMTP"));
        let f = applied("addr=IPv6:2001:db8::7 helo=[UNAVAILABLE]").unwrap();
        assert_eq!((f.addr, f.helo), (Some("2001:db8::7".parse().unwrap()), None));
        assert_eq!(applied("ADDR=::ffff:192.0.2.1").unwrap().addr, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn later_commands_overwrite_or_erase_what_they_name() {
        let mut f = Forwarded::default();
        apply(&mut f, "ADDR=127.0.0.7 HELO=a.example").unwrap();
        apply(&mut f, "HELO=b.example").unwrap();
        assert_eq!((f.addr, f.helo.as_deref()), (Some("127.0.0.7".parse().unwrap()), Some("b.example")));
        apply(&mut f, "ADDR=[unavailable]").unwrap();
        assert_eq!(f.client(), None);
    }

    #[test]
    fn xtext_is_decoded() {
        assert_eq!(applied("HELO=a+2Bb.example").unwrap().helo.as_deref(), Some("a+b.example"));
        let e = applied("HELO=a+20b").unwrap_err();
        assert!(e.starts_with("501 5.5.4 Bad XFORWARD HELO value \"a+20b\": control, space"), "{e}");
        assert!(applied("HELO=a+2").unwrap_err().contains("two hex digits"));
    }

    #[test]
    fn a_bad_attribute_changes_nothing() {
        let mut f = Forwarded::default();
        apply(&mut f, "ADDR=127.0.0.7").unwrap();
        for (args, why) in [
            (
                "ADDR=127.0.0.300 HELO=x",
                "501 5.5.4 Bad XFORWARD ADDR value \"127.0.0.300\": not an IP address",
            ),
            ("HELO=x ADDR=exch1.bear.local", "not an IP address"),
            ("PORT=70000", "501 5.5.4 Bad XFORWARD PORT value \"70000\": not a port number"),
            ("HELO=x IDENT=root", "501 5.5.4 Bad XFORWARD attribute name: IDENT"),
            ("ADDR", "501 5.5.4 Syntax: XFORWARD attribute=value ..."),
            ("", "501 5.5.4 Syntax"),
            (&format!("NAME={}", "a".repeat(256)), "longer than 255"),
            (&format!("PROTO={}", "a".repeat(65)), "longer than 64"),
        ] {
            let e = apply(&mut f, args).unwrap_err().to_wire();
            assert!(e.contains(why), "{args}: {e}");
            assert_eq!(
                f,
                Forwarded {
                    addr: Some("127.0.0.7".parse().unwrap()),
                    ..Default::default()
                },
                "{args}"
            );
        }
    }
}
