//! The end of DATA: enforce, then relay, then answer.
//!
//! Mail that came through no tenant's connector is relayed without asking anyone and
//! leaves no trace in the decision service. So does a tenant's message that carries no
//! server stamp at all (a bounce, a message from a non-Exchange system): there is no
//! server to enforce or count. A tenant's mail is stamped with a build
//! (read from its headers), the decision service is asked with a deadline, and the
//! verdict decides: accept relays (250 only once the next hop holds the message),
//! throttle and block answer with the decider's exact reply line. No verdict in time is a
//! temporary failure unless the edge is configured to accept without one. Each verdict
//! given, a remembered one included, is counted (see `counting`).

use tokio::io::{AsyncRead, AsyncWrite};

use super::Shared;
use super::{Flow, Remembered, Session, Transaction};
use crate::build::parse_headers;
use crate::connection::wait_for_force;
use crate::connectors::Attribution;
use crate::counting::Counted;
use crate::forward_client::OriginalClient;
use crate::metrics::{metrics, HeldMessage, MessageVerdict};
use crate::relay::{self, Envelope};
use crate::reply::{self, Reply};
use crate::verdict::{self, Answer};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn deliver(&mut self, transaction: Transaction, message: HeldMessage) -> Flow {
        self.messages += 1;
        let trace_id = format!("{}.{}", self.id, self.messages);
        let client = self.client();
        let (helo, esmtp) = self.client_greeting();
        let received = relay::received_header(helo, client, esmtp, self.tls.as_ref(), &self.shared.config.hostname, &trace_id);
        let cert_name = self.client_cert_name().map(str::to_owned);
        let mut force = self.conn.force_close_signal();
        let name = self.forwarded.as_ref().filter(|f| f.addr.is_some()).and_then(|f| f.name.as_deref());
        let work = Settle {
            shared: &self.shared,
            client: OriginalClient {
                addr: client,
                name,
                helo,
                esmtp,
            },
            cert_name: cert_name.as_deref(),
            remembered: self.remembered.as_ref(),
            transaction: &transaction,
            message: &message,
            received: &received,
        };
        let outcome = tokio::select! {
            outcome = work.run() => Some(outcome),
            _ = wait_for_force(&mut force) => None,
        };
        let Some((reply, remember)) = outcome else {
            let host = self.shared.config.hostname.clone();
            return self.close_with(reply::shutting_down(&host)).await;
        };
        tracing::info!(session = %self.id, id = %trace_id, peer = %client, proxy = ?self.proxy, speaker = %self.peer, from = %transaction.from, recipients = transaction.recipients.len(), size = message.len(), reply = %reply.to_wire().trim_end(), "message");
        if remember.is_some() {
            self.remembered = remember;
        }
        self.reply(reply).await
    }

    /// The client's HELO name and whether it spoke ESMTP, for `Received:`: as XFORWARD
    /// forwarded them when it named the client, else as said in this session.
    fn client_greeting(&self) -> (&str, bool) {
        let own = self.greeting.as_ref().map(|g| (g.host.as_str(), g.esmtp));
        let forwarded = self.forwarded.as_ref().filter(|f| f.addr.is_some()).map(|f| {
            let esmtp = f.proto.as_deref().is_none_or(|p| !p.eq_ignore_ascii_case("SMTP"));
            (f.helo.as_deref().unwrap_or("unknown"), esmtp)
        });
        forwarded.or(own).unwrap_or(("unknown", false))
    }
}

struct Settle<'a> {
    shared: &'a Shared,
    /// Who is attributed the message: the TCP peer, or the client a trusted proxy named.
    client: OriginalClient<'a>,
    /// The verified TLS client certificate's name, if any.
    cert_name: Option<&'a str>,
    remembered: Option<&'a Remembered>,
    transaction: &'a Transaction,
    message: &'a [u8],
    received: &'a str,
}

impl Settle<'_> {
    async fn run(self) -> (Reply, Option<Remembered>) {
        let config = &self.shared.config;
        if self.shared.connectors.attribute(self.client.addr.ip(), self.cert_name) == Attribution::Stranger {
            metrics().message(MessageVerdict::Unenforced);
            return (self.relay().await, None);
        }
        let Some(stamp) = self.shared.detector.detect(&parse_headers(self.message)) else {
            metrics().message(MessageVerdict::Unenforced);
            return (self.relay().await, None);
        };
        let now = chrono::Utc::now().timestamp_millis();
        if let Some(r) = self
            .remembered
            .filter(|r| config.remember_verdict && r.server_fqdn == stamp.server_fqdn && now < r.valid_until_unix_ms)
        {
            metrics().message(if r.reply.code / 100 == 5 {
                MessageVerdict::Block
            } else {
                MessageVerdict::Throttle
            });
            if let Some(counted) = &r.counted {
                self.shared.counts.record(counted);
            }
            return (r.reply.clone(), None);
        }
        let request = verdict::request(self.client.addr.ip(), self.cert_name, &stamp, config.linearizable);
        let Some(response) = self.shared.deciders.decide(request, config.decide_deadline()).await else {
            return self.without_verdict().await;
        };
        let counted = Counted::of(&response);
        if let Some(counted) = &counted {
            self.shared.counts.record(counted);
        }
        let reply = match verdict::answer(&response) {
            Answer::Accept => {
                metrics().message(MessageVerdict::Accept);
                return (self.relay().await, None);
            }
            Answer::Refuse { verdict, reply } => {
                metrics().message(verdict);
                reply
            }
            Answer::NoVerdict => return self.without_verdict().await,
        };
        let remember = (config.remember_verdict && response.valid_until_unix_ms > now).then(|| Remembered {
            server_fqdn: stamp.server_fqdn,
            reply: reply.clone(),
            valid_until_unix_ms: response.valid_until_unix_ms,
            counted,
        });
        (reply, remember)
    }

    async fn without_verdict(&self) -> (Reply, Option<Remembered>) {
        metrics().message(MessageVerdict::NoVerdict);
        if self.shared.config.accept_without_verdict {
            (self.relay().await, None)
        } else {
            (reply::no_verdict(), None)
        }
    }

    async fn relay(&self) -> Reply {
        let envelope = Envelope {
            from: &self.transaction.from,
            recipients: &self.transaction.recipients,
            eight_bit: self.transaction.eight_bit,
            client: self.client,
        };
        let tls = self.shared.next_hop_tls.as_ref();
        relay::relay(
            &self.shared.config,
            tls,
            &self.shared.relay_pool,
            &envelope,
            self.received,
            self.message,
        )
        .await
    }
}
