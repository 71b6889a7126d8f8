//! The first octets of a connection: a PROXY protocol header, or SMTP.
//!
//! The edge greets at once and then looks at what arrives first, so a client that waits for
//! the greeting (any SMTP client, Postfix as a proxy filter included) is never held up,
//! and a load balancer's header, which it sends as soon as it connects, is read before any
//! command. The header is optional from trusted proxies because the same address may be an
//! MTA that sends XFORWARD instead; that adds no trust beyond XFORWARD's, which a trusted
//! address may send anyway.
//!
//! - From a trusted proxy, a header naming a client makes the session that client's: its
//!   connector, its Decide, its `Received:` line, its logs, its per-address session slot
//!   (`421 4.7.0` when the client has too many). After it, trust is the client's: a client
//!   behind a trusted load balancer cannot send XFORWARD unless it is trusted itself.
//!   `LOCAL` (health checks) and `UNKNOWN` leave the session the proxy's own. A malformed
//!   or truncated header gets `421 4.7.0` naming what is wrong, and the connection closes:
//!   nothing after it can be trusted to be where it seems.
//! - From anyone else, a header (well-formed or not) gets `550 5.7.0`, counts as a client
//!   error, and the session goes on, attributed to the TCP peer.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::connection::ReadError;
use crate::limits::Refusal;
use crate::metrics::metrics;
use crate::proxy::{self, Header};
use crate::reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Reads a PROXY header, if the connection starts with one; `Flow::Close` when the
    /// session must end.
    pub(super) async fn proxy_header(&mut self) -> Flow {
        let host = self.shared.config.hostname.clone();
        let timeout = self.shared.config.command_timeout();
        let parsed = match self.conn.read_framed(timeout, proxy::frame).await {
            Ok(None) => return Flow::Continue,
            Ok(Some(parsed)) => parsed,
            Err(ReadError::Closed) if !self.conn.unread().is_empty() && self.shared.config.trusts(self.peer.ip()) => {
                let why = "header: truncated, the connection ended inside it";
                metrics().client_claim("proxy", "malformed");
                tracing::warn!(session = %self.id, peer = %self.peer, "{why}");
                return self.close_with(reply::bad_proxy_header(&host, why)).await;
            }
            Err(ReadError::Timeout) => return self.close_with(reply::timeout(&host)).await,
            Err(ReadError::Shutdown) => return self.close_with(reply::shutting_down(&host)).await,
            Err(ReadError::Closed | ReadError::TooLong) => return Flow::Close,
        };
        if !self.shared.config.trusts(self.peer.ip()) {
            metrics().client_claim("proxy", "untrusted");
            tracing::info!(session = %self.id, peer = %self.peer, header = ?parsed, "PROXY header refused: not a trusted proxy");
            return self.error(reply::not_trusted("the PROXY protocol")).await;
        }
        match parsed {
            Ok(Header::Local) => {
                metrics().client_claim("proxy", "local");
                Flow::Continue
            }
            Ok(Header::Relayed(client)) => {
                if self.permit.count_under(client.ip()) == Err(Refusal::TooManyFromIp) {
                    tracing::info!(session = %self.id, proxy = %self.peer, peer = %client, "connection refused: too many from the client");
                    return self.close_with(reply::too_many_from_ip(&host)).await;
                }
                metrics().client_claim("proxy", "accepted");
                tracing::Span::current().record("client", tracing::field::display(client));
                tracing::debug!(session = %self.id, proxy = %self.peer, peer = %client, "PROXY header");
                self.proxy = Some(self.peer);
                self.peer = client;
                Flow::Continue
            }
            Err(why) => {
                metrics().client_claim("proxy", "malformed");
                tracing::warn!(session = %self.id, peer = %self.peer, error = %why, "malformed PROXY header from a trusted proxy");
                self.close_with(reply::bad_proxy_header(&host, &why)).await
            }
        }
    }
}
