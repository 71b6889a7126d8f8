//! Ratchet's SMTP edge: a stateless ESMTP front that enforces, relays, and never loses mail.
//!
//! On-premises servers send to an edge; the edge attributes the connection to a tenant
//! (connectors, kept current from the decision service), reads the sending server's build
//! at the end of DATA, asks the decision service for a verdict with a deadline, and
//! answers 250 (after the next hop holds the message), 450 4.7.230 or 550 5.7.230. It
//! keeps nothing on disk; any edge can serve any connection.
//!
//! Layout, one concern per module:
//! - [`config`]: settings with defaults;
//! - `server`: listener, admission, graceful shutdown; `limits`: per-address slots;
//! - `proxy`: PROXY protocol headers from load balancers (`trusted_proxies`);
//! - `connection`: line framing, deadlines, pipelined replies; [`reply`]: every reply text;
//! - `session`: the command loop, one file per stage (ehlo, xforward, mail, rcpt, data,
//!   deliver);
//! - [`build`]: build detection behind [`BuildDetector`];
//! - [`connectors`]: the connector table and its watch; [`deciders`]: Decide and Count with
//!   failover, answering a question asked again from `verdict_cache`; [`decide_stream`]:
//!   Decide over one stream per decider; [`counting`]: the verdicts given, counted and flushed to the deciders;
//!   [`client`]: the three started together; [`verdict`]: from stamp to request, from
//!   answer to reply;
//! - `relay`: the SMTP client to the next hop; `relay_pool`: its idle sessions, reused
//!   across messages; [`forward_client`]: XFORWARD or XCLIENT to it, naming the original
//!   client; `xtext`: those commands' value encoding;
//! - `http`: `/healthz`, `/readyz` and `/metrics`; [`metrics`]: the Prometheus metrics;
//! - `tls`: STARTTLS streams, certificates reloaded from files, client certificate names.
//!
//! The milter (`ratchet-milter`) enforces through the same pieces: the decision client,
//! build detection, verdicts and reply texts are public for it, and the decision client
//! serves the HTTP listener.

pub mod build;
pub mod client;
pub mod config;
mod connection;
pub mod connectors;
pub mod counting;
pub mod decide_stream;
pub mod deciders;
pub mod forward_client;
mod http;
mod limits;
pub mod metrics;
mod proxy;
mod relay;
mod relay_pool;
pub mod reply;
mod server;
mod session;
mod tls;
pub mod verdict;
mod verdict_cache;
mod xtext;

pub use build::{BuildDetector, BuildStamp, ExchangeDetector};
pub use config::{BareLf, EdgeConfig, NextHopTls};
pub use server::{serve, serve_with_http, session_id};
