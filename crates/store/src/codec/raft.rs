//! openraft's own values in the stored schema: log ids, votes, membership, snapshot
//! descriptions and log entries. The Raft RPCs between deciders carry these same messages.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, EntryPayload, Membership};

use super::{optional, pb, required, Codec, DecodeError};
use crate::command::Request;
use crate::types::{Entry, LogId, Node, NodeId, SnapshotMeta, StoredMembership};

impl Codec for LogId {
    type Message = pb::LogId;

    fn to_message(&self) -> pb::LogId {
        pb::LogId {
            term: self.leader_id.term,
            node_id: self.leader_id.node_id,
            index: self.index,
        }
    }

    fn from_message(message: pb::LogId) -> Result<Self, DecodeError> {
        Ok(LogId::new(CommittedLeaderId::new(message.term, message.node_id), message.index))
    }
}

impl Codec for openraft::Vote<NodeId> {
    type Message = pb::Vote;

    fn to_message(&self) -> pb::Vote {
        pb::Vote {
            term: self.leader_id.term,
            node_id: self.leader_id.node_id,
            committed: self.committed,
        }
    }

    fn from_message(message: pb::Vote) -> Result<Self, DecodeError> {
        Ok(match message.committed {
            true => openraft::Vote::new_committed(message.term, message.node_id),
            false => openraft::Vote::new(message.term, message.node_id),
        })
    }
}

impl Codec for Node {
    type Message = pb::Node;

    fn to_message(&self) -> pb::Node {
        pb::Node {
            name: self.name.clone(),
            address: self.address.clone(),
        }
    }

    fn from_message(message: pb::Node) -> Result<Self, DecodeError> {
        Ok(Node {
            name: message.name,
            address: message.address,
        })
    }
}

impl Codec for Membership<NodeId, Node> {
    type Message = pb::Membership;

    fn to_message(&self) -> pb::Membership {
        pb::Membership {
            configs: self
                .get_joint_config()
                .iter()
                .map(|voters| pb::NodeIds {
                    ids: voters.iter().copied().collect(),
                })
                .collect(),
            nodes: self.nodes().map(|(id, node)| (*id, node.to_message())).collect(),
        }
    }

    fn from_message(message: pb::Membership) -> Result<Self, DecodeError> {
        let configs: Vec<BTreeSet<NodeId>> = message.configs.into_iter().map(|c| c.ids.into_iter().collect()).collect();
        let nodes = message
            .nodes
            .into_iter()
            .map(|(id, node)| Ok((id, Node::from_message(node)?)))
            .collect::<Result<BTreeMap<_, _>, DecodeError>>()?;
        Ok(Membership::new(configs, nodes))
    }
}

impl Codec for StoredMembership {
    type Message = pb::StoredMembership;

    fn to_message(&self) -> pb::StoredMembership {
        pb::StoredMembership {
            log_id: self.log_id().as_ref().map(Codec::to_message),
            membership: Some(self.membership().to_message()),
        }
    }

    fn from_message(message: pb::StoredMembership) -> Result<Self, DecodeError> {
        Ok(StoredMembership::new(
            optional(message.log_id)?,
            required("membership", message.membership)?,
        ))
    }
}

impl Codec for SnapshotMeta {
    type Message = pb::SnapshotMeta;

    fn to_message(&self) -> pb::SnapshotMeta {
        pb::SnapshotMeta {
            last_log_id: self.last_log_id.as_ref().map(Codec::to_message),
            last_membership: Some(self.last_membership.to_message()),
            snapshot_id: self.snapshot_id.clone(),
        }
    }

    fn from_message(message: pb::SnapshotMeta) -> Result<Self, DecodeError> {
        Ok(SnapshotMeta {
            last_log_id: optional(message.last_log_id)?,
            last_membership: required("last_membership", message.last_membership)?,
            snapshot_id: message.snapshot_id,
        })
    }
}

impl Codec for Entry {
    type Message = pb::Entry;

    fn to_message(&self) -> pb::Entry {
        use pb::entry::Payload;
        pb::Entry {
            log_id: Some(self.log_id.to_message()),
            payload: Some(match &self.payload {
                EntryPayload::Blank => Payload::Blank(pb::Blank {}),
                EntryPayload::Normal(request) => Payload::Request(request.to_message()),
                EntryPayload::Membership(membership) => Payload::Membership(membership.to_message()),
            }),
        }
    }

    fn from_message(message: pb::Entry) -> Result<Self, DecodeError> {
        use pb::entry::Payload;
        let payload = match message.payload.ok_or(DecodeError::Missing("entry.payload"))? {
            Payload::Blank(_) => EntryPayload::Blank,
            Payload::Request(request) => EntryPayload::Normal(Request::from_message(request)?),
            Payload::Membership(membership) => EntryPayload::Membership(Membership::from_message(membership)?),
        };
        Ok(Entry {
            log_id: required("entry.log_id", message.log_id)?,
            payload,
        })
    }
}
