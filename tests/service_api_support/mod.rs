//! The service API on top of a whole Portico loop (sandbox, webhook, provisioner), with the
//! sandbox's `portal` identity as the API's trusted submitter, and an HTTPS client for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use portico::config::Config;
use portico::server::certs::{mint, CertSpec};
use portico::service_api::config::{ApiClient, Wire};
use portico::service_api::logs::LogControl;
use portico::service_api::{ApiOptions, RunningApi};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::harness::{Loop, RunningProvisioner};

pub const PORTAL_TOKEN: &str = "portal-token-0123456789";
pub const OTHER_USER: &str = "hub2";
pub const OTHER_PASSWORD: &str = "other-password";
pub const ADMIN_TOKEN: &str = "admin-token-abcdef";
pub const NAMESPACE: &str = "team";
/// The manager-style tenants ([`with_hubs`]): `jupyterhub` (a token and the basic user
/// `jupyterhub`, as the production hub's fallback) and `jupyterhub2` (a token).
pub const HUB_TOKEN: &str = "hub-token-0123456789abcdef";
pub const HUB_USER: &str = "jupyterhub";
pub const HUB_PASSWORD: &str = "hub-password";
pub const HUB2_TOKEN: &str = "hub2-token-fedcba9876543210";

/// The repository's own templates.
pub fn shipped_descriptions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("descriptions")
}

/// The shipped templates, copied for the test clients `portal` and `other`.
pub fn descriptions_for_clients() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for client in ["portal", "other"] {
        copy(
            &shipped_descriptions().join("portal"),
            &dir.path().join(client),
        );
    }
    for client in ["jupyterhub", "jupyterhub2"] {
        copy(
            &shipped_descriptions().join("jupyterhub"),
            &dir.path().join(client),
        );
    }
    dir
}

/// Adds the manager-style tenants `jupyterhub` and `jupyterhub2` (`wire: k8smgr`), each in
/// the namespace `team` the portal uses too, so isolation is tested where names can meet.
pub fn with_hubs(config: &mut Config) {
    with_hubs_in(config, NAMESPACE);
}

/// [`with_hubs`] with the tenants' labs in `namespace`.
pub fn with_hubs_in(config: &mut Config, namespace: &str) {
    std::env::set_var("PORTICO_TEST_HUB_TOKEN", HUB_TOKEN);
    std::env::set_var("PORTICO_TEST_HUB_PASSWORD", HUB_PASSWORD);
    std::env::set_var("PORTICO_TEST_HUB2_TOKEN", HUB2_TOKEN);
    let images: std::collections::BTreeMap<String, String> = [(
        "jupyterlab_image".to_string(),
        "quay.io/jupyter/base-notebook:2025-01-06".to_string(),
    )]
    .into();
    config.api.clients.push(ApiClient {
        name: "jupyterhub".into(),
        token_env: Some("PORTICO_TEST_HUB_TOKEN".into()),
        username: Some(HUB_USER.into()),
        password_env: Some("PORTICO_TEST_HUB_PASSWORD".into()),
        namespace: namespace.into(),
        replacements: images.clone(),
        wire: Wire::K8smgr,
        ..Default::default()
    });
    config.api.clients.push(ApiClient {
        name: "jupyterhub2".into(),
        token_env: Some("PORTICO_TEST_HUB2_TOKEN".into()),
        namespace: namespace.into(),
        replacements: images,
        wire: Wire::K8smgr,
        ..Default::default()
    });
}

/// Installs a reloadable subscriber for the test process before anything else can install one,
/// so `/api/logs/level` has something to change.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter.as_str())
            .with_test_writer()
            .with_filter_reloading();
        let control = LogControl::new(builder.reload_handle(), &filter);
        if builder.try_init().is_ok() {
            control.register_global();
        }
    });
}

pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
    /// The `Authorization` header's value exactly as given (`Token <key>`, say).
    Raw(&'a str),
}

pub struct ApiEnv {
    pub lp: Loop,
    pub provisioner: Option<RunningProvisioner>,
    pub api: RunningApi,
    pub config: Config,
    tls: ApiTls,
    _dir: tempfile::TempDir,
}

/// The API's serving certificate (for `localhost` and 127.0.0.1), minted into a folder, and a
/// client that trusts it.
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    roots: RootCertStore,
}

impl ApiTls {
    pub fn mint(dir: &Path) -> ApiTls {
        let bundle = mint(&CertSpec {
            service: "portico-api".into(),
            namespace: "portico-system".into(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            days: 1,
        })
        .unwrap();
        let files = bundle.write_to(dir).unwrap();
        let mut roots = RootCertStore::empty();
        let ca = std::fs::read(&files.ca).unwrap();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        ApiTls {
            cert: files.cert.clone(),
            key: files.key.clone(),
            roots,
        }
    }

    /// The API's options with this certificate, on a free loopback port.
    pub fn options(&self) -> ApiOptions {
        let mut opts = ApiOptions::new(&self.cert, &self.key);
        opts.listen = "127.0.0.1:0".parse().unwrap();
        opts
    }

    /// One request to the API on `addr` with exactly these headers (and `host`), nothing
    /// added: what a given client sends, byte for byte. The body is returned as text, as a
    /// client reads it.
    pub async fn call_exact(
        &self,
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut send = http1(&self.roots, addr).await;
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            send.send_request(req.body(Full::new(Bytes::from(body))).unwrap()),
        )
        .await
        .expect("the API answers")
        .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl ApiEnv {
    /// Starts everything with templates from `descriptions`; `tweak` may change the config.
    pub async fn start(descriptions: &Path, tweak: impl FnOnce(&mut Config)) -> ApiEnv {
        Self::start_as(descriptions, tweak, false).await
    }

    /// With `impersonating`, the API is started as `portico serve --api` starts it: from a
    /// kubeconfig file (the sandbox's `admin` context) impersonating `portal`.
    pub async fn start_as(
        descriptions: &Path,
        tweak: impl FnOnce(&mut Config),
        impersonating: bool,
    ) -> ApiEnv {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("portal.token");
        std::fs::write(&token_file, format!("{PORTAL_TOKEN}\n")).unwrap();
        let admin_file = dir.path().join("admin.token");
        std::fs::write(&admin_file, ADMIN_TOKEN).unwrap();
        std::env::set_var("PORTICO_TEST_OTHER_PASSWORD", OTHER_PASSWORD);
        let mut config = crate::harness::test_config();
        config.identity.trusted_submitters.users = vec!["portal".into()];
        let images = [
            (
                "jupyterlab_image".to_string(),
                "quay.io/jupyter/base-notebook:2025-01-06".to_string(),
            ),
            ("flask_image".to_string(), "python:3.12-slim".to_string()),
        ];
        config.api.descriptions = descriptions.display().to_string();
        config.api.clients = vec![
            ApiClient {
                name: "portal".into(),
                token_file: Some(token_file.display().to_string()),
                namespace: NAMESPACE.into(),
                replacements: images.clone().into(),
                ..Default::default()
            },
            ApiClient {
                name: "other".into(),
                username: Some(OTHER_USER.into()),
                password_env: Some("PORTICO_TEST_OTHER_PASSWORD".into()),
                namespace: NAMESPACE.into(),
                replacements: images.into(),
                ..Default::default()
            },
            ApiClient {
                name: "ops".into(),
                token_file: Some(admin_file.display().to_string()),
                namespace: NAMESPACE.into(),
                admin: true,
                ..Default::default()
            },
        ];
        tweak(&mut config);
        assert_eq!(config.problems(), Vec::<String>::new());
        let lp = Loop::start_with(config.clone()).await;
        let provisioner = Some(lp.provisioner("p1").await);
        let tls = ApiTls::mint(&dir.path().join("certs"));
        let opts = tls.options();
        let api = if impersonating {
            let kubeconfig = dir.path().join("kubeconfig");
            lp.sandbox.write_kubeconfig(&kubeconfig).unwrap();
            config.api.kubeconfig = Some(kubeconfig.display().to_string());
            config.api.context = Some("admin".into());
            config.api.impersonate = Some("portal".into());
            portico::service_api::start_for_serve(opts, &config)
                .await
                .unwrap()
        } else {
            let kube = lp.client("portal").await;
            portico::service_api::start(opts, Arc::new(config.clone()), kube)
                .await
                .unwrap()
        };
        ApiEnv {
            lp,
            provisioner,
            api,
            config,
            tls,
            _dir: dir,
        }
    }

    /// One request on a fresh HTTPS connection (HTTP/1.1).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let raw = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.call_raw(method, path, auth, headers, raw).await
    }

    /// A second API replica on the same cluster and configuration, as a second Portico pod.
    pub async fn replica(&self) -> RunningApi {
        let opts = self.tls.options();
        let kube = self.lp.client("portal").await;
        portico::service_api::start(opts, Arc::new(self.config.clone()), kube)
            .await
            .unwrap()
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        self.call_at(self.api.addr(), method, path, auth, headers, body)
            .await
    }

    /// [`ApiEnv::call_raw`] to the API listening on `addr` (a replica).
    pub async fn call_at(
        &self,
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut send = http1(&self.tls.roots, addr).await;
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("host", "localhost");
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
            Auth::Basic(u, p) => {
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                req = req.header("authorization", format!("Basic {b}"));
            }
            Auth::Raw(v) => req = req.header("authorization", v),
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            send.send_request(req.body(Full::new(Bytes::from(body))).unwrap()),
        )
        .await
        .expect("the API answers")
        .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// [`ApiTls::call_exact`] to this API.
    pub async fn call_exact(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, String) {
        self.tls
            .call_exact(self.api.addr(), method, path, headers, body)
            .await
    }

    /// Sends only a request head announcing `length` body bytes (and then `body_bytes` of them,
    /// from a separate task, ignoring errors) and returns the status the server answers with.
    pub async fn status_of_head(
        &self,
        path: &str,
        authorization: &str,
        length: usize,
        body_bytes: usize,
    ) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.tls.roots.clone())
            .with_no_client_auth();
        let tcp = TcpStream::connect(self.api.addr()).await.unwrap();
        let stream = TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\nuuidcode: x-1\r\ncontent-type: application/json\r\n{authorization}content-length: {length}\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await.unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![b' '; 64 * 1024];
            let mut left = body_bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if wr.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                left -= n;
            }
            wr
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "connection closed without an answer");
            got.extend_from_slice(&buf[..n]);
        }
        writer.abort();
        let text = String::from_utf8_lossy(&got);
        text.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// `POST /api/services/` as the portal for `user`.
    pub async fn start_service(
        &self,
        id: &str,
        start_id: &str,
        service: &str,
        user: &str,
    ) -> Reply {
        let body = start_body(start_id, service, user);
        self.call(
            "POST",
            "/api/services/",
            Auth::Bearer(PORTAL_TOKEN),
            &[("uuidcode", id)],
            Some(&body),
        )
        .await
    }

    pub async fn poll(&self, id: &str) -> Reply {
        self.call(
            "GET",
            &format!("/api/services/{id}/"),
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            None,
        )
        .await
    }

    /// Polls until the status is `want`; panics with the last reply after `secs`.
    pub async fn poll_until(&self, id: &str, want: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.poll(id).await;
            if r.status == StatusCode::OK && r.body["status"] == want {
                return r.body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{id} never became {want}; last reply {} {}",
                    r.status, r.body
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Objects in the namespace carrying the service label (any client).
    pub fn labelled(&self, resource: &str, group: &str) -> Vec<Value> {
        self.lp
            .sandbox
            .objects(group, resource, Some(NAMESPACE))
            .into_iter()
            .filter(|o| {
                o["metadata"]["labels"]
                    .get("portico.dev/api-service")
                    .is_some()
            })
            .collect()
    }

    /// The API's records (ConfigMaps in portico-system).
    pub fn records(&self) -> Vec<Value> {
        self.lp
            .sandbox
            .objects("", "configmaps", Some("portico-system"))
            .into_iter()
            .filter(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("portico-api-"))
            })
            .collect()
    }
}

pub fn start_body(start_id: &str, service: &str, user: &str) -> Value {
    serde_json::json!({
        "start_id": start_id,
        "user_options": {"service": service},
        "env": {
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_API_TOKEN": "hub-token-for-the-lab",
            "JUPYTERHUB_STATUS_URL": "https://hub.example.org/hub/api/users/status",
        },
    })
}

/// One HTTPS/1.1 connection to the API on `addr` (its certificate is for `localhost`).
async fn http1(
    roots: &RootCertStore,
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}
