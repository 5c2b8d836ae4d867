//! The cluster view offline: `portico review --cluster FILE` judges a review against the routed
//! pods and Services found in manifests or `kubectl get -o yaml` dumps, as the server judges it
//! against its watches. Objects in, a [`Routed`] snapshot out; no IO.
//!
//! It keeps what the server's watches keep, by the same rules: pods that carry the routing label
//! (owner: the owner label, else the route value's prefix; addresses: `status.podIPs` and
//! `status.podIP`, none once the pod has ended), and Services whose selector names the owner or
//! a routing label (owner: [`selector_prefix`]).

use serde_json::Value;

use crate::core::cluster::{pod_owner, Routed};
use crate::core::object::Map;
use crate::core::ownership::selector_prefix;
use crate::core::Policy;

/// The routed pods and Services among `pods` and `services` (plain Kubernetes objects).
pub fn routed<'a>(
    policy: &Policy,
    pods: impl IntoIterator<Item = &'a Value>,
    services: impl IntoIterator<Item = &'a Value>,
) -> Routed {
    let mut routed = Routed::default();
    for pod in pods {
        let labels = &pod["metadata"]["labels"];
        let Some(route) = labels[policy.job_label()].as_str() else {
            continue;
        };
        let Some(owner) = pod_owner(labels[policy.owner_label.as_str()].as_str(), route) else {
            continue;
        };
        let status = &pod["status"];
        let ended = matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
        let ips: Vec<&str> = if ended {
            Vec::new()
        } else {
            let listed = status["podIPs"].as_array().into_iter().flatten();
            listed
                .filter_map(|p| p["ip"].as_str())
                .chain(status["podIP"].as_str())
                .collect()
        };
        let (namespace, name) = place(pod);
        routed.add_pod(namespace, name, owner, &ips);
    }
    for service in services {
        let Some(selector) = service["spec"]["selector"].as_object() else {
            continue;
        };
        let selector: Map = selector
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        if let Some(owner) = selector_prefix(policy, &selector) {
            let (namespace, name) = place(service);
            routed.add_service(namespace, name, owner);
        }
    }
    routed
}

/// An object's namespace (`default` when the manifest names none, as kubectl applies it) and
/// name.
fn place(object: &Value) -> (&str, &str) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cluster::{ClusterView, Known};
    use serde_json::json;

    #[test]
    fn routed_pods_and_services_with_their_owners_and_addresses() {
        let policy = Policy::default();
        let pods = [
            json!({"metadata": {"name": "a", "namespace": "team",
                "labels": {"jarvice-job-ipaddr": "user1-x", "portico.dev/owner": "user1"}},
                "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}}),
            // Stamped before the owner label: the route's prefix.
            json!({"metadata": {"name": "b", "labels": {"jarvice-job-ipaddr": "user2-y"}},
                "status": {"podIP": "10.0.0.6"}}),
            // Ended: its address is free for another pod.
            json!({"metadata": {"name": "c", "namespace": "team", "labels": {"jarvice-job-ipaddr": "user1-z"}},
                "status": {"phase": "Succeeded", "podIP": "10.0.0.7"}}),
            // Not routed.
            json!({"metadata": {"name": "d", "namespace": "team", "labels": {"app": "x"}},
                "status": {"podIP": "10.0.0.8"}}),
        ];
        let services = [
            json!({"metadata": {"name": "web", "namespace": "team"},
                "spec": {"selector": {"jarvice-pod0-job-ipaddr": "user1-x"}}}),
            json!({"metadata": {"name": "plain", "namespace": "team"},
                "spec": {"selector": {"app": "x"}}}),
            json!({"metadata": {"name": "alias", "namespace": "team"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        ];
        let r = routed(&policy, &pods, &services);
        let owner = |ip: &str| match r.pod_by_ip(ip) {
            Known::Yes(p) => p.map(|p| p.owner),
            Known::Unknown => panic!("a snapshot is known"),
        };
        assert_eq!(owner("10.0.0.5").as_deref(), Some("user1"));
        assert_eq!(owner("fd00::5").as_deref(), Some("user1"));
        assert_eq!(owner("10.0.0.6").as_deref(), Some("user2"));
        assert_eq!(owner("10.0.0.7"), None);
        assert_eq!(owner("10.0.0.8"), None);
        assert!(matches!(r.pod("default", "b"), Known::Yes(Some(_))));
        assert!(matches!(r.pod("team", "c"), Known::Yes(Some(_))));
        assert_eq!(
            r.service_owner("team", "web"),
            Known::Yes(Some("user1".into()))
        );
        assert_eq!(r.service_owner("team", "plain"), Known::Yes(None));
        assert_eq!(r.services.len(), 1);
    }
}
