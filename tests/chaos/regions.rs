//! Five deciders in three regions (2/2/1) and a learner in a fourth, 60 ms ± 10 ms apart
//! one way, with an edge and its next hop (`smtp-sink`) in the far region of one decider.
//! New servers' first messages there get their verdict within the edge's deadline, and
//! losing any one region, the edge's own among them, keeps mail enforced once the rest
//! have elected (how long that took is printed): 250 for a compliant build, 550 5.7.230
//! for a server past its deadline.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::smtp::deliver;
use crate::delay::Latency;
use crate::mail::{Mail, BLOCKED, COMPLIANT};
use crate::{membership, Group, OUT_OF_DATE};
use ratchet_proto::v1 as pb;

const LATENCY: Latency = Latency {
    one_way: Duration::from_millis(60),
    jitter: Duration::from_millis(10),
};

/// Timeouts for deciders 100-150 ms apart (see `heartbeat_ms` in the decider's config):
/// the heartbeat is also the leader's wait for each replication answer. Max staleness
/// spans an election, so that the regions left keep answering while they elect.
const FAR_CONFIG: &str = "heartbeat_ms = 300\nelection_timeout_min_ms = 1200\nelection_timeout_max_ms = 2400\nmax_staleness_ms = 4000\n";

/// The region of each host: deciders 1-5, the learner 6, the edge 7 and the sink 8 (the
/// last two beside decider 5, far from the others).
const REGION: [u8; 8] = [1, 1, 2, 2, 3, 4, 3, 3];
const EDGE: u8 = 7;
const SINK: u8 = 8;

fn region(host: u8) -> u8 {
    REGION[host as usize - 1]
}

/// The last lines each decider logged (for a failure's message).
fn tails(group: &Group) -> String {
    let tail = |log: String| {
        log.lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    group
        .nodes
        .iter()
        .map(|n| format!("--- {}\n{}", n.name, tail(n.log())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Mail from `server` at `build` through the edge; the reply to the end of DATA.
fn send(edge: SocketAddr, server: &str, build: &str) -> String {
    deliver(edge, server, build, "regions")
}

#[tokio::test(flavor = "multi_thread")]
async fn five_deciders_in_three_regions_enforce_through_the_loss_of_any_region() {
    let mut group = Group::lay_out(6, FAR_CONFIG);
    // The edge and sink first, so that their hosts exist for the delays.
    let deciders: Vec<String> = [4usize, 0, 1, 2, 3].iter().map(|i| group.nodes[*i].grpc.to_string()).collect();
    let mail = Mail::start(&mut group.net, EDGE, SINK, &deciders);
    let edge = mail.edge;
    for from in 1..=8u8 {
        for to in (1..=6u8).filter(|to| region(*to) != region(from)) {
            group.net.delay(from, to, LATENCY);
        }
    }
    group.start_founders(5).await;
    group.nodes[5].start(None, &[]);
    let (name, address) = (group.nodes[5].name.clone(), group.nodes[5].grpc.to_string());
    membership(
        &group,
        0,
        |mut cluster, name| {
            let address = address.clone();
            async move { cluster.add_learner(pb::AddLearnerRequest { name, address }).await.map(|_| ()) }
        },
        &name,
    )
    .await;
    let long_ago = (chrono::Utc::now() - chrono::TimeDelta::days(120)).to_rfc3339();
    group.nodes[0]
        .admin()
        .await
        .import_server(pb::ImportServerRequest {
            tenant: "bear".into(),
            server_fqdn: BLOCKED.into(),
            build: OUT_OF_DATE.into(),
            first_seen: long_ago,
        })
        .await
        .unwrap();

    // First messages of servers never seen: each gets its verdict (250), not 451.
    for n in 0..5 {
        let reply = send(edge, &format!("new{n}.bear.local"), OUT_OF_DATE);
        assert!(reply.starts_with("250"), "a new server's first message in the far region: {reply}");
    }

    let hosts: Vec<u8> = (1..=6).collect();
    for lost in 1..=3u8 {
        let (inside, outside): (Vec<u8>, Vec<u8>) = hosts.iter().partition(|h| region(**h) == lost);
        eprintln!("region {lost} ({inside:?}) cut from the others");
        for host in &inside {
            group.net.isolate(*host, &outside);
        }
        // The regions left elect a leader if theirs was cut off (each of their nodes fresh
        // again), and past max staleness the cut nodes answer nothing: from then on the
        // edge, failing over, must enforce every message. Until then mail may get 451 (a
        // sender retries it); how long that lasted is printed.
        let cut = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(4500)).await;
        group.leader_among(&outside).await;
        for node in group.nodes.iter().filter(|n| outside.contains(&n.host)) {
            crate::wait_for_verdicts(node).await;
        }
        eprintln!("region {lost} lost: every other node deciding {:?} after the cut", cut.elapsed());
        for n in 0..3 {
            let reply = send(edge, &format!("exch{n}.bear.local"), COMPLIANT);
            assert!(
                reply.starts_with("250"),
                "region {lost} lost: a compliant server gets {reply}\n{}",
                tails(&group)
            );
            let reply = send(edge, BLOCKED, OUT_OF_DATE);
            assert!(
                reply.starts_with("550 5.7.230"),
                "region {lost} lost: a blocked server gets {reply}\n{}",
                tails(&group)
            );
        }
        for host in &inside {
            group.net.heal(*host);
        }
        // One region at a time: the next is lost only once this one is back in step (two
        // regions down at once would leave one voter of five).
        group.leader().await;
        group.same_state().await;
        for node in &group.nodes {
            crate::wait_for_verdicts(node).await;
        }
    }
    group.leader().await;
    group.same_state().await;
    let delivered = mail.delivered();
    let counted = |server: &str| delivered.iter().filter(|m| m.contains(&format!("from {server} "))).count();
    assert_eq!(counted(BLOCKED), 0, "a blocked server's message reached the sink");
    assert_eq!((0..5).map(|n| counted(&format!("new{n}.bear.local"))).sum::<usize>(), 5);
    assert_eq!(
        (0..3).map(|n| counted(&format!("exch{n}.bear.local"))).sum::<usize>(),
        9,
        "every 250 message is in the sink"
    );
}
