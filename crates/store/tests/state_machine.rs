//! The state machine on a real RocksDB in a temporary directory, driven through openraft's
//! storage traits: apply, time in the log, refusals, snapshots and reopening.

use chrono::{DateTime, Duration, TimeZone, Utc};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use ratchet_store::model::Counts;
use ratchet_store::rocks::STATE_FAMILIES;
use ratchet_store::{
    Applied, AuditRecord, Command, ErrorKind, Observation, Page, PageStart, Request, Response, ServerSighting, StateMachine,
    StorageOptions, Store, TypeConfig,
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
    let snapshot = source.machine.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let target_dir = tempfile::tempdir().unwrap();
    let mut target = Machine::open(target_dir.path());
    target.one(day(0), Command::AddTenant { name: "stale".into() }).await.unwrap();
    target.machine.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    let (source_view, target_view) = (source.machine.view(), target.machine.view());
    assert_eq!(target_view.servers("bear").unwrap(), source_view.servers("bear").unwrap());
    assert_eq!(
        target_view.tenants(),
        source_view.tenants(),
        "the stale tenant is gone, the pause is there"
    );
    assert_eq!(target.machine.applied_state().await.unwrap().0, snapshot.meta.last_log_id);
    assert_eq!(target_view.connectors().borrow().len(), 1);
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
    let snapshot = source.machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let mut target = Machine::open(target_dir.path());
    target.machine.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
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
    let snapshot = machine.machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Machine::open(other_dir.path());
    other.machine.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
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
    use ratchet_store::EventKind;
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
