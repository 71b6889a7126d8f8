//! The next hop of `ratchet dev` when none is given: a local SMTP server that takes every
//! message and prints one line for it, so a newcomer sees where accepted mail went.
//! Written by hand because it only ever talks to our own edge on loopback; the edge is
//! the part that must stand up to the world.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = session(stream).await {
                eprintln!("sink: session failed: {error}");
            }
        });
    }
}

async fn session(stream: TcpStream) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    writer.write_all(b"220 ratchet-dev-sink ESMTP\r\n").await?;
    let (mut from, mut to, mut subject) = (String::new(), Vec::new(), String::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 ratchet-dev-sink\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_owned();
            to.clear();
            b"250 2.1.0 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_owned());
            b"250 2.1.5 ok\r\n"
        } else if upper == "DATA" {
            writer.write_all(b"354 go ahead\r\n").await?;
            let mut bytes = 0;
            subject.clear();
            while let Some(content) = lines.next_line().await? {
                if content == "." {
                    break;
                }
                if subject.is_empty() && content.to_ascii_lowercase().starts_with("subject:") {
                    subject = content[8..].trim().to_owned();
                }
                bytes += content.len() + 2;
            }
            println!(
                "sink: delivered from {from} to {} ({bytes} bytes, subject {subject:?})",
                to.join(", ")
            );
            b"250 2.0.0 delivered to the dev sink\r\n"
        } else if upper == "QUIT" {
            writer.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 2.0.0 ok\r\n"
        };
        writer.write_all(reply).await?;
    }
    Ok(())
}
