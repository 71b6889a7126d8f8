//! The decider's HTTP listener over TLS (when it has a certificate), and who may see what
//! there: `/healthz`, `/readyz` and `/metrics` stay open (probes and Prometheus), the report
//! pages and `/api/...` need a client certificate with role viewer, and the pause form one
//! with role operator (shared/spec/cli.md). A browser presents the certificate `ratchet
//! certs issue` made, imported as PKCS#12 (see the README).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use futures::StreamExt;
use ratchet_tls::grpc::TlsConnection;
use ratchet_tls::{Caller, Role, TlsIncoming, Watched};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

/// Connections whose TLS handshake is done, for `axum::serve`.
pub struct TlsListener {
    incoming: ReceiverStream<std::io::Result<TlsConnection>>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<Watched<Arc<rustls::ServerConfig>>>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            incoming: TlsIncoming::new(listener, config),
            local,
        })
    }
}

/// The caller of an HTTP request, as `ConnectInfo` (a type of this crate, as axum needs).
#[derive(Clone, Debug)]
pub struct PageCaller(pub Caller);

impl Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = PageCaller;

    async fn accept(&mut self) -> (TlsConnection, PageCaller) {
        loop {
            match self.incoming.next().await {
                Some(Ok(connection)) => {
                    let caller = PageCaller(connection.caller().clone());
                    return (connection, caller);
                }
                Some(Err(_)) => continue,
                // The accept loop ended: nothing will ever come again.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<PageCaller> {
        Ok(PageCaller(Caller {
            remote: self.local,
            identity: None,
        }))
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PageCaller {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> PageCaller {
        stream.remote_addr().clone()
    }
}

/// The role a page needs; `None`: open.
fn role_needed(method: &Method, path: &str) -> Option<Role> {
    match path {
        "/healthz" | "/readyz" | "/metrics" => None,
        _ if method == Method::POST && path.ends_with("/pause") => Some(Role::Operator),
        _ => Some(Role::Viewer),
    }
}

/// Middleware: refuses a request whose caller's certificate does not carry the role needed.
pub async fn require_role(ConnectInfo(PageCaller(caller)): ConnectInfo<PageCaller>, request: Request, next: Next) -> Response {
    let Some(needed) = role_needed(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    match &caller.identity {
        None => (
            StatusCode::UNAUTHORIZED,
            format!("this page needs a client certificate of the cluster CA with role {needed}\n"),
        )
            .into_response(),
        Some(identity) if identity.role.includes(needed) => next.run(request).await,
        Some(identity) => (
            StatusCode::FORBIDDEN,
            format!(
                "this page needs role {needed}; your certificate is {identity} (role {})\n",
                identity.role
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_stay_open_and_the_pause_form_needs_an_operator() {
        assert_eq!(role_needed(&Method::GET, "/readyz"), None);
        assert_eq!(role_needed(&Method::GET, "/metrics"), None);
        assert_eq!(role_needed(&Method::GET, "/tenants/acme"), Some(Role::Viewer));
        assert_eq!(role_needed(&Method::GET, "/api/v1/tenants/acme/report"), Some(Role::Viewer));
        assert_eq!(role_needed(&Method::POST, "/tenants/acme/pause"), Some(Role::Operator));
    }
}
