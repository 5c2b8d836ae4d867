//! The plain-HTTP ops port: `/healthz` (the process answers), `/readyz` (the webhook listener
//! serves with a certificate loaded and is not shutting down, and, when the provisioner runs, its
//! watches have synced — not the webhook's view of the cluster) and `/metrics` (Prometheus text).
//!
//! Kept apart from the webhook port so probes and scrapes need no TLS and cannot be starved by
//! admission traffic; it serves nothing that changes state.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::conn_limit::ConnectionLimit;
use super::handler::text;
use super::metrics::{self, Metrics};
use super::{stopped, Limits};

/// What the ops endpoints report on.
#[derive(Debug, Clone)]
pub(crate) struct OpsState {
    pub ready: Arc<AtomicBool>,
    /// Another part's readiness (the provisioner's watches synced), when it runs.
    pub also_ready: Option<tokio::sync::watch::Receiver<bool>>,
    pub metrics: Metrics,
}

/// Serves the ops port until `stop` turns true; then drops open connections (probes and scrapes
/// are short and retried). At most `limit` connections are open at once; more wait in the
/// backlog.
pub(crate) async fn serve(
    listener: TcpListener,
    mut limit: ConnectionLimit,
    state: OpsState,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = limit.accept(&listener) => match accepted {
                Ok((tcp, _peer, slot)) => {
                    let _ = tcp.set_nodelay(true);
                    let state = state.clone();
                    let timeout = limits.header_read_timeout;
                    conns.spawn(async move {
                        let service = service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(route(&state, &req)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(timeout)
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "ops port: accept failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

fn route(state: &OpsState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed; use GET\n", req.method()),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let webhook = state.ready.load(Ordering::SeqCst);
            let others = state.also_ready.as_ref().is_none_or(|r| *r.borrow());
            match (webhook, others) {
                (true, true) => text(StatusCode::OK, "ready\n"),
                (true, false) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the provisioner's watches have not synced yet\n",
                ),
                (false, _) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the webhook listener is not serving (starting or shutting down)\n",
                ),
            }
        }
        "/metrics" => match state.metrics.encode() {
            Ok(body) => {
                let mut response = text(StatusCode::OK, body);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                response
            }
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {error}\n"),
            ),
        },
        other => text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {other}; try /healthz, /readyz or /metrics\n"),
        ),
    }
}
