//! Transport security, end to end: `ratchet certs`, a three-node decider group on mutual
//! TLS, every role calling one method of every service, and the ways a process refuses to
//! start on certificates it cannot use (shared/spec/cli.md, "Transport security and roles").

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{decide_request, free_port, Cluster, DeciderProcess, TEST_CONFIG};
use common::smtp::{final_reply, swaks, EdgeProcess, SmtpSink};
use common::{run, stderr_of_failure, stdout_of};
use ratchet_proto::v1 as pb;
use ratchet_proto::v1::admin_client::AdminClient;
use ratchet_proto::v1::cluster_client::ClusterClient;
use ratchet_proto::v1::decision_client::DecisionClient;
use ratchet_proto::v1::raft_client::RaftClient;
use ratchet_tls::certs::{self, Request};
use ratchet_tls::{Dialer, Role, TlsFiles};
use tonic::Code;

/// A CA in `dir`, and a certificate per role named after it (`peer-0`.. for deciders).
fn issue(dir: &Path, role: &str, name: &str) -> TlsFiles {
    stdout_of(["certs", "issue", "--dir", dir.to_str().unwrap(), "--role", role, "--name", name]);
    files(dir, name)
}

fn files(dir: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: dir.join("ca.pem"),
    }
}

fn tls_args(files: &TlsFiles) -> Vec<String> {
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    vec![
        "--cert".into(),
        path(&files.cert),
        "--key".into(),
        path(&files.key),
        "--ca".into(),
        path(&files.ca),
    ]
}

/// A three-node group where every node has its own peer certificate; the test dials as admin.
async fn tls_cluster(ca: &Path) -> Cluster {
    let mut cluster = Cluster::new(3, TEST_CONFIG);
    let admin = Dialer::new(Some(&issue(ca, "admin", "test-admin")), None).unwrap();
    for (i, node) in cluster.nodes.iter_mut().enumerate() {
        // The IP SAN is for curl, which checks names; deciders check each other's role.
        let name = format!("d{i}");
        stdout_of([
            "certs",
            "issue",
            "--dir",
            ca.to_str().unwrap(),
            "--role",
            "peer",
            "--name",
            &name,
            "--ip",
            "127.0.0.1",
        ]);
        node.args = tls_args(&files(ca, &name));
        node.dialer = admin.clone();
    }
    cluster.found(&[0, 1, 2], Duration::ZERO);
    cluster.wait_for_leader(3).await;
    cluster
}

#[test]
fn certs_carry_the_role_in_a_spiffe_uri_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    stdout_of(["certs", "init", "--dir", dir_arg, "--trust-domain", "mail.example"]);
    let printed = stdout_of([
        "certs",
        "issue",
        "--dir",
        dir_arg,
        "--role",
        "operator",
        "--name",
        "alice",
        "--dns",
        "alice.mail.example",
    ]);
    assert!(printed.contains("spiffe://mail.example/operator/alice"), "{printed}");

    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.path().join("alice.pem"))
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("URI:spiffe://mail.example/operator/alice"), "{text}");
    assert!(text.contains("DNS:alice.mail.example"), "{text}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("alice-key.pem")).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");

    let before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let again = stderr_of_failure(["certs", "init", "--dir", dir_arg]);
    assert!(again.contains("already exists"), "{again}");
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), before);
    let bad_role = stderr_of_failure(["certs", "issue", "--dir", dir_arg, "--role", "king", "--name", "bob"]);
    assert!(bad_role.contains("king"), "{bad_role}");
    assert!(!dir.path().join("bob.pem").exists());
}

/// What one call came to, for the matrix.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The handler ran (its own answer, success or a refusal of the input).
    Served,
    /// Refused before any handler ran.
    Refused(Code),
    /// No TLS connection at all.
    NoConnection,
}

fn outcome<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
    match result {
        Ok(_) => Outcome::Served,
        Err(status) => match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Outcome::Refused(status.code()),
            // What a connection the server would not complete looks like to the client.
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => Outcome::NoConnection,
            // The handler's own refusal of the input (a bad policy, no such node).
            _ => Outcome::Served,
        },
    }
}

/// One method of every service, as `caller` sees it; `tag` makes its write unique.
async fn call_everything(node: &DeciderProcess, dialer: &Dialer, tag: &str) -> Vec<(&'static str, Role, Outcome)> {
    let Ok(channel) = dialer.connect(dialer.endpoint(&node.grpc.to_string()).unwrap()).await else {
        return METHODS.iter().map(|(name, role)| (*name, *role, Outcome::NoConnection)).collect();
    };
    let (mut raft, mut admin) = (RaftClient::new(channel.clone()), AdminClient::new(channel.clone()));
    let (mut cluster, mut decision) = (ClusterClient::new(channel.clone()), DecisionClient::new(channel));
    let outcomes = vec![
        outcome(raft.identify(pb::IdentifyRequest {}).await),
        outcome(
            admin
                .set_policy(pb::SetPolicyRequest {
                    policy_toml: "not = [valid".into(),
                    ..Default::default()
                })
                .await,
        ),
        outcome(
            cluster
                .remove(pb::RemoveRequest {
                    name: "no-such-node".into(),
                })
                .await,
        ),
        outcome(admin.add_tenant(pb::AddTenantRequest { name: format!("t-{tag}") }).await),
        outcome(admin.list_tenants(pb::ListTenantsRequest {}).await),
        outcome(cluster.status(pb::StatusRequest::default()).await),
        outcome(
            decision
                .decide(decide_request("127.0.0.1", "ex1.corp.example", "15.0.1497.2"))
                .await,
        ),
    ];
    METHODS
        .iter()
        .zip(outcomes)
        .map(|((name, role), outcome)| (*name, *role, outcome))
        .collect()
}

/// The methods `call_everything` calls, with the role the contract says each needs.
const METHODS: [(&str, Role); 7] = [
    ("Raft.Identify", Role::Peer),
    ("Admin.SetPolicy", Role::Admin),
    ("Cluster.Remove", Role::Admin),
    ("Admin.AddTenant", Role::Operator),
    ("Admin.ListTenants", Role::Viewer),
    ("Cluster.Status", Role::Viewer),
    ("Decision.Decide", Role::Edge),
];

async fn tenants(node: &DeciderProcess) -> Vec<String> {
    let mut admin = node.admin().await;
    let reply = admin.list_tenants(pb::ListTenantsRequest {}).await.unwrap().into_inner();
    reply.tenants.into_iter().map(|t| t.name).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_may_call_exactly_what_the_role_table_says() {
    let ca = tempfile::tempdir().unwrap();
    stdout_of(["certs", "init", "--dir", ca.path().to_str().unwrap()]);
    let cluster = tls_cluster(ca.path()).await;
    let node = &cluster.nodes[1];
    let before = tenants(node).await;

    let other_ca = tempfile::tempdir().unwrap();
    stdout_of(["certs", "init", "--dir", other_ca.path().to_str().unwrap()]);
    let mut callers: Vec<(String, Option<Role>, Dialer)> = Vec::new();
    for role in Role::ALL {
        let files = issue(ca.path(), role.as_str(), &format!("caller-{role}"));
        callers.push((role.to_string(), Some(role), Dialer::new(Some(&files), None).unwrap()));
    }
    callers.push(("plaintext".into(), None, Dialer::Plain));
    let foreign = issue(other_ca.path(), "admin", "foreign-admin");
    // The foreign certificate trusts our CA (so it would accept our deciders): only our
    // side's check of the caller can refuse it.
    let foreign = TlsFiles {
        ca: ca.path().join("ca.pem"),
        ..foreign
    };
    callers.push(("another CA".into(), None, Dialer::presenting(&foreign).unwrap()));
    let request = Request {
        role: Role::Admin,
        name: "expired-admin".into(),
        dns: vec![],
        ips: vec![],
        days: 30,
    };
    certs::issue_at(ca.path(), &request, time::OffsetDateTime::now_utc() - time::Duration::days(400)).unwrap();
    callers.push((
        "expired".into(),
        None,
        Dialer::presenting(&files(ca.path(), "expired-admin")).unwrap(),
    ));

    let mut allowed_writes = 0;
    let mut failures = Vec::new();
    for (caller, role, dialer) in &callers {
        for (method, needed, got) in call_everything(node, dialer, caller).await {
            let expected = match role {
                Some(role) if role.includes(needed) => Outcome::Served,
                Some(_) => Outcome::Refused(Code::PermissionDenied),
                None => Outcome::NoConnection,
            };
            if got == Outcome::Served && method == "Admin.AddTenant" {
                allowed_writes += 1;
            }
            if got != expected {
                failures.push(format!("{caller} calling {method}: expected {expected:?}, got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Exactly the writes of peer, admin and operator went through; refused calls changed nothing.
    assert_eq!(allowed_writes, 3);
    let after = tenants(node).await;
    let mut expected = before.clone();
    expected.extend(["t-peer", "t-admin", "t-operator"].map(String::from));
    expected.sort();
    let mut after_sorted = after.clone();
    after_sorted.sort();
    assert_eq!(after_sorted, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_and_edges_present_their_certificates() {
    let ca = tempfile::tempdir().unwrap();
    stdout_of(["certs", "init", "--dir", ca.path().to_str().unwrap()]);
    let cluster = tls_cluster(ca.path()).await;
    let endpoints = cluster.nodes.iter().map(|n| n.grpc.to_string()).collect::<Vec<_>>().join(",");

    let operator = issue(ca.path(), "operator", "op");
    let viewer = issue(ca.path(), "viewer", "view");
    let ctl = |files: &TlsFiles, args: &[&str]| {
        let mut all = vec!["ctl".to_owned(), "--endpoints".into(), endpoints.clone()];
        all.extend(tls_args(files));
        all.extend(args.iter().map(|a| a.to_string()));
        run(all)
    };
    let added = ctl(&operator, &["tenant", "add", "acme"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let connector = ctl(&operator, &["connector", "add", "--tenant", "acme", "--cidr", "127.0.0.0/8"]);
    assert!(connector.status.success(), "{}", String::from_utf8_lossy(&connector.stderr));
    let refused = ctl(&viewer, &["tenant", "add", "evil"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("permission denied") && stderr.contains("role operator"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    // The environment works as the flags do.
    let listed = common::ratchet()
        .args(["ctl", "--endpoints", &endpoints, "tenant", "list"])
        .env("RATCHET_CERT", &viewer.cert)
        .env("RATCHET_KEY", &viewer.key)
        .env("RATCHET_CA", &viewer.ca)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("acme"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // Every admin write is in the audit trail with who made it, refusals included.
    let refused = ctl(&operator, &["connector", "add", "--tenant", "nobody", "--cidr", "10.1.0.0/16"]);
    assert!(!refused.status.success());
    let audit = ctl(&viewer, &["--json", "audit"]);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let lines: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let op = "spiffe://ratchet.local/operator/op".to_owned();
    assert!(lines.contains(&(op.clone(), "tenant add acme".into(), "ok".into())), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(who, what, outcome)| *who == op && what.starts_with("connector add 10.1.0.0/16") && outcome.starts_with("refused: ")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|(_, what, _)| what.contains("evil")),
        "a call refused for its role never ran: {lines:?}"
    );

    // Page by page, one entry a page and following the printed tokens: the same trail.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    let mut first_token = None;
    loop {
        let mut args = vec!["--json", "audit", "--page-size", "1"];
        if let Some(token) = &token {
            args.extend(["--page-token", token.as_str()]);
        }
        let page = ctl(&viewer, &args);
        assert!(page.status.success(), "{}", String::from_utf8_lossy(&page.stderr));
        let page: serde_json::Value = serde_json::from_slice(&page.stdout).unwrap();
        assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");
        paged.extend(page["entries"].as_array().unwrap().iter().cloned());
        token = page["next_page_token"].as_str().map(str::to_owned);
        first_token = first_token.or(token.clone());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(&paged, audit["entries"].as_array().unwrap());
    // A token of the whole trail is refused for one tenant's, naming the field.
    let first_token = first_token.expect("the trail has more than one entry");
    let mixed = ctl(&viewer, &["audit", "--tenant", "acme", "--page-token", &first_token]);
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert!(!mixed.status.success() && stderr.contains("page_token"), "{stderr}");

    // The pages over HTTPS: probes open, reports for viewers, the pause form for operators.
    let http = cluster.nodes[0].http;
    let curl = |files: Option<&TlsFiles>, method: &str, path: &str| -> String {
        let mut command = std::process::Command::new("curl");
        command.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--cacert"]);
        command.arg(ca.path().join("ca.pem"));
        if let Some(files) = files {
            command.arg("--cert").arg(&files.cert).arg("--key").arg(&files.key);
        }
        if method == "POST" {
            command.args(["-d", "days=1"]);
        }
        let output = command.arg(format!("https://{http}{path}")).output().expect("curl runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(curl(None, "GET", "/readyz"), "200");
    assert_eq!(curl(None, "GET", "/tenants/acme"), "401");
    assert_eq!(curl(Some(&viewer), "GET", "/tenants/acme"), "200");
    assert_eq!(curl(Some(&viewer), "GET", "/api/v1/tenants/acme/report"), "200");
    assert_eq!(curl(Some(&viewer), "POST", "/tenants/acme/pause"), "403");
    assert_ne!(curl(Some(&operator), "POST", "/tenants/acme/pause"), "403");

    // An edge with its certificate gets verdicts; mail goes through.
    let edge_files = issue(ca.path(), "edge", "edge-0");
    let sink = SmtpSink::start();
    let edge_args = tls_args(&edge_files);
    let edge_args: Vec<&str> = edge_args.iter().map(String::as_str).collect();
    let edge = EdgeProcess::start_with(&endpoints, sink.addr, None, &edge_args, &[]);
    let reply = final_reply(&swaks(edge.addr, "ex1.corp.example", "15.2.1544.4", &[]));
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(sink.wait_for_messages(1).len(), 1);

    // A peer certificate is not an edge's: the edge refuses to start with it.
    let peer_files = files(ca.path(), "d0");
    let mut wrong = vec![
        "edge".to_owned(),
        "--listen".into(),
        free_port().to_string(),
        "--deciders".into(),
        endpoints.clone(),
    ];
    wrong.extend(["--next-hop".into(), sink.addr.to_string(), "--accepted-domains".into(), "*".into()]);
    wrong.extend(tls_args(&peer_files));
    let error = stderr_of_failure(&wrong);
    assert!(error.contains("role peer") && error.contains("needs role edge"), "{error}");
}

#[test]
fn unusable_certificates_and_plaintext_off_loopback_are_refused_at_start() {
    let ca = tempfile::tempdir().unwrap();
    let dir = ca.path();
    stdout_of(["certs", "init", "--dir", dir.to_str().unwrap()]);
    let good = issue(dir, "peer", "d0");
    let other = tempfile::tempdir().unwrap();
    stdout_of(["certs", "init", "--dir", other.path().to_str().unwrap()]);
    let stranger = issue(other.path(), "peer", "d0");
    let malformed = dir.join("malformed.pem");
    std::fs::write(&malformed, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();

    let cases = [
        (
            "a malformed certificate",
            TlsFiles {
                cert: malformed.clone(),
                ..good.clone()
            },
            "malformed",
        ),
        (
            "a key that does not match",
            TlsFiles {
                key: stranger.key.clone(),
                ..good.clone()
            },
            "does not belong",
        ),
        (
            "a CA that did not sign it",
            TlsFiles {
                ca: stranger.ca.clone(),
                ..good.clone()
            },
            "not signed by the CA",
        ),
    ];
    for (what, files, fault) in cases {
        let data = tempfile::tempdir().unwrap();
        let mut args = vec!["decider".to_owned(), "--name".into(), "d0".into(), "--data-dir".into()];
        args.extend([data.path().to_str().unwrap().to_owned(), "--listen".into(), free_port().to_string()]);
        args.extend(tls_args(&files));
        let error = stderr_of_failure(&args);
        assert!(error.contains(fault), "{what}: {error}");
        assert_eq!(error.trim().lines().count(), 1, "{what}: one line: {error}");
    }

    let data = tempfile::tempdir().unwrap();
    let error = stderr_of_failure([
        "decider",
        "--name",
        "d0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(error.contains("plaintext") && error.contains("--insecure"), "{error}");
    let error = stderr_of_failure(["ctl", "--endpoints", "192.0.2.1:7001", "tenant", "list"]);
    assert!(error.contains("plaintext") && error.contains("--insecure"), "{error}");
}
