//! Ratchet's enforcement rules, and nothing else.
//!
//! Every other part of Ratchet asks one question: given what the cluster knows of a
//! server, its tenant's pauses, the policy and the time, what happens to this message?
//! This crate is the one answer to it. It has no I/O, no async and reads no clock: every
//! instant is passed in, so the decider's state machine, the CLI and the tests all get
//! the same answer for the same inputs. The rules themselves are stated in
//! `shared/spec/enforcement.md`; each module here implements one part of that text.

pub mod clock;
pub mod connectors;
pub mod episode;
pub mod evaluate;
pub mod mode;
pub mod pause;
pub mod policy;
pub mod products;
pub mod report;
pub mod retention;
pub mod stages;
pub mod version;
pub mod window;

pub use clock::{Interval, Timestamp};
pub use episode::{Episode, Sighting, SightingEffect};
pub use evaluate::{evaluate, Evaluation, ServerFacts, Verdict};
pub use mode::{effective_mode, Mode, TenantMode};
pub use pause::{Charge, Pause, PauseError, PauseGrant, PauseLedger};
pub use policy::{Policy, PolicyError};
pub use products::{BuildStatus, Classification};
pub use report::{server_report, ReportStatus, ServerRecord, ServerReport};
pub use retention::Retention;
pub use version::BuildVersion;
