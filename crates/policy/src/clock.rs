//! Time arithmetic for enforcement clocks: instants, closed-open intervals, and age.
//!
//! A server's age is the time since it was first seen, minus the time that does not
//! count: the tenant's pauses (when the policy freezes the clock then) and the gaps
//! during which the server was remediated before it relapsed. Both are given here as
//! one list of intervals, which may overlap each other and first-seen.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Every instant in Ratchet is UTC.
pub type Timestamp = DateTime<Utc>;

/// The length of one enforcement day.
pub fn days(n: f64) -> Duration {
    Duration::milliseconds((n * 86_400_000.0).round() as i64)
}

/// A closed-open interval `[start, end)` of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Interval {
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        Interval { start, end }
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

/// Merges intervals into a sorted list of disjoint, non-empty ones.
fn union(intervals: &[Interval]) -> Vec<Interval> {
    let mut sorted: Vec<Interval> = intervals.iter().copied().filter(|i| i.start < i.end).collect();
    sorted.sort_by_key(|i| i.start);
    let mut merged: Vec<Interval> = Vec::with_capacity(sorted.len());
    for interval in sorted {
        match merged.last_mut() {
            Some(last) if interval.start <= last.end => last.end = last.end.max(interval.end),
            _ => merged.push(interval),
        }
    }
    merged
}

/// Time in `[from, to)` that lies outside every excluded interval.
pub fn counted_time(from: Timestamp, to: Timestamp, excluded: &[Interval]) -> Duration {
    if to <= from {
        return Duration::zero();
    }
    let excluded_inside: Duration = union(excluded)
        .iter()
        .map(|i| (i.end.min(to) - i.start.max(from)).max(Duration::zero()))
        .sum();
    (to - from) - excluded_inside
}

/// The first instant at which `counted_time(from, instant, excluded)` reaches `target`,
/// or `None` if an excluded interval without end stops the clock before then.
pub fn instant_when_counted(from: Timestamp, target: Duration, excluded: &[Interval]) -> Option<Timestamp> {
    let mut cursor = from;
    let mut remaining = target;
    for interval in union(excluded) {
        if interval.end <= cursor {
            continue;
        }
        let free_before = (interval.start - cursor).max(Duration::zero());
        if remaining <= free_before {
            break;
        }
        remaining -= free_before;
        if interval.end == Timestamp::MAX_UTC {
            return None;
        }
        cursor = interval.end;
    }
    cursor.checked_add_signed(remaining)
}

/// A duration as a number of (fractional) days.
pub fn as_days(duration: Duration) -> f64 {
    duration.num_milliseconds() as f64 / 86_400_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: i64) -> Timestamp {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::days(day)
    }

    #[test]
    fn overlapping_exclusions_count_once() {
        let excluded = [Interval::new(t(5), t(10)), Interval::new(t(8), t(12)), Interval::new(t(11), t(11))];
        assert_eq!(counted_time(t(0), t(20), &excluded), Duration::days(13));
    }

    #[test]
    fn exclusions_before_the_start_do_not_count() {
        let excluded = [Interval::new(t(-10), t(3))];
        assert_eq!(counted_time(t(0), t(20), &excluded), Duration::days(17));
    }

    #[test]
    fn instant_when_counted_skips_exclusions() {
        let excluded = [Interval::new(t(5), t(10)), Interval::new(t(-3), t(2))];
        assert_eq!(instant_when_counted(t(0), Duration::days(30), &excluded), Some(t(37)));
        assert_eq!(instant_when_counted(t(0), Duration::days(3), &excluded), Some(t(5)));
    }

    #[test]
    fn an_open_exclusion_stops_the_clock() {
        let excluded = [Interval::new(t(5), Timestamp::MAX_UTC)];
        assert_eq!(instant_when_counted(t(0), Duration::days(30), &excluded), None);
        assert_eq!(instant_when_counted(t(0), Duration::days(4), &excluded), Some(t(4)));
    }
}
