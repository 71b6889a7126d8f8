//! PEM files: read with errors that name the file and what is wrong with it, and watched,
//! so that a certificate renewed on disk (by cert-manager, or by hand) goes into service
//! without a restart.
//!
//! [`Watched`] compares the files' metadata (modification time, size, inode) with what it
//! loaded, a few `stat` calls, before handing out its value, and rebuilds the value when
//! they changed. Files that fail to load are logged once and the previous value stays in
//! service; they are tried again as soon as they change again (cert-manager and Kubernetes
//! write the files one after the other).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often a background task should look at watched files (see [`Watched::check`]).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// A certificate chain, its key, and the CA that signs the other side's certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// From the `--cert`, `--key` and `--ca` flags: all three or none.
    pub fn from_flags(cert: Option<PathBuf>, key: Option<PathBuf>, ca: Option<PathBuf>) -> anyhow::Result<Option<Self>> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
            _ => bail!("--cert, --key and --ca go together: give all three or none"),
        }
    }

    fn paths(&self) -> [&Path; 3] {
        [&self.cert, &self.key, &self.ca]
    }

    /// The chain of `cert`, its key (checked against it by the caller's rustls builder),
    /// and the roots of `ca`.
    pub fn read(&self) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, RootCertStore)> {
        let chain = read_certificates("--cert", &self.cert)?;
        let key = read_key("--key", &self.key)?;
        let roots = read_roots("--ca", &self.ca)?;
        Ok((chain, key, roots))
    }

    /// The error rustls gives for a key that does not belong to the certificate, in words.
    pub fn key_error(&self, error: rustls::Error) -> anyhow::Error {
        pair_error(("--key", &self.key), ("--cert", &self.cert), error)
    }
}

/// Why a certificate and key (each named by its setting and file) cannot serve together.
pub fn pair_error(key: (&str, &Path), cert: (&str, &Path), error: rustls::Error) -> anyhow::Error {
    let ((key_flag, key), (cert_flag, cert)) = (key, cert);
    match error {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "{key_flag}: {}: the key does not belong to the certificate in {cert_flag} {}",
            key.display(),
            cert.display()
        ),
        e => anyhow!("{key_flag}: {}: unusable with {cert_flag} {}: {e}", key.display(), cert.display()),
    }
}

/// Certificates from a PEM file; `flag` names the setting in errors.
pub fn read_certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{flag}: {}: {}", path.display(), pem_error("PEM certificates", e)))?;
    if certs.is_empty() {
        bail!("{flag}: {}: no PEM certificate (BEGIN CERTIFICATE) in it", path.display());
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| anyhow!("{flag}: {}: a certificate in it is malformed: {e}", path.display()))?;
    }
    Ok(certs)
}

/// A private key from a PEM file.
pub fn read_key(flag: &str, path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| anyhow!("{flag}: {}: {}", path.display(), pem_error("a PEM private key", e)))
}

/// Trust roots from a PEM file of CA certificates.
pub fn read_roots(flag: &str, path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(flag, path)? {
        roots
            .add(cert)
            .map_err(|e| anyhow!("{flag}: {}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn pem_error(wanted: &str, e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls_pki_types::pem::Error::NoItemsFound => format!("no {wanted} in it"),
        e => format!("not {wanted}: {e}"),
    }
}

/// Per file: modification time, size, inode and device. A replaced file (written next to
/// it and renamed, as Kubernetes does) has a new inode even if time and size look the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Vec<Option<(Option<SystemTime>, u64, u64, u64)>>);

impl Stamp {
    fn of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Stamp {
        Stamp(
            paths
                .into_iter()
                .map(|p| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len(), m.ino(), m.dev())))
                .collect(),
        )
    }
}

type Build<T> = Box<dyn Fn() -> anyhow::Result<T> + Send + Sync>;

/// A value built from files (a rustls configuration, an acceptor), rebuilt when they change.
pub struct Watched<T> {
    paths: Vec<PathBuf>,
    build: Build<T>,
    current: RwLock<(T, Stamp)>,
    /// The stamp of files that failed to load, so that they are reported once.
    failed: Mutex<Option<Stamp>>,
    what: String,
}

impl<T: Clone> Watched<T> {
    /// Builds the value once (an error here is the caller's to report: the process should
    /// not start on files it cannot use), and keeps `build` to rebuild it.
    pub fn new(
        what: impl Into<String>,
        paths: Vec<PathBuf>,
        build: impl Fn() -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let stamp = Stamp::of(paths.iter().map(PathBuf::as_path));
        let value = build()?;
        Ok(Watched {
            paths,
            build: Box::new(build),
            current: RwLock::new((value, stamp)),
            failed: Mutex::new(None),
            what: what.into(),
        })
    }

    /// The watched files of a [`TlsFiles`].
    pub fn of_files(
        what: impl Into<String>,
        files: &TlsFiles,
        build: impl Fn() -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::new(what, files.paths().iter().map(|p| p.to_path_buf()).collect(), build)
    }

    /// The value in service, after picking up changed files.
    pub fn current(&self) -> T {
        self.check();
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Rebuilds the value if the files changed since it was built (or since they last
    /// failed to load). Returns whether a new value went into service.
    pub fn check(&self) -> bool {
        let stamp = Stamp::of(self.paths.iter().map(PathBuf::as_path));
        let unchanged = |current: &RwLock<(T, Stamp)>| current.read().map(|c| c.1 == stamp).unwrap_or(true);
        if unchanged(&self.current) {
            return false;
        }
        // One reload at a time; whoever waited here may find the work done.
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if unchanged(&self.current) || failed.as_ref() == Some(&stamp) {
            return false;
        }
        match (self.build)() {
            Ok(value) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (value, stamp);
                *failed = None;
                tracing::info!(what = %self.what, "TLS certificate files changed: reloaded");
                true
            }
            Err(e) => {
                tracing::error!(what = %self.what, error = %format!("{e:#}"), "new TLS certificate files do not load; keeping the previous ones");
                *failed = Some(stamp);
                false
            }
        }
    }
}

/// Looks at the files every [`CHECK_INTERVAL`], forever, so that a broken new pair is
/// reported promptly even while no connection comes in.
pub async fn keep_checking<T: Clone + Send + Sync + 'static>(watched: std::sync::Arc<Watched<T>>) {
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let watched = watched.clone();
        let _ = tokio::task::spawn_blocking(move || watched.check()).await;
    }
}
