//! Admission control at connect time: concurrent sessions in all and per client address.
//!
//! One misbehaving or compromised sender must not take every session slot of an edge; a
//! permit is held for the life of a session and given back when it is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub(crate) struct SessionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooManySessions,
    TooManyFromIp,
}

/// One session's slot; dropping it frees the slot.
pub(crate) struct SessionPermit {
    limits: Arc<SessionLimits>,
    ip: IpAddr,
}

impl SessionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::default(),
        })
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<SessionPermit, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::TooManySessions);
        }
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(SessionPermit { limits: self.clone(), ip })
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_per_address_and_returned_on_drop() {
        let limits = SessionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limits.try_acquire(a).unwrap();
        let _p2 = limits.try_acquire(a).unwrap();
        assert_eq!(limits.try_acquire(a).err(), Some(Refusal::TooManyFromIp));
        let _p3 = limits.try_acquire(b).unwrap();
        assert_eq!(limits.try_acquire(b).err(), Some(Refusal::TooManySessions));
        drop(p1);
        assert!(limits.try_acquire(a).is_ok());
    }
}
