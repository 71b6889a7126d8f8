//! Backup and restore across real processes: `ctl snapshot save` under write load,
//! `ratchet restore` seeding a new three-node group that holds the same state, and every
//! bad input refused in one line with nothing changed.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::cluster::{add_tenant, report, Cluster, TEST_CONFIG};
use common::{stderr_of_failure, stdout_of};
use ratchet_proto::v1 as pb;

fn import(server: String) -> pb::ImportServerRequest {
    pb::ImportServerRequest {
        tenant: "bear".into(),
        server_fqdn: server,
        build: "15.0.1497.48".into(),
        first_seen: (Utc::now() - TimeDelta::days(40)).to_rfc3339(),
    }
}

/// Server and first-seen date of every server in `bear`'s report.
async fn servers(cluster: &Cluster) -> BTreeMap<String, String> {
    let report = report(&mut cluster.nodes[0].admin().await, "bear").await;
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["server_fqdn"].as_str().unwrap().to_owned(), s["first_detected_date"].to_string()))
        .collect()
}

fn one_line(error: &str) -> &str {
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    error.trim()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_load_restores_into_a_new_group_with_the_same_state() {
    let mut source = Cluster::new(3, TEST_CONFIG);
    source.found(&[0, 1, 2], Duration::ZERO);
    source.wait_for_leader(3).await;
    let mut admin = source.nodes[0].admin().await;
    add_tenant(&mut admin, "bear", "127.0.0.0/8").await;
    for i in 0..50 {
        admin.import_server(import(format!("exch{i}.bear.local"))).await.unwrap();
    }
    let endpoint = source.nodes[1].grpc.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // Saved while writes go on: the file is whole and checks.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (writing, mut admin) = (writing.clone(), source.nodes[2].admin().await);
        tokio::spawn(async move {
            let mut i = 0;
            while writing.load(Ordering::Relaxed) {
                i += 1;
                admin.import_server(import(format!("busy{i}.bear.local"))).await.unwrap();
            }
        })
    };
    let saved = stdout_of(["ctl", "--endpoints", &endpoint, "snapshot", "save", &file("under-load.snap")]);
    assert!(saved.contains("checksum verified"), "{saved}");
    writing.store(false, Ordering::Relaxed);
    writer.await.unwrap();

    // A quiet one to compare the new group with.
    source.wait_converged().await;
    let expected = servers(&source).await;
    stdout_of(["ctl", "--endpoints", &endpoint, "snapshot", "save", &file("quiet.snap")]);

    // Bad input: each refused in one line, nothing changed.
    let again = stderr_of_failure(["ctl", "--endpoints", &endpoint, "snapshot", "save", &file("quiet.snap")]);
    assert!(one_line(&again).contains("already exists"), "{again}");
    let unwritable = stderr_of_failure(["ctl", "--endpoints", &endpoint, "snapshot", "save", "/proc/ratchet/backup.snap"]);
    assert!(one_line(&unwritable).contains("cannot create"), "{unwritable}");
    let bytes = std::fs::read(file("quiet.snap")).unwrap();
    let mut corrupted = bytes.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x55;
    std::fs::write(file("corrupted.snap"), &corrupted).unwrap();
    std::fs::write(file("truncated.snap"), &bytes[..bytes.len() - 10]).unwrap();

    let mut target = Cluster::new(3, TEST_CONFIG);
    let restore = |target: &Cluster, snapshot: &str, node: usize| -> Vec<String> {
        let node = &target.nodes[node];
        [
            "restore",
            "--snapshot",
            snapshot,
            "--name",
            &node.name,
            "--data-dir",
            node.data_dir.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .chain(["--initial-cluster".into(), target.initial_cluster.clone()])
        .collect()
    };
    for (bad, fault) in [("corrupted.snap", "snapshot"), ("truncated.snap", "snapshot")] {
        let error = stderr_of_failure(restore(&target, &file(bad), 0));
        assert!(one_line(&error).contains(fault), "{bad}: {error}");
        assert!(!target.nodes[0].data_dir.exists(), "{bad}: a refused restore leaves nothing behind");
    }
    std::fs::create_dir_all(&target.nodes[0].data_dir).unwrap();
    std::fs::write(target.nodes[0].data_dir.join("something"), "x").unwrap();
    let occupied = stderr_of_failure(restore(&target, &file("quiet.snap"), 0));
    assert!(one_line(&occupied).contains("not empty"), "{occupied}");
    std::fs::remove_dir_all(&target.nodes[0].data_dir).unwrap();

    // The new group: seeded node by node, started, and holding the source's state.
    for i in 0..3 {
        let printed = stdout_of(restore(&target, &file("quiet.snap"), i));
        assert!(printed.contains("seeded from backup-"), "{printed}");
    }
    for node in &mut target.nodes {
        node.start(None, &[]);
    }
    target.wait_for_leader(3).await;
    target.assert_same_state().await;
    assert_eq!(servers(&target).await, expected, "the restored group reports what the source did");
    // It goes on from where the backup ended: new writes, and the old audit trail with them.
    let mut admin = target.nodes[1].admin().await;
    admin.add_tenant(pb::AddTenantRequest { name: "owl".into() }).await.unwrap();
    let audit = admin
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(audit.iter().any(|e| e.action == "tenant add bear"), "{audit:?}");
    assert!(audit.iter().any(|e| e.action == "tenant add owl"), "{audit:?}");
    target.assert_same_state().await;
}
