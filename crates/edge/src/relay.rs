//! The SMTP client that hands accepted mail to the next hop before the edge says 250.
//!
//! An edge keeps nothing on disk, so it may acknowledge a message only once someone else
//! holds it: the next hop must say 250 to MAIL, to every RCPT and to the final dot. Any
//! other outcome becomes a temporary failure for the sender (who keeps the message and
//! retries), except a permanent refusal of the content itself, which is passed on.
//!
//! TLS follows `next_hop_tls`: STARTTLS (RFC 3207) when the next hop's EHLO offers it, or
//! always with a verified certificate; a next hop that fails `verify` never gets the
//! message in clear (the sender gets `451 4.7.5`). With `opportunistic`, a STARTTLS that
//! fails is followed by one attempt in clear on a new connection, as Postfix's `may` does.
//! After EHLO (and STARTTLS), XFORWARD or XCLIENT names the original client when configured
//! (see `forward_client`).
//!
//! A session whose transaction ended is given back to `relay_pool` (unless the pool is off
//! or XCLIENT made it one client's) and the next message starts with MAIL on it; a pooled
//! session found gone before its MAIL was accepted is replaced by a new connection once.
//! With the pool on, MAIL, the RCPTs and DATA go in one write to a next hop that offers
//! PIPELINING (RFC 2920), their replies read in order.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use smtp_proto::{EhloResponse, EXT_8BIT_MIME, EXT_PIPELINING, EXT_SIZE, EXT_START_TLS};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::{EdgeConfig, NextHopTls};
use crate::forward_client::{self, ForwardClient, OriginalClient};
use crate::metrics::HopClosed;
use crate::relay_pool::RelayPool;
use crate::reply::{self, Reply};
use crate::tls::{NextHopClient, TlsFacts};

/// What the next hop is asked to take.
pub(crate) struct Envelope<'a> {
    pub from: &'a str,
    pub recipients: &'a [String],
    pub eight_bit: bool,
    /// Who sent it to the edge, for XFORWARD or XCLIENT.
    pub client: OriginalClient<'a>,
}

/// The next hop's EHLO reply: the extensions smtp-proto reads (`EXT_*` bits) and its text,
/// where `forward_client` looks for XFORWARD and XCLIENT.
struct Ehlo {
    extensions: u32,
    text: String,
}

/// A reply of the next hop: code, its lines' texts, and the reply as received.
#[derive(Debug)]
struct Response {
    code: u16,
    text: String,
    raw: Vec<u8>,
}

enum Failure {
    /// Connection, timeout or protocol trouble: nobody holds the message.
    Down(String),
    /// The next hop answered `stage` with a refusal.
    Refused { stage: &'static str, response: Response },
    /// STARTTLS was wanted and did not happen: not offered, refused, or the handshake
    /// (certificate verification included) failed. No part of the message was sent.
    Tls(String),
}

/// Relays one message; the reply to give the sender for it.
#[tracing::instrument(name = "edge.relay", skip_all, fields(otel.kind = "client", next_hop = %config.next_hop))]
pub(crate) async fn relay(
    config: &EdgeConfig,
    tls: Option<&NextHopClient>,
    pool: &RelayPool,
    envelope: &Envelope<'_>,
    trace_header: &str,
    message: &[u8],
) -> Reply {
    let started = std::time::Instant::now();
    let outcome = send(config, tls, pool, envelope, trace_header, message).await;
    let kind = match &outcome {
        Ok(_) => "relayed",
        Err(Failure::Refused { .. }) => "refused",
        Err(Failure::Down(_)) => "down",
        Err(Failure::Tls(_)) => "tls_failed",
    };
    crate::metrics::metrics().relayed(kind, started.elapsed());
    match outcome {
        Ok(response) => reply::queued(&format!("relayed ({})", response.text)),
        Err(Failure::Down(why)) => {
            tracing::warn!(next_hop = %config.next_hop, error = %why, "relay failed");
            reply::next_hop_down()
        }
        Err(Failure::Tls(why)) => {
            tracing::warn!(next_hop = %config.next_hop, error = %why, "no verified TLS to the next hop; not relayed (next_hop_tls = verify)");
            reply::next_hop_not_verified()
        }
        Err(Failure::Refused { stage, response }) => {
            tracing::info!(next_hop = %config.next_hop, stage, code = response.code, text = %response.text, "next hop refused");
            refusal_reply(stage, &response)
        }
    }
}

/// The message on an idle pooled session if there is one, else on a new connection (and,
/// with `opportunistic`, in clear on another one if STARTTLS failed). A pooled session
/// found gone (closed, `421`, a timeout) before the next hop accepted MAIL held nothing of
/// the message: it goes on once on a new connection. Past that point a failure is the
/// message's, as on a new connection: never sent twice.
async fn send(
    config: &EdgeConfig,
    tls: Option<&NextHopClient>,
    pool: &RelayPool,
    envelope: &Envelope<'_>,
    trace_header: &str,
    message: &[u8],
) -> Result<Response, Failure> {
    if pool.enabled() {
        // Sessions in TLS are taken first; one in clear only where a new one could be.
        let kinds: &[bool] = match (tls.is_some(), config.next_hop_tls) {
            (false, _) => &[false],
            (true, NextHopTls::Verify) => &[true],
            (true, _) => &[true, false],
        };
        if let Some(mut session) = pool.take(kinds) {
            let result = session.transaction(config, true, envelope, trace_header, message).await;
            match result {
                Err(failure) if !session.client.mail_accepted && failure.gone() => {
                    tracing::debug!(next_hop = %config.next_hop, error = %failure, "a pooled session to the next hop was gone before MAIL; trying a new connection");
                    crate::metrics::metrics().hop_closed(HopClosed::ByNextHop);
                }
                result => {
                    finish(pool, session, &result).await;
                    return result;
                }
            }
        }
    }
    match attempt(config, tls, pool, envelope, trace_header, message).await {
        Err(Failure::Tls(why)) if config.next_hop_tls == NextHopTls::Opportunistic => {
            tracing::warn!(next_hop = %config.next_hop, error = %why, "STARTTLS to the next hop failed; relaying in clear (next_hop_tls = opportunistic)");
            attempt(config, None, pool, envelope, trace_header, message).await
        }
        outcome => outcome,
    }
}

/// A permanent refusal of the content (the final dot) is passed on; every other refusal
/// becomes a temporary failure carrying the next hop's text, because the sender cannot be
/// told about one recipient after DATA and must not lose the message.
fn refusal_reply(stage: &str, response: &Response) -> Reply {
    let (esc, text) = split_enhanced(&response.text);
    if response.code >= 500 && stage == "end of data" {
        return Reply::new(
            response.code,
            format!("{} Next hop refused the message: {text}", esc.unwrap_or("5.0.0")),
        );
    }
    let (code, esc) = if response.code / 100 == 4 {
        (response.code, esc.unwrap_or("4.4.0"))
    } else {
        (451, "4.4.0")
    };
    Reply::new(code, format!("{esc} Next hop refused {stage}: {} {}", response.code, response.text))
}

fn split_enhanced(text: &str) -> (Option<&str>, &str) {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    let parts: Vec<&str> = first.split('.').collect();
    let is_esc = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if is_esc {
        (Some(first), rest)
    } else {
        (None, text)
    }
}

/// One connection to the next hop, plain or TLS.
struct Client<S> {
    stream: BufReader<S>,
    command_timeout: Duration,
    /// The next hop took a pipelined DATA after refusing MAIL or a RCPT: it waits for
    /// content that must not come (it would be an empty message to the recipients it did
    /// take), so the connection can only be dropped, without QUIT.
    stuck_in_data: bool,
    /// The current transaction's MAIL got its 250: from here a failure is the message's.
    mail_accepted: bool,
}

/// A connection to the next hop: plain TCP, or TLS over it after STARTTLS.
enum HopStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl HopStream {
    /// Whether nothing waits to be read, nor the end of the stream: an idle SMTP session
    /// that the next hop has not closed or given a `421` since. Looks without waiting.
    fn quiet(&self) -> bool {
        let tcp = match self {
            HopStream::Plain(tcp) => tcp,
            HopStream::Tls(tls) => tls.get_ref().0,
        };
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tcp.poll_peek(&mut cx, &mut buf).is_pending()
    }
}

impl AsyncRead for HopStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HopStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HopStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HopStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HopStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HopStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HopStream::Plain(s) => Pin::new(s).poll_flush(cx),
            HopStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HopStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            HopStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An SMTP session with the next hop, greeted (and in TLS, if it went so), between
/// transactions: what `relay_pool` keeps.
pub(crate) struct HopSession {
    client: Client<HopStream>,
    /// The EHLO reply in force: its extensions, and what XFORWARD may name.
    ehlo: Ehlo,
    tls: bool,
    /// Transactions begun on it.
    messages: u32,
    /// The last transaction did not end with 250 to the final dot: RSET before MAIL.
    needs_rset: bool,
}

impl HopSession {
    fn new(client: Client<HopStream>, ehlo: Ehlo, tls: bool) -> Self {
        HopSession {
            client,
            ehlo,
            tls,
            messages: 0,
            needs_rset: false,
        }
    }

    /// Whether the session runs in TLS (part of the pool's key).
    pub(crate) fn tls(&self) -> bool {
        self.tls
    }

    /// Whether an idle session is as it was left: nothing buffered or waiting unread, the
    /// connection not closed by the next hop.
    pub(crate) fn quiet(&self) -> bool {
        self.client.stream.buffer().is_empty() && self.client.stream.get_ref().quiet()
    }

    /// Ends a session that is done with: QUIT, its reply awaited briefly, the connection
    /// shut; `reason` counted.
    pub(crate) async fn close(mut self, reason: HopClosed) {
        crate::metrics::metrics().hop_closed(reason);
        self.client.command_timeout = Duration::from_secs(1);
        if self.client.command("QUIT", "QUIT\r\n".into()).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.stream.get_mut().shutdown()).await;
        }
    }

    /// RSET when the last transaction was left unfinished, XFORWARD or XCLIENT as
    /// configured, then the transaction, its envelope pipelined if `pipeline` and the next
    /// hop offers it.
    async fn transaction(
        &mut self,
        config: &EdgeConfig,
        pipeline: bool,
        envelope: &Envelope<'_>,
        trace_header: &str,
        message: &[u8],
    ) -> Result<Response, Failure> {
        self.messages += 1;
        self.client.mail_accepted = false;
        if std::mem::replace(&mut self.needs_rset, true) {
            // A next hop that will not reset is no use for another message.
            let r = self.client.command("RSET", "RSET\r\n".into()).await?;
            if r.code != 250 {
                return Err(Failure::Down(format!("RSET refused: {} {}", r.code, r.text)));
            }
        }
        if let Some(ehlo) = self.client.forward_client(config, &self.ehlo, &envelope.client).await? {
            self.ehlo = ehlo;
        }
        let extensions = self.ehlo.extensions;
        let pipeline = pipeline && extensions & EXT_PIPELINING != 0;
        let result = self
            .client
            .transaction(config, extensions, pipeline, envelope, trace_header, message)
            .await;
        self.needs_rset = result.is_err();
        result
    }

    /// Why the session can take no more messages after `result`, if it cannot.
    fn spent(&self, result: &Result<Response, Failure>, max_messages: u32) -> Option<HopClosed> {
        match result {
            _ if self.client.stuck_in_data => Some(HopClosed::Failed),
            Err(failure) if failure.gone() => Some(HopClosed::Failed),
            Err(Failure::Tls(_)) => Some(HopClosed::Failed),
            _ if self.messages >= max_messages => Some(HopClosed::MaxMessages),
            _ => None,
        }
    }
}

impl Failure {
    /// The session cannot go on: the connection failed, or the next hop said `421`.
    fn gone(&self) -> bool {
        match self {
            Failure::Down(_) => true,
            Failure::Refused { response, .. } => response.code == 421,
            Failure::Tls(_) => false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Down(why) | Failure::Tls(why) => f.write_str(why),
            Failure::Refused { stage, response } => write!(f, "{stage} refused: {} {}", response.code, response.text),
        }
    }
}

/// One try on a new connection: greeting, EHLO, STARTTLS when wanted (`tls` is `None` for
/// a try in clear), the transaction; then the session goes back to the pool, or QUIT.
async fn attempt(
    config: &EdgeConfig,
    tls: Option<&NextHopClient>,
    pool: &RelayPool,
    envelope: &Envelope<'_>,
    trace_header: &str,
    message: &[u8],
) -> Result<Response, Failure> {
    let mut session = open(config, tls).await?;
    // Pool off: exactly as before it, one command at a time.
    let result = session.transaction(config, pool.enabled(), envelope, trace_header, message).await;
    finish(pool, session, &result).await;
    result
}

/// After a transaction: QUIT without waiting for its reply (the pool off, or the session
/// gone, as before the pool), or QUIT in a task of its own (too many messages), or back to
/// the pool.
async fn finish(pool: &RelayPool, mut session: HopSession, result: &Result<Response, Failure>) {
    let reason = if pool.enabled() {
        session.spent(result, pool.max_messages())
    } else {
        Some(HopClosed::Unpooled)
    };
    match reason {
        Some(reason @ (HopClosed::Unpooled | HopClosed::Failed)) => {
            if !session.client.stuck_in_data {
                session.client.quit().await;
            }
            crate::metrics::metrics().hop_closed(reason);
        }
        // Not on the sender's time.
        Some(reason) => drop(tokio::spawn(session.close(reason))),
        None => pool.put(session).await,
    }
}

/// A new connection, greeted, with STARTTLS when wanted.
async fn open(config: &EdgeConfig, tls: Option<&NextHopClient>) -> Result<HopSession, Failure> {
    let connect = Duration::from_secs(config.relay_connect_timeout_secs);
    let stream = match tokio::time::timeout(connect, TcpStream::connect(config.next_hop.as_str())).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Down(format!("connect: {e}"))),
        Err(_) => return Err(Failure::Down("connect timed out".into())),
    };
    let _ = stream.set_nodelay(true);
    let metrics = crate::metrics::metrics();
    metrics.hop_opened();
    let client = Client {
        stream: BufReader::new(HopStream::Plain(stream)),
        command_timeout: Duration::from_secs(config.relay_command_timeout_secs),
        stuck_in_data: false,
        mail_accepted: false,
    };
    let session = greet(config, tls, client).await;
    if session.is_err() {
        metrics.hop_closed(HopClosed::Failed);
    }
    session
}

async fn greet(config: &EdgeConfig, tls: Option<&NextHopClient>, mut client: Client<HopStream>) -> Result<HopSession, Failure> {
    client.expect("greeting", None, 220).await?;
    let ehlo = client.hello(&config.hostname).await?;
    let offered = ehlo.extensions & EXT_START_TLS != 0;
    let Some(tls) = tls.filter(|_| offered || config.next_hop_tls == NextHopTls::Verify) else {
        return Ok(HopSession::new(client, ehlo, false));
    };
    if !offered {
        client.quit().await;
        return Err(Failure::Tls("the next hop's EHLO reply does not offer STARTTLS".into()));
    }
    let mut client = client.start_tls(tls).await?;
    let ehlo = client.hello(&config.hostname).await?;
    Ok(HopSession::new(client, ehlo, true))
}

/// Says "not offered" in the log once per edge; the metric counts every time.
static NOT_OFFERED_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Client<HopStream> {
    /// STARTTLS and the handshake; the connection is unusable after an error.
    async fn start_tls(mut self, tls: &NextHopClient) -> Result<Client<HopStream>, Failure> {
        let r = match self.command("STARTTLS", "STARTTLS\r\n".into()).await {
            Ok(r) => r,
            Err(Failure::Down(why)) => return Err(Failure::Tls(format!("STARTTLS: {why}"))),
            Err(other) => return Err(other),
        };
        if r.code != 220 {
            return Err(Failure::Tls(format!("STARTTLS refused: {} {}", r.code, r.text)));
        }
        // Anything sent before the handshake would be read as if it came over TLS.
        if !self.stream.buffer().is_empty() {
            return Err(Failure::Tls("the next hop sent data after its reply to STARTTLS".into()));
        }
        let HopStream::Plain(tcp) = self.stream.into_inner() else {
            return Err(Failure::Tls("TLS is already active".into()));
        };
        let handshake = tls.connector.current().connect(tls.name.clone(), tcp);
        let stream = match tokio::time::timeout(self.command_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Failure::Tls(format!("TLS handshake: {e}"))),
            Err(_) => return Err(Failure::Tls("TLS handshake timed out".into())),
        };
        let facts = TlsFacts::of(stream.get_ref().1);
        tracing::debug!(version = %facts.version, cipher = %facts.cipher, certificate = ?facts.client_cert_name, "TLS to the next hop");
        Ok(Client {
            stream: BufReader::new(HopStream::Tls(Box::new(stream))),
            command_timeout: self.command_timeout,
            stuck_in_data: false,
            mail_accepted: false,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// EHLO `name`, or HELO if EHLO is refused (which offers nothing).
    async fn hello(&mut self, name: &str) -> Result<Ehlo, Failure> {
        let ehlo = self.command("EHLO", format!("EHLO {name}\r\n")).await?;
        if ehlo.code == 250 {
            return Ok(Ehlo {
                // A reply smtp-proto cannot read offers nothing it can use.
                extensions: EhloResponse::parse(&mut ehlo.raw.iter()).map_or(0, |r| r.capabilities),
                text: String::from_utf8_lossy(&ehlo.raw).into_owned(),
            });
        }
        self.expect("HELO", Some(format!("HELO {name}\r\n")), 250).await?;
        Ok(Ehlo {
            extensions: 0,
            text: String::new(),
        })
    }

    /// XFORWARD or XCLIENT naming `client`, as `next_hop_forward_client` asks and if `ehlo`
    /// offers it; the new EHLO reply in force afterwards, if any. XCLIENT starts the session
    /// again, as the client's: the EHLO that follows says the client's HELO name, which the
    /// next hop then records (its own, if the client's cannot go on a command line).
    /// XFORWARD names the client of the next transaction only (Postfix forgets it at the
    /// end of each), so it is sent before every MAIL of a pooled session.
    async fn forward_client(&mut self, config: &EdgeConfig, ehlo: &Ehlo, client: &OriginalClient<'_>) -> Result<Option<Ehlo>, Failure> {
        let Some(verb) = config.next_hop_forward_client.verb() else {
            return Ok(None);
        };
        let metrics = crate::metrics::metrics();
        let Some(line) = forward_client::command(verb, &ehlo.text, client) else {
            metrics.client_forwarded(verb, "not_offered");
            if !NOT_OFFERED_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(next_hop = %config.next_hop, command = verb, "the next hop does not offer {verb} to this edge (authorize it there); relaying without naming the client");
            }
            return Ok(None);
        };
        metrics.client_forwarded(verb, "sent");
        if config.next_hop_forward_client == ForwardClient::Xclient {
            self.expect("XCLIENT", Some(line), 220).await?;
            let usable = !client.helo.is_empty() && client.helo.len() <= 255 && client.helo.bytes().all(|b| b.is_ascii_graphic());
            return self.hello(if usable { client.helo } else { &config.hostname }).await.map(Some);
        }
        self.expect("XFORWARD", Some(line), 250).await?;
        Ok(None)
    }

    /// Best effort: the outcome is already known.
    async fn quit(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.get_mut().write_all(b"QUIT\r\n")).await;
    }

    async fn transaction(
        &mut self,
        config: &EdgeConfig,
        extensions: u32,
        pipeline: bool,
        envelope: &Envelope<'_>,
        trace_header: &str,
        message: &[u8],
    ) -> Result<Response, Failure> {
        let mut mail = format!("MAIL FROM:<{}>", envelope.from);
        if envelope.eight_bit && extensions & EXT_8BIT_MIME != 0 {
            mail.push_str(" BODY=8BITMIME");
        }
        if extensions & EXT_SIZE != 0 {
            mail.push_str(&format!(" SIZE={}", trace_header.len() + message.len()));
        }
        mail.push_str("\r\n");
        if pipeline {
            self.pipelined_envelope(mail, envelope.recipients).await?;
        } else {
            self.expect("MAIL", Some(mail), 250).await?;
            self.mail_accepted = true;
            for rcpt in envelope.recipients {
                let r = self.command("RCPT", format!("RCPT TO:<{rcpt}>\r\n")).await?;
                if r.code != 250 && r.code != 251 {
                    return Err(Failure::Refused {
                        stage: "RCPT",
                        response: r,
                    });
                }
            }
            self.expect("DATA", Some("DATA\r\n".into()), 354).await?;
        }
        let mut body = Vec::with_capacity(trace_header.len() + message.len() + message.len() / 64 + 8);
        body.extend_from_slice(trace_header.as_bytes());
        dot_stuff(message, &mut body);
        body.extend_from_slice(b".\r\n");
        let data_timeout = Duration::from_secs(config.relay_data_timeout_secs);
        match tokio::time::timeout(data_timeout, self.stream.get_mut().write_all(&body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::Down(format!("sending data: {e}"))),
            Err(_) => return Err(Failure::Down("sending data timed out".into())),
        }
        let saved = std::mem::replace(&mut self.command_timeout, data_timeout);
        let end = self.read_response().await;
        self.command_timeout = saved;
        let end = end?;
        if end.code != 250 {
            return Err(Failure::Refused {
                stage: "end of data",
                response: end,
            });
        }
        Ok(end)
    }

    /// MAIL (`mail`, a whole line), a RCPT per recipient and DATA in one write (RFC 2920),
    /// and their replies in order; Ok once DATA got 354 after all went well, else the first
    /// refusal. Every reply is read, so that the session stays in step for the next
    /// message, but a `421` ends it at once.
    async fn pipelined_envelope(&mut self, mut mail: String, recipients: &[String]) -> Result<(), Failure> {
        for rcpt in recipients {
            mail.push_str("RCPT TO:<");
            mail.push_str(rcpt);
            mail.push_str(">\r\n");
        }
        mail.push_str("DATA\r\n");
        match tokio::time::timeout(self.command_timeout, self.stream.get_mut().write_all(mail.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::Down(format!("sending MAIL: {e}"))),
            Err(_) => return Err(Failure::Down("sending MAIL timed out".into())),
        }
        let mut refused = None;
        let stages = std::iter::once("MAIL").chain(recipients.iter().map(|_| "RCPT"));
        for stage in stages {
            let response = self.read_response().await?;
            let ok = match stage {
                "MAIL" => response.code == 250,
                _ => response.code == 250 || response.code == 251,
            };
            if stage == "MAIL" && ok {
                self.mail_accepted = true;
            }
            if response.code == 421 {
                return Err(Failure::Refused { stage, response });
            }
            if !ok && refused.is_none() {
                refused = Some(Failure::Refused { stage, response });
            }
        }
        let data = self.read_response().await?;
        match refused {
            None if data.code == 354 => Ok(()),
            None => Err(Failure::Refused {
                stage: "DATA",
                response: data,
            }),
            Some(refusal) => {
                self.stuck_in_data = data.code == 354;
                Err(refusal)
            }
        }
    }

    async fn command(&mut self, what: &'static str, line: String) -> Result<Response, Failure> {
        match tokio::time::timeout(self.command_timeout, self.stream.get_mut().write_all(line.as_bytes())).await {
            Ok(Ok(())) => self.read_response().await,
            Ok(Err(e)) => Err(Failure::Down(format!("sending {what}: {e}"))),
            Err(_) => Err(Failure::Down(format!("sending {what} timed out"))),
        }
    }

    async fn expect(&mut self, stage: &'static str, line: Option<String>, code: u16) -> Result<Response, Failure> {
        let r = match line {
            Some(line) => self.command(stage, line).await?,
            None => self.read_response().await?,
        };
        if r.code != code {
            return Err(Failure::Refused { stage, response: r });
        }
        Ok(r)
    }

    /// One reply, all its lines (RFC 5321 4.2.1); texts joined by '\n'.
    async fn read_response(&mut self) -> Result<Response, Failure> {
        let mut texts = Vec::new();
        let mut raw = Vec::new();
        loop {
            let mut line = Vec::new();
            let read = tokio::time::timeout(self.command_timeout, (&mut self.stream).take(4096).read_until(b'\n', &mut line)).await;
            match read {
                Ok(Ok(0)) => return Err(Failure::Down("next hop closed the connection".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Failure::Down(format!("reading reply: {e}"))),
                Err(_) => return Err(Failure::Down("reply timed out".into())),
            }
            raw.extend_from_slice(&line);
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok()).filter(|c| (200..600).contains(c));
            let Some(code) = code else {
                return Err(Failure::Down(format!("malformed reply {line:?}")));
            };
            texts.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Response {
                    code,
                    text: texts.join("\n"),
                    raw,
                });
            }
        }
    }
}

/// Message content for the wire: every line CRLF-terminated and a leading dot doubled
/// (RFC 5321 4.5.2). `message` is already CRLF-normalised by the server side.
fn dot_stuff(message: &[u8], out: &mut Vec<u8>) {
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
}

/// The edge's own trace header (RFC 5321 4.4), prepended to relayed mail. The protocol is
/// `ESMTPS` after STARTTLS (RFC 3848), and a comment names the TLS version and cipher.
pub(crate) fn received_header(helo: &str, peer: SocketAddr, esmtp: bool, tls: Option<&TlsFacts>, by: &str, id: &str) -> String {
    let literal = match peer.ip() {
        std::net::IpAddr::V4(ip) => format!("[{ip}]"),
        std::net::IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let helo: String = helo.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    let with = match (esmtp, tls.is_some()) {
        (true, true) => "ESMTPS",
        (true, false) => "ESMTP",
        (false, _) => "SMTP",
    };
    let using = tls
        .map(|t| format!("\r\n\t(using {} with cipher {})", comment_safe(&t.version), comment_safe(&t.cipher)))
        .unwrap_or_default();
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000");
    format!("Received: from {helo} ({literal}){using}\r\n\tby {by} (Ratchet edge) with {with} id {id};\r\n\t{date}\r\n")
}

fn comment_safe(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_only() {
        let mut out = Vec::new();
        dot_stuff(b"a\r\n.b\r\n..\r\n.\r\nc. d\r\n", &mut out);
        assert_eq!(out, b"a\r\n..b\r\n...\r\n..\r\nc. d\r\n");
    }

    /// What `Client::hello` reads from a reply, through smtp-proto.
    fn extensions(reply: &str) -> u32 {
        EhloResponse::parse(&mut reply.as_bytes().iter()).map_or(0, |r| r.capabilities)
    }

    #[test]
    fn ehlo_replies_of_real_next_hops_are_read() {
        let postfix = "250-onprem-relay.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n\
                       250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
        let exchange = "250-BN8NAM11FT066.mail.protection.outlook.com Hello [192.0.2.1]\r\n250-SIZE 157286400\r\n\
                        250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH GSSAPI NTLM\r\n250-X-EXPS GSSAPI NTLM\r\n\
                        250-STARTTLS\r\n250-8BITMIME\r\n250-XRDST\r\n250 SMTPUTF8\r\n";
        for reply in [postfix, exchange] {
            let found = extensions(reply);
            assert_eq!(
                found & (EXT_START_TLS | EXT_8BIT_MIME | EXT_SIZE),
                EXT_START_TLS | EXT_8BIT_MIME | EXT_SIZE,
                "{reply}"
            );
        }
        assert_eq!(extensions("250-smtp-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n") & EXT_START_TLS, 0);
        assert_eq!(extensions("250 only.a.name\r\n"), 0);
    }

    #[test]
    fn refusals_become_temporary_except_content() {
        let r = |code, text: &str| Response {
            code,
            text: text.into(),
            raw: Vec::new(),
        };
        assert_eq!(
            refusal_reply("RCPT", &r(550, "5.1.1 no such user")).to_wire(),
            "451 4.4.0 Next hop refused RCPT: 550 5.1.1 no such user\r\n"
        );
        assert_eq!(
            refusal_reply("RCPT", &r(452, "4.2.2 full")).to_wire(),
            "452 4.2.2 Next hop refused RCPT: 452 4.2.2 full\r\n"
        );
        assert_eq!(
            refusal_reply("end of data", &r(554, "5.6.0 bad content")).to_wire(),
            "554 5.6.0 Next hop refused the message: bad content\r\n"
        );
        assert!(refusal_reply("end of data", &r(451, "later")).to_wire().starts_with("451 4.4.0 "));
    }

    #[test]
    fn received_header_names_the_client_and_the_edge() {
        let h = received_header(
            "EXCH1.bear.local",
            "10.0.0.5:4711".parse().unwrap(),
            true,
            None,
            "edge1.example",
            "ABC",
        );
        assert!(h.starts_with("Received: from EXCH1.bear.local ([10.0.0.5])\r\n\tby edge1.example (Ratchet edge) with ESMTP id ABC;\r\n\t"));
        assert!(h.ends_with("+0000\r\n"));
        let tls = TlsFacts {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            client_cert_name: None,
        };
        let h = received_header(
            "EXCH1.bear.local",
            "10.0.0.5:4711".parse().unwrap(),
            true,
            Some(&tls),
            "edge1.example",
            "ABC",
        );
        assert!(h.starts_with(
            "Received: from EXCH1.bear.local ([10.0.0.5])\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\tby edge1.example (Ratchet edge) with ESMTPS id ABC;\r\n\t"
        ));
    }
}
