//! Hostile clients against the running webhook server (real TLS on loopback): each test sends
//! one kind of bad input or abusive connection pattern, checks the server's answer to it, and
//! then checks that the server still answers a good AdmissionReview correctly on fresh
//! HTTP/1.1 and HTTP/2 connections.
//!
//! Expected answers to review bodies come from calling `Webhook::answer` directly, so these tests
//! check that whatever arrives over the wire is judged exactly as the decision code judges it, and
//! that nothing a client sends can crash, hang or wedge the server. Timeouts are shortened through
//! `ServeOptions::limits`; every wait is bounded by [`PATIENCE`]; all traffic is on 127.0.0.1.

mod tls_hello;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tls_hello::legacy_client_hello;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use portico::server::certs::{write_pair, CertAuthority};
use portico::server::{self, Limits, RunningServer, ServeOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const DAY: Duration = Duration::from_secs(86_400);
/// Upper bound for any single wait in these tests.
const PATIENCE: Duration = Duration::from_secs(30);
const POD_CREATE: &str = "01-pod-create-user1.json";
const JSON: Option<&str> = Some("application/json");

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/admission-reviews")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
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

/// A reply as the client saw it.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: String,
}

/// A server on 127.0.0.1:0 with a client that trusts its CA.
struct TestServer {
    server: RunningServer,
    webhook: Webhook,
    roots: Arc<RootCertStore>,
    _dir: tempfile::TempDir,
}

/// Short timeouts so that the slow-client cases finish quickly.
fn short_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        shutdown_grace: Duration::from_secs(2),
        ..Limits::default()
    }
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(short_limits()).await
    }

    async fn start_with(limits: Limits) -> Self {
        init_logs();
        let now = SystemTime::now();
        let ca = CertAuthority::new("portico hostile-test CA", now - DAY, now + 30 * DAY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, key) = ca
            .issue("localhost", &names, now - DAY, now + 10 * DAY)
            .unwrap();
        write_pair(&cert_path, &key_path, &cert, &key).unwrap();
        let mut options = ServeOptions::new(&cert_path, &key_path);
        options.listen = "127.0.0.1:0".parse().unwrap();
        options.ops_listen = "127.0.0.1:0".parse().unwrap();
        options.limits = limits;
        let webhook = Webhook::new(Config::default());
        let server = within("start", server::start(options, webhook.clone()))
            .await
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        Self {
            server,
            webhook,
            roots: Arc::new(roots),
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.webhook_addr()
    }

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

    /// A TLS connection that has finished its handshake, ALPN `http/1.1`.
    async fn raw_tls(&self) -> TlsStream<TcpStream> {
        self.tls_with(&[b"http/1.1"]).await.unwrap()
    }

    async fn tls_with(&self, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        let config = self.tls_config(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12]);
        let tcp = TcpStream::connect(self.addr()).await?;
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(config).connect(name, tcp).await
    }

    /// POSTs `body` to `path` on a new connection with a real HTTP client.
    async fn post(
        &self,
        version: Version,
        path: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Reply {
        within("post", self.try_post(version, path, body, content_type))
            .await
            .unwrap_or_else(|e| panic!("{version:?} POST {path}: {e}"))
    }

    async fn try_post(
        &self,
        version: Version,
        path: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let h2 = version == Version::HTTP_2;
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let io = TokioIo::new(self.tls_with(&[alpn]).await?);
        let authority = format!("localhost:{}", self.addr().port());
        let mut builder = Request::builder().method(Method::POST);
        builder = if h2 {
            builder.uri(format!("https://{authority}{path}"))
        } else {
            builder.uri(path).header(http::header::HOST, &authority)
        };
        if let Some(content_type) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
        }
        let request = builder.body(Full::new(Bytes::copy_from_slice(body)))?;
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Asserts the reply is exactly what `Webhook::answer` gives for `body`.
    fn assert_answer(&self, endpoint: Endpoint, body: &[u8], reply: &Reply) {
        match self.webhook.answer(endpoint, body) {
            Ok(answer) => {
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                let got: Value = serde_json::from_str(&reply.body).unwrap();
                let want: Value = serde_json::from_slice(&answer.body).unwrap();
                assert_eq!(got, want);
            }
            Err(bad) => {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
                assert_eq!(reply.body.trim_end(), bad.to_string());
            }
        }
    }

    /// The check every case ends with: a real review on new HTTP/1.1 and HTTP/2 connections is
    /// answered correctly (same uid, same decision as the webhook's own answer).
    async fn still_serves(&self) {
        let review = fixture(POD_CREATE);
        let uid = fixture_json(POD_CREATE)["request"]["uid"].clone();
        for version in [Version::HTTP_11, Version::HTTP_2] {
            for (path, endpoint) in [
                ("/mutate", Endpoint::Mutate),
                ("/validate", Endpoint::Validate),
            ] {
                let reply = self.post(version, path, &review, JSON).await;
                self.assert_answer(endpoint, &review, &reply);
                let got: Value = serde_json::from_str(&reply.body).unwrap();
                assert_eq!(got["response"]["uid"], uid, "{version:?} {path}");
            }
        }
    }
}

/// Writes `bytes` on a fresh HTTP/1.1-over-TLS connection and reads until the server closes.
async fn raw_exchange(ts: &TestServer, bytes: &[u8]) -> String {
    let mut tls = ts.raw_tls().await;
    tls.write_all(bytes).await.unwrap();
    tls.flush().await.unwrap();
    read_until_closed(&mut tls).await
}

/// Reads until EOF or a reset (both mean the server closed); everything read, as text.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    within("server closes the connection", async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// An HTTP/1.1 request head plus body, asking the server to close afterwards.
fn http11(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `depth` nested arrays, built as text (a `serde_json::Value` this deep would itself recurse).
fn nested_arrays(depth: usize) -> String {
    let mut s = String::with_capacity(2 * depth);
    s.extend(std::iter::repeat_n('[', depth));
    s.extend(std::iter::repeat_n(']', depth));
    s
}

/// `depth` nested objects `{"a":{"a":…1…}}`, built as text.
fn nested_objects(depth: usize) -> String {
    let mut s = String::with_capacity(6 * depth);
    s.extend(std::iter::repeat_n("{\"a\":", depth));
    s.push('1');
    s.extend(std::iter::repeat_n('}', depth));
    s
}

/// The pod CREATE fixture as text with `marker`'s JSON value replaced by `replacement` (raw
/// text), so that hostile fragments can be placed anywhere in a real review.
fn pod_review_with(path: &[&str], replacement: &str) -> Vec<u8> {
    const MARKER: &str = "\"@@HOSTILE@@\"";
    let mut review = fixture_json(POD_CREATE);
    let mut at = &mut review;
    for key in path {
        if at.get(*key).is_none() {
            at[*key] = json!({});
        }
        at = &mut at[*key];
    }
    *at = json!("@@HOSTILE@@");
    serde_json::to_string(&review)
        .unwrap()
        .replacen(MARKER, replacement, 1)
        .into_bytes()
}

#[tokio::test]
async fn non_json_body_gets_400() {
    let ts = TestServer::start().await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        for body in [
            &b"hello"[..],
            b"<AdmissionReview/>",
            b"apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n",
            b"\x00\x01\x02\x03",
            b"",
        ] {
            let reply = ts.post(version, "/mutate", body, JSON).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
            assert!(reply.body.starts_with("body is not"), "{}", reply.body);
            ts.assert_answer(Endpoint::Mutate, body, &reply);
        }
    }
    ts.still_serves().await;
}

#[tokio::test]
async fn truncated_json_gets_400() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    // Without the trailing newline, so that every cut removes part of the document.
    let review = review.trim_ascii_end();
    // Cut at many points, including inside strings, numbers and escapes.
    let cuts: Vec<usize> = (1..40)
        .map(|i| review.len() * i / 40)
        .chain([1, review.len() - 1])
        .collect();
    for (i, cut) in cuts.into_iter().enumerate() {
        let body = &review[..cut];
        let version = if i % 2 == 0 {
            Version::HTTP_11
        } else {
            Version::HTTP_2
        };
        let reply = ts.post(version, "/validate", body, JSON).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "cut at {cut}");
        ts.assert_answer(Endpoint::Validate, body, &reply);
    }
    ts.still_serves().await;
}

/// 10,000 levels of nesting wherever a client can put them. Where the decoder expects a
/// specific shape the nesting is refused at its first bracket (400, or `allowed: false` inside
/// the review); where it skips a value it skips it without recursing. Either way no stack grows
/// with the depth, so neither the server nor the test's own direct call overflows.
#[tokio::test]
async fn deeply_nested_json_is_refused_without_overflowing() {
    let ts = TestServer::start().await;
    let depth = 10_000;
    let arrays = nested_arrays(depth);
    let objects = nested_objects(depth);
    let cases: Vec<(&str, Vec<u8>, Option<StatusCode>)> = vec![
        (
            "whole body",
            arrays.clone().into_bytes(),
            Some(StatusCode::BAD_REQUEST),
        ),
        (
            "whole body, objects",
            objects.clone().into_bytes(),
            Some(StatusCode::BAD_REQUEST),
        ),
        (
            "request",
            pod_review_with(&["request"], &objects),
            Some(StatusCode::BAD_REQUEST),
        ),
        (
            "userInfo",
            pod_review_with(&["request", "userInfo"], &arrays),
            Some(StatusCode::BAD_REQUEST),
        ),
        (
            "uid",
            pod_review_with(&["request", "uid"], &arrays),
            Some(StatusCode::BAD_REQUEST),
        ),
        // The object is kept raw and decoded per kind: refused inside the review.
        (
            "object",
            pod_review_with(&["request", "object"], &arrays),
            Some(StatusCode::OK),
        ),
        (
            "labels",
            pod_review_with(&["request", "object", "metadata", "labels"], &objects),
            Some(StatusCode::OK),
        ),
        (
            "a label value",
            pod_review_with(&["request", "object", "metadata", "labels", "x"], &arrays),
            Some(StatusCode::OK),
        ),
        // Fields no decision reads are skipped, however deep.
        (
            "object.spec",
            pod_review_with(&["request", "object", "spec"], &objects),
            Some(StatusCode::OK),
        ),
        (
            "unknown envelope field",
            pod_review_with(&["extra"], &arrays),
            Some(StatusCode::OK),
        ),
        (
            "100,000 levels in object.status",
            pod_review_with(&["request", "object", "status"], &nested_arrays(100_000)),
            Some(StatusCode::OK),
        ),
    ];
    for (what, body, status) in cases {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let reply = ts.post(version, "/mutate", &body, JSON).await;
            if let Some(status) = status {
                assert_eq!(reply.status, status, "{what}: {}", reply.body);
            }
            ts.assert_answer(Endpoint::Mutate, &body, &reply);
            if reply.status == StatusCode::OK {
                let got: Value = serde_json::from_str(&reply.body).unwrap();
                assert_eq!(
                    got["response"]["uid"],
                    fixture_json(POD_CREATE)["request"]["uid"],
                    "{what}"
                );
            }
        }
    }
    // Where the nesting replaces something the decision needs, the review is refused.
    for path in [
        &["request", "object"][..],
        &["request", "object", "metadata", "labels"],
    ] {
        let body = pod_review_with(path, &arrays);
        let answer = ts.webhook.answer(Endpoint::Mutate, &body).unwrap();
        let got: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(got["response"]["allowed"], false, "{path:?}");
        assert!(
            got["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot decide"),
            "{got}"
        );
    }
    ts.still_serves().await;
}

#[tokio::test]
async fn body_of_3_mib_plus_one_gets_413_and_3_mib_is_read() {
    let ts = TestServer::start_with(Limits {
        // A 3 MiB body through TLS in a debug build needs more than the short default here.
        body_read_timeout: Duration::from_secs(20),
        ..short_limits()
    })
    .await;
    // A real review padded with whitespace to exactly the limit is read and decided; one byte
    // more is refused before decoding.
    let review = fixture(POD_CREATE);
    let mut at_limit = review.clone();
    at_limit.resize(server::MAX_BODY_BYTES, b' ');
    let mut over = at_limit.clone();
    over.push(b' ');
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let reply = ts.post(version, "/mutate", &over, JSON).await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            reply.body
        );
        let reply = ts.post(version, "/mutate", &at_limit, JSON).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        ts.assert_answer(Endpoint::Mutate, &at_limit, &reply);
    }
    // A declared length far past the limit is refused without reading (or waiting for) a byte
    // of the body.
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        64 * server::MAX_BODY_BYTES
    );
    let text = raw_exchange(&ts, head.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    ts.still_serves().await;
}

#[tokio::test]
async fn wrong_content_type_gets_415() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    for version in [Version::HTTP_11, Version::HTTP_2] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/yaml"),
            Some("application/json-patch+json"),
            Some("multipart/form-data; boundary=x"),
            Some(""),
        ] {
            let reply = ts.post(version, "/mutate", &review, content_type).await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}: {}",
                reply.body
            );
        }
    }
    // A Content-Type that is not even ASCII.
    let mut request = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\xff\xfe\r\nConnection: close\r\n".to_vec();
    request.extend(format!("Content-Length: {}\r\n\r\n", review.len()).as_bytes());
    request.extend(&review);
    let text = raw_exchange(&ts, &request).await;
    assert!(text.starts_with("HTTP/1.1 415"), "{text}");
    ts.still_serves().await;
}

#[tokio::test]
async fn wrong_api_version_or_kind_gets_400() {
    let ts = TestServer::start().await;
    let base = fixture_json(POD_CREATE);
    let mut cases = Vec::new();
    for (field, value) in [
        ("apiVersion", json!("admission.k8s.io/v2")),
        ("apiVersion", json!("v1")),
        ("apiVersion", json!(1)),
        ("apiVersion", Value::Null),
        ("kind", json!("AdmissionRequest")),
        ("kind", json!("admissionreview")),
        ("kind", json!(["AdmissionReview"])),
        ("kind", Value::Null),
    ] {
        let mut review = base.clone();
        review[field] = value;
        cases.push(review);
    }
    for field in ["apiVersion", "kind"] {
        let mut review = base.clone();
        review.as_object_mut().unwrap().remove(field);
        cases.push(review);
    }
    for review in cases {
        let body = serde_json::to_vec(&review).unwrap();
        let reply = ts.post(Version::HTTP_2, "/mutate", &body, JSON).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{review}");
        assert!(
            reply
                .body
                .contains("not an admission.k8s.io/v1 AdmissionReview"),
            "{}",
            reply.body
        );
        ts.assert_answer(Endpoint::Mutate, &body, &reply);
    }
    ts.still_serves().await;
}

#[tokio::test]
async fn missing_or_malformed_request_gets_400() {
    let ts = TestServer::start().await;
    let base = fixture_json(POD_CREATE);
    let mut cases = Vec::new();
    let mut no_request = base.clone();
    no_request.as_object_mut().unwrap().remove("request");
    cases.push(no_request);
    for value in [
        Value::Null,
        json!({}),
        json!([]),
        json!("request"),
        json!(0),
    ] {
        let mut review = base.clone();
        review["request"] = value;
        cases.push(review);
    }
    // A request without the fields every apiserver sends.
    for field in ["uid", "operation"] {
        let mut review = base.clone();
        review["request"].as_object_mut().unwrap().remove(field);
        cases.push(review);
    }
    for review in cases {
        let body = serde_json::to_vec(&review).unwrap();
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let reply = ts.post(version, "/validate", &body, JSON).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{review}");
            ts.assert_answer(Endpoint::Validate, &body, &reply);
        }
    }
    ts.still_serves().await;
}

/// `kind` says Pod but `object` is something else: the review is answered, never with a patch
/// built from the wrong shape; where the object cannot be read as the kind, `allowed: false`.
#[tokio::test]
async fn object_that_is_not_a_pod_is_answered_inside_the_review() {
    let ts = TestServer::start().await;
    let base = fixture_json(POD_CREATE);
    let uid = base["request"]["uid"].clone();
    let refused = [
        json!("a pod"),
        json!(42),
        json!([{"metadata": {}}]),
        json!(true),
        json!({"metadata": "name"}),
        json!({"metadata": {"labels": ["jarvice-job-ipaddr"]}}),
        json!({"metadata": {"labels": {"jarvice-job-ipaddr": 7}}}),
        json!({"metadata": {"annotations": {"portico.dev/ipaddr": {"tag": "x"}}}}),
        json!({"metadata": {"ownerReferences": {"kind": "Job"}}}),
    ];
    for object in refused {
        let mut review = base.clone();
        review["request"]["object"] = object.clone();
        let body = serde_json::to_vec(&review).unwrap();
        let reply = ts.post(Version::HTTP_11, "/mutate", &body, JSON).await;
        assert_eq!(reply.status, StatusCode::OK, "{object}: {}", reply.body);
        let got: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(got["response"]["uid"], uid, "{object}");
        assert_eq!(got["response"]["allowed"], false, "{object}: {got}");
        assert!(got["response"]["patch"].is_null(), "{object}");
        ts.assert_answer(Endpoint::Mutate, &body, &reply);
    }
    // Objects of another kind under `kind: Pod` (a Service, a ConfigMap, a bare `{}`): judged by
    // their metadata like any pod; a tag on them is stamped for the requester only.
    for object in [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"jarvice-job-ipaddr": "user2-x"}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": {"portico.dev/ipaddr": "web"}}, "data": {"k": "v"}}),
        json!({}),
    ] {
        let mut review = base.clone();
        review["request"]["object"] = object.clone();
        let body = serde_json::to_vec(&review).unwrap();
        let reply = ts.post(Version::HTTP_2, "/mutate", &body, JSON).await;
        assert_eq!(reply.status, StatusCode::OK, "{object}");
        ts.assert_answer(Endpoint::Mutate, &body, &reply);
        let got: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(got["response"]["uid"], uid, "{object}");
        if let Some(route) = got["response"]["auditAnnotations"]["route"].as_str() {
            assert_eq!(route, format!("{}-web", prefix_of_requester()), "{object}");
        }
    }
    ts.still_serves().await;
}

/// The prefix of the fixture's requester (`user1`), as the webhook encodes it.
fn prefix_of_requester() -> String {
    portico::core::Policy::new(Config::default())
        .prefix_for("user1")
        .expect("encodable")
        .as_str()
        .to_owned()
}

/// Unknown fields at every level change nothing: the answer equals the answer to the clean
/// review.
#[tokio::test]
async fn unknown_fields_are_ignored() {
    let ts = TestServer::start().await;
    let mut clean = fixture_json(POD_CREATE);
    clean["request"]["object"]["metadata"]["annotations"] = json!({"portico.dev/ipaddr": "web"});
    let mut noisy = clean.clone();
    noisy["surprise"] = json!({"nested": [1, 2, {"x": null}]});
    noisy["request"]["surprise"] = json!(true);
    noisy["request"]["userInfo"]["surprise"] = json!("x");
    noisy["request"]["kind"]["surprise"] = json!(1.5e300);
    noisy["request"]["object"]["surprise"] = json!([]);
    noisy["request"]["object"]["metadata"]["surprise"] =
        json!({"labels": {"jarvice-job-ipaddr": "someone-else"}});
    let clean_body = serde_json::to_vec(&clean).unwrap();
    let noisy_body = serde_json::to_vec(&noisy).unwrap();
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let a = ts.post(version, "/mutate", &clean_body, JSON).await;
        let b = ts.post(version, "/mutate", &noisy_body, JSON).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let a: Value = serde_json::from_str(&a.body).unwrap();
        let b: Value = serde_json::from_str(&b.body).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["response"]["allowed"], true);
        assert!(
            a["response"]["patch"].is_string(),
            "the tag is stamped: {a}"
        );
    }
    ts.still_serves().await;
}

/// Duplicate keys: in the envelope a 400 (`duplicate field`); in an object's metadata the review
/// is refused; in a label map the last value counts — as in the apiserver's decoder — and the
/// patch makes the stored object carry the requester's own route value whatever came first.
#[tokio::test]
async fn duplicate_keys() {
    let ts = TestServer::start().await;
    let base = serde_json::to_string(&fixture_json(POD_CREATE)).unwrap();
    let uid = fixture_json(POD_CREATE)["request"]["uid"].clone();
    let envelope = [
        base.replacen(
            "\"request\":",
            "\"request\":{\"uid\":\"other\",\"operation\":\"CREATE\"},\"request\":",
            1,
        ),
        // The request's own uid (other objects in the review have a `uid` too).
        base.replacen(
            &format!("\"uid\":{uid}"),
            &format!("\"uid\":\"other\",\"uid\":{uid}"),
            1,
        ),
        base.replacen(
            "\"kind\":\"AdmissionReview\"",
            "\"kind\":\"AdmissionReview\",\"kind\":\"AdmissionReview\"",
            1,
        ),
        base.replacen(
            "\"userInfo\":",
            "\"userInfo\":{\"username\":\"user2\"},\"userInfo\":",
            1,
        ),
    ];
    for body in envelope {
        assert_ne!(body, base, "the duplicate was inserted");
        let reply = ts
            .post(Version::HTTP_11, "/mutate", body.as_bytes(), JSON)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert!(reply.body.contains("duplicate field"), "{}", reply.body);
        ts.assert_answer(Endpoint::Mutate, body.as_bytes(), &reply);
    }

    // Two `metadata` objects in the pod: refused inside the review.
    let body = pod_review_with(
        &["request", "object", "spec"],
        "{},\"metadata\":{\"labels\":{\"jarvice-job-ipaddr\":\"user2-x\"}}",
    );
    let reply = ts.post(Version::HTTP_2, "/mutate", &body, JSON).await;
    let got: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(got["response"]["uid"], uid);
    assert_eq!(got["response"]["allowed"], false, "{got}");

    // A label repeated with a forged value first, then last.
    let requester = prefix_of_requester();
    for labels in [
        "{\"jarvice-job-ipaddr\":\"user2-web\",\"jarvice-job-ipaddr\":\"web\"}",
        "{\"jarvice-job-ipaddr\":\"web\",\"jarvice-job-ipaddr\":\"user2-web\"}",
        "{\"portico.dev/owner\":\"user2\",\"portico.dev/owner\":\"user2\",\"jarvice-job-ipaddr\":\"web\"}",
    ] {
        let mut review = fixture_json(POD_CREATE);
        review["request"]["object"]["metadata"]["annotations"] =
            json!({"portico.dev/ipaddr": "web"});
        review["request"]["object"]["metadata"]["labels"] = json!("@@LABELS@@");
        let body = serde_json::to_string(&review)
            .unwrap()
            .replacen("\"@@LABELS@@\"", labels, 1);
        let reply = ts.post(Version::HTTP_11, "/mutate", body.as_bytes(), JSON).await;
        ts.assert_answer(Endpoint::Mutate, body.as_bytes(), &reply);
        let got: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(got["response"]["uid"], uid);
        if got["response"]["allowed"] == true {
            // The object as the apiserver holds it (last value wins), patched.
            let parsed: Value = serde_json::from_str(&body).unwrap();
            let mut stored = parsed["request"]["object"].clone();
            if let Some(patch) = got["response"]["patch"].as_str() {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
                json_patch::patch(&mut stored, &patch).unwrap();
            }
            let labels = &stored["metadata"]["labels"];
            assert_eq!(labels["jarvice-job-ipaddr"], format!("{requester}-web"), "{labels}");
            assert_eq!(labels["portico.dev/owner"], requester.as_str(), "{labels}");
        }
    }
    ts.still_serves().await;
}

#[tokio::test]
async fn invalid_utf8_and_lone_surrogates_get_400() {
    let ts = TestServer::start().await;
    let base = serde_json::to_string(&fixture_json(POD_CREATE)).unwrap();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // Raw invalid UTF-8 inside strings the decoder reads, and inside ones it skips.
    for (needle, bad) in [
        ("\"user1\"", &b"\"user\xff1\""[..]),
        ("\"busybox\"", b"\"busy\xc3\x28box\""),
        ("\"CREATE\"", b"\"CRE\xed\xa0\x80ATE\""),
        ("\"Pod\"", b"\"P\xf0\x28\x8c\x28od\""),
    ] {
        let text = base.replacen(needle, "\"@@BAD@@\"", 1);
        assert_ne!(text, base, "{needle} in the fixture");
        let (head, tail) = text.split_once("\"@@BAD@@\"").unwrap();
        let mut body = head.as_bytes().to_vec();
        body.extend_from_slice(bad);
        body.extend_from_slice(tail.as_bytes());
        cases.push(body);
    }
    // Escaped lone surrogates in the user name.
    cases.push(
        base.replacen("\"user1\"", "\"user\\ud8001\"", 1)
            .into_bytes(),
    );
    cases.push(base.replacen("\"user1\"", "\"\\udfff\"", 1).into_bytes());
    for body in cases {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let reply = ts.post(version, "/mutate", &body, JSON).await;
            ts.assert_answer(Endpoint::Mutate, &body, &reply);
            if reply.status == StatusCode::OK {
                // Only bytes in a field nobody reads may pass; they must not change the decision.
                let got: Value = serde_json::from_str(&reply.body).unwrap();
                assert_eq!(
                    got["response"]["uid"],
                    fixture_json(POD_CREATE)["request"]["uid"]
                );
            } else {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
            }
        }
    }
    // Every case that touches a field the decision reads is a 400.
    let user = base.replacen("\"user1\"", "\"user\\ud8001\"", 1);
    assert!(ts
        .webhook
        .answer(Endpoint::Mutate, user.as_bytes())
        .is_err());
    ts.still_serves().await;
}

#[tokio::test]
async fn http_1_0_is_answered_and_closed() {
    let ts = TestServer::start().await;
    let review = fixture(POD_CREATE);
    let mut request = format!(
        "POST /mutate HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    )
    .into_bytes();
    request.extend(&review);
    // No `Connection: close` needed: HTTP/1.0 closes after one exchange by default.
    let text = raw_exchange(&ts, &request).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    ts.assert_answer(
        Endpoint::Mutate,
        &review,
        &Reply {
            status: StatusCode::OK,
            body: body.to_owned(),
        },
    );
    // HTTP/1.0 without a Content-Length (body ends at close) is not accepted as a request body
    // the server would wait forever on: it gets an answer or a close, never a hang.
    let mut tls = ts.raw_tls().await;
    tls.write_all(
        b"POST /mutate HTTP/1.0\r\nContent-Type: application/json\r\n\r\n{\"apiVersion\":",
    )
    .await
    .unwrap();
    let text = read_until_closed(&mut tls).await;
    assert!(text.is_empty() || text.starts_with("HTTP/1."), "{text}");
    ts.still_serves().await;
}

/// A slow-loris client sends its request head one byte at a time, slower than any real client
/// but never stopping: the header timeout closes the connection long before the head is done.
#[tokio::test]
async fn headers_sent_byte_by_byte_are_cut_off() {
    let ts = TestServer::start().await;
    let mut head =
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".to_vec();
    for i in 0..200 {
        head.extend(format!("X-Slow-{i}: {}\r\n", "a".repeat(20)).as_bytes());
    }
    head.extend(b"\r\n");
    // Sending it all would take 30 ms × several thousand bytes: minutes.
    let total = head.len();
    let mut open = Vec::new();
    for _ in 0..8 {
        let tls = ts.raw_tls().await;
        let (mut read, mut write) = tokio::io::split(tls);
        let head = head.clone();
        let writer = tokio::spawn(async move {
            let mut sent = 0usize;
            for byte in head {
                if write.write_all(&[byte]).await.is_err() || write.flush().await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            sent
        });
        let reader = tokio::spawn(async move { read_until_closed(&mut read).await });
        open.push((writer, reader));
    }
    // While the slow clients dribble, others are served.
    ts.still_serves().await;
    for (writer, reader) in open {
        let text = within("slow loris closed", reader).await.unwrap();
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "no answer but a timeout: {text}"
        );
        writer.abort();
        let sent = writer.await.unwrap_or_default();
        assert!(sent < total, "the whole head ({total} bytes) got through");
    }
    ts.still_serves().await;
}

/// Clients that connect and never say anything (not even a ClientHello), and clients that
/// finish the TLS handshake and then say nothing: both are closed by the server's timeouts,
/// and good clients are served meanwhile.
#[tokio::test]
async fn silent_connections_are_closed() {
    let ts = TestServer::start().await;
    let mut silent_tcp = Vec::new();
    for _ in 0..50 {
        silent_tcp.push(TcpStream::connect(ts.addr()).await.unwrap());
    }
    let mut silent_tls = Vec::new();
    for alpn in [&b"h2"[..], b"http/1.1"] {
        for _ in 0..10 {
            silent_tls.push(ts.tls_with(&[alpn]).await.unwrap());
        }
    }
    ts.still_serves().await;
    for mut tcp in silent_tcp {
        let text = read_until_closed(&mut tcp).await;
        assert!(
            text.is_empty(),
            "nothing is sent to a client that sent nothing"
        );
    }
    for mut tls in silent_tls {
        read_until_closed(&mut tls).await;
    }
    ts.still_serves().await;
}

#[tokio::test]
async fn garbage_before_the_tls_handshake_is_dropped() {
    let ts = TestServer::start().await;
    let mut noise = Vec::new();
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..4096 {
        // xorshift: deterministic bytes, no dependency.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let cases: Vec<Vec<u8>> = vec![
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        noise.clone(),
        // A handshake record header announcing more than a record may hold.
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00],
        // A well-framed handshake record that holds garbage.
        [vec![0x16, 0x03, 0x01, 0x00, 0x40], noise[..0x40].to_vec()].concat(),
        // Garbage, then a real ClientHello would follow: the garbage already ended it.
        [noise[..16].to_vec(), legacy_client_hello([3, 3])].concat(),
        // An alert before any handshake.
        vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
    ];
    for bytes in cases {
        let mut tcp = TcpStream::connect(ts.addr()).await.unwrap();
        // The server may close while we are still writing; that is fine.
        let _ = tcp.write_all(&bytes).await;
        let reply = read_until_closed(&mut tcp).await;
        let reply = reply.as_bytes();
        assert!(
            reply.first() != Some(&0x16),
            "no ServerHello to garbage: {:02x?}",
            &reply[..reply.len().min(16)]
        );
        assert!(
            !String::from_utf8_lossy(reply).contains("HTTP/"),
            "no plain HTTP answer"
        );
    }
    ts.still_serves().await;
}

#[tokio::test]
async fn tls_1_0_and_1_1_get_an_alert() {
    let ts = TestServer::start().await;
    for version in [[3, 1], [3, 2]] {
        let mut tcp = TcpStream::connect(ts.addr()).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let reply = read_until_closed(&mut tcp).await.into_bytes();
        assert!(reply.first() != Some(&0x16), "no ServerHello: {reply:02x?}");
        if !reply.is_empty() {
            assert_eq!(reply[0], 0x15, "an alert record: {reply:02x?}");
            assert_eq!(reply[5], 2, "fatal: {reply:02x?}");
        }
    }
    ts.still_serves().await;
}

/// Raises this process's soft limit on open files to `wanted` (up to the hard limit) and says
/// what it is now: 2,000 client sockets plus the server's 2,000 live in this one process.
fn raise_fd_limit(wanted: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return soft;
    }
    let target = current.maximum.map_or(wanted, |hard| hard.min(wanted));
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: current.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// 2,000 connections open at once, each past its TLS handshake and then idle: all are accepted,
/// and the server keeps answering good reviews while they are open and after they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections() {
    const IDLE: usize = 2_000;
    let limit = raise_fd_limit(2 * IDLE as u64 + 512);
    assert!(
        // Both ends of 2,000 connections, plus a margin for the rest of this binary's tests
        // (a 4,096 hard limit, common on CI machines, is enough).
        limit >= 2 * IDLE as u64 + 64,
        "this test needs {} open files; the hard limit allows {limit}",
        2 * IDLE + 64
    );
    let ts = TestServer::start_with(Limits {
        // Long enough that none of the 2,000 is closed for idleness while the rest open.
        handshake_timeout: Duration::from_secs(20),
        // HTTP/1 keeps an idle connection only as long as the header timeout.
        header_read_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(120),
        // Above the 2,000: this test is about what each open connection costs, not the cap
        // (tests/connection_cap.rs is about the cap).
        max_connections: 2 * IDLE,
        ..short_limits()
    })
    .await;
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        // A mix of protocols; each one a finished handshake that then says nothing.
        let alpn: &[u8] = if i % 2 == 0 { b"h2" } else { b"http/1.1" };
        let tls = within("idle connection", ts.tls_with(&[alpn]))
            .await
            .unwrap_or_else(|e| panic!("connection {i} of {IDLE}: {e}"));
        idle.push(tls);
    }
    ts.still_serves().await;
    // Every idle connection is still open (not reset to make room): a request on a sample of
    // them is answered.
    let review = fixture(POD_CREATE);
    for tls in idle.iter_mut().skip(1).step_by(IDLE / 20) {
        tls.write_all(&http11("/mutate", "application/json", &review))
            .await
            .unwrap();
        let text = read_until_closed(tls).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    drop(idle);
    ts.still_serves().await;
}

// ---------------------------------------------------------------------------------------------
// The service API's port (`serve --api`): the same abuse, answered by the API's own listener
// without taking the webhook down. The API's cluster is unreachable on purpose: nothing below
// may need it, since every refusal comes before the API would call the cluster.

const API_TOKEN: &str = "hostile-suite-token";

/// A webhook and a service API beside it in one process, as `portico serve --api` runs them.
struct TestApi {
    hook: TestServer,
    api: portico::service_api::RunningApi,
}

impl TestApi {
    async fn start() -> Self {
        let hook = TestServer::start().await;
        let dir = hook._dir.path();
        let token = dir.join("api.token");
        std::fs::write(&token, format!("{API_TOKEN}\n")).unwrap();
        let mut config = Config::default();
        config.identity.trusted_submitters.users = vec!["portal".into()];
        config.api.clients = vec![portico::service_api::config::ApiClient {
            name: "portal".into(),
            token_file: Some(token.display().to_string()),
            namespace: "team".into(),
            ..Default::default()
        }];
        config.api.max_body_bytes = 64 * 1024;
        let mut opts =
            portico::service_api::ApiOptions::new(dir.join("tls.crt"), dir.join("tls.key"));
        opts.listen = "127.0.0.1:0".parse().unwrap();
        opts.handshake_timeout = Duration::from_millis(500);
        opts.header_read_timeout = Duration::from_millis(500);
        opts.idle_timeout = Duration::from_millis(800);
        opts.body_read_timeout = Duration::from_millis(500);
        // A cluster address nothing listens on.
        let kube_config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let kube = kube::Client::try_from(kube_config).unwrap();
        let api = within(
            "api start",
            portico::service_api::start(opts, Arc::new(config), kube),
        )
        .await
        .unwrap();
        Self { hook, api }
    }

    fn addr(&self) -> SocketAddr {
        self.api.addr()
    }

    async fn tls_with(&self, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        let config = self
            .hook
            .tls_config(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12]);
        let tcp = TcpStream::connect(self.addr()).await?;
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(config).connect(name, tcp).await
    }

    /// One request on a new connection; `token` adds `Authorization: Bearer`.
    async fn request(
        &self,
        version: Version,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Reply {
        within("api request", async {
            let h2 = version == Version::HTTP_2;
            let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
            let io = TokioIo::new(self.tls_with(&[alpn]).await.unwrap());
            let authority = format!("localhost:{}", self.addr().port());
            let mut builder = Request::builder().method(method);
            builder = if h2 {
                builder.uri(format!("https://{authority}{path}"))
            } else {
                builder.uri(path).header(http::header::HOST, &authority)
            };
            for (k, v) in headers {
                builder = builder.header(*k, http::HeaderValue::from_bytes(v).unwrap());
            }
            let request = builder
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap();
            let response = if h2 {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                sender.send_request(request).await.unwrap()
            } else {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                sender.send_request(request).await.unwrap()
            };
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
        .await
    }

    /// The check every API case ends with: the API answers on new HTTP/1.1 and HTTP/2
    /// connections (401 without credentials, 404 for a name no service can have), and the
    /// webhook beside it still answers reviews.
    async fn still_serves(&self) {
        let auth = format!("Bearer {API_TOKEN}");
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let r = self
                .request(version, Method::GET, "/api/services/x/", &[], b"")
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{version:?}: {}",
                r.body
            );
            let r = self
                .request(
                    version,
                    Method::GET,
                    "/api/services/NOT_A_NAME/",
                    &[("authorization", auth.as_bytes())],
                    b"",
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{version:?}: {}", r.body);
        }
        self.hook.still_serves().await;
    }
}

/// What is sent (a name for it, headers, body) and the status it must get.
type HostileCase<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, Vec<u8>, StatusCode);

#[tokio::test]
async fn api_hostile_requests_are_refused_before_the_cluster_is_asked() {
    let t = TestApi::start().await;
    let auth = format!("Bearer {API_TOKEN}");
    let authed: Vec<(&str, &[u8])> = vec![
        ("authorization", auth.as_bytes()),
        ("uuidcode", b"svc-1"),
        ("content-type", b"application/json"),
    ];
    // As deep as fits under the body limit: far past serde_json's recursion limit.
    let deep = nested_arrays(10_000);
    let deep_objects = nested_objects(10_000);
    let cases: Vec<HostileCase> = vec![
        (
            "not JSON",
            authed.clone(),
            b"\x00\xffnot json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "truncated",
            authed.clone(),
            br#"{"start_id": "1", "env": {"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "deep arrays",
            authed.clone(),
            format!(r#"{{"start_id": "1", "user_options": {deep}}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "deep objects",
            authed.clone(),
            format!(r#"{{"start_id": "1", "user_options": {deep_objects}}}"#).into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "too large",
            authed.clone(),
            vec![b' '; 64 * 1024 + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "no credentials",
            vec![("uuidcode", b"svc-1")],
            vec![b'{'; 1024],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong token",
            vec![("authorization", b"Bearer nope"), ("uuidcode", b"svc-1")],
            b"{}".to_vec(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "token with inner space",
            vec![("authorization", b"Bearer hostile-suite -token")],
            b"{}".to_vec(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "non-ASCII user header",
            {
                let mut h = authed.clone();
                h.push(("user-id", b"\xff\xfe"));
                h
            },
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad service name",
            {
                let mut h = authed.clone();
                h[1] = ("uuidcode", b"../../etc");
                h
            },
            br#"{"start_id": "1", "env": {"JUPYTERHUB_USER": "a"}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad start_id",
            authed.clone(),
            br#"{"start_id": "a b", "env": {"JUPYTERHUB_USER": "a"}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "user id naming a namespace",
            authed.clone(),
            br#"{"start_id": "1", "env": {"JUPYTERHUB_USER": "a b"}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for version in [Version::HTTP_11, Version::HTTP_2] {
        for (what, headers, body, want) in &cases {
            let r = t
                .request(version, Method::POST, "/api/services/", headers, body)
                .await;
            assert_eq!(r.status, *want, "{version:?} {what}: {}", r.body);
            let json: Value = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", r.body));
            assert!(
                json["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {json}"
            );
        }
    }
    t.still_serves().await;
}

#[tokio::test]
async fn api_garbage_before_tls_and_old_tls_versions_are_dropped() {
    let t = TestApi::start().await;
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_closed(&mut tcp).await;
    assert!(!reply.contains("HTTP/1.1 200"), "{reply}");
    for version in [[3, 1], [3, 2]] {
        let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let reply = read_until_closed(&mut tcp).await.into_bytes();
        assert!(reply.first() != Some(&0x16), "no ServerHello: {reply:02x?}");
    }
    t.still_serves().await;
}

#[tokio::test]
async fn api_headers_sent_byte_by_byte_and_silent_connections_are_cut_off() {
    let t = TestApi::start().await;
    let mut head = b"POST /api/services/ HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..200 {
        head.extend(format!("X-Slow-{i}: {}\r\n", "a".repeat(20)).as_bytes());
    }
    head.extend(b"\r\n");
    let total = head.len();
    let mut slow = Vec::new();
    for _ in 0..8 {
        let tls = t.tls_with(&[b"http/1.1"]).await.unwrap();
        let (mut read, mut write) = tokio::io::split(tls);
        let head = head.clone();
        let writer = tokio::spawn(async move {
            let mut sent = 0usize;
            for byte in head {
                if write.write_all(&[byte]).await.is_err() || write.flush().await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            sent
        });
        let reader = tokio::spawn(async move { read_until_closed(&mut read).await });
        slow.push((writer, reader));
    }
    // Connections that finish TLS (either protocol) and say nothing, and one that never even
    // sends a ClientHello.
    let mut silent = Vec::new();
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        for _ in 0..4 {
            silent.push(t.tls_with(&[alpn]).await.unwrap());
        }
    }
    let mut bare = TcpStream::connect(t.addr()).await.unwrap();
    t.still_serves().await;
    for (writer, reader) in slow {
        let text = within("slow client closed", reader).await.unwrap();
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "no answer but a timeout: {text}"
        );
        writer.abort();
        let sent = writer.await.unwrap_or_default();
        assert!(sent < total, "the whole head ({total} bytes) got through");
    }
    for mut tls in silent {
        read_until_closed(&mut tls).await;
    }
    read_until_closed(&mut bare).await;
    t.still_serves().await;
}

#[tokio::test]
async fn api_a_body_sent_byte_by_byte_gets_408() {
    let t = TestApi::start().await;
    let body = br#"{"start_id": "1", "env": {"JUPYTERHUB_USER": "alice"}}"#.repeat(20);
    let head = format!(
        "POST /api/services/ HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {API_TOKEN}\r\nuuidcode: svc-1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let tls = t.tls_with(&[b"http/1.1"]).await.unwrap();
    let (mut read, mut write) = tokio::io::split(tls);
    write.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for byte in body {
            if write.write_all(&[byte]).await.is_err() || write.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let text = within("an answer to the slow body", async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    })
    .await;
    writer.abort();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    t.still_serves().await;
}
