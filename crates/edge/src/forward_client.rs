//! Naming the original client to the next hop (`next_hop_forward_client`), so that a Postfix
//! behind the edge logs the server that sent the message rather than the edge, and (with
//! XCLIENT) stamps `Received:` with it and applies its own access checks to it:
//!
//! - `xforward` (Postfix's XFORWARD_README): the next transaction's client, for logging
//!   (`orig_client=`); what an after-filter `smtpd` of a content filter takes
//!   (`smtpd_authorized_xforward_hosts`).
//! - `xclient` (XCLIENT_README): the whole session becomes the client's, as if it had
//!   connected to Postfix itself (`smtpd_authorized_xclient_hosts`); Postfix greets again
//!   and the edge says EHLO again.
//!
//! Each is sent only when the next hop's EHLO offers it, with only the attributes it lists
//! (NAME, ADDR, PORT, PROTO, HELO, and SOURCE for XFORWARD). A next hop that does not offer
//! it gets the message without (it would refuse the command), and the edge says so once in
//! its log and on every message in `ratchet_edge_client_forwarded_total`. smtp-proto has
//! neither command, so they are written here (values in `xtext`).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::xtext;

/// Which command names the original client to the next hop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardClient {
    /// The next hop sees the edge as the client.
    #[default]
    None,
    Xforward,
    Xclient,
}

impl ForwardClient {
    pub(crate) fn verb(self) -> Option<&'static str> {
        match self {
            ForwardClient::None => None,
            ForwardClient::Xforward => Some("XFORWARD"),
            ForwardClient::Xclient => Some("XCLIENT"),
        }
    }
}

/// The client the edge attributed the message to, as the next hop is to know it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OriginalClient<'a> {
    pub addr: SocketAddr,
    /// Its host name, when an MTA in front of the edge forwarded one (the edge does not
    /// look names up).
    pub name: Option<&'a str>,
    pub helo: &'a str,
    pub esmtp: bool,
}

/// Postfix's limit on an XCLIENT or XFORWARD command line, CRLF included; a HELO name that
/// would pass it is sent as unavailable.
const MAX_LINE: usize = 512;
const UNAVAILABLE: &str = "[UNAVAILABLE]";

/// The command line naming `client` with `verb`, if the EHLO reply `ehlo` offers the verb:
/// its attributes are those the reply lists after the verb, in the order written here.
pub(crate) fn command(verb: &str, ehlo: &str, client: &OriginalClient) -> Option<String> {
    let offered: Vec<String> = ehlo.lines().find_map(|line| {
        let keywords = line.get(4..)?.trim();
        let mut words = keywords.split_ascii_whitespace();
        words
            .next()
            .filter(|word| word.eq_ignore_ascii_case(verb))
            .map(|_| words.map(str::to_ascii_uppercase).collect())
    })?;
    let addr = match client.addr.ip().to_canonical() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("IPV6:{ip}"),
    };
    let name = client.name.map_or_else(|| UNAVAILABLE.to_owned(), xtext::encode);
    let port = client.addr.port().to_string();
    let proto = if client.esmtp { "ESMTP" } else { "SMTP" };
    let line_with = |helo: &str| {
        let attributes = [
            ("NAME", name.as_str()),
            ("ADDR", addr.as_str()),
            ("PORT", port.as_str()),
            ("PROTO", proto),
            ("HELO", helo),
            ("SOURCE", "REMOTE"),
        ];
        let mut line = verb.to_owned();
        for (attribute, value) in attributes.iter().filter(|(attribute, _)| offered.iter().any(|o| o == attribute)) {
            line.push_str(&format!(" {attribute}={value}"));
        }
        line + "\r\n"
    };
    let helo = Some(xtext::encode(client.helo)).filter(|helo| !helo.is_empty());
    let line = line_with(helo.as_deref().unwrap_or(UNAVAILABLE));
    // Only HELO can make the line this long.
    Some(if line.len() > MAX_LINE { line_with(UNAVAILABLE) } else { line })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX_EHLO: &str = "250-relay.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
                                250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n\
                                250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n250 8BITMIME\r\n";

    fn client(addr: &str, helo: &'static str) -> OriginalClient<'static> {
        OriginalClient {
            addr: addr.parse().unwrap(),
            name: None,
            helo,
            esmtp: true,
        }
    }

    #[test]
    fn names_the_client_with_the_attributes_offered() {
        let bear = client("127.0.0.7:40001", "exch1.bear.local");
        assert_eq!(
            command("XCLIENT", POSTFIX_EHLO, &bear).unwrap(),
            "XCLIENT NAME=[UNAVAILABLE] ADDR=127.0.0.7 PORT=40001 PROTO=ESMTP HELO=exch1.bear.local\r\n"
        );
        assert_eq!(
            command("XFORWARD", POSTFIX_EHLO, &bear).unwrap(),
            "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.7 PORT=40001 PROTO=ESMTP HELO=exch1.bear.local SOURCE=REMOTE\r\n"
        );
        let few = "250-relay.test\r\n250 XFORWARD ADDR HELO\r\n";
        let named = OriginalClient {
            name: Some("mx.bear.example"),
            ..client("[2001:db8::7]:25", "a b+c")
        };
        assert_eq!(
            command("XFORWARD", few, &named).unwrap(),
            "XFORWARD ADDR=IPV6:2001:db8::7 HELO=a+20b+2Bc\r\n"
        );
        assert_eq!(
            command("XFORWARD", "250-x\r\n250 XFORWARD NAME\r\n", &named).unwrap(),
            "XFORWARD NAME=mx.bear.example\r\n"
        );
    }

    #[test]
    fn nothing_is_sent_to_a_next_hop_that_does_not_offer_it() {
        let sink = "250-smtp-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
        assert_eq!(command("XCLIENT", sink, &client("127.0.0.7:1", "h")), None);
        // A keyword that merely starts with the verb is another one.
        assert_eq!(command("XCLIENT", "250 XCLIENTS NAME\r\n", &client("127.0.0.7:1", "h")), None);
    }

    #[test]
    fn a_helo_too_long_for_the_line_is_unavailable() {
        let long: &'static str = Box::leak("=".repeat(250).into_boxed_str());
        let line = command("XCLIENT", POSTFIX_EHLO, &client("127.0.0.7:1", long)).unwrap();
        assert!(line.ends_with(" HELO=[UNAVAILABLE]\r\n") && line.len() <= MAX_LINE, "{line}");
        let mapped = client("[::ffff:192.0.2.1]:2", "h");
        assert!(command("XCLIENT", POSTFIX_EHLO, &mapped).unwrap().contains(" ADDR=192.0.2.1 "));
    }
}
