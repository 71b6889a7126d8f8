//! STARTTLS (RFC 3207) and TLS client certificates, with real TLS clients: tokio-rustls in
//! the test and swaks. Certificates come from a throw-away CA made with rcgen in a temp dir.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ratchet_edge::EdgeConfig;
use ratchet_proto::v1::Connector;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const BODY: &str = EXCHANGE_MESSAGE;

// ---------------------------------------------------------------- certificates

/// A CA and the certificates it signed, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// One issued certificate: PEM texts.
struct Issued {
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "Ratchet test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        };
        std::fs::write(pki.ca_path(), pki.ca.pem()).unwrap();
        pki
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn issue(&self, sans: &[&str], cn: &str, serial: u64, purpose: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self, serial: u64) -> Issued {
        self.issue(
            &["edge.test"],
            &format!("edge-{serial}"),
            serial,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, san: &str) -> Issued {
        self.issue(&[san], "client", 77, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file the way Kubernetes and cert-manager do: next to it, then renamed.
    fn install(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    fn install_server(&self, issued: &Issued) {
        self.install("edge.crt", &issued.cert);
        self.install("edge.key", &issued.key);
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

/// An edge config with STARTTLS from `pki`'s `edge.crt` / `edge.key` (serial 1 unless
/// already installed) and, optionally, client certificates verified against its CA.
fn tls_config(pki: &Pki, deciders: &[std::net::SocketAddr], next_hop: std::net::SocketAddr, client_ca: bool) -> EdgeConfig {
    if !pki.path("edge.crt").exists() {
        pki.install_server(&pki.server(1));
    }
    EdgeConfig {
        tls_cert_file: Some(pki.path("edge.crt")),
        tls_key_file: Some(pki.path("edge.key")),
        tls_client_ca_file: client_ca.then(|| pki.ca_path()),
        ..config(deciders, next_hop)
    }
}

// ---------------------------------------------------------------- a TLS-capable client

/// A line-oriented SMTP client over any stream.
struct Smtp<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp<S> {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
        self.stream.get_mut().flush().await.unwrap();
    }

    /// One complete reply, lines joined by '\n'; empty at EOF.
    async fn reply(&mut self) -> String {
        read_reply(&mut self.stream, Duration::from_secs(10)).await
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn message(&mut self, from: &str, to: &str, body: &str) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert!(r.starts_with("250 2.1.0"), "{r}");
        let r = self.cmd(&format!("RCPT TO:<{to}>")).await;
        assert!(r.starts_with("250 2.1.5"), "{r}");
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354"), "{r}");
        self.send(body.as_bytes()).await;
        self.cmd(".").await
    }
}

async fn plain(addr: std::net::SocketAddr) -> Smtp<TcpStream> {
    let mut c = Smtp {
        stream: BufReader::new(TcpStream::connect(addr).await.unwrap()),
    };
    let g = c.reply().await;
    assert!(g.starts_with("220 "), "{g}");
    c
}

fn client_config(pki: &Pki, client_cert: Option<&Issued>) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots());
    match client_cert {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let certs = vec![CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    }
}

/// Runs the TLS handshake on a plain session that has just been told `220 2.0.0`.
async fn handshake(c: Smtp<TcpStream>, config: ClientConfig) -> std::io::Result<Smtp<TlsStream<TcpStream>>> {
    assert!(c.stream.buffer().is_empty(), "the server sent something after 220 2.0.0");
    let tcp = c.stream.into_inner();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("edge.test").unwrap(), tcp)
        .await?;
    Ok(Smtp {
        stream: BufReader::new(tls),
    })
}

/// EHLO, STARTTLS, handshake, EHLO again: a session ready for MAIL over TLS.
async fn tls_session(addr: std::net::SocketAddr, config: ClientConfig) -> Smtp<TlsStream<TcpStream>> {
    let mut c = plain(addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.lines().any(|l| l == "250-STARTTLS" || l == "250 STARTTLS"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut t = handshake(c, config).await.unwrap();
    let ehlo = t.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250-edge.test"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "STARTTLS must not be offered over TLS: {ehlo}");
    t
}

/// Serial and common name of the certificate the edge served.
fn served(t: &Smtp<TlsStream<TcpStream>>) -> (String, String) {
    let chain = t.stream.get_ref().get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
    (cert.raw_serial_as_string(), cn)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn starttls_then_mail_is_relayed_with_esmtps() {
    let pki = Pki::new();
    let decider = FakeDecider::new("127.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(tls_config(&pki, &[decider.clone().serve().await], sink.addr, false)).await;
    decider.watched().await;

    let mut t = tls_session(edge.addr, client_config(&pki, None)).await;
    let r = t.message("a@bear.example", "b@owl.example", BODY).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let m = &sink.wait_for_messages(1).await[0];
    assert!(m.contains("by edge.test (Ratchet edge) with ESMTPS id"), "{m}");
    assert!(m.contains("(using TLSv1.3 with cipher TLS13_"), "{m}");
    assert!(m.contains("id 15.1.2507.16; Mon, 20 May 2024"), "content intact: {m}");
    let req = decider.requests.lock().unwrap()[0].clone();
    assert_eq!(
        req.connection.unwrap().tls_client_cert_name,
        "",
        "no client certificate was presented"
    );

    // STARTTLS twice, and the session goes on.
    assert!(t.cmd("STARTTLS").await.starts_with("503 5.5.1"));
    assert!(t.cmd("NOOP").await.starts_with("250"));
    assert!(t.cmd("QUIT").await.starts_with("221"));
}

#[tokio::test]
async fn starttls_rules_of_rfc_3207() {
    let pki = Pki::new();
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(tls_config(&pki, &[decider.clone().serve().await], sink.addr, false)).await;

    let mut c = plain(edge.addr).await;
    assert!(c.cmd("EHLO client.test").await.contains("250 STARTTLS"));
    // Parameters are a syntax error.
    assert!(c.cmd("STARTTLS now").await.starts_with("501 5.5.4"));
    // Not in the middle of a transaction.
    assert!(c.cmd("MAIL FROM:<a@bear.example>").await.starts_with("250 2.1.0"));
    assert!(c.cmd("STARTTLS").await.starts_with("503 5.5.1"));
    assert!(c.cmd("RSET").await.starts_with("250"));
    // The greeting is forgotten by STARTTLS.
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut t = handshake(c, client_config(&pki, None)).await.unwrap();
    let r = t.cmd("MAIL FROM:<a@bear.example>").await;
    assert!(r.starts_with("503 5.5.1"), "the client must EHLO again after STARTTLS: {r}");
    assert!(t.cmd("EHLO client.test").await.starts_with("250-edge.test"));
    assert!(t.cmd("MAIL FROM:<a@bear.example>").await.starts_with("250 2.1.0"));
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let pki = Pki::new();
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(tls_config(&pki, &[decider.clone().serve().await], sink.addr, false)).await;

    let mut c = plain(edge.addr).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250-edge.test"));
    // A man in the middle appends commands to the client's STARTTLS (CVE-2011-0411): they
    // reach the edge in the same segment, before the handshake.
    c.send(b"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@owl.example>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS");
    let mut t = handshake(c, client_config(&pki, None)).await.unwrap();
    // The first reply over TLS answers our EHLO: nothing injected was processed...
    let ehlo = t.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250-edge.test Hello client.test"), "{ehlo}");
    // ...and no transaction was opened by it.
    assert!(t.cmd("RCPT TO:<b@owl.example>").await.starts_with("503 5.5.1"));
    let r = t.message("a@bear.example", "b@owl.example", BODY).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let messages = sink.wait_for_messages(1).await;
    assert_eq!(messages.len(), 1);
    assert!(
        !messages[0].contains("attacker") && !messages[0].contains("victim"),
        "{}",
        messages[0]
    );
}

#[tokio::test]
async fn a_changed_certificate_is_served_and_a_broken_one_is_not() {
    let pki = Pki::new();
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(tls_config(&pki, &[decider.clone().serve().await], sink.addr, false)).await;
    let served_now = || async { served(&tls_session(edge.addr, client_config(&pki, None)).await) };

    assert_eq!(served_now().await, ("01".to_string(), "edge-1".to_string()));

    pki.install_server(&pki.server(2));
    assert_eq!(served_now().await, ("02".to_string(), "edge-2".to_string()));

    // A key that is not PEM: logged, the old pair stays in service.
    pki.install("edge.key", "not a key\n");
    assert_eq!(served_now().await.0, "02");
    // A certificate whose key is another's: the same.
    let three = pki.server(3);
    let other = pki.server(4);
    pki.install("edge.crt", &three.cert);
    pki.install("edge.key", &other.key);
    assert_eq!(served_now().await.0, "02");
    // The matching key arrives: the new certificate is served.
    pki.install("edge.key", &three.key);
    assert_eq!(served_now().await, ("03".to_string(), "edge-3".to_string()));
}

#[tokio::test]
async fn a_client_certificate_names_the_connection_for_attribution_and_decide() {
    let pki = Pki::new();
    let mut decider = FakeDecider::new("127.0.0.0/8", block());
    // Tenant bear's connector needs both its address range and its certificate.
    decider.connectors = vec![Connector {
        tenant: "bear".into(),
        cidr: "127.0.0.0/8".into(),
        cert_name: "mx.bear.example".into(),
    }];
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(tls_config(&pki, &[decider.clone().serve().await], sink.addr, true)).await;
    decider.watched().await;

    // Without a certificate (requested, not required) the connection is a stranger's.
    let mut t = tls_session(edge.addr, client_config(&pki, None)).await;
    let r = t.message("a@bear.example", "b@owl.example", BODY).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(decider.calls(), 0);

    // With bear's certificate (upper case in the SAN) it is bear's, and Decide is told.
    let cert = pki.client("MX.Bear.Example");
    let mut t = tls_session(edge.addr, client_config(&pki, Some(&cert))).await;
    assert_eq!(t.message("a@bear.example", "b@owl.example", BODY).await, BLOCK);
    let req = decider.requests.lock().unwrap()[0].clone();
    let facts = req.connection.unwrap();
    assert_eq!(facts.tls_client_cert_name, "mx.bear.example");
    assert_eq!(facts.client_ip, "127.0.0.1");

    // A certificate from another CA fails the handshake; the edge serves on.
    let stranger_ca = Pki::new();
    let forged = stranger_ca.client("mx.bear.example");
    let mut c = plain(edge.addr).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250-"));
    assert!(c.cmd("STARTTLS").await.starts_with("220 2.0.0"));
    match handshake(c, client_config(&pki, Some(&forged))).await {
        Err(_) => {}
        // TLS 1.3: the client finishes first and learns of the refusal when it reads.
        Ok(mut t) => {
            let _ = t.stream.get_mut().write_all(b"EHLO client.test\r\n").await;
            assert_eq!(t.reply().await, "", "a forged client certificate must not get a session");
        }
    }
    assert_eq!(sink.wait_for_messages(1).await.len(), 1);
    let mut t = tls_session(edge.addr, client_config(&pki, None)).await;
    assert!(t.cmd("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn require_tls_refuses_plaintext_mail() {
    let pki = Pki::new();
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let mut config = tls_config(&pki, &[decider.clone().serve().await], sink.addr, false);
    config.require_tls = true;
    let edge = Edge::start(config).await;

    let mut c = plain(edge.addr).await;
    assert!(c.cmd("EHLO client.test").await.contains("STARTTLS"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@bear.example>").await,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert!(c.cmd("RCPT TO:<b@owl.example>").await.starts_with("503 5.5.1"));
    assert!(c.cmd("STARTTLS").await.starts_with("220 2.0.0"));
    let mut t = handshake(c, client_config(&pki, None)).await.unwrap();
    assert!(t.cmd("EHLO client.test").await.starts_with("250-"));
    let r = t.message("a@bear.example", "b@owl.example", BODY).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
}

#[tokio::test]
async fn swaks_with_tls_and_a_client_certificate() {
    let pki = Pki::new();
    let mut decider = FakeDecider::new("127.0.0.0/8", accept());
    decider.connectors[0].cert_name = "relay.bear.example".into();
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(tls_config(&pki, &[decider.clone().serve().await], sink.addr, true)).await;
    decider.watched().await;
    let client = pki.client("relay.bear.example");
    let cert = pki.install("client.crt", &client.cert);
    let key = pki.install("client.key", &client.key);
    let body = pki.install("body.eml", BODY);

    let out = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &edge.addr.port().to_string(),
        "--ehlo",
        "client.test",
        "--from",
        "a@bear.example",
        "--to",
        "b@owl.example",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        pki.ca_path().to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--data",
        body.to_str().unwrap(),
    ])
    .await;
    assert!(out.contains("<~  250 2.0.0 Ok: relayed"), "{out}");
    let req = decider.requests.lock().unwrap()[0].clone();
    assert_eq!(req.connection.unwrap().tls_client_cert_name, "relay.bear.example");
    let m = &sink.wait_for_messages(1).await[0];
    assert!(m.contains("with ESMTPS id"), "{m}");
}

#[tokio::test]
async fn swaks_without_tls_configured_sees_no_starttls() {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let edge = Edge::start(config(&[decider.clone().serve().await], sink.addr)).await;
    let out = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &edge.addr.port().to_string(),
        "--from",
        "a@bear.example",
        "--to",
        "b@owl.example",
        "--tls-optional",
    ])
    .await;
    assert!(
        out.contains("Host did not advertise STARTTLS") && !out.contains("-> STARTTLS"),
        "{out}"
    );
    assert!(out.contains("<-  250 2.0.0 Ok: relayed"), "{out}");
    assert!(sink.wait_for_messages(1).await[0].contains("with ESMTP id"));
}

async fn swaks(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("swaks")
            .args(&args)
            .args(["--timeout", "20"])
            .output()
            .expect("swaks (Debian package swaks) is needed")
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "swaks failed ({}):\n{text}", out.status);
    text
}

#[test]
fn tls_settings_are_validated_by_key_and_file() {
    let pki = Pki::new();
    pki.install_server(&pki.server(1));
    let base = EdgeConfig {
        deciders: vec!["127.0.0.1:7001".into()],
        next_hop: "127.0.0.1:25".into(),
        accepted_domains: vec!["*".into()],
        ..EdgeConfig::default()
    };
    let err = |c: &EdgeConfig| format!("{:#}", c.validate().unwrap_err());
    let with = |cert: Option<&Path>, key: Option<&Path>| EdgeConfig {
        tls_cert_file: cert.map(Path::to_path_buf),
        tls_key_file: key.map(Path::to_path_buf),
        ..base.clone()
    };

    with(Some(&pki.path("edge.crt")), Some(&pki.path("edge.key"))).validate().unwrap();
    assert!(err(&with(Some(&pki.path("edge.crt")), None)).starts_with("tls_key_file: required"));
    assert!(err(&with(None, Some(&pki.path("edge.key")))).starts_with("tls_cert_file: required"));

    let missing = pki.path("missing.crt");
    let e = err(&with(Some(&missing), Some(&pki.path("edge.key"))));
    assert!(e.starts_with("tls_cert_file: ") && e.contains(missing.to_str().unwrap()), "{e}");

    // The key of another certificate.
    let other = pki.install("other.key", &pki.server(9).key);
    let e = err(&with(Some(&pki.path("edge.crt")), Some(&other)));
    assert!(
        e.starts_with("tls_key_file: ") && e.contains("other.key") && e.contains("edge.crt"),
        "{e}"
    );

    let e = err(&EdgeConfig {
        tls_client_ca_file: Some(pki.path("edge.key")),
        ..with(Some(&pki.path("edge.crt")), Some(&pki.path("edge.key")))
    });
    assert!(e.starts_with("tls_client_ca_file: ") && e.contains("edge.key"), "{e}");

    assert!(err(&EdgeConfig {
        require_tls: true,
        ..base.clone()
    })
    .starts_with("require_tls: "));
    assert!(
        EdgeConfig::from_toml("tls_cert_file = \"/a.pem\"\ntls_key_file = \"/b.pem\"\nrequire_tls = true\n")
            .unwrap()
            .require_tls
    );
}
