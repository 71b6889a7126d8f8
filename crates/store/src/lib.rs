//! Ratchet's replicated state: the commands that change it, the state machine that applies
//! them, and the RocksDB storage that openraft runs on.
//!
//! Why openraft 0.9.25, pinned exactly: 0.9 is openraft's stable line. Its API is frozen,
//! it gives read-index linearizable reads (`Raft::ensure_linearizable`), and snapshots are
//! sent in chunks over any transport. The 0.10 alphas add lease reads and streamed append,
//! but still change their storage and network traits from one alpha to the next; a
//! consensus library is the last dependency that should move under us. The pin is exact
//! (`=0.9.25`) because openraft changes behaviour in patch releases.
//!
//! Layout:
//! - `types`: the openraft type configuration, node identity, and storage error helpers.
//! - `command`: what clients propose (tenants, connectors, sightings, pauses, policy, counts)
//!   and what apply answers; validation of every field.
//! - `model`: the stored records (tenants, servers with counters).
//! - `codec`: the stored and replicated schema (protobuf, `proto/ratchet/state/v1`), and the
//!   conversions between it and the types the rules work with.
//! - `rocks`: the RocksDB database, its column families, key encoding and memory bounds.
//! - `paging`: bounded pages of a tenant's servers or events, read straight from RocksDB.
//! - `snapshot`: the snapshot file format, streamed and checksummed.
//! - `observe`: what storage reports about its own work (durations, snapshot sizes) to the
//!   decider's metrics.
//! - `apply`: the deterministic state transitions, one function per command.
//! - `log_store` and `state_machine`: openraft's storage traits on RocksDB.
//! - `retention`: what a retention sweep deletes (servers no longer seen, old events).
//! - `schedule`: which policy is in force at an instant, the current or a scheduled one.
//! - `view`: what the decider reads from the applied state, with in-memory caches for the
//!   small, hot parts (policy, tenants, connectors).

// openraft's `StorageError` is large by design; boxing it at every call would only add noise.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod codec;
pub mod command;
pub mod connector_feed;
pub mod log_store;
pub mod model;
pub mod observe;
pub mod paging;
pub mod retention;
pub mod rocks;
pub mod schedule;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod view;

pub use command::{Applied, Command, CommandError, ErrorKind, Notice, Observation, Request, Response, ServerSighting};
pub use connector_feed::{ConnectorChange, ConnectorDelta, ConnectorFeed};
pub use log_store::LogStore;
pub use model::{AuditRecord, Connector, Event, EventKind, ServerEntry, Tenant};
pub use observe::StorageObserver;
pub use paging::{Page, PageStart};
pub use retention::{SweepCursor, SweepPhase};
pub use rocks::{StorageOptions, Store};
pub use schedule::{PolicySchedule, VersionedPolicy};
pub use state_machine::StateMachine;
pub use types::{Node, NodeId, TypeConfig};
pub use view::StateView;
