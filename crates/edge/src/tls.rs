//! TLS for the edge: STARTTLS (RFC 3207) with rustls on the ring provider, certificates from
//! PEM files that are reloaded when they change, and the client certificate's name for
//! connector attribution.
//!
//! - [`TlsFiles`] is what the config names: a certificate chain and its key, and optionally
//!   a CA whose client certificates are requested and verified but not required (a sender
//!   without one is served as before and attributed by address alone).
//! - [`TlsSettings`] holds the acceptor in use, rebuilt when the files change, as every
//!   certificate of Ratchet is (`ratchet_tls::files::Watched`): a pair that does not load
//!   is logged once and the previous one stays in service.
//! - [`EdgeStream`] is the socket a session reads: plain TCP until STARTTLS, TLS after.
//!   [`Transport`] is the seam the session is generic over.
//! - [`NextHopClient`] is the other direction: the client side of STARTTLS to the next hop
//!   (`next_hop_tls`), used by `relay`.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{anyhow, bail};
use ratchet_tls::files::{pair_error, read_certificates, read_key, read_roots};
use ratchet_tls::Watched;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The files named by `tls_cert_file`, `tls_key_file` and `tls_client_ca_file` (see
/// `EdgeConfig::tls_files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// The acceptor in service, rebuilt when the files change (see `ratchet_tls::files`).
pub(crate) type TlsSettings = Watched<TlsAcceptor>;

/// Loads the files and keeps watching them; an error names the key and the file at fault.
pub(crate) fn settings(files: TlsFiles) -> anyhow::Result<Arc<TlsSettings>> {
    let paths = files.paths();
    let settings = Watched::new("STARTTLS certificate", paths, move || {
        let (config, about) = load(&files)?;
        tracing::info!(cert = %files.cert.display(), certificate = %about, client_ca = ?files.client_ca, "TLS certificate loaded");
        Ok(TlsAcceptor::from(config))
    })?;
    Ok(Arc::new(settings))
}

/// Builds a rustls server configuration from the files, checking that the key belongs to
/// the certificate. Errors name the config key and the file.
pub(crate) fn load(files: &TlsFiles) -> anyhow::Result<(Arc<ServerConfig>, CertSummary)> {
    let certs = read_certificates("tls_cert_file", &files.cert)?;
    let key = read_key("tls_key_file", &files.key)?;
    let about = CertSummary::of(&certs[0]).map_err(|e| anyhow!("tls_cert_file: {}: {e}", files.cert.display()))?;
    let builder = ServerConfig::builder_with_provider(ratchet_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = read_roots("tls_client_ca_file", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ratchet_tls::provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| anyhow!("tls_client_ca_file: {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| pair_error(("tls_key_file", &files.key), ("tls_cert_file", &files.cert), e))?;
    Ok((Arc::new(config), about))
}

/// STARTTLS to the next hop: the connector in service (rebuilt when `next_hop_ca_file`
/// changes) and the name the next hop's certificate must carry.
pub(crate) struct NextHopClient {
    pub connector: Arc<Watched<TlsConnector>>,
    pub name: ServerName<'static>,
}

/// The TLS client to `next_hop` (HOST:PORT): with `verify`, checking its certificate
/// against `ca` or the system's CA certificates, else taking any certificate (see
/// `EdgeConfig::next_hop_client`). Errors name the key at fault.
pub(crate) fn next_hop_client(next_hop: &str, verify: bool, ca: Option<PathBuf>) -> anyhow::Result<NextHopClient> {
    let host = next_hop.rsplit_once(':').map_or(next_hop, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| anyhow!("next_hop: {host:?} is not a name TLS can check ({e}); set next_hop_tls = \"none\" to relay in clear"))?;
    let paths = ca.iter().cloned().collect();
    let connector = Watched::new("next hop CA", paths, move || {
        let builder = ClientConfig::builder_with_provider(ratchet_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS: {e}"))?;
        let config = match (verify, &ca) {
            (true, Some(ca)) => builder.with_root_certificates(read_roots("next_hop_ca_file", ca)?),
            (true, None) => builder.with_root_certificates(system_roots()?),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(ratchet_tls::provider()))),
        };
        Ok(TlsConnector::from(Arc::new(config.with_no_client_auth())))
    })?;
    Ok(NextHopClient {
        connector: Arc::new(connector),
        name,
    })
}

/// The system's CA certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's).
fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        bail!(
            "next_hop_ca_file: required for next_hop_tls = \"verify\" here: no system CA certificates found{}",
            found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    Ok(roots)
}

/// Opportunistic TLS: any certificate will do (without DANE or MTA-STS, SMTP cannot know
/// whose certificate to expect), but the handshake's signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What the log says about a certificate that goes into service.
pub(crate) struct CertSummary {
    pub subject: String,
    pub serial: String,
    pub not_after: String,
}

impl CertSummary {
    fn of(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        Ok(Self {
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string(),
            not_after: cert.validity().not_after.to_string(),
        })
    }
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject {:?}, serial {}, valid until {}",
            self.subject, self.serial, self.not_after
        )
    }
}

/// The name a client certificate stands for: its first DNS subject alternative name, else
/// its subject's common name; lower-cased, without a trailing dot. `None` for a certificate
/// that names nothing usable.
pub(crate) fn client_cert_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_string()),
            _ => None,
        })
    });
    let name = san.or_else(|| cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok().map(String::from)))?;
    crate::connectors::cert_name(&name)
}

/// What a session knows about its TLS once the handshake is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFacts {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The peer certificate's name (see [`client_cert_name`]): for a session, the verified
    /// client certificate's.
    pub client_cert_name: Option<String>,
}

impl TlsFacts {
    /// The facts of either side of a connection (the peer's certificate name included).
    pub(crate) fn of(conn: &rustls::CommonState) -> Self {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(v) => format!("{v:?}"),
            None => "unknown".into(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "unknown".into());
        let client_cert_name = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|c| client_cert_name(c));
        Self {
            version,
            cipher,
            client_cert_name,
        }
    }
}

/// The stream a session runs on, upgraded in place by STARTTLS.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Runs the server side of a TLS handshake on this stream. Anything already read from
    /// the plain stream is the caller's to discard; on failure the stream is unusable.
    fn start_tls(&mut self, acceptor: TlsAcceptor) -> impl Future<Output = io::Result<TlsFacts>> + Send;
}

/// A client connection: plain TCP, or TLS over it after STARTTLS.
pub(crate) enum EdgeStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A handshake failed or is under way: the connection is gone.
    Broken,
}

impl Transport for EdgeStream {
    async fn start_tls(&mut self, acceptor: TlsAcceptor) -> io::Result<TlsFacts> {
        let plain = match std::mem::replace(self, EdgeStream::Broken) {
            EdgeStream::Plain(tcp) => tcp,
            other => {
                *self = other;
                return Err(io::Error::other("TLS is already active"));
            }
        };
        let tls = acceptor.accept(plain).await?;
        let facts = TlsFacts::of(tls.get_ref().1);
        *self = EdgeStream::Tls(Box::new(tls));
        Ok(facts)
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection lost in a TLS handshake")
}

impl AsyncRead for EdgeStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            EdgeStream::Broken => Poll::Ready(Err(broken())),
        }
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            EdgeStream::Broken => Poll::Ready(Err(broken())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            EdgeStream::Broken => Poll::Ready(Err(broken())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EdgeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            EdgeStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            EdgeStream::Broken => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_der(sans: &[&str], cn: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_first_dns_san_wins_then_the_common_name() {
        assert_eq!(
            client_cert_name(&cert_der(&["MX1.Bear.Example.", "mx2.bear.example"], Some("other"))).as_deref(),
            Some("mx1.bear.example")
        );
        assert_eq!(
            client_cert_name(&cert_der(&[], Some("Relay.Owl.Example"))).as_deref(),
            Some("relay.owl.example")
        );
        // An IP address SAN is not a name; the CN is used.
        assert_eq!(
            client_cert_name(&cert_der(&["10.0.0.5"], Some("cn.example"))).as_deref(),
            Some("cn.example")
        );
        assert_eq!(client_cert_name(&cert_der(&[], None)), None);
        assert_eq!(client_cert_name(b"not a certificate"), None);
    }

    #[test]
    fn load_errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["edge.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let files = TlsFiles {
            cert: write("cert.pem", &cert.pem()),
            key: write("key.pem", &key.serialize_pem()),
            client_ca: None,
        };
        load(&files).unwrap();
        let err = |files: &TlsFiles| format!("{:#}", load(files).err().expect("must fail"));

        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            ..files.clone()
        };
        let e = err(&missing);
        assert!(
            e.starts_with("tls_cert_file: ") && e.contains("nope.pem") && e.contains("cannot read"),
            "{e}"
        );

        let garbage = TlsFiles {
            key: write("garbage.pem", "hello\n"),
            ..files.clone()
        };
        let e = err(&garbage);
        assert!(e.starts_with("tls_key_file: ") && e.contains("garbage.pem"), "{e}");

        let mismatch = TlsFiles {
            key: write("other.pem", &other_key.serialize_pem()),
            ..files.clone()
        };
        let e = err(&mismatch);
        assert!(
            e.starts_with("tls_key_file: ") && e.contains("other.pem") && e.contains("does not belong") && e.contains("cert.pem"),
            "{e}"
        );

        let no_certs = TlsFiles {
            client_ca: Some(write("ca.pem", &key.serialize_pem())),
            ..files.clone()
        };
        let e = err(&no_certs);
        assert!(e.starts_with("tls_client_ca_file: ") && e.contains("ca.pem"), "{e}");
    }
}
