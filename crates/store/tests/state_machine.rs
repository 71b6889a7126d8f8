//! The state machine on a real RocksDB in a temporary directory, driven through openraft's
//! storage traits: apply, time in the log, refusals, snapshots and reopening.

use chrono::{DateTime, Duration, TimeZone, Utc};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use ratchet_store::{Applied, Command, ErrorKind, Request, Response, StateMachine, Store, TypeConfig};

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
        }),
    }
}

struct Machine {
    machine: StateMachine,
    next_index: u64,
}

impl Machine {
    fn open(dir: &std::path::Path) -> Machine {
        let machine = StateMachine::open(Store::open(dir).unwrap()).unwrap();
        Machine { machine, next_index: 1 }
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

fn sight(server: &str, build: &str) -> Command {
    Command::Sight {
        tenant: "bear".into(),
        server_fqdn: server.into(),
        build: build.into(),
    }
}

fn first_seen(response: &Response) -> DateTime<Utc> {
    match response {
        Ok(Applied::Server { entry }) => entry.record.episode.as_ref().unwrap().first_seen,
        other => panic!("not a server: {other:?}"),
    }
}

#[tokio::test]
async fn sightings_in_one_batch_see_each_other_and_time_never_runs_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    m.one(day(0), Command::AddTenant { name: "bear".into() }).await.unwrap();
    let replies = m
        .apply(vec![
            (day(5), sight("exch1", OUT_OF_DATE)),
            (day(3), sight("exch1", OUT_OF_DATE)),
            (day(2), sight("exch2", OUT_OF_DATE)),
        ])
        .await;
    assert_eq!(first_seen(&replies[0]), day(5));
    assert_eq!(
        first_seen(&replies[1]),
        day(5),
        "the second sighting finds the first one of the same batch"
    );
    assert_eq!(
        first_seen(&replies[2]),
        day(5),
        "a stamp earlier than the previous entry's is raised to it"
    );
}

#[tokio::test]
async fn refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Machine::open(dir.path());
    let unknown = m.one(day(0), sight("exch1", OUT_OF_DATE)).await.unwrap_err();
    assert_eq!((unknown.kind, unknown.field.as_str()), (ErrorKind::NotFound, "tenant"));
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
    m.one(day(0), sight("exch1", OUT_OF_DATE)).await.unwrap();
    m.one(day(40), sight("exch1", COMPLIANT)).await.unwrap();
    let relapse = m.one(day(50), sight("exch1", OUT_OF_DATE)).await;
    assert_eq!(first_seen(&relapse), day(0), "inside the relapse window the old episode resumes");
    m.one(day(60), sight("exch1", COMPLIANT)).await.unwrap();
    let fresh = m.one(day(100), sight("exch1", OUT_OF_DATE)).await;
    assert_eq!(first_seen(&fresh), day(100), "after the window a new episode starts");
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
                cidr: "10.0.0.0/8".parse().unwrap(),
                cert_name: None,
            },
        )
        .await
        .unwrap();
    for i in 0..50 {
        source.one(day(i), sight(&format!("exch{i}"), OUT_OF_DATE)).await.unwrap();
    }
    source
        .one(
            day(60),
            Command::Pause {
                tenant: "bear".into(),
                days: 10,
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
