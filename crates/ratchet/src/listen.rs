//! The listeners a command binds, each failure naming the flag that gave the address.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

pub async fn bind(flag: &str, address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("{flag} {address}"))
}

/// [`bind`] for an optional flag (`--http`).
pub async fn bind_optional(flag: &str, address: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match address {
        Some(address) => Ok(Some(bind(flag, address).await?)),
        None => Ok(None),
    }
}
