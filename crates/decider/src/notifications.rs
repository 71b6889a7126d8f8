//! Notifications: the leader finds the notices the clock brings about, and delivers every
//! tenant's events to its webhook.
//!
//! Events that commands cause (first detected, remediated, pauses) are raised inside apply.
//! Those that time causes (a stage entered, throttling or blocking within the policy's
//! `warning_days`, a pause running out) are found by a scan on the leader and proposed as
//! one `Notify` entry; apply raises each notice key once per server episode (or tenant),
//! so a scan repeated by a new leader raises nothing twice.
//!
//! Delivery is at least once, by the leader only: it POSTs each undelivered event in order
//! and records what the webhook took with a `MarkDelivered` entry. A new leader resumes
//! from what is not marked, so an event delivered just before a leader change may come
//! again, with the same id: receivers de-duplicate on it. Each tenant's delivery runs on
//! its own, so a slow or dead receiver delays only its own tenant's events; `webhook`
//! signs each POST and keeps them off private addresses.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::task::JoinSet;

use chrono::{SecondsFormat, TimeDelta};
use ratchet_policy::{evaluate, ServerFacts, Timestamp};
use ratchet_store::command::MAX_NOTICES;
use ratchet_store::{Command, EventKind, Notice, PolicySchedule, Tenant};
use tokio::time::Instant;

use crate::proposer::Proposer;
use crate::webhook::WebhookClient;

const TICK: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

pub struct Notifier {
    proposer: Proposer,
    webhooks: WebhookClient,
    scan_every: Duration,
    /// Per tenant: consecutive failures and when to try its webhook again.
    backoff: HashMap<String, (u32, Instant)>,
    /// The tenants whose delivery is under way, one task each.
    delivering: JoinSet<(String, bool)>,
    in_flight: std::collections::HashSet<String>,
}

impl Notifier {
    pub fn new(proposer: Proposer, scan_every: Duration, allow_private: bool) -> anyhow::Result<Notifier> {
        Ok(Notifier {
            proposer,
            webhooks: WebhookClient::new(allow_private)?,
            scan_every,
            backoff: HashMap::new(),
            delivering: JoinSet::new(),
            in_flight: Default::default(),
        })
    }

    fn is_leader(&self) -> bool {
        leads(&self.proposer)
    }

    /// Scans and delivers while this node leads; idles otherwise.
    pub async fn run(mut self) {
        let mut last_scan: Option<Instant> = None;
        loop {
            tokio::time::sleep(TICK).await;
            if !self.is_leader() {
                last_scan = None;
                continue;
            }
            if last_scan.is_none_or(|at| at.elapsed() >= self.scan_every) {
                last_scan = Some(Instant::now());
                self.raise_notices().await;
            }
            self.deliver().await;
        }
    }

    async fn raise_notices(&self) {
        let notices = match self.scan(self.proposer.now()) {
            Ok(notices) => notices,
            Err(error) => return tracing::warn!(%error, "notice scan failed"),
        };
        if notices.is_empty() {
            return;
        }
        for notices in notices.chunks(MAX_NOTICES) {
            let notices = notices.to_vec();
            if let Err(error) = self.proposer.propose(Command::Notify { notices }).await {
                return tracing::warn!(%error, "raising notices failed; the next scan retries");
            }
        }
    }

    /// Every notice due at `now` that its server episode or tenant has not had yet.
    fn scan(&self, now: Timestamp) -> Result<Vec<Notice>, ratchet_store::rocks::StoreError> {
        let view = &self.proposer.view;
        let policies = view.policies();
        let policy = policies.at(now);
        let warning = TimeDelta::days(i64::from(policy.policy.warning_days));
        let mut notices = Vec::new();
        for tenant in view.tenants().values() {
            notices.extend(pause_end_notices(tenant, now));
            let mut newly_enforced = Vec::new();
            for entry in view.servers(&tenant.name)? {
                let record = &entry.record;
                if policies.newly_enforces(now, &record.build).is_some() {
                    newly_enforced.push(record.server_fqdn.clone());
                }
                let pauses = tenant.pauses.intervals_for(&record.server_fqdn);
                let Some(episode) = record.episode.as_ref().filter(|e| e.is_open()) else {
                    continue;
                };
                let facts = ServerFacts {
                    tenant: &tenant.name,
                    server_fqdn: &record.server_fqdn,
                    build: &record.build,
                    episode: Some(episode),
                    pauses: &pauses,
                    tenant_mode: tenant.mode,
                };
                let evaluation = evaluate(&policy.policy, facts, now);
                let episode_key = format!("{}:{}", record.server_fqdn, episode.first_seen.timestamp_millis());
                let mut candidates = Vec::new();
                if let Some(stage) = evaluation.stage.filter(|stage| *stage > 1) {
                    let message = format!(
                        "{} entered stage {stage}: throttled {} and blocked {} minutes of every hour",
                        record.server_fqdn, evaluation.throttle_min, evaluation.block_min
                    );
                    candidates.push((format!("stage-{stage}"), EventKind::StageEntered, message));
                }
                let soon = [
                    (
                        evaluation.throttle_enabled_date,
                        EventKind::ThrottlingSoon,
                        "throttling-soon",
                        "throttling",
                    ),
                    (
                        evaluation.blocking_enabled_date,
                        EventKind::BlockingSoon,
                        "blocking-soon",
                        "blocking",
                    ),
                ];
                for (date, kind, key, what) in soon {
                    if let Some(date) = date.filter(|date| now < *date && *date - now <= warning) {
                        candidates.push((
                            key.to_owned(),
                            kind,
                            format!(
                                "{what} of {} starts on {}",
                                record.server_fqdn,
                                date.to_rfc3339_opts(SecondsFormat::Secs, true)
                            ),
                        ));
                    }
                }
                for (key, kind, message) in candidates {
                    let key = format!("{episode_key}:{key}");
                    if !entry.notices.contains(&key) {
                        notices.push(Notice {
                            tenant: tenant.name.clone(),
                            server_fqdn: Some(record.server_fqdn.clone()),
                            key,
                            kind,
                            message,
                        });
                    }
                }
            }
            notices.extend(policy_announcement(tenant, &policies, &newly_enforced, warning, now));
        }
        Ok(notices)
    }

    /// Starts delivery for every tenant with undelivered events whose delivery is not
    /// already under way nor backing off, and takes stock of those that finished.
    async fn deliver(&mut self) {
        while let Some(finished) = self.delivering.try_join_next() {
            let Ok((tenant, failed)) = finished else { continue };
            self.in_flight.remove(&tenant);
            if failed {
                let failures = self.backoff.get(&tenant).map_or(0, |(n, _)| *n) + 1;
                let wait = FIRST_RETRY.saturating_mul(1 << failures.min(6)).min(LAST_RETRY);
                self.backoff.insert(tenant, (failures, Instant::now() + wait));
            } else {
                self.backoff.remove(&tenant);
            }
        }
        for tenant in self.proposer.view.tenants().values() {
            let (Some(url), Some(secret)) = (tenant.webhook_url.clone(), tenant.webhook_secret.clone()) else {
                continue;
            };
            if self.in_flight.contains(&tenant.name) || self.backoff.get(&tenant.name).is_some_and(|(_, next)| Instant::now() < *next) {
                continue;
            }
            self.in_flight.insert(tenant.name.clone());
            let (proposer, webhooks, name) = (self.proposer.clone(), self.webhooks.clone(), tenant.name.clone());
            self.delivering.spawn(async move {
                let failed = deliver_tenant(&proposer, &webhooks, &name, &url, &secret).await;
                (name, failed)
            });
        }
    }
}

/// Whether this node leads now: the leader alone scans, delivers and sweeps.
pub(crate) fn leads(proposer: &Proposer) -> bool {
    let metrics = proposer.raft.metrics().borrow().clone();
    metrics.current_leader == Some(metrics.id)
}

/// POSTs a tenant's undelivered events in order while this node leads, and records what
/// the webhook took; true if a POST failed (the tenant then backs off).
async fn deliver_tenant(proposer: &Proposer, webhooks: &WebhookClient, tenant: &str, url: &str, secret: &str) -> bool {
    let pending = match proposer.view.pending_events(tenant) {
        Ok(pending) => pending,
        Err(error) => {
            tracing::warn!(%tenant, %error, "reading pending events failed");
            return true;
        }
    };
    let mut delivered = Vec::new();
    let mut failed = false;
    for event in &pending {
        if !leads(proposer) {
            break;
        }
        match webhooks.post(url, secret, event).await {
            Ok(()) => delivered.push(event.id.clone()),
            Err(error) => {
                tracing::warn!(%tenant, event = %event.id, error = %format!("{error:#}"), "webhook delivery failed; will retry");
                failed = true;
                break;
            }
        }
    }
    if !delivered.is_empty() {
        let command = Command::MarkDelivered {
            tenant: tenant.to_owned(),
            ids: delivered,
        };
        if let Err(error) = proposer.propose(command).await {
            tracing::warn!(%tenant, %error, "recording deliveries failed; they will be sent again");
        }
    }
    failed
}

/// The notice that a scheduled policy will enforce some of the tenant's servers that the
/// policy in force does not: once when it is found, and once more (a reminder) within
/// `warning` of its time. A policy scheduled inside that window gets the one notice.
fn policy_announcement(
    tenant: &Tenant,
    policies: &PolicySchedule,
    newly_enforced: &[String],
    warning: TimeDelta,
    now: Timestamp,
) -> Option<Notice> {
    let (Some(effective_at), Some(pending)) = (policies.next_change_after(now), policies.pending.as_ref()) else {
        return None;
    };
    let first = newly_enforced.first()?;
    let announced = format!("policy-announced:{}", pending.version);
    let reminded = format!("policy-reminder:{}", pending.version);
    let was_announced = tenant.notices.contains(&announced);
    let key = match effective_at - now <= warning {
        true if !tenant.notices.contains(&reminded) => reminded,
        false if !was_announced => announced,
        _ => return None,
    };
    let lead = if was_announced { "Reminder: policy" } else { "Policy" };
    let others = match newly_enforced.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    Some(Notice {
        tenant: tenant.name.clone(),
        server_fqdn: None,
        key,
        kind: EventKind::PolicyAnnounced,
        message: format!(
            "{lead} version {} takes effect on {}: it enforces {first}{others}, not enforced today; update {} before then",
            pending.version,
            effective_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            if newly_enforced.len() == 1 { "it" } else { "them" },
        ),
    })
}

/// The notice that a tenant's last pause, or a server's, ran out on its own, once each.
fn pause_end_notices(tenant: &Tenant, now: Timestamp) -> Vec<Notice> {
    let mut last_of_scope = BTreeMap::new();
    for pause in tenant.pauses.pauses() {
        last_of_scope.insert(pause.server.as_deref(), pause);
    }
    let ran_out = last_of_scope.into_values().filter(|p| !p.ended_early && p.end <= now);
    ran_out
        .filter_map(|pause| {
            let key = match &pause.server {
                None => format!("pause-ended:{}", pause.start.timestamp_millis()),
                Some(server) => format!("pause-ended:{server}:{}", pause.start.timestamp_millis()),
            };
            let what = pause
                .server
                .as_ref()
                .map_or_else(|| "enforcement".to_owned(), |s| format!("enforcement of {s}"));
            let end = pause.end.to_rfc3339_opts(SecondsFormat::Secs, true);
            (!tenant.notices.contains(&key)).then(|| Notice {
                tenant: tenant.name.clone(),
                server_fqdn: pause.server.clone(),
                key,
                kind: EventKind::PauseEnded,
                message: format!("{what} pause ended on {end}; enforcement resumes"),
            })
        })
        .collect()
}
