//! openraft's RPC messages in the internal Raft service's protobuf form
//! (`proto/ratchet/v1/raft.proto`). They carry the stored schema's log ids, votes,
//! membership and entries, so replication and storage share one encoding.

use openraft::error::{InstallSnapshotError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::SnapshotSegmentId;
use ratchet_proto::v1 as rpc;

use super::{each, messages, optional, required, Codec, DecodeError};
use crate::types::{NodeId, TypeConfig};

type Vote = openraft::Vote<NodeId>;

impl Codec for AppendEntriesRequest<TypeConfig> {
    type Message = rpc::AppendEntriesRequest;

    fn to_message(&self) -> rpc::AppendEntriesRequest {
        rpc::AppendEntriesRequest {
            vote: Some(self.vote.to_message()),
            prev_log_id: self.prev_log_id.as_ref().map(Codec::to_message),
            entries: messages(&self.entries),
            leader_commit: self.leader_commit.as_ref().map(Codec::to_message),
        }
    }

    fn from_message(message: rpc::AppendEntriesRequest) -> Result<Self, DecodeError> {
        Ok(AppendEntriesRequest {
            vote: required("vote", message.vote)?,
            prev_log_id: optional(message.prev_log_id)?,
            entries: each(message.entries)?,
            leader_commit: optional(message.leader_commit)?,
        })
    }
}

impl Codec for AppendEntriesResponse<NodeId> {
    type Message = rpc::AppendEntriesResponse;

    fn to_message(&self) -> rpc::AppendEntriesResponse {
        use rpc::append_entries_response::Result as R;
        let result = match self {
            AppendEntriesResponse::Success => R::Success(rpc::Accepted {}),
            AppendEntriesResponse::PartialSuccess(matching) => R::PartialSuccess(rpc::PartialSuccess {
                matching: matching.as_ref().map(Codec::to_message),
            }),
            AppendEntriesResponse::Conflict => R::Conflict(rpc::Accepted {}),
            AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote.to_message()),
        };
        rpc::AppendEntriesResponse { result: Some(result) }
    }

    fn from_message(message: rpc::AppendEntriesResponse) -> Result<Self, DecodeError> {
        use rpc::append_entries_response::Result as R;
        Ok(
            match message.result.ok_or(DecodeError::Missing("append_entries_response.result"))? {
                R::Success(_) => AppendEntriesResponse::Success,
                R::PartialSuccess(partial) => AppendEntriesResponse::PartialSuccess(optional(partial.matching)?),
                R::Conflict(_) => AppendEntriesResponse::Conflict,
                R::HigherVote(vote) => AppendEntriesResponse::HigherVote(Vote::from_message(vote)?),
            },
        )
    }
}

impl Codec for VoteRequest<NodeId> {
    type Message = rpc::VoteRequest;

    fn to_message(&self) -> rpc::VoteRequest {
        rpc::VoteRequest {
            vote: Some(self.vote.to_message()),
            last_log_id: self.last_log_id.as_ref().map(Codec::to_message),
        }
    }

    fn from_message(message: rpc::VoteRequest) -> Result<Self, DecodeError> {
        Ok(VoteRequest::new(required("vote", message.vote)?, optional(message.last_log_id)?))
    }
}

impl Codec for VoteResponse<NodeId> {
    type Message = rpc::VoteResponse;

    fn to_message(&self) -> rpc::VoteResponse {
        rpc::VoteResponse {
            vote: Some(self.vote.to_message()),
            vote_granted: self.vote_granted,
            last_log_id: self.last_log_id.as_ref().map(Codec::to_message),
        }
    }

    fn from_message(message: rpc::VoteResponse) -> Result<Self, DecodeError> {
        Ok(VoteResponse {
            vote: required("vote", message.vote)?,
            vote_granted: message.vote_granted,
            last_log_id: optional(message.last_log_id)?,
        })
    }
}

impl Codec for InstallSnapshotRequest<TypeConfig> {
    type Message = rpc::InstallSnapshotRequest;

    fn to_message(&self) -> rpc::InstallSnapshotRequest {
        rpc::InstallSnapshotRequest {
            vote: Some(self.vote.to_message()),
            meta: Some(self.meta.to_message()),
            offset: self.offset,
            data: self.data.clone(),
            done: self.done,
        }
    }

    fn from_message(message: rpc::InstallSnapshotRequest) -> Result<Self, DecodeError> {
        Ok(InstallSnapshotRequest {
            vote: required("vote", message.vote)?,
            meta: required("meta", message.meta)?,
            offset: message.offset,
            data: message.data,
            done: message.done,
        })
    }
}

/// A chunk's answer: the receiver's vote, or the chunk it expected instead.
impl Codec for Result<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
    type Message = rpc::InstallSnapshotResponse;

    fn to_message(&self) -> rpc::InstallSnapshotResponse {
        use rpc::install_snapshot_response::Result as R;
        let segment = |s: &SnapshotSegmentId| rpc::SnapshotSegment {
            snapshot_id: s.id.clone(),
            offset: s.offset,
        };
        let result = match self {
            Ok(response) => R::Vote(response.vote.to_message()),
            Err(InstallSnapshotError::SnapshotMismatch(mismatch)) => R::Mismatch(rpc::SnapshotMismatch {
                expect: Some(segment(&mismatch.expect)),
                got: Some(segment(&mismatch.got)),
            }),
        };
        rpc::InstallSnapshotResponse { result: Some(result) }
    }

    fn from_message(message: rpc::InstallSnapshotResponse) -> Result<Self, DecodeError> {
        use rpc::install_snapshot_response::Result as R;
        let segment = |field: &'static str, s: Option<rpc::SnapshotSegment>| {
            let s = s.ok_or(DecodeError::Missing(field))?;
            Ok::<_, DecodeError>(SnapshotSegmentId {
                id: s.snapshot_id,
                offset: s.offset,
            })
        };
        Ok(
            match message.result.ok_or(DecodeError::Missing("install_snapshot_response.result"))? {
                R::Vote(vote) => Ok(InstallSnapshotResponse {
                    vote: Vote::from_message(vote)?,
                }),
                R::Mismatch(mismatch) => Err(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                    expect: segment("mismatch.expect", mismatch.expect)?,
                    got: segment("mismatch.got", mismatch.got)?,
                })),
            },
        )
    }
}
