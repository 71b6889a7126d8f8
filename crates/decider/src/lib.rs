//! The decision service: one decider node, its gRPC APIs, and Raft networking over tonic.
//!
//! - `node`: starts a node: identity, storage, Raft, servers, and founding the cluster.
//! - `identity`: the node id, persisted in the data directory for life.
//! - `network` and `raft_service`: openraft's RPCs carried over gRPC, both directions.
//! - `peers`: the shared channels to other deciders, and where the leader is.
//! - `proposer`: writes from any node, forwarded to the leader; linearizable reads.
//! - `handover`: a stopping leader hands leadership to a caught-up voter first.
//! - `decision`, `admin`, `cluster`: the public gRPC services (`decision` also takes the
//!   edges' numbered count flushes).
//! - `authorize`: the role each gRPC method needs, checked in front of every service.
//! - `freshness`, `skew`: when this node may answer (in touch with a quorum, clock in step).
//! - `sightings`: first sightings committed in the background, in batches.
//! - `notifications`: the leader's scan for time-driven notices and webhook delivery;
//!   `webhook`: one signed POST, to public addresses only.
//! - `retention`: the leader's pacing of the retention sweep.
//! - `report`: the tenant report, one schema for gRPC, HTTP and the CLI, in pages.
//! - `page_token`: the opaque tokens of paged listings (report, events).
//! - `http`: health, readiness, metrics and the report API; `http_tls`: the same over TLS,
//!   with the role each page needs; `http_state`: what its handlers and the pages share.
//! - `metrics`: the Prometheus metrics served by `http`.
//! - `clock`: the one place a decider reads the time.
//! - `restore`: seeding a node of a new group from a backup.

pub mod admin;
pub mod authorize;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod decision;
pub mod freshness;
pub mod handover;
pub mod http;
pub mod http_state;
pub mod http_tls;
pub mod identity;
pub mod metrics;
pub mod network;
pub mod node;
pub mod notifications;
pub mod page;
pub mod page_token;
pub mod peers;
pub mod proposer;
pub mod raft_service;
pub mod report;
pub mod restore;
pub mod retention;
pub mod sightings;
pub mod skew;
pub mod status;
pub mod webhook;

pub use config::DeciderConfig;
pub use node::{Decider, DeciderOptions};
