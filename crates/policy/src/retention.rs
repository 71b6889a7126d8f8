//! How long the cluster keeps what stops changing: servers that are no longer seen, and
//! events. Part of the policy (`[retention]`), so that every node sweeps by the same numbers
//! at the same instant; the sweep itself is a replicated command (see the store's
//! `retention`).

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The default of both periods: a little over a year, so that a yearly mail server is kept.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;
/// The longest period either may be: a hundred years.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// A server not seen for this many days is forgotten, as if decommissioned: out of the
    /// report, and a later sighting starts a new clock.
    #[serde(default = "default_days")]
    pub forget_after_days: u32,
    /// Events older than this many days are deleted.
    #[serde(default = "default_days")]
    pub keep_events_days: u32,
}

fn default_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            forget_after_days: DEFAULT_RETENTION_DAYS,
            keep_events_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

impl Retention {
    /// Each period with its key, as the policy file names it.
    pub fn periods(&self) -> [(&'static str, u32); 2] {
        [
            ("retention.forget_after_days", self.forget_after_days),
            ("retention.keep_events_days", self.keep_events_days),
        ]
    }

    /// Servers last seen before this instant are forgotten by a sweep at `now`.
    pub fn forget_before(&self, now: Timestamp) -> Timestamp {
        now - Duration::days(i64::from(self.forget_after_days))
    }

    /// Events raised before this instant are deleted by a sweep at `now`.
    pub fn events_before(&self, now: Timestamp) -> Timestamp {
        now - Duration::days(i64::from(self.keep_events_days))
    }
}
