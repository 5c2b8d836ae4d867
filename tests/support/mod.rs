//! Test helpers: small builders for objects and AdmissionReviews, and a reply reader that applies
//! the returned JSON Patch with the json-patch crate.
#![allow(dead_code)]

use base64::Engine as _;
use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use serde_json::{json, Value};

pub const JOB_CONTROLLER: &str = "system:serviceaccount:kube-system:job-controller";
pub const PORTICO_SA: &str = "system:serviceaccount:portico-system:portico";

/// An object under construction.
#[derive(Clone, Debug)]
pub struct Obj(pub Value);

pub fn pod(name: &str) -> Obj {
    Obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}),
    )
}

pub fn workload(kind: &str, name: &str) -> Obj {
    let api = match kind {
        "Job" | "CronJob" => "batch/v1",
        _ => "apps/v1",
    };
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
    let spec = if kind == "CronJob" {
        json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}})
    } else {
        json!({"template": template})
    };
    Obj(
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "team"}, "spec": spec}),
    )
}

pub fn service(name: &str, selector: Value) -> Obj {
    Obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "team"},
        "spec": {"selector": selector, "ports": [{"port": 80}]}}),
    )
}

impl Obj {
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn annotate(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["annotations"][k] = json!(v);
        self
    }
    pub fn tag(self, tag: &str) -> Self {
        self.annotate("portico.dev/ipaddr", tag)
    }
    pub fn owned_by(mut self, kind: &str) -> Self {
        self.0["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": kind, "name": "x", "uid": "u", "controller": true}]);
        self
    }
    /// The pod template's metadata (or the pod's own).
    pub fn template_meta(&self) -> &Value {
        match self.0["kind"].as_str() {
            Some("Pod") | Some("Service") => &self.0["metadata"],
            Some("CronJob") => &self.0["spec"]["jobTemplate"]["spec"]["template"]["metadata"],
            _ => &self.0["spec"]["template"]["metadata"],
        }
    }
}

/// Who sends the review.
pub struct Who<'a> {
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

pub fn user(name: &str) -> Who<'_> {
    Who {
        user: name,
        groups: &["system:authenticated"],
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// An AdmissionReview as kube-apiserver sends it.
pub fn review(op: &str, who: &Who<'_>, object: Option<&Obj>, old: Option<&Obj>) -> Value {
    let any = object.or(old).map(|o| o.0.clone()).unwrap_or(Value::Null);
    let api = any["apiVersion"].as_str().unwrap_or("v1").to_string();
    let kind = any["kind"].as_str().unwrap_or("Pod").to_string();
    let resource = format!("{}s", kind.to_lowercase());
    let version = api.rsplit('/').next().unwrap_or("v1").to_string();
    let gvk = json!({"group": group_of(&api), "version": version, "kind": kind});
    let gvr = json!({"group": group_of(&api), "version": version, "resource": resource});
    let options = match op {
        "CREATE" => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
        "UPDATE" => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
        _ => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": any["metadata"]["name"], "namespace": "team",
            "operation": op,
            "userInfo": {"username": who.user, "uid": "x", "groups": who.groups},
            "object": object.map(|o| o.0.clone()),
            "oldObject": old.map(|o| o.0.clone()),
            "dryRun": false,
            "options": options,
        }
    })
}

/// A reply, read.
#[derive(Debug)]
pub struct Reply {
    pub raw: Value,
    pub allowed: bool,
    pub message: String,
    pub warnings: Vec<String>,
    pub patch: Option<json_patch::Patch>,
}

impl Reply {
    /// The object after the patch (the object itself when there is none).
    pub fn applied_to(&self, object: &Obj) -> Obj {
        let mut out = object.0.clone();
        if let Some(p) = &self.patch {
            json_patch::patch(&mut out, p).expect("patch applies");
        }
        Obj(out)
    }
}

pub fn send(webhook: &Webhook, endpoint: Endpoint, review: &Value) -> Reply {
    let body = serde_json::to_vec(review).expect("json");
    let answer = webhook.answer(endpoint, &body).expect("a review");
    let raw: Value = serde_json::from_slice(&answer.body).expect("reply is json");
    let response = &raw["response"];
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "uid carried back"
    );
    let patch = response["patch"].as_str().map(|p| {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("base64");
        serde_json::from_slice(&bytes).expect("patch json")
    });
    Reply {
        allowed: response["allowed"] == json!(true),
        message: response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        warnings: response["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        patch,
        raw,
    }
}

pub fn webhook() -> Webhook {
    Webhook::new(Config::default())
}

pub fn webhook_with(yaml: &str) -> Webhook {
    Webhook::new(Config::from_yaml(yaml, "test").expect("config"))
}

/// CREATE through /mutate, then /validate on the result; returns the stored object or the denial.
pub fn create(
    webhook: &Webhook,
    who: &Who<'_>,
    object: &Obj,
) -> Result<(Obj, Vec<String>), String> {
    let r = send(
        webhook,
        Endpoint::Mutate,
        &review("CREATE", who, Some(object), None),
    );
    if !r.allowed {
        return Err(r.message);
    }
    let stored = r.applied_to(object);
    let v = send(
        webhook,
        Endpoint::Validate,
        &review("CREATE", who, Some(&stored), None),
    );
    if !v.allowed {
        return Err(v.message);
    }
    Ok((stored, r.warnings))
}

pub fn labels_of(meta: &Value) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    (
        meta["labels"]["jarvice-job-ipaddr"].as_str(),
        meta["labels"]["jarvice-pod0-job-ipaddr"].as_str(),
        meta["labels"]["portico.dev/owner"].as_str(),
        meta["annotations"]["portico.dev/user"].as_str(),
    )
}
