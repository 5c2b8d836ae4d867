//! The resource registry: the built-in resources the sandbox serves and the ones derived from
//! stored CustomResourceDefinitions (served versions, scope, `status` subresource, printer columns).

use serde_json::Value;

/// A printer column (CRD `additionalPrinterColumns` or a built-in column).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `date`, ...
    pub kind: String,
    /// JSON path such as `.status.phase`.
    pub json_path: String,
    /// 0 = always shown, 1 = `-o wide` only.
    pub priority: i64,
}

/// One servable resource (one group/version/plural).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    /// API group, "" for core.
    pub group: String,
    /// Version served under.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural (URL) name.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Namespaced or cluster scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Has a `status` subresource.
    pub status: bool,
    /// Other subresources (e.g. `log` for pods).
    pub extra_subresources: Vec<String>,
    /// Extra table columns (CRDs).
    pub columns: Vec<PrinterColumn>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Defined by a CRD.
    pub custom: bool,
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as used in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The storage key (version independent).
    pub fn key(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    /// Whether this is `group`/`plural`.
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

/// Storage key: group and plural resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
}

impl GroupResource {
    /// Builds a key.
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
        }
    }
}

struct Builtin {
    gv: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    all: bool,
}

const fn b(
    gv: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    all: bool,
) -> Builtin {
    Builtin {
        gv,
        kind,
        plural,
        namespaced,
        short,
        status,
        all,
    }
}

const BUILTINS: &[Builtin] = &[
    b("v1", "Namespace", "namespaces", false, &["ns"], true, false),
    b("v1", "Pod", "pods", true, &["po"], true, true),
    b("v1", "Service", "services", true, &["svc"], true, true),
    b("v1", "Event", "events", true, &["ev"], false, false),
    b("v1", "Secret", "secrets", true, &[], false, false),
    b("v1", "ConfigMap", "configmaps", true, &["cm"], false, false),
    b(
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
        false,
    ),
    b("v1", "Endpoints", "endpoints", true, &["ep"], false, false),
    b(
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        true,
        &["rc"],
        true,
        true,
    ),
    b("v1", "Node", "nodes", false, &["no"], true, false),
    b(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        true,
        false,
    ),
    b(
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
        true,
        false,
    ),
    b(
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        false,
        &[],
        false,
        false,
    ),
    b(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
        false,
        false,
    ),
    b("batch/v1", "Job", "jobs", true, &[], true, true),
    b("batch/v1", "CronJob", "cronjobs", true, &["cj"], true, true),
    b(
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        true,
        true,
    ),
    b(
        "apps/v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        true,
        true,
    ),
    b(
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        true,
        true,
    ),
    b(
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        true,
        true,
    ),
    b(
        "apps/v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        &[],
        false,
        false,
    ),
    b(
        "coordination.k8s.io/v1",
        "Lease",
        "leases",
        true,
        &[],
        false,
        false,
    ),
    b(
        "events.k8s.io/v1",
        "Event",
        "events",
        true,
        &["ev"],
        false,
        false,
    ),
    b(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        true,
        &[],
        false,
        false,
    ),
    b(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        true,
        false,
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "Role",
        "roles",
        true,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
        false,
    ),
    b(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        &[],
        false,
        false,
    ),
    b(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        &[],
        false,
        false,
    ),
    b(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
        false,
    ),
];

/// The built-in resources.
pub fn builtins() -> Vec<ResourceInfo> {
    BUILTINS
        .iter()
        .map(|bi| {
            let (group, version) = match bi.gv.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), bi.gv.to_string()),
            };
            let mut extra = Vec::new();
            if bi.plural == "pods" {
                extra.push("log".to_string());
            }
            if matches!(bi.plural, "namespaces") {
                extra.push("finalize".to_string());
            }
            ResourceInfo {
                group,
                version,
                kind: bi.kind.into(),
                plural: bi.plural.into(),
                singular: bi.kind.to_lowercase(),
                namespaced: bi.namespaced,
                short_names: bi.short.iter().map(|s| s.to_string()).collect(),
                status: bi.status,
                extra_subresources: extra,
                columns: Vec::new(),
                categories: if bi.all { vec!["all".into()] } else { vec![] },
                custom: false,
            }
        })
        .collect()
}

/// The resources a CRD defines (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strings(&names["shortNames"]);
    let categories = strings(&names["categories"]);
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let Some(version) = v["name"].as_str() else {
            continue;
        };
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        Some(PrinterColumn {
                            name: c["name"].as_str()?.to_string(),
                            kind: c["type"].as_str().unwrap_or("string").to_string(),
                            json_path: c["jsonPath"].as_str()?.to_string(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceInfo {
            group: group.clone(),
            version: version.to_string(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: short_names.clone(),
            status: v.pointer("/subresources/status").is_some(),
            extra_subresources: Vec::new(),
            columns,
            categories: categories.clone(),
            custom: true,
        });
    }
    out
}

/// Whether `v` (a CRD version entry name) is the storage version.
pub fn crd_storage_version(crd: &Value) -> Option<String> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_versions_become_resources() {
        let crd = json!({"spec": {"group": "portico.dev", "scope": "Namespaced",
            "names": {"plural": "exposures", "kind": "Exposure", "shortNames": ["exp"]},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Tag", "type": "string", "jsonPath": ".spec.tag"}]},
                {"name": "v0", "served": false}]}});
        let r = from_crd(&crd);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].api_version(), "portico.dev/v1alpha1");
        assert!(r[0].status && r[0].namespaced);
        assert_eq!(r[0].columns[0].json_path, ".spec.tag");
        assert_eq!(crd_storage_version(&crd).as_deref(), Some("v1alpha1"));
    }
}
