//! Where the milter listens, in the words of Postfix's `smtpd_milters`: `inet:HOST:PORT` (or
//! a bare `HOST:PORT`) for TCP, `unix:/PATH` for a Unix-domain socket on the MTA's own host.
//!
//! A TCP listener admits only `mta_cidrs`; a Unix socket admits whoever may open the file,
//! so it is created with `socket_mode` (0660 by default: the MTA's user must be in the
//! milter's group, or the mode opened up). A socket file left by a milter that did not stop
//! cleanly is replaced; any other file at the path is refused, and the file is removed when
//! the milter stops.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use tokio::net::{TcpListener, UnixListener};

/// A milter address as Postfix writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MilterAddress {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for MilterAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let inet = |address: &str| {
            address
                .parse()
                .map(MilterAddress::Inet)
                .map_err(|_| format!("{address:?} is not HOST:PORT with an IP address"))
        };
        match text.split_once(':') {
            Some(("unix" | "local", path)) if path.starts_with('/') => Ok(MilterAddress::Unix(path.into())),
            Some(("unix" | "local", path)) => Err(format!("{path:?} is not an absolute path")),
            Some(("inet", address)) => inet(address),
            _ => inet(text),
        }
    }
}

impl fmt::Display for MilterAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterAddress::Inet(address) => write!(f, "inet:{address}"),
            MilterAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound milter listener.
pub enum MilterListener {
    Tcp(TcpListener),
    /// The socket file is removed when this is dropped.
    Unix(UnixListener, SocketFile),
}

/// A Unix socket's path, removed on drop.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl MilterAddress {
    /// Binds it; a Unix socket gets the permission bits `mode`.
    pub async fn bind(&self, mode: u32) -> anyhow::Result<MilterListener> {
        match self {
            MilterAddress::Inet(address) => Ok(MilterListener::Tcp(TcpListener::bind(address).await?)),
            MilterAddress::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                let file = SocketFile(path.clone());
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
                Ok(MilterListener::Unix(listener, file))
            }
        }
    }
}

fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(std::fs::remove_file(path)?),
        Ok(_) => bail!("{} exists and is not a socket: not replacing it", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_postfix_writes_them() {
        let inet = MilterAddress::Inet("127.0.0.1:8891".parse().unwrap());
        assert_eq!("inet:127.0.0.1:8891".parse(), Ok(inet.clone()));
        assert_eq!("127.0.0.1:8891".parse(), Ok(inet.clone()));
        assert_eq!(inet.to_string(), "inet:127.0.0.1:8891");
        let unix = MilterAddress::Unix("/run/ratchet/milter.sock".into());
        assert_eq!("unix:/run/ratchet/milter.sock".parse(), Ok(unix.clone()));
        assert_eq!("local:/run/ratchet/milter.sock".parse(), Ok(unix.clone()));
        assert_eq!(unix.to_string(), "unix:/run/ratchet/milter.sock");
        assert_eq!(
            "unix:milter.sock".parse::<MilterAddress>(),
            Err("\"milter.sock\" is not an absolute path".into())
        );
        assert_eq!(
            "inet:localhost:8891".parse::<MilterAddress>(),
            Err("\"localhost:8891\" is not HOST:PORT with an IP address".into())
        );
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_any_other_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");
        let address = MilterAddress::Unix(path.clone());
        let first = address.bind(0o660).await.unwrap();
        std::mem::forget(first); // as a milter killed outright leaves it
        let second = address.bind(0o600).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(second);
        assert!(!path.exists(), "removed when the milter stops");
        std::fs::write(&path, "not a socket").unwrap();
        let e = address.bind(0o660).await.err().unwrap().to_string();
        assert!(e.ends_with("exists and is not a socket: not replacing it"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }
}
