//! TLS on every Ratchet link (shared/spec/cli.md, "Transport security and roles").
//!
//! - [`certs`]: `ratchet certs init|issue`, a cluster CA and certificates that carry their
//!   role in a SPIFFE ID.
//! - [`identity`]: reading that role back from a certificate, and how the roles nest.
//! - [`files`]: PEM files on disk, read with errors that name the file and the fault, and
//!   [`files::Watched`], a configuration rebuilt when its files change.
//! - [`grpc`]: mutual TLS for tonic: the listener side ([`grpc::TlsIncoming`], whose
//!   connections tell each request who called) and the dialing side ([`grpc::Dialer`]).
//!
//! Everything uses rustls on the ring provider, like the edge's STARTTLS.

pub mod certs;
pub mod files;
pub mod grpc;
pub mod identity;

pub use files::{TlsFiles, Watched};
pub use grpc::{Caller, Dialer, TlsIncoming};
pub use identity::{Identity, Role};

/// The one crypto provider of every TLS object in Ratchet.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
