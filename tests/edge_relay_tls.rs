//! The edge's relay to its next hop over STARTTLS, with real processes: swaks sends over
//! STARTTLS to a `ratchet edge` (a real decider behind it), whose next hop is a private
//! Postfix offering STARTTLS with a test certificate made by rcgen, relaying on to
//! smtp-sink (which has no TLS). Postfix's log (`smtpd_tls_loglevel = 1`) and the
//! `Received:` header it adds ("with ESMTPS") say whether the edge's session was encrypted.
//! And the other side of the edge's TLS: a client certificate that a certificate-only
//! connector names attributes the mail to its tenant.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::cluster::{Cluster, TEST_CONFIG};
use common::smtp::{final_reply, swaks, EdgeProcess, Postfix, PostfixTls, SmtpSink};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

const COMPLIANT: &str = "15.2.2562.17";
const OUT_OF_DATE: &str = "15.0.1497.48";
const SENDER: &str = "from=<admin@bear.example>";

/// A throw-away CA.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A CA named `name` (CAs with one name would be told apart by signature alone).
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `names` and its key, PEM.
    fn issue(&self, names: &[&str]) -> PostfixTls {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        PostfixTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A decider with a tenant whose connector is 127.0.0.1, a Postfix next hop with STARTTLS
/// (its certificate names `localhost`, signed by `ca`) relaying on to a sink.
struct Scene {
    cluster: Cluster,
    postfix: Postfix,
    sink: SmtpSink,
    dir: tempfile::TempDir,
}

/// A single-node decider group, answering `ctl` at the endpoint returned.
fn one_decider() -> (Cluster, String) {
    let mut cluster = Cluster::new(1, TEST_CONFIG);
    let members = cluster.initial_cluster.clone();
    cluster.nodes[0].start(Some(&members), &[]);
    let endpoint = cluster.nodes[0].grpc.to_string();
    common::wait_for_ctl(&endpoint);
    (cluster, endpoint)
}

impl Scene {
    fn start() -> Scene {
        let (cluster, endpoint) = one_decider();
        common::ctl(&endpoint, &["tenant", "add", "bear"]);
        common::ctl(&endpoint, &["connector", "add", "--tenant", "bear", "--cidr", "127.0.0.1/32"]);
        let ca = Ca::new("next hop test CA");
        let sink = SmtpSink::start();
        let postfix = Postfix::start_with_tls(sink.addr, Some(&ca.issue(&["localhost"])));
        let dir = tempfile::tempdir().unwrap();
        // The edge's own STARTTLS certificate, for swaks (which verifies nothing).
        let edge_tls = Ca::new("edge test CA").issue(&["edge.test"]);
        std::fs::write(dir.path().join("edge-cert.pem"), edge_tls.cert_pem).unwrap();
        std::fs::write(dir.path().join("edge-key.pem"), edge_tls.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        Scene {
            cluster,
            postfix,
            sink,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An edge offering STARTTLS, relaying to Postfix as `localhost:PORT`, for
    /// owl.example only, with `settings` added to its config file.
    fn edge(&self, name: &str, settings: &str) -> EdgeProcess {
        let config = self.path(&format!("{name}.toml"));
        let text = format!(
            "hostname = \"{name}.test\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\ndecide_deadline_ms = 5000\n{settings}",
            self.path("edge-cert.pem"),
            self.path("edge-key.pem"),
        );
        std::fs::write(&config, text).unwrap();
        let next_hop = format!("localhost:{}", self.postfix.addr.port());
        let endpoint = self.cluster.nodes[0].grpc.to_string();
        EdgeProcess::start_to(&endpoint, &next_hop, Some(&config), &["--accepted-domains", "owl.example"], &[])
    }

    /// How many messages Postfix has taken in (its qmgr logs the sender of each).
    fn postfix_took(&self) -> usize {
        self.postfix.log().lines().filter(|l| l.contains(SENDER)).count()
    }
}

/// swaks over STARTTLS (`--tls`: it quits unless STARTTLS succeeds) to `edge`.
fn send(edge: &EdgeProcess, to: &str) -> Output {
    let output = swaks(edge.addr, "ex1.bear.local", COMPLIANT, &["--tls", "--to", to]);
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(
        transcript.contains("=== TLS started"),
        "swaks did not talk TLS to the edge:\n{transcript}"
    );
    output
}

fn transcript(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn opportunistic_relay_to_a_starttls_next_hop_is_encrypted_and_other_domains_are_refused() {
    let scene = Scene::start();
    let edge = scene.edge("opportunistic", ""); // the default
    let output = send(&edge, "user@owl.example");
    assert!(final_reply(&output).starts_with("250 2.0.0 Ok: relayed"), "{}", transcript(&output));
    scene.postfix.wait_for_status("status=sent");
    let log = scene.postfix.log();
    assert!(
        log.contains("Anonymous TLS connection established from localhost[127.0.0.1]"),
        "Postfix saw no TLS session from the edge:\n{log}"
    );
    let messages = scene.sink.wait_for_messages(1);
    assert!(
        messages[0].contains("by onprem-relay.test (Postfix) with ESMTPS"),
        "Postfix's Received header says how the edge relayed:\n{}",
        messages[0]
    );

    // No open relay: a recipient in another domain is refused at RCPT, nothing goes on.
    let output = send(&edge, "user@elsewhere.example");
    assert_eq!(
        final_reply(&output),
        "550 5.7.1 Relaying denied: elsewhere.example is not a domain this edge accepts mail for",
        "{}",
        transcript(&output)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(scene.postfix_took(), 1);

    // next_hop_tls = "none": the same next hop gets the next message in clear.
    let plain = scene.edge("plain", "next_hop_tls = \"none\"\n");
    let output = send(&plain, "user@owl.example");
    assert!(final_reply(&output).starts_with("250 2.0.0 Ok: relayed"), "{}", transcript(&output));
    let messages = scene.sink.wait_for_messages(2);
    assert_eq!(messages.len(), 2);
    let clear = messages
        .iter()
        .find(|m| m.contains("from plain.test"))
        .expect("the message of the plain edge");
    assert!(
        clear.contains("by onprem-relay.test (Postfix) with ESMTP id"),
        "relayed in clear:\n{clear}"
    );
    let log = scene.postfix.log();
    assert_eq!(log.matches("TLS connection established from").count(), 1, "{log}");
}

#[test]
fn verify_relays_encrypted_with_the_right_ca_and_nothing_with_a_wrong_one() {
    let scene = Scene::start();

    // A CA that did not sign Postfix's certificate: a temporary failure, nothing relayed
    // (not even in clear).
    std::fs::write(scene.path("wrong-ca.pem"), Ca::new("another test CA").cert.pem()).unwrap();
    let wrong = scene.edge(
        "wrong",
        &format!("next_hop_tls = \"verify\"\nnext_hop_ca_file = {:?}\n", scene.path("wrong-ca.pem")),
    );
    let output = send(&wrong, "user@owl.example");
    assert_eq!(
        final_reply(&output),
        "451 4.7.5 No verified TLS to the next hop, try again later",
        "{}",
        transcript(&output)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(scene.postfix_took(), 0, "{}", scene.postfix.log());
    assert!(scene.sink.messages().is_empty());

    // The CA that did: relayed, encrypted.
    let right = scene.edge(
        "right",
        &format!("next_hop_tls = \"verify\"\nnext_hop_ca_file = {:?}\n", scene.path("ca.pem")),
    );
    let output = send(&right, "user@owl.example");
    assert!(final_reply(&output).starts_with("250 2.0.0 Ok: relayed"), "{}", transcript(&output));
    scene.postfix.wait_for_status("status=sent");
    let log = scene.postfix.log();
    assert!(log.contains("TLS connection established from localhost[127.0.0.1]"), "{log}");
    assert_eq!(scene.postfix_took(), 1, "{log}");
    let messages = scene.sink.wait_for_messages(1);
    assert!(messages[0].contains("with ESMTPS"), "{}", messages[0]);
}

/// A connector may name only a certificate (no address range): mail from any address that
/// presents that certificate is the tenant's, and without it the same address is a stranger's.
#[test]
fn a_certificate_only_connector_attributes_mail_sent_with_its_certificate() {
    let (_cluster, endpoint) = one_decider();
    common::ctl(&endpoint, &["tenant", "add", "lynx"]);
    let added = common::json_of([
        "ctl",
        "--endpoints",
        &endpoint,
        "--json",
        "connector",
        "add",
        "--tenant",
        "lynx",
        "--cert-name",
        "relay.lynx.example",
    ]);
    assert_eq!(
        added,
        serde_json::json!({"tenant": "lynx", "cidr": null, "cert_name": "relay.lynx.example", "created": true})
    );
    let listed = common::stdout_of(["ctl", "--endpoints", &endpoint, "connector", "list", "--tenant", "lynx"]);
    assert!(listed.contains("any") && listed.contains("relay.lynx.example"), "{listed}");
    let refused = common::stderr_of_failure(["ctl", "--endpoints", &endpoint, "connector", "add", "--tenant", "lynx"]);
    assert!(refused.contains("--cidr"), "neither a range nor a certificate: {refused}");
    // Blocked every minute: a 550 proves the mail was attributed to lynx.
    let first_seen = (chrono::Utc::now() - chrono::TimeDelta::days(100)).to_rfc3339();
    common::ctl(
        &endpoint,
        &[
            "server",
            "import",
            "--tenant",
            "lynx",
            "--server",
            "ex1.lynx.local",
            "--build",
            OUT_OF_DATE,
            "--first-seen",
            &first_seen,
        ],
    );

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let edge_tls = Ca::new("edge test CA").issue(&["edge.test"]);
    let client_ca = Ca::new("client test CA");
    let client = client_ca.issue(&["relay.lynx.example"]);
    for (name, pem) in [
        ("edge-cert.pem", edge_tls.cert_pem),
        ("edge-key.pem", edge_tls.key_pem),
        ("client-ca.pem", client_ca.cert.pem()),
        ("client-cert.pem", client.cert_pem),
        ("client-key.pem", client.key_pem),
    ] {
        std::fs::write(path(name), pem).unwrap();
    }
    let config = path("edge.toml");
    std::fs::write(
        &config,
        format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\ndecide_deadline_ms = 5000\n",
            path("edge-cert.pem"),
            path("edge-key.pem"),
            path("client-ca.pem")
        ),
    )
    .unwrap();
    let sink = SmtpSink::start();
    let edge = EdgeProcess::start(&endpoint, sink.addr, Some(&config));
    let client_cert = path("client-cert.pem").display().to_string();
    let client_key = path("client-key.pem").display().to_string();
    let with_certificate = ["--tls", "--tls-cert", client_cert.as_str(), "--tls-key", client_key.as_str()];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let output = loop {
        // Until the edge has loaded the connector table, it asks the decider, which answers the same.
        let output = swaks(edge.addr, "ex1.lynx.local", OUT_OF_DATE, &with_certificate);
        if !final_reply(&output).starts_with("451") || std::time::Instant::now() > deadline {
            break output;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        final_reply(&output).starts_with("550 5.7.230 "),
        "lynx's certificate makes it lynx's mail: {}",
        transcript(&output)
    );
    // The same address without the certificate belongs to no tenant: relayed, unenforced.
    let output = swaks(edge.addr, "ex1.lynx.local", OUT_OF_DATE, &["--tls"]);
    assert!(final_reply(&output).starts_with("250 2.0.0 Ok: relayed"), "{}", transcript(&output));
    assert_eq!(sink.wait_for_messages(1).len(), 1);
}
