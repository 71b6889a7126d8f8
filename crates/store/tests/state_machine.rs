//! The state machine on a real RocksDB in a temporary directory, driven through openraft's
//! storage traits: apply, time in the log, refusals, snapshots and reopening.

use chrono::{DateTime, Duration, TimeZone, Utc};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use ratchet_store::model::{count_key, Counts, LastFlush};
use ratchet_store::rocks::STATE_FAMILIES;
use ratchet_store::{
    Applied, AuditRecord, Command, ErrorKind, EventKind, Notice, Observation, Page, PageStart, Request, Response, ServerEntry,
    ServerSighting, StateMachine, StorageOptions, Store, SweepCursor, SweepPhase, TypeConfig,
};

const OUT_OF_DATE: &str = "15.0.1497.48";
const COMPLIANT: &str = "15.2.2562.17";

fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(n)
}

fn entry(index: u64, at: DateTime<Utc>, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            at,
            command,
            trace_parent: None,
            actor: None,
        }),
    }
}

struct Machine {
    machine: StateMachine,
    next_index: u64,
}

impl Machine {
    fn open(dir: &std::path::Path) -> Machine {
        let store = Store::open(&dir.join("db"), StorageOptions::default()).unwrap();
        let machine = StateMachine::open(store, &dir.join("snapshots")).unwrap();
        Machine { machine, next_index: 1 }
    }

    /// Every key and value of every state column family, in order.
    fn dump(&self) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let view = self.machine.view();
        let store = view.store();
        let mut records = Vec::new();
        for family in STATE_FAMILIES {
            for item in store.db().iterator_cf(store.cf(family), rocksdb::IteratorMode::Start) {
                let (key, value) = item.unwrap();
                records.push((family, key.to_vec(), value.to_vec()));
            }
        }
        records
    }

    async fn apply(&mut self, batch: Vec<(DateTime<Utc>, Command)>) -> Vec<Response> {
        let entries: Vec<_> = batch
            .into_iter()
            .map(|(at, command)| {
                self.next_index += 1;
                entry(self.next_index, at, command)
            })
            .collect();
        self.machine.apply(entries).await.unwrap()
    }

    async fn one(&mut self, at: DateTime<Utc>, command: Command) -> Response {
        self.apply(vec![(at, command)]).await.remove(0)
    }
}

/// A sighting of one of bear's servers, seen by the deciding node at `seen_at`.
fn sight(seen_at: DateTime<Utc>, server: &str, build: &str) -> Command {
    Command::Sight {
        sightings: vec![ServerSighting {
            tenant: "bear".into(),
            server_fqdn: server.into(),
            build: build.into(),
            seen_at,
        }],
    }
}

impl Machine {
    /// Receives `snapshot` as Raft does from a leader (into the file this machine opens for
    /// it, written through), then installs it.
    async fn receive(&mut self, snapshot: &mut openraft::storage::Snapshot<TypeConfig>) {
        let mut into = self.machine.begin_receiving_snapshot().await.unwrap();
        tokio::io::copy(&mut *snapshot.snapshot, &mut *into).await.unwrap();
        self.machine.install_snapshot(&snapshot.meta, into).await.unwrap();
    }

    fn first_seen(&self, server: &str) -> DateTime<Utc> {
        let entry = self.machine.view().server("bear", server).unwrap().expect("the server is recorded");
        entry.record.episode.expect("an episode").first_seen
    }
}

#[tokio::test]
async fn sightings_in_one_batch_see_each_other_and_time_never_runs_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    m.apply(vec![
        (day(5), sight(day(5), "exch1", OUT_OF_DATE)),
        (day(3), sight(day(3), "exch1", OUT_OF_DATE)),
        (day(2), sight(day(2), "exch2", OUT_OF_DATE)),
    ])
    .await;
    assert_eq!(
        m.first_seen("exch1"),
        day(5),
        "the second sighting finds the first one of the same batch, and older evidence moves nothing"
    );
    assert_eq!(
        m.first_seen("exch2"),
        day(5),
        "a stamp earlier than the previous entry's is raised to it"
    );
}

#[tokio::test]
async fn refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    // A sighting for a tenant removed since it was queued records nothing.
    let unknown = m.one(day(0), sight(day(0), "exch1", OUT_OF_DATE)).await.unwrap();
    assert!(matches!(unknown, Applied::Sighted { changed: 0 }), "{unknown:?}");
    assert!(m.machine.view().server("bear", "exch1").unwrap().is_none());
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    let compliant_import = m
        .one(
            day(1),
            Command::ImportServer {
                tenant: "bear".into(),
                server_fqdn: "exch1".into(),
                build: COMPLIANT.into(),
                first_seen: day(0),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (compliant_import.kind, compliant_import.field.as_str()),
        (ErrorKind::InvalidArgument, "build")
    );
    let over = m
        .one(
            day(1),
            Command::Pause {
                tenant: "bear".into(),
                days: 91,
                servers: Vec::new(),
                request_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(over.message.contains("only 90 pause days remain"), "{over:?}");
    assert!(m.machine.view().servers("bear").unwrap().is_empty());
    assert!(m.machine.view().tenant("bear").unwrap().pauses.pauses().is_empty());
}

#[tokio::test]
async fn remediation_and_relapse_follow_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    for (at, build) in [(day(0), OUT_OF_DATE), (day(40), COMPLIANT), (day(50), OUT_OF_DATE)] {
        m.one(at, sight(at, "exch1", build)).await.unwrap();
    }
    assert_eq!(m.first_seen("exch1"), day(0), "inside the relapse window the old episode resumes");
    for (at, build) in [(day(60), COMPLIANT), (day(100), OUT_OF_DATE)] {
        m.one(at, sight(at, "exch1", build)).await.unwrap();
    }
    assert_eq!(m.first_seen("exch1"), day(100), "after the window a new episode starts");
    m.one(
        day(101),
        Command::Decommission {
            tenant: "bear".into(),
            server_fqdn: "exch1".into(),
        },
    )
    .await
    .unwrap();
    assert!(m.machine.view().server("bear", "exch1").unwrap().is_none());
}

#[tokio::test]
async fn a_snapshot_installs_the_same_state_elsewhere_and_state_survives_reopening() {
    let source_dir = tempfile::tempdir().unwrap();
    let mut source = Machine::open(source_dir.path());
    source.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    source
        .one(
            day(0),
            Command::AddConnector {
                tenant: "bear".into(),
                cidr: Some("10.0.0.0/8".parse().unwrap()),
                cert_name: None,
            },
        )
        .await
        .unwrap();
    for i in 0..50 {
        source.one(day(i), sight(day(i), &format!("exch{i}"), OUT_OF_DATE)).await.unwrap();
    }
    source
        .one(
            day(60),
            Command::Pause {
                tenant: "bear".into(),
                days: 10,
                servers: Vec::new(),
                request_id: Some("r1".into()),
            },
        )
        .await
        .unwrap();
    let mut snapshot = source.machine.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let target_dir = tempfile::tempdir().unwrap();
    let mut target = Machine::open(target_dir.path());
    target.one(day(0), Command::AddTenant { name: "stale".into() }).await.unwrap();
    target.receive(&mut snapshot).await;
    let (source_view, target_view) = (source.machine.view(), target.machine.view());
    assert_eq!(target_view.servers("bear").unwrap(), source_view.servers("bear").unwrap());
    assert_eq!(
        target_view.tenants(),
        source_view.tenants(),
        "the stale tenant is gone, the pause is there"
    );
    assert_eq!(target.machine.applied_state().await.unwrap().0, snapshot.meta.last_log_id);
    assert_eq!(target_view.connector_table().len(), 1);
    // Views share the open database; all must go before it can be opened again.
    drop((target_view, target));

    let reopened = Machine::open(target_dir.path());
    assert_eq!(reopened.machine.view().servers("bear").unwrap().len(), 50);
    assert_eq!(reopened.machine.view().tenant("bear").unwrap().pauses.pauses().len(), 1);
}

#[tokio::test]
async fn where_batch_boundaries_fall_changes_nothing() {
    // The leader applies entries one by one; a follower catching up gets them in one batch.
    // An event raised and marked delivered within one batch must end as it does apart.
    let pause = |id: &str| Command::Pause {
        tenant: "bear".into(),
        days: 1,
        servers: Vec::new(),
        request_id: Some(id.into()),
    };
    let commands = vec![
        (day(0), Command::AddTenant { name: "bear".into() }),
        (day(1), pause("r1")),
        (
            day(1),
            Command::MarkDelivered {
                tenant: "bear".into(),
                ids: vec!["3-1".into()],
            },
        ),
        (day(2), sight(day(2), "exch1", OUT_OF_DATE)),
        (day(3), sight(day(3), "exch1", COMPLIANT)),
        (
            day(3),
            Command::MarkDelivered {
                tenant: "bear".into(),
                ids: vec!["5-1".into(), "6-1".into()],
            },
        ),
    ];
    let (one_dir, split_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut one_batch = Machine::open(one_dir.path());
    one_batch.apply(commands.clone()).await;
    let mut one_by_one = Machine::open(split_dir.path());
    for command in commands {
        one_by_one.apply(vec![command]).await;
    }
    let events = one_batch.machine.view().events("bear").unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.delivered), "{events:?}");
    assert!(one_batch.machine.view().pending_events("bear").unwrap().is_empty());
    assert_eq!(one_batch.dump(), one_by_one.dump());
}

#[tokio::test]
async fn an_install_cut_short_by_a_crash_is_finished_when_the_node_opens_again() {
    let source_dir = tempfile::tempdir().unwrap();
    let mut source = Machine::open(source_dir.path());
    source.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    for i in 0..20 {
        source.one(day(i), sight(day(i), &format!("exch{i}"), OUT_OF_DATE)).await.unwrap();
    }
    let mut snapshot = source.machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let mut target = Machine::open(target_dir.path());
    target.receive(&mut snapshot).await;
    let installed = target.dump();

    // A crash in the middle of the install: the marker is still there, half the state gone.
    {
        let view = target.machine.view();
        let db = view.store().db();
        db.put_cf(view.store().cf("raft"), b"installing", b"").unwrap();
        db.delete_cf(view.store().cf("servers"), b"bear\0exch3").unwrap();
    }
    drop(target);
    let reopened = Machine::open(target_dir.path());
    assert_eq!(reopened.dump(), installed);
    assert_eq!(reopened.machine.view().servers("bear").unwrap().len(), 20);
}

#[tokio::test]
async fn admin_writes_are_audited_with_who_what_and_how_they_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    let operator = "spiffe://ratchet.local/operator/alice";
    let audited = |index: u64, at: DateTime<Utc>, command: Command| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            at,
            command,
            trace_parent: None,
            actor: Some(operator.into()),
        }),
    };
    let entries = vec![
        audited(2, day(0), Command::AddTenant { name: "bear".into() }),
        audited(
            3,
            day(1),
            Command::EndPause {
                tenant: "bear".into(),
                server: None,
            },
        ),
        audited(
            4,
            day(2),
            Command::Audit {
                action: "cluster promote d3".into(),
                tenant: None,
                outcome: "ok".into(),
            },
        ),
    ];
    m.machine.apply(entries).await.unwrap();
    // A system write (no actor) is not in the trail.
    m.one(day(3), sight(day(3), "exch1", OUT_OF_DATE)).await.unwrap();

    let view = m.machine.view();
    let audit = |tenant, since, start: &PageStart, limit| view.audit_page(tenant, since, start, limit).unwrap();
    let trail: Vec<_> = audit(None, None, &PageStart::First, 100)
        .items
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let lines: Vec<(u64, &str, &str, Option<&str>, &str)> = trail
        .iter()
        .map(|r| {
            (
                r.index,
                r.actor.as_str(),
                r.action.as_str(),
                r.tenant.as_deref(),
                r.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], (2, operator, "tenant add bear", None, "ok"));
    assert_eq!((lines[1].0, lines[1].2, lines[1].3), (3, "pause end", Some("bear")));
    assert!(lines[1].4.starts_with("refused: "), "{lines:?}");
    assert_eq!(lines[2], (4, operator, "cluster promote d3", None, "ok"));
    assert_eq!(audit(Some("bear"), None, &PageStart::First, 100).items.len(), 1);
    assert_eq!(audit(None, Some(day(2)), &PageStart::First, 100).items.len(), 1);

    // Pages of two: the second starts after the first's last key and ends the trail.
    let first = audit(None, None, &PageStart::First, 2);
    assert!(first.has_next && !first.has_previous);
    let indices = |page: &Page<AuditRecord>| page.items.iter().map(|(_, r)| r.index).collect::<Vec<_>>();
    assert_eq!(indices(&first), [2, 3]);
    let after = PageStart::After(first.items.last().unwrap().0.clone());
    let second = audit(None, None, &after, 2);
    assert_eq!(indices(&second), [4]);
    assert!(!second.has_next);
}

/// One edge flush of `blocked` messages from bear's exch1, in stage 3.
fn count(origin: u64, sequence: u64, blocked: u64) -> Command {
    Command::Count {
        origin,
        sequence,
        observations: vec![Observation {
            tenant: "bear".into(),
            server_fqdn: "exch1".into(),
            build: OUT_OF_DATE.into(),
            last_seen: day(1),
            counts: vec![(
                3,
                Counts {
                    blocked,
                    ..Counts::default()
                },
            )],
        }],
    }
}

#[tokio::test]
async fn an_edge_flush_counts_once_however_often_and_late_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    let counted = |m: &Machine| m.machine.view().server("bear", "exch1").unwrap().unwrap().counters[&3].blocked;

    m.one(day(1), count(7, 1, 1)).await.unwrap();
    let resent = m.one(day(1), count(7, 1, 1)).await.unwrap();
    assert_eq!(resent, Applied::Observed { servers: 0 }, "the same flush again");
    m.one(day(1), count(7, 2, 10)).await.unwrap();
    // The first copy of flush 1, retried through another decider, commits after flush 2.
    m.one(day(1), count(7, 1, 1)).await.unwrap();
    assert_eq!(counted(&m), 11, "flushes 1 and 2 once each");

    // Another edge (or this one restarted) numbers its flushes from 1 again.
    m.one(day(1), count(8, 1, 100)).await.unwrap();
    assert_eq!(counted(&m), 111);

    drop(m);
    let mut reopened = Machine::open(dir.path());
    reopened.next_index = 10;
    reopened.one(day(2), count(7, 2, 10)).await.unwrap();
    assert_eq!(counted(&reopened), 111, "the last counted flush of each edge is kept on disk");

    let refused = count(0, 1, 1).validate(day(2)).unwrap_err();
    assert_eq!(refused.field, "origin", "{refused:?}");
}

#[tokio::test]
async fn servers_paused_on_their_own_are_charged_each_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    m.one(day(0), sight(day(0), "exch1", OUT_OF_DATE)).await.unwrap();
    m.one(day(0), sight(day(0), "exch2", OUT_OF_DATE)).await.unwrap();
    let pause = |servers: &[&str], days: u32, id: &str| Command::Pause {
        tenant: "bear".into(),
        days,
        servers: servers.iter().map(|s| s.to_string()).collect(),
        request_id: Some(id.into()),
    };

    let unknown = m.one(day(1), pause(&["exch1", "exch9"], 5, "r1")).await.unwrap_err();
    assert_eq!(
        (unknown.kind, unknown.field.as_str()),
        (ErrorKind::NotFound, "servers"),
        "{unknown:?}"
    );
    assert!(unknown.message.contains("exch9"), "{unknown:?}");
    assert!(
        m.machine.view().tenant("bear").unwrap().pauses.pauses().is_empty(),
        "a refusal charges nothing"
    );

    m.one(day(1), pause(&["exch1", "exch2"], 30, "r2")).await.unwrap();
    m.one(day(1), pause(&["exch1", "exch2"], 30, "r2")).await.unwrap();
    m.one(day(2), pause(&["exch2"], 30, "r3")).await.unwrap();
    let ledger = m.machine.view().tenant("bear").unwrap().pauses;
    assert_eq!(
        ledger.remaining_days(90, day(2)),
        0,
        "30 + 30, then 30 more for exch2: retried r2 once"
    );
    assert_eq!(ledger.server_paused_until("exch2", day(2)), Some(day(61)));
    assert_eq!(ledger.paused_until(day(2)), None);

    let ended = m
        .one(
            day(10),
            Command::EndPause {
                tenant: "bear".into(),
                server: Some("exch1".into()),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(
            ended,
            Applied::PauseEnded {
                refunded_days: 21,
                remaining_days: 21,
                ..
            }
        ),
        "{ended:?}"
    );
    let events = m.machine.view().events("bear").unwrap();
    let about = |server: &str| events.iter().filter(|e| e.server_fqdn.as_deref() == Some(server)).count();
    assert_eq!(
        (about("exch1"), about("exch2")),
        (3, 3),
        "first detected, pause started and ended; first detected, pause started and extended: {events:?}"
    );
}

#[tokio::test]
async fn a_scheduled_policy_is_kept_aside_until_its_instant_and_survives_reopening_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut machine = Machine::open(dir.path());
    let mut stricter = ratchet_policy::Policy::default();
    stricter.warning_days = 14;
    let schedule = |effective_at| Command::SetPolicy {
        policy: Box::new(stricter.clone()),
        effective_at: Some(effective_at),
    };

    let refused = machine.one(day(10), schedule(day(10))).await.unwrap_err();
    assert_eq!((refused.kind, refused.field.as_str()), (ErrorKind::InvalidArgument, "effective_at"));
    assert!(machine.machine.view().policies().pending.is_none(), "a refusal changes nothing");

    let Applied::PolicySet { version, effective_at } = machine.one(day(10), schedule(day(20))).await.unwrap() else {
        panic!("a policy set");
    };
    assert_eq!(effective_at, Some(day(20)));
    let policies = machine.machine.view().policies();
    assert_eq!(policies.current.version, 0, "the default stays in force");
    assert_eq!(policies.at(day(19)).version, 0);
    assert_eq!(policies.at(day(20)).version, version, "readers switch at the instant");

    // A snapshot carries the schedule; a reopened node still has it.
    let mut snapshot = machine.machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Machine::open(other_dir.path());
    other.receive(&mut snapshot).await;
    assert_eq!(other.machine.view().policies(), policies);
    drop(machine);
    let mut machine = Machine::open(dir.path());
    machine.next_index = 10;
    assert_eq!(machine.machine.view().policies(), policies);

    // The first entry stamped at or after the instant promotes it, on every node alike.
    machine.one(day(19), Command::AddTenant { name: "bear".into() }).await.unwrap();
    assert!(machine.machine.view().policies().pending.is_some());
    machine.one(day(21), Command::AddTenant { name: "owl".into() }).await.unwrap();
    let promoted = machine.machine.view().policies();
    assert_eq!((promoted.current.version, promoted.pending.is_none()), (version, true));
    assert_eq!(promoted.current.policy.warning_days, 14);
}

#[tokio::test]
async fn a_tenant_mode_change_is_kept_and_told_once_and_an_unknown_tenant_is_refused() {
    use ratchet_policy::TenantMode;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    let set = |tenant: &str, mode| Command::SetTenantMode {
        tenant: tenant.into(),
        mode,
    };
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    assert_eq!(m.machine.view().tenant("bear").unwrap().mode, TenantMode::Enforce);

    let unknown = m.one(day(1), set("nosuch", TenantMode::ReportOnly)).await.unwrap_err();
    assert_eq!((unknown.kind, unknown.field.as_str()), (ErrorKind::NotFound, "tenant"));
    assert!(unknown.message.contains("nosuch"), "{unknown:?}");

    for at in [day(2), day(3)] {
        m.one(at, set("bear", TenantMode::ReportOnly)).await.unwrap();
    }
    let mode_changes = |m: &Machine| {
        let events = m.machine.view().events("bear").unwrap();
        events.into_iter().filter(|e| e.kind == EventKind::ModeChanged).count()
    };
    assert_eq!(m.machine.view().tenant("bear").unwrap().mode, TenantMode::ReportOnly);
    assert_eq!(mode_changes(&m), 1, "setting the mode it has is a no-op");
    m.one(day(4), set("bear", TenantMode::Enforce)).await.unwrap();
    assert_eq!(m.machine.view().tenant("bear").unwrap().mode, TenantMode::Enforce);
    assert_eq!(mode_changes(&m), 2);

    // The mode survives reopening.
    m.one(day(5), set("bear", TenantMode::ReportOnly)).await.unwrap();
    drop(m);
    let m = Machine::open(dir.path());
    assert_eq!(m.machine.view().tenant("bear").unwrap().mode, TenantMode::ReportOnly);
}

#[tokio::test]
async fn a_product_switched_off_starts_no_clock_but_its_patched_servers_still_remediate() {
    use ratchet_policy::{Mode, Policy};
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    m.one(day(0), sight(day(0), "watched", OUT_OF_DATE)).await.unwrap();
    let mut policy = Policy::default();
    policy
        .products
        .iter_mut()
        .filter(|p| p.name == "Exchange 2013")
        .for_each(|p| p.mode = Mode::Off);
    m.one(
        day(1),
        Command::SetPolicy {
            policy: Box::new(policy),
            effective_at: None,
        },
    )
    .await
    .unwrap();
    m.one(day(2), sight(day(2), "unwatched", OUT_OF_DATE)).await.unwrap();
    let unwatched = m.machine.view().server("bear", "unwatched").unwrap().expect("recorded");
    assert_eq!(unwatched.record.episode, None, "no clock starts while its product is off");
    m.one(day(3), sight(day(3), "watched", COMPLIANT)).await.unwrap();
    let watched = m.machine.view().server("bear", "watched").unwrap().expect("recorded");
    assert_eq!(watched.record.episode.and_then(|e| e.remediated_at), Some(day(3)));
}

/// A policy that forgets servers not seen for 30 days and deletes events older than 20.
fn short_retention() -> Command {
    let mut policy = ratchet_policy::Policy::default();
    policy.retention = ratchet_policy::Retention {
        forget_after_days: 30,
        keep_events_days: 20,
    };
    Command::SetPolicy {
        policy: Box::new(policy),
        effective_at: None,
    }
}

fn sweep(resume: Option<SweepCursor>, budget: u32) -> Command {
    Command::Sweep { resume, budget }
}

fn connector(tenant: &str, cidr: &str) -> Command {
    Command::AddConnector {
        tenant: tenant.into(),
        cidr: Some(cidr.parse().unwrap()),
        cert_name: None,
    }
}

/// Everything a tenant can hold: connectors, a webhook, a pause, servers with counts,
/// events (raised and delivered), and a notice; for "bear" and for "bear-cub", whose name
/// starts with bear's.
fn a_full_life(tenant: &str, cidr: &str) -> Vec<(DateTime<Utc>, Command)> {
    let mut count = count(7, 1, 3);
    if let Command::Count { observations, origin, .. } = &mut count {
        observations[0].tenant = tenant.into();
        *origin = cidr.len() as u64;
    }
    vec![
        (day(0), Command::AddTenant { name: tenant.into() }),
        (day(0), connector(tenant, cidr)),
        (
            day(0),
            Command::SetWebhook {
                tenant: tenant.into(),
                url: Some("https://hooks.example/ratchet".into()),
                secret: Some("s3cret".into()),
            },
        ),
        (
            day(1),
            Command::Pause {
                tenant: tenant.into(),
                days: 3,
                servers: Vec::new(),
                request_id: Some("r1".into()),
            },
        ),
        (
            day(1),
            Command::Sight {
                sightings: vec![ServerSighting {
                    tenant: tenant.into(),
                    server_fqdn: "exch1".into(),
                    build: OUT_OF_DATE.into(),
                    seen_at: day(1),
                }],
            },
        ),
        (day(1), count),
        (
            day(2),
            Command::Notify {
                notices: vec![Notice {
                    tenant: tenant.into(),
                    server_fqdn: None,
                    key: "pause-ended:1".into(),
                    kind: EventKind::PauseEnded,
                    message: "pause ended".into(),
                }],
            },
        ),
    ]
}

/// Whether a state record belongs to `tenant` by its key: its record in `tenants`, or a
/// key under its prefix anywhere.
fn is_keyed_under(family: &str, key: &[u8], tenant: &str) -> bool {
    let prefix = [tenant.as_bytes(), b"\0"].concat();
    (family == "tenants" && key == tenant.as_bytes()) || key.starts_with(&prefix)
}

#[tokio::test]
async fn removing_a_tenant_leaves_no_record_under_its_name_and_the_name_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.apply(a_full_life("bear", "10.0.0.0/8")).await;
    m.apply(a_full_life("bear-cub", "10.1.0.0/16")).await;
    let before = m.dump();
    assert!(before.iter().any(|(f, k, _)| *f == "servers" && is_keyed_under(f, k, "bear")));
    assert!(before
        .iter()
        .any(|(f, k, _)| *f == "pending_events" && is_keyed_under(f, k, "bear")));
    let cub_before: Vec<_> = before
        .iter()
        .filter(|(f, k, _)| is_keyed_under(f, k, "bear-cub"))
        .cloned()
        .collect();

    let unknown = m.one(day(3), Command::RemoveTenant { tenant: "owl".into() }).await.unwrap_err();
    assert_eq!(
        (unknown.kind, unknown.message.as_str()),
        (ErrorKind::NotFound, "no tenant named \"owl\"")
    );
    assert_eq!(m.dump().len(), before.len(), "a refusal adds nothing");

    let removed = m.one(day(3), Command::RemoveTenant { tenant: "bear".into() }).await.unwrap();
    assert_eq!(removed, Applied::TenantRemoved);
    let after = m.dump();
    let left: Vec<_> = after.iter().filter(|(f, k, _)| is_keyed_under(f, k, "bear")).collect();
    assert!(left.is_empty(), "records of a removed tenant: {left:?}");
    let cub_after: Vec<_> = after.iter().filter(|(f, k, _)| is_keyed_under(f, k, "bear-cub")).cloned().collect();
    assert_eq!(
        cub_after, cub_before,
        "a tenant whose name starts with the removed one's keeps everything"
    );
    let view = m.machine.view();
    assert!(view.tenant("bear").is_none());
    let connectors = view.connector_table();
    assert!(connectors.connectors().all(|c| c.tenant != "bear"), "edges stop attributing to it");

    // Added again, and sighted in the same batch: nothing of the old tenant comes back.
    m.apply(vec![
        (day(4), Command::AddTenant { name: "bear".into() }),
        (day(4), sight(day(4), "exch2", COMPLIANT)),
    ])
    .await;
    // A late flush of what an edge counted for the old bear (seen on day 1) is not the new one's.
    m.one(day(5), count(99, 1, 3)).await.unwrap();
    let view = m.machine.view();
    let bear = view.tenant("bear").unwrap();
    assert!(bear.connectors.is_empty() && bear.daily.is_empty() && bear.notices.is_empty());
    assert!(bear.webhook_url.is_none() && bear.pauses.pauses().is_empty());
    let servers: Vec<String> = view.servers("bear").unwrap().into_iter().map(|s| s.record.server_fqdn).collect();
    assert_eq!(servers, ["exch2"]);
    assert!(view.events("bear").unwrap().is_empty());
    assert!(view.pending_events("bear").unwrap().is_empty());
}

#[tokio::test]
async fn a_removal_in_a_batch_ends_as_it_does_one_entry_at_a_time() {
    let mut commands = a_full_life("bear", "10.0.0.0/8");
    commands.extend([
        (day(3), Command::RemoveTenant { tenant: "bear".into() }),
        (day(3), Command::AddTenant { name: "bear".into() }),
        (day(3), sight(day(3), "exch1", OUT_OF_DATE)),
        (
            day(3),
            Command::MarkDelivered {
                tenant: "bear".into(),
                ids: vec!["9-1".into()],
            },
        ),
        (day(4), short_retention()),
        (day(60), sight(day(60), "exch2", OUT_OF_DATE)),
        (day(60), sweep(None, 100)),
        (day(60), sight(day(60), "exch1", OUT_OF_DATE)),
    ]);
    let (one_dir, split_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut one_batch = Machine::open(one_dir.path());
    let responses = one_batch.apply(commands.clone()).await;
    assert!(responses.iter().all(Result::is_ok), "{responses:?}");
    let mut one_by_one = Machine::open(split_dir.path());
    for command in commands {
        one_by_one.apply(vec![command]).await;
    }
    assert_eq!(one_batch.dump(), one_by_one.dump());
    let first_seen = one_batch.first_seen("exch1");
    assert_eq!(
        first_seen,
        day(60),
        "forgotten by the sweep, exch1 starts a new clock when seen again"
    );
}

#[tokio::test]
async fn removing_a_connector_removes_exactly_that_one_and_tells_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.apply(vec![
        (day(0), Command::AddTenant { name: "bear".into() }),
        (day(0), connector("bear", "10.0.0.0/8")),
        (day(0), connector("bear", "192.0.2.0/24")),
    ])
    .await;
    let remove = |cidr: &str| Command::RemoveConnector {
        tenant: "bear".into(),
        cidr: Some(cidr.parse().unwrap()),
        cert_name: None,
    };
    let unknown = m.one(day(1), remove("198.51.100.0/24")).await.unwrap_err();
    assert_eq!((unknown.kind, unknown.field.as_str()), (ErrorKind::NotFound, "cidr"));
    assert!(unknown.message.contains("198.51.100.0/24"), "{unknown:?}");
    let with_cert = Command::RemoveConnector {
        tenant: "bear".into(),
        cidr: Some("10.0.0.0/8".parse().unwrap()),
        cert_name: Some("mx.bear.example".into()),
    };
    let not_that_one = m.one(day(1), with_cert).await.unwrap_err();
    assert_eq!(not_that_one.kind, ErrorKind::NotFound, "the claim must match as a whole");
    assert_eq!(m.machine.view().tenant("bear").unwrap().connectors.len(), 2);

    assert_eq!(m.one(day(1), remove("10.0.0.0/8")).await.unwrap(), Applied::ConnectorRemoved);
    let view = m.machine.view();
    let left: Vec<String> = view.connector_table().connectors().map(|c| c.describe()).collect();
    assert_eq!(left, ["192.0.2.0/24"]);
    let events = view.events("bear").unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::ConnectorRemoved);
    assert!(events[0].message.contains("10.0.0.0/8"), "{events:?}");
}

#[tokio::test]
async fn a_sweep_deletes_by_the_policy_in_force_and_every_node_deletes_the_same() {
    let commands = vec![
        (day(0), Command::AddTenant { name: "bear".into() }),
        (day(0), Command::AddTenant { name: "owl".into() }),
        // Out of date: each raises a first_detected event on its day.
        (day(1), sight(day(1), "old1", OUT_OF_DATE)),
        (day(1), sight(day(1), "old2", OUT_OF_DATE)),
        (day(1), count(7, 1, 1)),
        (
            day(2),
            Command::Decommission {
                tenant: "bear".into(),
                server_fqdn: "old2".into(),
            },
        ),
        (day(3), sight(day(3), "gone", OUT_OF_DATE)),
        (
            day(40),
            Command::Decommission {
                tenant: "bear".into(),
                server_fqdn: "gone".into(),
            },
        ),
        (day(45), sight(day(45), "fresh", OUT_OF_DATE)),
        (day(50), count(8, 1, 1)),
        // Under the default retention (400 days) nothing is old enough yet.
        (day(55), sweep(None, 1_000)),
        (day(55), short_retention()),
        (day(56), sweep(None, 1_000)),
    ];
    let (one_dir, split_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut one_batch = Machine::open(one_dir.path());
    let responses = one_batch.apply(commands.clone()).await;
    let mut one_by_one = Machine::open(split_dir.path());
    for command in commands {
        one_by_one.apply(vec![command]).await;
    }
    assert_eq!(one_batch.dump(), one_by_one.dump(), "the same deletions wherever batches end");

    let swept = |n: usize| responses[responses.len() - n].clone().unwrap();
    assert_eq!(
        swept(3),
        Applied::Swept {
            servers: 0,
            events: 0,
            count_flushes: 0,
            resume: None
        }
    );
    // exch1 of the counts was last seen on day 1, and old1 too: both forgotten; old2's
    // tombstone (day 2) is older than 30 days and goes; gone's (day 40) stays. The events
    // of days 1 to 3 (first detected: old1, old2, exch1, gone) are older than 20 days.
    assert_eq!(
        swept(1),
        Applied::Swept {
            servers: 3,
            events: 4,
            count_flushes: 1,
            resume: None
        }
    );
    let view = one_batch.machine.view();
    let left: Vec<String> = view.servers("bear").unwrap().into_iter().map(|s| s.record.server_fqdn).collect();
    assert_eq!(left, ["fresh"]);
    let store = view.store();
    let tombstone = store.get::<ServerEntry>("servers", b"bear\0gone").unwrap();
    assert!(tombstone.is_some_and(|t| t.is_decommissioned()), "a recent tombstone stays");
    assert!(store.get::<ServerEntry>("servers", b"bear\0old2").unwrap().is_none());
    assert!(
        store.get::<LastFlush>("meta", &count_key(7)).unwrap().is_none(),
        "edge 7 not heard from since day 1"
    );
    assert!(store.get::<LastFlush>("meta", &count_key(8)).unwrap().is_some());
    let events = view.events("bear").unwrap();
    let kinds: Vec<(EventKind, Option<&str>)> = events.iter().map(|e| (e.kind, e.server_fqdn.as_deref())).collect();
    assert_eq!(
        kinds,
        [(EventKind::FirstDetected, Some("fresh")), (EventKind::ServersForgotten, None)],
        "events before day 36 are gone: {events:?}"
    );
    assert_eq!(events[1].message, "2 servers not seen for 30 days forgotten: exch1, old1");
    assert!(view.pending_events("bear").unwrap().iter().all(|e| e.at >= day(36)));
    assert!(view.events("owl").unwrap().is_empty(), "owl forgot nothing and is not told");
}

#[tokio::test]
async fn a_sweep_looks_at_no_more_than_its_budget_and_a_pass_ends_where_one_big_step_does() {
    let servers = 25;
    let mut commands = vec![(day(0), Command::AddTenant { name: "bear".into() })];
    commands.push((
        day(1),
        Command::Sight {
            sightings: (0..servers)
                .map(|n| ServerSighting {
                    tenant: "bear".into(),
                    server_fqdn: format!("exch{n:02}"),
                    build: COMPLIANT.into(),
                    seen_at: day(1),
                })
                .collect(),
        },
    ));
    commands.push((day(2), short_retention()));
    let (small_dir, big_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut small = Machine::open(small_dir.path());
    small.apply(commands.clone()).await;
    let mut big = Machine::open(big_dir.path());
    big.apply(commands).await;

    let mut resume = None;
    let mut steps = Vec::new();
    loop {
        let step = small.one(day(60), sweep(resume.clone(), 10)).await.unwrap();
        let Applied::Swept { servers, resume: next, .. } = step else {
            panic!("{step:?}")
        };
        assert!(servers <= 10, "{servers} deleted by a step of 10");
        steps.push(servers);
        resume = next;
        if resume.is_none() {
            break;
        }
        assert_eq!(resume.as_ref().unwrap().phase, SweepPhase::Servers);
    }
    assert_eq!(steps, [10, 10, 5], "three steps of at most 10, resumed where each stopped");
    let Applied::Swept { servers, resume, .. } = big.one(day(60), sweep(None, 10_000)).await.unwrap() else {
        panic!("a sweep")
    };
    assert_eq!((servers, resume), (25, None));
    let server_records = |m: &Machine| m.dump().into_iter().filter(|(f, _, _)| *f == "servers").count();
    assert_eq!(server_records(&small), 0);
    assert_eq!(server_records(&big), 0);

    for budget in [0, 10_001] {
        let refused = sweep(None, budget).validate(day(60)).unwrap_err();
        assert_eq!(refused.field, "budget", "{refused:?}");
    }
}

#[tokio::test]
async fn count_records_written_before_their_instant_was_kept_are_stamped_then_swept() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.apply(vec![
        (day(0), Command::AddTenant { name: "bear".into() }),
        (day(0), short_retention()),
    ])
    .await;
    let store = m.machine.view().store().clone();
    let legacy = LastFlush { flush_id: 5, at: None };
    store
        .db()
        .put_cf(store.cf("meta"), count_key(9), ratchet_store::codec::encode(&legacy))
        .unwrap();

    m.one(day(10), sweep(None, 100)).await.unwrap();
    let stamped = store.get::<LastFlush>("meta", &count_key(9)).unwrap();
    assert_eq!(
        stamped,
        Some(LastFlush {
            flush_id: 5,
            at: Some(day(10))
        })
    );
    m.one(day(39), sweep(None, 100)).await.unwrap();
    assert!(store.get::<LastFlush>("meta", &count_key(9)).unwrap().is_some(), "29 days: kept");
    let Applied::Swept { count_flushes, .. } = m.one(day(41), sweep(None, 100)).await.unwrap() else {
        panic!("a sweep")
    };
    assert_eq!(count_flushes, 1);
    assert!(store.get::<LastFlush>("meta", &count_key(9)).unwrap().is_none());
}
