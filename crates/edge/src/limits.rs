//! Admission control at connect time: concurrent sessions in all and per client address.
//!
//! One misbehaving or compromised sender must not take every session slot of an edge; a
//! permit is held for the life of a session and given back when it is dropped. A trusted
//! proxy's sessions are not counted under its own address (it carries many clients) but
//! under the client its PROXY header names.

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
    /// The address the session is counted under; none for a trusted proxy, which carries
    /// many clients' sessions.
    ip: Option<IpAddr>,
}

impl SessionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::default(),
        })
    }

    /// A slot for a session from `ip`, counted under it unless `ip` is none (a trusted
    /// proxy: its clients are counted once its PROXY header names them).
    pub fn try_acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<SessionPermit, Refusal> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(Refusal::TooManySessions);
        }
        if let Some(ip) = ip {
            counts.take_from(ip, self.max_per_ip)?;
        }
        counts.total += 1;
        Ok(SessionPermit { limits: self.clone(), ip })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Counts {
    fn take_from(&mut self, ip: IpAddr, max_per_ip: usize) -> Result<(), Refusal> {
        let from_ip = self.per_ip.entry(ip).or_default();
        if *from_ip >= max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *from_ip += 1;
        Ok(())
    }

    fn give_back(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

impl SessionPermit {
    /// Counts the session under `ip` from now on (the client a PROXY header named);
    /// unchanged if `ip` already has its limit of sessions.
    pub fn count_under(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let mut counts = self.limits.lock();
        counts.take_from(ip, self.limits.max_per_ip)?;
        if let Some(old) = self.ip.replace(ip) {
            counts.give_back(old);
        }
        Ok(())
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.total -= 1;
        if let Some(ip) = self.ip {
            counts.give_back(ip);
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
        let p1 = limits.try_acquire(Some(a)).unwrap();
        let _p2 = limits.try_acquire(Some(a)).unwrap();
        assert_eq!(limits.try_acquire(Some(a)).err(), Some(Refusal::TooManyFromIp));
        let _p3 = limits.try_acquire(Some(b)).unwrap();
        assert_eq!(limits.try_acquire(Some(b)).err(), Some(Refusal::TooManySessions));
        drop(p1);
        assert!(limits.try_acquire(Some(a)).is_ok());
    }

    #[test]
    fn proxied_sessions_count_under_the_clients_the_proxy_names() {
        let limits = SessionLimits::new(10, 1);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut p1 = limits.try_acquire(None).unwrap();
        let mut p2 = limits.try_acquire(None).unwrap();
        p1.count_under(a).unwrap();
        assert_eq!(p2.count_under(a), Err(Refusal::TooManyFromIp));
        p2.count_under(b).unwrap();
        assert_eq!(limits.try_acquire(Some(b)).err(), Some(Refusal::TooManyFromIp));
        drop(p2);
        assert!(limits.try_acquire(Some(b)).is_ok());
        assert_eq!(limits.lock().total, 1);
    }
}
