//! One milter connection's packets: read (a 4-octet length, a command code, its data),
//! parsed by miltr-common, handed to the `Session`, and answered only where the MTA waits
//! for an answer.
//!
//! Why not miltr-server's loop: it answers every command, and has no `SMFIR_ACCEPT`. Here
//! option negotiation asks the MTA not to wait after CONNECT, HELO and each header (the
//! `SMFIP_NR_*` flags of protocol version 6, where the MTA offers them), and the end of
//! the headers answers accept or the refusal: a message costs the MTA two round trips to
//! the milter (negotiation, end of headers) instead of one per header and stage, which is
//! most of what a milter costs Postfix (bench/notes.md). An MTA that offers none of this
//! gets an answer to every command, as before.
//!
//! A packet is at most `max_packet` octets; a longer, empty, truncated or unparsable one, or
//! an unknown command, ends the connection (the MTA applies its default action). No packet
//! within `idle_timeout_secs` ends it too.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use miltr_common::decoding::ClientCommand;
use miltr_common::encoding::Writable;
use miltr_common::optneg::{OptNeg, Protocol};
use miltr_common::ProtocolError;
use ratchet_edge::reply::Reply;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::session::{Response, Session};

/// How a conversation ended other than by the MTA closing it or saying QUIT.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    #[error("no packet for {0:?}")]
    Idle(Duration),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ProtocolError> for Ended {
    fn from(error: ProtocolError) -> Self {
        Ended::Protocol(error.to_string())
    }
}

pub(crate) async fn converse<S>(stream: S, session: &mut Session, max_packet: usize, idle: Duration) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    // What was negotiated: the steps skipped, and those the MTA need not wait on (NR_*).
    let mut negotiated = Protocol::empty();
    while let Some(command) = read_command(&mut stream, max_packet, idle).await? {
        let response = match command {
            ClientCommand::OptNeg(theirs) => {
                let ours = session.negotiate(&theirs)?;
                negotiated = ours.protocol;
                send(&mut stream, &optneg_packet(&ours)).await?;
                continue;
            }
            ClientCommand::Macro(macros) => {
                session.macros(&macros);
                continue;
            }
            ClientCommand::Connect(connect) => {
                session.connect(&connect);
                (!negotiated.contains(Protocol::NR_CONNECT)).then_some(Response::Continue)
            }
            ClientCommand::Helo(_) => (!negotiated.contains(Protocol::NR_HELO)).then_some(Response::Continue),
            ClientCommand::Header(header) => {
                let response = session.header(&header);
                (!negotiated.contains(Protocol::NR_HEADER)).then_some(response)
            }
            ClientCommand::EndOfHeader(_) => Some(session.end_of_headers().await),
            ClientCommand::EndOfBody(_) => Some(session.end_of_message().await),
            // Skipped by negotiation; an MTA that sends them anyway is told to go on.
            ClientCommand::Mail(_)
            | ClientCommand::Recipient(_)
            | ClientCommand::Data(_)
            | ClientCommand::Unknown(_)
            | ClientCommand::Body(_) => Some(Response::Continue),
            ClientCommand::Abort(_) => {
                session.abort();
                None
            }
            // The MTA reuses the connection for a new SMTP session.
            ClientCommand::QuitNc(_) => {
                session.reset();
                None
            }
            ClientCommand::Quit(_) => return Ok(()),
        };
        if let Some(response) = response {
            send(&mut stream, &response_packet(&response)).await?;
        }
    }
    Ok(())
}

/// The next command, or `None` when the MTA closed the connection between packets.
async fn read_command<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
    max_packet: usize,
    idle: Duration,
) -> Result<Option<ClientCommand>, Ended> {
    let closed = tokio::time::timeout(idle, stream.fill_buf())
        .await
        .map_err(|_| Ended::Idle(idle))??
        .is_empty();
    if closed {
        return Ok(None);
    }
    let mut length = [0u8; 4];
    read_exactly(stream, &mut length, idle).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > max_packet {
        return Err(Ended::Protocol(format!("a packet of {length} octets (1 to {max_packet} taken)")));
    }
    let mut packet = BytesMut::zeroed(length);
    read_exactly(stream, &mut packet, idle).await?;
    Ok(Some(ClientCommand::parse(packet)?))
}

async fn read_exactly<S: AsyncRead + Unpin>(stream: &mut BufReader<S>, into: &mut [u8], idle: Duration) -> Result<(), Ended> {
    match tokio::time::timeout(idle, stream.read_exact(into)).await {
        Err(_) => Err(Ended::Idle(idle)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Ended::Protocol("a truncated packet".into())),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(_)) => Ok(()),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>, packet: &[u8]) -> Result<(), Ended> {
    stream.get_mut().write_all(packet).await?;
    Ok(())
}

fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + data.len());
    packet.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
    packet.push(code);
    packet.extend_from_slice(data);
    packet
}

fn optneg_packet(ours: &OptNeg) -> Vec<u8> {
    let mut data = BytesMut::with_capacity(ours.len());
    ours.write(&mut data);
    packet(ours.code(), &data)
}

/// `SMFIR_CONTINUE`, `SMFIR_ACCEPT`, or `SMFIR_REPLYCODE` with the reply's exact line. The
/// MTA reads `%` as an escape (Sendmail's `smfi_setreply` convention, which Postfix
/// follows), so a literal one is doubled.
fn response_packet(response: &Response) -> Vec<u8> {
    match response {
        Response::Continue => packet(b'c', &[]),
        Response::Accept => packet(b'a', &[]),
        Response::Refuse(reply) => {
            let mut line = BytesMut::new();
            line.put_slice(reply_line(reply).as_bytes());
            line.put_u8(0);
            packet(b'y', &line)
        }
    }
}

fn reply_line(reply: &Reply) -> String {
    reply.to_wire().trim_end().replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_out_verbatim_with_percent_escaped() {
        let line = "450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.";
        let sent = response_packet(&Response::Refuse(Reply::parse_line(line).unwrap()));
        assert_eq!(&sent[..4], &(line.len() as u32 + 2).to_be_bytes());
        assert_eq!(sent[4], b'y');
        assert_eq!(&sent[5..], format!("{line}\0").as_bytes());
        let sent = response_packet(&Response::Refuse(Reply::new(550, "5.7.230 100% blocked")));
        assert_eq!(&sent[5..], b"550 5.7.230 100%% blocked\0");
        assert_eq!(response_packet(&Response::Accept), [0, 0, 0, 1, b'a']);
        assert_eq!(response_packet(&Response::Continue), [0, 0, 0, 1, b'c']);
    }
}
