//! TCP from an MTA, acknowledged at once.
//!
//! Postfix writes its milter packets one after another without waiting for an answer (a
//! stage's macros, then its command; with the no-reply flags also CONNECT, HELO and every
//! header), and Nagle's algorithm holds each small write until the one before it has been
//! acknowledged. A receiver that delays its acknowledgements (Linux: up to 40 ms) then
//! stalls the MTA once or more in every SMTP session. Over a Unix socket there is no such
//! wait; over TCP the milter asks the kernel for quick acknowledgements again after every
//! read, since the kernel leaves that mode on its own (`TCP_QUICKACK`, tcp(7)).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) struct QuickAck(pub TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) {
            // Best effort: a socket that refuses it is only slower.
            let _ = SockRef::from(&self.0).set_tcp_quickack(true);
        }
        read
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
