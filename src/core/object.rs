//! The plain data a decision looks at: the parts of an admission request and of its objects that
//! matter to routing. The admission layer fills these from JSON; tests build them directly.

use std::collections::BTreeMap;

/// A label or annotation map.
pub type Map = BTreeMap<String, String>;

/// What the request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The kinds Portico has rules for. Everything else is allowed untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Job,
    CronJob,
    StatefulSet,
    Deployment,
    ReplicaSet,
    DaemonSet,
    ReplicationController,
    Service,
    Exposure,
    Ingress,
    EndpointSlice,
    Endpoints,
    Other(String),
}

impl Kind {
    /// From an AdmissionReview's `kind` (group, kind).
    /// The kind an object's `apiVersion` and `kind` fields name.
    pub fn from_api_version(api_version: &str, kind: &str) -> Kind {
        Self::from_group_kind(group_of(api_version), kind)
    }

    pub fn from_group_kind(group: &str, kind: &str) -> Kind {
        match (group, kind) {
            ("", "Pod") => Kind::Pod,
            ("batch", "Job") => Kind::Job,
            ("batch", "CronJob") => Kind::CronJob,
            ("apps", "StatefulSet") => Kind::StatefulSet,
            ("apps", "Deployment") => Kind::Deployment,
            ("apps", "ReplicaSet") => Kind::ReplicaSet,
            ("apps", "DaemonSet") => Kind::DaemonSet,
            ("", "ReplicationController") => Kind::ReplicationController,
            ("", "Service") => Kind::Service,
            ("portico.dev", "Exposure") => Kind::Exposure,
            ("networking.k8s.io", "Ingress") => Kind::Ingress,
            ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
            ("", "Endpoints") => Kind::Endpoints,
            (_, other) => Kind::Other(other.to_string()),
        }
    }

    /// Whether objects of this kind carry a pod template that Portico stamps.
    pub fn is_workload(&self) -> bool {
        matches!(
            self,
            Kind::Job
                | Kind::CronJob
                | Kind::StatefulSet
                | Kind::Deployment
                | Kind::ReplicaSet
                | Kind::DaemonSet
                | Kind::ReplicationController
        )
    }

    /// Where this kind keeps the template of the pods it makes, as path tokens (`None` for kinds
    /// without one).
    pub fn pod_template_path(&self) -> Option<&'static [&'static str]> {
        match self {
            Kind::CronJob => Some(&["spec", "jobTemplate", "spec", "template"]),
            k if k.is_workload() => Some(&["spec", "template"]),
            _ => None,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Kind::Pod => "Pod",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::StatefulSet => "StatefulSet",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicationController => "ReplicationController",
            Kind::Service => "Service",
            Kind::Exposure => "Exposure",
            Kind::Ingress => "Ingress",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Other(k) => k,
        }
    }
}

/// The API group of an `apiVersion`: `apps/v1` → `apps`, `v1` → the core group (empty).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// The metadata that routing depends on. `None` maps are absent from the object (a patch must
/// add the map before adding a key to it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub labels: Option<Map>,
    pub annotations: Option<Map>,
    /// The kind of the controlling owner reference, if any.
    pub controller_kind: Option<String>,
}

impl Meta {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// The requested Exposure, as far as admission cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExposureView {
    pub tag: Option<String>,
    pub user: Option<String>,
    /// `spec.ingress.host`, when the Exposure names its own host.
    pub host: Option<String>,
}

/// An Ingress, as far as ownership cares: the hosts it claims and the Services it sends to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressView {
    /// Every `spec.rules[].host` and `spec.tls[].hosts[]`.
    pub hosts: Vec<String>,
    /// Every backend Service name (`spec.defaultBackend` and the rules' paths), same namespace.
    pub services: Vec<String>,
}

/// One address of an EndpointSlice or Endpoints object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointView {
    pub addresses: Vec<String>,
    /// `targetRef` when it names a Pod: its namespace as written (`None`: the object's own) and
    /// name.
    pub pod: Option<(Option<String>, String)>,
}

impl EndpointView {
    /// The pod `targetRef` names, its namespace defaulting to `namespace` (the object's, which
    /// is the request's: the apiserver decides it, not the body).
    pub fn target_pod<'a>(&'a self, namespace: &'a str) -> Option<(&'a str, &'a str)> {
        let (ns, name) = self.pod.as_ref()?;
        Some((ns.as_deref().unwrap_or(namespace), name))
    }
}

/// An object under review.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub meta: Meta,
    /// The pod template's metadata, for workloads. `None` when the template has no `metadata`.
    pub template: Option<Meta>,
    /// A workload without a pod template at all (the apiserver refuses it, but a JSON Patch must
    /// not address a path whose parent is missing).
    pub template_missing: bool,
    /// A Service's `spec.selector`.
    pub selector: Option<Map>,
    /// A Service's `spec.type` (`ClusterIP` when absent) and `spec.externalName`.
    pub service_type: Option<String>,
    pub external_name: Option<String>,
    pub exposure: Option<ExposureView>,
    /// A CronJob's `spec.jobTemplate.metadata`: copied by the cronjob controller onto each Job.
    pub job_template: Option<Meta>,
    pub ingress: Option<IngressView>,
    /// The endpoints of an EndpointSlice, or of every subset of an Endpoints object.
    pub endpoints: Option<Vec<EndpointView>>,
}

/// Who sent the request, as the apiserver authenticated them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    pub username: String,
    pub groups: Vec<String>,
}

/// An admission request reduced to what decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub operation: Operation,
    pub kind: Kind,
    pub namespace: String,
    pub requester: Requester,
    /// The subresource written (`status` for `pods/status`); `None` for the object itself.
    pub subresource: Option<String>,
    pub dry_run: bool,
    pub object: Option<Object>,
    pub old_object: Option<Object>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_api_version_and_kind() {
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("portico.dev/v1alpha1"), "portico.dev");
        assert_eq!(Kind::from_api_version("batch/v1", "CronJob"), Kind::CronJob);
        assert_eq!(Kind::from_api_version("v1", "Pod"), Kind::Pod);
        // The group matters: a Pod of another group is not a Pod.
        assert_eq!(
            Kind::from_api_version("example.com/v1", "Pod"),
            Kind::Other("Pod".into())
        );
        assert_eq!(
            Kind::from_api_version("batch/v1", "CronJob").pod_template_path(),
            Some(&["spec", "jobTemplate", "spec", "template"][..])
        );
    }
}
