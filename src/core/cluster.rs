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
use std::net::IpAddr;

use super::route::RouteValue;

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

/// Whose a pod that carries a routing label is: its owner label, else the prefix of its route
/// value (a pod stamped before the owner label existed). `None`: nobody's (a bare tag that
/// Portico never stamped), so not routed.
pub fn pod_owner<'a>(owner_label: Option<&'a str>, route: &'a str) -> Option<&'a str> {
    owner_label
        .filter(|o| !o.is_empty())
        .or_else(|| RouteValue::prefix_of(route))
}

/// An address as the view indexes it: parsed, so that `fd00::1` and `fd00:0::1` are one key,
/// and an IPv4-mapped IPv6 address (`::ffff:10.0.0.5`) is the IPv4 address it maps (the rule
/// must not be sidestepped by spelling the same address another way). `None` for anything that
/// is not an IP address (an FQDN EndpointSlice address names no pod).
pub fn canonical_ip(address: &str) -> Option<IpAddr> {
    address
        .trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
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
            self.pod_ips.insert(ip_key(ip), pod.clone());
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
        Known::Yes(self.pod_ips.get(&ip_key(ip)).cloned())
    }
}

/// The snapshot's key for an address: its canonical form, or the text itself when it is not an
/// IP address.
fn ip_key(address: &str) -> String {
    canonical_ip(address).map_or_else(|| address.to_string(), |ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_its_owner_labels_else_its_route_prefix() {
        assert_eq!(pod_owner(Some("user1"), "user2-x"), Some("user1"));
        assert_eq!(pod_owner(None, "user2-x"), Some("user2"));
        assert_eq!(pod_owner(Some(""), "user2-x"), Some("user2"));
        assert_eq!(pod_owner(None, "bare"), None);
    }

    #[test]
    fn addresses_match_however_they_are_spelled() {
        let mut routed = Routed::default();
        routed.add_pod("team", "a", "user1", &["fd00:0::1", "10.0.0.5"]);
        for spelling in ["fd00::1", "FD00:0:0::1", "::ffff:10.0.0.5", "10.0.0.5"] {
            assert!(
                matches!(routed.pod_by_ip(spelling), Known::Yes(Some(_))),
                "{spelling}"
            );
        }
        assert_eq!(routed.pod_by_ip("10.0.0.6"), Known::Yes(None));
        assert_eq!(routed.pod_by_ip("db.example.com"), Known::Yes(None));
    }
}
