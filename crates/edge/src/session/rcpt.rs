//! RCPT TO (RFC 5321 4.1.1.3): adds a recipient to the transaction.
//!
//! A recipient's domain must be one of `accepted_domains`, or the client gets `550 5.7.1
//! Relaying denied` (no open relay; counted as a client error). Whether the mailbox exists
//! is the next hop's to say: it is asked for each recipient before the edge acknowledges
//! the message. Past the per-message limit the client gets 452 4.5.3 and, per RFC 5321
//! 4.5.3.1.10, sends the rest in another transaction; that is flow control, not a client
//! error, so it does not count towards the error limit.

use smtp_proto::RcptTo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Address, Flow, Session};
use crate::reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn rcpt(&mut self, to: RcptTo<Address<'_>>) -> Flow {
        let max = self.shared.config.max_recipients;
        let Some(transaction) = self.transaction.as_mut() else {
            return self.error(reply::bad_sequence("need MAIL command")).await;
        };
        if to.orcpt.is_some() || to.flags != 0 || to.rrvs != 0 {
            return self.error(reply::unsupported_parameter("DSN/RRVS parameters not advertised")).await;
        }
        if to.address.is_empty() {
            return self.error(reply::bad_recipient()).await;
        }
        let domain = to.address.rsplit_once('@').map_or("", |(_, domain)| domain);
        if !self.shared.config.accepts_domain(domain) {
            tracing::info!(session = %self.id, peer = %self.peer, domain, "relaying denied");
            return self.error(reply::relay_denied(domain)).await;
        }
        if transaction.recipients.len() >= max {
            return self.reply(reply::too_many_recipients()).await;
        }
        transaction.recipients.push(to.address.into_owned());
        self.reply(reply::ok("2.1.5")).await
    }
}
