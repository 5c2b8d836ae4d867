//! The API Portico adds to Kubernetes: the `Exposure` custom resource (`portico.dev/v1alpha1`) and
//! the per-job exposure annotations. Plain data; the CRD YAML is generated from these types
//! (`portico crd`).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The doc comment describes `spec`; the `Exposure` kind itself is described by `doc` below.
/// What to expose and how: the tag whose pods are reached, which of them, the Service, and an
/// optional Ingress.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    doc = "An Exposure keeps a Service (and optionally an Ingress) of the same name pointed at the pods of one of your ipaddr tags, across job restarts: the node port, load-balancer address or host stays while jobs come and go. The name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters), since the Service takes it. Portico's provisioner makes the objects and reports in status; `kubectl get exposures` shows the address, ports, pods reached and readiness.",
    group = "portico.dev",
    version = "v1alpha1",
    kind = "Exposure",
    namespaced,
    status = "ExposureStatus",
    shortname = "exp",
    printcolumn = r#"{"name":"Tag","type":"string","jsonPath":".spec.tag"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user","priority":1}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.service.type"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".status.address"}"#,
    printcolumn = r#"{"name":"Ports","type":"string","jsonPath":".status.ports"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".status.host","priority":1}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExposureSpec {
    /// The ipaddr tag whose pods this exposes (case sensitive): the value of the jobs'
    /// `portico.dev/ipaddr` annotation, e.g. `foobar`. Pods are reached through the route value
    /// `<your prefix>-<tag>`.
    pub tag: String,
    /// The user whose route value is exposed. Stamped by the webhook from the creator; only an
    /// administrator may name another user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Which pods are reached: `pod0` (default), the first pod of each job (the "login node");
    /// `all`, every pod of the tag.
    #[serde(default)]
    pub target: Target,
    /// The Service Portico makes, named as the Exposure.
    pub service: ServiceSpec,
    /// An Ingress to the Service (named as the Exposure), for HTTP by host name. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

/// Which pods of the route value a Service selects.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    #[default]
    Pod0,
    All,
}

/// The Service type.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    NodePort,
    LoadBalancer,
    #[default]
    ClusterIP,
}

impl ServiceType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ClusterIP => "ClusterIP",
        }
    }
}

/// The Service Portico makes for an Exposure.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `NodePort` (a port on every node), `LoadBalancer` (an address from the cluster's load
    /// balancer) or `ClusterIP` (inside the cluster only; the default).
    #[serde(rename = "type", default)]
    pub type_: ServiceType,
    /// The ports to expose, at least one; each has a name, so several can be exposed at once.
    pub ports: Vec<PortSpec>,
    /// For `type: LoadBalancer`: the load balancer's class, a requested address, annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// One port of the Service.
pub struct PortSpec {
    /// The port's name: a lowercase DNS label of at most 15 characters, e.g. `http`.
    pub name: String,
    /// The Service's port (1–65535).
    pub port: i32,
    /// The pods' port; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i32>,
    /// A fixed node port (30000–32767); assigned by the cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// Load-balancer settings of a `LoadBalancer` Service.
pub struct LoadBalancerSpec {
    /// The load balancer's class (as `spec.loadBalancerClass`); the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// A requested address (as `spec.loadBalancerIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Annotations for the Service, read by the load balancer (e.g. `metallb.io/address-pool`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// The Ingress Portico makes for an Exposure.
pub struct IngressSpec {
    /// The host name. Empty or absent: your default host, `<host prefix>-<host tag>.<cluster
    /// domain>` (e.g. `user1-foobar.apps.example.com`). An explicit host must lie in your own host
    /// space (its first label starts with `<your host prefix>-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The IngressClass, e.g. `nginx`; the cluster's default class when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// The HTTP path routed to the Service; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `Prefix` (default), `Exact` or `ImplementationSpecific`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_type: Option<String>,
    /// Which Service port the Ingress sends to; default the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// A TLS Secret for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// A certificate issuer (cert-manager's `cert-manager.io/cluster-issuer` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Extra annotations, e.g. `nginx.ingress.kubernetes.io/ssl-redirect: "true"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the provisioner observed and did; written by Portico only.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExposureStatus {
    /// The Service's name, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Node ports by port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_ports: BTreeMap<String, i32>,
    /// A short `name:port` summary for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// Where the Service answers: for a `LoadBalancer`, the load balancer's address once the
    /// cluster assigned one (none before); otherwise the Service's cluster IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The Ingress host, when there is an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How many pods the Service selects now.
    #[serde(default)]
    pub pods: i32,
    /// `Ready` (the Service is as asked and reaches pods; the reason says why not) and `Conflict`
    /// (a node port or host another object holds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A status condition (`Ready`, `Conflict`). No timestamps: the status is a pure function of
/// what was observed, so an unchanged world writes nothing.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready` or `Conflict`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// A CamelCase word, e.g. `Exposed`, `NoPods`, `WaitingForAddress`, `Conflict`.
    pub reason: String,
    /// What happened and what to do, for humans.
    #[serde(default)]
    pub message: String,
}

/// The CRD as YAML, for `portico crd` and `manifests/base/crd.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(Exposure::crd())
        .map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    unwrap_descriptions(&mut crd);
    serde_yaml::to_string(&crd)
}

/// Joins the lines of every `description` (doc comments are wrapped at 100 columns; `kubectl
/// explain` wraps text itself, and kept line breaks would break its paragraphs mid-sentence).
/// Blank lines stay paragraph breaks.
fn unwrap_descriptions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                match child {
                    serde_json::Value::String(text) if k == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crd_describes_every_field_for_humans_on_unwrapped_lines() {
        let yaml = super::crd_yaml().unwrap();
        let crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
            let description = v["description"].as_str().unwrap_or_default();
            if description.is_empty() {
                missing.push(path.to_string());
            }
            assert!(
                !description.contains("Auto-generated"),
                "{path}: {description}"
            );
            assert!(!description.contains('\n'), "{path}: {description:?}");
            if let Some(props) = v["properties"].as_object() {
                for (k, child) in props {
                    walk(&format!("{path}.{k}"), child, missing);
                }
            }
            if v["items"].is_object() {
                walk(&format!("{path}[]"), &v["items"], missing);
            }
        }
        walk("exposure", root, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }
}
