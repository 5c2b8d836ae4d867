//! The pods a pass reads, kept compact: for each pod that carries a routing label, its route
//! value, owner label, controller and readiness — never the whole Pod (a stored `Pod` is over
//! 2 KiB before any of its strings, which at 10,000 pods is most of the provisioner's memory).
//!
//! Fed by one label-selected watch. A relist (the first list, or after a watch expired) is
//! gathered aside and swapped in whole when it is complete, as kube-runtime's reflector does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tokio::sync::{watch, Notify};

use crate::core::decision::pod_index;
use crate::core::Policy;

/// What a pass needs of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    /// The route value in the routing label.
    pub route: String,
    pub has_pod0: bool,
    pub owner: Option<String>,
    /// The uid of the controlling owner (the Job, ReplicaSet, …), if any.
    pub controller: Option<String>,
    /// The pod has an index (Indexed Job, StatefulSet): its pod0 was decided at admission.
    pub indexed: bool,
    pub running: bool,
    pub ready: bool,
    pub deleting: bool,
    /// Creation time, RFC 3339 (sorts as text).
    pub created: String,
}

impl PodEntry {
    /// The entry for a pod, or `None` when it carries no routing label.
    pub fn of(policy: &Policy, pod: &Pod) -> Option<PodEntry> {
        let labels = pod.metadata.labels.as_ref()?;
        let route = labels.get(policy.job_label())?.clone();
        let annotations = pod.metadata.annotations.as_ref();
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let ready = running
            && status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Some(PodEntry {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            route,
            has_pod0: labels.contains_key(policy.pod0_label()),
            owner: labels.get(&policy.owner_label).cloned(),
            controller: pod
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.iter().find(|o| o.controller == Some(true)))
                .map(|o| o.uid.clone()),
            indexed: pod_index(Some(labels), annotations).is_some(),
            running,
            ready,
            deleting: pod.metadata.deletion_timestamp.is_some(),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_rfc3339())
                .unwrap_or_default(),
        })
    }
}

type Key = (String, String);

#[derive(Default)]
struct Inner {
    live: HashMap<Key, PodEntry>,
    /// A relist in progress.
    staging: Option<HashMap<Key, PodEntry>>,
}

/// The shared, compact view of labelled pods.
#[derive(Clone)]
pub struct PodCache {
    inner: Arc<RwLock<Inner>>,
    listed: watch::Receiver<bool>,
}

impl PodCache {
    /// Starts the watch; every change wakes `notify`.
    pub fn spawn(
        api: Api<Pod>,
        config: watcher::Config,
        policy: Arc<Policy>,
        notify: Arc<Notify>,
    ) -> PodCache {
        let inner = Arc::new(RwLock::new(Inner::default()));
        let (listed_tx, listed) = watch::channel(false);
        let cache = PodCache {
            inner: inner.clone(),
            listed,
        };
        tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(event)) => {
                        let done = apply(&inner, &policy, event);
                        if done {
                            let _ = listed_tx.send(true);
                        }
                        notify.notify_one();
                    }
                    Ok(None) => break,
                    Err(e) => tracing::warn!(error = %e, "pod watch error; retrying"),
                }
            }
        });
        cache
    }

    /// Waits for the first complete list.
    pub async fn listed(&self) -> Result<(), watch::error::RecvError> {
        let mut rx = self.listed.clone();
        rx.wait_for(|l| *l).await.map(|_| ())
    }

    /// Reads the entries under the lock (never held across an await).
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<Key, PodEntry>) -> R) -> R {
        let guard = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard.live)
    }
}

/// Applies one watch event; true when a relist just completed.
fn apply(inner: &RwLock<Inner>, policy: &Policy, event: watcher::Event<Pod>) -> bool {
    let mut guard = inner
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = |p: &Pod| (p.namespace().unwrap_or_default(), p.name_any());
    match event {
        watcher::Event::Init => {
            guard.staging = Some(HashMap::new());
            false
        }
        watcher::Event::InitApply(pod) => {
            if let Some(entry) = PodEntry::of(policy, &pod) {
                guard
                    .staging
                    .get_or_insert_with(HashMap::new)
                    .insert(key(&pod), entry);
            }
            false
        }
        watcher::Event::InitDone => {
            guard.live = guard.staging.take().unwrap_or_default();
            true
        }
        watcher::Event::Apply(pod) => {
            match PodEntry::of(policy, &pod) {
                Some(entry) => guard.live.insert(key(&pod), entry),
                None => guard.live.remove(&key(&pod)),
            };
            false
        }
        watcher::Event::Delete(pod) => {
            guard.live.remove(&key(&pod));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "team", "labels": labels},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap()
    }

    #[test]
    fn a_relist_replaces_the_view_only_when_complete() {
        let policy = Policy::default();
        let inner = RwLock::new(Inner::default());
        let routed = pod("a", json!({"jarvice-job-ipaddr": "user1-x"}));
        assert!(!apply(&inner, &policy, watcher::Event::Init));
        assert!(!apply(
            &inner,
            &policy,
            watcher::Event::InitApply(routed.clone())
        ));
        assert!(
            inner.read().unwrap().live.is_empty(),
            "half a list is not shown"
        );
        assert!(apply(&inner, &policy, watcher::Event::InitDone));
        assert_eq!(inner.read().unwrap().live.len(), 1);
        let entry = inner.read().unwrap().live.values().next().cloned().unwrap();
        assert_eq!(
            (entry.route.as_str(), entry.ready, entry.has_pod0),
            ("user1-x", true, false)
        );
        // A relabel that drops the routing label removes the pod; so does a delete.
        apply(
            &inner,
            &policy,
            watcher::Event::Apply(pod("a", json!({"app": "x"}))),
        );
        assert!(inner.read().unwrap().live.is_empty());
        apply(&inner, &policy, watcher::Event::Apply(routed.clone()));
        apply(&inner, &policy, watcher::Event::Delete(routed));
        assert!(inner.read().unwrap().live.is_empty());
    }
}
