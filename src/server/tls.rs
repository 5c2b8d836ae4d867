//! Serving certificates: load and check a certificate/key pair, serve it, and swap in a new pair
//! when the files change.
//!
//! A pair is checked before it is used, at start and on every reload: both files parse as PEM,
//! the key is one rustls can sign with, it matches the certificate, and the certificate has not
//! expired. At start a bad pair stops the server with an error naming the file; on reload a bad
//! pair is rejected, the last good pair stays in use, and the rejection is logged at error level
//! and counted in `portico_certificate_reloads_total{result="failed"}`.
//!
//! Reload is a cheap poll: [`CertWatcher::poll`] stats both files (size, modification time,
//! inode — a Kubernetes Secret volume swaps a symlink, which changes the inode) and reads them
//! only when that changed. The rustls resolver hands each new handshake the current pair, so new
//! connections get the new certificate while established ones carry on untouched.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::metrics::CertMetrics;

/// Installs rustls's ring provider as the process default. Portico builds its own configs with
/// an explicit provider too; installing the default as well keeps any other rustls user in the
/// process (the Kubernetes client) from picking a different one or panicking for lack of one.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is fine: only ring is compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a certificate/key pair cannot be used. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertLoadError {
    #[error("cannot read TLS certificate file {path}: {error}")]
    ReadCert {
        path: PathBuf,
        // Named `error`, not `source`: the message already includes it, and a source would
        // make `{:#}` chains print it twice.
        error: std::io::Error,
    },
    #[error("cannot read TLS key file {path}: {error}")]
    ReadKey {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("TLS certificate file {path} holds no PEM certificate{detail}")]
    NoCert { path: PathBuf, detail: String },
    #[error("TLS key file {path} holds no usable PEM private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("TLS certificate file {path} cannot be parsed: {reason}")]
    BadCert { path: PathBuf, reason: String },
    #[error("TLS key file {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS certificate in {path} expired {ago_seconds} seconds ago")]
    Expired { path: PathBuf, ago_seconds: i64 },
}

/// A checked pair, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// SHA-256 of the leaf certificate's DER, hex: names the certificate in logs.
    pub sha256: String,
}

impl LoadedCert {
    /// Seconds left before the certificate expires (negative once it has).
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        self.not_after - unix_seconds(now)
    }
}

/// Reads and checks a certificate chain and key from PEM files.
pub fn load_pair(cert: &Path, key: &Path, now: SystemTime) -> Result<LoadedCert, CertLoadError> {
    let cert_pem = std::fs::read(cert).map_err(|error| CertLoadError::ReadCert {
        path: cert.to_owned(),
        error,
    })?;
    let key_pem = std::fs::read(key).map_err(|error| CertLoadError::ReadKey {
        path: key.to_owned(),
        error,
    })?;
    parse_pair(&cert_pem, &key_pem, cert, key, now)
}

/// [`load_pair`] on PEM texts already read; the paths are for messages only.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
    now: SystemTime,
) -> Result<LoadedCert, CertLoadError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertLoadError::NoCert {
            path: cert.to_owned(),
            detail: format!(": {e}"),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertLoadError::NoCert {
            path: cert.to_owned(),
            detail: String::new(),
        });
    };
    let validity = parse_validity(leaf).map_err(|reason| CertLoadError::BadCert {
        path: cert.to_owned(),
        reason,
    })?;
    let sha256 = hex(&Sha256::digest(leaf.as_ref()));

    let private_key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertLoadError::BadKey {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| CertLoadError::BadKey {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertLoadError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        // ring's keys always expose their public half, so `Unknown` does not happen; anything
        // else means the certificate itself did not parse.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(CertLoadError::BadCert {
                path: cert.to_owned(),
                reason: e.to_string(),
            })
        }
    }
    let now = unix_seconds(now);
    if validity.not_after < now {
        return Err(CertLoadError::Expired {
            path: cert.to_owned(),
            ago_seconds: now - validity.not_after,
        });
    }
    Ok(LoadedCert {
        certified: Arc::new(certified),
        not_after: validity.not_after,
        not_before: validity.not_before,
        sha256,
    })
}

/// Hands every handshake the current pair; [`CertWatcher`] replaces it.
pub struct CertStore {
    current: RwLock<Arc<LoadedCert>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("sha256", &self.current().sha256)
            .finish()
    }
}

impl CertStore {
    pub fn new(initial: LoadedCert) -> Self {
        Self {
            current: RwLock::new(Arc::new(initial)),
        }
    }

    /// The pair in use.
    pub fn current(&self) -> Arc<LoadedCert> {
        // Poisoning cannot leave an `Arc` half-written; keep serving.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, next: LoadedCert) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified.clone())
    }
}

/// The TLS settings of the webhook listener: TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`,
/// certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What one [`CertWatcher::poll`] did.
#[derive(Debug)]
pub enum PollOutcome {
    /// The files look as they did.
    Unchanged,
    /// A new pair is in use.
    Reloaded(Arc<LoadedCert>),
    /// The files changed but the new pair is unusable; the last good pair stays.
    Rejected(CertLoadError),
}

/// Notices changed certificate files and swaps checked pairs into a [`CertStore`].
#[derive(Debug)]
pub struct CertWatcher {
    cert: PathBuf,
    key: PathBuf,
    store: Arc<CertStore>,
    metrics: CertMetrics,
    seen: (Option<FileStamp>, Option<FileStamp>),
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: {
            use std::os::unix::fs::MetadataExt as _;
            (meta.dev(), meta.ino())
        },
    })
}

impl CertWatcher {
    /// Checks the pair at `cert`/`key` and returns a store serving it plus the watcher that keeps
    /// it current. Fails when the pair is unusable.
    pub fn start(
        cert: &Path,
        key: &Path,
        metrics: CertMetrics,
        now: SystemTime,
    ) -> Result<(Arc<CertStore>, Self), CertLoadError> {
        // Stamps are taken before reading, so a change during the read is seen by the next poll.
        let seen = (stamp(cert), stamp(key));
        let loaded = load_pair(cert, key, now)?;
        metrics.set_expiry_seconds(loaded.seconds_left(now));
        let store = Arc::new(CertStore::new(loaded));
        let watcher = Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            store: store.clone(),
            metrics,
            seen,
        };
        Ok((store, watcher))
    }

    /// The store this watcher updates.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// Reloads the pair if either file changed since the last look; keeps the expiry gauge
    /// current. Logs what happened. A rejected pair is not retried until the files change again.
    pub fn poll(&mut self, now: SystemTime) -> PollOutcome {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        let outcome = if stamps == self.seen {
            PollOutcome::Unchanged
        } else {
            self.seen = stamps;
            match load_pair(&self.cert, &self.key, now) {
                Ok(loaded) => {
                    let previous = self.store.current();
                    if previous.sha256 != loaded.sha256 {
                        tracing::info!(
                            cert = %self.cert.display(),
                            sha256 = %loaded.sha256,
                            previous_sha256 = %previous.sha256,
                            seconds_left = loaded.seconds_left(now),
                            "serving certificate reloaded; new connections get it"
                        );
                    }
                    self.store.replace(loaded);
                    self.metrics.reload_ok();
                    PollOutcome::Reloaded(self.store.current())
                }
                Err(error) => {
                    let kept = self.store.current();
                    tracing::error!(
                        %error,
                        kept_sha256 = %kept.sha256,
                        kept_seconds_left = kept.seconds_left(now),
                        "new serving certificate REJECTED; still serving the last good one"
                    );
                    self.metrics.reload_failed();
                    PollOutcome::Rejected(error)
                }
            }
        };
        self.metrics
            .set_expiry_seconds(self.store.current().seconds_left(now));
        outcome
    }
}

/// Validity of a certificate, seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// Reads the validity period out of a DER certificate. Only the few fields before it are walked;
/// the signature was already checked by whoever issued the file, and rustls parses the rest.
pub fn parse_validity(cert: &[u8]) -> Result<Validity, String> {
    let (tag, certificate, _) = der_tlv(cert)?;
    expect_tag(tag, 0x30, "Certificate")?;
    let (tag, tbs, _) = der_tlv(certificate)?;
    expect_tag(tag, 0x30, "TBSCertificate")?;
    let mut rest = tbs;
    let (tag, _, after) = der_tlv(rest)?;
    // `version` is an optional explicit [0]; skip it when present.
    if tag == 0xa0 {
        rest = after;
    }
    let (tag, _, after) = der_tlv(rest)?; // serialNumber
    expect_tag(tag, 0x02, "serialNumber")?;
    let (tag, _, after) = der_tlv(after)?; // signature AlgorithmIdentifier
    expect_tag(tag, 0x30, "signature algorithm")?;
    let (tag, _, after) = der_tlv(after)?; // issuer
    expect_tag(tag, 0x30, "issuer")?;
    let (tag, validity, _) = der_tlv(after)?;
    expect_tag(tag, 0x30, "validity")?;
    let (tag, not_before, after) = der_tlv(validity)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = der_tlv(after)?;
    let not_after = der_time(tag, not_after)?;
    Ok(Validity {
        not_before,
        not_after,
    })
}

fn expect_tag(found: u8, wanted: u8, what: &str) -> Result<(), String> {
    if found == wanted {
        Ok(())
    } else {
        Err(format!(
            "malformed DER: {what} has tag {found:#04x}, expected {wanted:#04x}"
        ))
    }
}

/// One DER tag-length-value: `(tag, contents, rest)`.
fn der_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let truncated = || "malformed DER: truncated".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err("malformed DER: bad length".into());
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err(truncated());
    }
    let (contents, rest) = rest.split_at(len);
    Ok((tag, contents, rest))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn der_time(tag: u8, contents: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(contents).map_err(|_| "malformed time".to_owned())?;
    let digits = text
        .strip_suffix('Z')
        .ok_or_else(|| format!("time {text:?} is not UTC"))?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("malformed time {text:?}"));
    }
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("malformed time {text:?}"))
    };
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            // RFC 5280: two-digit years 50–99 are 19xx, 00–49 are 20xx.
            let yy = num(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return Err(format!("unsupported time {text:?}")),
    };
    let (month, day) = (num(&rest[0..2])?, num(&rest[2..4])?);
    let (hour, minute, second) = (num(&rest[4..6])?, num(&rest[6..8])?, num(&rest[8..10])?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("malformed time {text:?}"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::server::certs::CertAuthority;
    use crate::server::metrics::Metrics;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(der_time(0x17, b"491231235959Z").unwrap(), 2_524_607_999);
        assert_eq!(der_time(0x18, b"19700101000000Z").unwrap(), 0);
        assert!(der_time(0x17, b"4912312359Z").is_err());
    }

    fn issue(
        ca: &CertAuthority,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (String, String) {
        ca.issue("x", &["localhost".into()], not_before, not_after)
            .unwrap()
    }

    #[test]
    fn reads_validity_of_minted_certificates() {
        let now = SystemTime::now();
        let ca = CertAuthority::new("ca", now - DAY, now + 10 * DAY).unwrap();
        let (cert, key) = issue(&ca, now - DAY, now + 2 * DAY);
        let loaded = parse_pair(
            cert.as_bytes(),
            key.as_bytes(),
            "c".as_ref(),
            "k".as_ref(),
            now,
        )
        .unwrap();
        let left = loaded.seconds_left(now);
        assert!((2 * 86_400 - 2..=2 * 86_400).contains(&left), "{left}");
        // Years past 2049 use GeneralizedTime.
        let far = UNIX_EPOCH + Duration::from_secs(2_600_000_000);
        let (cert, _) = issue(&ca, now, far);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(parse_validity(&der).unwrap().not_after, 2_600_000_000);
    }

    #[test]
    fn rejects_mismatch_expiry_and_garbage_naming_the_file() {
        let now = SystemTime::now();
        let ca = CertAuthority::new("ca", now - DAY, now + 10 * DAY).unwrap();
        let (cert, _) = issue(&ca, now - DAY, now + DAY);
        let (_, other_key) = issue(&ca, now - DAY, now + DAY);
        let err = parse_pair(
            cert.as_bytes(),
            other_key.as_bytes(),
            "a.crt".as_ref(),
            "b.key".as_ref(),
            now,
        )
        .unwrap_err();
        assert!(matches!(err, CertLoadError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("b.key"));

        let (old_cert, old_key) = issue(&ca, now - 3 * DAY, now - DAY);
        let err = parse_pair(
            old_cert.as_bytes(),
            old_key.as_bytes(),
            "a.crt".as_ref(),
            "b.key".as_ref(),
            now,
        )
        .unwrap_err();
        assert!(matches!(err, CertLoadError::Expired { .. }), "{err}");

        let err = parse_pair(
            b"hello",
            other_key.as_bytes(),
            "a.crt".as_ref(),
            "b.key".as_ref(),
            now,
        )
        .unwrap_err();
        assert!(err.to_string().contains("a.crt"), "{err}");
        let err = parse_pair(
            cert.as_bytes(),
            b"nope",
            "a.crt".as_ref(),
            "b.key".as_ref(),
            now,
        )
        .unwrap_err();
        assert!(err.to_string().contains("b.key"), "{err}");
    }

    #[test]
    fn watcher_keeps_the_last_good_pair() {
        let now = SystemTime::now();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let ca = CertAuthority::new("ca", now - DAY, now + 10 * DAY).unwrap();
        let (cert, key) = issue(&ca, now - DAY, now + DAY);
        crate::server::certs::write_pair(&cert_path, &key_path, &cert, &key).unwrap();
        let metrics = Metrics::new();
        let (store, mut watcher) =
            CertWatcher::start(&cert_path, &key_path, metrics.certs.clone(), now).unwrap();
        let first = store.current().sha256.clone();
        assert!(matches!(watcher.poll(now), PollOutcome::Unchanged));

        let (_, wrong_key) = issue(&ca, now - DAY, now + DAY);
        crate::server::certs::write_pair(&cert_path, &key_path, &cert, &wrong_key).unwrap();
        assert!(matches!(watcher.poll(now), PollOutcome::Rejected(_)));
        assert_eq!(store.current().sha256, first);
        // Not retried until the files change again.
        assert!(matches!(watcher.poll(now), PollOutcome::Unchanged));

        let (cert2, key2) = issue(&ca, now - DAY, now + 5 * DAY);
        crate::server::certs::write_pair(&cert_path, &key_path, &cert2, &key2).unwrap();
        assert!(matches!(watcher.poll(now), PollOutcome::Reloaded(_)));
        assert_ne!(store.current().sha256, first);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("portico_certificate_reloads_total{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portico_certificate_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
    }
}
