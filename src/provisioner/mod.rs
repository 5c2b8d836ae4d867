//! The provisioner: watches → in-memory stores → desired state → one writer.
//!
//! It watches only what it needs — Exposures, the Services and Ingresses Portico manages (by
//! label), pods that carry a routing label (by label selector; only a compact entry of their
//! route value, owner and readiness is kept: [`pods`]), and workloads (metadata and template labels only) — and after every change runs one
//! reconcile pass over everything. A pass computes desired objects with [`crate::core::desired`],
//! compares them with what it saw, and writes only the difference: server-side apply under
//! Portico's field manager for Services and Ingresses, a status patch for Exposures, a label patch
//! for the pod0 election. A world that did not change gets no request at all. Failures are kept
//! per object with exponential backoff and reported on the Exposure status and as Events.
//! Only the replica that holds the Lease writes ([`lease`]).
//!
//! The pod cache is shared with the webhook's view of the cluster ([`view`]): in `portico serve`
//! one pod watch feeds both ([`run_sharing`]).

pub mod lease;
pub mod metrics;
pub mod pods;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::api::{Exposure, ExposureStatus};
use crate::core::desired::{
    self, elect_pod0, exposure_plan, exposure_status, host_conflicts, ingress_matches, job_plan,
    service_matches, JobExposureRequest, Observed, Owner, Pod0Change, PodFacts, MANAGED_BY,
    MANAGER,
};
use crate::core::object::Map;
use crate::core::Policy;

pub use lease::{Elector, Leadership};

/// Why the provisioner could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    #[error("watch of {0} never synced: {1}")]
    Sync(&'static str, String),
}

/// Counters of what the provisioner did, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub passes: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    pub errors: std::sync::atomic::AtomicU64,
    /// After the last pass: the writes that will wake the loop on a timer (retries after a
    /// transient error, writes the watch has not shown yet). 0 at rest: a quiet cluster gets no
    /// pass until something changes.
    pub pending_wakeups: std::sync::atomic::AtomicU64,
}

/// A failed write, remembered so it is retried with backoff and reported.
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    conflict: bool,
    attempts: u32,
    retry_at: Instant,
    /// The desired object that failed; a different one is tried at once.
    fingerprint: String,
    /// Whether the loop wakes at `retry_at` for it. A transient error (no answer, 5xx, 429) is
    /// retried on a timer. A refusal (another 4xx: a node port taken, an invalid object) would
    /// be refused again in an unchanged world, so it is retried after something Portico watches
    /// changed, and otherwise only every `provisioner.refusalRecheckSeconds`: what freed a node
    /// port may be an object Portico does not watch (someone else's Service deleted).
    armed: bool,
}

/// A write that succeeded: what was written, and the version of the object the store showed
/// when it was written ("" when it showed none).
#[derive(Debug, Clone)]
struct Written {
    fingerprint: String,
    seen: String,
    /// Until when the store may lag behind it; then the write is sent again, which is harmless
    /// (an apply of the same object), so that an object deleted in the meantime comes back even
    /// if its deletion and our creation reached the store between two passes.
    until: Instant,
}

/// How long a watch may take to show Portico its own write before the write is sent again.
const WATCH_LAG: Duration = Duration::from_secs(10);

/// Whether a write is to be sent now.
enum Due {
    Now,
    /// A refusal of this very write is backing off; its message.
    BackingOff(String),
    /// Sent and accepted, and the store has not caught up with it yet.
    AlreadyWritten,
}

/// Everything one pass reads.
struct Stores {
    exposures: Store<Exposure>,
    services: Store<Service>,
    ingresses: Store<Ingress>,
    pods: pods::PodCache,
    jobs: Store<Job>,
    statefulsets: Store<StatefulSet>,
    deployments: Store<Deployment>,
}

/// The provisioner's state across passes.
pub struct Provisioner {
    client: Client,
    policy: Arc<Policy>,
    leadership: Leadership,
    stores: Stores,
    failures: HashMap<String, Failure>,
    /// Writes accepted whose result the watch has not shown yet, by key. A watch that re-lists
    /// after an apiserver or etcd restart can lag seconds behind, and the same write sent again
    /// on every pass meanwhile changes nothing (it was measured doing so ten times a second).
    written: HashMap<String, Written>,
    /// The keys this pass wanted to write; failures and written records of other keys are
    /// dropped after it (their object is gone or as desired), so nothing waits for a retry that
    /// no longer has a purpose, and no timer wakes the loop for one.
    touched: HashSet<String>,
    /// Keys of objects whose name is taken by something Portico does not manage.
    foreign: HashMap<String, Instant>,
    /// Problems reported once as an Event (a workload's bad annotations, a name taken), by key:
    /// the message last reported. Kept while a pass still meets the problem; no timer.
    reported: HashMap<String, String>,
    /// Whether this pass follows a change seen by a watch (not only a timer).
    after_change: bool,
    pub stats: Arc<Stats>,
    /// Metrics and audit records of passes and writes.
    pub observe: metrics::Observe,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn backoff(attempts: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1u32 << attempts.min(7))
        .min(MAX_BACKOFF)
}

/// Dropped from workloads before they are stored: large, and never read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

macro_rules! strip_workload {
    ($name:ident, $t:ty) => {
        fn $name(w: &mut $t) {
            w.metadata.managed_fields = None;
            if let Some(a) = w.metadata.annotations.as_mut() {
                a.remove(LAST_APPLIED);
            }
            w.status = None;
            if let Some(spec) = w.spec.as_mut() {
                spec.template.spec = None;
                if let Some(m) = spec.template.metadata.as_mut() {
                    m.annotations = None;
                    m.managed_fields = None;
                }
            }
        }
    };
}
strip_workload!(strip_job, Job);
strip_workload!(strip_statefulset, StatefulSet);
strip_workload!(strip_deployment, Deployment);

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
    notify: Arc<Notify>,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff().modify(strip));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => notify.notify_one(),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch error; retrying")
                }
            }
        }
    });
    reader
}

/// Waits for one store's first list.
async fn listed<K>(store: &Store<K>, kind: &'static str) -> Result<(), ProvisionerError>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .wait_until_ready()
        .await
        .map_err(|e| ProvisionerError::Sync(kind, e.to_string()))
}

fn no_strip<K>(_: &mut K) {}

/// The pods the provisioner and the webhook's view read: those that carry the routing label.
fn routed_pods(policy: &Policy) -> watcher::Config {
    watcher::Config::default().labels(policy.job_label())
}

/// The version of an object as the store shows it: "" when it shows none.
fn version(meta: Option<&ObjectMeta>) -> String {
    meta.and_then(|m| m.resource_version.clone())
        .unwrap_or_default()
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn exposure_owner(ex: &Exposure) -> Owner {
    Owner {
        api_version: "portico.dev/v1alpha1".into(),
        kind: "Exposure".into(),
        name: ex.name_any(),
        uid: ex.metadata.uid.clone().unwrap_or_default(),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 409 || (s.code == 422 && s.message.contains("already allocated"))
        }
        _ => false,
    }
}

/// Whether an error may pass by itself (no answer, the server's own failure, throttling), as
/// opposed to a refusal of the request that an unchanged world would repeat.
fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => !(400..500).contains(&s.code) || s.code == 408 || s.code == 429,
        _ => true,
    }
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

impl Provisioner {
    /// Starts the watches; [`Provisioner::run`] reconciles.
    pub fn start(
        client: Client,
        policy: Arc<Policy>,
        leadership: Leadership,
        notify: Arc<Notify>,
    ) -> Self {
        let pods = pods::PodCache::spawn(
            Api::all(client.clone()),
            routed_pods(&policy),
            policy.clone(),
            notify.clone(),
        );
        Self::start_with_pods(client, policy, leadership, notify, pods)
    }

    /// [`Provisioner::start`] reading pods from a cache already running (the webhook's view's),
    /// whose changes wake `notify`.
    pub fn start_with_pods(
        client: Client,
        policy: Arc<Policy>,
        leadership: Leadership,
        notify: Arc<Notify>,
        pods: pods::PodCache,
    ) -> Self {
        let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
        let stores = Stores {
            exposures: spawn_watch(
                Api::all(client.clone()),
                watcher::Config::default(),
                no_strip,
                notify.clone(),
            ),
            services: spawn_watch(
                Api::all(client.clone()),
                managed.clone(),
                no_strip,
                notify.clone(),
            ),
            ingresses: spawn_watch(Api::all(client.clone()), managed, no_strip, notify.clone()),
            pods,
            jobs: spawn_watch(
                Api::all(client.clone()),
                watcher::Config::default(),
                strip_job,
                notify.clone(),
            ),
            statefulsets: spawn_watch(
                Api::all(client.clone()),
                watcher::Config::default(),
                strip_statefulset,
                notify.clone(),
            ),
            deployments: spawn_watch(
                Api::all(client.clone()),
                watcher::Config::default(),
                strip_deployment,
                notify,
            ),
        };
        Provisioner {
            client,
            policy,
            leadership,
            stores,
            failures: HashMap::new(),
            written: HashMap::new(),
            touched: HashSet::new(),
            foreign: HashMap::new(),
            reported: HashMap::new(),
            after_change: true,
            stats: Arc::default(),
            observe: metrics::Observe::default(),
        }
    }

    /// Waits until every watch has listed once.
    pub async fn synced(&self) -> Result<(), ProvisionerError> {
        let s = &self.stores;
        listed(&s.exposures, "exposures").await?;
        listed(&s.services, "services").await?;
        listed(&s.ingresses, "ingresses").await?;
        s.pods
            .listed()
            .await
            .map_err(|e| ProvisionerError::Sync("pods", e.to_string()))?;
        listed(&s.jobs, "jobs").await?;
        listed(&s.statefulsets, "statefulsets").await?;
        listed(&s.deployments, "deployments").await
    }

    /// Reconciles after every change (debounced) and when a retry falls due, until shutdown.
    pub async fn run(
        mut self,
        notify: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        ready: watch::Sender<bool>,
    ) {
        if let Err(e) = self.synced().await {
            tracing::error!(error = %e, "provisioner cannot start");
            return;
        }
        let _ = ready.send(true);
        tracing::info!("provisioner synced; reconciling");
        let mut leadership = self.leadership.clone();
        loop {
            self.observe.leader(self.leadership.is_leader());
            if self.leadership.is_leader() {
                self.pass().await;
            }
            // No timer at rest: every change reaches the loop through a watch, so a pass with
            // nothing pending is only ever followed by one when something changes.
            let wake = self.next_wakeup();
            let timer = async {
                match wake {
                    Some(t) => {
                        let wait = t.saturating_duration_since(Instant::now());
                        tokio::time::sleep(wait.max(Duration::from_millis(50))).await
                    }
                    None => std::future::pending().await,
                }
            };
            self.after_change = tokio::select! {
                _ = notify.notified() => true,
                _ = leadership.changed() => true,
                _ = timer => false,
                _ = shutdown.changed() => false,
            };
            if *shutdown.borrow() {
                break;
            }
            // Let a burst of watch events land before the next pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the problem `message` keyed `key` is new (not reported since a pass last met it
    /// with this message): reported once, then not again while it lasts.
    fn first_report(&mut self, key: &str, message: &str) -> bool {
        self.touched.insert(key.to_string());
        let new = self.reported.get(key).map(String::as_str) != Some(message);
        if new {
            self.reported.insert(key.to_string(), message.to_string());
        }
        new
    }

    /// When the loop must wake without a watch event: the earliest armed retry or unconfirmed
    /// write, or the slow recheck of a refusal; `None` at rest.
    fn next_wakeup(&self) -> Option<Instant> {
        let recheck = Duration::from_secs(u64::from(
            self.policy.config.provisioner.refusal_recheck_seconds,
        ));
        let retries = self.failures.values().map(|f| {
            if f.armed {
                f.retry_at
            } else {
                f.retry_at + recheck
            }
        });
        retries.chain(self.written.values().map(|w| w.until)).min()
    }

    /// How many writes [`Provisioner::next_wakeup`] waits for.
    fn pending_wakeups(&self) -> usize {
        self.failures.values().filter(|f| f.armed).count() + self.written.len()
    }

    /// Whether the write `fingerprint` under `key` is to be sent now, the store showing the
    /// object at version `seen`.
    fn due_write(&mut self, key: &str, fingerprint: &str, seen: Option<&str>) -> Due {
        self.touched.insert(key.to_string());
        if let (Some(w), Some(seen)) = (self.written.get(key), seen) {
            if w.fingerprint == fingerprint && w.seen == seen && Instant::now() < w.until {
                return Due::AlreadyWritten;
            }
        }
        let after_change = self.after_change;
        match self.failures.get_mut(key) {
            Some(f) if f.fingerprint == fingerprint && Instant::now() < f.retry_at => {
                // The world changed since the refusal: worth one more try once backed off.
                f.armed |= after_change;
                Due::BackingOff(f.message.clone())
            }
            _ => Due::Now,
        }
    }

    /// After a pass: forget the failures and written records of keys it did not want to write.
    fn forget_untouched(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        self.failures.retain(|k, _| touched.contains(k));
        self.written.retain(|k, _| touched.contains(k));
        self.reported.retain(|k, _| touched.contains(k));
    }

    /// Counts and records one write that was sent, successful or not; a refusal is remembered
    /// for backoff and returned as its message.
    fn record(
        &mut self,
        key: &str,
        fingerprint: String,
        seen: Option<&str>,
        result: Result<(), kube::Error>,
    ) -> Result<(), String> {
        self.touched.insert(key.to_string());
        self.stats
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let refusal = result
            .err()
            .map(|e| (describe(&e), is_conflict(&e), is_transient(&e)));
        self.observe.write(
            &self.policy,
            key,
            &fingerprint,
            refusal.as_ref().map(|(message, _, _)| message.as_str()),
        );
        let Some((message, conflict, transient)) = refusal else {
            self.failures.remove(key);
            match seen {
                Some(seen) => {
                    let written = Written {
                        fingerprint,
                        seen: seen.to_string(),
                        until: Instant::now() + WATCH_LAG,
                    };
                    self.written.insert(key.to_string(), written);
                }
                None => {
                    self.written.remove(key);
                }
            }
            return Ok(());
        };
        self.written.remove(key);
        self.stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let attempts = self
            .failures
            .get(key)
            .filter(|f| f.fingerprint == fingerprint)
            .map_or(0, |f| f.attempts + 1);
        tracing::warn!(object = key, error = %message, attempts, "write refused; will retry with backoff");
        self.failures.insert(
            key.to_string(),
            Failure {
                message: message.clone(),
                conflict,
                attempts,
                retry_at: Instant::now() + backoff(attempts),
                fingerprint,
                armed: transient,
            },
        );
        Err(message)
    }

    /// Server-side applies `desired` under `key`; `observed` is the object as the store shows it.
    async fn apply<K>(
        &mut self,
        key: String,
        desired: &K,
        observed: Option<&ObjectMeta>,
    ) -> Result<(), String>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let fingerprint = serde_json::to_string(desired).unwrap_or_default();
        let seen = version(observed);
        match self.due_write(&key, &fingerprint, Some(&seen)) {
            Due::Now => {}
            Due::AlreadyWritten => return Ok(()),
            Due::BackingOff(message) => return Err(message),
        }
        if !self.leadership.is_leader() {
            return Ok(());
        }
        let meta = desired.meta();
        let (ns, name) = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let params = PatchParams::apply(&self.policy.config.provisioner.field_manager).force();
        let result = api
            .patch(&name, &params, &Patch::Apply(desired))
            .await
            .map(|_| ());
        self.record(&key, fingerprint, Some(&seen), result)
    }

    /// Whether a Service or Ingress of this name exists and is not Portico's (checked once before
    /// the first apply, so Portico never takes over someone else's object).
    async fn taken<K>(&mut self, ns: &str, name: &str) -> Option<String>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let k = format!("{}:{ns}/{name}", K::kind(&Default::default()));
        if let Some(at) = self.foreign.get(&k) {
            if at.elapsed() < backoff(4) {
                return Some(format!(
                    "a {} named {name} already exists and is not managed by Portico",
                    K::kind(&Default::default())
                ));
            }
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(Some(obj))
                if obj
                    .meta()
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MANAGED_BY))
                    .map(String::as_str)
                    != Some(MANAGER) =>
            {
                self.foreign.insert(k, Instant::now());
                Some(format!(
                    "a {} named {name} already exists and is not managed by Portico",
                    K::kind(&Default::default())
                ))
            }
            _ => {
                self.foreign.remove(&k);
                None
            }
        }
    }

    /// One reconcile pass over everything.
    pub async fn pass(&mut self) {
        self.stats
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let policy = self.policy.clone();
        let (counts, facts, pod_count) = self.stores.pods.read(|pods| {
            (
                PodIndex::new(&policy, pods.values()),
                pod0_facts(pods.values()),
                pods.len(),
            )
        });
        self.exposures(&counts).await;
        self.jobs().await;
        self.pod0(facts).await;
        let services = self.stores.services.state();
        let node_ports = services
            .iter()
            .flat_map(|s| s.spec.iter().flat_map(|s| s.ports.iter().flatten()))
            .filter(|p| p.node_port.is_some())
            .count();
        // Forgotten first, so that the gauges show what is still pending after this pass.
        self.forget_untouched();
        let facts = metrics::PassFacts {
            exposures: self.stores.exposures.len(),
            services: services.len(),
            ingresses: self.stores.ingresses.len(),
            pods: pod_count,
            node_ports,
            pending_retries: self.failures.len(),
            pending_wakeups: self.pending_wakeups(),
        };
        self.stats.pending_wakeups.store(
            facts.pending_wakeups as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.observe.pass(started.elapsed(), facts);
    }

    async fn exposures(&mut self, counts: &PodIndex) {
        let policy = self.policy.clone();
        let exposures = self.stores.exposures.state();
        let mut plans = Vec::with_capacity(exposures.len());
        let mut claims = Vec::new();
        for ex in &exposures {
            let ns = ex.namespace().unwrap_or_default();
            let plan = exposure_plan(&policy, &ns, &exposure_owner(ex), &ex.spec, None);
            if let Ok(Some(host)) = plan.as_ref().map(|p| p.host.clone()) {
                let created = ex
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_rfc3339())
                    .unwrap_or_default();
                claims.push((key(&ns, &ex.name_any()), host, created));
            }
            plans.push(plan);
        }
        let losers = host_conflicts(&claims);
        for (ex, plan) in exposures.iter().zip(plans) {
            let ns = ex.namespace().unwrap_or_default();
            let name = ex.name_any();
            let k = key(&ns, &name);
            let uid = ex.metadata.uid.clone().unwrap_or_default();
            let ours = |meta: &ObjectMeta| {
                meta.owner_references
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|r| r.uid == uid))
            };
            let svc = self
                .stores
                .services
                .get(&ObjectRef::new(&name).within(&ns))
                .filter(|s| ours(&s.metadata));
            let ing = self
                .stores
                .ingresses
                .get(&ObjectRef::new(&name).within(&ns))
                .filter(|i| ours(&i.metadata));
            let mut observed = Observed {
                service: svc.as_deref(),
                ingress: ing.as_deref(),
                ..Observed::default()
            };
            if let Ok(plan) = &plan {
                observed.pods = counts.count(
                    &ns,
                    plan.service.spec.as_ref().and_then(|s| s.selector.as_ref()),
                );
                if let Some(winner) = losers.get(&k) {
                    observed.conflict = Some(format!(
                        "ingress host {} is already used by Exposure {winner}",
                        plan.host.clone().unwrap_or_default()
                    ));
                } else {
                    let svc_key = format!("Service:{k}");
                    if !svc
                        .as_deref()
                        .is_some_and(|o| service_matches(&plan.service, o))
                    {
                        let blocked = if svc.is_none() {
                            self.taken::<Service>(&ns, &name).await
                        } else {
                            None
                        };
                        match blocked {
                            Some(msg) => observed.conflict = Some(msg),
                            None => {
                                let meta = svc.as_deref().map(|o| &o.metadata);
                                if let Err(msg) =
                                    self.apply(svc_key.clone(), &plan.service, meta).await
                                {
                                    let conflict =
                                        self.failures.get(&svc_key).is_some_and(|f| f.conflict);
                                    if conflict {
                                        observed.conflict = Some(msg)
                                    } else {
                                        observed.error = Some(msg)
                                    }
                                }
                            }
                        }
                    } else {
                        self.failures.remove(&svc_key);
                    }
                    let ing_key = format!("Ingress:{k}");
                    match (&plan.ingress, &ing) {
                        (Some(d), o) if !o.as_deref().is_some_and(|o| ingress_matches(d, o)) => {
                            let blocked = if o.is_none() {
                                self.taken::<Ingress>(&ns, &name).await
                            } else {
                                None
                            };
                            match blocked {
                                Some(msg) => {
                                    observed.conflict = observed.conflict.take().or(Some(msg))
                                }
                                None => {
                                    let meta = o.as_deref().map(|o| &o.metadata);
                                    if let Err(msg) = self.apply(ing_key, d, meta).await {
                                        observed.error = observed.error.take().or(Some(msg));
                                    }
                                }
                            }
                        }
                        (None, Some(_)) if self.leadership.is_leader() => {
                            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &ns);
                            let result = api
                                .delete(&name, &DeleteParams::background())
                                .await
                                .map(|_| ());
                            let _ = self.record(&ing_key, String::new(), None, result);
                        }
                        _ => {}
                    }
                }
            }
            // A Service just applied shows up through the watch in a moment: writing "Provisioning"
            // first would cost a second status write for nothing.
            let pending = plan.is_ok()
                && observed.service.is_none()
                && observed.conflict.is_none()
                && observed.error.is_none();
            if !pending {
                let status = exposure_status(plan.as_ref(), &observed, ex.metadata.generation);
                self.write_status(ex, status).await;
            }
        }
    }

    async fn write_status(&mut self, ex: &Exposure, status: ExposureStatus) {
        let current = ex.status.clone().unwrap_or_default();
        if current == status || !self.leadership.is_leader() {
            return;
        }
        let ns = ex.namespace().unwrap_or_default();
        let name = ex.name_any();
        let k = format!("Status:{}", key(&ns, &name));
        let fingerprint = serde_json::to_string(&status).unwrap_or_default();
        let seen = ex.metadata.resource_version.clone();
        if !matches!(self.due_write(&k, &fingerprint, seen.as_deref()), Due::Now) {
            return;
        }
        let problem = desired::new_problem(&current, &status);
        let api: Api<Exposure> = Api::namespaced(self.client.clone(), &ns);
        let patch: json_patch::Patch = match serde_json::from_value(
            json!([{"op": "add", "path": "/status", "value": status}]),
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "status patch could not be built");
                return;
            }
        };
        let result = api
            .patch_status(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map(|_| ());
        if self
            .record(&k, fingerprint, seen.as_deref(), result)
            .is_ok()
        {
            if let Some((reason, message)) = problem {
                let reference = reference(&exposure_owner(ex), &ns);
                self.event(reference, false, &reason, &message).await;
            }
        }
    }

    /// A merge patch on a namespaced object.
    async fn merge_patch<K>(
        &self,
        ns: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<(), kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    /// A core/v1 Event on an object Portico changed or could not change.
    async fn event(&mut self, object: ObjectReference, normal: bool, reason: &str, message: &str) {
        let ns = object.namespace.clone().unwrap_or_default();
        let now = Time(Utc::now());
        let event = CoreEvent {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", object.name.clone().unwrap_or_default())),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(if normal { "Normal" } else { "Warning" }.to_string()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some("portico".into()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("portico".into()),
                host: None,
            }),
            ..CoreEvent::default()
        };
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    }

    /// Per-job exposure: Services (and Ingress) owned by annotated workloads.
    async fn jobs(&mut self) {
        let policy = self.policy.clone();
        let domain = &policy.config.annotation_domain;
        let mut work = Vec::new();
        work.extend(self.stores.jobs.state().iter().filter_map(|j| {
            workload_entry::<Job>(domain, &j.metadata, j.spec.as_ref().map(|s| &s.template))
        }));
        work.extend(self.stores.statefulsets.state().iter().filter_map(|s| {
            workload_entry::<StatefulSet>(domain, &s.metadata, s.spec.as_ref().map(|s| &s.template))
        }));
        work.extend(self.stores.deployments.state().iter().filter_map(|d| {
            workload_entry::<Deployment>(domain, &d.metadata, d.spec.as_ref().map(|s| &s.template))
        }));
        for (meta, owner, labels, request) in work {
            let ns = meta.namespace.clone().unwrap_or_default();
            let k = key(&ns, &owner.name);
            let plan = match job_plan(&policy, &ns, &owner, &request, &labels) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    // Reported once per distinct problem, as an Event on the workload.
                    let fp = e.to_string();
                    if self.first_report(&format!("Plan:{k}"), &fp) && self.leadership.is_leader() {
                        self.event(reference(&owner, &ns), false, e.reason(), &fp)
                            .await;
                    }
                    continue;
                }
            };
            for svc in &plan.services {
                let name = svc.metadata.name.clone().unwrap_or_default();
                let observed = self.stores.services.get(&ObjectRef::new(&name).within(&ns));
                if !observed.as_deref().is_some_and(|o| service_matches(svc, o)) {
                    if observed.is_none() {
                        if let Some(msg) = self.taken::<Service>(&ns, &name).await {
                            if self.first_report(&format!("Taken:{ns}/{name}"), &msg) {
                                self.event(reference(&owner, &ns), false, "Conflict", &msg)
                                    .await;
                            }
                            continue;
                        }
                    }
                    let meta = observed.as_deref().map(|o| &o.metadata);
                    if let Err(msg) = self.apply(format!("Service:{ns}/{name}"), svc, meta).await {
                        let conflict = self
                            .failures
                            .get(&format!("Service:{ns}/{name}"))
                            .is_some_and(|f| f.conflict && f.attempts == 0);
                        if conflict {
                            self.event(reference(&owner, &ns), false, "Conflict", &msg)
                                .await;
                        }
                    }
                }
            }
            if let Some(ing) = &plan.ingress {
                let name = ing.metadata.name.clone().unwrap_or_default();
                let observed = self
                    .stores
                    .ingresses
                    .get(&ObjectRef::new(&name).within(&ns));
                if !observed.as_deref().is_some_and(|o| ingress_matches(ing, o)) {
                    let meta = observed.as_deref().map(|o| &o.metadata);
                    let _ = self.apply(format!("Ingress:{ns}/{name}"), ing, meta).await;
                }
            }
            // Write the assigned node ports back onto the workload, once they are known.
            let exposed = plan
                .services
                .first()
                .and_then(|s| s.metadata.name.clone())
                .and_then(|n| self.stores.services.get(&ObjectRef::new(&n).within(&ns)));
            let annotation = format!("{domain}/node-ports");
            let current = meta.annotations.as_ref().and_then(|a| a.get(&annotation));
            let assigned = exposed.as_deref().and_then(desired::node_ports_summary);
            let nodeports_key = format!("NodePorts:{k}");
            let seen = meta.resource_version.clone();
            let wanted = assigned.filter(|v| Some(v) != current && self.leadership.is_leader());
            if let Some(value) = wanted
                .filter(|v| matches!(self.due_write(&nodeports_key, v, seen.as_deref()), Due::Now))
            {
                let patch =
                    json!({"metadata": {"annotations": {annotation.clone(): value.clone()}}});
                let result = match owner.kind.as_str() {
                    "Job" => self.merge_patch::<Job>(&ns, &owner.name, &patch).await,
                    "StatefulSet" => {
                        self.merge_patch::<StatefulSet>(&ns, &owner.name, &patch)
                            .await
                    }
                    _ => {
                        self.merge_patch::<Deployment>(&ns, &owner.name, &patch)
                            .await
                    }
                };
                if self
                    .record(&nodeports_key, value.clone(), seen.as_deref(), result)
                    .is_ok()
                {
                    self.event(
                        reference(&owner, &ns),
                        true,
                        "NodePortAssigned",
                        &format!("exposed on node port(s) {value}"),
                    )
                    .await;
                }
            }
        }
    }

    /// The pod0 election for jobs without indices.
    async fn pod0(&mut self, facts: Vec<(PodFacts, String)>) {
        let policy = self.policy.clone();
        // Groups are per namespace too: elect within each.
        let mut by_ns: BTreeMap<String, Vec<PodFacts>> = BTreeMap::new();
        for (f, ns) in facts {
            by_ns.entry(ns).or_default().push(f);
        }
        for (ns, facts) in by_ns {
            for change in elect_pod0(&facts) {
                if !self.leadership.is_leader() {
                    return;
                }
                let label = policy.pod0_label().to_string();
                let (pod, patch) = match &change {
                    Pod0Change::Add { pod, route } => {
                        (pod.clone(), json!({"metadata": {"labels": {label: route}}}))
                    }
                    Pod0Change::Remove { pod } => {
                        (pod.clone(), json!({"metadata": {"labels": {label: null}}}))
                    }
                };
                let k = format!("Pod0:{ns}/{pod}");
                let fp = format!("{change:?}");
                // Pods are kept as compact entries without a version: no "already written".
                if !matches!(self.due_write(&k, &fp, None), Due::Now) {
                    continue;
                }
                let result = self.merge_patch::<Pod>(&ns, &pod, &patch).await;
                let _ = self.record(&k, fp, None, result);
            }
        }
    }
}

/// The election's view of each pod that a controller owns, with its namespace.
fn pod0_facts<'a>(pods: impl Iterator<Item = &'a pods::PodEntry>) -> Vec<(PodFacts, String)> {
    pods.filter_map(|p| {
        Some((
            PodFacts {
                name: p.name.clone(),
                group: (p.controller.clone()?, p.route.clone()),
                indexed: p.indexed,
                has_pod0: p.has_pod0,
                ready: p.ready,
                deleting: p.deleting,
                created: p.created.clone(),
            },
            p.namespace.clone(),
        ))
    })
    .collect()
}

/// A workload as per-job exposure reads it: its metadata, itself as an owner, and the labels
/// Portico stamped on its pod template.
/// A workload that asks for per-job exposure, with what it asks for; `None` (before anything is
/// copied) for the many that ask for nothing.
fn workload_entry<K: Resource<DynamicType = ()>>(
    domain: &str,
    meta: &ObjectMeta,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> Option<(ObjectMeta, Owner, Map, JobExposureRequest)> {
    let request = JobExposureRequest::from_annotations(domain, meta.annotations.as_ref());
    if !request.is_requested() {
        return None;
    }
    let labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    Some((meta.clone(), owner_of::<K>(meta), labels, request))
}

fn owner_of<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> Owner {
    Owner {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    }
}

fn reference(owner: &Owner, ns: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(ns.to_string()),
        uid: Some(owner.uid.clone()),
        ..ObjectReference::default()
    }
}

/// Pods counted by (namespace, label, value), so each Exposure's count is a lookup.
struct PodIndex {
    counts: HashMap<(String, String, String, String), i32>,
    job_label: String,
    pod0_label: String,
    owner_label: String,
}

impl PodIndex {
    fn new<'a>(policy: &Policy, pods: impl Iterator<Item = &'a pods::PodEntry>) -> Self {
        let mut counts = HashMap::new();
        for p in pods.filter(|p| p.running && !p.deleting) {
            let owner = p.owner.clone().unwrap_or_default();
            let mut count = |key: &str| {
                *counts
                    .entry((
                        p.namespace.clone(),
                        key.to_string(),
                        p.route.clone(),
                        owner.clone(),
                    ))
                    .or_insert(0) += 1;
            };
            count(policy.job_label());
            if p.has_pod0 {
                count(policy.pod0_label());
            }
        }
        PodIndex {
            counts,
            job_label: policy.job_label().into(),
            pod0_label: policy.pod0_label().into(),
            owner_label: policy.owner_label.clone(),
        }
    }

    /// Running pods a Service selector (routing label + owner label) selects.
    fn count(&self, ns: &str, selector: Option<&Map>) -> i32 {
        let Some(sel) = selector else { return 0 };
        let owner = sel.get(&self.owner_label).cloned().unwrap_or_default();
        for key in [&self.pod0_label, &self.job_label] {
            if let Some(v) = sel.get(key) {
                return self
                    .counts
                    .get(&(ns.to_string(), key.clone(), v.clone(), owner))
                    .copied()
                    .unwrap_or(0);
            }
        }
        0
    }
}

/// Starts leader election and the provisioner; returns when `shutdown` turns true.
/// `stats` counts this replica's passes and writes (for metrics and tests).
pub async fn run(
    client: Client,
    policy: Arc<Policy>,
    identity: String,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
) {
    run_observed(
        client,
        policy,
        identity,
        shutdown,
        ready,
        stats,
        metrics::Observe::default(),
    )
    .await
}

/// [`run`], reporting into `observe` (metrics registered in the ops port's registry, the audit
/// trail).
pub async fn run_observed(
    client: Client,
    policy: Arc<Policy>,
    identity: String,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
    observe: metrics::Observe,
) {
    run_inner(
        client, policy, identity, shutdown, ready, stats, observe, None,
    )
    .await
}

/// [`run_observed`], reading pods from the webhook's view's cache instead of a watch of its own:
/// a replica that serves the webhook watches pods once.
#[allow(clippy::too_many_arguments)]
pub async fn run_sharing(
    client: Client,
    policy: Arc<Policy>,
    identity: String,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
    observe: metrics::Observe,
    view: view::LiveView,
) {
    run_inner(
        client,
        policy,
        identity,
        shutdown,
        ready,
        stats,
        observe,
        Some(view),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    client: Client,
    policy: Arc<Policy>,
    identity: String,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
    observe: metrics::Observe,
    shared: Option<view::LiveView>,
) {
    let p = &policy.config.provisioner;
    let leases = Api::namespaced(client.clone(), &p.lease_namespace);
    let (elector, leadership) = Elector::new(leases, &p.lease_name, &identity, p.lease_seconds);
    let election = tokio::spawn(elector.run(shutdown.clone()));
    let (mut provisioner, notify) = match shared {
        Some(view) => {
            let notify = view.notify();
            let provisioner = Provisioner::start_with_pods(
                client,
                policy,
                leadership,
                notify.clone(),
                view.pods(),
            );
            (provisioner, notify)
        }
        None => {
            let notify = Arc::new(Notify::new());
            let provisioner = Provisioner::start(client, policy, leadership, notify.clone());
            (provisioner, notify)
        }
    };
    provisioner.stats = stats;
    provisioner.observe = observe;
    provisioner.run(notify, shutdown, ready).await;
    let _ = election.await;
}

/// The writes counted so far.
pub fn writes(stats: &Stats) -> u64 {
    stats.writes.load(std::sync::atomic::Ordering::Relaxed)
}
