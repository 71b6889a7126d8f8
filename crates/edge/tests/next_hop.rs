//! The edge as a client of its next hop: STARTTLS per `next_hop_tls`, and no open relay
//! (`accepted_domains`). The next hop is scripted here (TLS by tokio-rustls, certificates
//! from rcgen) so that every branch shows; tests/edge_relay_tls.rs runs the main paths
//! against a real Postfix with swaks as the sender.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use ratchet_edge::NextHopTls;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const BODY: &str = EXCHANGE_MESSAGE;

// ---------------------------------------------------------------- certificates

/// A CA that signs one server certificate for `localhost`.
struct Ca {
    dir: tempfile::TempDir,
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
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Ca { dir, cert, key }
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A rustls server configuration with a certificate for `names`, signed by this CA.
    fn server(&self, names: &[&str]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(ratchet_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
            .unwrap();
        Arc::new(config)
    }
}

// ---------------------------------------------------------------- a scripted next hop

/// How the scripted next hop answers STARTTLS.
#[derive(Clone)]
enum Starttls {
    /// Not offered in EHLO.
    NotOffered,
    /// Offered, and the handshake done with this configuration.
    With(Arc<ServerConfig>),
    /// Offered, answered 220, and then the connection closed: a broken handshake.
    Broken,
}

/// Each transaction the next hop accepted: whether it came over TLS, and its MAIL line.
type Received = Arc<Mutex<Vec<(bool, String)>>>;

async fn next_hop(starttls: Starttls) -> (SocketAddr, Received) {
    let (addr, received, _) = counting_next_hop(starttls).await;
    (addr, received)
}

/// [`next_hop`], and the number of connections it accepted.
async fn counting_next_hop(starttls: Starttls) -> (SocketAddr, Received, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let log = received.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (starttls, log) = (starttls.clone(), log.clone());
            tokio::spawn(async move {
                let mut plain = BufReader::new(stream);
                let _ = plain.get_mut().write_all(b"220 scripted ESMTP\r\n").await;
                let offer = !matches!(starttls, Starttls::NotOffered);
                if !dialog(&mut plain, offer, false, &log).await {
                    return;
                }
                let Starttls::With(config) = starttls else { return };
                let Ok(tls) = TlsAcceptor::from(config).accept(plain.into_inner()).await else {
                    return;
                };
                dialog(&mut BufReader::new(tls), false, true, &log).await;
            });
        }
    });
    (addr, received, connections)
}

/// Serves commands until QUIT or EOF (false) or STARTTLS (true, after its 220).
async fn dialog<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>, offer_tls: bool, tls: bool, log: &Received) -> bool {
    let mut mail = String::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") && offer_tls {
            "250-scripted\r\n250-8BITMIME\r\n250 STARTTLS"
        } else if upper.starts_with("EHLO") {
            "250-scripted\r\n250 8BITMIME"
        } else if upper.starts_with("STARTTLS") {
            let _ = s.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await;
            return true;
        } else if upper.starts_with("MAIL") {
            mail = line.trim_end().to_string();
            "250 2.1.0 ok"
        } else if upper.starts_with("DATA") {
            let _ = s.get_mut().write_all(b"354 go ahead\r\n").await;
            loop {
                let mut data = String::new();
                if s.read_line(&mut data).await.unwrap_or(0) == 0 {
                    return false;
                }
                if data == ".\r\n" {
                    break;
                }
            }
            log.lock().unwrap().push((tls, std::mem::take(&mut mail)));
            "250 2.0.0 queued"
        } else if upper.starts_with("QUIT") {
            let _ = s.get_mut().write_all(b"221 bye\r\n").await;
            return false;
        } else {
            "250 2.0.0 ok"
        };
        let _ = s.get_mut().write_all(format!("{reply}\r\n").as_bytes()).await;
    }
}

/// An edge relaying to `next_hop` with `mode` (and CA), the decider a stand-in that accepts.
async fn edge(next_hop: SocketAddr, mode: NextHopTls, ca: Option<std::path::PathBuf>, name: &str) -> (Edge, FakeDecider) {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let mut cfg = config(&[decider.clone().serve().await], next_hop);
    cfg.next_hop = format!("{name}:{}", next_hop.port());
    cfg.next_hop_tls = mode;
    cfg.next_hop_ca_file = ca;
    let edge = Edge::start(cfg).await;
    decider.watched().await;
    (edge, decider)
}

async fn send(edge: &Edge) -> String {
    let mut c = Client::greeted(edge.addr).await;
    c.message("a@bear.example", &["b@owl.example"], BODY).await
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn opportunistic_uses_starttls_with_any_certificate() {
    let other = Ca::new("another test CA");
    let (addr, received) = next_hop(Starttls::With(other.server(&["mx.elsewhere.example"]))).await;
    let (edge, _d) = edge(addr, NextHopTls::Opportunistic, None, "127.0.0.1").await;
    let r = send(&edge).await;
    assert!(r.starts_with("250 2.0.0 Ok: relayed (2.0.0 queued)"), "{r}");
    assert_eq!(*received.lock().unwrap(), vec![(true, "MAIL FROM:<a@bear.example>".to_string())]);
}

#[tokio::test]
async fn a_session_in_tls_is_kept_for_the_next_messages() {
    let ca = Ca::new("next hop test CA");
    let (addr, received, connections) = counting_next_hop(Starttls::With(ca.server(&["localhost"]))).await;
    let (edge, _d) = edge(addr, NextHopTls::Verify, Some(ca.file()), "localhost").await;
    for _ in 0..3 {
        assert!(send(&edge).await.starts_with("250 2.0.0 Ok: relayed"));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(received.lock().unwrap().len(), 3);
    assert!(received.lock().unwrap().iter().all(|(tls, _)| *tls));
}

#[tokio::test]
async fn opportunistic_relays_in_clear_when_starttls_is_absent_or_broken() {
    for starttls in [Starttls::NotOffered, Starttls::Broken] {
        let (addr, received) = next_hop(starttls).await;
        let (edge, _d) = edge(addr, NextHopTls::Opportunistic, None, "127.0.0.1").await;
        let r = send(&edge).await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
        assert_eq!(*received.lock().unwrap(), vec![(false, "MAIL FROM:<a@bear.example>".to_string())]);
    }
}

#[tokio::test]
async fn none_never_starts_tls() {
    let ca = Ca::new("next hop test CA");
    let (addr, received) = next_hop(Starttls::With(ca.server(&["localhost"]))).await;
    let (edge, _d) = edge(addr, NextHopTls::None, None, "localhost").await;
    assert!(send(&edge).await.starts_with("250 2.0.0"));
    assert!(!received.lock().unwrap()[0].0);
}

#[tokio::test]
async fn verify_needs_the_right_ca_and_name_and_never_falls_back_to_clear() {
    let ca = Ca::new("next hop test CA");
    let (addr, received) = next_hop(Starttls::With(ca.server(&["localhost"]))).await;
    let (edge_ok, _d) = edge(addr, NextHopTls::Verify, Some(ca.file()), "localhost").await;
    let r = send(&edge_ok).await;
    assert!(r.starts_with("250 2.0.0 Ok: relayed"), "{r}");
    assert_eq!(received.lock().unwrap().len(), 1);
    assert!(received.lock().unwrap()[0].0);

    // Another CA; the right CA but another name (an IP address the certificate does not
    // name); no STARTTLS; a broken handshake: 451 4.7.5 every time, nothing relayed.
    let other = Ca::new("another test CA");
    let (edge_other_ca, _d1) = edge(addr, NextHopTls::Verify, Some(other.file()), "localhost").await;
    let (edge_other_name, _d2) = edge(addr, NextHopTls::Verify, Some(ca.file()), "127.0.0.1").await;
    let (plain, plain_received) = next_hop(Starttls::NotOffered).await;
    let (edge_no_tls, _d3) = edge(plain, NextHopTls::Verify, Some(ca.file()), "localhost").await;
    let (broken, broken_received) = next_hop(Starttls::Broken).await;
    let (edge_broken, _d4) = edge(broken, NextHopTls::Verify, Some(ca.file()), "localhost").await;
    for edge in [&edge_other_ca, &edge_other_name, &edge_no_tls, &edge_broken] {
        let r = send(edge).await;
        assert_eq!(r, "451 4.7.5 No verified TLS to the next hop, try again later");
    }
    assert_eq!(received.lock().unwrap().len(), 1);
    assert!(plain_received.lock().unwrap().is_empty() && broken_received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn recipients_outside_accepted_domains_are_refused() {
    let decider = FakeDecider::new("10.0.0.0/8", accept());
    let sink = SmtpSink::start(&[]).await;
    let mut cfg = config(&[decider.clone().serve().await], sink.addr);
    cfg.accepted_domains = vec!["owl.example".into(), "*.bear.example".into()];
    let edge = Edge::start(cfg).await;
    decider.watched().await;

    let mut c = Client::greeted(edge.addr).await;
    assert!(c.cmd("MAIL FROM:<a@elsewhere.example>").await.starts_with("250 "));
    assert_eq!(
        c.cmd("RCPT TO:<b@elsewhere.example>").await,
        "550 5.7.1 Relaying denied: elsewhere.example is not a domain this edge accepts mail for"
    );
    // "*.bear.example" is below bear.example, not bear.example itself.
    assert!(c.cmd("RCPT TO:<b@bear.example>").await.starts_with("550 5.7.1 "));
    assert!(c.cmd("RCPT TO:<b@Owl.Example>").await.starts_with("250 2.1.5"));
    assert!(c.cmd("RCPT TO:<c@eu.bear.example>").await.starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(BODY.as_bytes()).await;
    assert!(c.cmd(".").await.starts_with("250 2.0.0"));
    let messages = sink.wait_for_messages(1).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("b@Owl.Example") && messages[0].contains("c@eu.bear.example"));
    assert!(!messages[0].contains("b@elsewhere.example") && !messages[0].contains("b@bear.example"));
}
