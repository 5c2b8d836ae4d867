//! Certificate rotation to a new key signed by a **new CA**, as a cluster does it: the caBundle
//! first trusts old and new CA (the overlap window), the Secret volume then switches both files at
//! once (the kubelet's atomic `..data` symlink swap), and once every connection has moved the old
//! CA is dropped. Requests flow on fresh HTTP/1.1 and HTTP/2 connections throughout; none may
//! fail, the new certificate must be served, and a good rotation must not count as a failed
//! reload. (Same-CA rotation and broken pairs: `tests/server_tls.rs`
//! `certificate_replaced_on_disk_while_requests_flow`, `broken_new_pair_keeps_the_old_one_and_is_counted`;
//! the same rotation under load with figures: `make loadtest`.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use portico::server::certs::CertAuthority;
use portico::server::{self, ServeOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DAY: Duration = Duration::from_secs(86_400);
const PATIENCE: Duration = Duration::from_secs(20);

fn fixture() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/review/06-pod-create-kubernetes-admin-complete-review.json");
    std::fs::read(path).unwrap()
}

fn sha256(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `tls.crt` and `tls.key` behind a `..data` symlink, switched atomically as the kubelet does.
struct Volume {
    dir: PathBuf,
    version: u32,
}

impl Volume {
    fn new(dir: &Path) -> Self {
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        Self {
            dir: dir.to_owned(),
            version: 0,
        }
    }

    fn update(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let name = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("tls.crt"), cert).unwrap();
        std::fs::write(self.dir.join(&name).join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

/// A client whose trusted CAs can change; no TLS session resumption (as the apiserver's client),
/// so every connection shows the certificate served now.
struct Client {
    addr: std::net::SocketAddr,
    roots: RwLock<Vec<String>>,
}

impl Client {
    fn config(&self, alpn: &[u8]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for ca in self.roots.read().unwrap().iter() {
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// One review on a new connection; the status and the certificate the server showed.
    async fn review(&self, h2: bool, body: &[u8]) -> Result<(StatusCode, String), String> {
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(self.config(alpn))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let cert = sha256(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref());
        let authority = format!("localhost:{}", self.addr.port());
        let io = TokioIo::new(tls);
        let builder = Request::builder()
            .method(Method::POST)
            .header(http::header::CONTENT_TYPE, "application/json");
        let body = Full::new(Bytes::copy_from_slice(body));
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let request = builder
                .uri(format!("https://{authority}/mutate"))
                .body(body)
                .unwrap();
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let request = builder
                .uri("/mutate")
                .header(http::header::HOST, authority)
                .body(body)
                .unwrap();
            sender.send_request(request).await
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, cert))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_to_a_new_ca_with_an_overlap_window_fails_no_request() {
    let now = SystemTime::now();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let old_ca = CertAuthority::new("old CA", now - DAY, now + 30 * DAY).unwrap();
    let new_ca = CertAuthority::new("new CA", now - DAY, now + 60 * DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut volume = Volume::new(dir.path());
    let (cert, key) = old_ca
        .issue("localhost", &names, now - DAY, now + 10 * DAY)
        .unwrap();
    volume.update(&cert, &key);
    let mut options = ServeOptions::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    options.listen = "127.0.0.1:0".parse().unwrap();
    options.ops_listen = "127.0.0.1:0".parse().unwrap();
    options.cert_check_interval = Duration::from_millis(50);
    let server = server::start(options, Webhook::new(Config::default()))
        .await
        .unwrap();
    let old_sha = server.cert_sha256();
    let review = fixture();
    assert!(Webhook::new(Config::default())
        .answer(Endpoint::Mutate, &review)
        .is_ok());
    let client = Arc::new(Client {
        addr: server.webhook_addr(),
        roots: RwLock::new(vec![old_ca.cert_pem().to_owned()]),
    });

    // Requests on fresh connections, alternating protocols, for the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let flow = {
        let (client, stop, review) = (client.clone(), stop.clone(), review.clone());
        tokio::spawn(async move {
            let (mut sent, mut failures, mut certs) = (0u32, Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let h2 = sent % 2 == 0;
                sent += 1;
                match client.review(h2, &review).await {
                    Ok((StatusCode::OK, cert)) => certs.push(cert),
                    Ok((status, _)) => failures.push(format!("HTTP {status}")),
                    Err(e) => failures.push(e),
                }
            }
            (sent, failures, certs)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Overlap window opens: trust both; then the volume switches to the new CA's pair.
    client
        .roots
        .write()
        .unwrap()
        .push(new_ca.cert_pem().to_owned());
    let (cert, key) = new_ca
        .issue("localhost", &names, now - DAY, now + 20 * DAY)
        .unwrap();
    let new_sha = sha256(
        CertificateDer::from_pem_slice(cert.as_bytes())
            .unwrap()
            .as_ref(),
    );
    volume.update(&cert, &key);
    tokio::time::timeout(PATIENCE, async {
        while client.review(true, &review).await.map(|r| r.1) != Ok(new_sha.clone()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the new certificate is served");
    assert_eq!(server.cert_sha256(), new_sha);

    // Overlap window closes: the new CA only.
    *client.roots.write().unwrap() = vec![new_ca.cert_pem().to_owned()];
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (sent, failures, certs) = tokio::time::timeout(PATIENCE, flow).await.unwrap().unwrap();
    assert!(failures.is_empty(), "no request failed: {failures:#?}");
    assert!(sent > 10, "requests flowed through the rotation ({sent})");
    assert!(certs.contains(&old_sha), "some requests before the switch");
    assert_eq!(
        certs.last(),
        Some(&new_sha),
        "the last ones on the new pair"
    );
    // Once the new certificate has been served, the old one never comes back.
    let first_new = certs.iter().position(|c| *c == new_sha).unwrap();
    assert!(certs[first_new..].iter().all(|c| *c == new_sha));

    let metrics = server.metrics().encode().unwrap();
    assert!(
        metrics.contains("portico_certificate_reloads_total{result=\"failed\"} 0"),
        "an atomic switch is never half-seen: {metrics}"
    );
    assert!(metrics.contains("portico_certificate_reloads_total{result=\"ok\"} 1"));
    server.shutdown().await;
}
