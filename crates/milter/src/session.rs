//! One milter connection's state and callbacks (Postfix opens one connection per SMTP
//! session); `conversation` reads the packets and calls these.
//!
//! - Option negotiation asks the MTA to skip what the verdict does not need: MAIL, RCPT,
//!   DATA, unknown commands and the body, and not to wait for an answer after CONNECT,
//!   HELO and each header. A client that sends body chunks anyway gets "continue" for
//!   each, and nothing of them is kept.
//! - CONNECT gives the client address; the HELO macros `{cert_subject}` and `{cert_issuer}`
//!   the verified client certificate's name: the two things connectors attribute by.
//! - Each header is kept, up to `max_header_bytes` for the message; past it the message is
//!   refused `451 4.3.4` (at that header if the MTA waits for an answer to headers, else at
//!   the end of the headers) and nothing more is kept.
//! - The end of the headers decides, as the edge does at the end of DATA (through
//!   `ratchet_edge::verdict`), since the server stamp is in the headers: mail from no
//!   tenant's connector, or with no server stamp, is accepted (`SMFIR_ACCEPT`: the MTA asks
//!   nothing more about it); a verdict of throttle or block is the decider's exact reply
//!   line (`SMFIR_REPLYCODE`), which the MTA gives the client at the end of DATA; no verdict
//!   in time is `451 4.4.3`, unless `accept_without_verdict`. An MTA that never says end of
//!   headers has the message decided at its end.

use std::net::IpAddr;
use std::sync::Arc;

use miltr_common::commands::{Connect, Family, Header, Macro};
use miltr_common::optneg::{Capability, OptNeg, Protocol};
use ratchet_edge::build::{BuildDetector, Header as MessageHeader};
use ratchet_edge::connectors::{cert_name, Attribution, ConnectorTable};
use ratchet_edge::counting::{Counted, MessageCounts};
use ratchet_edge::deciders::DeciderPool;
use ratchet_edge::metrics::MessageVerdict;
use ratchet_edge::reply::{self, Reply};
use ratchet_edge::verdict::{self, Answer};
use tracing::Instrument;

use crate::config::MilterConfig;
use crate::metrics::metrics;

/// What every connection of one milter shares.
pub(crate) struct Shared {
    pub config: MilterConfig,
    pub deciders: Arc<DeciderPool>,
    /// Every verdict given is counted here, as the edge counts its own.
    pub counts: Arc<MessageCounts>,
    pub connectors: ConnectorTable,
    pub detector: Box<dyn BuildDetector>,
}

/// The steps of the conversation the verdict does not need: the MTA is asked to skip them.
const SKIPPED: Protocol = Protocol::NO_MAIL
    .union(Protocol::NO_RECIPIENT)
    .union(Protocol::NO_DATA)
    .union(Protocol::NO_UNKNOWN)
    .union(Protocol::NO_BODY);

/// The steps after which the MTA need not wait for an answer (protocol version 6): the
/// milter never refuses there, and says what it has to say at the end of the headers.
const UNANSWERED: Protocol = Protocol::NR_CONNECT.union(Protocol::NR_HELO).union(Protocol::NR_HEADER);

/// `Name: value` CRLF: what a header costs against `max_header_bytes` beyond its name and value.
const HEADER_OVERHEAD: usize = 4;

pub(crate) struct Session {
    shared: Arc<Shared>,
    /// The SMTP client's address, from CONNECT; `None` for a client that is not on the
    /// network (a local submission).
    client_ip: Option<IpAddr>,
    cert_subject: Option<String>,
    cert_issuer: Option<String>,
    message: Message,
    /// Messages finished on this connection, for the log.
    messages: u32,
    id: String,
}

/// The message in progress: its header fields, unfolded, in order.
#[derive(Default)]
struct Message {
    headers: Vec<MessageHeader>,
    header_bytes: usize,
    /// Its headers went past `max_header_bytes`: answered 451 4.3.4, nothing more kept.
    over_limit: bool,
    /// Decided at the end of its headers: its end only closes it.
    decided: bool,
}

impl Session {
    pub fn new(shared: Arc<Shared>, id: String) -> Self {
        Self {
            shared,
            client_ip: None,
            cert_subject: None,
            cert_issuer: None,
            message: Message::default(),
            messages: 0,
            id,
        }
    }

    /// The verified client certificate's name, if it counts (see `trusted_cert_issuers`).
    fn cert_name(&self) -> Option<String> {
        counted_cert_name(
            self.cert_subject.as_deref(),
            self.cert_issuer.as_deref(),
            &self.shared.config.trusted_cert_issuers,
        )
    }

    /// The verdict on the message that just ended, and the reply that refuses it (none:
    /// the MTA goes on with it).
    async fn settle(&self, message: Message) -> (Option<Reply>, MessageVerdict) {
        let unenforced = (None, MessageVerdict::Unenforced);
        let Some(client_ip) = self.client_ip else {
            return unenforced;
        };
        let cert_name = self.cert_name();
        let shared = &self.shared;
        if shared.connectors.attribute(client_ip, cert_name.as_deref()) == Attribution::Stranger {
            return unenforced;
        }
        let Some(stamp) = shared.detector.detect(&message.headers) else {
            return unenforced;
        };
        let config = &shared.config;
        let request = verdict::request(client_ip, cert_name.as_deref(), &stamp, config.linearizable);
        let answer = match shared.deciders.decide(request, config.decide_deadline()).await {
            Some(response) => {
                if let Some(counted) = Counted::of(&response) {
                    shared.counts.record(&counted);
                }
                verdict::answer(&response)
            }
            None => Answer::NoVerdict,
        };
        match answer {
            Answer::Accept => (None, MessageVerdict::Accept),
            Answer::Refuse { verdict, reply } => (Some(reply), verdict),
            Answer::NoVerdict if config.accept_without_verdict => (None, MessageVerdict::NoVerdict),
            Answer::NoVerdict => (Some(reply::no_verdict()), MessageVerdict::NoVerdict),
        }
    }
}

/// `subject` when Postfix sent one and, if `trusted` names issuers, `issuer` is one of them.
fn counted_cert_name(subject: Option<&str>, issuer: Option<&str>, trusted: &[String]) -> Option<String> {
    let issuer_ok = trusted.is_empty() || issuer.is_some_and(|issuer| trusted.iter().any(|t| t.eq_ignore_ascii_case(issuer)));
    subject.filter(|_| issuer_ok).and_then(cert_name)
}

/// The reply for a message whose header section is larger than the milter keeps.
fn headers_too_large() -> Reply {
    Reply::new(
        451,
        "4.3.4 Message header section too large for the Ratchet milter, try again later",
    )
}

/// The address CONNECT names, for a client on the network.
fn client_ip(connect: &Connect) -> Option<IpAddr> {
    if !matches!(connect.family, Family::Inet | Family::Inet6) {
        return None;
    }
    let address = connect.address();
    let address = address
        .trim()
        .trim_start_matches("IPv6:")
        .trim_start_matches('[')
        .trim_end_matches(']');
    address.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// What the milter says to one command, if the MTA waits for an answer.
#[derive(Debug, PartialEq)]
pub(crate) enum Response {
    /// Go on with the message (`SMFIR_CONTINUE`).
    Continue,
    /// Nothing more to ask about this message: deliver it (`SMFIR_ACCEPT`).
    Accept,
    /// Refuse it with this reply (`SMFIR_REPLYCODE`).
    Refuse(Reply),
}

impl Session {
    /// Asks the MTA to skip what the verdict does not need and not to wait for an answer
    /// after CONNECT, HELO and each header, where it offers that.
    pub fn negotiate(&self, theirs: &OptNeg) -> Result<OptNeg, miltr_common::ProtocolError> {
        let ours = OptNeg {
            capabilities: Capability::empty(),
            protocol: SKIPPED.union(UNANSWERED),
            ..OptNeg::default()
        };
        Ok(ours.merge_compatible(theirs)?)
    }

    pub fn macros(&mut self, macros: &Macro) {
        for (name, value) in macros.macros() {
            let value = Some(String::from_utf8_lossy(value).into_owned()).filter(|v| !v.is_empty());
            match name {
                b"{cert_subject}" | b"cert_subject" => self.cert_subject = value,
                b"{cert_issuer}" | b"cert_issuer" => self.cert_issuer = value,
                _ => {}
            }
        }
    }

    pub fn connect(&mut self, connect: &Connect) {
        self.client_ip = client_ip(connect);
        tracing::debug!(session = %self.id, client = ?self.client_ip, hostname = %connect.hostname(), "milter connect");
    }

    /// Keeps a header, up to `max_header_bytes` for the message; past it the message is
    /// refused (at once if the MTA waits for an answer, else at the end of the headers).
    pub fn header(&mut self, header: &Header) -> Response {
        let message = &mut self.message;
        if message.over_limit {
            return Response::Refuse(headers_too_large());
        }
        let (name, value) = (header.name(), header.value());
        message.header_bytes += name.len() + value.len() + HEADER_OVERHEAD;
        if message.header_bytes > self.shared.config.max_header_bytes {
            tracing::info!(session = %self.id, headers = message.headers.len(), max_header_bytes = self.shared.config.max_header_bytes, "header section too large");
            metrics().headers_over_limit();
            *message = Message {
                over_limit: true,
                ..Message::default()
            };
            return Response::Refuse(headers_too_large());
        }
        // Folded values arrive with their line breaks; unfolding removes them (RFC 5322 2.2.3).
        message.headers.push(MessageHeader {
            name: name.into_owned(),
            value: value.replace(['\r', '\n'], ""),
        });
        Response::Continue
    }

    /// The headers are all in: the message is decided now.
    pub async fn end_of_headers(&mut self) -> Response {
        match self.decide().await {
            Some(reply) => Response::Refuse(reply),
            None => Response::Accept,
        }
    }

    /// The end of a message the MTA went on with: decided now if it was not at the end of
    /// its headers (an MTA that skipped that step).
    pub async fn end_of_message(&mut self) -> Response {
        let answer = match self.message.decided {
            true if self.message.over_limit => Response::Refuse(headers_too_large()),
            true => Response::Continue,
            false => match self.decide().await {
                Some(reply) => Response::Refuse(reply),
                None => Response::Continue,
            },
        };
        self.message = Message::default();
        answer
    }

    /// The MTA gave up on the message (RSET, a lost client): forget it.
    pub fn abort(&mut self) {
        self.message = Message::default();
    }

    /// The MTA goes on with another SMTP session on this connection: forget the last one.
    pub fn reset(&mut self) {
        self.client_ip = None;
        self.cert_subject = None;
        self.cert_issuer = None;
        self.message = Message::default();
    }

    /// Decides the message whose headers are in, counts and logs the verdict; the reply
    /// that refuses it, if any.
    async fn decide(&mut self) -> Option<Reply> {
        self.messages += 1;
        if self.message.over_limit {
            self.message.decided = true;
            return Some(headers_too_large());
        }
        let message = std::mem::take(&mut self.message);
        let span = tracing::info_span!("milter.message", session = %self.id, message = self.messages);
        let (reply, verdict) = self.settle(message).instrument(span).await;
        metrics().message(verdict);
        self.message.decided = true;
        let answer = reply.as_ref().map_or("accept".into(), |r| r.to_wire().trim_end().to_owned());
        tracing::info!(session = %self.id, message = self.messages, client = ?self.client_ip, ?verdict, reply = %answer, "message");
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_count_from_trusted_issuers_only() {
        let trusted = ["Bear CA".to_string()];
        assert_eq!(
            counted_cert_name(Some("MX1.Bear.Example."), None, &[]).as_deref(),
            Some("mx1.bear.example")
        );
        assert_eq!(
            counted_cert_name(Some("mx1.bear.example"), Some("bear ca"), &trusted).as_deref(),
            Some("mx1.bear.example")
        );
        assert_eq!(counted_cert_name(Some("mx1.bear.example"), Some("Other CA"), &trusted), None);
        assert_eq!(counted_cert_name(Some("mx1.bear.example"), None, &trusted), None);
        assert_eq!(counted_cert_name(None, Some("Bear CA"), &trusted), None);
        assert_eq!(counted_cert_name(Some("two words"), None, &[]), None);
    }

    #[test]
    fn connect_addresses_of_either_family() {
        let connect = |family, address: &str| client_ip(&Connect::new(b"h", family, Some(25), address.as_bytes()));
        assert_eq!(connect(Family::Inet, "192.0.2.7"), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(connect(Family::Inet6, "IPv6:2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(connect(Family::Inet6, "::ffff:192.0.2.7"), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(connect(Family::Unix, "/run/x"), None);
        assert_eq!(connect(Family::Inet, "not an address"), None);
    }
}
