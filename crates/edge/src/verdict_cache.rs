//! Verdicts remembered across sessions, until the decider's `valid_until`.
//!
//! An on-premises server sends its tenant's mail in many short SMTP sessions (and an MTA in
//! front of the milter opens one milter connection per session), each stamped with the same
//! server and build. Every answer from a decider says until when it holds: to the end of its
//! minute, or sooner when a scheduled policy takes over (`ratchet_policy::window`). Until
//! then the same question, from the same client address and certificate name about the same
//! server and build, gets the same answer from here instead of a round trip to a decider.
//!
//! A change that may alter an answer already given (a pause, a mode, a policy, a connector,
//! an import) makes the deciders send a new connector snapshot, on which the front drops
//! every answer it keeps (`connectors::keep_watching`); while that watch is broken, a
//! change reaches remembered answers at the end of their minute at the latest. A
//! linearizable request is never answered from here. The cache is bounded by entries (`verdict_cache_entries`); an expired entry is
//! a miss and is replaced by the fresh answer.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::Cache;
use quick_cache::Equivalent;
use ratchet_proto::v1::DecideRequest;
use ratchet_proto::v1::DecideResponse;

/// What a Decide's answer depends on, besides the decider's state and the time.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Question {
    client_ip: String,
    cert_name: String,
    server_fqdn: String,
    build: String,
}

/// The same question, borrowed from a request: a lookup allocates nothing. Its fields hash
/// as `Question`'s do, in the same order.
#[derive(Hash)]
struct AskedAs<'a> {
    client_ip: &'a str,
    cert_name: &'a str,
    server_fqdn: &'a str,
    build: &'a str,
}

impl<'a> AskedAs<'a> {
    fn of(request: &'a DecideRequest) -> Self {
        let connection = request.connection.as_ref();
        AskedAs {
            client_ip: connection.map_or("", |c| c.client_ip.as_str()),
            cert_name: connection.map_or("", |c| c.tls_client_cert_name.as_str()),
            server_fqdn: &request.server_fqdn,
            build: &request.build,
        }
    }

    fn to_owned(&self) -> Question {
        Question {
            client_ip: self.client_ip.to_owned(),
            cert_name: self.cert_name.to_owned(),
            server_fqdn: self.server_fqdn.to_owned(),
            build: self.build.to_owned(),
        }
    }
}

impl Equivalent<Question> for AskedAs<'_> {
    fn equivalent(&self, key: &Question) -> bool {
        self.client_ip == key.client_ip && self.cert_name == key.cert_name && self.server_fqdn == key.server_fqdn && self.build == key.build
    }
}

pub struct VerdictCache {
    answers: Cache<Question, DecideResponse>,
    /// Counts `clear`s: an answer asked for before a clear is not kept after it, since the
    /// change that cleared the cache may postdate it.
    generation: AtomicU64,
}

/// A question to ask a decider: when it was asked, as the cache counts time (see
/// `VerdictCache::generation`), and the question itself to keep the answer under (none
/// for a linearizable one, whose answer is not kept).
pub struct Asked {
    generation: u64,
    question: Option<Question>,
}

impl VerdictCache {
    /// A cache of at most `entries` answers; `None` for 0 (remember nothing).
    pub fn new(entries: usize) -> Option<Self> {
        (entries > 0).then(|| VerdictCache {
            answers: Cache::new(entries),
            generation: AtomicU64::new(0),
        })
    }

    /// The answer a decider gave to this question, while it holds at `now_ms`; or the
    /// question to ask a decider, for `remember`.
    pub fn get(&self, request: &DecideRequest, now_ms: i64) -> Result<DecideResponse, Asked> {
        let generation = self.generation.load(Ordering::Acquire);
        if request.linearizable {
            return Err(Asked {
                generation,
                question: None,
            });
        }
        let question = AskedAs::of(request);
        match self.answers.get(&question) {
            Some(answer) if now_ms < answer.valid_until_unix_ms => Ok(answer),
            _ => Err(Asked {
                generation,
                question: Some(question.to_owned()),
            }),
        }
    }

    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.answers.clear();
    }

    /// Keeps `answer` to a question `asked` for as long as it says it holds, unless the
    /// cache was cleared since it was asked (an answer that says nothing of when it ends,
    /// such as the accept for mail no connector attributes, is not kept).
    pub fn remember(&self, asked: Asked, answer: &DecideResponse, now_ms: i64) {
        let cleared_since = self.generation.load(Ordering::Acquire) != asked.generation;
        match asked.question {
            Some(question) if now_ms < answer.valid_until_unix_ms && !cleared_since => {
                self.answers.insert(question, answer.clone());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, RandomState};

    use ratchet_proto::v1::{ConnectionFacts, Verdict};

    use super::*;

    fn asked(client_ip: &str, server_fqdn: &str, build: &str) -> DecideRequest {
        DecideRequest {
            connection: Some(ConnectionFacts {
                client_ip: client_ip.into(),
                tls_client_cert_name: String::new(),
            }),
            server_fqdn: server_fqdn.into(),
            build: build.into(),
            linearizable: false,
        }
    }

    fn block_until(valid_until_unix_ms: i64) -> DecideResponse {
        DecideResponse {
            verdict: Verdict::Block.into(),
            tenant: "bear".into(),
            valid_until_unix_ms,
            ..Default::default()
        }
    }

    #[test]
    fn a_borrowed_question_hashes_as_the_owned_one() {
        let request = asked("192.0.2.7", "exch1.bear.example", "15.0.1497.2");
        let hasher = RandomState::new();
        let borrowed = AskedAs::of(&request);
        assert_eq!(hasher.hash_one(&borrowed), hasher.hash_one(borrowed.to_owned()));
    }

    #[test]
    fn an_answer_holds_until_its_valid_until_and_for_the_same_question_only() {
        let cache = VerdictCache::new(16).unwrap();
        let request = asked("192.0.2.7", "exch1.bear.example", "15.0.1497.2");
        let when = cache.get(&request, 1_000).unwrap_err();
        cache.remember(when, &block_until(60_000), 1_000);
        assert_eq!(cache.get(&request, 59_999).map(|a| a.verdict).ok(), Some(Verdict::Block.into()));
        assert!(cache.get(&request, 60_000).is_err(), "expired at valid_until");
        for other in [
            asked("192.0.2.8", "exch1.bear.example", "15.0.1497.2"),
            asked("192.0.2.7", "exch2.bear.example", "15.0.1497.2"),
            asked("192.0.2.7", "exch1.bear.example", "15.0.1497.48"),
        ] {
            assert!(cache.get(&other, 2_000).is_err(), "another question: {other:?}");
        }
        let mut with_cert = request.clone();
        with_cert.connection.as_mut().unwrap().tls_client_cert_name = "mx.bear.example".into();
        assert!(cache.get(&with_cert, 2_000).is_err(), "another certificate name");
    }

    #[test]
    fn a_clear_drops_every_answer_and_one_asked_before_it_is_not_kept() {
        let cache = VerdictCache::new(16).unwrap();
        let request = asked("192.0.2.7", "exch1.bear.example", "15.0.1497.2");
        let when = cache.get(&request, 1_000).unwrap_err();
        cache.remember(when, &block_until(60_000), 1_000);
        let other = asked("192.0.2.7", "exch2.bear.example", "15.0.1497.2");
        let asked_before_the_clear = cache.get(&other, 1_000).unwrap_err();
        cache.clear();
        assert!(cache.get(&request, 2_000).is_err());
        cache.remember(asked_before_the_clear, &block_until(60_000), 2_000);
        assert!(
            cache.get(&other, 2_000).is_err(),
            "an answer that may predate the change is not kept"
        );
    }

    #[test]
    fn linearizable_questions_and_answers_without_an_end_are_never_remembered() {
        let cache = VerdictCache::new(16).unwrap();
        let mut request = asked("192.0.2.7", "exch1.bear.example", "15.0.1497.2");
        let when = cache.get(&request, 1_000).unwrap_err();
        cache.remember(when, &block_until(0), 1_000);
        assert!(cache.get(&request, 1_000).is_err());
        request.linearizable = true;
        let when = cache.get(&request, 1_000).unwrap_err();
        cache.remember(when, &block_until(60_000), 1_000);
        assert!(cache.get(&request, 1_000).is_err());
        request.linearizable = false;
        assert!(
            cache.get(&request, 1_000).is_err(),
            "a linearizable answer is not kept for others either"
        );
        assert!(VerdictCache::new(0).is_none());
    }
}
