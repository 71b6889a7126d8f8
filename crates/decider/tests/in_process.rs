//! A three-node decider group in one process: each `Decider` started as `ratchet decider`
//! starts it, on its own RocksDB directory and loopback gRPC listener, the Raft traffic
//! over real tonic between them. These tests reach the group only through its gRPC APIs,
//! as edges and `ratchet ctl` do, and run in seconds; the process-level tests
//! (tests/decider_cluster.rs and the fault suite) keep what needs separate processes:
//! signals, crashes, cut links.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ratchet_decider::Clock;
use ratchet_decider::{Decider, DeciderConfig, DeciderOptions};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::cluster_client::ClusterClient;
use ratchet_proto::v1::decision_client::DecisionClient;
use ratchet_store::StateView;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

const OUT_OF_DATE: &str = "15.0.1497.48";
const COMPLIANT: &str = "15.2.2562.17";
const TENANT: &str = "bear";
/// Bear's connector: its servers' mail comes from here.
const BEAR_IP: &str = "10.1.2.3";

/// One member: its data directory, where it listens, what reads its state, and how to stop it.
struct Member {
    name: String,
    data: tempfile::TempDir,
    grpc: SocketAddr,
    /// Set while it runs: it holds the RocksDB open.
    view: Option<StateView>,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

struct Group {
    members: Vec<Member>,
}

fn config() -> DeciderConfig {
    DeciderConfig {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..DeciderConfig::default()
    }
}

/// A member on `data` listening on `grpc` (bound already), founding a group of
/// `initial_cluster` or, with it empty, rejoining its own.
fn options(name: &str, data: &std::path::Path, grpc: TcpListener, initial_cluster: Vec<(String, String)>) -> DeciderOptions {
    DeciderOptions {
        name: name.to_owned(),
        data_dir: data.to_owned(),
        advertise: grpc.local_addr().unwrap().to_string(),
        grpc,
        http: None,
        initial_cluster,
        config: config(),
        clock: Clock::shifted(chrono::Duration::zero()),
        tls: None,
    }
}

impl Member {
    fn run(&mut self, decider: Decider) {
        let (stop, stopped) = oneshot::channel();
        self.view = Some(decider.view.clone());
        self.stop = Some(stop);
        self.running = Some(tokio::spawn(decider.run_until(async {
            let _ = stopped.await;
        })));
    }
}

impl Group {
    /// Three members found a group and one of them leads it.
    async fn found() -> Group {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let initial: Vec<(String, String)> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("d{i}"), l.local_addr().unwrap().to_string()))
            .collect();
        let mut starting = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let name = format!("d{i}");
            let data = tempfile::tempdir().unwrap();
            let path = data.path().to_owned();
            let initial = initial.clone();
            // Founders wait for each other: start them together.
            let grpc = listener.local_addr().unwrap();
            let started = tokio::spawn(async move { Decider::start(options(&name, &path, listener, initial)).await });
            starting.push((format!("d{i}"), data, grpc, started));
        }
        let mut members = Vec::new();
        for (name, data, grpc, started) in starting {
            let decider = started.await.unwrap().unwrap_or_else(|e| panic!("{name} starts: {e:#}"));
            let mut member = Member {
                name,
                data,
                grpc,
                view: None,
                stop: None,
                running: None,
            };
            member.run(decider);
            members.push(member);
        }
        let group = Group { members };
        group.wait_for_leader().await;
        group
    }

    async fn channel(&self, i: usize) -> Channel {
        let url = format!("http://{}", self.members[i].grpc);
        Channel::from_shared(url).unwrap().connect().await.unwrap()
    }

    async fn admin(&self, i: usize) -> AdminClient<Channel> {
        AdminClient::new(self.channel(i).await)
    }

    async fn decision(&self, i: usize) -> DecisionClient<Channel> {
        DecisionClient::new(self.channel(i).await)
    }

    /// The leader's index, once the running members agree on one.
    async fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // (member, its node id, the leader it names)
            let mut seen = Vec::new();
            for (i, _) in self.members.iter().enumerate().filter(|(_, m)| m.running.is_some()) {
                let mut cluster = ClusterClient::new(self.channel(i).await);
                if let Ok(status) = cluster.status(pb::StatusRequest::default()).await {
                    let status = status.into_inner();
                    seen.push((i, status.node_id, status.leader_id));
                }
            }
            let agreed = seen
                .first()
                .map(|(_, _, leader)| *leader)
                .filter(|leader| *leader != 0 && seen.iter().all(|(_, _, l)| l == leader));
            let leader = agreed.and_then(|leader| seen.iter().find(|(_, id, _)| *id == leader));
            if let Some((i, _, _)) = leader {
                return *i;
            }
            assert!(Instant::now() < deadline, "no leader agreed on: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops member `i` as SIGTERM stops `ratchet decider`, and waits for it.
    async fn stop(&mut self, i: usize) {
        let member = &mut self.members[i];
        let _ = member.stop.take().unwrap().send(());
        member.running.take().unwrap().await.unwrap().unwrap();
        member.view = None;
    }

    /// Starts member `i` again on its data directory and address, once its stopped self
    /// has let go of both (its last connections close just after it stops).
    async fn restart(&mut self, i: usize) {
        let member = &mut self.members[i];
        let deadline = Instant::now() + Duration::from_secs(10);
        let decider = loop {
            let started = match TcpListener::bind(member.grpc).await {
                Ok(listener) => Decider::start(options(&member.name, member.data.path(), listener, Vec::new())).await,
                Err(e) => Err(e.into()),
            };
            match started {
                Ok(decider) => break decider,
                Err(e) => assert!(Instant::now() < deadline, "{} does not start again: {e:#}", member.name),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        member.run(decider);
    }

    /// Waits until every running member holds the same state at the same log index; that
    /// state's digest.
    async fn converged(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let digests: Vec<(u64, String)> = self
                .members
                .iter()
                .filter_map(|m| m.view.as_ref())
                .map(|view| view.digest().unwrap())
                .collect();
            if digests.windows(2).all(|pair| pair[0] == pair[1]) {
                return digests[0].1.clone();
            }
            assert!(Instant::now() < deadline, "the members never converged: {digests:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tenant bear with its connector, added through member `via`.
    async fn add_bear(&self, via: usize) {
        let mut admin = self.admin(via).await;
        admin.add_tenant(pb::AddTenantRequest { name: TENANT.into() }).await.unwrap();
        admin
            .add_connector(pb::AddConnectorRequest {
                tenant: TENANT.into(),
                cidr: format!("{BEAR_IP}/32"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn decide_request(server: &str, build: &str) -> pb::DecideRequest {
    pb::DecideRequest {
        connection: Some(pb::ConnectionFacts {
            client_ip: BEAR_IP.into(),
            tls_client_cert_name: String::new(),
        }),
        server_fqdn: server.into(),
        build: build.into(),
        linearizable: false,
    }
}

/// The first-seen instants bear's report gives, by server, as member `i` serves it.
async fn first_seen(group: &Group, i: usize) -> Vec<(String, Option<String>)> {
    let mut admin = group.admin(i).await;
    let reply = admin
        .report(pb::ReportRequest {
            tenant: TENANT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let report: serde_json::Value = serde_json::from_str(&reply.report_json).unwrap();
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["server_fqdn"].as_str().unwrap().to_owned(),
                s["first_detected_date"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_any_member_reach_all_and_first_sightings_agree() {
    let group = Group::found().await;
    let leader = group.wait_for_leader().await;
    // Through a follower: forwarded to the leader.
    group.add_bear((leader + 1) % 3).await;
    // Each member attributes by the connectors it has applied.
    group.converged().await;

    // Every member is asked about the same new servers at once: each server ends with one
    // first-seen instant, the same on every member.
    let mut asking = Vec::new();
    for i in 0..3 {
        let mut decision = group.decision(i).await;
        asking.push(tokio::spawn(async move {
            for n in 0..20 {
                let reply = decision.decide(decide_request(&format!("exch{n}.bear.example"), OUT_OF_DATE)).await;
                let reply = reply.unwrap_or_else(|e| panic!("member {i}, server {n}: {e}")).into_inner();
                assert_eq!(reply.tenant, TENANT);
                assert_eq!(reply.verdict, pb::Verdict::Accept as i32, "a new server's mail is accepted");
            }
        }));
    }
    for asked in asking {
        asked.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while first_seen(&group, 0).await.len() < 20 {
        assert!(Instant::now() < deadline, "the first sightings were never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    group.converged().await;
    let reports = [
        first_seen(&group, 0).await,
        first_seen(&group, 1).await,
        first_seen(&group, 2).await,
    ];
    assert_eq!(reports[0].len(), 20);
    assert!(reports[0].iter().all(|(_, seen)| seen.is_some()), "{:?}", reports[0]);
    assert_eq!(reports[0], reports[1]);
    assert_eq!(reports[1], reports[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pauses_from_every_member_never_pass_the_budget() {
    let group = Group::found().await;
    group.add_bear(0).await;
    let mut asking = Vec::new();
    for n in 0..30 {
        let mut admin = group.admin(n % 3).await;
        asking.push(tokio::spawn(async move {
            let request = pb::PauseRequest {
                tenant: TENANT.into(),
                days: 7,
                request_id: format!("pause-{n}"),
                servers: Vec::new(),
            };
            match admin.pause(request).await {
                Ok(_) => 7,
                Err(status) => {
                    assert!(status.message().contains("pause days remain"), "{status}");
                    0
                }
            }
        }));
    }
    let mut granted = 0;
    for asked in asking {
        granted += asked.await.unwrap();
    }
    assert_eq!(granted, 84, "twelve 7-day pauses fit in 90 days, no more");
    group.converged().await;
    for i in 0..3 {
        let mut admin = group.admin(i).await;
        let pauses = admin
            .list_pauses(pb::ListPausesRequest { tenant: TENANT.into() })
            .await
            .unwrap()
            .into_inner();
        let charged: u32 = pauses.pauses.iter().map(|p| p.days_charged).sum();
        assert_eq!(charged, granted, "member {i}: charged is what was acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_group_outlives_its_leader_and_the_leader_catches_up_on_return() {
    let mut group = Group::found().await;
    group.add_bear(0).await;
    group.converged().await;
    let old_leader = group.wait_for_leader().await;
    group.stop(old_leader).await;
    let new_leader = group.wait_for_leader().await;
    assert_ne!(new_leader, old_leader);

    // The two left decide and take writes: a compliant server, and an import.
    let asked = (new_leader + 1) % 3;
    let asked = if asked == old_leader { (asked + 1) % 3 } else { asked };
    let reply = group
        .decision(asked)
        .await
        .decide(decide_request("new.bear.example", COMPLIANT))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().verdict, pb::Verdict::Accept as i32);
    group
        .admin(asked)
        .await
        .import_server(pb::ImportServerRequest {
            tenant: TENANT.into(),
            server_fqdn: "old.bear.example".into(),
            build: OUT_OF_DATE.into(),
            first_seen: (chrono::Utc::now() - chrono::TimeDelta::days(120)).to_rfc3339(),
        })
        .await
        .unwrap();

    // Back on its data directory, the old leader catches up: the same state everywhere,
    // and it blocks the server past day 90 as the others do.
    group.restart(old_leader).await;
    group.converged().await;
    let reply = group
        .decision(old_leader)
        .await
        .decide(decide_request("old.bear.example", OUT_OF_DATE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.verdict, pb::Verdict::Block as i32, "{reply:?}");
    assert!(reply.reply.starts_with("550 5.7.230 "), "{}", reply.reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_naming_the_field_and_change_nothing() {
    let group = Group::found().await;
    group.add_bear(0).await;
    let mut decision = group.decision(1).await;
    let mut request = decide_request("a.bear.example", OUT_OF_DATE);
    request.connection.as_mut().unwrap().client_ip = "not-an-ip".into();
    let refused = decision.decide(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("connection.client_ip: "), "{refused}");
    let refused = group
        .admin(2)
        .await
        .pause(pb::PauseRequest {
            tenant: "nobody".into(),
            days: 3,
            request_id: String::new(),
            servers: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused}");
    assert!(refused.message().contains("nobody"), "{refused}");
    // Refusals are audited, and change nothing else: no tenant, pause or server.
    group.converged().await;
    let tenants = group
        .admin(0)
        .await
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = tenants.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [TENANT]);
    assert_eq!(tenants.tenants[0].servers, 0);
    assert_eq!(tenants.tenants[0].paused_until_unix_ms, 0);
    assert!(first_seen(&group, 2).await.is_empty());
}

/// The connectors an edge would hold after each message of a watch, and the messages.
struct Watcher {
    stream: tonic::Streaming<pb::ConnectorSnapshot>,
    table: std::collections::BTreeSet<(String, String)>,
    messages: Vec<pb::ConnectorSnapshot>,
}

impl Watcher {
    async fn open(group: &Group, i: usize, deltas: bool) -> Watcher {
        let mut decision = group.decision(i).await;
        let stream = decision
            .watch_connectors(pb::WatchConnectorsRequest { deltas })
            .await
            .unwrap()
            .into_inner();
        Watcher {
            stream,
            table: Default::default(),
            messages: Vec::new(),
        }
    }

    /// Reads messages until the table holds exactly `expected` (tenant, cidr) pairs.
    async fn until(&mut self, expected: &[(&str, &str)]) {
        let expected: std::collections::BTreeSet<(String, String)> = expected.iter().map(|(t, c)| (t.to_string(), c.to_string())).collect();
        let pair = |c: &pb::Connector| (c.tenant.clone(), c.cidr.clone());
        while self.table != expected {
            let message = tokio::time::timeout(Duration::from_secs(10), self.stream.message())
                .await
                .unwrap_or_else(|_| panic!("the table never became {expected:?}: {:?}", self.table))
                .unwrap()
                .unwrap();
            if !message.delta {
                self.table.clear();
            }
            for gone in &message.removed {
                self.table.remove(&pair(gone));
            }
            self.table.extend(message.connectors.iter().map(pair));
            self.messages.push(message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connector_watch_sends_the_whole_table_then_only_what_changed() {
    let group = Group::found().await;
    let leader = group.wait_for_leader().await;
    group.add_bear(leader).await;
    group.converged().await;
    let follower = (leader + 1) % 3;
    let mut deltas = Watcher::open(&group, follower, true).await;
    let mut whole = Watcher::open(&group, follower, false).await;
    let bear = (TENANT, "10.1.2.3/32");
    deltas.until(&[bear]).await;
    whole.until(&[bear]).await;

    let mut admin = group.admin(leader).await;
    admin.add_tenant(pb::AddTenantRequest { name: "owl".into() }).await.unwrap();
    let owl_connector = pb::AddConnectorRequest {
        tenant: "owl".into(),
        cidr: "192.0.2.0/24".into(),
        ..Default::default()
    };
    admin.add_connector(owl_connector.clone()).await.unwrap();
    let owl = ("owl", "192.0.2.0/24");
    deltas.until(&[bear, owl]).await;
    whole.until(&[bear, owl]).await;
    admin
        .remove_connector(pb::RemoveConnectorRequest {
            tenant: TENANT.into(),
            cidr: "10.1.2.3/32".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    deltas.until(&[owl]).await;
    whole.until(&[owl]).await;

    assert!(!deltas.messages[0].delta, "the first message is the whole table");
    for later in &deltas.messages[1..] {
        assert!(later.delta, "{later:?}");
        assert!(later.connectors.len() + later.removed.len() <= 1, "only what changed: {later:?}");
    }
    let added: Vec<&str> = deltas
        .messages
        .iter()
        .skip(1)
        .flat_map(|m| &m.connectors)
        .map(|c| c.tenant.as_str())
        .collect();
    let removed: Vec<&str> = deltas.messages.iter().flat_map(|m| &m.removed).map(|c| c.tenant.as_str()).collect();
    assert_eq!((added, removed), (vec!["owl"], vec![TENANT]));
    assert!(
        whole.messages.iter().all(|m| !m.delta),
        "a watcher that did not ask gets whole tables"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_on_a_decide_stream_are_answered_by_id_and_a_bad_one_fails_alone() {
    let group = Group::found().await;
    group.add_bear(0).await;
    group.converged().await;
    let mut decision = group.decision(1).await;
    let servers: Vec<String> = (0..20).map(|i| format!("s{i}.bear.example")).collect();
    // The servers are sighted first, so that the stream asks about known servers, and its
    // answers must agree with unary Decide's.
    for server in &servers {
        decision.decide(decide_request(server, OUT_OF_DATE)).await.unwrap();
    }
    let mut unary = Vec::new();
    for server in &servers {
        let deadline = Instant::now() + Duration::from_secs(10);
        let known = loop {
            let answer = decision.decide(decide_request(server, OUT_OF_DATE)).await.unwrap().into_inner();
            if answer.first_seen_unix_ms > 0 {
                break answer;
            }
            assert!(Instant::now() < deadline, "{server}'s first sighting never committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        unary.push(known);
    }

    let mut calls: Vec<pb::DecideCall> = servers
        .iter()
        .enumerate()
        .map(|(i, server)| pb::DecideCall {
            id: 100 + i as u64,
            request: Some(decide_request(server, OUT_OF_DATE)),
            traceparent: String::new(),
        })
        .collect();
    calls[7].request.as_mut().unwrap().connection.as_mut().unwrap().client_ip = "not-an-ip".into();
    calls[8].request = None;
    let (send, outgoing) = tokio::sync::mpsc::unbounded_channel();
    let mut results = decision
        .decide_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    for call in calls {
        send.send(call).unwrap();
    }
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < servers.len() {
        let result = tokio::time::timeout(Duration::from_secs(10), results.message())
            .await
            .expect("every call is answered")
            .unwrap()
            .unwrap();
        assert!(answered.insert(result.id, result.outcome.unwrap()).is_none(), "one answer per call");
    }
    use pb::decide_result::Outcome;
    for (i, (id, outcome)) in answered.into_iter().enumerate() {
        assert_eq!(id, 100 + i as u64);
        match (i, outcome) {
            (7, Outcome::Failure(failure)) => {
                assert_eq!(failure.code, tonic::Code::InvalidArgument as i32);
                assert!(failure.message.starts_with("connection.client_ip: "), "{failure:?}");
            }
            (8, Outcome::Failure(failure)) => {
                assert_eq!(failure.code, tonic::Code::InvalidArgument as i32);
                assert!(failure.message.contains("108 has no request"), "{failure:?}");
            }
            (_, Outcome::Response(response)) => {
                let expected = &unary[i];
                assert_eq!(
                    (&response.tenant, response.verdict, response.stage, response.first_seen_unix_ms),
                    (&expected.tenant, expected.verdict, expected.stage, expected.first_seen_unix_ms),
                    "call {id}"
                );
            }
            (i, outcome) => panic!("call {i}: unexpected {outcome:?}"),
        }
    }
    // The stream stays open after the failures: one more call is answered.
    send.send(pb::DecideCall {
        id: 1,
        request: Some(decide_request(&servers[0], OUT_OF_DATE)),
        traceparent: String::new(),
    })
    .unwrap();
    let last = results.message().await.unwrap().unwrap();
    assert!(matches!(last.outcome, Some(Outcome::Response(_))), "{last:?}");
    drop(send);
    assert!(
        results.message().await.unwrap().is_none(),
        "the stream ends when the caller ends it"
    );
}
