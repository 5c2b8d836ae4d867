//! Making certificates with rcgen: a CA and a serving certificate for the webhook Service.
//!
//! Used by `portico certs` (development and simple installs) and by tests, which mint pairs in
//! temporary directories. It knows nothing about serving; [`super::tls`] loads what this writes.
//! The CA's private key is never written: a CA that can sign nothing more is the safest kind, and
//! re-running `portico certs` simply makes a new CA (and a new caBundle to inject).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// File names inside `--out DIR`: the names a Kubernetes TLS Secret uses.
pub const CA_FILE: &str = "ca.crt";
/// The serving certificate (PEM).
pub const CERT_FILE: &str = "tls.crt";
/// The serving certificate's private key (PEM, PKCS#8), written with mode 0600.
pub const KEY_FILE: &str = "tls.key";

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("--service {0:?} is not a valid DNS label (lowercase letters, digits and '-', at most 63 characters, alphanumeric at both ends)")]
    BadService(String),
    #[error("--namespace {0:?} is not a valid DNS label (lowercase letters, digits and '-', at most 63 characters, alphanumeric at both ends)")]
    BadNamespace(String),
    #[error("--host {host:?} is neither an IP address nor a DNS name: {reason}")]
    BadHost { host: String, reason: String },
    #[error("--days must be between 1 and {max}, got {days}")]
    BadDays { days: u32, max: u32 },
    // The cause is in the message and not a `source`, so a chain printed whole says it once.
    #[error("cannot generate a certificate: {0}")]
    Generate(rcgen::Error),
    #[error("cannot create directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        // Named `error`, not `source`: the message already includes it, and a source would
        // make `{:#}` chains print it twice.
        error: std::io::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError::Generate(e)
    }
}

/// Longest validity `portico certs` agrees to make (10 years).
pub const MAX_DAYS: u32 = 3650;

/// What to certify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The webhook Service's name.
    pub service: String,
    /// The webhook Service's namespace.
    pub namespace: String,
    /// Extra DNS names or IP addresses (`localhost`, `127.0.0.1`, …); only these are added.
    pub hosts: Vec<String>,
    /// Validity in days, from an hour ago (so slightly slow clocks accept it at once).
    pub days: u32,
}

/// The PEM texts of a freshly made CA and serving certificate.
#[derive(Debug, Clone)]
pub struct CertBundle {
    /// The CA certificate: what clients (the apiserver) trust.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// The subject alternative names in the serving certificate, in order.
    pub names: Vec<String>,
}

/// Where [`CertBundle::write_to`] put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The DNS names under which the apiserver may call a Service: `<svc>`, `<svc>.<ns>`,
/// `<svc>.<ns>.svc` (what a webhook's `clientConfig.service` resolves to) and
/// `<svc>.<ns>.svc.cluster.local`.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Makes a CA and a serving certificate for `spec`, valid from an hour ago for `spec.days` days.
pub fn mint(spec: &CertSpec) -> Result<CertBundle, CertError> {
    if !is_dns_label(&spec.service) {
        return Err(CertError::BadService(spec.service.clone()));
    }
    if !is_dns_label(&spec.namespace) {
        return Err(CertError::BadNamespace(spec.namespace.clone()));
    }
    if spec.days == 0 || spec.days > MAX_DAYS {
        return Err(CertError::BadDays {
            days: spec.days,
            max: MAX_DAYS,
        });
    }
    let mut names = service_names(&spec.service, &spec.namespace);
    for host in &spec.hosts {
        check_host(host)?;
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let not_after = not_before + Duration::from_secs(3600 + u64::from(spec.days) * 86_400);
    let ca = CertAuthority::new(
        &format!("portico webhook CA ({}/{})", spec.namespace, spec.service),
        not_before,
        not_after,
    )?;
    let common_name = format!("{}.{}.svc", spec.service, spec.namespace);
    let (cert_pem, key_pem) = ca.issue(&common_name, &names, not_before, not_after)?;
    Ok(CertBundle {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem,
        key_pem,
        names,
    })
}

impl CertBundle {
    /// The CA certificate, base64-encoded: the value of a webhook's `clientConfig.caBundle`.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }

    /// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it if needed.
    /// Each file is written to a temporary name and renamed, so a server watching the directory
    /// never reads half a file.
    pub fn write_to(&self, dir: &Path) -> Result<CertFiles, CertError> {
        fs::create_dir_all(dir).map_err(|error| CertError::CreateDir {
            path: dir.to_owned(),
            error,
        })?;
        let files = CertFiles {
            ca: dir.join(CA_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        };
        write_file(&files.ca, self.ca_pem.as_bytes(), false)?;
        write_file(&files.key, self.key_pem.as_bytes(), true)?;
        write_file(&files.cert, self.cert_pem.as_bytes(), false)?;
        Ok(files)
    }
}

/// A CA that can issue serving certificates; kept in memory only.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A self-signed CA named `common_name`, valid between the two instants.
    pub fn new(
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, not_before, not_after);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a serving certificate for `names` (IP addresses become IP SANs) with a new ECDSA
    /// P-256 key; returns `(certificate PEM, private key PEM)`.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(String, String), CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|name| san(name))
            .collect::<Result<_, _>>()?;
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Portico");
    dn
}

fn san(name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name
        .to_owned()
        .try_into()
        .map_err(|e: rcgen::Error| CertError::BadHost {
            host: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(SanType::DnsName(dns))
}

fn check_host(host: &str) -> Result<(), CertError> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = |reason: &str| CertError::BadHost {
        host: host.to_owned(),
        reason: reason.to_owned(),
    };
    if host.is_empty() || host.len() > 253 {
        return Err(bad("a DNS name has 1 to 253 characters"));
    }
    // A leading `*.` is a wildcard name, which certificates allow.
    let rest = host.strip_prefix("*.").unwrap_or(host);
    for label in rest.split('.') {
        if !is_dns_label(&label.to_ascii_lowercase()) {
            return Err(bad(&format!(
                "label {label:?} is not letters, digits and '-' (alphanumeric at both ends, at most 63)"
            )));
        }
    }
    Ok(())
}

/// RFC 1123 label: what Service and namespace names are.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    // rcgen takes `time::OffsetDateTime`; adding to its own epoch value avoids depending on the
    // `time` crate directly. Instants before 1970 are not needed here.
    let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after);
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let err = |error| CertError::Write {
        path: path.to_owned(),
        error,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(err)?;
    // The mode above only applies when the file is created; a leftover temporary file keeps its
    // old mode, so set it again.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)
}

/// Writes a certificate and key pair to the given paths, each atomically (temporary file and
/// rename), the key with mode 0600. The key is written first: a watcher that sees the new key
/// with the old certificate rejects the mismatched pair and retries when the certificate lands.
pub fn write_pair(cert: &Path, key: &Path, cert_pem: &str, key_pem: &str) -> Result<(), CertError> {
    write_file(key, key_pem.as_bytes(), true)?;
    write_file(cert, cert_pem.as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hosts: &[&str]) -> CertSpec {
        CertSpec {
            service: "portico".into(),
            namespace: "portico-system".into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            days: 30,
        }
    }

    #[test]
    fn names_cover_the_service_and_only_the_given_hosts() {
        let bundle = mint(&spec(&["localhost", "127.0.0.1"])).unwrap();
        assert_eq!(
            bundle.names,
            [
                "portico",
                "portico.portico-system",
                "portico.portico-system.svc",
                "portico.portico-system.svc.cluster.local",
                "localhost",
                "127.0.0.1"
            ]
        );
        let bare = mint(&spec(&[])).unwrap();
        assert!(!bare.names.iter().any(|n| n == "localhost"));
        assert!(bundle.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn bad_inputs_name_the_flag() {
        let mut s = spec(&[]);
        s.service = "Portico".into();
        assert!(mint(&s).unwrap_err().to_string().contains("--service"));
        let mut s = spec(&[]);
        s.namespace = "-x".into();
        assert!(mint(&s).unwrap_err().to_string().contains("--namespace"));
        assert!(mint(&spec(&["bad host"]))
            .unwrap_err()
            .to_string()
            .contains("--host"));
        let mut s = spec(&[]);
        s.days = 0;
        assert!(mint(&s).unwrap_err().to_string().contains("--days"));
    }

    #[test]
    fn ca_bundle_is_base64_of_the_ca_pem() {
        let bundle = mint(&spec(&[])).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle.ca_bundle())
            .unwrap();
        assert_eq!(decoded, bundle.ca_pem.as_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let files = mint(&spec(&[])).unwrap().write_to(dir.path()).unwrap();
        let mode = fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(files.ca.exists() && files.cert.exists());
    }
}
