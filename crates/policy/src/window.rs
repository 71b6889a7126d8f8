//! Where inside each UTC hour a server is blocked, throttled or accepted.
//!
//! Each server has a fixed offset `o` (0..59) so that a tenant's servers do not all
//! fail at the same minute. Within every hour, minutes `[o, o+block)` block,
//! `[o+block, o+block+throttle)` throttle, and the rest accept, all modulo 60.
//!
//! The offset is FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3: the
//! basis is the seed) over `tenant 0x00 fqdn`, both lower-cased, reduced modulo 60. It is
//! written out here rather than taken from a hashing crate because it must never change
//! across nodes, platforms or releases: a different offset would move every server's
//! window at an upgrade.

use chrono::Timelike;

use crate::clock::Timestamp;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(FNV_OFFSET_BASIS, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME))
}

/// The server's window offset in minutes, 0..59.
pub fn window_offset(tenant: &str, server_fqdn: &str) -> u32 {
    let key = tenant
        .to_lowercase()
        .into_bytes()
        .into_iter()
        .chain([0u8])
        .chain(server_fqdn.to_lowercase().into_bytes());
    (fnv1a64(key) % 60) as u32
}

/// What the windows say for one minute of the hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Accept,
    Throttle,
    Block,
}

/// The window in force at `minute_of_hour` for a server with `offset` and the given rates.
pub fn window_at(offset: u32, throttle_min: u32, block_min: u32, minute_of_hour: u32) -> Window {
    let since_offset = (minute_of_hour + 60 - offset % 60) % 60;
    if since_offset < block_min {
        Window::Block
    } else if since_offset < block_min + throttle_min {
        Window::Throttle
    } else {
        Window::Accept
    }
}

pub fn minute_of_hour(at: Timestamp) -> u32 {
    at.minute()
}

/// Until when a verdict given at `at` may be reused: windows move only at minute
/// boundaries, so to the end of the current minute, unless the policy changes first
/// (`policy_changes_at`, a scheduled policy's instant).
pub fn verdict_valid_until(at: Timestamp, policy_changes_at: Option<Timestamp>) -> Timestamp {
    use chrono::{DurationRound, TimeDelta};
    let minute_ends = at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at) + TimeDelta::minutes(1);
    policy_changes_at.map_or(minute_ends, |change| change.min(minute_ends))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_holds_to_the_end_of_its_minute_or_to_a_scheduled_policy_if_sooner() {
        let at: Timestamp = "2027-01-01T10:15:20Z".parse().unwrap();
        let minute_end: Timestamp = "2027-01-01T10:16:00Z".parse().unwrap();
        assert_eq!(verdict_valid_until(at, None), minute_end);
        let soon: Timestamp = "2027-01-01T10:15:42Z".parse().unwrap();
        assert_eq!(verdict_valid_until(at, Some(soon)), soon);
        let later: Timestamp = "2027-01-01T11:00:00Z".parse().unwrap();
        assert_eq!(verdict_valid_until(at, Some(later)), minute_end);
    }

    #[test]
    fn offset_is_pinned_forever() {
        // These values are the contract: if they change, every server's window moves.
        assert_eq!(fnv1a64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(window_offset("demo", "exch1.bear.local"), window_offset("DEMO", "EXCH1.Bear.Local"));
        assert!(window_offset("demo", "exch1.bear.local") < 60);
    }

    #[test]
    fn windows_wrap_the_hour() {
        // offset 55, block 10: minutes 55..59 and 0..4 block, then 5 throttle minutes.
        let verdicts: Vec<Window> = (0..60).map(|m| window_at(55, 5, 10, m)).collect();
        for m in (55..60).chain(0..5) {
            assert_eq!(verdicts[m as usize], Window::Block, "minute {m}");
        }
        for (m, verdict) in verdicts.iter().enumerate().take(10).skip(5) {
            assert_eq!(*verdict, Window::Throttle, "minute {m}");
        }
        for (m, verdict) in verdicts.iter().enumerate().take(55).skip(10) {
            assert_eq!(*verdict, Window::Accept, "minute {m}");
        }
    }

    #[test]
    fn a_full_block_blocks_every_minute() {
        assert!((0..60).all(|m| window_at(17, 0, 60, m) == Window::Block));
    }
}
