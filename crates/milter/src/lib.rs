//! Ratchet as a milter: the edge's verdicts for an MTA that already receives the mail
//! (Postfix `smtpd_milters`, Sendmail `INPUT_MAIL_FILTER`), over the Sendmail milter
//! protocol (its commands parsed by `miltr-common`, MIT).
//!
//! It keeps no state and holds no mail: attribution comes from the CONNECT callback's
//! address and the verified client certificate's name (`{cert_subject}`), the server
//! stamp from the message's headers, the verdict from the same decision client as the
//! edge's (deadline, failover, fail mode), and the reply is the edge's exact text. The body
//! is never asked for.
//!
//! Layout: [`config`]: settings with defaults; [`listener`]: `inet:` and `unix:` addresses;
//! `server`: admission, shutdown; `quickack`: TCP acknowledged at once, so that the MTA's
//! pipelined packets are not held back; `conversation`: one connection's packets, answered
//! only where the MTA waits; `session`: what a connection keeps and decides; `metrics`: the
//! Prometheus metrics.

pub mod config;
mod conversation;
pub mod listener;
mod metrics;
mod quickack;
mod server;
mod session;

pub use config::MilterConfig;
pub use listener::{MilterAddress, MilterListener};
pub use server::serve;
