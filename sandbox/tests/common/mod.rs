//! Shared helpers for the sandbox's integration tests: start a fast sandbox, talk HTTP to it,
//! read watch streams, poll for conditions, and run a tiny HTTPS admission webhook.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use portico_sandbox::{RunningSandbox, Sandbox, SandboxOptions};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub async fn start() -> RunningSandbox {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut SandboxOptions)) -> RunningSandbox {
    let mut o = SandboxOptions {
        kubelet_delay: Duration::from_millis(30),
        bookmark_interval: Duration::from_millis(200),
        ..SandboxOptions::default()
    };
    f(&mut o);
    Sandbox::start(o).await.expect("sandbox starts")
}

pub struct Resp {
    pub code: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// One HTTP/1.1 request over plain HTTP with the token of `ctx`.
pub async fn http(
    sb: &RunningSandbox,
    ctx: &str,
    method: &str,
    path: &str,
    ct: &str,
    body: Option<Value>,
) -> Resp {
    let raw = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    http_raw(sb, ctx, method, path, ct, raw, &[]).await
}

pub async fn http_raw(
    sb: &RunningSandbox,
    ctx: &str,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> Resp {
    let stream = tokio::net::TcpStream::connect(sb.addr())
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", sb.addr().to_string())
        .header("content-type", ct)
        .header("user-agent", "sandbox-tests/v1");
    if let Some(t) = sb.token(ctx) {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body))).expect("request");
    let resp = send.send_request(req).await.expect("send");
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        code,
        headers,
        body,
        text,
    }
}

pub async fn get(sb: &RunningSandbox, path: &str) -> Resp {
    http(sb, "admin", "GET", path, "application/json", None).await
}

pub async fn post(sb: &RunningSandbox, ctx: &str, path: &str, body: Value) -> Resp {
    http(sb, ctx, "POST", path, "application/json", Some(body)).await
}

pub async fn patch(sb: &RunningSandbox, ctx: &str, path: &str, ct: &str, body: Value) -> Resp {
    http(sb, ctx, "PATCH", path, ct, Some(body)).await
}

/// Reads watch events until `n` arrived, the stream ended, or `timeout` passed.
pub async fn watch(
    sb: &RunningSandbox,
    ctx: &str,
    path: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Value> {
    let stream = tokio::net::TcpStream::connect(sb.addr())
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "sandbox")
        .header(
            "authorization",
            format!("Bearer {}", sb.token(ctx).unwrap_or_default()),
        )
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("send");
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(i) = buf.find('\n') {
                        let line: String = buf.drain(..=i).collect();
                        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                            out.push(v);
                        }
                    }
                }
            }
            _ => break,
        }
    }
    out
}

pub async fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})
}

/// A tiny HTTPS admission webhook for tests.
pub struct Webhook {
    pub addr: std::net::SocketAddr,
    pub ca_bundle: String,
    pub reviews: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Handler = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// Starts a webhook whose certificate covers 127.0.0.1 and `hook.hooks.svc`; `respond` maps
/// the AdmissionReview request to the response fields (uid is filled in).
pub async fn webhook(respond: impl Fn(&Value) -> Value + Send + Sync + 'static) -> Webhook {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "hook.hooks.svc".to_string()])
        .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reviews = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(respond);
    let rv = reviews.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            let rv = rv.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        let rv = rv.clone();
                        async move {
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let review: Value =
                                serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            rv.lock().unwrap().push(review.clone());
                            let mut resp = handler(&review["request"]);
                            resp["uid"] = review["request"]["uid"].clone();
                            let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp});
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(out.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    use base64::Engine;
    Webhook {
        addr,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca_cert.pem()),
        reviews,
        task,
    }
}

pub fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}
