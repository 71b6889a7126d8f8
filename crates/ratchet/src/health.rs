//! The edge's HTTP listener: `/healthz` says the process is alive.

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, Router::new().route("/healthz", get(|| async { "ok\n" }))).await
}
