//! The object store: every object as a `serde_json::Value`, keyed by group/resource, namespace and
//! name; one global resourceVersion counter; the bounded event log that watches resume from (older
//! resourceVersions answer 410); the broadcast channel live watches listen on; and an index of
//! the cluster IPs and node ports Services hold, so that allocating them on a Service write does
//! not read every stored Service.

use crate::resources::{self, GroupResource, ResourceInfo};
use crate::util::{meta_mut, meta_str};
use serde_json::Value;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// ADDED
    Added,
    /// MODIFIED
    Modified,
    /// DELETED
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// Which resource.
    pub gr: GroupResource,
    /// Namespace ("" for cluster scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before it, for deletions).
    pub object: Value,
    /// The object before a modification.
    pub old: Option<Value>,
}

type Bucket = BTreeMap<(String, String), Value>;

/// A Service's namespace and name.
pub type ServiceKey = (String, String);

/// Which Services hold each cluster IP and node port, kept up to date by every `put` and
/// `remove` of a Service (several holders are possible: objects written straight into the store
/// skip the allocation rules).
#[derive(Default)]
struct ServiceAllocations {
    /// `spec.clusterIP` as written → its holders (headless Services hold none).
    cluster_ips: BTreeMap<String, Vec<ServiceKey>>,
    /// The IPv4 cluster IPs held, as numbers (for the lowest-free walk).
    ipv4: BTreeSet<u32>,
    /// `spec.ports[].nodePort` → its holders (a Service using a port twice is listed twice).
    node_ports: BTreeMap<i64, Vec<ServiceKey>>,
}

impl ServiceAllocations {
    fn add(&mut self, svc: &Value) {
        let key = (
            meta_str(svc, "namespace").to_string(),
            meta_str(svc, "name").to_string(),
        );
        if let Some(ip) = cluster_ip(svc) {
            if let Ok(v4) = ip.parse::<Ipv4Addr>() {
                self.ipv4.insert(u32::from(v4));
            }
            self.cluster_ips
                .entry(ip.to_string())
                .or_default()
                .push(key.clone());
        }
        for port in node_ports(svc) {
            self.node_ports.entry(port).or_default().push(key.clone());
        }
    }

    fn remove(&mut self, svc: &Value) {
        let key = (meta_str(svc, "namespace"), meta_str(svc, "name"));
        let is_key = |k: &ServiceKey| (k.0.as_str(), k.1.as_str()) == key;
        if let Some(ip) = cluster_ip(svc) {
            // The parser refuses leading zeros, so one number is one address string.
            if release(&mut self.cluster_ips, ip, is_key) {
                if let Ok(v4) = ip.parse::<Ipv4Addr>() {
                    self.ipv4.remove(&u32::from(v4));
                }
            }
        }
        for port in node_ports(svc) {
            release(&mut self.node_ports, &port, is_key);
        }
    }
}

/// Takes one holder off `at`; true when nobody holds it any more.
fn release<K: Ord + Borrow<Q>, Q: Ord + ?Sized>(
    holders: &mut BTreeMap<K, Vec<ServiceKey>>,
    at: &Q,
    is_key: impl Fn(&ServiceKey) -> bool,
) -> bool {
    let Some(list) = holders.get_mut(at) else {
        return false;
    };
    if let Some(i) = list.iter().position(is_key) {
        list.swap_remove(i);
    }
    let empty = list.is_empty();
    if empty {
        holders.remove(at);
    }
    empty
}

fn cluster_ip(svc: &Value) -> Option<&str> {
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

fn node_ports(svc: &Value) -> impl Iterator<Item = i64> + '_ {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
}

fn is_services(gr: &GroupResource) -> bool {
    gr.group.is_empty() && gr.resource == "services"
}

/// All state that survives a restart.
pub struct Store {
    objects: BTreeMap<GroupResource, Bucket>,
    rv: u64,
    log: VecDeque<Arc<WatchEvent>>,
    /// Events with rv <= this are gone from the log.
    compacted: u64,
    window: usize,
    resources: Vec<ResourceInfo>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    allocations: ServiceAllocations,
}

impl Store {
    /// An empty store keeping `window` events for watch resumption.
    pub fn new(window: usize) -> Self {
        let (tx, _) = broadcast::channel(8192);
        Self {
            objects: BTreeMap::new(),
            rv: 1,
            log: VecDeque::new(),
            compacted: 0,
            window: window.max(1),
            resources: resources::builtins(),
            tx,
            allocations: ServiceAllocations::default(),
        }
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may still resume from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets the event log: every older resourceVersion now answers 410.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.rv;
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    /// Logged events newer than `rv`.
    pub fn events_since(&self, rv: u64) -> Vec<Arc<WatchEvent>> {
        // The log is in resourceVersion order.
        let first = self.log.partition_point(|e| e.rv <= rv);
        self.log.range(first..).cloned().collect()
    }

    /// All servable resources.
    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// Finds a resource by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// Finds any version of a group/resource (the first listed).
    pub fn find_any(&self, group: &str, plural: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    /// Finds a resource by group and kind (any version).
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    /// One object.
    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(gr)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, in one namespace or all.
    pub fn list(&self, gr: &GroupResource, ns: Option<&str>) -> Vec<Value> {
        self.list_ref(gr, ns).cloned().collect()
    }

    /// Objects of a resource, in one namespace or all, borrowed (callers that filter clone only
    /// what they keep).
    pub fn list_ref<'a>(
        &'a self,
        gr: &GroupResource,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        let Some(bucket) = self.objects.get(gr) else {
            return Box::new(std::iter::empty());
        };
        match ns {
            Some(ns) => Box::new(
                bucket
                    .range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, v)| v),
            ),
            None => Box::new(bucket.values()),
        }
    }

    /// The Services whose `spec.clusterIP` is `ip` (as written).
    pub fn cluster_ip_holders(&self, ip: &str) -> &[ServiceKey] {
        self.allocations
            .cluster_ips
            .get(ip)
            .map_or(&[], Vec::as_slice)
    }

    /// The IPv4 cluster IPs held by Services within `range`, ascending, each once.
    pub fn used_ipv4(&self, range: RangeInclusive<u32>) -> impl Iterator<Item = u32> + '_ {
        self.allocations.ipv4.range(range).copied()
    }

    /// The Services whose ports use node port `port`.
    pub fn node_port_holders(&self, port: i64) -> &[ServiceKey] {
        self.allocations
            .node_ports
            .get(&port)
            .map_or(&[], Vec::as_slice)
    }

    /// Every stored object with its resource key.
    pub fn all(&self) -> impl Iterator<Item = (&GroupResource, &Value)> {
        self.objects
            .iter()
            .flat_map(|(gr, b)| b.values().map(move |v| (gr, v)))
    }

    /// The uids of every stored object.
    pub fn uids(&self) -> HashSet<String> {
        self.all()
            .map(|(_, v)| meta_str(v, "uid").to_string())
            .collect()
    }

    /// A namespace object (None when it does not exist).
    pub fn namespace(&self, ns: &str) -> Option<&Value> {
        self.get(&GroupResource::new("", "namespaces"), "", ns)
    }

    /// Stores `obj` (create or replace), stamping a new resourceVersion; returns the stored copy.
    pub fn put(&mut self, gr: &GroupResource, mut obj: Value) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        let bucket = self.objects.entry(gr.clone()).or_default();
        let old = bucket.insert((ns.clone(), name), obj.clone());
        if is_services(gr) {
            if let Some(old) = &old {
                self.allocations.remove(old);
            }
            self.allocations.add(&obj);
        }
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(WatchEvent {
            rv,
            gr: gr.clone(),
            namespace: ns,
            kind,
            object: obj.clone(),
            old,
        });
        if gr.group == "apiextensions.k8s.io" {
            self.refresh_resources();
        }
        obj
    }

    /// Removes an object; returns it (with a fresh resourceVersion, as the DELETED event carries).
    pub fn remove(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(gr)?
            .remove(&(ns.to_string(), name.to_string()))?;
        if is_services(gr) {
            self.allocations.remove(&obj);
        }
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.record(WatchEvent {
            rv,
            gr: gr.clone(),
            namespace: ns.to_string(),
            kind: EventType::Deleted,
            object: obj.clone(),
            old: None,
        });
        if gr.group == "apiextensions.k8s.io" {
            self.refresh_resources();
        }
        Some(obj)
    }

    fn record(&mut self, ev: WatchEvent) {
        let ev = Arc::new(ev);
        self.log.push_back(ev.clone());
        while self.log.len() > self.window {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.tx.send(ev);
    }

    fn refresh_resources(&mut self) {
        let mut all = resources::builtins();
        let crds = self.list(
            &GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions"),
            None,
        );
        for crd in &crds {
            for r in resources::from_crd(crd) {
                if !all
                    .iter()
                    .any(|b| b.group == r.group && b.plural == r.plural && b.version == r.version)
                {
                    all.push(r);
                }
            }
        }
        self.resources = all;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn window_compacts() {
        let mut s = Store::new(2);
        let gr = GroupResource::new("", "configmaps");
        for i in 0..5 {
            s.put(
                &gr,
                json!({"metadata": {"name": format!("c{i}"), "namespace": "d"}}),
            );
        }
        assert_eq!(s.rv(), 6);
        assert_eq!(s.compacted(), 4);
        assert_eq!(s.events_since(4).len(), 2);
        assert_eq!(s.list(&gr, Some("d")).len(), 5);
        assert_eq!(s.list(&gr, Some("e")).len(), 0);
    }
}
