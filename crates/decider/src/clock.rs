//! The one place a decider reads the time.
//!
//! Production reads the system clock. Tests that need a given minute of the hour (windows)
//! or a given age may shift it by a fixed offset (`--test-clock-offset`), which moves
//! every reading of this node alike; apply never reads a clock at all.

use chrono::{Duration, Utc};
use ratchet_policy::Timestamp;

#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    offset: Duration,
}

impl Clock {
    pub fn shifted(offset: Duration) -> Self {
        Clock { offset }
    }

    pub fn now(&self) -> Timestamp {
        Utc::now() + self.offset
    }
}
