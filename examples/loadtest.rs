//! `make loadtest`: the webhook under several times its expected load, with a certificate rotation
//! and broken certificate pairs in the middle, on loopback, in bounded time.
//!
//! It starts `portico serve --no-controller` as a child process (so that its peak memory, VmHWM,
//! and its CPU time can be read from `/proc`), then drives it open-loop — requests start on a
//! fixed schedule whether or not earlier ones have finished, and latency is measured from the
//! scheduled start, so queueing shows up in the figures — through these phases:
//!
//! | phase | what |
//! | --- | --- |
//! | baseline | the expected rate (`LOADTEST_RATE`, default 100 reviews/s) |
//! | 5x, 10x | five and ten times that |
//! | burst | `LOADTEST_BURST` (default 2,000) requests scheduled at the same instant |
//! | recovery | the expected rate again: latency must come back to the baseline's |
//! | rotation | 5x, while the certificate files are replaced by a new key from a new CA (as the kubelet swaps a Secret volume: one atomic symlink switch); the client trusts old + new CA during the overlap, then the new CA only |
//! | bad pairs | 2x, while a mismatched pair and then an expired pair land on disk: the server must keep the last good certificate, log an error and count `portico_certificate_reloads_total{result="failed"}` |
//! | idle | 2,000 connections past their handshake and silent, held open while the expected rate flows |
//!
//! Every reply is checked: its `uid` must be the one sent, and the rest of the answer must equal
//! what `Webhook::answer` gives for the same review (verdict, patch, warnings). Most traffic is
//! HTTP/2 on a few long-lived connections (as the apiserver sends it), recycled every second so
//! that new connections see a rotated certificate; one request in ten opens a fresh HTTP/1.1
//! connection (a full TLS handshake per review, the worst case).
//!
//! Output: a table on stdout and `target/loadtest/report.md`; the server's log in
//! `target/loadtest/server.log`. Exit status 1 when any request failed or was answered wrongly,
//! or the rotation checks failed. Knobs (environment): `LOADTEST_RATE`, `LOADTEST_BURST`,
//! `LOADTEST_SCALE` (multiplies every phase's duration, default 1), `LOADTEST_IDLE` (idle
//! connections held open in the last phase, default 2,000), `PORTICO_BIN` (default: the
//! `portico` next to this example).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use portico::server::certs::CertAuthority;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DAY: Duration = Duration::from_secs(86_400);
/// A request that takes longer than this counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 connections the load shares (the apiserver keeps a few per webhook).
const H2_CONNECTIONS: usize = 4;
/// A pooled connection is replaced after this long, so that rotation reaches the load.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(1);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pem_sha256(pem: &str) -> anyhow::Result<String> {
    Ok(sha256_hex(
        CertificateDer::from_pem_slice(pem.as_bytes())
            .context("certificate PEM")?
            .as_ref(),
    ))
}

/// Certificate files laid out as the kubelet lays out a Secret volume: `tls.crt` and `tls.key`
/// are symlinks through `..data`, itself a symlink to a versioned directory; an update writes a
/// new directory and switches `..data` with one atomic rename, so a reader never sees a new
/// certificate with an old key.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for name in ["tls.crt", "tls.key", "..data", "..data_tmp"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            version: 0,
        })
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    fn update(&mut self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        self.version += 1;
        let name = format!("..v{}", self.version);
        let versioned = self.dir.join(&name);
        let _ = std::fs::remove_dir_all(&versioned);
        std::fs::create_dir_all(&versioned)?;
        std::fs::write(versioned.join("tls.crt"), cert_pem)?;
        std::fs::write(versioned.join("tls.key"), key_pem)?;
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        Ok(())
    }
}

/// One kind of review the load sends, with the answer it must get.
struct Template {
    name: &'static str,
    endpoint: Endpoint,
    review: Value,
    expected: Value,
}

fn pod(labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "worker-0", "namespace": "team", "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]}})
}

fn review(user: &str, kind: (&str, &str, &str), object: Value) -> Value {
    let (group, version, kind) = kind;
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())});
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "template", "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": object["metadata"]["name"], "namespace": "team", "operation": "CREATE",
        "userInfo": {"username": user, "uid": "1", "groups": ["system:authenticated", "team"]},
        "object": object, "oldObject": null, "dryRun": false,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}}})
}

fn templates(webhook: &Webhook) -> anyhow::Result<Vec<Template>> {
    let fixture: Value = serde_json::from_str(include_str!(
        "../fuzz/corpus/review/06-pod-create-kubernetes-admin-complete-review.json"
    ))?;
    let mut fixture = fixture;
    fixture["request"]["uid"] = json!("template");
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "train", "namespace": "team", "annotations": {"portico.dev/ipaddr": "notebook"}},
        "spec": {"completionMode": "Indexed", "completions": 4, "parallelism": 4,
            "template": {"metadata": {"labels": {"app": "train"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}});
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "steal", "namespace": "team"},
        "spec": {"selector": {"jarvice-job-ipaddr": "user1-foobar"}, "ports": [{"port": 80}]}});
    let raw = [
        (
            "tagged pod (stamped)",
            Endpoint::Mutate,
            review(
                "user1",
                ("", "v1", "Pod"),
                pod(json!({}), json!({"portico.dev/ipaddr": "foobar"})),
            ),
        ),
        (
            "forged label (overwritten)",
            Endpoint::Mutate,
            review(
                "user2",
                ("", "v1", "Pod"),
                pod(
                    json!({"jarvice-job-ipaddr": "user1-foobar"}),
                    json!({"portico.dev/ipaddr": "foobar"}),
                ),
            ),
        ),
        (
            "job by an OIDC user (stamped)",
            Endpoint::Mutate,
            review("alice@example.com", ("batch", "v1", "Job"), job),
        ),
        (
            "service selecting another user (denied)",
            Endpoint::Validate,
            review("user2", ("", "v1", "Service"), service),
        ),
        ("real pod review (untagged)", Endpoint::Mutate, fixture),
    ];
    let mut out = Vec::new();
    for (name, endpoint, review) in raw {
        let body = serde_json::to_vec(&review)?;
        let answer = webhook
            .answer(endpoint, &body)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let expected: Value = serde_json::from_slice(&answer.body)?;
        out.push(Template {
            name,
            endpoint,
            review,
            expected,
        });
    }
    // The load must exercise every verdict.
    let verdicts: Vec<(bool, bool)> = out
        .iter()
        .map(|t| {
            let r = &t.expected["response"];
            (r["allowed"] == true, r["patch"].is_string())
        })
        .collect();
    for want in [(true, true), (true, false), (false, false)] {
        if !verdicts.contains(&want) {
            bail!("the templates miss the verdict {want:?}");
        }
    }
    Ok(out)
}

/// A pooled HTTP/2 connection and when it was opened.
type Pooled = (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    Instant,
);

/// The client side: trusted CAs (switchable), pooled HTTP/2 connections.
struct Client {
    addr: SocketAddr,
    config: RwLock<Arc<ClientConfig>>,
    pool: Vec<tokio::sync::Mutex<Option<Pooled>>>,
}

fn client_config(cas: &[&str], alpn: &[u8]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(CertificateDer::from_pem_slice(ca.as_bytes())?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    // As the apiserver's Go client (no session cache): every connection is a full handshake, so
    // every new connection shows the certificate the server serves now.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Client {
    fn trust(&self, cas: &[&str]) -> anyhow::Result<()> {
        let config = client_config(cas, b"h2")?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    fn current(&self, alpn: &[u8]) -> Arc<ClientConfig> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if config.alpn_protocols.first().map(Vec::as_slice) == Some(alpn) {
            return config;
        }
        let mut other = (*config).clone();
        other.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(other)
    }

    /// A new TLS connection; returns it with the SHA-256 of the certificate the server showed.
    async fn tls(
        &self,
        alpn: &[u8],
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, String), BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?;
        let tls = TlsConnector::from(self.current(alpn))
            .connect(name, tcp)
            .await?;
        let sha = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| sha256_hex(c.as_ref()))
            .unwrap_or_default();
        Ok((tls, sha))
    }

    async fn h2_sender(
        &self,
        slot: usize,
    ) -> Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>, BoxError> {
        let mut guard = self.pool[slot].lock().await;
        if let Some((sender, born)) = guard.as_ref() {
            if born.elapsed() < CONNECTION_LIFETIME && !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let (tls, _) = self.tls(b"h2").await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        *guard = Some((sender.clone(), Instant::now()));
        Ok(sender)
    }

    async fn post(
        &self,
        n: u64,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let authority = format!("localhost:{}", self.addr.port());
        if n % 10 == 9 {
            // A fresh HTTP/1.1 connection: one handshake per review.
            let (tls, _) = self.tls(b"http/1.1").await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            let request = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(http::header::HOST, authority)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            return Ok((status, response.into_body().collect().await?.to_bytes()));
        }
        let mut sender = self.h2_sender(n as usize % H2_CONNECTIONS).await?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{authority}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }
}

/// What one phase saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    failed: BTreeMap<String, u64>,
    wrong: u64,
    first_wrong: Option<String>,
}

impl Tally {
    fn fail(&mut self, why: String) {
        // Group by the start of the message so that the table stays readable.
        let key: String = why.chars().take(80).collect();
        *self.failed.entry(key).or_default() += 1;
    }
}

struct Load {
    client: Arc<Client>,
    templates: Arc<Vec<Template>>,
    counter: AtomicU64,
}

impl Load {
    /// Sends `count` requests, the i-th at `start + offsets(i)`; returns when all have finished.
    async fn run(self: &Arc<Self>, count: u64, offset: impl Fn(u64) -> Duration) -> Tally {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..count {
            let at = start + offset(i);
            let (load, tally) = (self.clone(), tally.clone());
            tasks.spawn(async move {
                tokio::time::sleep_until(at).await;
                let n = load.counter.fetch_add(1, Ordering::Relaxed);
                let template = &load.templates[n as usize % load.templates.len()];
                let uid = format!("load-{n:08}");
                let mut review = template.review.clone();
                review["request"]["uid"] = json!(uid);
                let body = serde_json::to_vec(&review).unwrap_or_default();
                let path = match template.endpoint {
                    Endpoint::Mutate => "/mutate",
                    Endpoint::Validate => "/validate",
                };
                let result =
                    tokio::time::timeout(REQUEST_TIMEOUT, load.client.post(n, path, body)).await;
                let latency = at.elapsed();
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Err(_) => t.fail("timeout".into()),
                    Ok(Err(e)) => t.fail(format!("error: {e}")),
                    Ok(Ok((status, _))) if status != StatusCode::OK => {
                        t.fail(format!("HTTP {status}"))
                    }
                    Ok(Ok((_, body))) => {
                        t.latencies_us.push(latency.as_micros() as u64);
                        match check(template, &uid, &body) {
                            Ok(()) => t.ok += 1,
                            Err(why) => {
                                t.wrong += 1;
                                if t.first_wrong.is_none() {
                                    t.first_wrong = Some(format!("{}: {why}", template.name));
                                }
                            }
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
        tally.latencies_us.sort_unstable();
        tally
    }
}

/// The reply carries the uid sent and is otherwise exactly the expected answer.
fn check(template: &Template, uid: &str, body: &[u8]) -> Result<(), String> {
    let mut got: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if got["response"]["uid"] != uid {
        return Err(format!("uid {} instead of {uid}", got["response"]["uid"]));
    }
    got["response"]["uid"] = json!("template");
    if got != template.expected {
        return Err(format!("answer {got} instead of {}", template.expected));
    }
    Ok(())
}

/// The child's memory and CPU from /proc.
struct Proc(u32);

impl Proc {
    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix(field)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
            })
            .unwrap_or(0)
    }

    /// User + system CPU time in clock ticks (100 per second on Linux).
    fn cpu_ticks(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .ok()
            .and_then(|s| {
                // Fields after the command name (which is in parentheses and may hold spaces).
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Row {
    phase: String,
    sent: u64,
    tally: Tally,
    seconds: f64,
    rss_kib: u64,
    cpu_us_per_req: f64,
}

async fn metric(ops: SocketAddr, series: &str) -> Option<f64> {
    let tcp = TcpStream::connect(ops).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let request = Request::get("/metrics")
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn ready(ops: SocketAddr) -> bool {
    let Ok(tcp) = TcpStream::connect(ops).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let Ok(request) = Request::get("/readyz")
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
    else {
        return false;
    };
    matches!(sender.send_request(request).await, Ok(r) if r.status() == StatusCode::OK)
}

/// Raises this process's soft limit on open files (up to the hard limit) for the idle phase.
fn raise_fd_limit(wanted: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    if current.current.is_some_and(|soft| soft < wanted) {
        let target = current.maximum.map_or(wanted, |hard| hard.min(wanted));
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: current.maximum,
            },
        );
    }
}

/// Seconds since midnight UTC.
fn time_of_day(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() % 86_400.0)
        .unwrap_or(0.0)
}

/// Seconds since midnight UTC of a log line starting `2026-01-01T12:34:56.789012Z`.
fn log_time_of_day(line: &str) -> Option<f64> {
    let clock = line.get(11..)?.split('Z').next()?;
    let mut parts = clock.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Kills the child when dropped, whatever happens.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rate: u64 = env_or("LOADTEST_RATE", 100);
    let burst: u64 = env_or("LOADTEST_BURST", 2000);
    let scale: f64 = env_or("LOADTEST_SCALE", 1.0);
    let idle_n: usize = env_or("LOADTEST_IDLE", 2000);
    // Before the server starts, so that it inherits the limit too.
    raise_fd_limit(idle_n as u64 + 1024);
    let secs = |s: f64| Duration::from_secs_f64(s * scale);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/loadtest");
    std::fs::create_dir_all(&out)?;
    let bin = match std::env::var_os("PORTICO_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("portico"))
            .context("where is the portico binary? set PORTICO_BIN")?,
    };

    // Certificates: the first CA and pair, as a Secret volume.
    let now = SystemTime::now();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let old_ca = CertAuthority::new("portico load CA 1", now - DAY, now + 30 * DAY)?;
    let new_ca = CertAuthority::new("portico load CA 2", now - DAY, now + 60 * DAY)?;
    let mut volume = SecretVolume::new(&out.join("certs"))?;
    let (cert, key) = old_ca.issue("localhost", &names, now - DAY, now + 10 * DAY)?;
    volume.update(&cert, &key)?;
    let first_sha = pem_sha256(&cert)?;

    let (port, ops_port) = (free_port()?, free_port()?);
    let log = std::fs::File::create(out.join("server.log"))?;
    let child = Command::new(&bin)
        .args([
            "serve",
            "--no-controller",
            "--log-level",
            "info",
            "--tls-cert",
        ])
        .arg(volume.cert())
        .arg("--tls-key")
        .arg(volume.key())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
        // The idle phase measures what each open connection costs, so the cap must not stop it.
        .args(["--max-connections", &(idle_n + 1024).to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let child = ChildGuard(child);
    let proc = Proc(child.0.id());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let ops: SocketAddr = format!("127.0.0.1:{ops_port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(ops).await {
        if Instant::now() > deadline {
            bail!(
                "portico did not become ready; see {}",
                out.join("server.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_idle = proc.status_kib("VmRSS:");

    let webhook = Webhook::new(Config::default());
    let client = Arc::new(Client {
        addr,
        config: RwLock::new(client_config(&[old_ca.cert_pem()], b"h2")?),
        pool: (0..H2_CONNECTIONS)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect(),
    });
    let load = Arc::new(Load {
        client: client.clone(),
        templates: Arc::new(templates(&webhook)?),
        counter: AtomicU64::new(0),
    });

    let mut rows = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let ticks_per_sec = 100.0;
    let run_phase = |name: String, tally: Tally, sent: u64, seconds: f64, cpu0: u64| {
        let cpu = (proc.cpu_ticks().saturating_sub(cpu0)) as f64 / ticks_per_sec;
        Row {
            phase: name,
            sent,
            seconds,
            rss_kib: proc.status_kib("VmRSS:"),
            cpu_us_per_req: if sent > 0 {
                cpu * 1e6 / sent as f64
            } else {
                0.0
            },
            tally,
        }
    };

    // Warm-up (not reported): connections, caches.
    load.run(rate, |i| Duration::from_secs_f64(i as f64 / rate as f64))
        .await;

    let steady = |mult: u64, dur: Duration| {
        let r = rate * mult;
        let count = (r as f64 * dur.as_secs_f64()) as u64;
        (r, count)
    };
    for (name, mult, dur) in [
        ("baseline", 1, secs(5.0)),
        ("5x", 5, secs(10.0)),
        ("10x", 10, secs(10.0)),
    ] {
        let (r, count) = steady(mult, dur);
        let cpu0 = proc.cpu_ticks();
        let t0 = Instant::now();
        let tally = load
            .run(count, |i| Duration::from_secs_f64(i as f64 / r as f64))
            .await;
        rows.push(run_phase(
            format!("{name} ({r}/s)"),
            tally,
            count,
            t0.elapsed().as_secs_f64(),
            cpu0,
        ));
    }
    {
        let cpu0 = proc.cpu_ticks();
        let t0 = Instant::now();
        let tally = load.run(burst, |_| Duration::ZERO).await;
        rows.push(run_phase(
            format!("burst ({burst} at once)"),
            tally,
            burst,
            t0.elapsed().as_secs_f64(),
            cpu0,
        ));
    }
    {
        let (r, count) = steady(1, secs(5.0));
        let cpu0 = proc.cpu_ticks();
        let t0 = Instant::now();
        let tally = load
            .run(count, |i| Duration::from_secs_f64(i as f64 / r as f64))
            .await;
        rows.push(run_phase(
            format!("recovery ({r}/s)"),
            tally,
            count,
            t0.elapsed().as_secs_f64(),
            cpu0,
        ));
    }

    // Rotation under 5x load: trust old + new CA, swap the files, watch for the new certificate,
    // then trust the new CA only.
    let failed_series = "portico_certificate_reloads_total{result=\"failed\"}";
    let ok_series = "portico_certificate_reloads_total{result=\"ok\"}";
    let failed_before = metric(ops, failed_series).await.unwrap_or(-1.0);
    let (new_cert, new_key) = new_ca.issue("localhost", &names, now - DAY, now + 20 * DAY)?;
    let new_sha = pem_sha256(&new_cert)?;
    let rotation_seen = Arc::new(Mutex::new(None::<Duration>));
    let (r, count) = steady(5, secs(12.0));
    let rotation_phase = {
        let load = load.clone();
        tokio::spawn(async move {
            load.run(count, |i| Duration::from_secs_f64(i as f64 / r as f64))
                .await
        })
    };
    let cpu0 = proc.cpu_ticks();
    let t0 = Instant::now();
    tokio::time::sleep(secs(3.0)).await;
    client.trust(&[old_ca.cert_pem(), new_ca.cert_pem()])?;
    let written = Instant::now();
    let written_wall = SystemTime::now();
    volume.update(&new_cert, &new_key)?;
    // A prober opens a fresh connection every 50 ms and looks at the certificate it gets.
    let seen_within = loop {
        if let Ok((_, sha)) = client.tls(b"h2").await {
            if sha == new_sha {
                break Some(written.elapsed());
            }
            if sha != first_sha {
                problems.push(format!(
                    "rotation: an unknown certificate was served ({sha})"
                ));
            }
        }
        if written.elapsed() > Duration::from_secs(15) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    *rotation_seen.lock().unwrap_or_else(|p| p.into_inner()) = seen_within;
    // End of the overlap window: every pooled connection has been replaced by now.
    tokio::time::sleep(CONNECTION_LIFETIME * 2).await;
    client.trust(&[new_ca.cert_pem()])?;
    let tally = rotation_phase.await?;
    rows.push(run_phase(
        format!("rotation ({r}/s)"),
        tally,
        count,
        t0.elapsed().as_secs_f64(),
        cpu0,
    ));
    let failed_after_rotation = metric(ops, failed_series).await.unwrap_or(-1.0);
    let ok_after_rotation = metric(ops, ok_series).await.unwrap_or(-1.0);
    match seen_within {
        Some(d) => println!(
            "new certificate served {:.2} s after the files changed",
            d.as_secs_f64()
        ),
        None => problems.push("rotation: the new certificate was never served".into()),
    }
    if failed_after_rotation != failed_before {
        problems.push(format!(
            "rotation: a good rotation counted as failed ({failed_before} -> {failed_after_rotation})"
        ));
    }

    // Broken pairs under 2x load: mismatched, then expired. The last good pair must stay.
    let (r, count) = steady(2, secs(8.0));
    let bad_phase = {
        let load = load.clone();
        tokio::spawn(async move {
            load.run(count, |i| Duration::from_secs_f64(i as f64 / r as f64))
                .await
        })
    };
    let cpu0 = proc.cpu_ticks();
    let t0 = Instant::now();
    let (mismatched_cert, _) = new_ca.issue("localhost", &names, now - DAY, now + DAY)?;
    let (_, other_key) = new_ca.issue("localhost", &names, now - DAY, now + DAY)?;
    let (expired_cert, expired_key) =
        new_ca.issue("localhost", &names, now - 3 * DAY, now - DAY)?;
    let mut bad_counted = Vec::new();
    for (what, cert, key) in [
        ("mismatched pair", &mismatched_cert, &other_key),
        ("expired pair", &expired_cert, &expired_key),
    ] {
        tokio::time::sleep(secs(1.5)).await;
        let before = metric(ops, failed_series).await.unwrap_or(-1.0);
        volume.update(cert, key)?;
        let t = Instant::now();
        let counted = loop {
            if metric(ops, failed_series).await.unwrap_or(-1.0) > before {
                break Some(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(10) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match counted {
            Some(d) => bad_counted.push(format!("{what}: counted after {:.2} s", d.as_secs_f64())),
            None => problems.push(format!("{what}: never counted as a failed reload")),
        }
        // Still the last good certificate for new connections.
        for _ in 0..5 {
            match client.tls(b"h2").await {
                Ok((_, sha)) if sha == new_sha => {}
                Ok((_, sha)) => {
                    problems.push(format!("{what}: served {sha} instead of the last good"))
                }
                Err(e) => problems.push(format!("{what}: connection failed: {e}")),
            }
        }
    }
    let tally = bad_phase.await?;
    rows.push(run_phase(
        format!("bad pairs ({r}/s)"),
        tally,
        count,
        t0.elapsed().as_secs_f64(),
        cpu0,
    ));
    let failed_end = metric(ops, failed_series).await.unwrap_or(-1.0);
    let server_log = std::fs::read_to_string(out.join("server.log")).unwrap_or_default();
    // When the server itself switched, from its log line (UTC time of day, to the microsecond).
    let server_switch = server_log
        .lines()
        .find(|l| l.contains("serving certificate reloaded") && l.contains(&new_sha))
        .and_then(log_time_of_day)
        .map(|t| t - time_of_day(written_wall));
    let rejected_lines = server_log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("REJECTED"))
        .count();
    if rejected_lines < 2 {
        problems.push(format!(
            "bad pairs: {rejected_lines} error lines in the log, expected 2"
        ));
    }
    // Idle connections: `LOADTEST_IDLE` (default 2,000) finished handshakes that then say nothing,
    // held open while the expected rate flows: what each costs the server, and that it still
    // answers in time.
    let rss_before_idle = proc.status_kib("VmRSS:");
    let mut idle = Vec::with_capacity(idle_n);
    for i in 0..idle_n {
        let alpn: &[u8] = if i % 2 == 0 { b"h2" } else { b"http/1.1" };
        match client.tls(alpn).await {
            Ok((tls, _)) => idle.push(tls),
            Err(e) => {
                problems.push(format!("idle connection {i}: {e}"));
                break;
            }
        }
    }
    let rss_with_idle = proc.status_kib("VmRSS:");
    let (r, count) = steady(1, secs(5.0));
    let cpu0 = proc.cpu_ticks();
    let t0 = Instant::now();
    let tally = load
        .run(count, |i| Duration::from_secs_f64(i as f64 / r as f64))
        .await;
    rows.push(run_phase(
        format!("{} idle connections open ({r}/s)", idle.len()),
        tally,
        count,
        t0.elapsed().as_secs_f64(),
        cpu0,
    ));
    let idle_open = idle.len();
    drop(idle);
    if !ready(ops).await {
        problems.push("/readyz fails at the end".into());
    }
    let hwm = proc.status_kib("VmHWM:");
    let rss_end = proc.status_kib("VmRSS:");
    drop(child);

    // The report.
    let mut report = String::new();
    report.push_str("| phase | sent | ok | failed | wrong | achieved/s | p50 ms | p99 ms | max ms | server RSS MiB | server CPU µs/req |\n");
    report.push_str(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in &rows {
        let t = &row.tally;
        let failed: u64 = t.failed.values().sum();
        report.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} |\n",
            row.phase,
            row.sent,
            t.ok,
            failed,
            t.wrong,
            row.sent as f64 / row.seconds,
            percentile(&t.latencies_us, 0.50),
            percentile(&t.latencies_us, 0.99),
            percentile(&t.latencies_us, 1.0),
            row.rss_kib as f64 / 1024.0,
            row.cpu_us_per_req,
        ));
        for (why, n) in &t.failed {
            problems.push(format!("{}: {n} × {why}", row.phase));
        }
        if let Some(w) = &t.first_wrong {
            problems.push(format!(
                "{}: {} wrong answers, first: {w}",
                row.phase, t.wrong
            ));
        }
    }
    report.push_str(&format!(
        "\nserver RSS: {:.1} MiB idle after start, {:.1} MiB at the end; peak (VmHWM) {:.1} MiB\n",
        rss_idle as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0
    ));
    report.push_str(&format!(
        "idle connections: {idle_open} open added {:.1} MiB to the server's RSS ({:.1} KiB each; HTTP/1 ones are closed after the 10 s header timeout, HTTP/2 ones after the 90 s idle timeout)\n",
        (rss_with_idle as f64 - rss_before_idle as f64) / 1024.0,
        (rss_with_idle as f64 - rss_before_idle as f64) / idle_open.max(1) as f64
    ));
    report.push_str(&format!(
        "rotation: new certificate (new key, new CA) served {} after the files changed; reloads ok={ok_after_rotation}, failed={failed_after_rotation} (before: {failed_before})\n",
        seen_within.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
    ));
    report.push_str(&format!(
        "rotation: the server logged the switch {} after the files changed (it checks them every second)\n",
        server_switch.map_or("?".into(), |d| format!("{d:.2} s"))
    ));
    report.push_str(&format!(
        "bad pairs: {}; failed reloads at the end: {failed_end}; ERROR lines saying REJECTED in the log: {rejected_lines}\n",
        bad_counted.join(", ")
    ));
    report.push_str(&format!(
        "templates: {}\n",
        load.templates
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join("; ")
    ));
    if problems.is_empty() {
        report.push_str("\nresult: PASS (every reply had the right uid and verdict)\n");
    } else {
        report.push_str("\nresult: FAIL\n");
        for p in &problems {
            report.push_str(&format!("- {p}\n"));
        }
    }
    print!("{report}");
    std::fs::write(out.join("report.md"), &report)?;
    if !problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
