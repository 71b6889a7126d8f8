//! Where a protobuf becomes a domain type, and a domain type a protobuf: every conversion
//! of the decider's gRPC services, so that the handlers convert in, call, and convert out,
//! and never build a message field by field. The orphan rule allows `From` only for the
//! decider's own types (`Decided`); `ProposeOutcome` implements the store's `Codec`, as
//! the Raft messages do; the rest are free functions named after what they build. The
//! store's own codec (`ratchet_store::codec`, the Raft messages) stays with the store.
//!
//! - `decision`: the Decision API (a question in, a verdict out, counts, connectors).
//! - `admin`: the Admin API (tenants, pauses, events, the audit trail, the policy).
//! - `cluster`: the Cluster API (status, membership) and forwarded writes.

mod admin;
mod cluster;
mod decision;

pub use admin::{
    audit, connector_claim, events, imported, instant, key, pause_ended, pause_granted, pauses, policies, policy_set, precise_rfc3339,
    report, tenant_summary,
};
pub use cluster::{cluster_status, membership};
pub use decision::{connector, connector_delta, connector_snapshot, observation, question};
