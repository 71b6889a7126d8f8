//! Mutual TLS for tonic, on both ends of a gRPC link.
//!
//! Listening: [`TlsIncoming`] accepts TCP connections, runs each handshake in its own task
//! (with a deadline, so a stalled client holds nothing up) and hands tonic connections
//! whose [`Caller`] tonic then puts in every request's extensions: an authorization layer
//! reads it there. Client certificates must chain to the cluster CA; a client without one
//! still completes the handshake, as a caller with no identity, so that the layer can
//! answer `UNAUTHENTICATED` in words instead of a bare handshake failure.
//!
//! Dialing: a [`Dialer`] makes tonic channels, plaintext or over TLS with this process's
//! certificate. Deciders are recognized by the role in their certificate (`peer`, signed by
//! the cluster CA), not by DNS name: an address may then be a pod IP, a Service name or
//! loopback without a certificate per name, as SPIFFE does in service meshes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::files::{TlsFiles, Watched};
use crate::identity::{Identity, Role};
use crate::provider;

/// How long setting up a TLS connection may take, on either side.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection, as its verified certificate says.
#[derive(Clone, Debug)]
pub struct Caller {
    pub remote: SocketAddr,
    /// `None`: the client presented no certificate.
    pub identity: Option<Identity>,
}

/// Reads this process's own files: the certificate must chain to the CA, be valid now and
/// carry `role` when one is required. Errors name the file and the fault.
fn own_files(
    files: &TlsFiles,
    role: Option<Role>,
) -> anyhow::Result<(
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
    Arc<RootCertStore>,
)> {
    let (chain, key, roots) = files.read()?;
    let roots = Arc::new(roots);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| anyhow!("--ca: {}: {e}", files.ca.display()))?;
    verify_chain(&verifier, &chain[0], &chain[1..]).map_err(|e| {
        anyhow!(
            "--cert: {}: {} (against --ca {})",
            files.cert.display(),
            describe(&e),
            files.ca.display()
        )
    })?;
    let identity = Identity::of_certificate(&chain[0]).map_err(|e| anyhow!("--cert: {}: {e}", files.cert.display()))?;
    if let Some(role) = role.filter(|role| *role != identity.role) {
        bail!(
            "--cert: {}: the certificate is for role {} ({identity}); this process needs role {role}",
            files.cert.display(),
            identity.role
        );
    }
    Ok((chain, key, roots))
}

/// A server configuration that asks every client for a certificate of the cluster CA.
pub fn server_config(files: &TlsFiles, role: Role, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain, key, roots) = own_files(files, Some(role))?;
    let clients = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow!("--ca: {}: {e}", files.ca.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|e| files.key_error(e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration that presents this process's certificate and accepts only
/// deciders (role `peer`) of the cluster CA.
pub fn client_config(files: &TlsFiles, role: Option<Role>) -> anyhow::Result<Arc<ClientConfig>> {
    let (chain, key, roots) = own_files(files, role)?;
    client_config_of(chain, key, roots).map_err(|e| match e.downcast::<rustls::Error>() {
        Ok(rustls) => files.key_error(rustls),
        Err(other) => anyhow!("--ca: {}: {other}", files.ca.display()),
    })
}

fn client_config_of(
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider()).build()?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DeciderVerifier { webpki }))
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Verifies a chain and its validity period, leaving names aside: the role checks who it is.
fn verify_chain(
    webpki: &WebPkiServerVerifier,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    let any_name = ServerName::try_from("ratchet.invalid").expect("a valid DNS name");
    match webpki.verify_server_cert(end_entity, intermediates, &any_name, &[], UnixTime::now()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn describe(error: &rustls::Error) -> String {
    match error {
        // Another CA of the same name leaves a bad signature rather than an unknown issuer.
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "not signed by the CA".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => "expired".into(),
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "not valid yet".into()
        }
        e => e.to_string(),
    }
}

/// Accepts a server whose certificate chains to the cluster CA and names role `peer`.
#[derive(Debug)]
struct DeciderVerifier {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for DeciderVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(&self.webpki, end_entity, intermediates)?;
        match Identity::of_certificate(end_entity) {
            Ok(identity) if identity.role == Role::Peer => Ok(ServerCertVerified::assertion()),
            Ok(identity) => Err(rustls::Error::General(format!(
                "the server is {identity}, not a decider (role peer)"
            ))),
            Err(e) => Err(rustls::Error::General(format!("the server's certificate: {e}"))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A TLS connection tonic serves, knowing its caller.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    caller: Caller,
}

impl TlsConnection {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections of a TLS listener, handshakes done, for `serve_with_incoming`.
pub struct TlsIncoming;

impl TlsIncoming {
    pub fn new(listener: TcpListener, config: Arc<Watched<Arc<ServerConfig>>>) -> ReceiverStream<io::Result<TlsConnection>> {
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, config, sender));
        ReceiverStream::new(receiver)
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<Watched<Arc<ServerConfig>>>, ready: mpsc::Sender<io::Result<TlsConnection>>) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a gRPC connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.current());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|cert| Identity::of_certificate(cert));
                    let identity = match identity {
                        None => None,
                        Some(Ok(identity)) => Some(identity),
                        Some(Err(e)) => {
                            tracing::warn!(%remote, error = %e, "TLS client refused: its certificate names no role");
                            return;
                        }
                    };
                    let _ = ready
                        .send(Ok(TlsConnection {
                            stream,
                            caller: Caller { remote, identity },
                        }))
                        .await;
                }
                Ok(Err(e)) => tracing::info!(%remote, error = %e, "TLS handshake refused"),
                Err(_) => tracing::info!(%remote, "TLS handshake not completed in time"),
            }
        });
    }
}

/// Makes gRPC channels to deciders: plaintext, or mutual TLS with this process's
/// certificate (reloaded when its files change).
#[derive(Clone, Default)]
pub enum Dialer {
    #[default]
    Plain,
    Tls(Arc<Watched<Arc<ClientConfig>>>),
}

impl Dialer {
    /// `role`: what this process's certificate must say it is (`None` for `ctl`, which
    /// may act as any role).
    pub fn new(files: Option<&TlsFiles>, role: Option<Role>) -> anyhow::Result<Dialer> {
        let Some(files) = files else {
            return Ok(Dialer::Plain);
        };
        let owned = files.clone();
        let watched = Watched::of_files("gRPC client certificate", files, move || client_config(&owned, role))?;
        Ok(Dialer::Tls(Arc::new(watched)))
    }

    /// Presents `files` as they are, without checking them first: for tests of what the
    /// other side refuses (an expired certificate, one of another CA).
    pub fn presenting(files: &TlsFiles) -> anyhow::Result<Dialer> {
        let (chain, key, roots) = files.read()?;
        let config = client_config_of(chain, key, Arc::new(roots))?;
        Ok(Dialer::Tls(Arc::new(Watched::new("test client", Vec::new(), move || {
            Ok(config.clone())
        })?)))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Dialer::Tls(_))
    }

    /// The endpoint for `address` (`host:port`, or a URL); the caller sets its timeouts.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, tonic::transport::Error> {
        match address.contains("://") {
            true => Endpoint::from_shared(address.to_owned()),
            false => Endpoint::from_shared(format!("http://{address}")),
        }
    }

    /// A channel that connects on first use (and reconnects by itself).
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Dialer::Plain => endpoint.connect_lazy(),
            Dialer::Tls(config) => endpoint.connect_with_connector_lazy(tls_connector(config.clone())),
        }
    }

    /// A channel, connected now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Dialer::Plain => endpoint.connect().await,
            Dialer::Tls(config) => endpoint.connect_with_connector(tls_connector(config.clone())).await,
        }
    }
}

type Connecting = Pin<Box<dyn std::future::Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>>;

fn tls_connector(
    config: Arc<Watched<Arc<ClientConfig>>>,
) -> impl tower::Service<http::Uri, Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, Error = io::Error, Future = Connecting>
       + Clone
       + Send {
    tower::service_fn(move |uri: http::Uri| -> Connecting {
        let config = config.current();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(443);
            // A peer behind a partition drops packets: give up instead of waiting for TCP's own timeout.
            let connecting = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                // Names are not checked (the role is: see `DeciderVerifier`), but TLS needs one.
                let name = ServerName::try_from(host.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                TlsConnector::from(config).connect(name, tcp).await
            };
            let timed_out = || {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{host}:{port}: no TLS connection within {HANDSHAKE_TIMEOUT:?}"),
                )
            };
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
                .await
                .map_err(|_| timed_out())??;
            Ok(TokioIo::new(stream))
        })
    })
}
