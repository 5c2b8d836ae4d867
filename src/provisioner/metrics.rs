//! What the provisioner reports: its Prometheus families and its audit records.
//!
//! [`Observe`] bundles both and is handed to [`super::run_observed`]; the provisioner calls it
//! after each pass ([`Observe::pass`]) and after each write ([`Observe::write`]). Label values
//! come from small fixed sets (object kinds, results), never from names or tags.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde_json::Value;

use crate::core::Policy;
use crate::server::audit_log::{now, AuditLog, AuditRecord, Change, ObjectId};
use crate::server::metrics::Metrics;

/// Labels of the write and error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `Service`, `Ingress`, `Status` (an Exposure's status), `Pod0` (the pod0
    /// label), `NodePorts` (the annotation on a workload).
    pub kind: String,
    /// `ok` or `failed`.
    pub result: String,
}

/// Labels of the managed-objects gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// `Exposure`, `Service`, `Ingress`, `Pod` (pods carrying a routing label).
    pub r#type: String,
}

/// The provisioner's metric families. Cheap to clone; clones share the values.
#[derive(Clone, Debug)]
pub struct ProvisionerMetrics {
    reconciles: Counter,
    reconcile_duration: Histogram,
    writes: Family<WriteLabels, Counter>,
    pending_retries: Gauge,
    pending_wakeups: Gauge,
    managed: Family<TypeLabels, Gauge>,
    node_ports: Gauge,
    leader: Gauge,
}

impl Default for ProvisionerMetrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            // 1 ms … ~16 s: a pass over a quiet cluster takes microseconds; one that waits on many
            // writes takes longer.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            writes: Family::default(),
            pending_retries: Gauge::default(),
            pending_wakeups: Gauge::default(),
            managed: Family::default(),
            node_ports: Gauge::default(),
            leader: Gauge::default(),
        }
    }
}

impl ProvisionerMetrics {
    /// The families, registered in `metrics` under `portico_provisioner_…`. Register once per
    /// registry.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "provisioner_reconciles",
            "Reconcile passes run by this replica (only the leader runs them)",
            m.reconciles.clone(),
        );
        metrics.register(
            "provisioner_reconcile_duration_seconds",
            "Time one reconcile pass took, writes included",
            m.reconcile_duration.clone(),
        );
        metrics.register(
            "provisioner_writes",
            "API writes by what was written and result (ok, failed); failed ones are retried with backoff",
            m.writes.clone(),
        );
        metrics.register(
            "provisioner_pending_retries",
            "Objects whose last write failed and wait for a retry (the work queue's depth)",
            m.pending_retries.clone(),
        );
        metrics.register(
            "provisioner_pending_wakeups",
            "Writes that will wake the provisioner on a timer (retries after a transient error, writes its watch has not shown yet); 0 at rest",
            m.pending_wakeups.clone(),
        );
        metrics.register(
            "provisioner_managed_objects",
            "Objects the provisioner watches and manages, by type",
            m.managed.clone(),
        );
        metrics.register(
            "provisioner_node_ports_in_use",
            "Node ports held by Services Portico manages",
            m.node_ports.clone(),
        );
        metrics.register(
            "provisioner_leader",
            "1 while this replica holds the Lease and reconciles, else 0",
            m.leader.clone(),
        );
        for kind in ["Service", "Ingress", "Status", "Pod0", "NodePorts"] {
            for result in ["ok", "failed"] {
                let _ = m.writes.get_or_create(&WriteLabels {
                    kind: kind.into(),
                    result: result.into(),
                });
            }
        }
        for t in ["Exposure", "Service", "Ingress", "Pod"] {
            let _ = m.managed.get_or_create(&TypeLabels { r#type: t.into() });
        }
        m
    }

    /// Writes counted for `kind` with `result` so far.
    pub fn writes(&self, kind: &str, result: &str) -> u64 {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .get()
    }

    /// Reconcile passes so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }
}

/// What one pass saw, for the gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassFacts {
    pub exposures: usize,
    pub services: usize,
    pub ingresses: usize,
    pub pods: usize,
    pub node_ports: usize,
    pub pending_retries: usize,
    pub pending_wakeups: usize,
}

/// Metrics and the audit trail, as the provisioner uses them.
#[derive(Clone, Debug, Default)]
pub struct Observe {
    pub metrics: ProvisionerMetrics,
    pub audit: AuditLog,
    /// Portico's identity in the records' `user` field.
    pub identity: String,
}

impl Observe {
    /// Sets the leader gauge.
    pub fn leader(&self, leading: bool) {
        self.metrics.leader.set(i64::from(leading));
    }

    /// Records a pass that ran.
    pub fn pass(&self, took: Duration, facts: PassFacts) {
        let m = &self.metrics;
        m.reconciles.inc();
        m.reconcile_duration.observe(took.as_secs_f64());
        m.pending_retries.set(facts.pending_retries as i64);
        m.pending_wakeups.set(facts.pending_wakeups as i64);
        m.node_ports.set(facts.node_ports as i64);
        for (t, n) in [
            ("Exposure", facts.exposures),
            ("Service", facts.services),
            ("Ingress", facts.ingresses),
            ("Pod", facts.pods),
        ] {
            m.managed
                .get_or_create(&TypeLabels { r#type: t.into() })
                .set(n as i64);
        }
    }

    /// Records one write: `key` is the provisioner's `Kind:namespace/name` key, `change` what was
    /// sent (JSON text, or a short description), `error` the apiserver's refusal if any.
    pub fn write(&self, policy: &Policy, key: &str, change: &str, error: Option<&str>) {
        let (kind, object) = key.split_once(':').unwrap_or(("Object", key));
        let (namespace, name) = object.split_once('/').unwrap_or(("", object));
        let result = if error.is_some() { "failed" } else { "ok" };
        self.metrics
            .writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        if !self.audit.enabled() {
            return;
        }
        let parsed = serde_json::from_str::<Value>(change).ok();
        let (operation, object_kind) = match kind {
            "Status" => ("status", "Exposure"),
            "Pod0" => ("patch", "Pod"),
            "NodePorts" => ("patch", "Workload"),
            k => (if change.is_empty() { "delete" } else { "apply" }, k),
        };
        let record = AuditRecord {
            time: now(),
            source: "provisioner",
            user: self.identity.clone(),
            operation: operation.into(),
            object: ObjectId {
                kind: object_kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            },
            route: route_in(policy, parsed.as_ref(), change),
            tag: None,
            change: match parsed {
                Some(v) => Some(v),
                None if change.is_empty() => None,
                None => Some(Value::String(change.to_string())),
            }
            .map(Change::Json),
            outcome: if error.is_some() { "failed" } else { "written" }.into(),
            reason: error.map(|_| "ApiError".to_string()),
            message: error.map(str::to_string),
            uid: None,
            dry_run: false,
        };
        self.audit.write(&record);
    }
}

/// The route value a write concerns: a Service's selector, or the pod0 change's route.
fn route_in(policy: &Policy, parsed: Option<&Value>, change: &str) -> Option<String> {
    if let Some(v) = parsed {
        let selector = &v["spec"]["selector"];
        return [policy.pod0_label(), policy.job_label()]
            .iter()
            .find_map(|k| selector[*k].as_str())
            .map(str::to_string);
    }
    // The pod0 election's change reads `Add { pod: "…", route: "…" }`.
    let rest = change.split_once("route: \"")?.1;
    rest.split_once('"').map(|(r, _)| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_registered_and_move() {
        let metrics = Metrics::new();
        let observe = Observe {
            metrics: ProvisionerMetrics::register(&metrics),
            ..Observe::default()
        };
        observe.leader(true);
        observe.pass(
            Duration::from_millis(3),
            PassFacts {
                exposures: 2,
                services: 3,
                node_ports: 1,
                pending_retries: 1,
                pending_wakeups: 2,
                ..PassFacts::default()
            },
        );
        let policy = Policy::default();
        observe.write(&policy, "Service:team/web", "{}", None);
        observe.write(&policy, "Pod0:team/p", "x", Some("nope"));
        let text = metrics.encode().unwrap();
        for needle in [
            "portico_provisioner_reconciles_total 1",
            "portico_provisioner_leader 1",
            "portico_provisioner_pending_retries 1",
            "portico_provisioner_pending_wakeups 2",
            "portico_provisioner_node_ports_in_use 1",
            "portico_provisioner_managed_objects{type=\"Service\"} 3",
            "portico_provisioner_writes_total{kind=\"Service\",result=\"ok\"} 1",
            "portico_provisioner_writes_total{kind=\"Pod0\",result=\"failed\"} 1",
            "portico_provisioner_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn routes_are_found_in_what_was_written() {
        let policy = Policy::default();
        let svc =
            serde_json::json!({"spec": {"selector": {"jarvice-pod0-job-ipaddr": "user1-foobar"}}});
        assert_eq!(
            route_in(&policy, Some(&svc), "").as_deref(),
            Some("user1-foobar")
        );
        assert_eq!(
            route_in(&policy, None, r#"Add { pod: "p", route: "user1-foobar" }"#).as_deref(),
            Some("user1-foobar")
        );
    }
}
