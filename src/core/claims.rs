//! Objects that point at other objects without a selector, and so around the selector rule:
//! EndpointSlices and Endpoints written by hand, ExternalName Services and Ingress backends. Each
//! may point only at what belongs to the requester (or to nobody), as the cluster's watches
//! ([`ClusterView`]) know it. When the watches have not listed yet, the request is refused: a
//! rule that cannot be checked is not waved through.

use super::cluster::{ClusterView, Known, RoutedPod};
use super::object::{Kind, Object};

/// The label that makes an EndpointSlice part of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A refusal: a short code and a message.
pub type Refusal = (&'static str, String);

const UNKNOWN: &str = "Portico's view of the cluster's routed pods and Services is not ready yet (its watches have not listed, or no cluster is configured), so it cannot check that this points only at your own; retry in a moment";

fn known<T>(answer: Known<T>) -> Result<T, Refusal> {
    match answer {
        Known::Yes(value) => Ok(value),
        Known::Unknown => Err(("view-not-ready", UNKNOWN.to_string())),
    }
}

fn foreign_pod(pod: &RoutedPod, requester: Option<&str>) -> bool {
    requester != Some(pod.owner.as_str())
}

/// A hand-written EndpointSlice or Endpoints object: it may not join another user's routed
/// Service, nor list an address or a target that is another user's routed pod.
pub fn endpoints(
    kind: &Kind,
    namespace: &str,
    object: &Object,
    requester: Option<&str>,
    view: &dyn ClusterView,
) -> Result<(), Refusal> {
    let what = kind.name();
    let service = match kind {
        Kind::EndpointSlice => object.meta.label(SERVICE_NAME_LABEL),
        _ => Some(object.name.as_str()).filter(|n| !n.is_empty()),
    };
    if let Some(service) = service {
        if let Some(owner) = known(view.service_owner(namespace, service))? {
            if requester != Some(owner.as_str()) {
                return Err((
                    "foreign-service",
                    format!("{what} {namespace}/{} joins Service {namespace}/{service}, which routes to the pods of the user with prefix \"{owner}\"; only Kubernetes' endpoint controllers fill a routed Service. Point your own selector-less Service at your own pods instead", object.name),
                ));
            }
        }
    }
    for endpoint in object.endpoints.iter().flatten() {
        if let Some((pod_ns, pod_name)) = endpoint.target_pod(namespace) {
            if let Some(pod) = known(view.pod(pod_ns, pod_name))? {
                if foreign_pod(&pod, requester) {
                    return Err((
                        "foreign-pod",
                        format!("{what} {namespace}/{} targets pod {pod_ns}/{pod_name}, which belongs to the user with prefix \"{}\"; you may only send traffic to your own pods", object.name, pod.owner),
                    ));
                }
            }
        }
        for address in &endpoint.addresses {
            // An FQDN endpoint (addressType FQDN) can name a pod or a Service through cluster DNS.
            if let Some(resolved) = dns_target(address) {
                if let Some(owner) = dns_owner(view, &resolved)? {
                    if requester != Some(owner.as_str()) {
                        return Err((
                            "foreign-pod",
                            format!("{what} {namespace}/{} lists {address:?}, which resolves to the pods of the user with prefix \"{owner}\"; you may only send traffic to your own pods", object.name),
                        ));
                    }
                }
                continue;
            }
            if let Some(pod) = known(view.pod_by_ip(address))? {
                if foreign_pod(&pod, requester) {
                    return Err((
                        "foreign-pod",
                        format!("{what} {namespace}/{} lists address {address}, which is pod {}/{} of the user with prefix \"{}\"; you may only send traffic to your own pods", object.name, pod.namespace, pod.name, pod.owner),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What an in-cluster DNS name resolves to, as cluster DNS answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsTarget {
    /// `[<pod hostname>.]<service>.<namespace>.svc[.<cluster domain>]`: a Service, or one pod of
    /// a headless Service by its hostname — either way that Service's pods.
    Service { namespace: String, name: String },
    /// `<a-b-c-d>.<namespace>.pod[.<cluster domain>]`: the pod with that IP.
    PodIp(String),
}

/// The in-cluster target of a DNS name, if it names one.
pub fn dns_target(name: &str) -> Option<DnsTarget> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() >= 3 && labels[2] == "pod" && !labels[1].is_empty() {
        let ip = if labels[0].contains(':') {
            labels[0].to_string()
        } else {
            labels[0].replace('-', ".")
        };
        return Some(DnsTarget::PodIp(ip));
    }
    // The Service is the label before the namespace before `svc`; labels before it name pods.
    let svc = labels.iter().skip(2).position(|l| *l == "svc")? + 2;
    let (service, namespace) = (labels[svc - 2], labels[svc - 1]);
    (!service.is_empty() && !namespace.is_empty()).then(|| DnsTarget::Service {
        namespace: namespace.to_string(),
        name: service.to_string(),
    })
}

/// The owner of what a DNS name resolves to, when it is someone's.
fn dns_owner(view: &dyn ClusterView, target: &DnsTarget) -> Result<Option<String>, Refusal> {
    Ok(match target {
        DnsTarget::Service { namespace, name } => known(view.service_owner(namespace, name))?,
        DnsTarget::PodIp(ip) => known(view.pod_by_ip(ip))?.map(|p| p.owner),
    })
}

/// An ExternalName Service may not alias another user's routed Service: an Ingress or a client
/// following the alias would reach that user's pods through the requester's name.
pub fn external_name(
    namespace: &str,
    object: &Object,
    requester: Option<&str>,
    view: &dyn ClusterView,
) -> Result<(), Refusal> {
    if object.service_type.as_deref() != Some("ExternalName") {
        return Ok(());
    }
    let Some(target) = object.external_name.as_deref() else {
        return Ok(());
    };
    let Some(resolved) = dns_target(target) else {
        return Ok(());
    };
    if let Some(owner) = dns_owner(view, &resolved)? {
        if requester != Some(owner.as_str()) {
            return Err((
                "foreign-service",
                format!("ExternalName Service {namespace}/{} aliases {target:?}, which resolves to the pods of the user with prefix \"{owner}\"; alias only your own Services and pods", object.name),
            ));
        }
    }
    Ok(())
}

/// An Ingress may send traffic only to Services that route to the requester's pods, or to no
/// one's.
pub fn ingress_backends(
    namespace: &str,
    object: &Object,
    requester: Option<&str>,
    view: &dyn ClusterView,
) -> Result<(), Refusal> {
    for service in object.ingress.iter().flat_map(|i| i.services.iter()) {
        if let Some(owner) = known(view.service_owner(namespace, service))? {
            if requester != Some(owner.as_str()) {
                return Err((
                    "foreign-service",
                    format!("Ingress {namespace}/{} sends traffic to Service {namespace}/{service}, which routes to the pods of the user with prefix \"{owner}\"; an Ingress may only use your own Services", object.name),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str) -> Option<DnsTarget> {
        Some(DnsTarget::Service {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    #[test]
    fn in_cluster_dns_names_are_recognised() {
        assert_eq!(
            dns_target("web.team.svc.cluster.local."),
            service("team", "web")
        );
        assert_eq!(dns_target("Web.Team.SVC"), service("team", "web"));
        // One pod of a headless Service, by its hostname: still that Service's pods.
        assert_eq!(
            dns_target("lab-0.lab.team.svc.cluster.local"),
            service("team", "lab")
        );
        assert_eq!(
            dns_target("10-0-0-7.team.pod.cluster.local"),
            Some(DnsTarget::PodIp("10.0.0.7".into()))
        );
        assert_eq!(dns_target("example.com"), None);
        assert_eq!(dns_target("web.team"), None);
        assert_eq!(dns_target("10.0.0.7"), None);
    }
}
