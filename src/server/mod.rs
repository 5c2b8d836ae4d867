//! The shell around the webhook: TLS listener, certificate reload, ops endpoints, metrics.
//!
//! Owns everything between a socket and [`Webhook::answer`]: the HTTPS listener (hyper 1 +
//! tokio-rustls, TLS 1.2/1.3, ALPN `h2` and `http/1.1`), request limits and timeouts, the
//! certificate files and their reload, the plain-HTTP ops port, the metrics registry, and
//! graceful shutdown. It makes no admission decision: a review body goes to
//! [`Webhook::answer`] and its answer comes back verbatim.
//!
//! - [`start`] binds both ports and returns a [`RunningServer`] (bound addresses, a shutdown
//!   handle); tests start it on `127.0.0.1:0`.
//! - [`certs`] makes CAs and serving certificates (for `portico certs` and tests).
//! - [`tls`] loads, checks and reloads the serving certificate.
//! - [`metrics`] is the shared Prometheus registry.

pub(crate) mod activity;
pub mod audit_log;
pub mod certs;
pub(crate) mod conn_limit;
mod handler;
pub mod metrics;
mod ops;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use crate::admission::Webhook;
use activity::Activity;
use conn_limit::ConnectionLimit;
use handler::App;
use metrics::Metrics;
use tls::{CertLoadError, CertStore, CertWatcher};

/// The apiserver never sends a review larger than this (its own request limit), so neither do we
/// accept one.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Default cap on the webhook port's open connections. The apiserver needs few (each instance
/// keeps a handful of HTTP/2 connections), so 1,024 leaves a wide margin for bursts of
/// HTTP/1.1 clients, while 1,024 idle connections (about 22 KiB each) stay near 22 MiB, far
/// inside the shipped 128 MiB memory limit and the file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default cap on the ops port's open connections: probes and scrapes are a few short requests.
pub const DEFAULT_MAX_OPS_CONNECTIONS: usize = 64;

/// Request limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body; larger ones get 413.
    pub max_body_bytes: usize,
    /// An oversize body of at most this many bytes is still read and thrown away, so that a client
    /// busy sending it reads the 413 instead of a reset; a larger one is not read at all.
    pub max_discard_bytes: usize,
    /// TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// HTTP/1 request headers must arrive within this (also how long an idle keep-alive
    /// connection is kept).
    pub header_read_timeout: Duration,
    /// The whole body must arrive within this, counted from the end of the headers.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight and none for this long is closed gracefully
    /// (HTTP/2 GOAWAY). This also ends connections that finish the TLS handshake and then send
    /// nothing, which no HTTP-level timeout covers.
    pub idle_timeout: Duration,
    /// After a shutdown request: how long to keep accepting while `/readyz` already fails, so
    /// that Service endpoints stop sending new connections here first.
    pub shutdown_delay: Duration,
    /// How long in-flight connections may take to finish after we stop accepting.
    pub shutdown_grace: Duration,
    /// Most connections the webhook port holds open at once (TLS handshakes included). At the
    /// cap it stops accepting: new connections wait in the kernel's listen backlog until one
    /// closes (see `conn_limit`).
    pub max_connections: usize,
    /// The same for the ops port, with a cap of its own: probes and scrapes cannot take webhook
    /// slots, nor the webhook's clients theirs.
    pub max_ops_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: MAX_BODY_BYTES,
            max_discard_bytes: 2 * MAX_BODY_BYTES,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(20),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_ops_connections: DEFAULT_MAX_OPS_CONNECTIONS,
        }
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Webhook HTTPS address.
    pub listen: SocketAddr,
    /// Ops HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub ops_listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// PEM private key of the leaf.
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes.
    pub cert_check_interval: Duration,
    pub limits: Limits,
    /// The registry to report into (clone it first to share it with other parts).
    pub metrics: Metrics,
    /// `/readyz` also waits for this to be true (the provisioner's watches synced), when set.
    pub also_ready: Option<watch::Receiver<bool>>,
    /// Where each decision's audit record goes (off unless set; `portico serve` sets it from
    /// the configuration's `audit` section).
    pub audit: audit_log::AuditLog,
}

impl ServeOptions {
    /// Defaults: `0.0.0.0:8443`, ops on `0.0.0.0:9090`, certificate files checked every second.
    pub fn new(tls_cert: impl Into<PathBuf>, tls_key: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            ops_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            tls_cert: tls_cert.into(),
            tls_key: tls_key.into(),
            cert_check_interval: Duration::from_secs(1),
            limits: Limits::default(),
            metrics: Metrics::new(),
            also_ready: None,
            audit: audit_log::AuditLog::off(),
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Certificate(#[from] CertLoadError),
    // The cause is in the message and not a `source`, so a chain printed whole says it once.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(rustls::Error),
    #[error("cannot listen for webhook HTTPS on {addr} (--listen): {error}")]
    BindWebhook {
        addr: SocketAddr,
        // Named `error`, not `source`: the message already includes it, and a source would
        // make `{:#}` chains print it twice.
        error: std::io::Error,
    },
    #[error("cannot listen for ops HTTP on {addr} (--ops-listen): {error}")]
    BindOps {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl From<rustls::Error> for ServeError {
    fn from(e: rustls::Error) -> Self {
        ServeError::Tls(e)
    }
}

/// A started server. Dropping it (or its last [`ShutdownHandle`]) shuts it down as well.
#[derive(Debug)]
pub struct RunningServer {
    webhook_addr: SocketAddr,
    ops_addr: SocketAddr,
    metrics: Metrics,
    store: Arc<CertStore>,
    shutdown: ShutdownHandle,
    supervisor: JoinHandle<()>,
}

/// Asks a [`RunningServer`] to shut down gracefully; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Starts the graceful shutdown: `/readyz` fails at once, the listener closes after the
    /// configured delay, in-flight requests get the grace period.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl RunningServer {
    /// Where the webhook (HTTPS) listens.
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    /// Where the ops endpoints (HTTP) listen.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// SHA-256 (hex) of the leaf certificate new connections get.
    pub fn cert_sha256(&self) -> String {
        self.store.current().sha256.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Shuts down gracefully and returns once everything has stopped.
    pub async fn shutdown(self) {
        self.shutdown.shutdown();
        self.wait().await;
    }

    /// Returns once the server has stopped (after someone asked it to).
    pub async fn wait(self) {
        if let Err(error) = self.supervisor.await {
            tracing::error!(%error, "server supervisor task failed");
        }
    }

    /// Serves until SIGTERM or Ctrl-C (or a [`ShutdownHandle`]), then shuts down gracefully.
    pub async fn run_until_signal(self) {
        let mut requested = self.shutdown.0.subscribe();
        tokio::select! {
            signal = shutdown_signal() => tracing::info!(signal, "shutdown requested"),
            _ = stopped(&mut requested) => {}
        }
        self.shutdown().await;
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C; says which.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Checks the certificate pair, binds both ports and starts serving. Returns once the webhook
/// port accepts connections and `/readyz` says so.
pub async fn start(opts: ServeOptions, webhook: Webhook) -> Result<RunningServer, ServeError> {
    tls::install_crypto_provider();
    let metrics = opts.metrics.clone();
    // The pair is checked before anything binds: a bad certificate must stop the start with a
    // message naming the file, not produce a listener that fails every handshake.
    let (store, watcher) = CertWatcher::start(
        &opts.tls_cert,
        &opts.tls_key,
        metrics.certs.clone(),
        SystemTime::now(),
    )?;
    let current = store.current();
    tracing::info!(
        cert = %opts.tls_cert.display(),
        key = %opts.tls_key.display(),
        sha256 = %current.sha256,
        seconds_left = current.seconds_left(SystemTime::now()),
        "serving certificate loaded"
    );
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(store.clone())?));

    let listener =
        TcpListener::bind(opts.listen)
            .await
            .map_err(|error| ServeError::BindWebhook {
                addr: opts.listen,
                error,
            })?;
    let webhook_addr = listener
        .local_addr()
        .map_err(|error| ServeError::BindWebhook {
            addr: opts.listen,
            error,
        })?;
    let ops_listener =
        TcpListener::bind(opts.ops_listen)
            .await
            .map_err(|error| ServeError::BindOps {
                addr: opts.ops_listen,
                error,
            })?;
    let ops_addr = ops_listener
        .local_addr()
        .map_err(|error| ServeError::BindOps {
            addr: opts.ops_listen,
            error,
        })?;

    let limits = opts.limits.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ops_stop_tx, ops_stop_rx) = watch::channel(false);
    let (requested_tx, mut requested_rx) = watch::channel(false);

    let app = Arc::new(App {
        webhook,
        metrics: metrics.clone(),
        limits: limits.clone(),
        audit: opts.audit.clone(),
    });
    // Each port its own cap, made before serving so that the first scrape shows both.
    let webhook_limit =
        ConnectionLimit::new("webhook", limits.max_connections, &metrics.connections);
    let ops_limit = ConnectionLimit::new("ops", limits.max_ops_connections, &metrics.connections);
    let webhook_task = tokio::spawn(accept_loop(
        listener,
        webhook_limit,
        acceptor,
        app,
        stop_rx.clone(),
    ));
    let watcher_task = tokio::spawn(watch_certs(watcher, opts.cert_check_interval, stop_rx));
    let ops_task = tokio::spawn(ops::serve(
        ops_listener,
        ops_limit,
        ops::OpsState {
            ready: ready.clone(),
            also_ready: opts.also_ready.clone(),
            metrics: metrics.clone(),
        },
        limits.clone(),
        ops_stop_rx,
    ));
    ready.store(true, Ordering::SeqCst);
    tracing::info!(%webhook_addr, %ops_addr, "webhook serving HTTPS; ops endpoints on HTTP");

    let supervisor = tokio::spawn(async move {
        // Also resolves when every handle is dropped: nobody can ask any more, so stop.
        let _ = stopped(&mut requested_rx).await;
        ready.store(false, Ordering::SeqCst);
        tracing::info!(
            delay_seconds = limits.shutdown_delay.as_secs_f64(),
            grace_seconds = limits.shutdown_grace.as_secs_f64(),
            "shutting down: /readyz now fails; still accepting during the delay"
        );
        tokio::time::sleep(limits.shutdown_delay).await;
        let _ = stop_tx.send(true);
        drain(webhook_task, limits.shutdown_grace).await;
        let _ = watcher_task.await;
        let _ = ops_stop_tx.send(true);
        let _ = ops_task.await;
        tracing::info!("server stopped");
    });

    Ok(RunningServer {
        webhook_addr,
        ops_addr,
        metrics,
        store,
        shutdown: ShutdownHandle(Arc::new(requested_tx)),
        supervisor,
    })
}

/// Resolves once `stop` is true, or its sender is gone (nobody can ask any more).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here rather than in a caller's `select!`.
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn drain(webhook_task: JoinHandle<()>, grace: Duration) {
    // The accept loop itself waits for its connections up to `grace`; this outer bound only
    // guards against a loop that does not return.
    if tokio::time::timeout(grace + Duration::from_secs(1), webhook_task)
        .await
        .is_err()
    {
        tracing::warn!("webhook listener did not stop in time");
    }
}

async fn watch_certs(mut watcher: CertWatcher, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            // Two `stat`s and, on change, two small reads: cheap enough to run on the runtime.
            _ = tick.tick() => { watcher.poll(SystemTime::now()); }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut limit: ConnectionLimit,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let grace = app.limits.shutdown_grace;
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            // Waits for a free slot first: at the cap, new connections stay in the backlog.
            accepted = limit.accept(&listener) => match accepted {
                Ok((tcp, peer, slot)) => {
                    let span = tracing::info_span!(
                        "conn",
                        %peer,
                        tls = tracing::field::Empty,
                        alpn = tracing::field::Empty,
                    );
                    let conn = serve_connection(tcp, acceptor.clone(), app.clone(), stop.clone());
                    conns.spawn(
                        async move {
                            conn.await;
                            drop(slot);
                        }
                        .instrument(span),
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook port: accept failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(
        open_connections = open,
        "webhook listener closed; draining connections"
    );
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            cut = conns.len(),
            "connections still open after the grace period; closing them"
        );
        conns.shutdown().await;
    }
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    // Small replies on a kept-alive connection otherwise wait for delayed ACKs (Nagle).
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let limits = &app.limits;
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            // A client that rejects our certificate says so with an alert: worth an operator's
            // attention (wrong caBundle). Scanners and old TLS versions are not.
            let alert = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::AlertReceived(_)));
            if alert {
                tracing::warn!(%error, "TLS handshake failed: the client refused us");
            } else {
                tracing::debug!(%error, "TLS handshake failed");
            }
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let span = tracing::Span::current();
    if let Some(version) = session.protocol_version() {
        span.record("tls", tracing::field::debug(version));
    }
    if let Some(alpn) = &alpn {
        span.record("alpn", String::from_utf8_lossy(alpn).as_ref());
    }
    tracing::debug!("connection open");

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // ALPN already settled the protocol; without ALPN the builder sniffs the HTTP/2 preface.
    match alpn.as_deref() {
        Some(b"h2") => builder = builder.http2_only(),
        Some(b"http/1.1") => builder = builder.http1_only(),
        _ => {}
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Pings find dead peers; the apiserver keeps HTTP/2 connections for a long time.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(256);

    let activity = Arc::new(Activity::new());
    let request_activity = activity.clone();
    let request_app = app.clone();
    // HTTP/2 streams run on tasks of their own; carry the connection's span into them so every
    // decision line names its connection.
    let conn_span = tracing::Span::current();
    let service = service_fn(move |req| {
        let app = request_app.clone();
        let in_flight = request_activity.begin();
        async move {
            let response = handler::handle(&app, req).await;
            drop(in_flight);
            response
        }
        .instrument(conn_span.clone())
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let idle_timeout = limits.idle_timeout;
    let mut idle_check = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(10)));
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stopped(&mut stop), if !closing => {
                // Finish what is in flight, take nothing new (HTTP/2 GOAWAY, HTTP/1 close).
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_check.tick() => {
                let idle = activity.idle_for();
                if !closing && idle > idle_timeout {
                    tracing::debug!("connection idle; closing it");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else if closing && idle > 2 * idle_timeout {
                    // A graceful close waits for the peer (an HTTP/2 server still expecting the
                    // client preface waits forever); an idle peer gets no more time.
                    tracing::debug!("idle connection did not close; dropping it");
                    return;
                }
            }
        }
    };
    match result {
        Ok(()) => tracing::debug!("connection closed"),
        Err(error) => tracing::debug!(%error, "connection ended with an error"),
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let e = anyhow::Error::from(ServeError::from(rustls::Error::General("boom".into())));
        let chain = format!("{e:#}");
        assert_eq!(chain.matches("boom").count(), 1, "{chain}");
        let e = anyhow::Error::from(crate::config::ConfigError::Read {
            path: "c.yaml".into(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        });
        let chain = format!("{e:#}");
        assert_eq!(chain.matches("gone").count(), 1, "{chain}");
    }
}
