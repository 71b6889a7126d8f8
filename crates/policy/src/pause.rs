//! The enforcement pause ledger of one tenant: the arithmetic of its yearly budget.
//!
//! A tenant may pause enforcement for at most `budget` days per calendar year (UTC), in
//! any number of pauses. A request for N days starts a pause now or extends the active
//! one; it is granted whole or refused, naming the days that remain. Days are charged to
//! the year of the request. Ending early gives the whole unused days back to the years
//! they were charged to, newest charge first. A request id makes a retry harmless: the
//! same id gets the same answer and is charged once.
//!
//! A pause is tenant-wide or names one server: a request naming servers pauses each of
//! them (starting or extending that server's own pause) and is charged N days per server
//! named, against the same budget. A server is paused while its own pause or a
//! tenant-wide one is in force.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration};
use serde::{Deserialize, Serialize};

use crate::clock::{Interval, Timestamp};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PauseLedger {
    /// Every pause, oldest first. Only the last one can be active.
    pauses: Vec<Pause>,
    /// Days charged per calendar year, net of refunds.
    charged: BTreeMap<i32, u32>,
    /// The grant each request id received, so that a retry is answered the same way.
    grants: BTreeMap<String, PauseGrant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// The server it pauses; `None`: every server of the tenant.
    pub server: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub ended_early: bool,
    /// What each request that made up this pause was charged, in request order.
    charges: Vec<Charge>,
}

/// Days one request charged to one calendar year.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub year: i32,
    pub days: u32,
}

/// The answer to a granted pause request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseGrant {
    pub days: u32,
    /// The servers it paused, each for `days`; empty: the whole tenant.
    pub servers: Vec<String>,
    /// From the earliest start to the latest end of the pauses it started or extended.
    pub paused_from: Timestamp,
    pub paused_until: Timestamp,
    pub year: i32,
    pub remaining_days: u32,
}

/// The answer to ending a pause early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseEnd {
    pub ended_at: Timestamp,
    pub refunded_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    #[error("days must be at least 1")]
    NoDays,
    #[error("pause of {requested} days refused: only {remaining} pause days remain for {year}")]
    OverBudget { requested: u32, remaining: u32, year: i32 },
    #[error("tenant is not paused")]
    NotPaused,
    #[error("server {0} is not paused on its own")]
    ServerNotPaused(String),
}

impl Pause {
    pub fn interval(&self) -> Interval {
        Interval::new(self.start, self.end)
    }

    pub fn days_charged(&self) -> u32 {
        self.charges.iter().map(|c| c.days).sum()
    }

    /// What each request that made up this pause was charged, in request order.
    pub fn charges(&self) -> &[Charge] {
        &self.charges
    }

    /// A pause as stored (see ratchet-store's codec): the inverse of its accessors.
    pub fn from_parts(server: Option<String>, start: Timestamp, end: Timestamp, ended_early: bool, charges: Vec<Charge>) -> Self {
        Pause {
            server,
            start,
            end,
            ended_early,
            charges,
        }
    }
}

impl PauseLedger {
    pub fn pauses(&self) -> &[Pause] {
        &self.pauses
    }

    /// Days charged per calendar year, net of refunds.
    pub fn charged(&self) -> &BTreeMap<i32, u32> {
        &self.charged
    }

    /// The grant each request id received.
    pub fn grants(&self) -> &BTreeMap<String, PauseGrant> {
        &self.grants
    }

    /// A ledger as stored (see ratchet-store's codec): the inverse of its accessors.
    pub fn from_parts(pauses: Vec<Pause>, charged: BTreeMap<i32, u32>, grants: BTreeMap<String, PauseGrant>) -> Self {
        PauseLedger { pauses, charged, grants }
    }

    /// The intervals of the tenant-wide pauses.
    pub fn intervals(&self) -> Vec<Interval> {
        self.intervals_of(|scope| scope.is_none())
    }

    /// The intervals during which `server` was paused (tenant-wide or on its own), for
    /// subtracting from its age and for its verdict.
    pub fn intervals_for(&self, server: &str) -> Vec<Interval> {
        self.intervals_of(|scope| scope.is_none_or(|s| s == server))
    }

    fn intervals_of(&self, applies: impl Fn(Option<&str>) -> bool) -> Vec<Interval> {
        let applying = self.pauses.iter().filter(|p| applies(p.server.as_deref()));
        applying.map(Pause::interval).collect()
    }

    /// The end of the tenant-wide pause in force at `at`, if any.
    pub fn paused_until(&self, at: Timestamp) -> Option<Timestamp> {
        self.active(None, at).map(|p| p.end)
    }

    /// The end of `server`'s own pause in force at `at`, if any.
    pub fn server_paused_until(&self, server: &str, at: Timestamp) -> Option<Timestamp> {
        self.active(Some(server), at).map(|p| p.end)
    }

    /// The pause of `scope` (a server, or `None`: tenant-wide) in force at `at`: only the
    /// last one of a scope can be.
    fn active(&self, scope: Option<&str>, at: Timestamp) -> Option<&Pause> {
        let last = self.pauses.iter().rev().find(|p| p.server.as_deref() == scope)?;
        last.interval().contains(at).then_some(last)
    }

    fn active_mut(&mut self, scope: Option<&str>, at: Timestamp) -> Option<&mut Pause> {
        let last = self.pauses.iter_mut().rev().find(|p| p.server.as_deref() == scope)?;
        last.interval().contains(at).then_some(last)
    }

    pub fn remaining_days(&self, budget: u32, at: Timestamp) -> u32 {
        budget.saturating_sub(self.charged.get(&at.year()).copied().unwrap_or(0))
    }

    /// Starts a pause of `days` at `at`, or extends the active one by `days`: tenant-wide
    /// with no `servers`, else one per server named, charged `days` each.
    pub fn request(
        &mut self,
        budget: u32,
        days: u32,
        servers: &[String],
        request_id: Option<&str>,
        at: Timestamp,
    ) -> Result<PauseGrant, PauseError> {
        if let Some(grant) = request_id.and_then(|id| self.grants.get(id)) {
            return Ok(grant.clone());
        }
        if days == 0 {
            return Err(PauseError::NoDays);
        }
        let year = at.year();
        let remaining = self.remaining_days(budget, at);
        let scopes: Vec<Option<&str>> = match servers {
            [] => vec![None],
            named => named.iter().map(|s| Some(s.as_str())).collect(),
        };
        let charged = u32::try_from(scopes.len()).ok().and_then(|n| days.checked_mul(n));
        let Some(charged) = charged.filter(|c| *c <= remaining) else {
            return Err(PauseError::OverBudget {
                requested: charged.unwrap_or(u32::MAX),
                remaining,
                year,
            });
        };
        let length = Duration::days(i64::from(days));
        let charge = Charge { year, days };
        let mut spans = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let pause = match self.active_mut(scope, at) {
                Some(active) => {
                    active.end += length;
                    active.charges.push(charge);
                    active
                }
                None => {
                    self.pauses.push(Pause {
                        server: scope.map(str::to_owned),
                        start: at,
                        end: at + length,
                        ended_early: false,
                        charges: vec![charge],
                    });
                    self.pauses.last_mut().expect("just pushed")
                }
            };
            spans.push((pause.start, pause.end));
        }
        *self.charged.entry(year).or_default() += charged;
        let grant = PauseGrant {
            days,
            servers: servers.to_vec(),
            paused_from: spans.iter().map(|s| s.0).min().expect("one scope at least"),
            paused_until: spans.iter().map(|s| s.1).max().expect("one scope at least"),
            year,
            remaining_days: remaining - charged,
        };
        if let Some(id) = request_id {
            self.grants.insert(id.to_owned(), grant.clone());
        }
        Ok(grant)
    }

    /// Ends the active pause of `server` (`None`: the tenant-wide one) at `at` and gives
    /// back its whole unused days.
    pub fn end(&mut self, server: Option<&str>, at: Timestamp) -> Result<PauseEnd, PauseError> {
        let not_paused = || server.map_or(PauseError::NotPaused, |s| PauseError::ServerNotPaused(s.to_owned()));
        let active = self.active_mut(server, at).ok_or_else(not_paused)?;
        let mut unused_days = u32::try_from((active.end - at).num_days()).unwrap_or(u32::MAX);
        let refunded_days = unused_days.min(active.days_charged());
        active.end = at;
        active.ended_early = true;
        let mut refunds = Vec::new();
        for charge in active.charges.iter_mut().rev() {
            let refund = unused_days.min(charge.days);
            charge.days -= refund;
            unused_days -= refund;
            refunds.push((charge.year, refund));
        }
        for (year, refund) in refunds {
            let year_total = self.charged.entry(year).or_default();
            *year_total = year_total.saturating_sub(refund);
        }
        Ok(PauseEnd {
            ended_at: at,
            refunded_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(y: i32, m: u32, d: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn requests_start_then_extend_a_pause() {
        let mut ledger = PauseLedger::default();
        let first = ledger.request(90, 10, &[], None, at(2026, 3, 1)).unwrap();
        assert_eq!((first.paused_until, first.remaining_days), (at(2026, 3, 11), 80));
        let extended = ledger.request(90, 5, &[], None, at(2026, 3, 4)).unwrap();
        assert_eq!(
            (extended.paused_from, extended.paused_until, extended.remaining_days),
            (at(2026, 3, 1), at(2026, 3, 16), 75)
        );
        assert_eq!(ledger.pauses().len(), 1);
        assert_eq!(ledger.paused_until(at(2026, 3, 15)), Some(at(2026, 3, 16)));
        assert_eq!(ledger.paused_until(at(2026, 3, 16)), None);
    }

    #[test]
    fn over_budget_is_refused_whole_naming_what_remains() {
        let mut ledger = PauseLedger::default();
        ledger.request(90, 85, &[], None, at(2026, 1, 1)).unwrap();
        let refused = ledger.request(90, 6, &[], None, at(2026, 5, 1)).unwrap_err();
        assert_eq!(
            refused,
            PauseError::OverBudget {
                requested: 6,
                remaining: 5,
                year: 2026
            }
        );
        assert!(refused.to_string().contains("only 5 pause days remain"));
        assert_eq!(ledger.remaining_days(90, at(2026, 5, 1)), 5);
        assert_eq!(ledger.pauses().len(), 1, "a refusal changes nothing");
        ledger.request(90, 5, &[], None, at(2026, 5, 1)).unwrap();
        assert_eq!(ledger.remaining_days(90, at(2026, 6, 1)), 0);
    }

    #[test]
    fn the_budget_is_per_calendar_year_of_the_request() {
        let mut ledger = PauseLedger::default();
        ledger.request(90, 90, &[], None, at(2026, 12, 20)).unwrap();
        assert_eq!(ledger.remaining_days(90, at(2026, 12, 31)), 0);
        // Still paused in January, but January's request is charged to the new year.
        let grant = ledger.request(90, 10, &[], None, at(2027, 1, 5)).unwrap();
        assert_eq!((grant.year, grant.remaining_days), (2027, 80));
    }

    #[test]
    fn ending_early_refunds_whole_unused_days_newest_charge_first() {
        let mut ledger = PauseLedger::default();
        ledger.request(90, 20, &[], None, at(2026, 12, 25)).unwrap();
        ledger.request(90, 10, &[], None, at(2027, 1, 2)).unwrap();
        // Paused until 2027-01-24 12:00; ending on 01-10 18:00 leaves 13.75 days: 13 whole.
        let ended = ledger.end(None, at(2027, 1, 10) + Duration::hours(6)).unwrap();
        assert_eq!(ended.refunded_days, 13);
        assert_eq!(
            ledger.remaining_days(90, at(2027, 2, 1)),
            90,
            "the 2027 charge of 10 came back whole"
        );
        assert_eq!(ledger.remaining_days(90, at(2026, 12, 31)), 73, "3 of 2026's 20 days came back");
        assert_eq!(ledger.paused_until(at(2027, 1, 11)), None);
        assert_eq!(ledger.end(None, at(2027, 1, 11)), Err(PauseError::NotPaused));
    }

    #[test]
    fn a_retried_request_id_is_charged_once() {
        let mut ledger = PauseLedger::default();
        let first = ledger.request(90, 7, &[], Some("req-1"), at(2026, 3, 1)).unwrap();
        let retry = ledger.request(90, 7, &[], Some("req-1"), at(2026, 3, 2)).unwrap();
        assert_eq!(first, retry);
        assert_eq!(ledger.remaining_days(90, at(2026, 3, 2)), 83);
    }

    #[test]
    fn zero_days_is_refused() {
        assert_eq!(
            PauseLedger::default().request(90, 0, &[], None, at(2026, 1, 1)),
            Err(PauseError::NoDays)
        );
    }

    #[test]
    fn servers_named_are_paused_each_and_charged_each() {
        let mut ledger = PauseLedger::default();
        let servers = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let grant = ledger.request(90, 30, &servers(&["a", "b"]), None, at(2026, 3, 1)).unwrap();
        assert_eq!((grant.paused_until, grant.remaining_days), (at(2026, 3, 31), 30));
        assert_eq!(ledger.server_paused_until("a", at(2026, 3, 2)), Some(at(2026, 3, 31)));
        assert_eq!(ledger.server_paused_until("c", at(2026, 3, 2)), None);
        assert_eq!(ledger.paused_until(at(2026, 3, 2)), None, "the tenant as a whole is not paused");
        assert!(ledger.intervals().is_empty());
        assert_eq!(ledger.intervals_for("a").len(), 1);

        // "One server 30 days and the other 60, after which the 90 days are used up."
        let extended = ledger.request(90, 30, &servers(&["b"]), None, at(2026, 3, 5)).unwrap();
        assert_eq!((extended.paused_until, extended.remaining_days), (at(2026, 4, 30), 0));
        let refused = ledger.request(90, 1, &[], None, at(2026, 3, 5)).unwrap_err();
        assert_eq!(
            refused,
            PauseError::OverBudget {
                requested: 1,
                remaining: 0,
                year: 2026
            }
        );
        // Two servers for 1 day each need 2 days, charged whole or not at all.
        ledger.end(Some("a"), at(2026, 3, 30)).unwrap();
        assert_eq!(ledger.remaining_days(90, at(2026, 3, 30)), 1);
        let refused = ledger.request(90, 1, &servers(&["a", "c"]), None, at(2026, 3, 30)).unwrap_err();
        assert!(refused.to_string().contains("refused: only 1 pause days remain"), "{refused}");

        // A tenant-wide pause covers every server, its own pauses beside it.
        let mut ledger = PauseLedger::default();
        ledger.request(90, 10, &servers(&["a"]), None, at(2026, 3, 1)).unwrap();
        ledger.request(90, 5, &[], None, at(2026, 3, 2)).unwrap();
        assert_eq!(ledger.intervals_for("a").len(), 2);
        assert_eq!(ledger.intervals_for("b").len(), 1);
        assert_eq!(ledger.end(Some("b"), at(2026, 3, 3)), Err(PauseError::ServerNotPaused("b".into())));
        assert_eq!(ledger.end(None, at(2026, 3, 3)).unwrap().refunded_days, 4);
        assert_eq!(ledger.server_paused_until("a", at(2026, 3, 3)), Some(at(2026, 3, 11)));
    }
}
