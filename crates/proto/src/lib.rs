//! The protobuf messages and gRPC services generated from `proto/`.
//!
//! - `v1`: the gRPC APIs, public (decision, admin, cluster) and internal (raft).
//! - `state::v1`: what deciders store and replicate (log entries, commands, records); the
//!   store crate converts it to and from the types the rules work with.
//! - `limits`: gRPC message limits and page sizes, shared by the deciders and their clients.

pub mod v1 {
    tonic::include_proto!("ratchet.v1");

    /// Encoded descriptors of every ratchet.v1 service, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ratchet_v1_descriptor");
}

pub mod state {
    pub mod v1 {
        tonic::include_proto!("ratchet.state.v1");
    }
}

pub mod limits;
pub mod trace_context;
