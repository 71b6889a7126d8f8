//! gRPC message limits, set deliberately on every server and client of the public APIs
//! (tonic's default is 4 MiB for decoding and no limit for encoding).
//!
//! - Requests are small (the largest is a policy's TOML): servers decode at most
//!   `MAX_REQUEST_BYTES`, and clients refuse to send more.
//! - Replies are bounded by design: the listings that grow with a tenant or with time
//!   (`Report`, `ListEvents`, `ListAudit`) come in pages of at most `MAX_REPORT_PAGE_SIZE`
//!   servers / `MAX_EVENTS_PAGE_SIZE` events / `MAX_AUDIT_PAGE_SIZE` entries; `SaveSnapshot` streams 1 MiB chunks. `MAX_REPLY_BYTES`
//!   covers a full page of servers with the longest names and every stage counted, with room
//!   to spare, and the connector table of `WatchConnectors` at a few hundred thousand
//!   connectors. A reply over it fails with RESOURCE_EXHAUSTED naming the limit, on the
//!   decider (encoding) as on the client (decoding), rather than exhausting memory.
//! - The internal Raft service has its own limit (`MAX_RAFT_MESSAGE_BYTES` in the decider).

/// The largest request a decider decodes on the admin, cluster and decision services.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// The largest reply a decider encodes, and a client (`ratchet ctl`, the edge) decodes.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// Servers per `Report` page when the request names no page size, and the most it may name.
pub const DEFAULT_REPORT_PAGE_SIZE: u32 = 1_000;
pub const MAX_REPORT_PAGE_SIZE: u32 = 10_000;
/// Events per `ListEvents` page when the request names no page size, and the most it may name.
pub const DEFAULT_EVENTS_PAGE_SIZE: u32 = 1_000;
pub const MAX_EVENTS_PAGE_SIZE: u32 = 10_000;
/// Entries per `ListAudit` page when the request names no page size, and the most it may name.
pub const DEFAULT_AUDIT_PAGE_SIZE: u32 = 1_000;
pub const MAX_AUDIT_PAGE_SIZE: u32 = 10_000;
