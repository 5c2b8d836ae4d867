//! Desired state for the provisioner: the Service and Ingress an Exposure (or an annotated
//! workload) should have, which pod carries the pod0 label, and the status to report — all plain
//! functions of what was observed. The provisioner compares these with the cluster and writes
//! only the difference.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as K8sServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{Condition, ExposureSpec, ExposureStatus, PortSpec, ServiceType, Target};

use super::host::{default_host, is_dns_host, HostError};
use super::label::is_dns_label;
use super::object::Map;
use super::policy::Policy;
use super::prefix::Prefix;
use super::route::{route_value, RouteValue, TagError};

/// Label on every object Portico manages.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGER: &str = "portico";

/// Why an Exposure or an annotated workload cannot be provisioned. The message goes to the
/// object's status and Events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("user {user:?} cannot be given a routing prefix: {reason}")]
    Prefix { user: String, reason: String },
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error(
        "no ingress host: set spec.ingress.host, or provisioner.domain in Portico's configuration"
    )]
    NoDomain,
    #[error("ingress host {0:?} is not a valid lowercase DNS name (RFC 1123)")]
    BadHost(String),
    #[error(transparent)]
    DefaultHost(HostError),
    #[error("at least one port is needed")]
    NoPorts,
    #[error("port {name:?}: {reason}")]
    BadPort { name: String, reason: String },
    #[error("annotation {key}: {reason}")]
    BadAnnotation { key: String, reason: String },
    #[error(
        "the Service name {name:?} (from the {from}) is not a DNS-1035 label: {reason}; {fix}"
    )]
    BadName {
        name: String,
        from: String,
        reason: String,
        fix: String,
    },
}

impl PlanError {
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::Prefix { .. } => "NoPrefix",
            PlanError::Tag(_) => "InvalidTag",
            PlanError::NoDomain | PlanError::BadHost(_) | PlanError::DefaultHost(_) => {
                "InvalidHost"
            }
            PlanError::NoPorts | PlanError::BadPort { .. } => "InvalidPort",
            PlanError::BadAnnotation { .. } => "InvalidAnnotation",
            PlanError::BadName { .. } => "InvalidName",
        }
    }
}

/// Checks the name of a Service Portico would make; `from` says what the name comes from and
/// `fix` what to do, for the message.
pub fn check_service_name(name: &str, from: &str, fix: &str) -> Result<(), PlanError> {
    match super::label::dns1035_label_problem(name) {
        None => Ok(()),
        Some(reason) => Err(PlanError::BadName {
            name: name.into(),
            from: from.into(),
            reason: reason.into(),
            fix: fix.into(),
        }),
    }
}

/// What to do about an Exposure name that cannot name its Service.
pub const EXPOSURE_NAME_FIX: &str =
    "the Service takes the Exposure's name: create the Exposure under a name such as \"web\" or \"lab-1\"";

/// The owner of the objects being planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// An Exposure's desired objects.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposurePlan {
    pub user: String,
    pub prefix: Prefix,
    pub route: RouteValue,
    pub service: Service,
    pub ingress: Option<Ingress>,
    pub host: Option<String>,
}

/// The route value's selector for a target: the routing label plus the owner label.
pub fn selector_for(policy: &Policy, prefix: &Prefix, route: &RouteValue, target: Target) -> Map {
    let key = match target {
        Target::Pod0 => policy.pod0_label(),
        Target::All => policy.job_label(),
    };
    Map::from([
        (key.to_string(), route.to_string()),
        (policy.owner_label.clone(), prefix.to_string()),
    ])
}

fn managed_labels(policy: &Policy, prefix: &Prefix, extra: (&str, &str)) -> Map {
    Map::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (policy.owner_label.clone(), prefix.to_string()),
        (extra.0.to_string(), extra.1.to_string()),
    ])
}

fn check_port(p: &PortSpec) -> Result<(), PlanError> {
    let bad = |reason: String| {
        Err(PlanError::BadPort {
            name: p.name.clone(),
            reason,
        })
    };
    if !is_dns_label(&p.name) || p.name.len() > 15 {
        return bad("a port name must be a lowercase DNS label of at most 15 characters".into());
    }
    if !(1..=65535).contains(&p.port) || p.target_port.is_some_and(|t| !(1..=65535).contains(&t)) {
        return bad("ports must be within 1..=65535".into());
    }
    if let Some(np) = p.node_port {
        if !(30000..=32767).contains(&np) {
            return bad(format!(
                "nodePort {np} is outside the node-port range 30000-32767"
            ));
        }
    }
    Ok(())
}

fn service_ports(ports: &[PortSpec], type_: ServiceType) -> Result<Vec<ServicePort>, PlanError> {
    if ports.is_empty() {
        return Err(PlanError::NoPorts);
    }
    ports
        .iter()
        .map(|p| {
            check_port(p)?;
            Ok(ServicePort {
                name: Some(p.name.clone()),
                port: p.port,
                target_port: Some(IntOrString::Int(p.target_port.unwrap_or(p.port))),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".to_string())),
                node_port: if type_ == ServiceType::ClusterIP {
                    None
                } else {
                    p.node_port
                },
                ..ServicePort::default()
            })
        })
        .collect()
}

/// The Ingress host of an Exposure: the explicit one lowercased and checked, or the default one
/// ([`default_host`]: injective over (prefix, tag), so tags that differ only in case or in `.`
/// versus `-` get different hosts). An empty explicit host means the default, as documented for
/// `spec.ingress.host`. Whether the user may claim an explicit host is for admission to decide.
pub fn host_for(
    policy: &Policy,
    prefix: &Prefix,
    tag: &str,
    explicit: Option<&str>,
) -> Result<String, PlanError> {
    let host = match explicit.filter(|h| !h.is_empty()) {
        Some(h) => h.to_lowercase(),
        None => default_host(&policy.config.provisioner, prefix, tag).map_err(|e| match e {
            HostError::NoDomain => PlanError::NoDomain,
            e => PlanError::DefaultHost(e),
        })?,
    };
    if !is_dns_host(&host) {
        return Err(PlanError::BadHost(host));
    }
    Ok(host)
}

/// The Service and Ingress an Exposure should have.
pub fn exposure_plan(
    policy: &Policy,
    namespace: &str,
    owner: &Owner,
    spec: &ExposureSpec,
    creator: Option<&str>,
) -> Result<ExposurePlan, PlanError> {
    let user = spec
        .user
        .clone()
        .or_else(|| creator.map(str::to_string))
        .unwrap_or_default();
    let prefix = policy.prefix_for(&user).map_err(|e| PlanError::Prefix {
        user: user.clone(),
        reason: e.to_string(),
    })?;
    let route = route_value(&user, &prefix, &spec.tag)?;
    check_service_name(&owner.name, "Exposure's name", EXPOSURE_NAME_FIX)?;
    let type_ = spec.service.type_;
    let lb = spec.service.load_balancer.clone().unwrap_or_default();
    let is_lb = type_ == ServiceType::LoadBalancer;
    // The Service and the Ingress differ only in their annotations.
    let metadata = |annotations: Option<Map>| ObjectMeta {
        name: Some(owner.name.clone()),
        namespace: Some(namespace.to_string()),
        labels: Some(managed_labels(
            policy,
            &prefix,
            ("portico.dev/exposure", &owner.name),
        )),
        annotations,
        owner_references: Some(vec![owner.reference()]),
        ..ObjectMeta::default()
    };
    let service = Service {
        metadata: metadata((is_lb && !lb.annotations.is_empty()).then(|| lb.annotations.clone())),
        spec: Some(K8sServiceSpec {
            type_: Some(type_.as_str().to_string()),
            selector: Some(selector_for(policy, &prefix, &route, spec.target)),
            ports: Some(service_ports(&spec.service.ports, type_)?),
            load_balancer_class: if is_lb { lb.class.clone() } else { None },
            load_balancer_ip: if is_lb { lb.address.clone() } else { None },
            ..K8sServiceSpec::default()
        }),
        status: None,
    };
    let (ingress, host) = match &spec.ingress {
        None => (None, None),
        Some(ing) => {
            let host = host_for(policy, &prefix, &spec.tag, ing.host.as_deref())?;
            let port = match &ing.port {
                Some(p) => spec
                    .service
                    .ports
                    .iter()
                    .find(|sp| &sp.name == p)
                    .ok_or_else(|| PlanError::BadPort {
                        name: p.clone(),
                        reason: "spec.ingress.port names no port of spec.service.ports".into(),
                    })?,
                None => spec.service.ports.first().ok_or(PlanError::NoPorts)?,
            };
            let mut annotations = ing.annotations.clone();
            if let Some(issuer) = &ing.issuer {
                annotations.insert("cert-manager.io/cluster-issuer".to_string(), issuer.clone());
            }
            let tls_secret = ing
                .tls_secret
                .clone()
                .or_else(|| ing.issuer.as_ref().map(|_| format!("{}-tls", owner.name)));
            let metadata = metadata((!annotations.is_empty()).then_some(annotations));
            let route = IngressRoute {
                class: ing.ingress_class_name.clone(),
                host: host.clone(),
                path: ing.path.clone().unwrap_or_else(|| "/".to_string()),
                path_type: ing
                    .path_type
                    .clone()
                    .unwrap_or_else(|| "Prefix".to_string()),
                service: owner.name.clone(),
                port: port.name.clone(),
                tls_secret,
            };
            let ingress = ingress_for(metadata, route);
            (Some(ingress), Some(host))
        }
    };
    Ok(ExposurePlan {
        user,
        prefix,
        route,
        service,
        ingress,
        host,
    })
}

/// One host and path sent to one Service port.
struct IngressRoute {
    class: Option<String>,
    host: String,
    path: String,
    path_type: String,
    service: String,
    port: String,
    tls_secret: Option<String>,
}

fn ingress_for(metadata: ObjectMeta, r: IngressRoute) -> Ingress {
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: r.service,
            port: Some(ServiceBackendPort {
                name: Some(r.port),
                number: None,
            }),
        }),
        resource: None,
    };
    Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: r.class,
            rules: Some(vec![IngressRule {
                host: Some(r.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(r.path),
                        path_type: r.path_type,
                        backend,
                    }],
                }),
            }]),
            tls: r.tls_secret.map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![r.host]),
                    secret_name: Some(secret),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    }
}

/// Whether `labels` satisfy an equality `selector` (a Service's).
pub fn selects(selector: &Map, labels: &Map) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn subset(want: Option<&Map>, have: Option<&Map>) -> bool {
    let empty = Map::new();
    let have = have.unwrap_or(&empty);
    want.unwrap_or(&empty)
        .iter()
        .all(|(k, v)| have.get(k) == Some(v))
}

fn owned_by(want: &ObjectMeta, have: &ObjectMeta) -> bool {
    let have_refs = have.owner_references.as_deref().unwrap_or_default();
    want.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .all(|w| have_refs.iter().any(|h| h.uid == w.uid))
}

/// Whether the observed Service already has every field Portico manages as desired.
pub fn service_matches(desired: &Service, observed: &Service) -> bool {
    let (Some(d), Some(o)) = (&desired.spec, &observed.spec) else {
        return false;
    };
    let ports_match = {
        let dp = d.ports.as_deref().unwrap_or_default();
        let op = o.ports.as_deref().unwrap_or_default();
        dp.len() == op.len()
            && dp.iter().zip(op).all(|(a, b)| {
                a.name == b.name
                    && a.port == b.port
                    && a.target_port == b.target_port
                    && a.protocol.as_deref().unwrap_or("TCP")
                        == b.protocol.as_deref().unwrap_or("TCP")
                    && (a.node_port.is_none() || a.node_port == b.node_port)
            })
    };
    // The apiserver defaults `type` to ClusterIP: a desired Service that leaves it out matches a
    // stored one that shows it (else every pass would re-apply it, for ever).
    let type_of = |s: &K8sServiceSpec| s.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    d.selector == o.selector
        && type_of(d) == type_of(o)
        && ports_match
        && (d.cluster_ip.is_none() || d.cluster_ip == o.cluster_ip)
        && d.load_balancer_class == o.load_balancer_class
        && d.load_balancer_ip == o.load_balancer_ip
        && subset(
            desired.metadata.labels.as_ref(),
            observed.metadata.labels.as_ref(),
        )
        && subset(
            desired.metadata.annotations.as_ref(),
            observed.metadata.annotations.as_ref(),
        )
        && owned_by(&desired.metadata, &observed.metadata)
}

/// Whether the observed Ingress already has every field Portico manages as desired.
pub fn ingress_matches(desired: &Ingress, observed: &Ingress) -> bool {
    // With no class asked for, the apiserver's DefaultIngressClass admission fills in the
    // cluster's default class: that is not drift.
    let mut observed_spec = observed.spec.clone();
    if let (Some(d), Some(o)) = (&desired.spec, observed_spec.as_mut()) {
        if d.ingress_class_name.is_none() {
            o.ingress_class_name = None;
        }
    }
    desired.spec == observed_spec
        && subset(
            desired.metadata.labels.as_ref(),
            observed.metadata.labels.as_ref(),
        )
        && subset(
            desired.metadata.annotations.as_ref(),
            observed.metadata.annotations.as_ref(),
        )
        && owned_by(&desired.metadata, &observed.metadata)
}

/// Which of several claimants of one host keeps it: the oldest (then by key). Returns the losers,
/// each with the key of the winner.
pub fn host_conflicts<K: Ord + Clone>(claims: &[(K, String, String)]) -> BTreeMap<K, K> {
    // (key, host, order) — order is e.g. the creation timestamp in RFC 3339, which sorts as text.
    let mut by_host: BTreeMap<&str, Vec<(&String, &K)>> = BTreeMap::new();
    for (key, host, order) in claims {
        by_host.entry(host.as_str()).or_default().push((order, key));
    }
    let mut losers = BTreeMap::new();
    for (_, mut claimants) in by_host {
        claimants.sort();
        if let Some((_, winner)) = claimants.first().copied() {
            for (_, key) in claimants.into_iter().skip(1) {
                losers.insert(key.clone(), winner.clone());
            }
        }
    }
    losers
}

/// What the provisioner saw of an Exposure's world, for its status.
#[derive(Debug, Clone, Default)]
pub struct Observed<'a> {
    pub service: Option<&'a Service>,
    pub ingress: Option<&'a Ingress>,
    pub pods: i32,
    /// A conflict (node port taken, host taken, a foreign object in the way) with its message.
    pub conflict: Option<String>,
    /// The last apiserver refusal that is not a conflict.
    pub error: Option<String>,
}

fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// The status an Exposure should show, given its plan (or why it has none) and what was seen.
pub fn exposure_status(
    plan: Result<&ExposurePlan, &PlanError>,
    observed: &Observed<'_>,
    generation: Option<i64>,
) -> ExposureStatus {
    let mut status = ExposureStatus {
        observed_generation: generation,
        pods: observed.pods,
        ..ExposureStatus::default()
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            status.conditions = vec![condition("Ready", false, e.reason(), e.to_string())];
            return status;
        }
    };
    status.host = plan.host.clone();
    if let Some(svc) = observed.service {
        status.service = svc.metadata.name.clone();
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
        for p in ports.into_iter().flatten() {
            if let (Some(name), Some(np)) = (&p.name, p.node_port) {
                status.node_ports.insert(name.clone(), np);
            }
        }
        let summary: Vec<String> = ports
            .into_iter()
            .flatten()
            .map(|p| match p.node_port {
                Some(np) => format!("{}:{}", p.port, np),
                None => p.port.to_string(),
            })
            .collect();
        status.ports = (!summary.is_empty()).then(|| summary.join(","));
        status.address = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .or_else(|| {
                // A LoadBalancer's address is the load balancer's: until it has one there is
                // none to show (its cluster IP would pass for it).
                svc.spec
                    .as_ref()
                    .filter(|s| s.type_.as_deref() != Some("LoadBalancer"))
                    .and_then(|s| s.cluster_ip.clone())
                    .filter(|ip| ip != "None")
            });
    }
    let mut conditions = Vec::new();
    match (&observed.conflict, &observed.error) {
        (Some(c), _) => {
            conditions.push(condition("Ready", false, "Conflict", c.clone()));
            conditions.push(condition("Conflict", true, "Conflict", c.clone()));
        }
        (None, Some(e)) => conditions.push(condition("Ready", false, "ApiError", e.clone())),
        (None, None) => {
            let in_sync = observed
                .service
                .is_some_and(|s| service_matches(&plan.service, s))
                && match (&plan.ingress, observed.ingress) {
                    (None, _) => true,
                    (Some(d), Some(o)) => ingress_matches(d, o),
                    (Some(_), None) => false,
                };
            let waiting_lb = plan.service.spec.as_ref().and_then(|s| s.type_.as_deref())
                == Some("LoadBalancer")
                && observed
                    .service
                    .and_then(|s| s.status.as_ref())
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_none_or(|i| i.is_empty());
            if !in_sync {
                conditions.push(condition(
                    "Ready",
                    false,
                    "Provisioning",
                    "creating or updating the Service",
                ));
            } else if waiting_lb {
                conditions.push(condition(
                    "Ready",
                    false,
                    "WaitingForAddress",
                    "the load balancer has not assigned an address yet",
                ));
            } else if observed.pods == 0 {
                conditions.push(condition(
                    "Ready",
                    false,
                    "NoPods",
                    format!("no running pod carries {}", plan.route),
                ));
            } else {
                conditions.push(condition(
                    "Ready",
                    true,
                    "Exposed",
                    format!("{} pod(s) of {} selected", observed.pods, plan.route),
                ));
            }
            conditions.push(condition("Conflict", false, "NoConflict", ""));
        }
    }
    status.conditions = conditions;
    status
}

/// Per-job exposure requested by workload annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobExposureRequest {
    pub expose: Option<String>,
    pub ports: Option<String>,
    pub node_port: Option<String>,
    pub headless: bool,
}

impl JobExposureRequest {
    /// Reads the request from a workload's annotations (`<domain>/expose`, `/ports`,
    /// `/node-port`, `/headless`).
    pub fn from_annotations(domain: &str, annotations: Option<&Map>) -> JobExposureRequest {
        let get = |k: &str| {
            annotations
                .and_then(|a| a.get(&format!("{domain}/{k}")))
                .cloned()
        };
        JobExposureRequest {
            expose: get("expose"),
            ports: get("ports"),
            node_port: get("node-port"),
            headless: get("headless").is_some_and(|v| v == "true"),
        }
    }

    /// Whether the workload asks for anything at all.
    pub fn is_requested(&self) -> bool {
        self.expose.is_some() || self.headless
    }
}

/// The `name=port,…` summary of a Service's node ports, written back onto its workload; `None`
/// until the cluster has assigned one.
pub fn node_ports_summary(service: &Service) -> Option<String> {
    let assigned: Vec<String> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| Some(format!("{}={}", p.name.as_deref()?, p.node_port?)))
        .collect();
    (!assigned.is_empty()).then(|| assigned.join(","))
}

/// A problem an Exposure's new status shows that its old one did not (a conflict, a refusal, an
/// unusable spec) — reported once, as an Event, when it appears. Waiting states are no problem.
pub fn new_problem(before: &ExposureStatus, after: &ExposureStatus) -> Option<(String, String)> {
    let problem = |s: &ExposureStatus| {
        s.conditions
            .iter()
            .find(|c| {
                c.type_ == "Ready"
                    && c.status == "False"
                    && !matches!(
                        c.reason.as_str(),
                        "Provisioning" | "NoPods" | "WaitingForAddress"
                    )
            })
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    match (problem(before), problem(after)) {
        (old, Some(new)) if old.as_ref().map(|o| &o.0) != Some(&new.0) => Some(new),
        _ => None,
    }
}

/// The Services (and Ingress) a workload annotated for per-job exposure should own.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub services: Vec<Service>,
    pub ingress: Option<Ingress>,
}

/// Parses `http:5000,metrics:9090` into ports; the first gets the fixed node port when given.
pub fn parse_ports(spec: &str, node_port: Option<i32>) -> Result<Vec<PortSpec>, PlanError> {
    let mut ports = Vec::new();
    for (i, item) in spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let (name, port) = item
            .split_once(':')
            .ok_or_else(|| PlanError::BadAnnotation {
                key: "portico.dev/ports".into(),
                reason: format!("{item:?} is not name:port"),
            })?;
        let port: i32 = port.parse().map_err(|_| PlanError::BadAnnotation {
            key: "portico.dev/ports".into(),
            reason: format!("{port:?} is not a port number"),
        })?;
        let p = PortSpec {
            name: name.to_string(),
            port,
            target_port: None,
            node_port: if i == 0 { node_port } else { None },
            protocol: None,
        };
        check_port(&p)?;
        ports.push(p);
    }
    if ports.is_empty() {
        return Err(PlanError::NoPorts);
    }
    Ok(ports)
}

/// The objects a workload's exposure annotations ask for. `template` is the pod template's
/// metadata as stamped by the webhook (its routing label names the route value).
pub fn job_plan(
    policy: &Policy,
    namespace: &str,
    owner: &Owner,
    request: &JobExposureRequest,
    template_labels: &Map,
) -> Result<Option<JobPlan>, PlanError> {
    if !request.is_requested() {
        return Ok(None);
    }
    let (Some(route), Some(prefix)) = (
        template_labels.get(policy.job_label()),
        template_labels.get(&policy.owner_label),
    ) else {
        return Err(PlanError::BadAnnotation {
            key: "portico.dev/expose".into(),
            reason: format!(
                "the workload's pods carry no {} label (ask for a tag with the {} annotation)",
                policy.job_label(),
                policy.tag_annotation
            ),
        });
    };
    let selector = Map::from([
        (policy.job_label().to_string(), route.clone()),
        (policy.owner_label.clone(), prefix.clone()),
    ]);
    let node_port = match &request.node_port {
        None => None,
        Some(s) => Some(s.parse::<i32>().map_err(|_| PlanError::BadAnnotation {
            key: "portico.dev/node-port".into(),
            reason: format!("{s:?} is not a port number"),
        })?),
    };
    let ports = parse_ports(request.ports.as_deref().unwrap_or("http:80"), node_port)?;
    let from = format!("{} {:?}", owner.kind, owner.name);
    let fix = "per-job Services are named <workload>-expose and <workload>-workers: give the \
               workload a name that starts with a letter and has at most 55 characters";
    if request.expose.is_some() {
        check_service_name(&format!("{}-expose", owner.name), &from, fix)?;
    }
    if request.headless {
        check_service_name(&format!("{}-workers", owner.name), &from, fix)?;
    }
    let labels = Map::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (policy.owner_label.clone(), prefix.clone()),
        ("portico.dev/workload".to_string(), owner.name.clone()),
    ]);
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner.reference()]),
        ..ObjectMeta::default()
    };
    let mut services = Vec::new();
    let mut ingress = None;
    if let Some(expose) = &request.expose {
        let type_ = match expose.as_str() {
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ClusterIP" | "Ingress" => ServiceType::ClusterIP,
            other => {
                return Err(PlanError::BadAnnotation {
                    key: "portico.dev/expose".into(),
                    reason: format!(
                        "{other:?} is not one of NodePort, LoadBalancer, ClusterIP, Ingress"
                    ),
                })
            }
        };
        let name = format!("{}-expose", owner.name);
        services.push(Service {
            metadata: meta(name.clone()),
            spec: Some(K8sServiceSpec {
                type_: Some(type_.as_str().to_string()),
                selector: Some(selector.clone()),
                ports: Some(service_ports(&ports, type_)?),
                ..K8sServiceSpec::default()
            }),
            status: None,
        });
        if expose == "Ingress" {
            let tag = route.split_once('-').map(|(_, t)| t).unwrap_or(route);
            let host = host_for(policy, &Prefix::from_encoded(prefix), tag, None)?;
            let route = IngressRoute {
                class: None,
                host,
                path: "/".into(),
                path_type: "Prefix".into(),
                service: name.clone(),
                port: ports[0].name.clone(),
                tls_secret: None,
            };
            ingress = Some(ingress_for(meta(name), route));
        }
    }
    if request.headless {
        services.push(Service {
            metadata: meta(format!("{}-workers", owner.name)),
            spec: Some(K8sServiceSpec {
                type_: Some(ServiceType::ClusterIP.as_str().to_string()),
                cluster_ip: Some("None".into()),
                selector: Some(selector),
                ports: Some(service_ports(&ports, ServiceType::ClusterIP)?),
                publish_not_ready_addresses: Some(true),
                ..K8sServiceSpec::default()
            }),
            status: None,
        });
    }
    Ok(Some(JobPlan { services, ingress }))
}

/// What the pod0 election needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    /// Pods of one job share a group: (controller uid, route value).
    pub group: (String, String),
    /// The pod has an index (Indexed Job, StatefulSet): the webhook decided pod0 at admission.
    pub indexed: bool,
    pub has_pod0: bool,
    pub ready: bool,
    pub deleting: bool,
    /// Creation timestamp (RFC 3339 sorts as text), then name, decide "oldest".
    pub created: String,
}

/// A pod0 label to add (with the route value) or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pod0Change {
    Add { pod: String, route: String },
    Remove { pod: String },
}

/// For each job without indices: exactly one ready, not-deleting pod (the oldest) carries pod0;
/// a holder that is going away or not ready loses it when another can take it.
pub fn elect_pod0(pods: &[PodFacts]) -> Vec<Pod0Change> {
    let mut groups: BTreeMap<&(String, String), Vec<&PodFacts>> = BTreeMap::new();
    for p in pods.iter().filter(|p| !p.indexed) {
        groups.entry(&p.group).or_default().push(p);
    }
    let mut changes = Vec::new();
    for (group, mut members) in groups {
        members.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
        let eligible = |p: &PodFacts| p.ready && !p.deleting;
        let keeper = members
            .iter()
            .find(|p| p.has_pod0 && eligible(p))
            .or_else(|| members.iter().find(|p| eligible(p)))
            .map(|p| p.name.clone());
        for p in &members {
            let keep = keeper.as_deref() == Some(p.name.as_str());
            if keep && !p.has_pod0 {
                changes.push(Pod0Change::Add {
                    pod: p.name.clone(),
                    route: group.1.clone(),
                });
            } else if !keep && p.has_pod0 && keeper.is_some() {
                changes.push(Pod0Change::Remove {
                    pod: p.name.clone(),
                });
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IngressSpec, ServiceSpec};
    use crate::config::Config;

    fn owner(name: &str) -> Owner {
        Owner {
            api_version: "portico.dev/v1alpha1".into(),
            kind: "Exposure".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn spec(tag: &str, type_: ServiceType) -> ExposureSpec {
        ExposureSpec {
            tag: tag.into(),
            user: Some("user1".into()),
            target: Target::Pod0,
            service: ServiceSpec {
                type_,
                ports: vec![PortSpec {
                    name: "http".into(),
                    port: 80,
                    target_port: Some(8080),
                    node_port: Some(30080),
                    protocol: None,
                }],
                load_balancer: None,
            },
            ingress: None,
        }
    }

    fn policy_with_domain() -> Policy {
        let mut c = Config::default();
        c.provisioner.domain = "apps.test".into();
        Policy::new(c)
    }

    #[test]
    fn nodeport_exposure_selects_pod0_of_the_route_value_with_the_owner_label() {
        let plan = exposure_plan(
            &Policy::default(),
            "team",
            &owner("web"),
            &spec("foobar", ServiceType::NodePort),
            None,
        )
        .unwrap();
        let s = plan.service.spec.unwrap();
        assert_eq!(
            s.selector.unwrap(),
            Map::from([
                ("jarvice-pod0-job-ipaddr".into(), "user1-foobar".into()),
                ("portico.dev/owner".into(), "user1".into())
            ])
        );
        assert_eq!(s.ports.unwrap()[0].node_port, Some(30080));
        assert_eq!(
            plan.service.metadata.owner_references.unwrap()[0].uid,
            "uid-web"
        );
    }

    fn host_of(p: &Policy, tag: &str, explicit: Option<&str>) -> Result<Option<String>, PlanError> {
        let mut s = spec(tag, ServiceType::ClusterIP);
        s.ingress = Some(IngressSpec {
            ingress_class_name: Some("nginx".into()),
            host: explicit.map(str::to_string),
            ..IngressSpec::default()
        });
        exposure_plan(p, "team", &owner("web"), &s, None).map(|plan| plan.host)
    }

    #[test]
    fn default_hosts_come_from_the_template_and_keep_tags_apart() {
        let p = policy_with_domain();
        let lower = host_of(&p, "foobar", None).unwrap().unwrap();
        assert_eq!(lower, "user1-foobar.apps.test");
        // A tag differing only in case is another tag, so it gets another (encoded) host.
        let upper = host_of(&p, "FooBar", None).unwrap().unwrap();
        assert!(upper.starts_with("user1-foobar--"), "{upper}");
        assert!(upper.ends_with(".apps.test"), "{upper}");
        // An empty host is the default one, as spec.ingress.host documents.
        assert_eq!(host_of(&p, "foobar", Some("")).unwrap(), Some(lower));
        assert!(matches!(
            host_of(&Policy::default(), "foobar", None),
            Err(PlanError::NoDomain)
        ));
        let mut bad_template = p.config.clone();
        bad_template.provisioner.ingress_host_template = "{tag}.{user}.{domain}".into();
        let err = host_of(&Policy::new(bad_template), "foobar", None).unwrap_err();
        assert!(matches!(err, PlanError::DefaultHost(_)), "{err}");
        assert_eq!(err.reason(), "InvalidHost");
    }

    #[test]
    fn explicit_hosts_are_lowercased_and_checked() {
        let p = policy_with_domain();
        assert_eq!(
            host_of(&p, "foobar", Some("Web.Example.ORG")).unwrap(),
            Some("web.example.org".into())
        );
        for bad in [
            "bad_host",
            "*.apps.test",
            "a..b",
            &format!("{}.test", "a".repeat(64)),
        ] {
            assert!(
                matches!(host_of(&p, "foobar", Some(bad)), Err(PlanError::BadHost(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn explicit_hosts_differing_in_case_collide_and_the_older_keeps_it() {
        // Default hosts no longer collide (tags differing in case get different hosts), but two
        // explicit hosts can still name the same DNS name in different case.
        let p = policy_with_domain();
        let host = |tag: &str, explicit: &str| host_of(&p, tag, Some(explicit)).unwrap().unwrap();
        let losers = host_conflicts(&[
            (
                "b".to_string(),
                host("FooBar", "User1-FooBar.apps.test"),
                "2026-01-02T00:00:00Z".to_string(),
            ),
            (
                "a".to_string(),
                host("foobar", "user1-foobar.apps.test"),
                "2026-01-01T00:00:00Z".to_string(),
            ),
            (
                "c".to_string(),
                host("other", "other.apps.test"),
                "2026-01-01T00:00:00Z".to_string(),
            ),
            (
                "d".to_string(),
                host_of(&p, "FooBar", None).unwrap().unwrap(),
                "2026-01-01T00:00:00Z".to_string(),
            ),
        ]);
        assert_eq!(losers, BTreeMap::from([("b".to_string(), "a".to_string())]));
    }

    #[test]
    fn observed_service_with_assigned_fields_matches_and_a_drifted_selector_does_not() {
        let plan = exposure_plan(
            &Policy::default(),
            "team",
            &owner("web"),
            &spec("foobar", ServiceType::NodePort),
            None,
        )
        .unwrap();
        let mut observed = plan.service.clone();
        observed.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.7".into());
        observed
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        assert!(service_matches(&plan.service, &observed));
        observed.spec.as_mut().unwrap().selector = Some(Map::from([("app".into(), "x".into())]));
        assert!(!service_matches(&plan.service, &observed));
    }

    #[test]
    fn status_reports_ports_pods_and_conflicts() {
        let plan = exposure_plan(
            &Policy::default(),
            "team",
            &owner("web"),
            &spec("foobar", ServiceType::NodePort),
            None,
        )
        .unwrap();
        let st = exposure_status(
            Ok(&plan),
            &Observed {
                service: Some(&plan.service),
                pods: 1,
                ..Observed::default()
            },
            Some(3),
        );
        assert_eq!(st.node_ports.get("http"), Some(&30080));
        assert_eq!((st.pods, st.observed_generation), (1, Some(3)));
        assert_eq!(st.conditions[0].status, "True");
        let st = exposure_status(
            Ok(&plan),
            &Observed {
                conflict: Some("provided port is already allocated".into()),
                ..Observed::default()
            },
            Some(3),
        );
        assert!(st
            .conditions
            .iter()
            .any(|c| c.type_ == "Conflict" && c.status == "True"));
    }

    #[test]
    fn pod0_goes_to_the_oldest_ready_pod_and_moves_when_it_goes() {
        let pod = |name: &str, created: &str, has: bool, ready: bool, deleting: bool| PodFacts {
            name: name.into(),
            group: ("job-uid".into(), "user1-foobar".into()),
            indexed: false,
            has_pod0: has,
            ready,
            deleting,
            created: created.into(),
        };
        let pods = vec![
            pod("b", "2", false, true, false),
            pod("a", "1", false, true, false),
            pod("c", "3", false, false, false),
        ];
        assert_eq!(
            elect_pod0(&pods),
            vec![Pod0Change::Add {
                pod: "a".into(),
                route: "user1-foobar".into()
            }]
        );
        let pods = vec![
            pod("a", "1", true, true, true),
            pod("b", "2", false, true, false),
        ];
        let changes = elect_pod0(&pods);
        assert!(changes.contains(&Pod0Change::Add {
            pod: "b".into(),
            route: "user1-foobar".into()
        }));
        assert!(changes.contains(&Pod0Change::Remove { pod: "a".into() }));
        let steady = vec![
            pod("a", "1", true, true, false),
            pod("b", "2", false, true, false),
        ];
        assert!(elect_pod0(&steady).is_empty());
    }

    #[test]
    fn per_job_ingress_routes_the_workloads_host_to_its_first_port() {
        let p = policy_with_domain();
        let owner = Owner {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "flask".into(),
            uid: "job-uid".into(),
        };
        let request = JobExposureRequest {
            expose: Some("Ingress".into()),
            ports: Some("http:5000".into()),
            node_port: None,
            headless: false,
        };
        let labels = Map::from([
            ("jarvice-job-ipaddr".into(), "user1-Flask".into()),
            ("portico.dev/owner".into(), "user1".into()),
        ]);
        let plan = job_plan(&p, "team", &owner, &request, &labels)
            .unwrap()
            .unwrap();
        assert_eq!(plan.services.len(), 1);
        let ingress = plan.ingress.unwrap();
        let rule = &ingress.spec.unwrap().rules.unwrap()[0];
        // The route's tag "Flask" is not lowercase: the host tag is its encoded form.
        let host = crate::core::host::default_host(
            &p.config.provisioner,
            &Prefix::from_encoded("user1"),
            "Flask",
        )
        .unwrap();
        assert!(host.starts_with("user1-flask--"), "{host}");
        assert_eq!(rule.host.as_deref(), Some(host.as_str()));
        let backend = rule.http.as_ref().unwrap().paths[0]
            .backend
            .service
            .clone()
            .unwrap();
        assert_eq!(backend.name, "flask-expose");
        assert_eq!(backend.port.unwrap().name.as_deref(), Some("http"));
        assert_eq!(ingress.metadata.owner_references.unwrap()[0].uid, "job-uid");
        let unstamped = job_plan(&p, "team", &owner, &request, &Map::new()).unwrap_err();
        assert!(
            unstamped
                .to_string()
                .contains("carry no jarvice-job-ipaddr"),
            "{unstamped}"
        );
    }

    #[test]
    fn per_job_request_reads_the_annotations_and_node_ports_are_summarised() {
        let ann = Map::from([
            ("portico.dev/expose".into(), "NodePort".into()),
            ("portico.dev/headless".into(), "true".into()),
            ("other/expose".into(), "LoadBalancer".into()),
        ]);
        let r = JobExposureRequest::from_annotations("portico.dev", Some(&ann));
        assert_eq!(
            (r.expose.as_deref(), r.headless, r.ports.as_deref()),
            (Some("NodePort"), true, None)
        );
        assert!(r.is_requested());
        assert!(!JobExposureRequest::from_annotations("portico.dev", None).is_requested());
        let plan = exposure_plan(
            &Policy::default(),
            "team",
            &owner("web"),
            &spec("x", ServiceType::NodePort),
            None,
        )
        .unwrap();
        assert_eq!(
            node_ports_summary(&plan.service).as_deref(),
            Some("http=30080")
        );
        let mut unassigned = plan.service.clone();
        unassigned.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = None;
        assert_eq!(node_ports_summary(&unassigned), None);
    }

    #[test]
    fn a_problem_is_reported_once_when_it_appears() {
        let with = |reason: &str| ExposureStatus {
            conditions: vec![condition(
                "Ready",
                false,
                reason,
                format!("{reason} happened"),
            )],
            ..ExposureStatus::default()
        };
        let healthy = ExposureStatus::default();
        assert_eq!(
            new_problem(&healthy, &with("Conflict")),
            Some(("Conflict".into(), "Conflict happened".into()))
        );
        assert_eq!(new_problem(&with("Conflict"), &with("Conflict")), None);
        assert_eq!(
            new_problem(&with("Conflict"), &with("ApiError")).map(|p| p.0),
            Some("ApiError".into())
        );
        assert_eq!(new_problem(&healthy, &with("NoPods")), None);
        assert_eq!(new_problem(&with("Conflict"), &healthy), None);
    }

    #[test]
    fn per_job_ports_parse_and_bad_annotations_explain() {
        let ports = parse_ports("http:5000,metrics:9090", Some(30081)).unwrap();
        assert_eq!(
            (ports[0].node_port, ports[1].node_port),
            (Some(30081), None)
        );
        assert!(parse_ports("http", None)
            .unwrap_err()
            .to_string()
            .contains("name:port"));
        assert!(parse_ports("http:99999", None).is_err());
    }
}

#[cfg(test)]
#[path = "desired_at_rest.rs"]
mod at_rest;
