//! `portico audit`'s checks: objects in, findings out. No IO.
//!
//! The same checks run on what a cluster lists and on a folder of manifests: both become an
//! [`Inventory`] of plain JSON objects, and [`audit`] returns every violation and drift it finds.
//! Each rule is documented in `docs/auditor.md`; the rule ids are part of the output format.
//!
//! Whose an object is comes only from what Portico stamps (the identity annotation and owner
//! label), from owner references to objects in the inventory, or — in namespace identity mode —
//! from the namespace (the user [`namespace_user`] names, in its own prefix space). An object
//! whose owner cannot be told is reported as such, never guessed.
//!
//! The rules for what the webhook refuses or strips since it learnt about copied metadata,
//! hand-written endpoints and Ingress hosts live in [`claims`]: they read objects through the
//! same decoder and core functions the webhook decides with.

mod claims;
pub mod report;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::api::Exposure;
use crate::config::IdentityMode;
use crate::core::decision::{JOB_INDEX, POD_INDEX};
use crate::core::desired::{
    exposure_plan, job_plan, JobExposureRequest, Owner, MANAGED_BY, MANAGER,
};
use crate::core::object::Kind;
use crate::core::prefix::namespace_user;
use crate::core::route::RouteValue;
use crate::core::Policy;

/// Everything audited, as plain Kubernetes objects (JSON).
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub pods: Vec<Value>,
    pub services: Vec<Value>,
    pub ingresses: Vec<Value>,
    pub exposures: Vec<Value>,
    /// Jobs, CronJobs, StatefulSets, Deployments, ReplicaSets, DaemonSets,
    /// ReplicationControllers.
    pub workloads: Vec<Value>,
    /// EndpointSlices and Endpoints: written by hand, they route around selectors.
    pub endpoints: Vec<Value>,
    /// Kinds the source could not list (e.g. no Exposure CRD installed); said in the report.
    pub unavailable: Vec<String>,
}

/// Kinds that own pods through a pod template.
pub const WORKLOAD_KINDS: [&str; 7] = [
    "Job",
    "CronJob",
    "StatefulSet",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "ReplicationController",
];

impl Inventory {
    /// Files an object by its `kind`; `List`s are unpacked, other kinds ignored. Returns whether
    /// it was kept.
    pub fn add(&mut self, object: Value) -> bool {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Pod" => self.pods.push(object),
            "Service" => self.services.push(object),
            "Ingress" => self.ingresses.push(object),
            "Exposure" => self.exposures.push(object),
            "EndpointSlice" | "Endpoints" => self.endpoints.push(object),
            k if WORKLOAD_KINDS.contains(&k) => self.workloads.push(object),
            k if k.ends_with("List") => {
                let mut kept = false;
                if let Value::Array(items) = object["items"].clone() {
                    for item in items {
                        kept |= self.add(item);
                    }
                }
                return kept;
            }
            _ => return false,
        }
        true
    }

    /// Parses multi-document YAML (or JSON) and files every object. `origin` names the text in
    /// errors.
    pub fn add_yaml(&mut self, text: &str, origin: &str) -> Result<usize, AuditError> {
        let mut kept = 0;
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value: Value =
                serde::Deserialize::deserialize(doc).map_err(|e| AuditError::Parse {
                    origin: origin.to_string(),
                    message: e.to_string(),
                })?;
            if !value.is_null() && self.add(value) {
                kept += 1;
            }
        }
        Ok(kept)
    }

    /// How many objects of each sort were audited.
    pub fn counts(&self) -> Scanned {
        Scanned {
            pods: self.pods.len(),
            services: self.services.len(),
            ingresses: self.ingresses.len(),
            exposures: self.exposures.len(),
            workloads: self.workloads.len(),
            endpoints: self.endpoints.len(),
        }
    }
}

/// Why the audit could not read its input.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{origin} is not valid YAML: {message}")]
    Parse { origin: String, message: String },
}

/// Objects audited, by sort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Scanned {
    pub pods: usize,
    pub services: usize,
    pub ingresses: usize,
    pub exposures: usize,
    pub workloads: usize,
    /// EndpointSlices and Endpoints.
    pub endpoints: usize,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Breaks Portico's guarantee or its desired state: `portico audit` exits 1.
    Violation,
    /// Cannot be verified, or weaker than it should be: exits 1 only with `--strict`.
    Warning,
}

/// The object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// One violation or drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's id, e.g. `prefix-mismatch` (see [`RULES`]).
    pub rule: &'static str,
    pub severity: Severity,
    pub object: ObjectRef,
    /// The route value concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub message: String,
}

/// Every rule: id, severity, what it means (for `--help`, the docs and PolicyReport results).
pub const RULES: [(&str, Severity, &str); 15] = [
    (
        "missing-routing-label",
        Severity::Violation,
        "a pod asks for a tag (or belongs to a workload that does) but carries no routing label",
    ),
    (
        "missing-pod0-label",
        Severity::Warning,
        "the first pod of a job (index 0, or a lone pod) carries the routing label but not the pod0 label",
    ),
    (
        "unstamped-route",
        Severity::Violation,
        "a pod carries a routing label but no identity annotation: it was labelled outside Portico",
    ),
    (
        "prefix-mismatch",
        Severity::Violation,
        "a pod's routing labels or owner label do not carry the prefix of its stamped user",
    ),
    (
        "foreign-selector",
        Severity::Violation,
        "a Service, Ingress or Exposure selects a route value of a user other than its own, or a selector's owner label and route values name different users",
    ),
    (
        "unattributed-selector",
        Severity::Warning,
        "a Service selects a routing label, but nothing on it says whose it is",
    ),
    (
        "unstamped-exposure",
        Severity::Violation,
        "an Exposure has no spec.user: it was created without Portico's webhook",
    ),
    (
        "exposure-conflict",
        Severity::Violation,
        "an Exposure reports a Conflict (node port, host or name taken)",
    ),
    (
        "drift",
        Severity::Violation,
        "a Service Portico manages for an Exposure or a workload does not select what its owner asks for",
    ),
    (
        "orphaned-service",
        Severity::Violation,
        "a Service or Ingress managed by Portico has no owner, or its owner is gone",
    ),
    (
        "forged-copied-identity",
        Severity::Violation,
        "a workload's own metadata, or a CronJob's spec.jobTemplate.metadata, carries Portico identity keys that differ from the stamp on its pod template (controllers copy them onto the objects they make)",
    ),
    (
        "hand-written-endpoints",
        Severity::Violation,
        "an EndpointSlice or Endpoints object not written by Kubernetes' endpoint controllers joins a routed Service",
    ),
    (
        "foreign-endpoints",
        Severity::Violation,
        "a hand-written EndpointSlice or Endpoints object sends its Service's traffic to another user's routed pod",
    ),
    (
        "unattributed-endpoints",
        Severity::Warning,
        "a hand-written EndpointSlice or Endpoints object lists a routed pod, but nothing says whose the object or its Service is",
    ),
    (
        "ingress-squat",
        Severity::Violation,
        "an Ingress (not Portico's own) claims another user's host, or sends to routed Services of a user other than its other claims",
    ),
];

fn severity_of(rule: &str) -> Severity {
    RULES
        .iter()
        .find(|(id, _, _)| *id == rule)
        .map_or(Severity::Violation, |(_, s, _)| *s)
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn map<'a>(v: &'a Value, path: &[&str]) -> Option<&'a serde_json::Map<String, Value>> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_object()
}

fn namespace_of(v: &Value) -> &str {
    s(v, &["metadata", "namespace"]).unwrap_or("default")
}

fn reference(v: &Value) -> ObjectRef {
    ObjectRef {
        api_version: s(v, &["apiVersion"]).unwrap_or_default().to_string(),
        kind: s(v, &["kind"]).unwrap_or_default().to_string(),
        namespace: namespace_of(v).to_string(),
        name: s(v, &["metadata", "name"])
            .or_else(|| s(v, &["metadata", "generateName"]))
            .unwrap_or_default()
            .to_string(),
        uid: s(v, &["metadata", "uid"]).unwrap_or_default().to_string(),
    }
}

/// The pod template's metadata of a workload (where [`Kind::pod_template_path`] says it is).
fn template_meta(w: &Value) -> Option<&Value> {
    let kind = Kind::from_api_version(
        s(w, &["apiVersion"]).unwrap_or_default(),
        s(w, &["kind"]).unwrap_or_default(),
    );
    let path = kind.pod_template_path().unwrap_or(&["spec", "template"]);
    path.iter()
        .try_fold(w, |v, token| v.get(token))?
        .get("metadata")
}

/// The controller owner reference of an object: (kind, name, uid).
fn controller_of(v: &Value) -> Option<(&str, &str, &str)> {
    v["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == Value::Bool(true))
        .or_else(|| v["metadata"]["ownerReferences"].as_array()?.first())
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default(),
                o["uid"].as_str().unwrap_or_default(),
            )
        })
}

/// Objects by (namespace, kind, name) and by uid, for owner references.
struct Owners<'a> {
    by_name: HashMap<(&'a str, &'a str, &'a str), &'a Value>,
    by_uid: HashMap<&'a str, &'a Value>,
}

impl<'a> Owners<'a> {
    fn new(objects: impl Iterator<Item = &'a Value>) -> Self {
        let mut by_name = HashMap::new();
        let mut by_uid = HashMap::new();
        for o in objects {
            let kind = s(o, &["kind"]).unwrap_or_default();
            let name = s(o, &["metadata", "name"]).unwrap_or_default();
            by_name.insert((namespace_of(o), kind, name), o);
            if let Some(uid) = s(o, &["metadata", "uid"]).filter(|u| !u.is_empty()) {
                by_uid.insert(uid, o);
            }
        }
        Owners { by_name, by_uid }
    }

    /// The owner of `v` by its controller reference: by uid when both have one, else by name.
    fn of(&self, v: &'a Value) -> Option<&'a Value> {
        let (kind, name, uid) = controller_of(v)?;
        if let Some(o) = self.by_uid.get(uid).filter(|_| !uid.is_empty()) {
            return Some(o);
        }
        self.by_name.get(&(namespace_of(v), kind, name)).copied()
    }
}

struct Auditor<'a> {
    policy: &'a Policy,
    findings: Vec<Finding>,
}

impl Auditor<'_> {
    fn find(&mut self, rule: &'static str, v: &Value, route: Option<&str>, message: String) {
        self.findings.push(Finding {
            rule,
            severity: severity_of(rule),
            object: reference(v),
            route: route.map(str::to_string),
            message,
        });
    }

    /// The prefix of `user`, or the reason it has none.
    fn prefix(&self, user: &str) -> Result<String, String> {
        self.policy
            .prefix_for(user)
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    }
}

/// Runs every check over the inventory. Findings come sorted by namespace, kind, name, rule.
pub fn audit(policy: &Policy, inv: &Inventory) -> Vec<Finding> {
    let mut a = Auditor {
        policy,
        findings: Vec::new(),
    };
    // Workloads own pods (ReplicaSets are owned by Deployments); Exposures and workloads own
    // Services and Ingresses.
    let owners = Owners::new(inv.workloads.iter().chain(&inv.exposures));
    pods(&mut a, inv, &owners);
    let prefixes = exposures(&mut a, inv);
    services(&mut a, inv, &owners, &prefixes);
    ingresses(&mut a, inv, &owners, &prefixes);
    orphans(&mut a, inv, &owners);
    claims::copied_identity(&mut a, inv);
    // What the webhook's cluster view would know, built from the same objects.
    let view = claims::routed_view(policy, inv);
    claims::endpoints(&mut a, inv, &owners, &prefixes, &view);
    let hosts = claims::HostSpace::new(policy, inv, &prefixes);
    claims::ingress_squat(&mut a, inv, &owners, &prefixes, &view, &hosts);
    let mut findings = a.findings;
    findings.sort_by(|x, y| (&x.object, x.rule).cmp(&(&y.object, y.rule)));
    findings
}

/// Whether a workload's template (or the workload) asks for routing.
fn workload_routes(policy: &Policy, w: &Value) -> bool {
    let tag = policy.tag_annotation.as_str();
    let job = policy.job_label();
    template_meta(w)
        .is_some_and(|m| s(m, &["labels", job]).is_some() || s(m, &["annotations", tag]).is_some())
        || s(w, &["metadata", "annotations", tag]).is_some()
}

fn pods(a: &mut Auditor<'_>, inv: &Inventory, owners: &Owners<'_>) {
    let policy = a.policy;
    let (job, pod0) = (policy.job_label(), policy.pod0_label());
    for p in &inv.pods {
        let route = s(p, &["metadata", "labels", job]);
        let first = s(p, &["metadata", "labels", pod0]);
        let Some(route) = route else {
            let own_tag = s(p, &["metadata", "annotations", &policy.tag_annotation]);
            let owner = owners.of(p);
            // A Deployment's pods are owned by a ReplicaSet owned by the Deployment.
            let owner_routes = owner.is_some_and(|o| {
                workload_routes(policy, o)
                    || owners.of(o).is_some_and(|d| workload_routes(policy, d))
            });
            if let Some(tag) = own_tag {
                a.find(
                    "missing-routing-label",
                    p,
                    None,
                    format!("asks for tag {tag:?} but carries no {job} label (created before Portico, or while its webhook was bypassed)"),
                );
            } else if owner_routes {
                a.find(
                    "missing-routing-label",
                    p,
                    None,
                    format!("its workload asks for routing but the pod carries no {job} label"),
                );
            } else if let Some(v) = first {
                a.find(
                    "unstamped-route",
                    p,
                    Some(v),
                    format!("carries {pod0}={v} without {job}"),
                );
            }
            continue;
        };
        let Some(user) = s(p, &["metadata", "annotations", &policy.user_annotation]) else {
            a.find(
                "unstamped-route",
                p,
                Some(route),
                format!(
                    "carries {job}={route} but no {} annotation: Portico did not label it",
                    policy.user_annotation
                ),
            );
            continue;
        };
        // In namespace identity mode the namespace is the user, whatever the pod says: a pod
        // stamped for anyone else was stamped before the mode changed, or around Portico.
        let namespace_identity = (policy.config.identity.mode == IdentityMode::Namespace)
            .then(|| namespace_user(namespace_of(p)));
        let mut problems = Vec::new();
        let user = match &namespace_identity {
            Some(ns_user) if ns_user != user => {
                problems.push(format!(
                    "{}={user:?} (in namespace identity mode its user is {ns_user:?})",
                    policy.user_annotation
                ));
                ns_user.as_str()
            }
            _ => user,
        };
        let expected = match a.prefix(user) {
            Ok(prefix) => prefix,
            Err(reason) => {
                a.find(
                    "prefix-mismatch",
                    p,
                    Some(route),
                    format!("stamped user {user:?} cannot have a prefix ({reason}), yet the pod carries {job}={route}"),
                );
                continue;
            }
        };
        if RouteValue::prefix_of(route) != Some(expected.as_str()) {
            problems.push(format!("{job}={route}"));
        }
        if let Some(v) = first.filter(|v| *v != route) {
            problems.push(format!("{pod0}={v}"));
        }
        let owner_label = s(p, &["metadata", "labels", &policy.owner_label]);
        if owner_label != Some(expected.as_str()) {
            problems.push(format!(
                "{}={}",
                policy.owner_label,
                owner_label.unwrap_or("(missing)")
            ));
        }
        if !problems.is_empty() {
            a.find(
                "prefix-mismatch",
                p,
                Some(route),
                format!(
                    "{} user {user:?} has prefix {expected:?}, but the pod carries {}",
                    if namespace_identity.is_some() {
                        "namespace identity"
                    } else {
                        "stamped"
                    },
                    problems.join(", ")
                ),
            );
        }
        let index = s(p, &["metadata", "annotations", JOB_INDEX])
            .or_else(|| s(p, &["metadata", "labels", JOB_INDEX]))
            .or_else(|| s(p, &["metadata", "labels", POD_INDEX]));
        let lone = controller_of(p).is_none();
        if first.is_none() && (index == Some("0") || (index.is_none() && lone)) {
            a.find(
                "missing-pod0-label",
                p,
                Some(route),
                format!("the first pod of {route} carries no {pod0} label"),
            );
        }
    }
}

/// Exposures: unstamped, in conflict, and their prefixes (by namespace and name) for the
/// objects they own.
fn exposures(a: &mut Auditor<'_>, inv: &Inventory) -> HashMap<(String, String), String> {
    let mut prefixes = HashMap::new();
    for e in &inv.exposures {
        let key = (
            namespace_of(e).to_string(),
            s(e, &["metadata", "name"]).unwrap_or_default().to_string(),
        );
        let tag = s(e, &["spec", "tag"]).unwrap_or_default();
        match s(e, &["spec", "user"]) {
            None => a.find(
                "unstamped-exposure",
                e,
                None,
                format!("exposes tag {tag:?} for nobody: spec.user is empty (Portico's webhook stamps it at creation)"),
            ),
            Some(user) => match a.prefix(user) {
                Ok(p) => {
                    prefixes.insert(key, p);
                }
                Err(reason) => a.find(
                    "foreign-selector",
                    e,
                    None,
                    format!("spec.user {user:?} cannot have a prefix: {reason}"),
                ),
            },
        }
        let conditions = e["status"]["conditions"].as_array();
        let conflict = conditions.into_iter().flatten().find(|c| {
            (c["type"] == "Conflict" && c["status"] == "True")
                || (c["type"] == "Ready" && c["status"] == "False" && c["reason"] == "Conflict")
        });
        if let Some(c) = conflict {
            a.find(
                "exposure-conflict",
                e,
                None,
                c["message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                    .unwrap_or("the Exposure reports a Conflict")
                    .to_string(),
            );
        }
    }
    prefixes
}

/// The routing label a selector names and its value.
fn selected_route<'v>(
    policy: &Policy,
    selector: Option<&'v serde_json::Map<String, Value>>,
) -> Option<(&'v str, &'v str)> {
    let selector = selector?;
    [policy.pod0_label(), policy.job_label()]
        .into_iter()
        .find_map(|k| {
            let (key, v) = selector.get_key_value(k)?;
            Some((key.as_str(), v.as_str()?))
        })
}

/// Whose an object is: the owner label, the identity annotation, its owner in the inventory, or
/// the namespace in namespace mode. `Err` when it has a user that cannot have a prefix.
fn attributed(
    a: &Auditor<'_>,
    v: &Value,
    owners: &Owners<'_>,
    exposure_prefixes: &HashMap<(String, String), String>,
) -> Option<(String, String)> {
    let policy = a.policy;
    // In namespace identity mode the namespace decides, before anything written on the object:
    // its user is `system:namespace:<ns>`, whose prefix lives in its own space (`ns.<ns>`).
    if policy.config.identity.mode == IdentityMode::Namespace {
        let ns = namespace_of(v);
        let user = namespace_user(ns);
        if let Ok(p) = a.prefix(&user) {
            return Some((
                p,
                format!("its namespace {ns:?} (namespace identity {user:?})"),
            ));
        }
    }
    if let Some(p) = s(v, &["metadata", "labels", &policy.owner_label]) {
        return Some((p.to_string(), format!("its {} label", policy.owner_label)));
    }
    if let Some(u) = s(v, &["metadata", "annotations", &policy.user_annotation]) {
        if let Ok(p) = a.prefix(u) {
            return Some((
                p,
                format!("its {} annotation ({u:?})", policy.user_annotation),
            ));
        }
    }
    if let Some(owner) = owners.of(v) {
        let kind = s(owner, &["kind"]).unwrap_or_default();
        let name = s(owner, &["metadata", "name"]).unwrap_or_default();
        if kind == "Exposure" {
            let key = (namespace_of(owner).to_string(), name.to_string());
            if let Some(p) = exposure_prefixes.get(&key) {
                return Some((p.clone(), format!("its owner Exposure {name}")));
            }
        } else if let Some(u) = template_meta(owner)
            .and_then(|m| s(m, &["annotations", &policy.user_annotation]))
            .or_else(|| s(owner, &["metadata", "annotations", &policy.user_annotation]))
        {
            if let Ok(p) = a.prefix(u) {
                return Some((p, format!("its owner {kind} {name} (user {u:?})")));
            }
        }
    }
    None
}

fn services(
    a: &mut Auditor<'_>,
    inv: &Inventory,
    owners: &Owners<'_>,
    exposure_prefixes: &HashMap<(String, String), String>,
) {
    let policy = a.policy;
    let exposures: BTreeMap<(&str, &str), &Value> = inv
        .exposures
        .iter()
        .map(|e| {
            (
                (
                    namespace_of(e),
                    s(e, &["metadata", "name"]).unwrap_or_default(),
                ),
                e,
            )
        })
        .collect();
    for svc in &inv.services {
        let selector = map(svc, &["spec", "selector"]);
        let route = selected_route(policy, selector).map(|(_, r)| r);
        // Drift first: a managed Service whose selector was emptied selects nothing routed, but
        // still is not what its owner asks for.
        if let Some(message) = drift(policy, svc, owners, &exposures) {
            a.find("drift", svc, route, with_writer(policy, svc, message));
        }
        // Every prefix the selector names: its owner label's value, and the prefix of each
        // route value. A selector whose parts disagree was re-pointed by hand: Portico writes
        // them together, and the webhook refuses any that is not the requester's own.
        let mut named: Vec<(String, String)> = Vec::new();
        if let Some(owner) = selector.and_then(|m| m.get(&policy.owner_label)?.as_str()) {
            named.push((format!("{}={owner}", policy.owner_label), owner.to_string()));
        }
        for key in [policy.pod0_label(), policy.job_label()] {
            if let Some(v) = selector.and_then(|m| m.get(key)?.as_str()) {
                let prefix = RouteValue::prefix_of(v).unwrap_or(v);
                named.push((format!("{key}={v}"), prefix.to_string()));
            }
        }
        if named.is_empty() {
            continue;
        }
        let shown = named
            .iter()
            .map(|(kv, _)| kv.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut problems = Vec::new();
        if let Some((first_kv, first)) = named.first() {
            for (kv, prefix) in &named[1..] {
                if prefix != first {
                    problems.push(format!(
                        "its selector disagrees with itself: {first_kv} names prefix {first:?}, {kv} prefix {prefix:?}"
                    ));
                }
            }
        }
        match attributed(a, svc, owners, exposure_prefixes) {
            Some((prefix, why)) => {
                let foreign: Vec<&str> = named
                    .iter()
                    .filter(|(_, p)| *p != prefix)
                    .map(|(kv, _)| kv.as_str())
                    .collect();
                if !foreign.is_empty() {
                    problems.insert(
                        0,
                        format!(
                            "selects {}, but belongs to prefix {prefix:?} ({why})",
                            foreign.join(",")
                        ),
                    );
                }
            }
            None if problems.is_empty() => a.find(
                "unattributed-selector",
                svc,
                route,
                format!(
                    "selects {shown}; neither a {} label, a {} annotation nor an owner says whose it is",
                    policy.owner_label, policy.user_annotation
                ),
            ),
            None => {}
        }
        if !problems.is_empty() {
            a.find(
                "foreign-selector",
                svc,
                route,
                with_writer(
                    policy,
                    svc,
                    format!(
                        "{}. Point it back at its owner's own route value, or delete it",
                        problems.join("; ")
                    ),
                ),
            );
        }
    }
}

/// How a Service Portico manages differs from what its owner (an Exposure, or a workload that
/// asks for exposure) asks for: the same plan the provisioner writes from, compared by selector.
fn drift(
    policy: &Policy,
    svc: &Value,
    owners: &Owners<'_>,
    exposures: &BTreeMap<(&str, &str), &Value>,
) -> Option<String> {
    let have: Option<BTreeMap<String, String>> = map(svc, &["spec", "selector"]).map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    });
    let owner = owners.of(svc)?;
    let kind = s(owner, &["kind"]).unwrap_or_default();
    let name = s(owner, &["metadata", "name"]).unwrap_or_default();
    let namespace = namespace_of(owner);
    let plan_owner = Owner {
        api_version: s(owner, &["apiVersion"])
            .unwrap_or("portico.dev/v1alpha1")
            .to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        uid: s(owner, &["metadata", "uid"])
            .unwrap_or_default()
            .to_string(),
    };
    let want = if kind == "Exposure" {
        let exposure = exposures.get(&(namespace, name))?;
        let typed = serde_json::from_value::<Exposure>((*exposure).clone()).ok()?;
        let plan = exposure_plan(policy, namespace, &plan_owner, &typed.spec, None).ok()?;
        plan.service.spec.and_then(|s| s.selector)
    } else {
        // Only the Services Portico made for a workload: a workload's own hand-made Services
        // are not Portico's to compare.
        if s(svc, &["metadata", "labels", MANAGED_BY]) != Some(MANAGER) {
            return None;
        }
        let annotations: Option<BTreeMap<String, String>> =
            map(owner, &["metadata", "annotations"]).map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            });
        let request = JobExposureRequest::from_annotations(
            &policy.config.annotation_domain,
            annotations.as_ref(),
        );
        let labels: BTreeMap<String, String> = template_meta(owner)
            .and_then(|m| m.get("labels")?.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let plan = job_plan(policy, namespace, &plan_owner, &request, &labels).ok()??;
        let svc_name = s(svc, &["metadata", "name"]).unwrap_or_default();
        plan.services
            .into_iter()
            .find(|d| d.metadata.name.as_deref() == Some(svc_name))?
            .spec
            .and_then(|s| s.selector)
    };
    (want.is_some() && want != have).then(|| {
        format!(
            "selects {}, but {kind} {name} asks for {}; Portico restores it when it runs",
            show(have.as_ref()),
            show(want.as_ref())
        )
    })
}

/// `message`, followed by who other than Portico last wrote the object, when its
/// `metadata.managedFields` says.
fn with_writer(policy: &Policy, v: &Value, message: String) -> String {
    match claims::foreign_writer(policy, v) {
        Some(writer) => format!("{message} ({writer})"),
        None => message,
    }
}

fn show(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
    .unwrap_or_else(|| "nothing".into())
}

fn ingresses(
    a: &mut Auditor<'_>,
    inv: &Inventory,
    owners: &Owners<'_>,
    exposure_prefixes: &HashMap<(String, String), String>,
) {
    let policy = a.policy;
    let services: HashMap<(&str, &str), &Value> = inv
        .services
        .iter()
        .map(|s_| {
            (
                (
                    namespace_of(s_),
                    s(s_, &["metadata", "name"]).unwrap_or_default(),
                ),
                s_,
            )
        })
        .collect();
    for ing in &inv.ingresses {
        let Some((prefix, why)) = attributed(a, ing, owners, exposure_prefixes) else {
            continue;
        };
        let mut backends: Vec<&str> = Vec::new();
        if let Some(n) = s(ing, &["spec", "defaultBackend", "service", "name"]) {
            backends.push(n);
        }
        for rule in ing["spec"]["rules"].as_array().into_iter().flatten() {
            for path in rule["http"]["paths"].as_array().into_iter().flatten() {
                if let Some(n) = s(path, &["backend", "service", "name"]) {
                    backends.push(n);
                }
            }
        }
        backends.sort_unstable();
        backends.dedup();
        for name in backends {
            let Some(svc) = services.get(&(namespace_of(ing), name)) else {
                continue;
            };
            if let Some((key, route)) = selected_route(policy, map(svc, &["spec", "selector"])) {
                if RouteValue::prefix_of(route) != Some(prefix.as_str()) {
                    a.find(
                        "foreign-selector",
                        ing,
                        Some(route),
                        format!("routes to Service {name}, which selects {key}={route}, but belongs to prefix {prefix:?} ({why})"),
                    );
                }
            }
        }
    }
}

fn orphans(a: &mut Auditor<'_>, inv: &Inventory, owners: &Owners<'_>) {
    for v in inv.services.iter().chain(&inv.ingresses) {
        if s(v, &["metadata", "labels", MANAGED_BY]) != Some(MANAGER) {
            continue;
        }
        let kind = s(v, &["kind"]).unwrap_or_default();
        match controller_of(v) {
            None => a.find(
                "orphaned-service",
                v,
                None,
                format!("a {kind} managed by Portico with no owner: nothing will ever remove it"),
            ),
            Some((owner_kind, owner_name, _)) => {
                // Only owners of kinds the inventory lists can be said to be gone.
                let listed = match owner_kind {
                    "Exposure" => !inv.unavailable.iter().any(|k| k == "Exposure"),
                    k => WORKLOAD_KINDS.contains(&k) && !inv.unavailable.iter().any(|u| u == k),
                };
                if listed && owners.of(v).is_none() {
                    a.find(
                        "orphaned-service",
                        v,
                        None,
                        format!("its owner {owner_kind} {owner_name} is gone"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, labels: Value, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team", "labels": labels, "annotations": annotations}})
    }

    fn rules(inv: &Inventory) -> Vec<(&'static str, String)> {
        audit(&Policy::default(), inv)
            .into_iter()
            .map(|f| (f.rule, f.object.name))
            .collect()
    }

    #[test]
    fn a_correctly_stamped_lone_pod_passes() {
        let mut inv = Inventory::default();
        inv.add(pod(
            "ok",
            json!({"jarvice-job-ipaddr": "user1-foobar", "jarvice-pod0-job-ipaddr": "user1-foobar", "portico.dev/owner": "user1"}),
            json!({"portico.dev/user": "user1", "portico.dev/ipaddr": "foobar"}),
        ));
        assert_eq!(rules(&inv), vec![]);
    }

    #[test]
    fn pods_are_checked_against_their_stamp() {
        let mut inv = Inventory::default();
        inv.add(pod(
            "untagged",
            json!({}),
            json!({"portico.dev/ipaddr": "foobar"}),
        ));
        inv.add(pod(
            "forged",
            json!({"jarvice-job-ipaddr": "user1-foobar", "jarvice-pod0-job-ipaddr": "user1-foobar", "portico.dev/owner": "user1"}),
            json!({"portico.dev/user": "user2"}),
        ));
        inv.add(pod(
            "bare",
            json!({"jarvice-job-ipaddr": "user1-x"}),
            json!({}),
        ));
        assert_eq!(
            rules(&inv),
            vec![
                ("unstamped-route", "bare".to_string()),
                ("prefix-mismatch", "forged".to_string()),
                ("missing-routing-label", "untagged".to_string()),
            ]
        );
    }

    #[test]
    fn services_selecting_another_users_route_are_found() {
        let mut inv = Inventory::default();
        inv.add(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "steal", "namespace": "team",
            "annotations": {"portico.dev/user": "user2"}},
            "spec": {"selector": {"jarvice-job-ipaddr": "user1-foobar"}}}));
        inv.add(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "who", "namespace": "team"},
            "spec": {"selector": {"jarvice-job-ipaddr": "user1-foobar"}}}));
        inv.add(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orphan", "namespace": "team",
            "labels": {"app.kubernetes.io/managed-by": "portico", "portico.dev/owner": "user1"}},
            "spec": {"selector": {"jarvice-job-ipaddr": "user1-foobar", "portico.dev/owner": "user1"}}}));
        let found = audit(&Policy::default(), &inv);
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.rule, f.object.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("orphaned-service", "orphan"),
                ("foreign-selector", "steal"),
                ("unattributed-selector", "who"),
            ]
        );
        assert!(
            found[1].message.contains("prefix \"user2\""),
            "{}",
            found[1].message
        );
        assert_eq!(found[2].severity, Severity::Warning);
    }

    #[test]
    fn re_pointed_services_are_found_with_who_wrote_them() {
        let mut inv = Inventory::default();
        // A Service whose selector's owner label and route value name different users.
        inv.add(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "split", "namespace": "team",
            "annotations": {"portico.dev/user": "user1"}},
            "spec": {"selector": {"jarvice-job-ipaddr": "user1-foobar", "portico.dev/owner": "user2"}}}));
        // The same with nothing to say whose it is: still its own contradiction.
        inv.add(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "split-anon", "namespace": "team"},
            "spec": {"selector": {"jarvice-pod0-job-ipaddr": "user2-foobar", "portico.dev/owner": "user1"}}}));
        // A Job that asks Portico for a Service, the Service Portico made (since re-pointed with
        // kubectl edit to another tag of the same user), and one that still matches.
        let job = |name: &str, uid: &str, tag: &str| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "team", "uid": uid,
                "annotations": {"portico.dev/expose": "ClusterIP", "portico.dev/ipaddr": tag}},
                "spec": {"template": {"metadata": {"labels": {"jarvice-job-ipaddr": format!("user1-{tag}"), "portico.dev/owner": "user1"},
                    "annotations": {"portico.dev/user": "user1", "portico.dev/ipaddr": tag}}}}})
        };
        let managed = |name: &str, job: &str, uid: &str, route: &str, fields: Value| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "team",
                "labels": {"app.kubernetes.io/managed-by": "portico", "portico.dev/owner": "user1", "portico.dev/workload": job},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": uid, "controller": true}],
                "managedFields": fields},
                "spec": {"selector": {"jarvice-job-ipaddr": route, "portico.dev/owner": "user1"}, "ports": [{"name": "http", "port": 80}]}})
        };
        inv.add(job("sim", "u-sim", "sim"));
        inv.add(job("calm", "u-calm", "calm"));
        inv.add(managed(
            "sim-expose",
            "sim",
            "u-sim",
            "user1-other",
            json!([{"manager": "portico", "operation": "Apply", "time": "2024-01-01T00:00:00Z",
                "fieldsV1": {"f:spec": {"f:selector": {}}}},
                {"manager": "kubectl-edit", "operation": "Update", "time": "2024-02-01T00:00:00Z",
                "fieldsV1": {"f:spec": {"f:selector": {"f:jarvice-job-ipaddr": {}}}}}]),
        ));
        inv.add(managed(
            "calm-expose",
            "calm",
            "u-calm",
            "user1-calm",
            json!([{"manager": "portico", "operation": "Apply"}]),
        ));
        // A Portico-managed Service re-pointed at user2's route: its owner label is user1's. (Not
        // drift: the Job's plan has no Service of that name to compare with.)
        inv.add(managed(
            "stolen",
            "calm",
            "u-calm",
            "user2-calm",
            json!([{"manager": "kubectl-patch", "operation": "Update", "time": "2024-03-01T00:00:00Z"}]),
        ));
        let found = audit(&Policy::default(), &inv);
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.rule, f.object.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("drift", "sim-expose"),
                ("foreign-selector", "split"),
                ("foreign-selector", "split-anon"),
                ("foreign-selector", "stolen"),
            ]
        );
        let text = |name: &str, rule: &str| {
            found
                .iter()
                .find(|f| f.object.name == name && f.rule == rule)
                .map(|f| f.message.clone())
                .unwrap_or_default()
        };
        let m = text("sim-expose", "drift");
        assert!(
            m.contains("Job sim asks for jarvice-job-ipaddr=user1-sim"),
            "{m}"
        );
        assert!(m.contains("field manager \"kubectl-edit\""), "{m}");
        let m = text("split", "foreign-selector");
        assert!(
            m.contains("selects portico.dev/owner=user2, but belongs to prefix \"user1\""),
            "{m}"
        );
        assert!(m.contains("disagrees with itself"), "{m}");
        assert!(text("split-anon", "foreign-selector").contains("disagrees with itself"));
        assert!(text("stolen", "foreign-selector").contains("\"kubectl-patch\""));
    }
}
