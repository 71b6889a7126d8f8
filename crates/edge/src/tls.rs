//! TLS for the edge: STARTTLS (RFC 3207) with rustls on the ring provider, certificates from
//! PEM files that are reloaded when they change, and the client certificate's name for
//! connector attribution.
//!
//! - [`TlsFiles`] is what the config names: a certificate chain and its key, and optionally
//!   a CA whose client certificates are requested and verified but not required (a sender
//!   without one is served as before and attributed by address alone).
//! - [`TlsSettings`] holds the rustls configuration in use. Before each handshake it
//!   compares the files' metadata (modification time, size, inode) with what it loaded, a
//!   few `stat` calls, and loads the files again when they changed; a background task does
//!   the same every few seconds so that a broken new pair is reported promptly. A pair that
//!   does not load is logged once and the previous one stays in service; it is tried again
//!   as soon as the files change again (cert-manager and Kubernetes write the two files one
//!   after the other).
//! - [`EdgeStream`] is the socket a session reads: plain TCP until STARTTLS, TLS after.
//!   [`Transport`] is the seam the session is generic over.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::EdgeConfig;

/// How often the background task looks at the certificate files.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The files named by `tls_cert_file`, `tls_key_file` and `tls_client_ca_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of `config`, or `None` when STARTTLS is not configured. Assumes the config
    /// passed the pairing checks of [`EdgeConfig::validate`].
    pub fn of(config: &EdgeConfig) -> Option<Self> {
        Some(Self {
            cert: config.tls_cert_file.clone()?,
            key: config.tls_key_file.clone()?,
            client_ca: config.tls_client_ca_file.clone(),
        })
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(self.cert.as_path()), Some(self.key.as_path()), self.client_ca.as_deref()]
            .into_iter()
            .flatten()
    }

    /// What the files look like on disk now; a missing file has no stamp.
    fn stamp(&self) -> Stamp {
        Stamp(
            self.paths()
                .map(|p| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len(), m.ino(), m.dev())))
                .collect(),
        )
    }
}

/// Per file: modification time, size, inode and device. A replaced file (written next to
/// it and renamed, as Kubernetes does) has a new inode even if time and size look the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Vec<Option<(Option<SystemTime>, u64, u64, u64)>>);

/// One loaded certificate: the acceptor for new handshakes, and what to log about it.
struct Loaded {
    acceptor: TlsAcceptor,
    stamp: Stamp,
}

/// The TLS configuration in service, reloaded when its files change.
pub(crate) struct TlsSettings {
    files: TlsFiles,
    current: RwLock<Loaded>,
    /// The stamp of files that failed to load, so that they are reported once, not at
    /// every handshake.
    failed: Mutex<Option<Stamp>>,
}

impl TlsSettings {
    /// Loads the files; an error names the key and the file at fault.
    pub fn new(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let stamp = files.stamp();
        let (config, about) = load(&files)?;
        tracing::info!(cert = %files.cert.display(), certificate = %about, client_ca = ?files.client_ca, "TLS certificate loaded");
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Loaded {
                acceptor: TlsAcceptor::from(config),
                stamp,
            }),
            failed: Mutex::new(None),
        }))
    }

    /// The acceptor for a new handshake, after picking up changed files.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        self.check();
        match self.current.read() {
            Ok(loaded) => Ok(loaded.acceptor.clone()),
            Err(_) => Err("TLS settings unavailable (poisoned lock)".into()),
        }
    }

    /// Loads the files again if they changed since they were loaded (or since they last
    /// failed to load). Returns whether a new certificate went into service.
    pub fn check(&self) -> bool {
        let stamp = self.files.stamp();
        let unchanged = self.current.read().map(|l| l.stamp == stamp).unwrap_or(true);
        if unchanged {
            return false;
        }
        // One reload at a time; whoever waited here may find the work done.
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let done = self.current.read().map(|l| l.stamp == stamp).unwrap_or(true);
        if done || failed.as_ref() == Some(&stamp) {
            return false;
        }
        match load(&self.files) {
            Ok((config, about)) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Loaded {
                        acceptor: TlsAcceptor::from(config),
                        stamp,
                    };
                }
                *failed = None;
                tracing::info!(cert = %self.files.cert.display(), certificate = %about, "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "new TLS certificate files do not load; keeping the previous certificate");
                *failed = Some(stamp);
                false
            }
        }
    }
}

/// Looks at the certificate files every [`CHECK_INTERVAL`], forever.
pub(crate) async fn keep_checking(tls: Arc<TlsSettings>) {
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let tls = tls.clone();
        let _ = tokio::task::spawn_blocking(move || tls.check()).await;
    }
}

/// The provider every TLS object of the edge uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a rustls server configuration from the files, checking that the key belongs to
/// the certificate. Errors name the config key and the file.
pub(crate) fn load(files: &TlsFiles) -> anyhow::Result<(Arc<ServerConfig>, CertSummary)> {
    let certs = read_certificates("tls_cert_file", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow!("tls_key_file: {}: {}", files.key.display(), pem_error("a PEM private key", e)))?;
    let about = CertSummary::of(&certs[0]).map_err(|e| anyhow!("tls_cert_file: {}: {e}", files.cert.display()))?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates("tls_client_ca_file", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| anyhow!("tls_client_ca_file: {}: unusable CA certificate: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| anyhow!("tls_client_ca_file: {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "tls_key_file: {}: the key does not belong to the certificate in tls_cert_file {}",
            files.key.display(),
            files.cert.display()
        ),
        e => anyhow!(
            "tls_key_file: {}: unusable with tls_cert_file {}: {e}",
            files.key.display(),
            files.cert.display()
        ),
    })?;
    Ok((Arc::new(config), about))
}

fn read_certificates(key: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{key}: {}: {}", path.display(), pem_error("PEM certificates", e)))?;
    if certs.is_empty() {
        bail!("{key}: {}: no PEM certificate (BEGIN CERTIFICATE) in it", path.display());
    }
    Ok(certs)
}

fn pem_error(wanted: &str, e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls_pki_types::pem::Error::NoItemsFound => format!("no {wanted} in it"),
        e => format!("not {wanted}: {e}"),
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
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty() && !name.contains(|c: char| c.is_control() || c.is_whitespace())).then_some(name)
}

/// What a session knows about its TLS once the handshake is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFacts {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The verified client certificate's name (see [`client_cert_name`]).
    pub client_cert_name: Option<String>,
}

impl TlsFacts {
    fn of(conn: &rustls::ServerConnection) -> Self {
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
