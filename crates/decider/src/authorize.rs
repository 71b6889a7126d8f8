//! Who may call what: the role table of shared/spec/cli.md ("Transport security and
//! roles"), enforced for every gRPC call in one place, a tower layer in front of all the
//! services, before any handler runs.
//!
//! The caller's identity comes from its verified client certificate (see
//! `ratchet_tls::grpc`), never from anything it sends. A call without a certificate gets
//! `UNAUTHENTICATED`; a call outside its role `PERMISSION_DENIED`, naming the role needed.
//! On a plaintext listener (loopback, or `--insecure`) there are no identities and the
//! layer lets everything through: that is what serving plaintext means.

use std::task::{Context, Poll};

use ratchet_tls::{Caller, Role};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

/// The role a method needs, by its gRPC path; `None`: open to anyone (health checks).
pub fn role_needed(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        "grpc.health.v1.Health" => None,
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => Some(Role::Viewer),
        "ratchet.v1.Decision" => Some(Role::Edge),
        "ratchet.v1.Admin" => Some(match method {
            "ListTenants" | "ListConnectors" | "Report" | "ListPauses" | "GetPolicy" | "ListEvents" | "ListAudit" => Role::Viewer,
            "SetPolicy" | "SaveSnapshot" => Role::Admin,
            // AddTenant, SetTenantMode, RemoveTenant, AddConnector, RemoveConnector,
            // ImportServer, DecommissionServer, Pause, EndPause, SetWebhook, and any method
            // added later until it is placed here.
            _ => Role::Operator,
        }),
        "ratchet.v1.Cluster" => Some(match method {
            "Status" => Role::Viewer,
            _ => Role::Admin,
        }),
        // The internal Raft service, and anything not named above.
        _ => Some(Role::Peer),
    }
}

/// Why a call is refused, or `None` when it may go on.
fn refusal(path: &str, caller: Option<&Caller>) -> Option<Status> {
    let needed = role_needed(path)?;
    let Some(caller) = caller else {
        // A plaintext connection: no identities to check.
        return None;
    };
    match &caller.identity {
        None => Some(Status::unauthenticated(format!(
            "{path} needs a client certificate of the cluster CA with role {needed}; none was presented"
        ))),
        Some(identity) if identity.role.includes(needed) => None,
        Some(identity) => Some(Status::permission_denied(format!(
            "{path} needs role {needed}; the caller is {identity} (role {})",
            identity.role
        ))),
    }
}

/// Whether another decider made the call (one passing on a call it received, whose own
/// node has recorded it in the audit trail already).
pub fn from_peer<T>(request: &tonic::Request<T>) -> bool {
    matches!(request.extensions().get::<Caller>(), Some(Caller { identity: Some(identity), .. }) if identity.role == Role::Peer)
}

/// Who made a call, in words for the audit trail: the certificate's SPIFFE ID, or the
/// address of a caller on a plaintext listener.
pub fn actor_of<T>(request: &tonic::Request<T>) -> String {
    match request.extensions().get::<Caller>() {
        Some(Caller {
            identity: Some(identity), ..
        }) => identity.spiffe_id(),
        Some(Caller { remote, identity: None }) => format!("unauthenticated {}", remote.ip()),
        None => match request.remote_addr() {
            Some(remote) => format!("plaintext {}", remote.ip()),
            None => "unknown".into(),
        },
    }
}

#[derive(Clone, Copy, Default)]
pub struct AuthorizeLayer;

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Authorize<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<futures::future::Ready<Result<http::Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match refusal(request.uri().path(), request.extensions().get::<Caller>()) {
            Some(status) => {
                crate::metrics::metrics().refused_call(status.code());
                tracing::info!(path = request.uri().path(), reason = status.message(), "call refused");
                futures::future::Either::Left(futures::future::ready(Ok(status.into_http())))
            }
            None => futures::future::Either::Right(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_places_every_method_of_the_contract() {
        let cases = [
            ("/ratchet.v1.Raft/AppendEntries", Some(Role::Peer)),
            ("/ratchet.v1.Raft/Forward", Some(Role::Peer)),
            ("/ratchet.v1.Admin/SetPolicy", Some(Role::Admin)),
            ("/ratchet.v1.Cluster/AddLearner", Some(Role::Admin)),
            ("/ratchet.v1.Admin/Pause", Some(Role::Operator)),
            ("/ratchet.v1.Admin/SetTenantMode", Some(Role::Operator)),
            ("/ratchet.v1.Admin/RemoveTenant", Some(Role::Operator)),
            ("/ratchet.v1.Admin/RemoveConnector", Some(Role::Operator)),
            ("/ratchet.v1.Admin/Report", Some(Role::Viewer)),
            ("/ratchet.v1.Cluster/Status", Some(Role::Viewer)),
            ("/ratchet.v1.Decision/Decide", Some(Role::Edge)),
            ("/grpc.health.v1.Health/Check", None),
            ("/something.Else/Method", Some(Role::Peer)),
        ];
        for (path, role) in cases {
            assert_eq!(role_needed(path), role, "{path}");
        }
    }
}
