//! The webhook's live [`ClusterView`]: which pods and Services are routed and whose they are,
//! kept from watches so that no admission request waits on the apiserver.
//!
//! - Routed pods come from the provisioner's own [`PodCache`] (one label-selected pod watch per
//!   replica, not two), which indexes them by IP as well.
//! - Routed Services come from a watch of every Service, of which only the Services whose
//!   selector names Portico's owner or routing labels are kept, and of those only the key and
//!   the owner prefix (a stored `Service` is kilobytes; this is a few dozen bytes).
//!
//! Every replica that serves the webhook runs these watches, leader or not: any replica may be
//! asked. The view answers [`Known::Unknown`] until both watches have listed once, and never goes
//! back to it: after a watch error the watcher relists with backoff and the view keeps answering
//! from what it last knew, as the provisioner does. Stale-but-known keeps admissions working
//! through an apiserver hiccup; the window is the watch's own latency, which a request racing a
//! pod's creation has anyway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::{watch, Notify};

use super::pods::PodCache;
use crate::core::cluster::{canonical_ip, ClusterView, Known, RoutedPod};
use crate::core::ownership::selector_prefix;
use crate::core::Policy;

type Key = (String, String);

/// The routed Services: `(namespace, name)` → owner prefix.
#[derive(Default)]
struct Owners {
    live: HashMap<Key, String>,
    /// A relist in progress, swapped in whole when complete.
    staging: Option<HashMap<Key, String>>,
}

/// The owner prefix of a Service whose selector routes to someone's pods.
fn service_owner(policy: &Policy, service: &Service) -> Option<String> {
    let selector = service.spec.as_ref()?.selector.as_ref()?;
    selector_prefix(policy, selector).map(str::to_string)
}

/// Applies one watch event; true when a relist just completed.
fn apply(owners: &RwLock<Owners>, policy: &Policy, event: watcher::Event<Service>) -> bool {
    let mut guard = owners
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = |s: &Service| (s.namespace().unwrap_or_default(), s.name_any());
    match event {
        watcher::Event::Init => {
            guard.staging = Some(HashMap::new());
            false
        }
        watcher::Event::InitApply(service) => {
            if let Some(owner) = service_owner(policy, &service) {
                guard
                    .staging
                    .get_or_insert_with(HashMap::new)
                    .insert(key(&service), owner);
            }
            false
        }
        watcher::Event::InitDone => {
            guard.live = guard.staging.take().unwrap_or_default();
            true
        }
        watcher::Event::Apply(service) => {
            match service_owner(policy, &service) {
                Some(owner) => guard.live.insert(key(&service), owner),
                None => guard.live.remove(&key(&service)),
            };
            false
        }
        watcher::Event::Delete(service) => {
            guard.live.remove(&key(&service));
            false
        }
    }
}

/// The routed Services, fed by a watch of all Services.
#[derive(Clone)]
struct ServiceOwners {
    inner: Arc<RwLock<Owners>>,
    listed: watch::Receiver<bool>,
}

impl ServiceOwners {
    fn spawn(api: Api<Service>, policy: Arc<Policy>) -> ServiceOwners {
        let inner = Arc::new(RwLock::new(Owners::default()));
        let (listed_tx, listed) = watch::channel(false);
        let owners = ServiceOwners {
            inner: inner.clone(),
            listed,
        };
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(event)) => {
                        if apply(&inner, &policy, event) {
                            let _ = listed_tx.send(true);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => tracing::warn!(error = %e, "service watch error; retrying"),
                }
            }
        });
        owners
    }

    fn get(&self, namespace: &str, name: &str) -> Option<String> {
        let key = (namespace.to_string(), name.to_string());
        self.read().live.get(&key).cloned()
    }

    fn len(&self) -> usize {
        self.read().live.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Owners> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The watch-fed view the server's webhook reads; cheap to clone (it shares the caches).
#[derive(Clone)]
pub struct LiveView {
    pods: PodCache,
    services: ServiceOwners,
    notify: Arc<Notify>,
}

impl LiveView {
    /// Starts the pod and Service watches. `notify` is woken by every pod change: pass the
    /// provisioner's, so that it can reconcile from the same cache ([`super::run_sharing`]).
    pub fn spawn(client: Client, policy: Arc<Policy>, notify: Arc<Notify>) -> LiveView {
        let pods = PodCache::spawn(
            Api::all(client.clone()),
            super::routed_pods(&policy),
            policy.clone(),
            notify.clone(),
        );
        let services = ServiceOwners::spawn(Api::all(client), policy);
        let view = LiveView {
            pods,
            services,
            notify,
        };
        let announce = view.clone();
        tokio::spawn(async move {
            if announce.ready().await.is_ok() {
                tracing::info!(
                    routed_pods = announce.pods.len(),
                    routed_services = announce.services.len(),
                    "the webhook's view of routed pods and Services is ready"
                );
            }
        });
        view
    }

    /// Whether both watches have listed once (and so the view answers).
    pub fn is_ready(&self) -> bool {
        self.pods.is_listed() && *self.services.listed.borrow()
    }

    /// Waits until both watches have listed once.
    pub async fn ready(&self) -> Result<(), watch::error::RecvError> {
        self.pods.listed().await?;
        let mut services = self.services.listed.clone();
        services.wait_for(|l| *l).await.map(|_| ())
    }

    /// The pod cache, for the provisioner to share.
    pub fn pods(&self) -> PodCache {
        self.pods.clone()
    }

    /// What the pod cache wakes on every change.
    pub fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    fn known<T>(&self, answer: impl FnOnce() -> T) -> Known<T> {
        if self.is_ready() {
            Known::Yes(answer())
        } else {
            Known::Unknown
        }
    }
}

impl ClusterView for LiveView {
    fn service_owner(&self, namespace: &str, name: &str) -> Known<Option<String>> {
        self.known(|| self.services.get(namespace, name))
    }

    fn pod(&self, namespace: &str, name: &str) -> Known<Option<RoutedPod>> {
        self.known(|| self.pods.routed(namespace, name))
    }

    fn pod_by_ip(&self, ip: &str) -> Known<Option<RoutedPod>> {
        self.known(|| canonical_ip(ip).and_then(|ip: IpAddr| self.pods.routed_by_ip(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "team"},
            "spec": {"selector": selector}}))
        .unwrap()
    }

    #[test]
    fn only_routed_services_are_kept_with_their_owner() {
        let policy = Policy::default();
        let owners = RwLock::new(Owners::default());
        apply(&owners, &policy, watcher::Event::Init);
        for s in [
            service("web", json!({"jarvice-pod0-job-ipaddr": "user1-x"})),
            service("api", json!({"portico.dev/owner": "user2", "app": "a"})),
            service("plain", json!({"app": "nginx"})),
            service("bare", json!({"jarvice-job-ipaddr": "notag"})),
        ] {
            apply(&owners, &policy, watcher::Event::InitApply(s));
        }
        assert!(owners.read().unwrap().live.is_empty(), "half a list");
        assert!(apply(&owners, &policy, watcher::Event::InitDone));
        let live = owners.read().unwrap().live.clone();
        assert_eq!(live.len(), 2, "{live:?}");
        assert_eq!(live[&("team".into(), "web".into())], "user1");
        assert_eq!(live[&("team".into(), "api".into())], "user2");
        // A selector changed away from routing labels drops the Service; a delete too.
        apply(
            &owners,
            &policy,
            watcher::Event::Apply(service("web", json!({"app": "x"}))),
        );
        apply(
            &owners,
            &policy,
            watcher::Event::Delete(service("api", json!({}))),
        );
        assert!(owners.read().unwrap().live.is_empty());
    }
}
