//! EHLO and HELO (RFC 5321 4.1.1.1): who the client says it is, and what this edge offers.
//!
//! Either command resets any transaction in progress. EHLO lists the extensions; STARTTLS
//! is among them while TLS is configured and not yet in use, XFORWARD while the client
//! speaking is a trusted proxy.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Greeting, Session};
use crate::reply::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn ehlo(&mut self, host: String, esmtp: bool) -> Flow {
        self.transaction = None;
        let me = self.shared.config.hostname.clone();
        let reply = if esmtp {
            let mut lines = vec![
                format!("{me} Hello {host}"),
                "PIPELINING".into(),
                format!("SIZE {}", self.shared.config.max_message_size),
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
            ];
            if self.shared.tls.is_some() && self.tls.is_none() {
                lines.push("STARTTLS".into());
            }
            if self.shared.config.trusts(self.peer.ip()) {
                lines.push(super::xforward::ADVERTISED.into());
            }
            Reply::multi(250, lines)
        } else {
            Reply::new(250, me)
        };
        self.greeting = Some(Greeting { host, esmtp });
        self.reply(reply).await
    }
}
