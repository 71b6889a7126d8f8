//! What every handler of the decider's HTTP listener shares: the API and health handlers in
//! `http` and the pages in `page`. It lives apart from both so that neither imports the
//! other for it (`http` routes to `page`).

use ratchet_store::types::Raft;
use ratchet_store::StateView;

use crate::clock::Clock;
use crate::freshness::Freshness;
use crate::proposer::Proposer;

#[derive(Clone)]
pub struct HttpState {
    pub raft: Raft,
    pub view: StateView,
    pub clock: Clock,
    /// The pause form's writes, and the pages' read barrier.
    pub proposer: Proposer,
    pub freshness: Freshness,
}
