//! The Prometheus registry every part of Portico reports into, and the webhook's own metrics.
//!
//! One [`Metrics`] value is made at start and cloned wherever something is counted; clones share
//! the registry. Other parts (the provisioner) add their families with [`Metrics::register`] or
//! [`Metrics::with_registry`]; the ops server encodes the whole registry for `/metrics`.
//! All names carry the `portico_` prefix. Label values come from bounded sets (endpoints,
//! operations, kinds the webhook configuration routes to us, reason codes), never from user input
//! such as names or tags, so the number of series stays small.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The shared registry plus the webhook server's metric families. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Admission requests and their latency.
    pub admission: AdmissionMetrics,
    /// Serving certificate reloads and expiry.
    pub certs: CertMetrics,
    /// Open connections per listener and the connections that waited at a listener's cap.
    pub connections: ConnectionMetrics,
}

/// Labels of `portico_admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `mutate` or `validate`.
    pub endpoint: String,
    /// `CREATE`, `UPDATE`, … or empty when the body was not a review.
    pub operation: String,
    /// The reviewed object's kind, or empty when the body was not a review.
    pub kind: String,
    /// `allowed`, `mutated`, `denied`, `would-deny` (warn mode: a denial answered as allowed),
    /// or `rejected` (HTTP error: not a review, too large, …).
    pub outcome: String,
    /// The denial or rejection reason code; empty when allowed.
    pub reason: String,
}

/// Labels of `portico_admission_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

/// Labels of `portico_certificate_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `failed`.
    pub result: String,
}

/// Labels of the per-listener connection families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `webhook`, `api` or `ops`.
    pub listener: String,
}

/// Connection gauges and counters of every listener (see [`ConnectionMetrics::listener`]).
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    open: Family<ListenerLabels, Gauge>,
    limit: Family<ListenerLabels, Gauge>,
    deferred: Family<ListenerLabels, Counter>,
}

/// One listener's series: what its accept loop updates.
#[derive(Clone, Debug)]
pub struct ListenerConnections {
    /// Connections accepted and not yet closed (TLS handshakes in progress included).
    pub open: Gauge,
    /// Connections that waited in the listen backlog because the listener was at its cap.
    pub deferred: Counter,
}

/// Admission request counters and latency.
#[derive(Clone, Debug)]
pub struct AdmissionMetrics {
    requests: Family<AdmissionLabels, Counter>,
    duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
}

/// Certificate reload counters and the expiry gauge.
#[derive(Clone, Debug)]
pub struct CertMetrics {
    reloads: Family<ReloadLabels, Counter>,
    expiry_seconds: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s: a review takes tens of microseconds; anything near a second is a problem
    // (the apiserver gives up after `timeoutSeconds: 3`).
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// A fresh registry with the webhook's families and `portico_build_info` registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portico");

        let requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by endpoint, operation, kind, outcome and reason",
            requests.clone(),
        );
        let duration = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "admission_duration_seconds",
            "Time from request start to reply, body read included",
            duration.clone(),
        );

        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads after the files changed, by result (ok, failed)",
            reloads.clone(),
        );
        // Both results exist from the start so that alerts on `failed` see a zero, not nothing.
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create(&ReloadLabels {
                result: result.to_owned(),
            });
        }
        let expiry_seconds = Gauge::default();
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until the serving certificate in use expires (negative once expired)",
            expiry_seconds.clone(),
        );

        let connections = ConnectionMetrics::register(&mut registry);

        registry.register(
            "build",
            "Portico build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );

        Self {
            registry: Arc::new(Mutex::new(registry)),
            admission: AdmissionMetrics { requests, duration },
            certs: CertMetrics {
                reloads,
                expiry_seconds,
            },
            connections,
        }
    }

    /// Adds a metric under `portico_<name>`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Runs `f` with the registry, e.g. to make a sub-registry with its own prefix.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock())
    }

    /// The whole registry as OpenMetrics text (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.lock())?;
        Ok(text)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-updated in a way that
        // matters for counting, so a poisoned lock is still used.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AdmissionMetrics {
    /// Counts one request and records how long it took.
    pub fn observe(&self, labels: AdmissionLabels, elapsed: Duration) {
        self.duration
            .get_or_create(&EndpointLabels {
                endpoint: labels.endpoint.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }
}

impl CertMetrics {
    /// Counts a reload that put a new certificate in use.
    pub fn reload_ok(&self) {
        self.reload("ok");
    }

    /// Counts a reload that was rejected (the last good certificate stays in use).
    pub fn reload_failed(&self) {
        self.reload("failed");
    }

    /// Sets the seconds left before the certificate in use expires.
    pub fn set_expiry_seconds(&self, seconds_left: i64) {
        self.expiry_seconds.set(seconds_left);
    }

    fn reload(&self, result: &str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections a listener holds open now (webhook, api, ops), handshakes included",
            open.clone(),
        );
        let limit = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_limit",
            "The most connections a listener holds open at once; more wait in the listen backlog",
            limit.clone(),
        );
        let deferred = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_deferred",
            "Connections that waited in the listen backlog because their listener was at its limit",
            deferred.clone(),
        );
        Self {
            open,
            limit,
            deferred,
        }
    }

    /// The series of the listener `name` with a cap of `max` connections. Called when the
    /// listener starts, so that scrapes see its zeros (and its limit) before anything happens.
    pub fn listener(&self, name: &str, max: usize) -> ListenerConnections {
        let labels = ListenerLabels {
            listener: name.to_owned(),
        };
        self.limit
            .get_or_create(&labels)
            .set(i64::try_from(max).unwrap_or(i64::MAX));
        ListenerConnections {
            open: self.open.get_or_create_owned(&labels),
            deferred: self.deferred.get_or_create_owned(&labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_webhook_families() {
        let metrics = Metrics::new();
        metrics.admission.observe(
            AdmissionLabels {
                endpoint: "mutate".into(),
                operation: "CREATE".into(),
                kind: "Pod".into(),
                outcome: "mutated".into(),
                reason: String::new(),
            },
            Duration::from_micros(30),
        );
        metrics.certs.reload_failed();
        metrics.certs.set_expiry_seconds(42);
        let text = metrics.encode().unwrap();
        assert!(text.contains("portico_build_info{version="), "{text}");
        assert!(
            text.contains(
                "portico_admission_requests_total{endpoint=\"mutate\",operation=\"CREATE\",kind=\"Pod\",outcome=\"mutated\",reason=\"\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("portico_admission_duration_seconds_count{endpoint=\"mutate\"} 1"));
        assert!(text.contains("portico_certificate_reloads_total{result=\"failed\"} 1"));
        assert!(text.contains("portico_certificate_reloads_total{result=\"ok\"} 0"));
        assert!(text.contains("portico_certificate_expiry_seconds 42"));
    }

    #[test]
    fn encodes_connection_families_per_listener() {
        let metrics = Metrics::new();
        let webhook = metrics.connections.listener("webhook", 8);
        let _api = metrics.connections.listener("api", 4);
        webhook.open.inc();
        webhook.open.inc();
        webhook.deferred.inc();
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("portico_connections_open{listener=\"webhook\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("portico_connections_open{listener=\"api\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("portico_connections_limit{listener=\"webhook\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("portico_connections_limit{listener=\"api\"} 4"),
            "{text}"
        );
        assert!(text.contains("portico_connections_deferred_total{listener=\"webhook\"} 1"));
        assert!(text.contains("portico_connections_deferred_total{listener=\"api\"} 0"));
    }

    #[test]
    fn others_can_register() {
        let metrics = Metrics::new();
        let counter = Counter::<u64>::default();
        metrics.register("provisioner_writes", "Writes", counter.clone());
        counter.inc();
        assert!(metrics
            .encode()
            .unwrap()
            .contains("portico_provisioner_writes_total 1"));
    }
}
