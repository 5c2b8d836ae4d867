//! The per-listener connection caps against the running servers (real TLS on loopback): idle
//! and silent connections fill a small cap, and the tests check that a client past the cap waits
//! and is then served, that `/metrics` counts it, that silent floods drain by the handshake
//! timeout, and that a flood of the service API's port leaves the webhook all its own slots.
//!
//! Every wait is bounded by [`PATIENCE`] or a bounded loop; nothing asserts a speed. The only
//! timed check is a negative one ("not answered yet while the cap is full"), which a correct
//! server can never fail, however slow the machine.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use portico::server::certs::{write_pair, CertAuthority};
use portico::server::{self, Limits, RunningServer, ServeOptions};
use portico::service_api::config::ApiClient;
use portico::service_api::{ApiOptions, RunningApi};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const DAY: Duration = Duration::from_secs(86_400);
/// Upper bound for any single wait in these tests.
const PATIENCE: Duration = Duration::from_secs(30);
const POD_CREATE: &str = "01-pod-create-user1.json";
/// The small cap the tests fill.
const CAP: usize = 8;
const HTTP1: &[u8] = b"http/1.1";
/// Idle connections of both protocols, alternately.
const BOTH: &[&[u8]] = &[b"h2", HTTP1];

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/admission-reviews")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Timeouts long enough that no idle connection is closed while a test holds it, except the
/// handshake timeout, which the silent-flood test relies on to drain.
fn patient_limits(max_connections: usize) -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_secs(120),
        body_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        shutdown_grace: Duration::from_secs(2),
        max_connections,
        ..Limits::default()
    }
}

/// A webhook server on 127.0.0.1:0 and a client configuration trusting its CA.
struct Env {
    server: RunningServer,
    webhook: Webhook,
    roots: Arc<RootCertStore>,
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(limits: Limits) -> Self {
        let now = SystemTime::now();
        let ca = CertAuthority::new("portico cap-test CA", now - DAY, now + 30 * DAY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert_pem, key_pem) = ca
            .issue("localhost", &names, now - DAY, now + 10 * DAY)
            .unwrap();
        write_pair(&cert, &key, &cert_pem, &key_pem).unwrap();
        let mut options = ServeOptions::new(&cert, &key);
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
            cert,
            key,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.webhook_addr()
    }

    /// A TLS client for `addr` (the webhook's or the API's: same certificate), over `tcp`.
    async fn tls_over(&self, tcp: TcpStream, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// `n` connections to `addr` past their TLS handshake, then silent, taking their ALPN from
    /// `alpns` in turn.
    async fn idle(&self, addr: SocketAddr, n: usize, alpns: &[&[u8]]) -> Vec<TlsStream<TcpStream>> {
        let mut idle = Vec::with_capacity(n);
        for i in 0..n {
            let alpn = alpns[i % alpns.len()];
            let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
            let tls = within("idle handshake", self.tls_over(tcp, alpn))
                .await
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
            idle.push(tls);
        }
        idle
    }

    /// Sends the pod review over `tls` (HTTP/1.1, `Connection: close`) and checks that the
    /// reply is exactly the webhook's own answer, uid included.
    async fn review_over(&self, mut tls: TlsStream<TcpStream>) {
        let review = fixture(POD_CREATE);
        let reply = exchange(&mut tls, &http11("/mutate", &review)).await;
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no reply head: {reply:?}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let got: Value = serde_json::from_str(body).unwrap();
        let want: Value =
            serde_json::from_slice(&self.webhook.answer(Endpoint::Mutate, &review).unwrap().body)
                .unwrap();
        assert_eq!(got, want);
    }

    /// A review on a fresh connection.
    async fn review(&self) {
        let tcp = within("connect", TcpStream::connect(self.addr()))
            .await
            .unwrap();
        let tls = within("handshake", self.tls_over(tcp, b"http/1.1"))
            .await
            .unwrap();
        self.review_over(tls).await;
    }

    /// `/metrics` from the ops port.
    async fn scrape(&self) -> String {
        let mut tcp = within("connect ops", TcpStream::connect(self.server.ops_addr()))
            .await
            .unwrap();
        let text = exchange(&mut tcp, b"GET /metrics HTTP/1.0\r\nHost: ops\r\n\r\n").await;
        assert!(
            text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
            "{text}"
        );
        text
    }

    /// One sample of a connection family for `listener`; 0 when absent.
    async fn sample(&self, family: &str, listener: &str) -> f64 {
        let series = format!("{family}{{listener=\"{listener}\"}} ");
        let text = self.scrape().await;
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Waits (bounded) until `portico_connections_open{listener}` is `want`: the server counts a
    /// close once its connection task has ended, a moment after the client saw it.
    async fn open_becomes(&self, listener: &str, want: f64) {
        for _ in 0..1_500 {
            if self.sample("portico_connections_open", listener).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = self.sample("portico_connections_open", listener).await;
        panic!("open {listener} connections: {got}, expected {want}");
    }
}

/// An HTTP/1.1 POST of a JSON body, asking the server to close afterwards.
fn http11(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Writes `request` and reads until the server closes; everything read, as text.
async fn exchange(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), request: &[u8]) -> String {
    within("request and reply", async {
        stream.write_all(request).await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
}

/// The cap is full of idle TLS connections: a ninth client's TCP connect succeeds (the kernel
/// queues it) but its handshake is not answered; the ops port still answers; the moment one idle
/// connection closes, the ninth is served, and `/metrics` counts it as deferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_the_cap_waits_and_is_served_as_soon_as_a_slot_frees() {
    let env = Env::start(patient_limits(CAP)).await;
    assert_eq!(
        env.sample("portico_connections_limit", "webhook").await,
        CAP as f64
    );
    assert_eq!(
        env.sample("portico_connections_deferred_total", "webhook")
            .await,
        0.0
    );
    let mut idle = env.idle(env.addr(), CAP, BOTH).await;
    env.open_becomes("webhook", CAP as f64).await;

    // The ninth: connected (in the backlog) before the test goes on, then handshake + review.
    let tcp = within("connect past the cap", TcpStream::connect(env.addr()))
        .await
        .unwrap();
    let env = Arc::new(env);
    let ninth = tokio::spawn({
        let env = env.clone();
        async move {
            let tls = env.tls_over(tcp, b"http/1.1").await.unwrap();
            env.review_over(tls).await;
        }
    });
    // Not answered while the cap is full (a negative check: a slow machine cannot fail it). The
    // ops port has its own cap, so it answers meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ninth.is_finished(), "a connection past the cap was served");
    assert_eq!(
        env.sample("portico_connections_open", "webhook").await,
        CAP as f64
    );

    // One idle connection goes: its slot goes to the waiting client.
    drop(idle.pop());
    within("the ninth client is served", ninth)
        .await
        .expect("the ninth client's review");
    assert_eq!(
        env.sample("portico_connections_deferred_total", "webhook")
            .await,
        1.0
    );
    env.open_becomes("webhook", (CAP - 1) as f64).await;

    // The idle ones were never cut to make room: each still answers a request.
    let review = fixture(POD_CREATE);
    let http1 = |t: &&mut TlsStream<TcpStream>| t.get_ref().1.alpn_protocol() == Some(HTTP1);
    for tls in idle.iter_mut().filter(http1) {
        let reply = exchange(tls, &http11("/mutate", &review)).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    drop(idle);
    env.open_becomes("webhook", 0.0).await;
    env.review().await;
}

/// Far more silent TCP connections than the cap (never a ClientHello), queued while the cap is
/// full: once the cap frees, each holds a slot only until the handshake timeout, so the flood
/// drains by itself and a good client queued behind it is served. Every one of them is counted
/// as deferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_flood_past_the_cap_drains_by_the_handshake_timeout() {
    const FLOOD: usize = 5 * CAP;
    let env = Env::start(patient_limits(CAP)).await;
    let idle = env.idle(env.addr(), CAP, BOTH).await;
    env.open_becomes("webhook", CAP as f64).await;
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(
            within("connect", TcpStream::connect(env.addr()))
                .await
                .unwrap(),
        );
    }
    drop(idle);
    // Behind the flood in the backlog.
    env.review().await;
    let deferred = env
        .sample("portico_connections_deferred_total", "webhook")
        .await;
    // All of the flood waited; the review did too unless the flood had drained before it came.
    assert!(
        deferred >= FLOOD as f64 && deferred <= (FLOOD + 1) as f64,
        "deferred: {deferred}"
    );
    // The server closed every silent one (handshake timeout); nothing was sent to them.
    for mut tcp in flood {
        let mut buf = [0u8; 16];
        let n = within("silent connection closed", tcp.read(&mut buf))
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "nothing is sent to a client that sent nothing");
    }
    env.open_becomes("webhook", 0.0).await;
}

/// A service API listener for `env`'s certificate, with a cap of `max` connections, reporting
/// into `env`'s registry as `portico serve` wires it. Its Kubernetes client points at a closed
/// port: these tests never reach a route that talks to the cluster.
async fn start_api(env: &Env, max: usize, idle: Duration, dir: &std::path::Path) -> RunningApi {
    let token = dir.join("portal.token");
    std::fs::write(&token, "cap-test-token\n").unwrap();
    let mut config = Config::default();
    config.api.clients = vec![ApiClient {
        name: "portal".into(),
        token_file: Some(token.display().to_string()),
        namespace: "team".into(),
        ..Default::default()
    }];
    let mut opts = ApiOptions::new(&env.cert, &env.key);
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.max_connections = max;
    opts.idle_timeout = idle;
    opts.connections = env.server.metrics().connections.clone();
    opts.logs = None;
    let nowhere = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    let kube = kube::Client::try_from(nowhere).unwrap();
    within(
        "start the API",
        portico::service_api::start(opts, Arc::new(config), kube),
    )
    .await
    .unwrap()
}

/// An unauthenticated GET on the API; its status line (any HTTP answer means the API served the
/// connection).
async fn api_status(mut tls: TlsStream<TcpStream>) -> String {
    let request = b"GET /api/services/x/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let reply = exchange(&mut tls, request).await;
    reply.lines().next().unwrap_or_default().to_owned()
}

/// The API port flooded to its cap (and past it) by idle connections: the webhook still has
/// every one of its own slots — all of them taken by idle clients plus a review on the last one —
/// and the API serves its waiting client once one of its own connections closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_flood_to_its_cap_leaves_the_webhook_all_its_slots() {
    const API_CAP: usize = 4;
    let env = Env::start(patient_limits(CAP)).await;
    let dir = tempfile::tempdir().unwrap();
    let api = start_api(&env, API_CAP, Duration::from_secs(120), dir.path()).await;
    assert_eq!(
        env.sample("portico_connections_limit", "api").await,
        API_CAP as f64
    );

    // HTTP/2 ones: the API closes an idle HTTP/1.1 connection after its 10 s header timeout.
    // (Its idle timeout is 120 s here.)
    let mut api_idle = env.idle(api.addr(), API_CAP, &[b"h2"]).await;
    env.open_becomes("api", API_CAP as f64).await;
    // Past the API's cap: queued in its backlog.
    let mut api_waiting = Vec::new();
    for _ in 0..2 * API_CAP {
        api_waiting.push(
            within("connect", TcpStream::connect(api.addr()))
                .await
                .unwrap(),
        );
    }

    // The webhook: all CAP slots usable while the API is full.
    let webhook_idle = env.idle(env.addr(), CAP - 1, BOTH).await;
    env.review().await;
    env.review().await;
    assert_eq!(
        env.sample("portico_connections_deferred_total", "webhook")
            .await,
        0.0
    );
    assert_eq!(
        env.sample("portico_connections_open", "api").await,
        API_CAP as f64
    );

    // The queued API clients give up; one of the API's idle connections closes; a new API
    // client is then served (after the abandoned ones drain, each in a slot for at most the
    // API's handshake timeout).
    drop(api_waiting);
    drop(api_idle.pop());
    let tcp = within("connect", TcpStream::connect(api.addr()))
        .await
        .unwrap();
    let tls = within("API handshake", env.tls_over(tcp, b"http/1.1"))
        .await
        .unwrap();
    let status = api_status(tls).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    assert!(
        env.sample("portico_connections_deferred_total", "api")
            .await
            >= 1.0
    );
    drop(webhook_idle);
    drop(api_idle);
    env.open_becomes("webhook", 0.0).await;
    env.open_becomes("api", 0.0).await;
    api.shutdown().await;
}

/// A client that finishes its TLS handshake with the API and never sends the HTTP/2 preface
/// holds an API slot only until the API's idle timeout: with a cap of 1, the next client is
/// served once the silent one has been closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_api_connection_gives_its_slot_back_after_the_idle_timeout() {
    let env = Env::start(patient_limits(CAP)).await;
    let dir = tempfile::tempdir().unwrap();
    let api = start_api(&env, 1, Duration::from_millis(300), dir.path()).await;
    let mut silent = env.idle(api.addr(), 1, &[b"h2"]).await;
    env.open_becomes("api", 1.0).await;
    // The next client waits for the silent one's slot (or finds it free, on a slow machine).
    let tcp = within("connect", TcpStream::connect(api.addr()))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    within("the server closes the silent connection", async {
        // HTTP/2 frames (SETTINGS, GOAWAY) may come first; then the end.
        while let Ok(1..) = silent[0].read(&mut buf).await {}
    })
    .await;
    let tls = within("API handshake", env.tls_over(tcp, HTTP1))
        .await
        .unwrap();
    let status = api_status(tls).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    api.shutdown().await;
}
