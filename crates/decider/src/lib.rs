//! The decision service: one decider node, its gRPC APIs, and Raft networking over tonic.
//!
//! Where a message's verdict is made, in four places:
//! - computed: `verdict::decide`, from this node's state (policy, server record, pauses);
//! - replicated: `proposer` (a sighting or a count, through Raft; `ratchet_store::apply`);
//! - spoken in SMTP: `ratchet_edge::verdict` (for the edge and the milter alike);
//! - turned from a protobuf into a domain type and back: `convert`.
//!
//! - `node`: starts a node: identity, storage, Raft, servers, and founding the cluster.
//! - `identity`: the node id, persisted in the data directory for life.
//! - `network` and `raft_service`: openraft's RPCs carried over gRPC, both directions.
//! - `peers`: the shared channels to other deciders, and where the leader is.
//! - `proposer`: writes from any node, forwarded to the leader; linearizable reads.
//! - `handover`: a stopping leader hands leadership to a caught-up voter first.
//! - `decision`, `admin`, `cluster`: the public gRPC services (`decision` also takes the
//!   edges' numbered count flushes); they convert (`convert`), call, and convert back.
//! - `verdict`: the verdict for one message, as a domain function.
//! - `convert`: every protobuf conversion of the services.
//! - `error`: the one error type, which becomes a gRPC or HTTP status only at those edges.
//! - `authorize`: the role each gRPC method needs, checked in front of every service.
//! - `freshness`, `skew`: when this node may answer (in touch with a quorum, clock in step).
//! - `sightings`: first sightings committed in the background, in batches.
//! - `notifications`: the leader's scan for time-driven notices and webhook delivery;
//!   `webhook`: one signed POST, to public addresses only.
//! - `retention`: the leader's pacing of the retention sweep.
//! - `report`: the tenant report, one schema for gRPC, HTTP and the CLI, in pages.
//! - `page_token`: the opaque tokens of paged listings (report, events).
//! - `http`: health, readiness, metrics and the report API; `http_tls`: the same over TLS,
//!   with the role each page needs; `http_state`: what its handlers and the pages share;
//!   `page`: the admin pages.
//! - `metrics`: the Prometheus metrics served by `http`.
//! - `clock`: the one place a decider reads the time.
//! - `restore`: seeding a node of a new group from a backup.
//!
//! The modules are private; what the binary and the tests use is re-exported below, and
//! `restore` and `webhook` stay public paths because `restore::seed` and
//! `webhook::signature` read better than the bare names.

mod admin;
mod authorize;
mod clock;
mod cluster;
mod config;
mod convert;
mod decision;
mod error;
mod freshness;
mod handover;
mod http;
mod http_state;
mod http_tls;
mod identity;
mod metrics;
mod network;
mod node;
mod notifications;
mod page;
mod page_token;
mod peers;
mod proposer;
mod raft_service;
mod report;
pub mod restore;
mod retention;
mod sightings;
mod skew;
mod verdict;
pub mod webhook;

pub use clock::Clock;
pub use config::DeciderConfig;
pub use node::{Decider, DeciderOptions};
pub use report::{ReportPage, ServerRow, TenantReport};
