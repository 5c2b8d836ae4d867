//! The sandbox's own serving certificate: a throwaway CA and a leaf for `127.0.0.1`, `::1` and
//! `localhost`, generated at start (kubectl sends bearer tokens only over HTTPS). The listener
//! accepts TLS and plain HTTP on the same port, telling them apart by the first byte.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// The generated CA (for kubeconfigs) and the server configuration.
#[derive(Clone)]
pub struct ServingCert {
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    /// rustls server configuration (ALPN h2 and http/1.1).
    pub config: Arc<rustls::ServerConfig>,
}

/// Generates a CA and a serving certificate for loopback.
pub fn generate() -> anyhow::Result<ServingCert> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "portico-sandbox-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().context("CA key")?;
    let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .context("leaf params")?;
    leaf.distinguished_name
        .push(DnType::CommonName, "portico-sandbox");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_key = KeyPair::generate().context("leaf key")?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .context("leaf certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServingCert {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
