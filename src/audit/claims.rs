//! The audit's rules for what Portico's webhook now refuses or strips, applied to what was stored
//! before it did (Portico installed or upgraded later, or running in warn mode):
//!
//! - identity keys in metadata that controllers copy (a CronJob's `spec.jobTemplate.metadata`, a
//!   workload's own metadata) that differ from the stamp on the pod template
//!   (`forged-copied-identity`);
//! - hand-written EndpointSlices and Endpoints that join a routed Service
//!   (`hand-written-endpoints`) or send a Service's traffic to another user's routed pod
//!   (`foreign-endpoints`, or `unattributed-endpoints` when nothing says whose they are);
//! - Ingresses that claim another user's host or mix users' Services (`ingress-squat`).
//!
//! Objects are read with the webhook's own decoder ([`decode_object`]) and judged with the core
//! functions the webhook decides with ([`owner_of`], [`selector_owner`], the [`ClusterView`]
//! lookups over a [`Routed`] snapshot built from the audited objects), so that the audit and the
//! webhook cannot disagree about what an object says. No IO.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::admission::review::decode_object;
use crate::api::Exposure;
use crate::core::claims::SERVICE_NAME_LABEL;
use crate::core::cluster::{ClusterView, Known, NoView, Routed, RoutedPod};
use crate::core::decision::{copied_identity_keys, Place};
use crate::core::desired::{exposure_plan, Owner as PlanOwner, MANAGED_BY, MANAGER};
use crate::core::host::{host_space, may_claim, HostSpace as Space};
use crate::core::object::{Kind, Object};
use crate::core::ownership::{owner_of, selector_owner};
use crate::core::prefix::Prefix;
use crate::core::Policy;

use super::{attributed, controller_of, namespace_of, s, Auditor, Inventory, Owners};

/// The label Kubernetes puts on the EndpointSlices its controllers manage, and its values for
/// the two controllers that write them (the one that follows Service selectors, and the one that
/// mirrors hand-written Endpoints objects into slices).
pub const SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const SLICE_CONTROLLERS: [&str; 2] = [
    "endpointslice-controller.k8s.io",
    "endpointslicemirroring-controller.k8s.io",
];

/// An object as the webhook decodes it: its kind and the parts decisions read. `None` when it
/// cannot be read as its kind (then no rule here has anything to say about it).
fn decoded(v: &Value) -> Option<(Kind, Object)> {
    let kind = Kind::from_api_version(
        s(v, &["apiVersion"]).unwrap_or_default(),
        s(v, &["kind"]).unwrap_or_default(),
    );
    // The decoder resolves a targetRef without a namespace to the object's namespace; a
    // manifest may leave the namespace out, and the audit treats that as `default`.
    let namespace = namespace_of(v).to_string();
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace")
            .or_insert_with(|| Value::String(namespace));
    }
    let raw = serde_json::value::to_raw_value(&v).ok()?;
    let object = decode_object(&kind, &raw).ok()?;
    Some((kind, object))
}

/// A pod's IP addresses: `status.podIP` and every `status.podIPs[].ip`.
fn pod_ips(p: &Value) -> Vec<&str> {
    let mut ips: Vec<&str> = s(p, &["status", "podIP"]).into_iter().collect();
    for ip in p["status"]["podIPs"].as_array().into_iter().flatten() {
        if let Some(ip) = ip["ip"].as_str() {
            ips.push(ip);
        }
    }
    ips.retain(|ip| !ip.is_empty());
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// What the webhook's cluster view would hold if it had watched these objects: routed pods (by
/// name and IP) with their owner prefix, and Services with a routing selector with theirs.
pub(super) fn routed_view(policy: &Policy, inv: &Inventory) -> Routed {
    let mut view = Routed::default();
    for p in &inv.pods {
        let Some((kind, object)) = decoded(p) else {
            continue;
        };
        let namespace = namespace_of(p);
        if let Some(owner) = owner_of(policy, &kind, namespace, &object, &NoView) {
            view.add_pod(namespace, &object.name, &owner.prefix, &pod_ips(p));
        }
    }
    for svc in &inv.services {
        let Some((_, object)) = decoded(svc) else {
            continue;
        };
        if let Some(owner) = selector_owner(policy, &object) {
            view.add_service(namespace_of(svc), &object.name, &owner.prefix);
        }
    }
    view
}

/// Where a workload's own metadata is copied from or to, for the message.
fn own_place(w: &Value, kind: &Kind) -> String {
    match (controller_of(w), kind) {
        (Some(("CronJob", name, _)), _) => format!(
            "its own metadata (the cronjob controller copied it from CronJob {name}'s spec.jobTemplate.metadata)"
        ),
        (Some(("Deployment", name, _)), _) => format!(
            "its own metadata (the deployment controller copied its annotations from Deployment {name})"
        ),
        (_, Kind::Deployment) => {
            "its own metadata (the deployment controller copies its annotations onto every ReplicaSet)"
                .to_string()
        }
        (_, k) => format!("the {}'s own metadata", k.name()),
    }
}

/// `forged-copied-identity`: Portico's identity keys (the user annotation, the owner label, the
/// pod0 label) in metadata a controller copies — a workload's own, a CronJob's
/// `spec.jobTemplate.metadata` — that differ from the stamp on its pod template.
///
/// The webhook takes identity for controller-made objects only from that stamp and strips these
/// keys at admission (`core::decision`'s copied places); objects stored before it did may still
/// carry them, and tooling or an older Portico reading them would mistake them for a stamp. The
/// comparison is the webhook's: the user annotation must be the template's (it is not checked
/// when the template has none, since the webhook allows the requester's own name there and the
/// audit cannot know the requester), the owner label must be the template's owner prefix, and
/// the pod0 label is never allowed there.
pub(super) fn copied_identity(a: &mut Auditor<'_>, inv: &Inventory) {
    let policy = a.policy;
    for w in &inv.workloads {
        let Some((kind, object)) = decoded(w) else {
            continue;
        };
        if !kind.is_workload() {
            continue;
        }
        let stamp = owner_of(policy, &kind, namespace_of(w), &object, &NoView);
        let stamped_user = object
            .template
            .as_ref()
            .and_then(|t| t.annotation(&policy.user_annotation));
        let stamped_prefix = stamp.as_ref().map(|o| o.prefix.as_str());
        // The webhook's own rule; a user annotation is judged only against a template that names
        // one (the webhook lets the requester's own name stand, and the audit cannot know who
        // that was).
        let mut by_place: BTreeMap<Place, Vec<String>> = BTreeMap::new();
        for key in copied_identity_keys(policy, &kind, &object, stamped_user, stamped_prefix) {
            if !key.label && stamped_user.is_none() {
                continue;
            }
            let what = if key.label { "label" } else { "annotation" };
            by_place
                .entry(key.place)
                .or_default()
                .push(format!("{what} {}={:?}", key.key, key.value));
        }
        let problems: Vec<String> = by_place
            .into_iter()
            .map(|(place, here)| {
                let place = match place {
                    Place::JobTemplate => {
                        "spec.jobTemplate.metadata (the cronjob controller copies it onto every Job)"
                            .to_string()
                    }
                    _ => own_place(w, &kind),
                };
                format!("{} in {place}", here.join(", "))
            })
            .collect();
        if problems.is_empty() {
            continue;
        }
        let stamped = match (stamped_user, stamped_prefix) {
            (Some(user), Some(prefix)) => {
                format!("its pod template is stamped for user {user:?} (prefix {prefix:?})")
            }
            (None, Some(prefix)) => format!("its pod template is stamped for prefix {prefix:?}"),
            (Some(user), None) => format!("its pod template names user {user:?} but no route"),
            (None, None) => "its pod template carries no Portico stamp".to_string(),
        };
        let route = object
            .template
            .as_ref()
            .and_then(|t| t.label(policy.job_label()));
        a.find(
            "forged-copied-identity",
            w,
            route,
            format!(
                "{}, but {stamped}: identity comes only from Portico's stamp on the pod template, and a controller copies these keys onto the objects it makes. Remove them (Portico strips them when the object is next written through its webhook)",
                problems.join("; ")
            ),
        );
    }
}

/// Whether an EndpointSlice or Endpoints object was written by hand (not by Kubernetes'
/// endpoint controllers). A slice says so by its managed-by label. An Endpoints object has no
/// such label: the endpoints controller owns those of Services with a selector (and overwrites
/// any hand edit), so the others — of selector-less Services, or of no Service — are hand-written.
fn hand_written(kind: &Kind, object: &Object, service: Option<&Value>) -> bool {
    match kind {
        Kind::EndpointSlice => !object
            .meta
            .label(SLICE_MANAGED_BY)
            .is_some_and(|m| SLICE_CONTROLLERS.contains(&m)),
        Kind::Endpoints => !service.is_some_and(|svc| {
            svc["spec"]["selector"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        }),
        _ => false,
    }
}

/// A routed pod an endpoint points at, with how it points.
fn targets(
    view: &Routed,
    namespace: &str,
    endpoint: &crate::core::object::EndpointView,
) -> Vec<(String, RoutedPod)> {
    let mut out = Vec::new();
    if let Some((ns, name)) = endpoint.target_pod(namespace) {
        if let Known::Yes(Some(pod)) = view.pod(ns, name) {
            out.push((format!("targetRef pod {ns}/{name}"), pod));
        }
    }
    for address in &endpoint.addresses {
        if let Known::Yes(Some(pod)) = view.pod_by_ip(address) {
            let what = format!("address {address} (pod {}/{})", pod.namespace, pod.name);
            out.push((what, pod));
        }
    }
    out
}

/// Hand-written EndpointSlices and Endpoints.
///
/// - `hand-written-endpoints`: one that joins a routed Service (a Service whose selector names
///   routing labels). Kubernetes' controllers fill such a Service from its selector; a slice
///   written beside them adds addresses the selector never chose, so traffic for a user's route
///   value can reach anything. Stricter than the webhook, which lets the Service's owner do it:
///   for stored objects the audit cannot tell who wrote them, and the guarantee is about what a
///   routed Service reaches.
/// - `foreign-endpoints`: one that lists the IP of a routed pod, or a `targetRef` to one, whose
///   owner prefix is not the prefix of the side the object is on: its Service's routing owner
///   when the Service is routed; else whoever the Service is attributed to (owner label,
///   identity annotation, owner reference, namespace identity); else the object's own
///   attribution.
/// - `unattributed-endpoints` (warning): it lists a routed pod but none of that says whose it
///   is. The webhook lets a user point their own selector-less Service at their own pods, and
///   that leaves nothing on the objects to tell the audit so.
pub(super) fn endpoints(
    a: &mut Auditor<'_>,
    inv: &Inventory,
    owners: &Owners<'_>,
    exposure_prefixes: &HashMap<(String, String), String>,
    view: &Routed,
) {
    let services: HashMap<(&str, &str), &Value> = inv
        .services
        .iter()
        .map(|v| {
            let name = s(v, &["metadata", "name"]).unwrap_or_default();
            ((namespace_of(v), name), v)
        })
        .collect();
    for e in &inv.endpoints {
        let Some((kind, object)) = decoded(e) else {
            continue;
        };
        let namespace = namespace_of(e);
        let what = kind.name().to_string();
        let service_name = match kind {
            Kind::EndpointSlice => object.meta.label(SERVICE_NAME_LABEL),
            Kind::Endpoints => Some(object.name.as_str()).filter(|n| !n.is_empty()),
            _ => continue,
        };
        let service = service_name.and_then(|n| services.get(&(namespace, n)).copied());
        if !hand_written(&kind, &object, service) {
            continue;
        }
        let routed_owner = service_name.and_then(|n| match view.service_owner(namespace, n) {
            Known::Yes(owner) => owner,
            Known::Unknown => None,
        });
        if let (Some(name), Some(owner)) = (service_name, &routed_owner) {
            a.find(
                "hand-written-endpoints",
                e,
                None,
                format!(
                    "{what} was not written by Kubernetes' endpoint controllers ({}), yet joins Service {name}, which routes to the pods of prefix {owner:?}: its addresses reach the Service without its selector choosing them. Delete it; to reach other endpoints, use a selector-less Service of your own",
                    match kind {
                        Kind::EndpointSlice => format!("its {SLICE_MANAGED_BY} label is not one of theirs"),
                        _ => "the endpoints controller does not write it".to_string(),
                    }
                ),
            );
        }
        let claimant: Option<(String, String)> = match (&routed_owner, service_name) {
            (Some(owner), Some(name)) => Some((
                owner.clone(),
                format!("its Service {name} routes to prefix {owner:?}"),
            )),
            _ => service
                .and_then(|svc| {
                    let name = service_name.unwrap_or_default();
                    let (prefix, why) = attributed(a, svc, owners, exposure_prefixes)?;
                    let said = format!("its Service {name} is prefix {prefix:?}'s ({why})");
                    Some((prefix, said))
                })
                .or_else(|| {
                    let (prefix, why) = attributed(a, e, owners, exposure_prefixes)?;
                    let said = format!("it is prefix {prefix:?}'s ({why})");
                    Some((prefix, said))
                }),
        };
        let mut foreign = BTreeSet::new();
        let mut unknown = BTreeSet::new();
        for endpoint in object.endpoints.iter().flatten() {
            for (how, pod) in targets(view, namespace, endpoint) {
                match &claimant {
                    Some((prefix, _)) if *prefix == pod.owner => {}
                    Some(_) => {
                        foreign.insert(format!("{how} of prefix {:?}", pod.owner));
                    }
                    None => {
                        unknown.insert(format!("{how} of prefix {:?}", pod.owner));
                    }
                }
            }
        }
        match claimant {
            Some((prefix, why)) if !foreign.is_empty() => a.find(
                "foreign-endpoints",
                e,
                None,
                format!(
                    "{what} lists {}, but {why}: traffic for the Service reaches another user's pods without any selector choosing them. Delete it, or list only prefix {prefix:?}'s own pods",
                    foreign.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ),
            None if !unknown.is_empty() => a.find(
                "unattributed-endpoints",
                e,
                None,
                format!(
                    "{what} (written by hand) lists {}, but neither it nor its Service{} carries a {} label, a {} annotation or an owner that says whose it is. If it is not that user's, delete it; if it is, label its Service {}=<prefix>",
                    unknown.into_iter().collect::<Vec<_>>().join(", "),
                    service_name.map(|n| format!(" {n}")).unwrap_or_default(),
                    a.policy.owner_label,
                    a.policy.user_annotation,
                    a.policy.owner_label,
                ),
            ),
            _ => {}
        }
    }
}

/// Who owns a host: its prefix, and what says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOwner {
    pub prefix: String,
    pub why: String,
    /// The claim's creation timestamp (RFC 3339 sorts as text): the oldest claim keeps a host,
    /// as the provisioner decides between Exposures.
    order: String,
}

/// The host space as far as the audit knows it: the hosts of Exposures (`status.host`,
/// `spec.ingress.host`, and the host Portico's plan gives them) and of the Ingresses Portico
/// manages. [`HostSpace::owner_of`] is the one place that decides who owns a host; the host-space
/// rule (`core::host::may_claim`, "a host in another prefix's space") replaces it there.
#[derive(Debug, Clone, Default)]
pub struct HostSpace {
    hosts: BTreeMap<String, HostOwner>,
}

impl HostSpace {
    pub(super) fn new(
        policy: &Policy,
        inv: &Inventory,
        exposure_prefixes: &HashMap<(String, String), String>,
    ) -> Self {
        let mut space = HostSpace::default();
        for e in &inv.exposures {
            let (namespace, name) = (
                namespace_of(e),
                s(e, &["metadata", "name"]).unwrap_or_default(),
            );
            let Some(prefix) = exposure_prefixes.get(&(namespace.to_string(), name.to_string()))
            else {
                continue;
            };
            let mut hosts: Vec<String> = [
                s(e, &["status", "host"]),
                s(e, &["spec", "ingress", "host"]),
            ]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect();
            if let Ok(typed) = serde_json::from_value::<Exposure>(e.clone()) {
                let owner = PlanOwner {
                    api_version: "portico.dev/v1alpha1".into(),
                    kind: "Exposure".into(),
                    name: name.to_string(),
                    uid: String::new(),
                };
                if let Ok(plan) = exposure_plan(policy, namespace, &owner, &typed.spec, None) {
                    hosts.extend(plan.host);
                }
            }
            let user = s(e, &["spec", "user"]).unwrap_or_default();
            let owner = HostOwner {
                prefix: prefix.clone(),
                why: format!("the host of user {user:?}'s Exposure {namespace}/{name}"),
                order: s(e, &["metadata", "creationTimestamp"])
                    .unwrap_or_default()
                    .to_string(),
            };
            for host in hosts {
                space.claim(&host, owner.clone());
            }
        }
        for ing in &inv.ingresses {
            if s(ing, &["metadata", "labels", MANAGED_BY]) != Some(MANAGER) {
                continue;
            }
            let Some(prefix) = s(ing, &["metadata", "labels", &policy.owner_label]) else {
                continue;
            };
            let Some((_, object)) = decoded(ing) else {
                continue;
            };
            let name = object.name.clone();
            let owner = HostOwner {
                prefix: prefix.to_string(),
                why: format!(
                    "the host of Portico's Ingress {}/{name} for prefix {prefix:?}",
                    namespace_of(ing)
                ),
                order: s(ing, &["metadata", "creationTimestamp"])
                    .unwrap_or_default()
                    .to_string(),
            };
            for host in object.ingress.iter().flat_map(|i| i.hosts.iter()) {
                space.claim(host, owner.clone());
            }
        }
        space
    }

    fn claim(&mut self, host: &str, owner: HostOwner) {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return;
        }
        // The first claim seen stands unless a later one is provably older (manifests carry no
        // timestamps, and then nothing is older than anything).
        let older = |held: &HostOwner| {
            !owner.order.is_empty() && !held.order.is_empty() && owner.order < held.order
        };
        if self.hosts.get(&host).is_none_or(older) {
            self.hosts.insert(host, owner);
        }
    }

    /// Who owns `host`, if anyone the audit knows of. The single decision of host ownership.
    pub fn owner_of(&self, host: &str) -> Option<&HostOwner> {
        self.hosts
            .get(&host.trim_end_matches('.').to_ascii_lowercase())
    }
}

/// `ingress-squat`: an Ingress that is not Portico's own and
///
/// - claims a host that another user owns (see [`HostSpace::owner_of`]) while nothing else it
///   claims — its attribution, the routed Services it sends to — is that user's: it takes that
///   user's traffic, or sends it elsewhere; or
/// - sends to the routed Services of more than one user while nothing says whose it is (an
///   attributed Ingress whose backends are not its own is `foreign-selector`).
pub(super) fn ingress_squat(
    a: &mut Auditor<'_>,
    inv: &Inventory,
    owners: &Owners<'_>,
    exposure_prefixes: &HashMap<(String, String), String>,
    view: &Routed,
    hosts: &HostSpace,
) {
    for ing in &inv.ingresses {
        if s(ing, &["metadata", "labels", MANAGED_BY]) == Some(MANAGER) {
            continue;
        }
        let Some((_, object)) = decoded(ing) else {
            continue;
        };
        let Some(ingress) = &object.ingress else {
            continue;
        };
        let namespace = namespace_of(ing);
        let attribution = attributed(a, ing, owners, exposure_prefixes);
        let mut backends: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for service in &ingress.services {
            if let Known::Yes(Some(owner)) = view.service_owner(namespace, service) {
                backends.entry(owner).or_default().insert(service.clone());
            }
        }
        let show_backends = |prefixes: &mut dyn Iterator<Item = (&String, &BTreeSet<String>)>| {
            prefixes
                .map(|(p, names)| {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    format!("Service {} (prefix {p:?})", names.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut problems = Vec::new();
        if attribution.is_none() && backends.len() > 1 {
            problems.push(format!(
                "sends traffic to the routed Services of more than one user: {}",
                show_backends(&mut backends.iter())
            ));
        }
        let mut seen = BTreeSet::new();
        for host in &ingress.hosts {
            let Some(owner) = hosts.owner_of(host) else {
                // No Exposure or Portico Ingress holds it: the host-space rule decides.
                if let Some(problem) = space_claim(a.policy, host, attribution.as_ref()) {
                    problems.push(problem);
                }
                continue;
            };
            if !seen.insert(host.to_ascii_lowercase()) {
                continue;
            }
            let mut strangers: Vec<String> = Vec::new();
            if let Some((prefix, why)) = &attribution {
                if *prefix != owner.prefix {
                    strangers.push(format!("it belongs to prefix {prefix:?} ({why})"));
                }
            }
            let mut foreign_backends = backends.iter().filter(|(p, _)| **p != owner.prefix);
            let shown = show_backends(&mut foreign_backends);
            if !shown.is_empty() {
                strangers.push(format!("it sends to {shown}"));
            }
            if !strangers.is_empty() {
                problems.push(format!(
                    "claims host {host:?}, {}, but {}",
                    owner.why,
                    strangers.join(" and ")
                ));
            } else if attribution.is_none() && backends.is_empty() {
                problems.push(format!(
                    "claims host {host:?}, {}, and nothing on it says it is prefix {:?}'s",
                    owner.why, owner.prefix
                ));
            }
        }
        if !problems.is_empty() {
            a.find(
                "ingress-squat",
                ing,
                None,
                format!(
                    "{}. Only a host's owner may serve it, and only to their own Services: delete the Ingress, or ask for the host through an Exposure",
                    problems.join("; ")
                ),
            );
        }
    }
}

/// A host claimed outside what the audit knows of: refused by the webhook's host-space rule
/// ([`may_claim`]) for the prefix the Ingress is attributed to, or, when nothing says whose it is,
/// any host in some prefix's space (or a catch-all) is someone else's.
fn space_claim(
    policy: &Policy,
    host: &str,
    attribution: Option<&(String, String)>,
) -> Option<String> {
    match attribution {
        Some((prefix, why)) => may_claim(policy, &Prefix::from_encoded(prefix), host)
            .err()
            .map(|e| format!("claims host {host:?} ({why}), but {e}")),
        None => match host_space(policy, host) {
            Space::Owned(space) => Some(format!(
                "claims host {host:?} in the host space \"{space}-…\" of another user, and nothing on it says whose it is"
            )),
            Space::Wildcard => Some(format!(
                "claims {}, which answers for every user's host space, and nothing on it says whose it is",
                if host.is_empty() { "every host (a rule without a host or a default backend)".to_string() } else { format!("host {host:?}") }
            )),
            Space::Outside | Space::Unowned => None,
        },
    }
}

/// Who other than Portico wrote an object, from `metadata.managedFields`: the latest manager
/// other than Portico's field manager that owns `spec.selector` (any field, when none does or the
/// entries carry no field sets). `None` when only Portico wrote it, or nothing is recorded.
pub(super) fn foreign_writer(policy: &Policy, v: &Value) -> Option<String> {
    let ours = policy.config.provisioner.field_manager.as_str();
    let entries: Vec<&Value> = v["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .filter(|e| e["manager"].as_str().is_some_and(|m| m != ours))
        .collect();
    let owns_selector = |e: &&Value| e["fieldsV1"].pointer("/f:spec/f:selector").is_some();
    let (candidates, what): (Vec<&Value>, &str) = if entries.iter().any(owns_selector) {
        (
            entries.iter().copied().filter(owns_selector).collect(),
            "spec.selector last written by",
        )
    } else {
        (entries, "last written by")
    };
    let latest = candidates
        .into_iter()
        .max_by_key(|e| e["time"].as_str().unwrap_or_default())?;
    let manager = latest["manager"].as_str().unwrap_or_default();
    let mut how = latest["operation"]
        .as_str()
        .unwrap_or("a write")
        .to_string();
    if let Some(time) = latest["time"].as_str() {
        how.push_str(&format!(" at {time}"));
    }
    Some(format!(
        "{what} field manager {manager:?} ({how}), not Portico's {ours:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{audit, Finding, Severity};
    use super::*;
    use crate::config::{Config, IdentityMode};
    use crate::core::decision::{mutate, Edit, Place};
    use crate::core::object::{Operation, Request, Requester};
    use serde_json::json;

    fn found(policy: &Policy, objects: Vec<Value>) -> Vec<Finding> {
        let mut inv = Inventory::default();
        for o in objects {
            inv.add(o);
        }
        audit(policy, &inv)
    }

    /// The findings as (rule, object name), in the audit's order, leaving out the older rules
    /// that the scenes here trip on the way (an unattributed test Service, say).
    fn rules(found: &[Finding]) -> Vec<(&'static str, &str)> {
        const OLDER: [&str; 2] = ["unattributed-selector", "orphaned-service"];
        found
            .iter()
            .filter(|f| !OLDER.contains(&f.rule))
            .map(|f| (f.rule, f.object.name.as_str()))
            .collect()
    }

    fn message<'a>(found: &'a [Finding], name: &str) -> &'a str {
        found
            .iter()
            .find(|f| f.object.name == name)
            .map_or("", |f| f.message.as_str())
    }

    /// A CronJob whose pod template Portico stamped for user1, with `job_meta` as its
    /// `spec.jobTemplate.metadata`.
    fn cronjob(name: &str, job_meta: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"metadata": job_meta, "spec": {"template": {
                "metadata": {"labels": {"jarvice-job-ipaddr": "user1-nightly", "portico.dev/owner": "user1"},
                    "annotations": {"portico.dev/user": "user1", "portico.dev/ipaddr": "nightly"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}}}})
    }

    #[test]
    fn identity_keys_in_copied_metadata_that_differ_from_the_stamp_are_forged() {
        let policy = Policy::default();
        let forged = cronjob(
            "forged",
            json!({"labels": {"portico.dev/owner": "user2", "jarvice-pod0-job-ipaddr": "user2-x"},
                "annotations": {"portico.dev/user": "user2"}}),
        );
        // What Portico itself leaves there: the stamp's own values.
        let clean = cronjob(
            "clean",
            json!({"labels": {"portico.dev/owner": "user1"}, "annotations": {"portico.dev/user": "user1"}}),
        );
        // A Job the cronjob controller made from a CronJob before the webhook stripped it.
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "made", "namespace": "team", "annotations": {"portico.dev/user": "user2"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "forged", "uid": "u1", "controller": true}]},
            "spec": {"template": {"metadata": {"labels": {"jarvice-job-ipaddr": "user1-nightly", "portico.dev/owner": "user1"},
                "annotations": {"portico.dev/user": "user1"}}}}});
        // A Deployment whose annotations the deployment controller copies onto ReplicaSets.
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "deploy", "namespace": "team", "annotations": {"portico.dev/user": "user2"}},
            "spec": {"template": {"metadata": {"labels": {"jarvice-job-ipaddr": "user1-web", "portico.dev/owner": "user1"},
                "annotations": {"portico.dev/user": "user1"}}}}});
        // No stamp and no tag: the user annotation is the requester's own business (the webhook
        // keeps it when it is the requester's name), but an owner label is never allowed.
        let unstamped = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "plain", "namespace": "team", "annotations": {"portico.dev/user": "someone"}},
            "spec": {"template": {"metadata": {"labels": {"app": "db"}}}}});
        let owner_label = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "labelled", "namespace": "team", "labels": {"portico.dev/owner": "user1"}},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}}}}});
        let f = found(
            &policy,
            vec![forged, clean, job, deployment, unstamped, owner_label],
        );
        assert_eq!(
            rules(&f),
            vec![
                ("forged-copied-identity", "labelled"),
                ("forged-copied-identity", "deploy"),
                ("forged-copied-identity", "forged"),
                ("forged-copied-identity", "made"),
            ]
        );
        let m = message(&f, "forged");
        assert!(m.contains("spec.jobTemplate.metadata"), "{m}");
        assert!(m.contains("portico.dev/user=\"user2\""), "{m}");
        assert!(m.contains("portico.dev/owner=\"user2\""), "{m}");
        assert!(m.contains("jarvice-pod0-job-ipaddr"), "{m}");
        assert!(m.contains("stamped for user \"user1\""), "{m}");
        assert!(message(&f, "made").contains("copied it from CronJob forged"));
        assert!(message(&f, "deploy").contains("onto every ReplicaSet"));
        assert_eq!(f[2].route.as_deref(), Some("user1-nightly"));
        assert_eq!(f[2].severity, Severity::Violation);
    }

    #[test]
    fn the_audit_flags_exactly_what_the_webhook_strips_from_a_cronjob() {
        let policy = Policy::default();
        let v = cronjob(
            "forged",
            json!({"labels": {"portico.dev/owner": "user2", "jarvice-pod0-job-ipaddr": "user2-x"},
                "annotations": {"portico.dev/user": "user2"}}),
        );
        let Some((kind, object)) = decoded(&v) else {
            panic!("a CronJob decodes");
        };
        let request = Request {
            operation: Operation::Create,
            kind,
            namespace: "team".into(),
            requester: Requester {
                username: "user1".into(),
                groups: vec![],
            },
            subresource: None,
            dry_run: false,
            object: Some(object),
            old_object: None,
        };
        let decision = mutate(&policy, &request);
        let mut stripped: Vec<&str> = decision
            .edits()
            .iter()
            .filter_map(|e| match e {
                Edit::RemoveLabel {
                    place: Place::JobTemplate,
                    key,
                }
                | Edit::RemoveAnnotation {
                    place: Place::JobTemplate,
                    key,
                } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        stripped.sort_unstable();
        assert_eq!(
            stripped,
            vec![
                "jarvice-pod0-job-ipaddr",
                "portico.dev/owner",
                "portico.dev/user"
            ]
        );
        let f = found(&policy, vec![v]);
        for key in stripped {
            assert!(f[0].message.contains(key), "{key}: {}", f[0].message);
        }
    }

    fn routed_pod(name: &str, prefix: &str, ip: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team",
            "labels": {"jarvice-job-ipaddr": format!("{prefix}-job"), "jarvice-pod0-job-ipaddr": format!("{prefix}-job"), "portico.dev/owner": prefix},
            "annotations": {"portico.dev/user": prefix}},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
    }

    fn service(name: &str, labels: Value, selector: Option<Value>) -> Value {
        let mut v = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "team", "labels": labels}, "spec": {"ports": [{"port": 80}]}});
        if let Some(selector) = selector {
            v["spec"]["selector"] = selector;
        }
        v
    }

    fn slice(name: &str, service: &str, managed_by: &str, endpoints: Value) -> Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "team",
                "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": managed_by}},
            "addressType": "IPv4", "endpoints": endpoints})
    }

    #[test]
    fn hand_written_endpoints_into_routed_services_or_other_users_pods_are_found() {
        let policy = Policy::default();
        let objects = vec![
            routed_pod("p1", "user1", "10.0.0.1"),
            routed_pod("p2", "user2", "10.0.0.2"),
            // user1's routed Service, and the slice Kubernetes made for it.
            service(
                "web",
                json!({}),
                Some(json!({"jarvice-job-ipaddr": "user1-job", "portico.dev/owner": "user1"})),
            ),
            slice(
                "web-abc",
                "web",
                "endpointslice-controller.k8s.io",
                json!([{"addresses": ["10.0.0.1"]}]),
            ),
            // A slice written beside it, pointing at user2's pod: joins a routed Service.
            slice(
                "web-extra",
                "web",
                "kubectl",
                json!([{"addresses": ["10.0.0.9"]}]),
            ),
            // user2's selector-less Service, pointed by hand at user1's pod (by IP) and by
            // targetRef: foreign.
            service("side", json!({"portico.dev/owner": "user2"}), None),
            slice(
                "side-1",
                "side",
                "kubectl",
                json!([{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.8"], "targetRef": {"kind": "Pod", "name": "p1"}}]),
            ),
            // user1's own selector-less Service pointed at user1's pod: what the webhook allows.
            service("own", json!({"portico.dev/owner": "user1"}), None),
            slice(
                "own-1",
                "own",
                "kubectl",
                json!([{"addresses": ["10.0.0.1"]}]),
            ),
            // A selector-less Service nobody can be said to own: a warning.
            service("anon", json!({}), None),
            slice(
                "anon-1",
                "anon",
                "kubectl",
                json!([{"addresses": ["10.0.0.2"]}]),
            ),
            // A hand-written Endpoints object of user2's Service into user1's pod.
            service("legacy", json!({"portico.dev/owner": "user2"}), None),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "legacy", "namespace": "team"},
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
            // The Endpoints of a Service with a selector are the endpoints controller's.
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "team"},
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
            // An address that is no routed pod's is nobody's business here.
            slice(
                "outside",
                "side",
                "kubectl",
                json!([{"addresses": ["192.0.2.1"]}]),
            ),
        ];
        let f = found(&policy, objects);
        assert_eq!(
            rules(&f),
            vec![
                ("unattributed-endpoints", "anon-1"),
                ("foreign-endpoints", "side-1"),
                ("hand-written-endpoints", "web-extra"),
                ("foreign-endpoints", "legacy"),
            ]
        );
        let m = message(&f, "side-1");
        assert!(m.contains("address 10.0.0.1 (pod team/p1)"), "{m}");
        assert!(m.contains("targetRef pod team/p1"), "{m}");
        assert!(m.contains("prefix \"user2\""), "{m}");
        assert!(message(&f, "web-extra").contains("prefix \"user1\""));
        assert_eq!(f[0].severity, Severity::Warning);
    }

    #[test]
    fn ingresses_on_another_users_host_or_across_users_services_are_squatting() {
        let policy = Policy::default();
        let ingress = |name: &str, labels: Value, host: Option<&str>, backends: &[&str]| {
            let paths: Vec<Value> = backends
                .iter()
                .map(|b| json!({"path": "/", "pathType": "Prefix", "backend": {"service": {"name": b, "port": {"number": 80}}}}))
                .collect();
            let mut rule = json!({"http": {"paths": paths}});
            if let Some(h) = host {
                rule["host"] = json!(h);
            }
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "namespace": "team", "labels": labels},
                "spec": {"rules": [rule]}})
        };
        let objects = vec![
            json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": {"name": "web", "namespace": "team"},
                "spec": {"tag": "web", "user": "user1", "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}},
                "status": {"host": "user1-web.apps.example"}}),
            service(
                "u1",
                json!({}),
                Some(json!({"jarvice-job-ipaddr": "user1-web", "portico.dev/owner": "user1"})),
            ),
            service(
                "u2",
                json!({}),
                Some(json!({"jarvice-job-ipaddr": "user2-web", "portico.dev/owner": "user2"})),
            ),
            service("plain", json!({}), Some(json!({"app": "x"}))),
            // Portico's own Ingress for another user's Exposure: its host is known and it is
            // never a squatter itself.
            ingress(
                "portico",
                json!({"app.kubernetes.io/managed-by": "portico", "portico.dev/owner": "user3"}),
                Some("user3-app.apps.example"),
                &["plain"],
            ),
            // Squatters: a bare Ingress on user1's host; one on user1's host sending to user2's
            // Service; one on Portico's user3 host (case and a trailing dot do not hide it).
            ingress(
                "bare",
                json!({}),
                Some("user1-web.apps.example"),
                &["plain"],
            ),
            ingress(
                "redirect",
                json!({}),
                Some("user1-web.apps.example"),
                &["u2"],
            ),
            ingress(
                "taken",
                json!({}),
                Some("User3-App.apps.example."),
                &["plain"],
            ),
            // One that mixes two users' Services and says nothing of whose it is.
            ingress("mixed", json!({}), Some("other.example"), &["u1", "u2"]),
            // Legitimate: user1's own Ingress on user1's host, to user1's Service; and an
            // Ingress on a host nobody has to no routed Service.
            ingress(
                "own",
                json!({"portico.dev/owner": "user1"}),
                Some("user1-web.apps.example"),
                &["u1"],
            ),
            ingress("free", json!({}), Some("free.example"), &["plain"]),
            ingress(
                "via-backend",
                json!({}),
                Some("user1-web.apps.example"),
                &["u1"],
            ),
        ];
        let f = found(&policy, objects);
        assert_eq!(
            rules(&f),
            vec![
                ("ingress-squat", "bare"),
                ("ingress-squat", "mixed"),
                ("ingress-squat", "redirect"),
                ("ingress-squat", "taken"),
            ]
        );
        let m = message(&f, "redirect");
        assert!(m.contains("user \"user1\"'s Exposure team/web"), "{m}");
        assert!(m.contains("Service u2 (prefix \"user2\")"), "{m}");
        assert!(message(&f, "taken").contains("Portico's Ingress team/portico"));
        assert!(message(&f, "mixed").contains("more than one user"));
    }

    #[test]
    fn ingresses_in_another_users_host_space_are_squatting_without_any_exposure() {
        let mut config = crate::config::Config::default();
        config.provisioner.domain = "apps.test".into();
        let policy = Policy::new(config);
        let ingress = |name: &str, labels: Value, host: Option<&str>| {
            let mut rule = json!({"http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "plain", "port": {"number": 80}}}}]}});
            if let Some(h) = host {
                rule["host"] = json!(h);
            }
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "namespace": "team", "labels": labels},
                "spec": {"rules": [rule]}})
        };
        let objects = vec![
            service("plain", json!({}), Some(json!({"app": "x"}))),
            // user2's Ingress in user1's space; one nobody's in user1's space; a catch-all.
            ingress(
                "theirs",
                json!({"portico.dev/owner": "user2"}),
                Some("user1-lab.apps.test"),
            ),
            ingress("anon", json!({}), Some("USER1-lab.apps.test")),
            ingress("catchall", json!({}), None),
            // Legitimate: user2 in their own space, and hosts in nobody's space.
            ingress(
                "own",
                json!({"portico.dev/owner": "user2"}),
                Some("user2-lab.apps.test"),
            ),
            ingress("www", json!({}), Some("www.apps.test")),
            ingress("elsewhere", json!({}), Some("shop.example.org")),
        ];
        let f = found(&policy, objects);
        assert_eq!(
            rules(&f),
            vec![
                ("ingress-squat", "anon"),
                ("ingress-squat", "catchall"),
                ("ingress-squat", "theirs"),
            ]
        );
        assert!(
            message(&f, "theirs").contains("user2-"),
            "{}",
            message(&f, "theirs")
        );
    }

    #[test]
    fn the_host_space_answers_one_owner_per_host_the_oldest() {
        let mut space = HostSpace::default();
        let owner = |p: &str, order: &str| HostOwner {
            prefix: p.into(),
            why: p.into(),
            order: order.into(),
        };
        space.claim("A.example.", owner("late", "2024-02-01T00:00:00Z"));
        space.claim("a.example", owner("early", "2024-01-01T00:00:00Z"));
        space.claim("a.example", owner("undated", ""));
        assert_eq!(
            space.owner_of("a.EXAMPLE").map(|o| o.prefix.as_str()),
            Some("early")
        );
        assert_eq!(space.owner_of("b.example"), None);
    }

    #[test]
    fn the_last_writer_other_than_portico_is_named() {
        let policy = Policy::default();
        let v = json!({"metadata": {"managedFields": [
            {"manager": "portico", "operation": "Apply", "time": "2024-01-01T00:00:00Z",
                "fieldsV1": {"f:spec": {"f:selector": {}}}},
            {"manager": "kubectl-label", "operation": "Update", "time": "2024-03-01T00:00:00Z",
                "fieldsV1": {"f:metadata": {"f:labels": {}}}},
            {"manager": "kubectl-edit", "operation": "Update", "time": "2024-02-01T00:00:00Z",
                "fieldsV1": {"f:spec": {"f:selector": {"f:jarvice-job-ipaddr": {}}}}}]}});
        let w = foreign_writer(&policy, &v).unwrap_or_default();
        assert!(w.contains("spec.selector last written by field manager \"kubectl-edit\" (Update at 2024-02-01T00:00:00Z)"), "{w}");
        let ours =
            json!({"metadata": {"managedFields": [{"manager": "portico", "operation": "Apply"}]}});
        assert_eq!(foreign_writer(&policy, &ours), None);
    }

    #[test]
    fn namespace_identities_attribute_through_their_own_prefix_space() {
        let mut config = Config::default();
        config.identity.mode = IdentityMode::Namespace;
        let policy = Policy::new(config);
        let pod = |name: &str, user: &str, prefix: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team-a",
                "labels": {"jarvice-job-ipaddr": format!("{prefix}-x"), "jarvice-pod0-job-ipaddr": format!("{prefix}-x"), "portico.dev/owner": prefix},
                "annotations": {"portico.dev/user": user}}})
        };
        let objects = vec![
            pod("ok", "system:namespace:team-a", "ns.team.a"),
            // Stamped in user mode before the switch: not the namespace's.
            pod("old", "user1", "user1"),
            // A Service of namespace team-a selecting its own namespace's route: fine; one
            // selecting user1's: foreign, even though its owner label says user1.
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "own", "namespace": "team-a"},
                "spec": {"selector": {"jarvice-job-ipaddr": "ns.team.a-x"}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "user-mode", "namespace": "team-a",
                "labels": {"portico.dev/owner": "user1"}},
                "spec": {"selector": {"jarvice-job-ipaddr": "user1-x"}}}),
            // The namespace `team` is not the namespace `team-a`, nor user "team".
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "neighbour", "namespace": "team"},
                "spec": {"selector": {"jarvice-job-ipaddr": "ns.team.a-x"}}}),
        ];
        let f = found(&policy, objects);
        assert_eq!(
            rules(&f),
            vec![
                ("prefix-mismatch", "old"),
                ("foreign-selector", "neighbour"),
                ("foreign-selector", "user-mode"),
            ]
        );
        assert!(message(&f, "old").contains("\"system:namespace:team-a\""));
        assert!(message(&f, "user-mode").contains("prefix \"ns.team.a\""));
        assert!(message(&f, "neighbour").contains("prefix \"ns.team\""));
    }
}
