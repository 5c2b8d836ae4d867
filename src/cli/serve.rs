//! `portico serve`: flags, logging setup, and the runtime around [`crate::server::start`].
//!
//! Only wiring lives here: every behaviour is in [`crate::server`] (listener, certificates,
//! ops port) and [`crate::admission`] (decisions).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::FalseyValueParser;

use crate::admission::Webhook;
use crate::config::Config;
use crate::server::{self, Limits, ServeOptions};

/// Serve the admission webhook over HTTPS, and the ops endpoints over HTTP.
///
/// The webhook answers `POST /mutate` and `POST /validate` with AdmissionReview replies, over
/// TLS 1.2 or 1.3, HTTP/1.1 or HTTP/2. The certificate and key files are checked before the
/// port opens and then re-read whenever they change (checked every second): new connections get
/// the new certificate, open ones are kept. A new pair that is broken, mismatched or expired is
/// refused, logged as an error, counted in `portico_certificate_reloads_total{result="failed"}`,
/// and the last good pair stays in use.
///
/// The ops port serves `/healthz` (the process is alive), `/readyz` (the webhook port serves with
/// a certificate loaded and, when the provisioner runs, its watches have synced; not the webhook's
/// view of the cluster, below) and `/metrics` (Prometheus).
///
/// With a cluster, every replica watches pods that carry the routing label and all Services, and
/// keeps only whose they are: the webhook checks hand-written EndpointSlices and Endpoints,
/// ExternalName Services and Ingress backends against that, without an API call per request.
/// Until both watches have listed (logged once), those requests are refused with "not ready".
///
/// On SIGTERM or Ctrl-C, `/readyz` fails at once; after `--shutdown-delay` the webhook port stops
/// accepting, and requests in flight get `--shutdown-grace` to finish.
///
/// Every flag can also be set with an environment variable, `PORTICO_` followed by the flag name
/// in capitals with `_` for `-` (`PORTICO_TLS_CERT`, `PORTICO_LISTEN`, …); the flag wins. For
/// the switches, `0`, `false`, `no`, `off` or empty mean off and anything else on.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Serving certificate (PEM; the leaf first, then any intermediates), e.g. `tls.crt` of a
    /// Kubernetes TLS Secret. Made for development by `portico certs`.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "certs/tls.crt",
        env = "PORTICO_TLS_CERT"
    )]
    pub tls_cert: PathBuf,

    /// Private key of the serving certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "certs/tls.key",
        env = "PORTICO_TLS_KEY"
    )]
    pub tls_key: PathBuf,

    /// Address of the webhook's HTTPS port.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8443",
        env = "PORTICO_LISTEN"
    )]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP ops port (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:9090",
        env = "PORTICO_OPS_LISTEN"
    )]
    pub ops_listen: SocketAddr,

    /// Configuration file (YAML). Without it every key has its default; check one with
    /// `portico config check FILE`.
    #[arg(long, value_name = "FILE", env = "PORTICO_CONFIG")]
    pub config: Option<PathBuf>,

    /// Serve the webhook only, without the provisioning controller (which needs a cluster: the
    /// kubeconfig in KUBECONFIG or ~/.kube/config, or the in-cluster service account). When a
    /// cluster is configured all the same, the webhook still watches it for its view of routed
    /// pods and Services; without one, hand-written EndpointSlices and Endpoints, ExternalName
    /// Services and Ingress backends are refused.
    #[arg(long, env = "PORTICO_NO_CONTROLLER", value_parser = FalseyValueParser::new())]
    pub no_controller: bool,

    /// Run the provisioning controller only, without the webhook and its ops port.
    #[arg(
        long,
        env = "PORTICO_NO_WEBHOOK",
        value_parser = FalseyValueParser::new(),
        conflicts_with = "no_controller"
    )]
    pub no_webhook: bool,

    /// Log line format: `text` for people, `json` for log collectors (one object per line).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, env = "PORTICO_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing filter such
    /// as `info,portico::server=debug`. Denied admission requests are logged at `info`, allowed
    /// ones at `debug` (every decision is in the audit trail); request and reply bodies only at
    /// `trace`.
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "info",
        env = "PORTICO_LOG_LEVEL"
    )]
    pub log_level: String,

    /// Seconds to keep accepting connections after SIGTERM while `/readyz` already fails, so that
    /// the Service stops sending traffic here before the port closes.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5,
        env = "PORTICO_SHUTDOWN_DELAY"
    )]
    pub shutdown_delay: u64,

    /// Seconds that requests in flight get to finish once the port has closed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 20,
        env = "PORTICO_SHUTDOWN_GRACE"
    )]
    pub shutdown_grace: u64,

    /// Also serve the service API (start, poll and stop users' services from templates; see
    /// docs/service-api.md) over HTTPS on `--api-listen`, with the same certificate files. Its
    /// clients and templates are the `api` section of `--config`.
    #[arg(long, env = "PORTICO_API", value_parser = FalseyValueParser::new())]
    pub api: bool,

    /// Address of the service API's HTTPS port (with `--api`).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8444",
        env = "PORTICO_API_LISTEN"
    )]
    pub api_listen: SocketAddr,

    /// Most connections the webhook port holds open at once, TLS handshakes included. At the
    /// limit Portico stops accepting: new connections wait in the kernel's listen backlog and
    /// are served in arrival order as open ones close; open connections are never cut to make
    /// room. The webhook's connections are its own: floods of the API or ops port cannot use
    /// them. Counted in `portico_connections_deferred_total{listener="webhook"}`.
    #[arg(
        long,
        value_name = "N",
        default_value_t = server::DEFAULT_MAX_CONNECTIONS,
        value_parser = at_least_one,
        env = "PORTICO_MAX_CONNECTIONS"
    )]
    pub max_connections: usize,

    /// Most connections the ops port holds open at once (probes and scrapes); more wait in the
    /// backlog, as on the webhook port.
    #[arg(
        long,
        value_name = "N",
        default_value_t = server::DEFAULT_MAX_OPS_CONNECTIONS,
        value_parser = at_least_one,
        env = "PORTICO_OPS_MAX_CONNECTIONS"
    )]
    pub ops_max_connections: usize,

    /// Most connections the service API port holds open at once (with `--api`); more wait in
    /// the backlog, as on the webhook port.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::service_api::DEFAULT_MAX_CONNECTIONS,
        value_parser = at_least_one,
        env = "PORTICO_API_MAX_CONNECTIONS"
    )]
    pub api_max_connections: usize,
}

/// A connection limit: a whole number of at least 1 (a limit of 0 would serve nothing).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(error) => Err(format!("not a whole number: {error}")),
    }
}

/// How log lines look.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl ServeArgs {
    /// The server options these flags describe.
    pub fn options(&self) -> ServeOptions {
        let mut options = ServeOptions::new(&self.tls_cert, &self.tls_key);
        options.listen = self.listen;
        options.ops_listen = self.ops_listen;
        options.limits = Limits {
            shutdown_delay: Duration::from_secs(self.shutdown_delay),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            max_connections: self.max_connections,
            max_ops_connections: self.ops_max_connections,
            ..Limits::default()
        };
        options
    }
}

/// Sets up logging to stderr. Does nothing when a subscriber is already installed (tests).
pub fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let text = filter;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("--log-level {filter:?} is not a valid tracing filter"))?;
    // Colours only for a person at a terminal, never into a log file or collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // stderr always; also the log handlers added at run time (`/api/logs/handler/`).
        .with_writer(crate::service_api::handlers::HandlerWriter {
            handlers: crate::service_api::handlers::Handlers::global(),
        });
    // The filter is reloadable so that the service API can change levels at run time.
    use crate::service_api::logs::LogControl;
    match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let control = LogControl::new(builder.reload_handle(), text);
            if builder.try_init().is_ok() {
                control.register_global();
            }
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let control = LogControl::new(builder.reload_handle(), text);
            if builder.try_init().is_ok() {
                control.register_global();
            }
        }
    }
    Ok(())
}

/// `portico serve`, synchronous: sets up logging, builds a multi-threaded tokio runtime and runs
/// [`serve`] on it until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format, &args.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

/// `portico serve` inside an existing runtime (logging already set up): loads the
/// configuration, starts the server, and returns after a graceful shutdown on SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    for caution in config.cautions() {
        tracing::warn!(%caution, "configuration weakens a guarantee");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut opts = args.options();
    // One audit trail and one registry for the webhook and the provisioner.
    let audit = crate::server::audit_log::AuditLog::from_config(&config.audit)?;
    opts.audit = audit.clone();
    if config.audit.mode == crate::config::AuditMode::Warn {
        tracing::warn!("audit.mode is warn: denials are answered as allowed, with a warning");
    }
    let policy = std::sync::Arc::new(crate::core::Policy::new(config.clone()));
    let client = if args.no_controller {
        // The webhook alone still reads the cluster when one is configured: its view of routed
        // pods and Services. Without one, the rules that need that view refuse.
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::info!(error = %e, "no cluster configured: hand-written EndpointSlices and Endpoints, ExternalName Services and Ingress backends are refused (the webhook cannot see whose pods and Services they point at)");
                None
            }
        }
    } else {
        Some(kube::Client::try_default().await.context(
            "the provisioner needs a cluster (KUBECONFIG, ~/.kube/config or the in-cluster service account); \
             use --no-controller to serve the webhook alone",
        )?)
    };
    // Every replica that serves the webhook keeps the view, leader or not: any may be asked.
    let view = match &client {
        Some(client) if !args.no_webhook => Some(crate::provisioner::view::LiveView::spawn(
            client.clone(),
            policy.clone(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
        )),
        _ => None,
    };
    let controller = match client.filter(|_| !args.no_controller) {
        None => {
            tracing::info!("--no-controller: serving the admission webhook only");
            None
        }
        Some(client) => {
            let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
            opts.also_ready = Some(ready_rx);
            let identity = leader_identity();
            tracing::info!(%identity, "starting the provisioner (leader-elected)");
            let observe = crate::provisioner::metrics::Observe {
                metrics: crate::provisioner::metrics::ProvisionerMetrics::register(&opts.metrics),
                audit,
                identity: config.identity.portico.clone(),
            };
            let (policy, stats) = (policy.clone(), Default::default());
            Some(match view.clone() {
                Some(view) => tokio::spawn(crate::provisioner::run_sharing(
                    client, policy, identity, stop_rx, ready_tx, stats, observe, view,
                )),
                None => tokio::spawn(crate::provisioner::run_observed(
                    client, policy, identity, stop_rx, ready_tx, stats, observe,
                )),
            })
        }
    };
    let api = if args.api {
        let mut api_opts = crate::service_api::ApiOptions::new(&args.tls_cert, &args.tls_key);
        api_opts.listen = args.api_listen;
        api_opts.max_connections = args.api_max_connections;
        api_opts.webhook_reserve =
            crate::service_api::webhook_reserve(args.max_connections, args.ops_max_connections);
        // The API watches the same certificate files with a watcher of its own; it keeps its
        // metrics apart, or each rotation would be counted twice on the webhook's ops port.
        // Its connection series are its own (`listener="api"`), so they go where the ops port
        // serves them.
        api_opts.connections = opts.metrics.connections.clone();
        Some(crate::service_api::start_for_serve(api_opts, &config).await?)
    } else {
        None
    };
    if args.no_webhook {
        tracing::info!("--no-webhook: running the provisioner only");
        let signal = server::shutdown_signal().await;
        tracing::info!(signal, "shutting down");
    } else {
        let mut webhook = Webhook::new(config);
        if let Some(view) = view {
            webhook = webhook.with_view(std::sync::Arc::new(view));
        }
        let running = server::start(opts, webhook)
            .await
            .context("cannot start the webhook server")?;
        running.run_until_signal().await;
    }
    if let Some(api) = api {
        api.shutdown().await;
    }
    let _ = stop_tx.send(true);
    if let Some(task) = controller {
        // The provisioner releases its Lease on the way out, so a follower takes over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

/// This replica's name in the Lease: the pod name when the Deployment passes it in, else the
/// host name, with the process id so two processes on one host differ.
fn leader_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "portico".to_string());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn defaults_match_the_documented_interface() {
        let cli = Cli::try_parse_from(["serve"]).unwrap();
        let opts = cli.args.options();
        assert_eq!(opts.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(opts.ops_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(opts.tls_cert, PathBuf::from("certs/tls.crt"));
        assert_eq!(opts.tls_key, PathBuf::from("certs/tls.key"));
        assert_eq!(cli.args.log_format, LogFormat::Text);
        assert!(!cli.args.no_controller);
        assert_eq!(opts.limits.max_connections, 1024);
        assert_eq!(opts.limits.max_ops_connections, 64);
        assert_eq!(cli.args.api_max_connections, 256);
    }

    #[test]
    fn connection_limits_parse_and_refuse_zero() {
        let cli = Cli::try_parse_from([
            "serve",
            "--max-connections",
            "8",
            "--ops-max-connections",
            "2",
            "--api-max-connections",
            "4",
        ])
        .unwrap();
        let opts = cli.args.options();
        assert_eq!(opts.limits.max_connections, 8);
        assert_eq!(opts.limits.max_ops_connections, 2);
        assert_eq!(cli.args.api_max_connections, 4);
        for flag in [
            "--max-connections",
            "--ops-max-connections",
            "--api-max-connections",
        ] {
            assert!(
                Cli::try_parse_from(["serve", flag, "0"]).is_err(),
                "{flag} 0"
            );
            assert!(
                Cli::try_parse_from(["serve", flag, "-1"]).is_err(),
                "{flag} -1"
            );
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--no-controller",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.args.listen.to_string(), "127.0.0.1:1");
        assert!(cli.args.no_controller);
        assert_eq!(cli.args.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["serve", "--listen", "nope"]).is_err());
        assert!(Cli::try_parse_from(["serve", "--no-controller", "--no-webhook"]).is_err());
    }
}
