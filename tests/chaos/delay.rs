//! Distance between "regions": a userspace TCP proxy that delays every byte by a one-way
//! latency with jitter (this kernel has no netem), and that stalls a direction the
//! nemesis has cut, as a dropped link does (nothing arrives until it heals; TCP then
//! carries on).
//!
//! A node reaches a peer in another region through its own proxy listener: a DNAT rule in
//! the node's namespace sends its connections for the peer's address to the proxy (see
//! `Net::delay`), which connects on to the peer. Bytes keep their order: each direction
//! delivers a chunk no earlier than the one before it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The directed pairs of hosts whose bytes do not get through: (from, to).
pub type Cuts = Arc<Mutex<HashSet<(u8, u8)>>>;

/// One-way latency and its jitter (uniform in [latency - jitter, latency + jitter]).
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub one_way: Duration,
    pub jitter: Duration,
}

/// Serves `listener` until the runtime stops: each connection from host `from` goes on to
/// `target` (host `to`), delayed both ways.
pub fn spawn(listener: TcpListener, from: u8, to: u8, target: SocketAddr, latency: Latency, cuts: Cuts) {
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let cuts = cuts.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else { return };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(one_way(in_read, out_write, (from, to), latency, cuts.clone()));
                tokio::spawn(one_way(out_read, in_write, (to, from), latency, cuts));
            });
        }
    });
}

fn is_cut(cuts: &Cuts, direction: (u8, u8)) -> bool {
    cuts.lock().unwrap().contains(&direction)
}

async fn until_healed(cuts: &Cuts, direction: (u8, u8)) {
    while is_cut(cuts, direction) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Carries one direction: chunks are read as they come, each stamped with when it may be
/// delivered, and written at that time by a second task, so that latency does not limit
/// throughput.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: (u8, u8),
    latency: Latency,
    cuts: Cuts,
) {
    let (queue, mut delivered) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer_cuts = cuts.clone();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = delivered.recv().await {
            tokio::time::sleep_until(at).await;
            until_healed(&writer_cuts, direction).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut last = Instant::now();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        until_healed(&cuts, direction).await;
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let spread = latency.jitter.as_micros() as i64;
        let offset = rand::rng().random_range(-spread..=spread);
        let delay = Duration::from_micros((latency.one_way.as_micros() as i64 + offset).max(0) as u64);
        last = last.max(Instant::now() + delay);
        if queue.send((last, buffer[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(queue);
    let _ = writer.await;
}
