//! The service API: a portal (JupyterHub, say) starts, polls and stops a user's web service
//! from administrator templates, over HTTPS on its own port (`portico serve --api`).
//!
//! Owns the REST surface ([`rest`]), client credentials ([`auth`]), the `api` configuration
//! section ([`config`]), keyword replacement ([`template`], pure), what a start creates
//! ([`plan`], pure), how a service is doing ([`status`], pure), the start/poll/stop IO
//! ([`cluster`]), the `input/` archive ([`input`]) and the run-time log level ([`logs`]).
//!
//! The API makes no admission decision: it creates objects as a trusted submitter naming the
//! user, and Portico's webhook stamps and polices them as it does any `kubectl` user's. The
//! TLS pieces (certificate check, reload, rustls settings) are [`crate::server::tls`]'s.

pub mod auth;
pub mod body;
pub mod cluster;
pub mod config;
pub mod fd_reserve;
pub mod handlers;
pub mod home;
pub mod input;
pub mod k8smgr;
pub mod limits;
pub mod logs;
pub mod names;
pub mod namespace;
pub mod plan;
pub mod poll;
pub mod record;
pub mod rest;
pub mod smtp;
pub mod start;
pub mod status;
pub mod stop;
pub mod template;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use config::ApiConfig;

use crate::config::Config;
use crate::server::activity::Activity;
use crate::server::conn_limit::ConnectionLimit;
use crate::server::metrics::{ConnectionMetrics, Metrics};
use crate::server::tls::{self, CertLoadError, CertWatcher};

/// Default cap on the API port's open connections: portals are few and poll over a handful of
/// connections each. The cap is the API's own: the webhook's slots are never spent on it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How to run the API listener.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// HTTPS address (default `0.0.0.0:8444`).
    pub listen: SocketAddr,
    /// PEM certificate chain and key (re-read when they change).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub cert_check_interval: Duration,
    /// Certificate metrics are reported here.
    pub metrics: Metrics,
    /// The run-time log control (`None`: the log endpoints answer 503).
    pub logs: Option<logs::LogControl>,
    /// Most connections the API port holds open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A connection with no request in flight and none for this long is closed (gracefully, then
    /// dropped after as long again): without it, a client that finishes the TLS handshake and
    /// never sends the HTTP/2 preface would hold one of the capped slots for ever.
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this, and an HTTP/1.1 request head arrive within it:
    /// a client that trickles bytes holds a slot no longer.
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// A request body must arrive within this after its head (`408` otherwise).
    pub body_read_timeout: Duration,
    /// File descriptors the API's cap must leave to the webhook, the ops port and the process
    /// (see [`fd_reserve`]): by default the webhook's and ops port's default caps plus 256.
    pub webhook_reserve: usize,
    /// Where the API's connection gauge and counter go (`listener="api"`). `portico serve`
    /// points it at the webhook's registry, which the ops port serves.
    pub connections: ConnectionMetrics,
}

impl ApiOptions {
    pub fn new(tls_cert: impl Into<PathBuf>, tls_key: impl Into<PathBuf>) -> Self {
        let metrics = Metrics::new();
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8444)),
            tls_cert: tls_cert.into(),
            tls_key: tls_key.into(),
            cert_check_interval: Duration::from_secs(1),
            connections: metrics.connections.clone(),
            metrics,
            logs: logs::LogControl::global(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            webhook_reserve: webhook_reserve(
                crate::server::DEFAULT_MAX_CONNECTIONS,
                crate::server::DEFAULT_MAX_OPS_CONNECTIONS,
            ),
        }
    }
}

/// The descriptors the API's connection cap must leave to the rest of the process: the
/// webhook's and the ops port's caps, and 256 for files, the kube client and the log.
pub fn webhook_reserve(webhook_connections: usize, ops_connections: usize) -> usize {
    webhook_connections + ops_connections + 256
}

/// Why the API did not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    #[error("the service API has no clients (api.clients in the configuration)")]
    NoClients,
    #[error(transparent)]
    Credentials(#[from] auth::CredentialError),
    #[error(transparent)]
    Certificate(#[from] CertLoadError),
    #[error("cannot build the API's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen for the service API on {addr} (--api-listen): {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A running API listener; dropping it stops accepting (the stop channel closes).
#[derive(Debug)]
pub struct RunningApi {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningApi {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (up to 10 s), and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(11), self.task).await;
    }
}

/// Loads the clients' secrets, checks the certificate, binds, and serves. `kube` is the
/// identity objects are created with: a trusted submitter, never Portico's own account.
pub async fn start(
    opts: ApiOptions,
    config: Arc<Config>,
    kube: kube::Client,
) -> Result<RunningApi, ApiStartError> {
    if config.api.clients.is_empty() {
        return Err(ApiStartError::NoClients);
    }
    let clients = auth::load(&config.api.clients)?;
    tls::install_crypto_provider();
    let (store, watcher) = CertWatcher::start(
        &opts.tls_cert,
        &opts.tls_key,
        opts.metrics.certs.clone(),
        SystemTime::now(),
    )?;
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(store)?));
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|error| ApiStartError::Bind {
            addr: opts.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| ApiStartError::Bind {
        addr: opts.listen,
        error,
    })?;
    let app = Arc::new(rest::App {
        services: cluster::Services::new(kube, config.clone()),
        clients,
        logs: opts.logs.clone(),
        max_body_bytes: config.api.max_body_bytes,
        body_read_timeout: opts.body_read_timeout,
    });
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(collect_abandoned(
        app.services.clone(),
        Duration::from_secs(config.api.abandoned_after_seconds / 4),
        stop_rx.clone(),
    ));
    let cap = fd_reserve::apply(opts.max_connections, opts.webhook_reserve);
    let limit = ConnectionLimit::new("api", cap, &opts.connections);
    let task = tokio::spawn(run(
        listener,
        limit,
        Arc::new(ConnContext {
            acceptor,
            app,
            idle_timeout: opts.idle_timeout,
            handshake_timeout: opts.handshake_timeout,
            header_read_timeout: opts.header_read_timeout,
        }),
        watcher,
        opts.cert_check_interval,
        stop_rx,
    ));
    tracing::info!(%addr, clients = config.api.clients.len(), "service API serving HTTPS");
    Ok(RunningApi { addr, stop, task })
}

/// For `portico serve --api`: builds the API's Kubernetes client from `api.kubeconfig`,
/// `api.context` and `api.impersonate` (else the default kubeconfig or in-cluster account) and
/// starts the listener.
pub async fn start_for_serve(opts: ApiOptions, config: &Config) -> anyhow::Result<RunningApi> {
    use anyhow::Context as _;
    let api = &config.api;
    if api.clients.is_empty() {
        // Said before any cluster is looked for: it is the first thing to fix.
        return Err(ApiStartError::NoClients.into());
    }
    let options = kube::config::KubeConfigOptions {
        context: api.context.clone(),
        ..Default::default()
    };
    let mut kube_config = match &api.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("api.kubeconfig {path}: cannot read it"))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("api.kubeconfig {path}: not usable"))?
        }
        None if api.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .context("api.context: cannot load it from the default kubeconfig")?,
        None => kube::Config::infer()
            .await
            .context("the service API needs a cluster (KUBECONFIG, ~/.kube/config or the in-cluster service account)")?,
    };
    if let Some(user) = &api.impersonate {
        kube_config.auth_info.impersonate = Some(user.clone());
    }
    let client = kube::Client::try_from(kube_config)
        .context("cannot build the service API's Kubernetes client")?;
    start(opts, std::sync::Arc::new(config.clone()), client)
        .await
        .context("cannot start the service API")
}

/// Every `every`, removes the records and objects of starts and stops a replica abandoned
/// mid-way (it crashed, or was stopped): nothing is left that no call can stop.
async fn collect_abandoned(
    services: cluster::Services,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::server::stopped(&mut stop) => return,
            _ = tick.tick() => {
                if let Err(f) = services.collect_abandoned().await {
                    tracing::warn!(error = %f.message, "service API: cannot collect abandoned starts");
                }
            }
        }
    }
}

/// What every connection of the API is served with.
struct ConnContext {
    acceptor: TlsAcceptor,
    app: Arc<rest::App>,
    idle_timeout: Duration,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
}

async fn run(
    listener: TcpListener,
    mut limit: ConnectionLimit,
    ctx: Arc<ConnContext>,
    mut watcher: CertWatcher,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::server::stopped(&mut stop) => break,
            _ = tick.tick() => { watcher.poll(SystemTime::now()); }
            // A slot first: at the cap, new connections wait in the backlog.
            accepted = limit.accept(&listener) => match accepted {
                Ok((tcp, peer, slot)) => {
                    let conn = connection(tcp, ctx.clone(), stop.clone(), peer);
                    conns.spawn(async move {
                        conn.await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "service API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.shutdown().await;
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    ctx: Arc<ConnContext>,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(ctx.handshake_timeout, ctx.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "service API: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let activity = Arc::new(Activity::new());
    let request_activity = activity.clone();
    let idle_timeout = ctx.idle_timeout;
    let app = ctx.app.clone();
    let service = service_fn(move |req| {
        let app = app.clone();
        let in_flight = request_activity.begin();
        async move {
            // A request is bounded: a poll or a start that hangs on the cluster answers 504.
            let reply =
                match tokio::time::timeout(Duration::from_secs(60), rest::handle(app, req)).await {
                    Ok(r) => r,
                    Err(_) => Ok(rest::error_reply(
                        http::StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        "the cluster did not answer in time",
                    )),
                };
            drop(in_flight);
            reply
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut idle_check = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(10)));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "service API connection ended with an error");
                }
                return;
            }
            // Finish what is in flight, take nothing new; `run` bounds how long that may take.
            _ = crate::server::stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_check.tick() => {
                let idle = activity.idle_for();
                if !closing && idle > idle_timeout {
                    tracing::debug!(%peer, "service API connection idle; closing it");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else if closing && idle > 2 * idle_timeout {
                    // A graceful close waits for the peer; a silent one gets no more time.
                    return;
                }
            }
        }
    }
}
