//! A decider whose clock is pinned to just past the start of a minute, with a tenant whose
//! connector is 127.0.0.1/32, and servers put in a given stage and window position: what
//! the enforcing fronts' end-to-end tests (the edge, the milter) check their replies
//! against.

use chrono::{DateTime, DurationRound, TimeDelta, Timelike, Utc};
use ratchet_policy::window::window_offset;

use super::cluster::{Cluster, TEST_CONFIG};

pub const TENANT: &str = "bear";
pub const OUT_OF_DATE: &str = "15.0.1497.48";
pub const COMPLIANT: &str = "15.2.2562.17";

pub struct StagedDecider {
    pub cluster: Cluster,
    /// The decider's clock when it started.
    pub now: DateTime<Utc>,
}

impl StagedDecider {
    /// A single decider whose clock reads a few seconds into the next minute, and the tenant.
    pub fn start() -> StagedDecider {
        let now = Utc::now();
        let decider_now = now.duration_trunc(TimeDelta::minutes(1)).unwrap() + TimeDelta::minutes(1) + TimeDelta::seconds(2);
        let offset = (decider_now - now).num_seconds().to_string();
        let mut cluster = Cluster::new(1, TEST_CONFIG);
        let members = cluster.initial_cluster.clone();
        cluster.nodes[0].start(Some(&members), &["--test-clock-offset-secs", &offset]);
        let decider = StagedDecider { cluster, now: decider_now };
        let endpoint = decider.endpoint();
        super::wait_for_ctl(&endpoint);
        super::ctl(&endpoint, &["tenant", "add", TENANT]);
        super::ctl(&endpoint, &["connector", "add", "--tenant", TENANT, "--cidr", "127.0.0.1/32"]);
        decider
    }

    pub fn endpoint(&self) -> String {
        self.cluster.nodes[0].grpc.to_string()
    }

    /// Imports a server first seen `age_days` ago by the decider's clock.
    pub fn import(&self, server: &str, age_days: i64) {
        let first_seen = (self.now - TimeDelta::days(age_days)).to_rfc3339();
        super::ctl(
            &self.endpoint(),
            &[
                "server",
                "import",
                "--tenant",
                TENANT,
                "--server",
                server,
                "--build",
                OUT_OF_DATE,
                "--first-seen",
                &first_seen,
            ],
        );
    }

    /// A server name whose window puts the decider's current minute `minutes_into_window`
    /// minutes after the server's offset.
    pub fn server_at(&self, label: &str, minutes_into_window: u32) -> String {
        let minute = self.now.minute();
        (0..)
            .map(|k| format!("{label}-{k}.bear.local"))
            .find(|fqdn| (minute + 60 - window_offset(TENANT, fqdn)) % 60 == minutes_into_window)
            .expect("some name lands there")
    }
}

/// The throttle reply of the default policy.
pub fn throttled(minutes: u32) -> String {
    format!("450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online throttled for {minutes} mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.")
}

/// The block reply of the default policy.
pub fn blocked(minutes: u32) -> String {
    format!("550 5.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online blocked for {minutes} mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.")
}
