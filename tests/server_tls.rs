//! The webhook server over real TLS on loopback, driven by a real HTTP client (hyper over
//! tokio-rustls, trusting the test CA), HTTP/1.1 and HTTP/2 chosen by ALPN.
//!
//! Expected answers to review bodies come from calling `Webhook::answer` directly, so these tests
//! check the transport (status, body passed through verbatim) whatever the decision logic says;
//! decision tests live with the admission code. Every wait is bounded; everything is on
//! 127.0.0.1.

mod tls_hello;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tls_hello::legacy_client_hello;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::admission::{BadReview, Endpoint, Webhook};
use portico::config::Config;
use portico::server::certs::{write_pair, CertAuthority};
use portico::server::{self, tls, Limits, RunningServer, ServeOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const DAY: Duration = Duration::from_secs(86_400);
/// Upper bound for any single wait in these tests.
const PATIENCE: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/admission-reviews")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

const POD_CREATE: &str = "01-pod-create-user1.json";

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `check` every 20 ms until it returns `Some`, within [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A CA and the certificate files the server reads, in a temporary directory.
struct Certs {
    ca: CertAuthority,
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new() -> Self {
        let now = SystemTime::now();
        let ca = CertAuthority::new("portico test CA", now - DAY, now + 30 * DAY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = Self {
            ca,
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            _dir: dir,
        };
        let (cert, key) = certs.issue(now + 10 * DAY);
        certs.write(&cert, &key);
        certs
    }

    /// A fresh serving pair for `localhost` and `127.0.0.1`, expiring at `not_after`.
    fn issue(&self, not_after: SystemTime) -> (String, String) {
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        self.ca
            .issue("localhost", &names, SystemTime::now() - DAY, not_after)
            .unwrap()
    }

    fn write(&self, cert: &str, key: &str) {
        write_pair(&self.cert, &self.key, cert, key).unwrap();
    }
}

fn sha256_of_pem(cert_pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens connections to the server; cheap to clone into background tasks.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    roots: Arc<RootCertStore>,
}

/// One client connection, kept open across requests.
struct TestConn {
    sender: Sender,
    cert_sha256: String,
    alpn: Option<Vec<u8>>,
    authority: String,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Client {
    fn tls_config(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    async fn tls(&self, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(config).connect(name, tcp).await
    }

    /// A new connection speaking `version`, negotiated by ALPN.
    async fn connect(&self, version: Version) -> std::io::Result<TestConn> {
        let alpn: &[u8] = if version == Version::HTTP_2 {
            b"h2"
        } else {
            b"http/1.1"
        };
        let config = self.tls_config(&[alpn], &[&rustls::version::TLS13, &rustls::version::TLS12]);
        self.connect_with(config, version).await
    }

    async fn connect_with(
        &self,
        config: Arc<ClientConfig>,
        version: Version,
    ) -> std::io::Result<TestConn> {
        let tls = self.tls(config).await?;
        let (_, session) = tls.get_ref();
        let cert_sha256 = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| {
                Sha256::digest(leaf.as_ref())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .unwrap_or_default();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = if version == Version::HTTP_2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(TestConn {
            sender,
            cert_sha256,
            alpn,
            authority: format!("localhost:{}", self.addr.port()),
        })
    }

    async fn post(
        &self,
        path: &str,
        body: &[u8],
        content_type: Option<&str>,
        version: Version,
    ) -> Reply {
        let mut conn = within("connect", self.connect(version)).await.unwrap();
        within("request", conn.send(Method::POST, path, body, content_type))
            .await
            .unwrap()
    }
}

impl TestConn {
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<Reply, hyper::Error> {
        let mut builder = Request::builder().method(method);
        builder = match self.sender {
            // HTTP/2 takes :scheme and :authority from an absolute URI.
            Sender::H2(_) => builder.uri(format!("https://{}{path}", self.authority)),
            Sender::H1(_) => builder
                .uri(path)
                .header(http::header::HOST, &self.authority),
        };
        if let Some(content_type) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
        }
        let request = builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::H2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A server on 127.0.0.1:0 with its certificates and a client that trusts them.
struct TestServer {
    server: RunningServer,
    certs: Certs,
    client: Client,
    webhook: Webhook,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut ServeOptions)) -> Self {
        init_logs();
        let certs = Certs::new();
        let mut options = ServeOptions::new(&certs.cert, &certs.key);
        options.listen = "127.0.0.1:0".parse().unwrap();
        options.ops_listen = "127.0.0.1:0".parse().unwrap();
        options.cert_check_interval = Duration::from_millis(50);
        options.limits = Limits {
            shutdown_grace: Duration::from_secs(5),
            ..Limits::default()
        };
        adjust(&mut options);
        let webhook = Webhook::new(Config::default());
        let server = within("start", server::start(options, webhook.clone()))
            .await
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(certs.ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let client = Client {
            addr: server.webhook_addr(),
            roots: Arc::new(roots),
        };
        Self {
            server,
            certs,
            client,
            webhook,
        }
    }

    async fn post(
        &self,
        path: &str,
        body: &[u8],
        content_type: Option<&str>,
        version: Version,
    ) -> Reply {
        self.client.post(path, body, content_type, version).await
    }

    /// GET on the ops port, plain HTTP/1.1.
    async fn ops_get(&self, path: &str) -> Reply {
        ops_get(self.server.ops_addr(), path).await.unwrap()
    }

    /// The value of one series on `/metrics`, e.g.
    /// `portico_certificate_reloads_total{result="failed"}`.
    async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.ops_get("/metrics").await.body;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// What the server must answer to `body` on `endpoint`: (status, body or message).
    fn expected(&self, endpoint: Endpoint, body: &[u8]) -> (StatusCode, String) {
        match self.webhook.answer(endpoint, body) {
            Ok(answer) => (StatusCode::OK, String::from_utf8(answer.body).unwrap()),
            Err(bad) => (StatusCode::BAD_REQUEST, bad.to_string()),
        }
    }

    /// Asserts the reply is exactly what `Webhook::answer` gives for `body`.
    fn assert_answer(&self, endpoint: Endpoint, body: &[u8], reply: &Reply) {
        let (status, expected) = self.expected(endpoint, body);
        assert_eq!(reply.status, status, "reply: {}", reply.body);
        if status == StatusCode::OK {
            let got: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            let want: serde_json::Value = serde_json::from_str(&expected).unwrap();
            assert_eq!(got, want);
            assert_eq!(
                reply.headers[http::header::CONTENT_TYPE],
                "application/json"
            );
        } else {
            assert_eq!(reply.body.trim_end(), expected, "a 400 carries the reason");
        }
    }
}

async fn ops_get(
    addr: SocketAddr,
    path: &str,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))?;
    let response = within("ops request", sender.send_request(request)).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

const VERSIONS: [Version; 2] = [Version::HTTP_11, Version::HTTP_2];
const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn real_review_over_http1_and_http2() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    for version in VERSIONS {
        let mut conn = ts.client.connect(version).await.unwrap();
        let want_alpn: &[u8] = if version == Version::HTTP_2 {
            b"h2"
        } else {
            b"http/1.1"
        };
        assert_eq!(conn.alpn.as_deref(), Some(want_alpn));
        // Two requests on the same connection: keep-alive and stream reuse work.
        for endpoint in ["/mutate", "/validate"] {
            let reply = conn
                .send(Method::POST, endpoint, &review, JSON)
                .await
                .unwrap();
            let endpoint = if endpoint == "/mutate" {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            ts.assert_answer(endpoint, &review, &reply);
        }
    }
    // Every fixture goes through unharmed: the body reaching the webhook is the one sent.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission-reviews");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let body = std::fs::read(&path).unwrap();
            let reply = ts.post("/mutate", &body, JSON, Version::HTTP_2).await;
            ts.assert_answer(Endpoint::Mutate, &body, &reply);
        }
    }
    let mutate_requests = ts
        .ops_get("/metrics")
        .await
        .body
        .lines()
        .filter(|l| l.starts_with("portico_admission_requests_total{endpoint=\"mutate\""))
        .count();
    assert!(mutate_requests > 0, "admission requests are counted");
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_message() {
    let ts = TestServer::start().await;
    let bodies: [&[u8]; 6] = [
        b"",
        b"{not json",
        b"[]",
        b"null",
        b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
    ];
    for version in VERSIONS {
        for body in bodies {
            let reply = ts.post("/mutate", body, JSON, version).await;
            assert!(
                matches!(
                    ts.webhook.answer(Endpoint::Mutate, body),
                    Err(BadReview::NotJson(_) | BadReview::NotAReview(_))
                ),
                "{:?} is not a review",
                String::from_utf8_lossy(body)
            );
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
            assert!(!reply.body.trim().is_empty(), "a 400 says why");
            ts.assert_answer(Endpoint::Mutate, body, &reply);
        }
    }
    // The server is still there after all that.
    assert_eq!(ts.ops_get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn oversize_body_gets_413() {
    let ts = TestServer::start().await;
    let too_big = vec![b' '; server::MAX_BODY_BYTES + 1];
    // Exactly at the limit is read (and then judged as a review: whitespace is not one).
    let at_limit = vec![b' '; server::MAX_BODY_BYTES];
    for version in VERSIONS {
        let reply = ts.post("/mutate", &too_big, JSON, version).await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            reply.body
        );
        assert!(reply.body.contains("limit"), "{}", reply.body);
        let reply = ts.post("/validate", &at_limit, JSON, version).await;
        ts.assert_answer(Endpoint::Validate, &at_limit, &reply);
    }
    // Without a Content-Length (chunked): the limit is enforced while reading.
    let mut tls = raw_tls(&ts).await;
    let head = "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(format!("{:x}\r\n", too_big.len()).as_bytes())
        .await
        .unwrap();
    tls.write_all(&too_big).await.unwrap();
    tls.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = within("chunked 413", tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // A client that waits for `100 Continue` is told 413 without sending the body.
    let mut tls = raw_tls(&ts).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        100 * server::MAX_BODY_BYTES
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = within("expect-continue 413", tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    assert_eq!(
        ts.metric("portico_admission_requests_total{endpoint=\"mutate\",operation=\"\",kind=\"\",outcome=\"rejected\",reason=\"too-large\"}")
            .await,
        Some(3.0)
    );
}

#[tokio::test]
async fn wrong_method_and_path() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    for version in VERSIONS {
        let mut conn = ts.client.connect(version).await.unwrap();
        let reply = conn.send(Method::GET, "/mutate", b"", None).await.unwrap();
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.headers[http::header::ALLOW], "POST");
        assert!(reply.body.contains("POST"), "{}", reply.body);
        let reply = conn
            .send(Method::PUT, "/validate", &review, JSON)
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        for path in ["/", "/mutate/", "/nope", "/healthz"] {
            let reply = conn.send(Method::POST, path, &review, JSON).await.unwrap();
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
            assert!(reply.body.contains("/mutate"), "{}", reply.body);
        }
        // The apiserver appends `?timeout=3s`; the query does not change the endpoint.
        let reply = conn
            .send(Method::POST, "/validate?timeout=3s", &review, JSON)
            .await
            .unwrap();
        ts.assert_answer(Endpoint::Validate, &review, &reply);
        // The connection survives all of that.
        let reply = conn
            .send(Method::POST, "/mutate", &review, JSON)
            .await
            .unwrap();
        ts.assert_answer(Endpoint::Mutate, &review, &reply);
    }
}

#[tokio::test]
async fn content_type_must_be_json() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    for version in VERSIONS {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/yaml"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let reply = ts.post("/mutate", &review, content_type, version).await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}"
            );
            assert!(reply.body.contains("application/json"), "{}", reply.body);
        }
        for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
            let reply = ts
                .post("/mutate", &review, Some(content_type), version)
                .await;
            ts.assert_answer(Endpoint::Mutate, &review, &reply);
        }
    }
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused() {
    let ts = TestServer::start().await;
    for (name, version) in [("TLS 1.0", [3, 1]), ("TLS 1.1", [3, 2])] {
        let mut tcp = TcpStream::connect(ts.server.webhook_addr()).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let mut reply = Vec::new();
        // The server answers with an alert and closes; read until it does.
        let _ = within("legacy handshake", tcp.read_to_end(&mut reply)).await;
        assert!(
            reply.first() != Some(&0x16),
            "{name}: the server must not answer with a ServerHello: {reply:02x?}"
        );
        if !reply.is_empty() {
            // Alert record: type 21, then version, length 2, level fatal (2), protocol_version (70).
            // Alert record: type 21, then version and length, then level fatal (2) and a
            // description: rustls says handshake_failure (40); protocol_version (70) is also right.
            assert_eq!(reply[0], 0x15, "{name}: an alert record: {reply:02x?}");
            assert_eq!(reply[5], 2, "{name}: a fatal alert: {reply:02x?}");
            assert!([40, 70].contains(&reply[6]), "{name}: {reply:02x?}");
        }
    }
    // TLS 1.2 and 1.3 clients are served.
    for (name, versions) in [
        ("TLS 1.2", &rustls::version::TLS12),
        ("TLS 1.3", &rustls::version::TLS13),
    ] {
        let config = ts.client.tls_config(&[b"http/1.1"], &[versions]);
        let mut conn = ts
            .client
            .connect_with(config, Version::HTTP_11)
            .await
            .unwrap();
        let review = fixture(POD_CREATE);
        let reply = conn
            .send(Method::POST, "/mutate", &review, JSON)
            .await
            .unwrap();
        ts.assert_answer(Endpoint::Mutate, &review, &reply);
        let _ = name;
    }
}

#[tokio::test]
async fn certificate_replaced_on_disk_while_requests_flow() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    let (expected_status, _) = ts.expected(Endpoint::Mutate, &review);
    let old = ts.server.cert_sha256();
    let mut h1 = ts.client.connect(Version::HTTP_11).await.unwrap();
    let mut h2 = ts.client.connect(Version::HTTP_2).await.unwrap();
    assert_eq!(h1.cert_sha256, old);

    // Requests on fresh connections, both protocols, all through the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let flow = {
        let (client, stop, review) = (ts.client.clone(), stop.clone(), review.clone());
        tokio::spawn(async move {
            let (mut sent, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for version in VERSIONS {
                    sent += 1;
                    match client.connect(version).await {
                        Ok(mut conn) => {
                            match conn.send(Method::POST, "/mutate", &review, JSON).await {
                                Ok(reply) if reply.status == expected_status => {}
                                Ok(reply) => failures
                                    .push(format!("{version:?}: {} {}", reply.status, reply.body)),
                                Err(e) => failures.push(format!("{version:?}: request: {e}")),
                            }
                        }
                        Err(e) => failures.push(format!("{version:?}: connect: {e}")),
                    }
                }
            }
            (sent, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (cert, key) = ts.certs.issue(SystemTime::now() + 20 * DAY);
    let new = sha256_of_pem(&cert);
    ts.certs.write(&cert, &key);
    eventually("new connections get the new certificate", || async {
        let conn = ts.client.connect(Version::HTTP_11).await.ok()?;
        (conn.cert_sha256 == new).then_some(())
    })
    .await;
    assert_eq!(ts.server.cert_sha256(), new);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let (sent, failures) = within("request flow", flow).await.unwrap();
    assert!(sent > 2, "requests flowed during the swap ({sent})");
    assert!(failures.is_empty(), "no request failed: {failures:#?}");

    // Connections opened before the swap are kept, still on the old certificate.
    for conn in [&mut h1, &mut h2] {
        assert_eq!(conn.cert_sha256, old);
        let reply = conn
            .send(Method::POST, "/mutate", &review, JSON)
            .await
            .unwrap();
        ts.assert_answer(Endpoint::Mutate, &review, &reply);
    }
    let ok = ts
        .metric("portico_certificate_reloads_total{result=\"ok\"}")
        .await;
    assert!(ok.is_some_and(|n| n >= 1.0), "{ok:?}");
    let left = ts
        .metric("portico_certificate_expiry_seconds")
        .await
        .unwrap();
    assert!(
        left > 19.0 * 86_400.0,
        "the gauge follows the new certificate: {left}"
    );
}

#[tokio::test]
async fn broken_new_pair_keeps_the_old_one_and_is_counted() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    let good = ts.server.cert_sha256();
    let failed = "portico_certificate_reloads_total{result=\"failed\"}";
    assert_eq!(ts.metric(failed).await, Some(0.0));

    let (cert_a, _) = ts.certs.issue(SystemTime::now() + 10 * DAY);
    let (_, key_b) = ts.certs.issue(SystemTime::now() + 10 * DAY);
    let (expired_cert, expired_key) = ts.certs.issue(SystemTime::now() - DAY);
    let (valid_cert, _) = ts.certs.issue(SystemTime::now() + DAY);
    let breakages: [(&str, String, String); 4] = [
        ("mismatched key", cert_a, key_b.clone()),
        ("expired certificate", expired_cert, expired_key),
        (
            "garbage certificate",
            "not a certificate\n".into(),
            key_b.clone(),
        ),
        (
            "garbage key",
            valid_cert,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
        ),
    ];
    for (what, cert, key) in breakages {
        let before = ts.metric(failed).await.unwrap();
        ts.certs.write(&cert, &key);
        eventually(what, || async {
            let now = ts.metric(failed).await?;
            (now > before).then_some(())
        })
        .await;
        // Let a poll see the final state of both files, then check nothing changed for clients.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            ts.server.cert_sha256(),
            good,
            "{what}: the last good pair stays"
        );
        let mut conn = ts.client.connect(Version::HTTP_2).await.unwrap();
        assert_eq!(conn.cert_sha256, good, "{what}");
        let reply = conn
            .send(Method::POST, "/mutate", &review, JSON)
            .await
            .unwrap();
        ts.assert_answer(Endpoint::Mutate, &review, &reply);
        assert_eq!(ts.ops_get("/readyz").await.status, StatusCode::OK, "{what}");
    }

    // A good pair after the bad ones is taken.
    let (cert, key) = ts.certs.issue(SystemTime::now() + 10 * DAY);
    let new = sha256_of_pem(&cert);
    ts.certs.write(&cert, &key);
    eventually("recovery", || async {
        let conn = ts.client.connect(Version::HTTP_11).await.ok()?;
        (conn.cert_sha256 == new).then_some(())
    })
    .await;
}

#[tokio::test]
async fn start_fails_fast_naming_the_file() {
    init_logs();
    let certs = Certs::new();
    let webhook = Webhook::new(Config::default());
    let options = |cert: &PathBuf, key: &PathBuf| {
        let mut o = ServeOptions::new(cert, key);
        o.listen = "127.0.0.1:0".parse().unwrap();
        o.ops_listen = "127.0.0.1:0".parse().unwrap();
        o
    };
    let missing = certs.cert.with_file_name("missing.crt");
    let err = server::start(options(&missing, &certs.key), webhook.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");

    let (_, other_key) = certs.issue(SystemTime::now() + DAY);
    std::fs::write(&certs.key, other_key).unwrap();
    let err = server::start(options(&certs.cert, &certs.key), webhook.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            server::ServeError::Certificate(tls::CertLoadError::Mismatch { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tls.key"), "{err}");

    let (cert, key) = certs.issue(SystemTime::now() - DAY);
    certs.write(&cert, &key);
    let err = server::start(options(&certs.cert, &certs.key), webhook)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let ts = TestServer::start().await;
    // Families without series are not listed; make one review so the admission ones are.
    let review = fixture(POD_CREATE);
    ts.post("/mutate", &review, JSON, Version::HTTP_11).await;
    let health = ts.ops_get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(ts.ops_get("/readyz").await.status, StatusCode::OK);
    assert_eq!(ts.ops_get("/nope").await.status, StatusCode::NOT_FOUND);
    let metrics = ts.ops_get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    for family in [
        "portico_build_info{version=",
        "# TYPE portico_admission_requests counter",
        "# TYPE portico_admission_duration_seconds histogram",
        "portico_certificate_reloads_total{result=\"failed\"} 0",
        "portico_certificate_expiry_seconds ",
    ] {
        assert!(
            metrics.body.contains(family),
            "{family} in:\n{}",
            metrics.body
        );
    }
    let left = ts
        .metric("portico_certificate_expiry_seconds")
        .await
        .unwrap();
    assert!(left > 9.0 * 86_400.0 && left <= 10.0 * 86_400.0, "{left}");
}

/// A raw TLS connection for misbehaving-client tests (HTTP/1.1).
async fn raw_tls(ts: &TestServer) -> TlsStream<TcpStream> {
    let config = ts
        .client
        .tls_config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    ts.client.tls(config).await.unwrap()
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let ts = TestServer::start_with(|o| {
        o.limits.header_read_timeout = Duration::from_millis(300);
        o.limits.body_read_timeout = Duration::from_millis(300);
        o.limits.idle_timeout = Duration::from_millis(300);
    })
    .await;

    // Handshake done, then silence — with HTTP/2 by ALPN, and with no ALPN at all (the server
    // would sniff for the HTTP/2 preface): the connection is closed.
    for alpn in [vec![b"h2".to_vec()], vec![]] {
        let alpn: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
        let config = ts.client.tls_config(&alpn, &[&rustls::version::TLS13]);
        let mut tls = ts.client.tls(config).await.unwrap();
        let mut buf = Vec::new();
        let _ = within("idle connection closed", tls.read_to_end(&mut buf)).await;
    }

    // Headers that never finish: the connection is closed.
    let mut tls = raw_tls(&ts).await;
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = within("header timeout", tls.read_to_end(&mut buf)).await;

    // A body that never finishes: 408 and the connection is closed.
    let mut tls = raw_tls(&ts).await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = within("body timeout", tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request body not received"), "{text}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    let (expected_status, _) = ts.expected(Endpoint::Mutate, &review);
    let ops = ts.server.ops_addr();

    // A request whose body is only half sent when the shutdown starts.
    let mut tls = raw_tls(&ts).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = review.split_at(review.len() / 2);
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let handle = ts.server.shutdown_handle();
    let stopped = tokio::spawn(ts.server.wait());
    handle.shutdown();
    eventually("readyz fails while draining", || async {
        let reply = ops_get(ops, "/readyz").await.ok()?;
        (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    // New connections are refused once the listener is closed.
    eventually("listener closed", || async {
        TcpStream::connect(ts.client.addr).await.err().map(|_| ())
    })
    .await;

    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let _ = within("in-flight reply", tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with(&format!("HTTP/1.1 {}", expected_status.as_u16())),
        "{text}"
    );
    within("server stops", stopped).await.unwrap();
    assert!(
        ops_get(ops, "/healthz").await.is_err(),
        "ops port closed last"
    );
}

/// A tagged pod CREATE over real TLS, both protocols: the JSON Patch in the reply, applied with
/// the json-patch crate, gives the stamped pod; its second review yields no patch.
#[tokio::test]
async fn tagged_pod_is_stamped_over_tls_and_the_patch_applies() {
    use base64::Engine as _;
    let ts = TestServer::start().await;
    let mut review: serde_json::Value = serde_json::from_slice(&fixture(POD_CREATE)).unwrap();
    review["request"]["userInfo"]["username"] = serde_json::json!("alice@example.com");
    let object = &mut review["request"]["object"];
    object["metadata"]["annotations"] = serde_json::json!({"portico.dev/ipaddr": "notebook"});
    object["metadata"]["labels"]["jarvice-job-ipaddr"] = serde_json::json!("bob-notebook");
    for version in VERSIONS {
        let body = serde_json::to_vec(&review).unwrap();
        let reply = ts.post("/mutate", &body, JSON, version).await;
        assert_eq!(reply.status, StatusCode::OK);
        let answer: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let response = &answer["response"];
        assert_eq!(response["uid"], review["request"]["uid"]);
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut stored = review["request"]["object"].clone();
        json_patch::patch(&mut stored, &patch).unwrap();
        let labels = &stored["metadata"]["labels"];
        let route = labels["jarvice-job-ipaddr"].as_str().unwrap();
        let owner = labels["portico.dev/owner"].as_str().unwrap();
        assert!(owner.starts_with("alice_"), "{owner}");
        assert_eq!(route, format!("{owner}-notebook"));
        assert_eq!(labels["jarvice-pod0-job-ipaddr"], route);
        assert_eq!(
            stored["metadata"]["annotations"]["portico.dev/user"],
            "alice@example.com"
        );
        assert!(response["warnings"][0].as_str().unwrap().contains(route));
        let mut again = review.clone();
        again["request"]["object"] = stored;
        let reply = ts
            .post(
                "/mutate",
                &serde_json::to_vec(&again).unwrap(),
                JSON,
                version,
            )
            .await;
        let answer: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(answer["response"]["allowed"], true);
        assert!(
            answer["response"]["patch"].is_null(),
            "second review patched again"
        );
    }
}
