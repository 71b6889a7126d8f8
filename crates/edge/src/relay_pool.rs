//! Idle SMTP sessions to the next hop, kept for the next message.
//!
//! Why: smtp-source, Exchange and most senders open one session per message or a few, and
//! without a pool the edge opened one to the next hop for each message too: connect,
//! greeting, EHLO, often STARTTLS (a handshake) and EHLO again before MAIL, and QUIT after.
//! That doubled the SMTP work of relaying and cost the `edge_vs_smtp_sink` benchmark most
//! of its gap. A session whose transaction is over comes back here instead of QUIT, and
//! the next message starts with MAIL on it (RSET first only if the last transaction was
//! left unfinished), in TLS still if it was; MAIL, the RCPTs and DATA go in one write
//! when the next hop offers PIPELINING (`relay`).
//!
//! Sessions are kept by what makes one usable for a message: the next hop's address and
//! whether it is in TLS (`next_hop_tls = "verify"` takes only those; `opportunistic` takes
//! those first, then one in clear, which exists only where STARTTLS was not offered or
//! failed). The newest idle session is taken first, so that the oldest age out.
//!
//! Bounds (config): `next_hop_pool_max_idle` per next hop (0: no pool, a new connection
//! and QUIT for every message, as before), `next_hop_pool_idle_secs` (an older idle
//! session gets QUIT, swept every second, and is not taken), `next_hop_pool_max_messages`
//! per session. A session on which XCLIENT was sent is one client's, so there is no pool
//! with `next_hop_forward_client = "xclient"`; XFORWARD names each transaction's client and
//! is sent again before every MAIL. At shutdown the idle sessions get QUIT.
//!
//! A taken session is looked at without waiting: if the next hop closed it or said
//! something unasked (a `421` on timeout), it is dropped and the next one tried. One that
//! fails anyway before its MAIL is accepted is replaced once by a new connection (`relay`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::EdgeConfig;
use crate::forward_client::ForwardClient;
use crate::metrics::{metrics, HopClosed};
use crate::relay::HopSession;

/// What makes an idle session usable for a message.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    next_hop: Arc<str>,
    tls: bool,
}

struct Idle {
    session: HopSession,
    since: Instant,
}

pub(crate) struct RelayPool {
    next_hop: Arc<str>,
    /// 0 when the pool is off.
    max_idle: usize,
    idle_for: Duration,
    max_messages: u32,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    /// Shut down: sessions given back get QUIT.
    closed: AtomicBool,
}

impl RelayPool {
    pub(crate) fn new(config: &EdgeConfig) -> Self {
        let pooling = config.next_hop_forward_client != ForwardClient::Xclient;
        RelayPool {
            next_hop: Arc::from(config.next_hop.as_str()),
            max_idle: if pooling { config.next_hop_pool_max_idle } else { 0 },
            idle_for: Duration::from_secs(config.next_hop_pool_idle_secs),
            max_messages: config.next_hop_pool_max_messages,
            idle: Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether sessions are kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.max_idle > 0
    }

    pub(crate) fn max_messages(&self) -> u32 {
        self.max_messages
    }

    fn key(&self, tls: bool) -> Key {
        Key {
            next_hop: self.next_hop.clone(),
            tls,
        }
    }

    /// An idle session of one of `kinds` (TLS or not, in order of preference), still open
    /// and not too old; those found closed or too old are ended on the way.
    pub(crate) fn take(&self, kinds: &[bool]) -> Option<HopSession> {
        if !self.enabled() {
            return None;
        }
        let mut expired = Vec::new();
        let mut found = None;
        for &tls in kinds {
            loop {
                let candidate = {
                    let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                    idle.get_mut(&self.key(tls)).and_then(Vec::pop)
                };
                let Some(candidate) = candidate else { break };
                metrics().hop_idle(-1);
                if candidate.since.elapsed() >= self.idle_for {
                    expired.push(candidate.session);
                } else if !candidate.session.quiet() {
                    metrics().hop_closed(HopClosed::ByNextHop);
                } else {
                    found = Some(candidate.session);
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        close_all(expired, HopClosed::Expired);
        if found.is_some() {
            metrics().hop_reused();
        }
        found
    }

    /// Keeps `session` for the next message, unless the pool is full or shut down.
    pub(crate) async fn put(&self, session: HopSession) {
        if self.closed.load(Ordering::Acquire) {
            return session.close(HopClosed::Shutdown).await;
        }
        let refused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let held: usize = [false, true].iter().filter_map(|&tls| idle.get(&self.key(tls)).map(Vec::len)).sum();
            if held >= self.max_idle {
                Some(session)
            } else {
                let key = self.key(session.tls());
                idle.entry(key).or_default().push(Idle {
                    session,
                    since: Instant::now(),
                });
                None
            }
        };
        match refused {
            Some(session) => close_all(vec![session], HopClosed::PoolFull),
            None => metrics().hop_idle(1),
        }
    }

    /// Ends the idle sessions older than `next_hop_pool_idle_secs`.
    fn sweep(&self) {
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            for sessions in idle.values_mut() {
                // Oldest first: they were given back in this order.
                let old = sessions.iter().take_while(|s| s.since.elapsed() >= self.idle_for).count();
                expired.extend(sessions.drain(..old).map(|s| s.session));
            }
        }
        metrics().hop_idle(-(expired.len() as i64));
        close_all(expired, HopClosed::Expired);
    }

    /// Sweeps every second, for as long as the edge runs.
    pub(crate) async fn keep_sweeping(self: Arc<Self>) {
        if !self.enabled() {
            return;
        }
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.sweep();
        }
    }

    /// At shutdown: QUIT to every idle session, and to every session given back later.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let all: Vec<HopSession> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain().flat_map(|(_, sessions)| sessions).map(|s| s.session).collect()
        };
        metrics().hop_idle(-(all.len() as i64));
        let mut quitting = tokio::task::JoinSet::new();
        for session in all {
            quitting.spawn(session.close(HopClosed::Shutdown));
        }
        while quitting.join_next().await.is_some() {}
    }
}

/// QUIT to each of `sessions`, each in a task of its own (a slow next hop holds up no one).
fn close_all(sessions: Vec<HopSession>, reason: HopClosed) {
    for session in sessions {
        tokio::spawn(session.close(reason));
    }
}

impl Drop for RelayPool {
    /// An edge that stops without shutting down (a test's runtime ending) still gives back
    /// what the idle gauge counted.
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner());
        let held: usize = idle.values().map(Vec::len).sum();
        metrics().hop_idle(-(held as i64));
    }
}
