//! Where a verdict is computed: one message's, from this node's own state, with no
//! protobuf and no gRPC in sight (`decision` converts in and out, and checks first that
//! this node may answer at all).
//!
//! Attribution comes from the in-memory connectors, the server record from RocksDB, the
//! verdict from the policy engine. No message waits on consensus: a sighting that changes
//! the server's episode (first seen, remediated, relapsed) is answered from the change as
//! this node computes it, and handed to `sightings` to be committed in the background.
//! Such an answer names no first-seen instant it has not seen committed.

use std::net::IpAddr;

use chrono::TimeDelta;
use ratchet_policy::products::classify;
use ratchet_policy::window::verdict_valid_until;
use ratchet_policy::{evaluate, Episode, Evaluation, ServerFacts, Sighting, SightingEffect, Timestamp};
use ratchet_store::command::{validate_fqdn, MAX_BUILD_LEN};
use ratchet_store::{ServerSighting, StateView};

use crate::error::Error;
use crate::sightings::SightingQueue;

/// What an edge asks about one message: where it came from and the stamp it carries.
pub struct Question {
    pub client_ip: IpAddr,
    /// The name of the client certificate the connection presented, if any.
    pub cert_name: Option<String>,
    /// As the stamp gives it: any case, maybe padded.
    pub server_fqdn: String,
    pub build: String,
}

/// What the edge counts a message under: its server, its build, and when it was decided.
pub struct Tally {
    pub server_fqdn: String,
    pub build: String,
    pub decided_at: Timestamp,
}

/// The answer to one `Question`. Made once per message and converted at once: boxing the
/// large variant would cost an allocation on the hot path and save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Decided {
    /// The message comes from no tenant's connector: accepted, and counted nowhere.
    Stranger,
    /// A stamp that cannot be a server's: accepted and never enforced, like a malformed
    /// one, and never refused (the edge would defer that server's mail forever). An
    /// overlong build is counted under its server, cut and marked so that it cannot read
    /// as a build (`tally`); a host that cannot be a key (odd characters, too long) has no
    /// record to count under (no `tally`).
    Unidentified { tenant: String, tally: Option<Tally> },
    /// The rules' verdict for a server of `tenant`.
    Judged {
        tenant: String,
        evaluation: Evaluation,
        /// When the server's episode began, only if that instant is committed: a new
        /// episode's first-seen is not yet.
        first_seen: Option<Timestamp>,
        /// Until when the edge may give the same verdict without asking: the end of the
        /// minute, or the next policy change if sooner.
        valid_until: Timestamp,
        tally: Tally,
    },
}

/// Decides one message at `now` from this node's state, and offers a sighting that
/// changes the server's episode to `sightings`.
pub fn decide(view: &StateView, sightings: &SightingQueue, now: Timestamp, question: Question) -> Result<Decided, Error> {
    let connectors = view.connector_table();
    let Some(tenant) = connectors
        .attribute(question.client_ip, question.cert_name.as_deref())
        .map(|c| c.tenant.clone())
    else {
        return Ok(Decided::Stranger);
    };
    let server_fqdn = question.server_fqdn.trim().to_ascii_lowercase();
    if validate_fqdn("server_fqdn", &server_fqdn).is_err() {
        tracing::debug!(server = %question.server_fqdn, "a stamp whose host cannot be a server's: unidentified");
        return Ok(Decided::Unidentified { tenant, tally: None });
    }
    let build = question.build;
    if build.len() > MAX_BUILD_LEN {
        let tally = Tally {
            server_fqdn,
            build: overlong_build(&build),
            decided_at: now,
        };
        return Ok(Decided::Unidentified {
            tenant,
            tally: Some(tally),
        });
    }

    let policies = view.policies();
    let policy = policies.at(now);
    let entry = view.server(&tenant, &server_fqdn)?;
    let mut episode = entry.and_then(|e| e.record.episode);
    let status = classify(&policy.policy.products, &build).clock_status();
    let relapse_window = TimeDelta::days(i64::from(policy.policy.relapse_window_days));
    let effect = Episode::sight(&mut episode, Sighting { status, at: now }, relapse_window);
    if effect != SightingEffect::Unchanged {
        sightings.offer(ServerSighting {
            tenant: tenant.clone(),
            server_fqdn: server_fqdn.clone(),
            build: build.clone(),
            seen_at: now,
        });
    }
    // Borrowed from the shared map: a tenant record also holds its daily counts.
    let (pauses, tenant_mode) = view
        .tenants()
        .get(&tenant)
        .map(|t| (t.pauses.intervals_for(&server_fqdn), t.mode))
        .unwrap_or_default();
    let facts = ServerFacts {
        tenant: &tenant,
        server_fqdn: &server_fqdn,
        build: &build,
        episode: episode.as_ref(),
        pauses: &pauses,
        tenant_mode,
    };
    let evaluation = evaluate(&policy.policy, facts, now);
    let first_seen = match effect {
        SightingEffect::FirstDetected => None,
        _ => episode.as_ref().map(|e| e.first_seen),
    };
    Ok(Decided::Judged {
        tenant,
        evaluation,
        first_seen,
        valid_until: verdict_valid_until(now, policies.next_change_after(now)),
        tally: Tally {
            server_fqdn,
            build,
            decided_at: now,
        },
    })
}

impl Decided {
    /// The verdict and stage (0: none) the decision metric counts; none for a stranger.
    pub fn counted(&self) -> Option<(ratchet_policy::Verdict, u32)> {
        match self {
            Decided::Stranger => None,
            Decided::Unidentified { .. } => Some((ratchet_policy::Verdict::Accept, 0)),
            Decided::Judged { evaluation, .. } => Some((evaluation.verdict, evaluation.stage.unwrap_or(0))),
        }
    }
}

/// An overlong build as the report keeps it: cut to fit, and ending in `…`, so that it
/// can never read as a build (a cut `15.0.1497.000…0048` would otherwise read as 15.0.1497.0).
fn overlong_build(build: &str) -> String {
    const MARK: char = '…';
    let mut end = MAX_BUILD_LEN - MARK.len_utf8();
    while !build.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &build[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_build_is_cut_to_fit_and_never_reads_as_a_build() {
        let build = format!("15.0.1497.{}48", "0".repeat(80));
        let kept = overlong_build(&build);
        assert!(kept.len() <= MAX_BUILD_LEN && kept.ends_with('…'), "{kept}");
        assert!(kept.parse::<ratchet_policy::BuildVersion>().is_err());
        let wide = "é".repeat(40);
        assert!(overlong_build(&wide).len() <= MAX_BUILD_LEN);
    }
}
