//! The one error of the decider, told apart by what the caller may do next: fix a field,
//! change the state first, ask another node, try again, or report a fault.
//!
//! Everything inside the crate (the proposer, the report, page tokens, the leader lookup,
//! membership changes, the decision) returns this type. It becomes a `tonic::Status` only
//! where a gRPC service answers (`From<Error> for Status`, used by `?` in the service
//! impls) and an HTTP status only where the HTTP listener answers (`http_status`, used by
//! `http` and `page`). Callers inside the crate match on the variants, never on a message
//! or a gRPC code. Each message is the whole text a caller sees, unchanged by either
//! conversion.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ratchet_store::{CommandError, ErrorKind};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is wrong (`field` names it): asking again as it is is futile.
    #[error("{field}: {problem}")]
    BadField { field: String, problem: String },
    /// Refused by the state's rules before it reached the log (invalid, unknown tenant, no
    /// such member), so the audit trail has no entry for it yet: asking again is futile.
    #[error("{0}")]
    Refused(CommandError),
    /// Refused by apply: it is in the log (and so in the audit trail), changed nothing,
    /// and asking again is futile.
    #[error("{0}")]
    RefusedAtApply(CommandError),
    /// Refused by the group's own state (membership, leadership, terms): nothing changed;
    /// it may succeed once that state has changed.
    #[error("{0}")]
    Precondition(String),
    /// This node may not answer from its own state now (out of touch with a quorum, clock
    /// off, stopping): ask another.
    #[error("{0}")]
    NotFresh(String),
    /// Certainly not done, for want of a leader: safe to try again.
    #[error("{0}")]
    NoLeader(String),
    /// A write that may or may not have been made: try again only with the same request id.
    #[error("{0}")]
    Indeterminate(String),
    /// This node's Raft or a peer cannot answer now (nothing was written): try again later.
    #[error("{0}")]
    Unavailable(String),
    /// A fault on this node (storage, an answer that cannot be): not the caller's doing.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn bad_field(field: impl Into<String>, problem: impl std::fmt::Display) -> Error {
        Error::BadField {
            field: field.into(),
            problem: problem.to_string(),
        }
    }

    pub fn internal(fault: impl std::fmt::Display) -> Error {
        Error::Internal(fault.to_string())
    }

    /// A tenant named in the request does not exist (the report, the pages, a write).
    pub fn unknown_tenant(name: &str) -> Error {
        Error::Refused(CommandError::unknown_tenant(name))
    }

    /// Whether this is `unknown_tenant`: the pages show their own page for it.
    pub fn is_unknown_tenant(&self) -> bool {
        matches!(self, Error::Refused(refusal) | Error::RefusedAtApply(refusal) if refusal.kind == ErrorKind::NotFound && refusal.field == "tenant")
    }

    /// The answer of the HTTP listener (the report API and the pages) to this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::BadField { .. } => StatusCode::BAD_REQUEST,
            Error::Refused(refusal) | Error::RefusedAtApply(refusal) => match refusal.kind {
                ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
            },
            Error::Precondition(_) => StatusCode::CONFLICT,
            Error::NotFresh(_) | Error::NoLeader(_) | Error::Indeterminate(_) | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The report API's plain-text answer: the status, and the message on one line.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.http_status(), format!("{self}\n")).into_response()
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::BadField { .. } => Status::invalid_argument(message),
            Error::Refused(refusal) | Error::RefusedAtApply(refusal) => match refusal.kind {
                ErrorKind::InvalidArgument => Status::invalid_argument(message),
                ErrorKind::NotFound => Status::not_found(message),
                ErrorKind::AlreadyExists => Status::already_exists(message),
                ErrorKind::FailedPrecondition => Status::failed_precondition(message),
            },
            Error::Precondition(_) => Status::failed_precondition(message),
            Error::NotFresh(_) | Error::NoLeader(_) | Error::Indeterminate(_) | Error::Unavailable(_) => Status::unavailable(message),
            Error::Internal(_) => Status::internal(message),
        }
    }
}

/// A store fault, reading this node's state.
impl From<ratchet_store::rocks::StoreError> for Error {
    fn from(fault: ratchet_store::rocks::StoreError) -> Error {
        Error::internal(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_tenant_is_not_found_over_grpc_and_http_with_the_same_text() {
        let error = Error::unknown_tenant("owl");
        assert!(error.is_unknown_tenant());
        assert_eq!(error.http_status(), StatusCode::NOT_FOUND);
        let status = Status::from(error);
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "tenant: no tenant named \"owl\"");
    }

    #[test]
    fn a_refusal_keeps_its_kind_before_the_log_and_at_apply() {
        let taken = CommandError {
            kind: ErrorKind::AlreadyExists,
            field: "name".into(),
            message: "taken".into(),
        };
        for error in [Error::Refused(taken.clone()), Error::RefusedAtApply(taken)] {
            assert_eq!(error.http_status(), StatusCode::CONFLICT);
            assert_eq!(Status::from(error).code(), tonic::Code::AlreadyExists);
        }
        let missing_member = Error::Refused(CommandError::not_found("name", "no member named \"x\""));
        assert!(!missing_member.is_unknown_tenant());
    }

    #[test]
    fn whatever_may_be_tried_again_is_unavailable() {
        for error in [
            Error::NotFresh("stale".into()),
            Error::NoLeader("no leader".into()),
            Error::Indeterminate("maybe".into()),
            Error::Unavailable("down".into()),
        ] {
            assert_eq!(error.http_status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(Status::from(error).code(), tonic::Code::Unavailable);
        }
        let field = Error::bad_field("page_size", "7 is over the limit of 5");
        assert_eq!(field.to_string(), "page_size: 7 is over the limit of 5");
        assert_eq!(Status::from(field).code(), tonic::Code::InvalidArgument);
    }
}
