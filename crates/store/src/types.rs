//! The openraft type configuration and node identity, in one place.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Request, Response};

pub type NodeId = u64;

/// A decider as the group knows it: its name (for people) and its gRPC address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub address: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.address)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = tokio::fs::File,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Raft = openraft::Raft<TypeConfig>;

/// Wraps any storage failure as openraft's "could not read or write the store".
pub fn read_error(error: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::read(&error).into()
}

pub fn write_error(error: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::write(&error).into()
}
