//! One SMTP session: the command loop and the state it carries between commands.
//!
//! The loop reads a line, lets smtp-proto parse it, and hands the request to the file of
//! its stage (`ehlo`, `starttls`, `xforward`, `mail`, `rcpt`, `data`; `deliver` for what
//! happens at the end of DATA; `proxied` for a PROXY header before the first command).
//! Replies go out in order; with PIPELINING they are written together when the client's
//! input runs dry. Errors are counted, and too many end the session.

mod data;
mod deliver;
mod ehlo;
mod mail;
mod proxied;
mod rcpt;
mod starttls;
mod xforward;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::build::BuildDetector;
use crate::config::{BareLf, EdgeConfig};
use crate::connection::{Connection, Line, ReadError};
use crate::connectors::ConnectorTable;
use crate::counting::{Counted, MessageCounts};
use crate::deciders::DeciderPool;
use crate::limits::SessionPermit;
use crate::relay_pool::RelayPool;
use crate::reply::{self, Reply};
use crate::tls::{NextHopClient, TlsFacts, TlsSettings, Transport};
use xforward::Forwarded;

/// What every session of one edge shares (built by `server`, which admits the sessions).
pub(crate) struct Shared {
    pub config: EdgeConfig,
    pub deciders: Arc<DeciderPool>,
    pub counts: Arc<MessageCounts>,
    pub connectors: ConnectorTable,
    pub detector: Box<dyn BuildDetector>,
    /// STARTTLS, when configured.
    pub tls: Option<Arc<TlsSettings>>,
    /// STARTTLS to the next hop, unless `next_hop_tls = "none"`.
    pub next_hop_tls: Option<NextHopClient>,
    /// Idle sessions to the next hop.
    pub relay_pool: Arc<RelayPool>,
}

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// What the client said in HELO/EHLO.
pub(crate) struct Greeting {
    pub host: String,
    pub esmtp: bool,
}

/// The mail transaction in progress (RFC 5321 3.3).
pub(crate) struct Transaction {
    pub from: String,
    pub eight_bit: bool,
    pub recipients: Vec<String>,
}

/// A throttle or block verdict the session may repeat while it is valid (enforcement.md,
/// "Replies").
pub(crate) struct Remembered {
    pub server_fqdn: String,
    pub reply: Reply,
    pub valid_until_unix_ms: i64,
    /// What each message answered with it counts as (None: not counted).
    pub counted: Option<Counted>,
}

pub(crate) struct Session<S> {
    pub conn: Connection<S>,
    pub shared: Arc<Shared>,
    /// Who is speaking: the TCP peer, or the client a trusted proxy's PROXY header named.
    pub peer: SocketAddr,
    /// The trusted proxy's address, when its PROXY header named the client in `peer`.
    pub proxy: Option<SocketAddr>,
    /// What a trusted MTA said with XFORWARD about the client of the next transaction.
    pub forwarded: Option<Forwarded>,
    /// This session's slot among the edge's sessions and its client's.
    permit: SessionPermit,
    pub id: String,
    pub greeting: Option<Greeting>,
    pub transaction: Option<Transaction>,
    pub remembered: Option<Remembered>,
    /// Messages finished in this session, for trace ids.
    pub messages: u32,
    /// Set once STARTTLS has succeeded.
    pub tls: Option<TlsFacts>,
    errors: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(conn: Connection<S>, shared: Arc<Shared>, peer: SocketAddr, permit: SessionPermit, id: String) -> Self {
        Self {
            conn,
            shared,
            peer,
            proxy: None,
            forwarded: None,
            permit,
            id,
            greeting: None,
            transaction: None,
            remembered: None,
            messages: 0,
            tls: None,
            errors: 0,
        }
    }

    /// Sends a reply that is not a client error.
    pub(crate) async fn reply(&mut self, reply: Reply) -> Flow {
        match self.conn.send(&reply).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    /// Sends a reply to a client error, and closes the session once there were too many.
    pub(crate) async fn error(&mut self, reply: Reply) -> Flow {
        self.errors += 1;
        tracing::debug!(session = %self.id, reply = %reply.to_wire().trim_end(), errors = self.errors, "client error");
        if self.reply(reply).await == Flow::Close {
            return Flow::Close;
        }
        if self.errors >= self.shared.config.max_errors {
            let host = self.shared.config.hostname.clone();
            return self.close_with(reply::too_many_errors(&host)).await;
        }
        Flow::Continue
    }

    pub(crate) async fn close_with(&mut self, reply: Reply) -> Flow {
        let _ = self.conn.send(&reply).await;
        Flow::Close
    }

    /// The client the current transaction is attributed to: the one XFORWARD named, else
    /// the one speaking.
    pub(crate) fn client(&self) -> SocketAddr {
        self.forwarded.as_ref().and_then(Forwarded::client).unwrap_or(self.peer)
    }
}

impl<S: Transport> Session<S> {
    pub async fn run(mut self) {
        let host = self.shared.config.hostname.clone();
        tracing::debug!(session = %self.id, peer = %self.peer, "session start");
        if self.conn.send(&reply::greeting(&host)).await.is_err() || self.proxy_header().await == Flow::Close {
            let _ = self.conn.flush().await;
            return;
        }
        loop {
            let limit = self.shared.config.max_command_line;
            let flow = match self.conn.read_line(limit, self.shared.config.command_timeout()).await {
                Ok(line) => {
                    let span = tracing::info_span!("smtp.command", command = command_name(&line.bytes));
                    self.command(line).instrument(span).await
                }
                Err(ReadError::TooLong) => self.error(reply::line_too_long()).await,
                Err(ReadError::Timeout) => self.close_with(reply::timeout(&host)).await,
                Err(ReadError::Shutdown) => self.close_with(reply::shutting_down(&host)).await,
                Err(ReadError::Closed) => Flow::Close,
            };
            if flow == Flow::Close {
                break;
            }
        }
        let _ = self.conn.flush().await;
        tracing::debug!(session = %self.id, peer = %self.peer, "session end");
    }

    async fn command(&mut self, line: Line) -> Flow {
        if line.bare_lf && self.shared.config.bare_lf == BareLf::Reject {
            return self.error(reply::bare_lf()).await;
        }
        if line.bytes.contains(&0) || std::str::from_utf8(&line.bytes).is_err() {
            return self.error(reply::bad_characters()).await;
        }
        // smtp-proto ignores whatever follows STARTTLS; RFC 3207 allows nothing there.
        let starttls_bare = line.bytes.trim_ascii().eq_ignore_ascii_case(b"STARTTLS");
        if command_name(&line.bytes) == "XFORWARD" {
            let args = String::from_utf8_lossy(&line.bytes["XFORWARD".len()..]).into_owned();
            return self.xforward(&args).await;
        }
        let mut wire = line.bytes;
        wire.extend_from_slice(b"\r\n");
        let request = match Request::parse(&mut wire.iter()) {
            Ok(request) => request,
            Err(e) => return self.error(parse_error_reply(e)).await,
        };
        match request {
            Request::Ehlo { host } => self.ehlo(host.into_owned(), true).await,
            Request::Helo { host } => self.ehlo(host.into_owned(), false).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.transaction = None;
                self.forget_forwarded();
                self.reply(reply::ok("2.0.0")).await
            }
            Request::Noop { .. } => self.reply(reply::ok("2.0.0")).await,
            Request::Quit => self.close_with(reply::bye()).await,
            Request::Vrfy { .. } => self.reply(reply::vrfy()).await,
            Request::Help { .. } => self.reply(reply::help()).await,
            // LMTP's greeting is not SMTP's.
            Request::Lhlo { .. } => self.error(reply::unknown_command()).await,
            Request::StartTls => self.starttls(starttls_bare).await,
            other @ (Request::Auth { .. }
            | Request::Bdat { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }) => {
                let name = other.name();
                self.error(reply::not_implemented(name)).await
            }
        }
    }
}

/// The command's verb for its span: letters only, at most 10, upper case ("DATA").
fn command_name(line: &[u8]) -> String {
    let verb: String = line
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .take(10)
        .map(|b| b.to_ascii_uppercase() as char)
        .collect();
    if verb.is_empty() {
        "?".into()
    } else {
        verb
    }
}

fn parse_error_reply(e: ParseError) -> Reply {
    match e {
        ParseError::InvalidSenderAddress => reply::bad_sender(),
        ParseError::InvalidRecipientAddress => reply::bad_recipient(),
        ParseError::SyntaxError { syntax } => reply::syntax(syntax),
        ParseError::InvalidParameter { param } => Reply::new(501, format!("5.5.4 Invalid parameter: {param}")),
        ParseError::UnsupportedParameter { param } => reply::unsupported_parameter(&param),
        ParseError::ResponseTooLong => reply::line_too_long(),
        ParseError::UnknownCommand | ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => reply::unknown_command(),
    }
}

/// Addresses as smtp-proto hands them over.
pub(crate) type Address<'a> = Cow<'a, str>;
