//! Framing of one SMTP connection: CRLF (or bare LF) terminated lines with a length limit
//! and a deadline, and replies buffered until the server would otherwise wait for input.
//!
//! Buffering replies until the read side runs dry is what makes PIPELINING (RFC 2920)
//! work: a client that sends MAIL, RCPT, RCPT, DATA in one packet gets the four replies,
//! in order, in one packet. Every read also watches the server's "shut down now" signal so
//! that no session outlives the shutdown grace period.
//!
//! The stream type is generic: after STARTTLS the same framing reads a TLS stream over the
//! same socket; nothing here depends on plain TCP. What was buffered before the handshake
//! is thrown away ([`Connection::discard_input`]) so that plaintext cannot pose as
//! protected input.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::reply::Reply;

/// Replies are written out once this much is pending, even while input is buffered, so
/// that a client that pipelines without reading cannot grow our buffer without bound.
const MAX_PENDING_WRITE: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// One line of input without its terminator.
#[derive(Debug)]
pub(crate) struct Line {
    pub bytes: Vec<u8>,
    /// The line ended in LF alone, not CRLF.
    pub bare_lf: bool,
}

#[derive(Debug)]
pub(crate) enum ReadError {
    /// The line exceeded the limit; it has been consumed up to and including its LF.
    TooLong,
    /// No complete line before the deadline.
    Timeout,
    /// The server is shutting down and the grace period is over.
    Shutdown,
    /// The client closed the connection, or it failed.
    Closed,
}

pub(crate) struct Connection<S> {
    stream: S,
    input: Vec<u8>,
    consumed: usize,
    output: Vec<u8>,
    write_timeout: Duration,
    force_close: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, write_timeout: Duration, force_close: watch::Receiver<bool>) -> Self {
        Self {
            stream,
            input: Vec::with_capacity(READ_CHUNK),
            consumed: 0,
            output: Vec::new(),
            write_timeout,
            force_close,
        }
    }

    /// Queues a reply; it is written before the next read that has to wait.
    pub async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        crate::metrics::metrics().reply(reply.code);
        self.output.extend_from_slice(reply.to_wire().as_bytes());
        if self.output.len() >= MAX_PENDING_WRITE {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        match tokio::time::timeout(self.write_timeout, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client does not read its replies")),
        }
    }

    /// The stream, e.g. for a TLS handshake. Flush and discard the buffers first.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Forgets input read but not yet consumed; the number of octets forgotten.
    pub fn discard_input(&mut self) -> usize {
        let unread = self.input.len() - self.consumed;
        self.input.clear();
        self.consumed = 0;
        unread
    }

    /// A signal that fires when the server wants every session closed now.
    pub fn force_close_signal(&self) -> watch::Receiver<bool> {
        self.force_close.clone()
    }

    /// The next line, at most `limit` octets including its terminator, within `timeout`.
    pub async fn read_line(&mut self, limit: usize, timeout: Duration) -> Result<Line, ReadError> {
        let deadline = Instant::now() + timeout;
        let mut discarding = false;
        let mut searched = self.consumed;
        loop {
            if let Some(offset) = self.input[searched..].iter().position(|&b| b == b'\n') {
                let lf = searched + offset;
                let start = self.consumed;
                self.consumed = lf + 1;
                if discarding || lf + 1 - start > limit {
                    return Err(ReadError::TooLong);
                }
                let mut bytes = self.input[start..lf].to_vec();
                let bare_lf = bytes.last() != Some(&b'\r');
                if !bare_lf {
                    bytes.pop();
                }
                return Ok(Line { bytes, bare_lf });
            }
            if self.input.len() - self.consumed > limit {
                // Overlong: forget what we have and skip to the end of the line.
                discarding = true;
                self.input.clear();
                self.consumed = 0;
            }
            searched = self.input.len() - self.consumed;
            self.fill(deadline).await?;
        }
    }

    /// Raw octets framed by `frame`, which sees the unread input and answers how many
    /// leading octets to take (and what they were), or that it needs more. For what is
    /// not made of lines (the PROXY protocol's header); the octets taken are consumed.
    pub async fn read_framed<T>(&mut self, timeout: Duration, mut frame: impl FnMut(&[u8]) -> Framed<T>) -> Result<T, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Framed::Taken(len, framed) = frame(&self.input[self.consumed..]) {
                self.consumed += len;
                return Ok(framed);
            }
            self.fill(deadline).await?;
        }
    }

    /// Input read and not yet consumed (after a read failed: what came before the end).
    pub fn unread(&self) -> &[u8] {
        &self.input[self.consumed..]
    }

    /// Nothing complete is buffered: answers what we owe, then waits for more input.
    /// Consumed input is dropped, so offsets into the unread input stay valid.
    async fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        if self.flush().await.is_err() {
            return Err(ReadError::Closed);
        }
        self.input.drain(..self.consumed);
        self.consumed = 0;
        self.input.reserve(READ_CHUNK);
        let mut force = self.force_close.clone();
        tokio::select! {
            read = self.stream.read_buf(&mut self.input) => match read {
                Ok(0) | Err(_) => Err(ReadError::Closed),
                Ok(_) => Ok(()),
            },
            _ = tokio::time::sleep_until(deadline) => Err(ReadError::Timeout),
            _ = wait_for_force(&mut force) => Err(ReadError::Shutdown),
        }
    }
}

/// What a framing function of [`Connection::read_framed`] makes of the unread input.
pub(crate) enum Framed<T> {
    /// Not enough input to tell yet.
    More,
    /// The first `.0` octets are taken, as `.1` (0 octets: nothing there to take).
    Taken(usize, T),
}

/// Resolves once the server asks every session to close now; never if it cannot ask.
pub(crate) async fn wait_for_force(force: &mut watch::Receiver<bool>) {
    if force.wait_for(|&now| now).await.is_err() {
        std::future::pending::<()>().await;
    }
}
