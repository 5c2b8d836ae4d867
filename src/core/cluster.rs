//! What the webhook knows of the cluster beyond the object under review: which Services and pods
//! are routed and whose they are. Some rules need it (a hand-written EndpointSlice that points
//! at another user's pod, an Ingress whose backend is another user's Service) and it must never
//! cost an apiserver call on the request path, so the shell keeps it from watches and the
//! decisions read it through [`ClusterView`]. Offline, a [`Routed`] snapshot built from objects
//! stands in.
//!
//! A view that has not listed yet answers [`Known::Unknown`]; the rules that need it then refuse
//! (fail closed) with a message that says so.

use std::collections::HashMap;

/// An answer from a view: known (and then possibly absent), or not known yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known<T> {
    Yes(T),
    Unknown,
}

/// A routed pod: one that carries Portico's owner label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedPod {
    pub namespace: String,
    pub name: String,
    /// The owner label's value: the owner's prefix.
    pub owner: String,
}

/// The routed Services and pods of the cluster, by the keys the rules look them up with.
pub trait ClusterView {
    /// The owner prefix of the Service `namespace/name` when it selects routing labels (`None`
    /// when it does not, or does not exist).
    fn service_owner(&self, namespace: &str, name: &str) -> Known<Option<String>>;
    /// The routed pod `namespace/name`, if there is one.
    fn pod(&self, namespace: &str, name: &str) -> Known<Option<RoutedPod>>;
    /// The routed pod that has this IP address, if there is one.
    fn pod_by_ip(&self, ip: &str) -> Known<Option<RoutedPod>>;
}

/// A view that knows nothing: every rule that needs the cluster refuses. What the server uses
/// when no cluster is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoView;

impl ClusterView for NoView {
    fn service_owner(&self, _: &str, _: &str) -> Known<Option<String>> {
        Known::Unknown
    }
    fn pod(&self, _: &str, _: &str) -> Known<Option<RoutedPod>> {
        Known::Unknown
    }
    fn pod_by_ip(&self, _: &str) -> Known<Option<RoutedPod>> {
        Known::Unknown
    }
}

/// A complete, known snapshot (offline review, tests): what it lacks does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// `(namespace, name)` → owner prefix, for Services that select routing labels.
    pub services: HashMap<(String, String), String>,
    /// `(namespace, name)` → the routed pod.
    pub pods: HashMap<(String, String), RoutedPod>,
    /// IP → the routed pod that has it.
    pub pod_ips: HashMap<String, RoutedPod>,
}

impl Routed {
    pub fn add_service(&mut self, namespace: &str, name: &str, owner: &str) {
        self.services
            .insert((namespace.to_string(), name.to_string()), owner.to_string());
    }

    pub fn add_pod(&mut self, namespace: &str, name: &str, owner: &str, ips: &[&str]) {
        let pod = RoutedPod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            owner: owner.to_string(),
        };
        for ip in ips {
            self.pod_ips.insert(ip.to_string(), pod.clone());
        }
        self.pods
            .insert((namespace.to_string(), name.to_string()), pod);
    }
}

impl ClusterView for Routed {
    fn service_owner(&self, namespace: &str, name: &str) -> Known<Option<String>> {
        Known::Yes(
            self.services
                .get(&(namespace.to_string(), name.to_string()))
                .cloned(),
        )
    }
    fn pod(&self, namespace: &str, name: &str) -> Known<Option<RoutedPod>> {
        Known::Yes(
            self.pods
                .get(&(namespace.to_string(), name.to_string()))
                .cloned(),
        )
    }
    fn pod_by_ip(&self, ip: &str) -> Known<Option<RoutedPod>> {
        Known::Yes(self.pod_ips.get(ip).cloned())
    }
}
