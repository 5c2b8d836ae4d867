//! The HTTP listener (HTTP/1.1 and h2c on loopback): routing to discovery, the API dispatcher,
//! watch streams and the `/sandbox/*` control endpoints (counters, faults, restart, compaction,
//! pod kill/fail/logs, webhook service endpoints); and the restart that keeps state.

use crate::api::{self, lock, Call, Reply, Shared};
use crate::auth;
use crate::discovery;
use crate::error::ApiError;
use crate::table;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Response body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// The listener and its accept loop; restartable on the same address.
pub struct ServerCtl {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The bound address.
    pub addr: SocketAddr,
    /// The TLS serving certificate (TLS and plain HTTP share the port).
    pub tls: crate::tls::ServingCert,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl ServerCtl {
    /// Binds and starts serving.
    pub async fn bind(
        shared: Arc<Shared>,
        addr: SocketAddr,
        tls: crate::tls::ServingCert,
    ) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let ctl = Arc::new(Self {
            shared,
            addr,
            tls,
            accept: Mutex::new(None),
        });
        ctl.spawn_accept(listener);
        Ok(ctl)
    }

    fn spawn_accept(self: &Arc<Self>, listener: TcpListener) {
        let ctl = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ctl2 = ctl.clone();
                let mut epoch = ctl.shared.epoch.subscribe();
                let acceptor = tokio_rustls::TlsAcceptor::from(ctl.tls.config.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctl3 = ctl2.clone();
                        async move { Ok::<_, Infallible>(route(ctl3, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let mut first = [0u8; 1];
                    let is_tls = matches!(
                        tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first))
                            .await,
                        Ok(Ok(1))
                    ) && first[0] == 0x16;
                    if is_tls {
                        let tls = tokio::select! {
                            t = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)) => t,
                            _ = epoch.changed() => return,
                        };
                        let Ok(Ok(tls)) = tls else { return };
                        let conn = builder.serve_connection(TokioIo::new(tls), svc);
                        tokio::select! {
                            _ = conn => {}
                            _ = epoch.changed() => {}
                        }
                    } else {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            _ = conn => {}
                            _ = epoch.changed() => {}
                        }
                    }
                });
            }
        });
        *lock(&self.accept) = Some(task);
    }

    async fn stop_listening(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
        let task = lock(&self.accept).take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// Closes the listener and every connection, waits `downtime`, listens again on the same
    /// address. State is kept.
    pub async fn restart(self: &Arc<Self>, downtime: Duration) -> std::io::Result<()> {
        self.stop_listening().await;
        tokio::time::sleep(downtime).await;
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.spawn_accept(l);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("rebind failed")))
    }

    /// Stops serving (connections and watches are closed).
    pub async fn shutdown(&self) {
        self.stop_listening().await;
    }

    /// Stops serving without waiting (for `Drop`).
    pub fn abort(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
        if let Some(t) = lock(&self.accept).take() {
            t.abort();
        }
    }
}

fn full(code: u16, content_type: &str, body: impl Into<Bytes>) -> http::Response<Body> {
    let mut r = http::Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(code: u16, v: &Value) -> http::Response<Body> {
    full(code, "application/json", v.to_string())
}

fn err_resp(e: &ApiError) -> http::Response<Body> {
    let mut r = json_resp(e.code, &e.to_status());
    if let Some(s) = e.retry_after {
        if let Ok(v) = http::HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
    }
    r
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string.
pub fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode_component(k), decode_component(v)),
            None => (decode_component(p), String::new()),
        })
        .collect()
}

fn header(req: &http::request::Parts, name: &str) -> String {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn route(ctl: Arc<ServerCtl>, req: http::Request<Incoming>) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return err_resp(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
    let shared = ctl.shared.clone();
    tracing::debug!(method = %parts.method, %path, "request");
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return full(200, "text/plain", "ok"),
        "/version" | "/version/" => return json_resp(200, &discovery::version()),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/sandbox/") {
        return control(&ctl, &parts.method, rest, &query, body).await;
    }
    let user = match auth::authenticate(&shared.tokens, &parts.headers) {
        Ok(u) => u,
        Err(e) => return err_resp(&e),
    };
    if let Some(r) = discovery_route(&ctl, &path) {
        return r;
    }
    let accept = header(&parts, "accept");
    let call = Call {
        method: parts.method.clone(),
        path,
        query: query.clone(),
        content_type: header(&parts, "content-type"),
        accept: accept.clone(),
        user_agent: header(&parts, "user-agent"),
        body,
        user,
    };
    let info = {
        let st = shared.store();
        api::parse_target(&st, &call.path)
            .ok()
            .flatten()
            .map(|t| t.info)
    };
    match api::dispatch(&shared, call).await {
        Reply::Json {
            code,
            body,
            warnings,
            retry_after,
        } => {
            let body = match (&info, code < 300 && table::wants_table(&accept)) {
                (Some(info), true) => table::to_table(
                    info,
                    &body,
                    query.get("includeObject").is_some_and(|v| v == "Object"),
                ),
                _ => body,
            };
            let mut r = json_resp(code, &body);
            for w in warnings {
                let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
                if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
                    r.headers_mut().append(http::header::WARNING, v);
                }
            }
            if let Some(s) = retry_after {
                if let Ok(v) = http::HeaderValue::from_str(&s.to_string()) {
                    r.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
            }
            r
        }
        Reply::Text(t) => full(200, "text/plain", t),
        Reply::Watch(spec) => {
            let rx = crate::watch::start(shared.clone(), spec);
            let stream =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
                )
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            let mut r = http::Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

fn discovery_route(ctl: &ServerCtl, path: &str) -> Option<http::Response<Body>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let st = ctl.shared.store();
    let rs = st.resources();
    let v = match segs.as_slice() {
        ["api"] => discovery::core_versions(&ctl.addr.to_string()),
        ["apis"] => discovery::groups(rs),
        ["api", v] => discovery::resource_list(rs, "", v)?,
        ["apis", g] => discovery::group(rs, g)?,
        ["apis", g, v] => discovery::resource_list(rs, g, v)?,
        ["openapi", "v2"] => {
            // An empty protobuf message (kubectl asks for protobuf): no client-side schemas.
            return Some(full(
                200,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                Bytes::new(),
            ));
        }
        ["openapi", "v3"] => crate::openapi::v3_root(rs),
        ["openapi", "v3", "api", v] => crate::openapi::v3_group_version(rs, &[], "", v)?,
        ["openapi", "v3", "apis", g, v] => {
            let crds = st.list(
                &crate::resources::GroupResource::new(
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                ),
                None,
            );
            crate::openapi::v3_group_version(rs, &crds, g, v)?
        }
        ["openapi", ..] | ["swagger.json"] => {
            return Some(err_resp(&ApiError::path_not_found()));
        }
        _ => return None,
    };
    Some(json_resp(200, &v))
}

async fn control(
    ctl: &Arc<ServerCtl>,
    method: &http::Method,
    rest: &str,
    query: &BTreeMap<String, String>,
    body: Bytes,
) -> http::Response<Body> {
    let shared = &ctl.shared;
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let bad = |m: String| err_resp(&ApiError::bad_request(m));
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["counters"]) => json_resp(200, &lock(&shared.counters).to_json()),
        ("POST", ["counters", "reset"]) | ("DELETE", ["counters"]) => {
            *lock(&shared.counters) = Default::default();
            json_resp(200, &json!({}))
        }
        ("GET", ["faults"]) => json_resp(
            200,
            &serde_json::to_value(&lock(&shared.faults).faults).unwrap_or(Value::Null),
        ),
        ("PUT", ["faults"]) | ("POST", ["faults"]) => {
            match serde_json::from_slice::<crate::faults::Faults>(&body) {
                Ok(f) => {
                    lock(&shared.faults).faults = f.clone();
                    json_resp(200, &serde_json::to_value(f).unwrap_or(Value::Null))
                }
                Err(e) => bad(format!("invalid faults: {e}")),
            }
        }
        ("POST", ["restart"]) => {
            let ms = query
                .get("downtimeMs")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let c = ctl.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Err(e) = c.restart(Duration::from_millis(ms)).await {
                    tracing::error!(%e, "restart failed");
                }
            });
            json_resp(202, &json!({"restarting": true, "downtimeMs": ms}))
        }
        ("POST", ["compact"]) => {
            shared.store().compact();
            json_resp(200, &json!({"compactedTo": shared.store().compacted()}))
        }
        ("PUT", ["endpoints", ns, name]) | ("POST", ["endpoints", ns, name]) => {
            let addr = String::from_utf8_lossy(&body).trim().to_string();
            shared.set_endpoint(&format!("{ns}/{name}"), &addr);
            json_resp(
                200,
                &json!({"service": format!("{ns}/{name}"), "address": addr}),
            )
        }
        ("POST", ["cronjobs", ns, name, "run"]) => {
            // `scheduledTime` (Unix seconds) names the run; now when absent.
            let at = match query.get("scheduledTime") {
                None => crate::util::now_secs(),
                Some(t) => match t.parse::<i64>() {
                    Ok(t) => t,
                    Err(_) => return bad(format!("invalid scheduledTime {t:?}")),
                },
            };
            match crate::controllers::run_cronjob(shared, ns, name, at).await {
                Ok(job) => json_resp(201, &job),
                Err(e) => err_resp(&e),
            }
        }
        ("POST", ["pods", ns, name, action]) => {
            let reason = query.get("reason").cloned();
            let message = query.get("message").cloned();
            let res = match *action {
                "fail" => crate::controllers::fail_pod(shared, ns, name, reason, message).await,
                "kill" => crate::controllers::kill_pod(shared, ns, name).await,
                "succeed" => crate::controllers::succeed_pod(shared, ns, name).await,
                "log" => {
                    let lines: Vec<String> = String::from_utf8_lossy(&body)
                        .lines()
                        .map(str::to_string)
                        .collect();
                    shared.append_log(ns, name, &lines);
                    Ok(())
                }
                _ => return err_resp(&ApiError::path_not_found()),
            };
            match res {
                Ok(()) => json_resp(200, &json!({"ok": true})),
                Err(e) => err_resp(&e),
            }
        }
        _ => err_resp(&ApiError::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&x"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(decode_component("100%"), "100%");
    }
}
