//! The pods a pass reads, kept compact: for each pod that carries a routing label, its route
//! value, owner label, controller, readiness and addresses — never the whole Pod (a stored `Pod`
//! is over 2 KiB before any of its strings, which at 10,000 pods is most of the provisioner's
//! memory).
//!
//! Fed by one label-selected watch. A relist (the first list, or after a watch expired) is
//! gathered aside and swapped in whole when it is complete, as kube-runtime's reflector does.
//!
//! The same cache answers the webhook's questions about routed pods ([`super::view`]): by
//! `(namespace, name)`, and by IP through an index kept beside the entries.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tokio::sync::{watch, Notify};

use crate::core::cluster::{canonical_ip, pod_owner, RoutedPod};
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
    /// The addresses the pod holds now (none once it has ended: its IPs are free for reuse).
    pub ips: PodIps,
}

/// A pod's addresses, inline: the apiserver allows at most one per family, so two slots hold
/// every pod without a heap allocation (34 bytes, against 24 for an empty `Vec`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodIps([Option<IpAddr>; 2]);

impl PodIps {
    /// `status.podIPs[].ip`, then `status.podIP` (the same address on a valid pod), each once;
    /// empty for a pod that has ended. What is not an IP address is skipped.
    fn of(status: Option<&PodStatus>) -> PodIps {
        let mut ips = PodIps::default();
        let Some(status) = status else { return ips };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return ips;
        }
        let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
        for ip in listed
            .chain(status.pod_ip.as_deref())
            .filter_map(canonical_ip)
        {
            ips.push(ip);
        }
        ips
    }

    fn push(&mut self, ip: IpAddr) {
        if self.0.contains(&Some(ip)) {
            return;
        }
        if let Some(slot) = self.0.iter_mut().find(|s| s.is_none()) {
            *slot = Some(ip);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.0.iter().flatten().copied()
    }
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
            ips: PodIps::of(status),
        })
    }

    /// The pod as the webhook's view names it, when it is someone's.
    pub fn routed(&self) -> Option<RoutedPod> {
        Some(RoutedPod {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            owner: pod_owner(self.owner.as_deref(), &self.route)?.to_string(),
        })
    }

    fn owned(&self) -> bool {
        pod_owner(self.owner.as_deref(), &self.route).is_some()
    }
}

type Key = (String, String);

/// The routed pods that hold one address. Nearly always one; several only when pods share an
/// address (hostNetwork pods on one node), and then every one is kept, so that deleting one
/// does not hide the others.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holders {
    One(Key),
    Many(Vec<Key>),
}

#[derive(Default)]
struct Inner {
    live: HashMap<Key, PodEntry>,
    /// A relist in progress.
    staging: Option<HashMap<Key, PodEntry>>,
    /// The addresses of the live routed pods.
    by_ip: HashMap<IpAddr, Holders>,
}

impl Inner {
    /// Puts one entry in (or takes it out, for `None`), keeping the index in step. The index
    /// is touched only when the addresses or whether the pod is someone's changed: most events
    /// are status updates of a pod that keeps its IP.
    fn set(&mut self, key: Key, entry: Option<PodEntry>) {
        let old = self.live.get(&key);
        let reindex = match (&entry, old) {
            (Some(new), Some(old)) => old.ips != new.ips || old.owned() != new.owned(),
            (None, None) => false,
            _ => true,
        };
        if reindex {
            if let Some(old) = old {
                unindex(&mut self.by_ip, &key, old);
            }
            if let Some(new) = &entry {
                index(&mut self.by_ip, &key, new);
            }
        }
        match entry {
            Some(new) => self.live.insert(key, new),
            None => self.live.remove(&key),
        };
    }

    /// Swaps in a complete relist and rebuilds the index for it, in one pass.
    fn replace(&mut self, live: HashMap<Key, PodEntry>) {
        self.live = live;
        self.by_ip = HashMap::with_capacity(self.live.len());
        for (key, entry) in &self.live {
            index(&mut self.by_ip, key, entry);
        }
    }

    fn routed_by_ip(&self, ip: IpAddr) -> Option<RoutedPod> {
        let pod = |k: &Key| self.live.get(k).and_then(PodEntry::routed);
        match self.by_ip.get(&ip)? {
            Holders::One(k) => pod(k),
            Holders::Many(keys) => {
                let pods: Vec<RoutedPod> = keys.iter().filter_map(pod).collect();
                let mut owners: Vec<&str> = pods.iter().map(|p| p.owner.as_str()).collect();
                owners.sort_unstable();
                owners.dedup();
                let mut first = pods.first()?.clone();
                // Pods of several users share the address: it is not one user's to point at.
                // Prefixes never contain ',', so the joined owners match no requester.
                if owners.len() > 1 {
                    first.owner = owners.join(",");
                }
                Some(first)
            }
        }
    }
}

/// Records that the routed pod `key` holds its addresses.
fn index(by_ip: &mut HashMap<IpAddr, Holders>, key: &Key, entry: &PodEntry) {
    if !entry.owned() {
        return;
    }
    for ip in entry.ips.iter() {
        let mut slot = match by_ip.entry(ip) {
            Entry::Vacant(slot) => {
                slot.insert(Holders::One(key.clone()));
                continue;
            }
            Entry::Occupied(slot) => slot,
        };
        match slot.get_mut() {
            Holders::One(k) if k == key => {}
            Holders::One(k) => {
                let first = std::mem::take(k);
                slot.insert(Holders::Many(vec![first, key.clone()]));
            }
            Holders::Many(keys) => {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
    }
}

/// Forgets that `key` holds its addresses; an address nobody else holds leaves the index.
fn unindex(by_ip: &mut HashMap<IpAddr, Holders>, key: &Key, entry: &PodEntry) {
    for ip in entry.ips.iter() {
        let Entry::Occupied(mut slot) = by_ip.entry(ip) else {
            continue;
        };
        match slot.get_mut() {
            Holders::One(k) if k == key => {
                slot.remove();
            }
            Holders::One(_) => {}
            Holders::Many(keys) => {
                keys.retain(|k| k != key);
                match keys.as_mut_slice() {
                    [] => {
                        slot.remove();
                    }
                    [last] => {
                        let last = std::mem::take(last);
                        slot.insert(Holders::One(last));
                    }
                    _ => {}
                }
            }
        }
    }
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

    /// Whether the first list has completed (it stays true through later relists and watch
    /// errors: the entries are then stale, not unknown).
    pub fn is_listed(&self) -> bool {
        *self.listed.borrow()
    }

    /// Reads the entries under the lock (never held across an await).
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<Key, PodEntry>) -> R) -> R {
        f(&self.lock().live)
    }

    /// The routed pod `namespace/name`, if it is someone's.
    pub fn routed(&self, namespace: &str, name: &str) -> Option<RoutedPod> {
        let key = (namespace.to_string(), name.to_string());
        self.lock().live.get(&key).and_then(PodEntry::routed)
    }

    /// The routed pod that holds this address now, if any.
    pub fn routed_by_ip(&self, ip: IpAddr) -> Option<RoutedPod> {
        self.lock().routed_by_ip(ip)
    }

    /// How many routed pods the cache holds (for the log line when the view is ready).
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            let live = guard.staging.take().unwrap_or_default();
            guard.replace(live);
            true
        }
        watcher::Event::Apply(pod) => {
            guard.set(key(&pod), PodEntry::of(policy, &pod));
            false
        }
        watcher::Event::Delete(pod) => {
            guard.set(key(&pod), None);
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

    fn with_ips(name: &str, owner: &str, ips: &[&str], phase: &str) -> Pod {
        let pod_ips: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "team",
            "labels": {"jarvice-job-ipaddr": format!("{owner}-x"), "portico.dev/owner": owner}},
            "status": {"phase": phase, "podIP": ips.first(), "podIPs": pod_ips}}))
        .unwrap()
    }

    fn owner_at(inner: &RwLock<Inner>, ip: &str) -> Option<String> {
        let ip = canonical_ip(ip).unwrap();
        inner.read().unwrap().routed_by_ip(ip).map(|p| p.owner)
    }

    fn indexed(inner: &RwLock<Inner>) -> usize {
        inner.read().unwrap().by_ip.len()
    }

    #[test]
    fn the_ip_index_follows_adds_changes_and_deletes() {
        let policy = Policy::default();
        let inner = RwLock::new(Inner::default());
        let ev = |e| apply(&inner, &policy, e);
        ev(watcher::Event::Apply(with_ips(
            "a",
            "user1",
            &["10.0.0.5", "fd00::5"],
            "Running",
        )));
        assert_eq!(owner_at(&inner, "10.0.0.5").as_deref(), Some("user1"));
        assert_eq!(owner_at(&inner, "fd00:0::5").as_deref(), Some("user1"));
        // A status update that keeps the address keeps it indexed once.
        ev(watcher::Event::Apply(with_ips(
            "a",
            "user1",
            &["10.0.0.5", "fd00::5"],
            "Running",
        )));
        assert_eq!(indexed(&inner), 2);
        // A new address replaces the old one.
        ev(watcher::Event::Apply(with_ips(
            "a",
            "user1",
            &["10.0.0.9"],
            "Running",
        )));
        assert_eq!(owner_at(&inner, "10.0.0.5"), None);
        assert_eq!(owner_at(&inner, "fd00::5"), None);
        assert_eq!(owner_at(&inner, "10.0.0.9").as_deref(), Some("user1"));
        // An ended pod frees its address; a deleted one too.
        ev(watcher::Event::Apply(with_ips(
            "a",
            "user1",
            &["10.0.0.9"],
            "Succeeded",
        )));
        assert_eq!(owner_at(&inner, "10.0.0.9"), None);
        ev(watcher::Event::Apply(with_ips(
            "b",
            "user2",
            &["10.0.0.9"],
            "Running",
        )));
        assert_eq!(owner_at(&inner, "10.0.0.9").as_deref(), Some("user2"));
        ev(watcher::Event::Delete(with_ips(
            "b",
            "user2",
            &["10.0.0.9"],
            "Running",
        )));
        assert_eq!(owner_at(&inner, "10.0.0.9"), None);
        assert_eq!(indexed(&inner), 0);
        // Dropping the routing label takes the pod out of the index too.
        ev(watcher::Event::Apply(with_ips(
            "c",
            "user1",
            &["10.0.0.3"],
            "Running",
        )));
        let mut unlabelled = with_ips("c", "user1", &["10.0.0.3"], "Running");
        unlabelled.metadata.labels = None;
        ev(watcher::Event::Apply(unlabelled));
        assert_eq!(indexed(&inner), 0);
    }

    #[test]
    fn a_shared_address_is_nobodys_and_outlives_one_holder() {
        let policy = Policy::default();
        let inner = RwLock::new(Inner::default());
        let ev = |e| apply(&inner, &policy, e);
        // hostNetwork pods of two users on one node share the node's address.
        ev(watcher::Event::Apply(with_ips(
            "a",
            "user1",
            &["192.168.1.10"],
            "Running",
        )));
        ev(watcher::Event::Apply(with_ips(
            "b",
            "user2",
            &["192.168.1.10"],
            "Running",
        )));
        let shared = owner_at(&inner, "192.168.1.10").unwrap();
        assert_eq!(shared, "user1,user2", "matches neither user");
        ev(watcher::Event::Delete(with_ips(
            "a",
            "user1",
            &["192.168.1.10"],
            "Running",
        )));
        assert_eq!(owner_at(&inner, "192.168.1.10").as_deref(), Some("user2"));
    }

    #[test]
    fn a_relist_swaps_the_index_in_with_the_entries() {
        let policy = Policy::default();
        let inner = RwLock::new(Inner::default());
        let ev = |e| apply(&inner, &policy, e);
        ev(watcher::Event::Apply(with_ips(
            "gone",
            "user1",
            &["10.0.0.1"],
            "Running",
        )));
        ev(watcher::Event::Init);
        ev(watcher::Event::InitApply(with_ips(
            "new",
            "user2",
            &["10.0.0.2"],
            "Running",
        )));
        // Until the relist completes, the old index answers.
        assert_eq!(owner_at(&inner, "10.0.0.1").as_deref(), Some("user1"));
        assert_eq!(owner_at(&inner, "10.0.0.2"), None);
        assert!(ev(watcher::Event::InitDone));
        assert_eq!(owner_at(&inner, "10.0.0.1"), None);
        assert_eq!(owner_at(&inner, "10.0.0.2").as_deref(), Some("user2"));
        assert_eq!(indexed(&inner), 1);
    }

    #[test]
    fn a_pod_without_an_owner_label_is_its_route_prefixs() {
        let policy = Policy::default();
        let mut p = with_ips("a", "user1", &["10.0.0.5"], "Running");
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .remove("portico.dev/owner");
        let entry = PodEntry::of(&policy, &p).unwrap();
        assert_eq!(entry.routed().unwrap().owner, "user1");
        assert_eq!(entry.ips.iter().count(), 1, "podIP and podIPs[0] once");
    }
}
