//! `ratchet certs init|issue`: a cluster CA, and certificates that carry their role in a
//! SPIFFE ID (`spiffe://TRUST_DOMAIN/ROLE/NAME`, a URI subject alternative name).
//!
//! Keys are ECDSA P-256, written with mode 0600. Nothing is ever overwritten: a CA or a
//! certificate that exists is refused, so that a slip of the command line cannot replace
//! the key a whole cluster trusts.
//!
//! The CA certificate names its trust domain as the URI SAN `spiffe://TRUST_DOMAIN`, so
//! that `issue` needs only the directory. To sign, `issue` rebuilds the CA's parameters
//! (subject and constraints) from `ca.pem` and the key from `ca-key.pem`, after checking
//! that the key is the one the certificate was made for.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{Identity, Role};

pub const DEFAULT_TRUST_DOMAIN: &str = "ratchet.local";
const CA_DAYS: i64 = 3650;

/// The files of a CA directory.
#[derive(Debug)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaFiles {
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles {
            cert: dir.join("ca.pem"),
            key: dir.join("ca-key.pem"),
        }
    }
}

/// What to issue a certificate for.
pub struct Request {
    pub role: Role,
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub days: u32,
}

/// Makes a CA in `dir` (created if missing); returns the files written.
pub fn init(dir: &Path, trust_domain: &str) -> anyhow::Result<CaFiles> {
    check_trust_domain(trust_domain)?;
    std::fs::create_dir_all(dir).with_context(|| format!("--dir: {}: cannot create", dir.display()))?;
    let files = CaFiles::in_dir(dir);
    refuse_existing(&[&files.cert, &files.key])?;
    let key = KeyPair::generate()?;
    let now = OffsetDateTime::now_utc();
    let mut params = ca_params(trust_domain)?;
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// Issues `NAME.pem` and `NAME-key.pem` in `dir`, signed by the CA there, valid from now.
pub fn issue(dir: &Path, request: &Request) -> anyhow::Result<(PathBuf, PathBuf, Identity)> {
    issue_at(dir, request, OffsetDateTime::now_utc())
}

/// [`issue`], valid from `now` (tests make expired certificates with a `now` in the past).
pub fn issue_at(dir: &Path, request: &Request, now: OffsetDateTime) -> anyhow::Result<(PathBuf, PathBuf, Identity)> {
    check_name(&request.name)?;
    if request.days == 0 {
        bail!("--days: a certificate must be valid for at least one day");
    }
    let ca = CaFiles::in_dir(dir);
    let ca_pem = std::fs::read_to_string(&ca.cert)
        .with_context(|| format!("{}: cannot read the CA (run `ratchet certs init` first)", ca.cert.display()))?;
    let ca_key_pem = std::fs::read_to_string(&ca.key).with_context(|| format!("{}: cannot read the CA key", ca.key.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| anyhow!("{}: not a PEM private key: {e}", ca.key.display()))?;
    let trust_domain = ca_trust_domain(&ca_pem, ca_key.public_key_raw()).map_err(|e| anyhow!("{}: {e}", ca.cert.display()))?;
    let issuer = ca_params(&trust_domain)?.self_signed(&ca_key)?;

    let cert_path = dir.join(format!("{}.pem", request.name));
    let key_path = dir.join(format!("{}-key.pem", request.name));
    refuse_existing(&[&cert_path, &key_path])?;
    let identity = Identity {
        trust_domain,
        role: request.role,
        name: request.name.clone(),
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, identity.spiffe_id());
    params.subject_alt_names.push(SanType::URI(identity.spiffe_id().try_into()?));
    for name in &request.dns {
        params.subject_alt_names.push(SanType::DnsName(
            name.clone().try_into().map_err(|e| anyhow!("--dns {name:?}: {e}"))?,
        ));
    }
    params.subject_alt_names.extend(request.ips.iter().copied().map(SanType::IpAddress));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(request.days.into());
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer, &ca_key)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path, identity))
}

fn ca_params(trust_domain: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Ratchet CA {trust_domain}"));
    params
        .subject_alt_names
        .push(SanType::URI(format!("spiffe://{trust_domain}").try_into()?));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// The trust domain a CA certificate names, once its key is known to belong to it.
fn ca_trust_domain(ca_pem: &str, key_public: &[u8]) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("malformed certificate: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key_public {
        return Err("ca-key.pem is not the key of this CA certificate".into());
    }
    let sans = cert.subject_alternative_name().map_err(|e| e.to_string())?;
    sans.into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix("spiffe://").map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| "not a Ratchet CA: it names no spiffe:// trust domain".to_string())
}

fn check_trust_domain(domain: &str) -> anyhow::Result<()> {
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if !ok {
        bail!("--trust-domain {domain:?}: lower-case letters, digits, '.', '-' and '_' only (a SPIFFE trust domain)");
    }
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        bail!("--name {name:?}: letters, digits, '.', '-' and '_' only (it names the files and the SPIFFE ID)");
    }
    Ok(())
}

fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        bail!(
            "{}: already exists; nothing was written (remove it first to replace it)",
            existing.display()
        );
    }
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    file.sync_all().with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_role_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "test.example").unwrap();
        assert!(init(dir.path(), "test.example").unwrap_err().to_string().contains("already exists"));
        let request = Request {
            role: Role::Operator,
            name: "alice".into(),
            dns: vec!["alice.test".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
            days: 30,
        };
        let (cert, _key, identity) = issue(dir.path(), &request).unwrap();
        assert_eq!(identity.spiffe_id(), "spiffe://test.example/operator/alice");
        let pem = std::fs::read(&cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert_eq!(Identity::of_certificate(&pem.contents).unwrap(), identity);
        assert!(issue(dir.path(), &request).unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn a_ca_key_that_does_not_match_is_refused() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        init(one.path(), "one").unwrap();
        init(two.path(), "two").unwrap();
        std::fs::copy(two.path().join("ca-key.pem"), one.path().join("ca-key.pem")).unwrap();
        let request = Request {
            role: Role::Edge,
            name: "e".into(),
            dns: vec![],
            ips: vec![],
            days: 1,
        };
        let error = issue(one.path(), &request).unwrap_err().to_string();
        assert!(error.contains("not the key of this CA"), "{error}");
    }
}
