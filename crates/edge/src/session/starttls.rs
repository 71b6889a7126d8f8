//! STARTTLS (RFC 3207): the session continues over TLS on the same connection.
//!
//! - Offered in EHLO only when a certificate is configured, and only until TLS is up.
//! - `220 2.0.0` is flushed, then everything the client sent after the STARTTLS line and
//!   the edge had already read is thrown away: plaintext that was pipelined behind
//!   STARTTLS must never be taken as if it had come through TLS (the command injection
//!   of CVE-2011-0411). A client that sends anything before the handshake breaks it.
//! - After the handshake the session starts afresh (RFC 3207 4.2): no greeting, no
//!   transaction, no XFORWARD, no remembered verdict; the client must EHLO again. The client
//!   certificate's name, when one was presented and verified, is kept for attribution.
//! - A failed handshake ends the session: nothing can be said in a broken TLS stream. The
//!   handshake has the command timeout (RFC 5321 4.5.3.2.7) and yields to shutdown.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::connection::wait_for_force;
use crate::reply;
use crate::tls::Transport;

impl<S: Transport> Session<S> {
    /// `bare` is false when the command carried parameters.
    pub(super) async fn starttls(&mut self, bare: bool) -> Flow {
        let Some(tls) = self.shared.tls.clone() else {
            return self.error(reply::not_implemented("STARTTLS")).await;
        };
        if !bare {
            return self.error(reply::syntax("STARTTLS")).await;
        }
        if self.tls.is_some() {
            return self.error(reply::bad_sequence("TLS already active")).await;
        }
        if self.transaction.is_some() {
            return self.error(reply::bad_sequence("MAIL transaction in progress")).await;
        }
        let acceptor = tls.current();
        if self.reply(reply::ready_for_tls()).await == Flow::Close || self.conn.flush().await.is_err() {
            return Flow::Close;
        }
        let discarded = self.conn.discard_input();
        if discarded > 0 {
            tracing::warn!(session = %self.id, peer = %self.peer, octets = discarded, "discarded plaintext pipelined after STARTTLS");
        }
        let mut force = self.conn.force_close_signal();
        let timeout = self.shared.config.command_timeout();
        let handshake = tokio::select! {
            r = tokio::time::timeout(timeout, self.conn.stream_mut().start_tls(acceptor)) => match r {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("handshake timed out".into()),
            },
            _ = wait_for_force(&mut force) => Err("server shutting down".into()),
        };
        match handshake {
            Ok(facts) => {
                tracing::debug!(session = %self.id, peer = %self.peer, version = %facts.version, cipher = %facts.cipher, client_cert = ?facts.client_cert_name, "TLS established");
                self.greeting = None;
                self.transaction = None;
                self.forwarded = None;
                self.remembered = None;
                self.tls = Some(facts);
                Flow::Continue
            }
            Err(why) => {
                tracing::info!(session = %self.id, peer = %self.peer, error = %why, "TLS handshake failed");
                Flow::Close
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The client certificate name, once TLS is up and a certificate was presented.
    pub(crate) fn client_cert_name(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.client_cert_name.as_deref())
    }
}
