//! A structured AdmissionReview generator for the `review_fields` target: the fuzzer chooses the
//! requester, the kind, the operation and the labels and annotations that matter to Portico
//! (from a vocabulary of the real keys and values plus arbitrary strings), and gets a review
//! shaped as kube-apiserver sends it.

use arbitrary::Arbitrary;
use serde_json::{json, Map, Value};

/// Everything one generated review varies.
#[derive(Debug, Arbitrary)]
pub struct Fields {
    user: Choice,
    groups: Vec<Choice>,
    kind: u8,
    operation: u8,
    namespace: Choice,
    labels: Vec<(Choice, Choice)>,
    annotations: Vec<(Choice, Choice)>,
    /// On workloads, the pod template's own labels and annotations.
    template_labels: Vec<(Choice, Choice)>,
    template_annotations: Vec<(Choice, Choice)>,
    /// UPDATE: the old object's labels and annotations (the rest is the same object).
    old_labels: Vec<(Choice, Choice)>,
    old_annotations: Vec<(Choice, Choice)>,
    /// The controlling owner's kind, if any.
    owner: Option<Choice>,
    dry_run: bool,
    /// For Services and Exposures: the selector or the exposed tag and user.
    selector: Vec<(Choice, Choice)>,
    exposure_user: Option<Choice>,
}

/// A word from the vocabulary, or any string.
#[derive(Debug, Arbitrary)]
enum Choice {
    Word(u8),
    Any(String),
}

const WORDS: &[&str] = &[
    "jarvice-job-ipaddr",
    "jarvice-pod0-job-ipaddr",
    "portico.dev/owner",
    "portico.dev/user",
    "portico.dev/ipaddr",
    "batch.kubernetes.io/job-completion-index",
    "apps.kubernetes.io/pod-index",
    "app",
    "user1",
    "user2",
    "user1-foobar",
    "user2-foobar",
    "foobar",
    "a-b",
    "b-c",
    "0",
    "1",
    "",
    "alice@example.com",
    "kubernetes-admin",
    "system:serviceaccount:kube-system:job-controller",
    "system:serviceaccount:kube-system:statefulset-controller",
    "system:serviceaccount:portico-system:portico",
    "system:serviceaccount:team:runner",
    "system:masters",
    "system:authenticated",
    "team",
    "Job",
    "ReplicaSet",
    "StatefulSet",
    "Ünïcode",
    "-x-",
];

impl Choice {
    fn text(&self) -> String {
        match self {
            Choice::Word(i) => WORDS[usize::from(*i) % WORDS.len()].to_string(),
            Choice::Any(s) => s.clone(),
        }
    }
}

fn map(pairs: &[(Choice, Choice)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.text(), Value::String(v.text()));
    }
    Value::Object(m)
}

const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "Pod"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "ReplicaSet"),
    ("apps", "v1", "DaemonSet"),
    ("", "v1", "Service"),
    ("portico.dev", "v1alpha1", "Exposure"),
    ("", "v1", "ConfigMap"),
];

const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT"];

impl Fields {
    /// The review as JSON bytes.
    pub fn to_review(&self) -> Vec<u8> {
        let (group, version, kind) = KINDS[usize::from(self.kind) % KINDS.len()];
        let operation = OPERATIONS[usize::from(self.operation) % OPERATIONS.len()];
        let namespace = self.namespace.text();
        let object = self.object(
            kind,
            group,
            version,
            &namespace,
            &self.labels,
            &self.annotations,
        );
        let old = (operation == "UPDATE").then(|| {
            self.object(
                kind,
                group,
                version,
                &namespace,
                &self.old_labels,
                &self.old_annotations,
            )
        });
        let api_group = |g: &str| g.to_string();
        let gvk = json!({"group": api_group(group), "version": version, "kind": kind});
        let resource = format!("{}s", kind.to_lowercase());
        let gvr = json!({"group": group, "version": version, "resource": resource});
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "2b6f6a4e-7d1c-4c55-9d55-000000000001",
                "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "name": "x", "namespace": namespace,
                "operation": operation,
                "userInfo": {
                    "username": self.user.text(),
                    "groups": self.groups.iter().map(Choice::text).collect::<Vec<_>>(),
                },
                "object": if operation == "DELETE" { Value::Null } else { object.clone() },
                "oldObject": old.unwrap_or(if operation == "DELETE" { object } else { Value::Null }),
                "dryRun": self.dry_run,
            }
        });
        serde_json::to_vec(&review).unwrap_or_default()
    }

    fn object(
        &self,
        kind: &str,
        group: &str,
        version: &str,
        namespace: &str,
        labels: &[(Choice, Choice)],
        annotations: &[(Choice, Choice)],
    ) -> Value {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let mut metadata = json!({
            "name": "x", "namespace": namespace,
            "labels": map(labels), "annotations": map(annotations),
        });
        if let Some(owner) = &self.owner {
            metadata["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": owner.text(),
                "name": "o", "uid": "u", "controller": true}]);
        }
        let template = json!({
            "metadata": {"labels": map(&self.template_labels), "annotations": map(&self.template_annotations)},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        });
        let spec = match kind {
            "Pod" => json!({"containers": [{"name": "main", "image": "busybox"}]}),
            "CronJob" => {
                json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}})
            }
            "Service" => json!({"selector": map(&self.selector), "ports": [{"port": 80}]}),
            "Exposure" => {
                let mut spec = json!({"tag": self.selector.first().map(|(_, v)| v.text()).unwrap_or_default(),
                    "service": {"type": "NodePort", "ports": [{"name": "http", "port": 80}]}});
                if let Some(user) = &self.exposure_user {
                    spec["user"] = Value::String(user.text());
                }
                spec
            }
            "ConfigMap" => Value::Null,
            _ => json!({"template": template}),
        };
        json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec})
    }
}
