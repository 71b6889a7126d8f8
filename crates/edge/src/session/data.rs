//! DATA (RFC 5321 4.1.1.4): receives the content, dot-unstuffed and CRLF-normalised.
//!
//! Only CRLF "." CRLF ends the content. A line ending in a bare LF is, by default, taken
//! as if it ended in CRLF (Postfix's `normalize`), but it never helps to end the content:
//! `<LF>.<CRLF>` and `<CRLF>.<LF>` are content, so nobody can smuggle a second message
//! past this edge, and the content the next hop receives has only CRLF line ends.
//!
//! Whatever is wrong with the content (too big, a line too long, NUL bytes, a bare LF in
//! `reject` mode) is only answered after the end of data, as RFC 5321 requires: the
//! client is still sending and would read nothing before it finishes.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session};
use crate::config::BareLf;
use crate::connection::ReadError;
use crate::metrics::HeldMessage;
use crate::reply::{self, Reply};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn data(&mut self) -> Flow {
        let has_recipients = self.transaction.as_ref().map(|t| !t.recipients.is_empty());
        match has_recipients {
            None => return self.error(reply::bad_sequence("need MAIL command")).await,
            Some(false) => return self.error(reply::bad_sequence("need RCPT command")).await,
            Some(true) => {}
        }
        if self.reply(reply::start_data()).await == Flow::Close {
            return Flow::Close;
        }
        let received = self.receive().await;
        let transaction = self.transaction.take().expect("checked above");
        let host = self.shared.config.hostname.clone();
        let flow = match received {
            Ok(Ok(message)) => self.deliver(transaction, message).await,
            Ok(Err(refusal)) => self.reply(refusal).await,
            Err(ReadError::Timeout) => self.close_with(reply::timeout(&host)).await,
            Err(ReadError::Shutdown) => self.close_with(reply::shutting_down(&host)).await,
            Err(ReadError::Closed | ReadError::TooLong) => Flow::Close,
        };
        self.forget_forwarded();
        flow
    }

    /// The content up to the final dot, or the reply that refuses it.
    async fn receive(&mut self) -> Result<Result<HeldMessage, Reply>, ReadError> {
        let config = &self.shared.config;
        let (max_size, max_line, timeout, bare_lf_mode) =
            (config.max_message_size, config.max_data_line, config.data_timeout(), config.bare_lf);
        let mut message = HeldMessage::default();
        let mut refusal: Option<Reply> = None;
        // The CRLF that ended the DATA command counts: a "." right after 354 ends the content.
        let mut after_crlf = true;
        loop {
            let line = match self.conn.read_line(max_line, timeout).await {
                Ok(line) => line,
                Err(ReadError::TooLong) => {
                    refusal.get_or_insert_with(reply::data_line_too_long);
                    message = HeldMessage::default();
                    after_crlf = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if after_crlf && !line.bare_lf && line.bytes == b"." {
                break;
            }
            after_crlf = !line.bare_lf;
            if refusal.is_some() {
                continue;
            }
            if line.bare_lf && bare_lf_mode == BareLf::Reject {
                refusal = Some(reply::bare_lf());
            } else if line.bytes.contains(&0) {
                refusal = Some(reply::nul_in_message());
            }
            // RFC 5321 4.5.2: a leading dot is removed when other characters follow it.
            let content = match line.bytes.as_slice() {
                [b'.', rest @ ..] if !rest.is_empty() => rest,
                all => all,
            };
            if message.len() + content.len() + 2 > max_size {
                refusal.get_or_insert_with(reply::message_too_big);
            }
            if refusal.is_some() {
                message = HeldMessage::default();
                continue;
            }
            message.extend_from_slice(content);
            message.extend_from_slice(b"\r\n");
        }
        Ok(match refusal {
            Some(r) => Err(r),
            None => Ok(message),
        })
    }
}
