//! The ratchet.v1 protobuf messages and gRPC services, generated from `proto/`.

pub mod v1 {
    tonic::include_proto!("ratchet.v1");

    /// Encoded descriptors of every ratchet.v1 service, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ratchet_v1_descriptor");
}

pub mod trace_context;
