//! Which policy is in force at an instant: the current one, and at most one scheduled to
//! take over at a set time (`ratchet ctl policy set FILE --effective-at T`).
//!
//! A scheduled policy is replicated ahead of its time, so every node holds it before T and
//! every reader picks by the instant it decides at: a message decided before T gets the
//! old policy, one decided at or after T the new one, on every node at once, whether or not
//! anything has been applied since T. Apply promotes the scheduled policy to current at the
//! first entry stamped at or after T, so that the stored state stops carrying it; that
//! changes no verdict, only where the policy is kept.

use ratchet_policy::products::classify;
use ratchet_policy::{Policy, Timestamp};

/// A policy and the log index of the `SetPolicy` that brought it (0: the built-in default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionedPolicy {
    pub version: u64,
    pub policy: Policy,
    /// When it took effect, or takes effect, if it was scheduled; `None`: when committed.
    pub effective_at: Option<Timestamp>,
}

/// The policy in force and the one scheduled to follow it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySchedule {
    pub current: VersionedPolicy,
    /// Always has `effective_at` set.
    pub pending: Option<VersionedPolicy>,
}

impl PolicySchedule {
    /// The policy in force at `at`.
    pub fn at(&self, at: Timestamp) -> &VersionedPolicy {
        match &self.pending {
            Some(pending) if self.is_due(at) => pending,
            _ => &self.current,
        }
    }

    /// When the policy in force at `at` next changes, if a change is scheduled after `at`:
    /// no verdict given at `at` may be trusted past it.
    pub fn next_change_after(&self, at: Timestamp) -> Option<Timestamp> {
        self.pending.as_ref().and_then(|p| p.effective_at).filter(|t| *t > at)
    }

    /// Whether a scheduled policy's time has come at `at`.
    pub fn is_due(&self, at: Timestamp) -> bool {
        self.pending.as_ref().is_some_and(|p| p.effective_at.is_some_and(|t| t <= at))
    }

    /// When the scheduled policy starts enforcing a server of build `build` that the policy
    /// in force at `at` does not hold out of date, or holds out of date in a product that is
    /// report-only or off: what announcements and reports name.
    pub fn newly_enforces(&self, at: Timestamp, build: &str) -> Option<Timestamp> {
        let change = self.next_change_after(at)?;
        let pending = self.pending.as_ref()?;
        let enforced = |policy: &Policy| classify(&policy.products, build).is_enforced();
        (!enforced(&self.at(at).policy) && enforced(&pending.policy)).then_some(change)
    }

    /// Makes the scheduled policy current once `at` has reached its time; true if it did.
    pub fn promote_due(&mut self, at: Timestamp) -> bool {
        let due = self.is_due(at);
        if due {
            self.current = self.pending.take().expect("checked above");
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_scheduled_policy_is_in_force_from_its_instant_and_promoted_by_the_first_entry_after() {
        let mut stricter = Policy::default();
        stricter.warning_days = 14;
        let t = instant("2027-01-01T00:00:00Z");
        let mut schedule = PolicySchedule {
            current: VersionedPolicy::default(),
            pending: Some(VersionedPolicy {
                version: 7,
                policy: stricter,
                effective_at: Some(t),
            }),
        };
        let before = t - chrono::TimeDelta::milliseconds(1);
        assert_eq!(schedule.at(before).version, 0);
        assert_eq!(schedule.at(t).version, 7);
        assert_eq!(schedule.next_change_after(before), Some(t));
        assert_eq!(schedule.next_change_after(t), None);

        assert!(!schedule.promote_due(before));
        assert_eq!(schedule.current.version, 0);
        assert!(schedule.promote_due(t));
        assert_eq!((schedule.current.version, schedule.pending.is_none()), (7, true));
        assert_eq!(schedule.at(before).version, 7, "once promoted, the old policy is gone");
    }
}
