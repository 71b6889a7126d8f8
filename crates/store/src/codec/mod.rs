//! The one place where what a decider stores and replicates gets its bytes.
//!
//! Every log entry, Raft message, state record and snapshot is encoded as a protobuf
//! message of `proto/ratchet/state/v1/state.proto`, so the format is explicit, versioned
//! by field numbers, and readable by a later release. The Rust types the rules work with
//! (most of them from the policy crate) are converted here and nowhere else; renaming a
//! field of a rules type cannot change what is on disk.
//!
//! A stored value is `[FORMAT_VERSION][protobuf message]`. The version byte says how to
//! read the rest: a value of a version this binary does not know is refused with that
//! version named, never guessed at. Decoding checks what protobuf cannot (a required
//! message present, a CIDR that parses, an instant in range) and names the field at fault.
//!
//! One submodule per area: `raft` (log ids, votes, membership, entries), `rpc` (the Raft
//! messages between deciders, which carry those), `command`
//! (requests and what apply answers), `records` (tenants, servers, events) and `policy`.

mod command;
mod policy;
mod raft;
mod records;
mod rpc;

use prost::Message;
use ratchet_policy::Timestamp;

pub use ratchet_proto::state::v1 as pb;

/// The format of every stored value and snapshot written by this release.
pub const FORMAT_VERSION: u8 = 1;

/// A type with a protobuf form in the stored schema.
pub trait Codec: Sized {
    type Message: Message + Default;

    fn to_message(&self) -> Self::Message;

    fn from_message(message: Self::Message) -> Result<Self, DecodeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty value")]
    Empty,
    #[error("written in format v{0}, which this release cannot read (it reads v{FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("not a valid protobuf message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("{0}: missing")]
    Missing(&'static str),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl DecodeError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The stored bytes of a value: the format version, then its protobuf message.
pub fn encode<T: Codec>(value: &T) -> Vec<u8> {
    let message = value.to_message();
    let mut bytes = Vec::with_capacity(1 + message.encoded_len());
    bytes.push(FORMAT_VERSION);
    message.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

/// Reads a value written by `encode`.
pub fn decode<T: Codec>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, message) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    T::from_message(T::Message::decode(message)?)
}

/// Converts a message that must be present.
fn required<T: Codec>(field: &'static str, message: Option<T::Message>) -> Result<T, DecodeError> {
    T::from_message(message.ok_or(DecodeError::Missing(field))?)
}

/// Converts a message that may be absent.
fn optional<T: Codec>(message: Option<T::Message>) -> Result<Option<T>, DecodeError> {
    message.map(T::from_message).transpose()
}

fn each<T: Codec>(messages: Vec<T::Message>) -> Result<Vec<T>, DecodeError> {
    messages.into_iter().map(T::from_message).collect()
}

fn messages<'a, T: Codec + 'a>(values: impl IntoIterator<Item = &'a T>) -> Vec<T::Message> {
    values.into_iter().map(Codec::to_message).collect()
}

impl Codec for Timestamp {
    type Message = prost_types::Timestamp;

    fn to_message(&self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.timestamp(),
            nanos: self.timestamp_subsec_nanos() as i32,
        }
    }

    fn from_message(message: prost_types::Timestamp) -> Result<Self, DecodeError> {
        u32::try_from(message.nanos)
            .ok()
            .and_then(|nanos| Timestamp::from_timestamp(message.seconds, nanos))
            .ok_or_else(|| DecodeError::invalid("timestamp", format!("{}s {}ns is not an instant", message.seconds, message.nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_keep_every_nanosecond() {
        let at = Timestamp::from_timestamp(1_790_000_000, 123_456_789).unwrap();
        assert_eq!(decode::<Timestamp>(&encode(&at)).unwrap(), at);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused_by_name() {
        let at = Timestamp::from_timestamp(0, 0).unwrap();
        let mut bytes = encode(&at);
        bytes[0] = 9;
        let error = decode::<Timestamp>(&bytes).unwrap_err().to_string();
        assert!(error.contains("format v9"), "{error}");
        assert!(matches!(decode::<Timestamp>(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            decode::<Timestamp>(&[FORMAT_VERSION, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
    }
}
