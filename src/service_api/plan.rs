//! What a start creates, as a pure function of the parsed template and the start's facts: the
//! Secret holding `env`, the template's objects with Portico's labels and identity annotations
//! added, and an Exposure (the template's own, or one made from its first container port).
//!
//! Every object gets the service label (so a stop finds what a start made), the client label,
//! and the user annotation the webhook reads from a trusted submitter; pods and pod templates
//! also get the ipaddr tag annotation, so the webhook stamps them with the user's route value
//! exactly as it stamps a `kubectl`-submitted job.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::api::ServiceType;
use crate::config::Config;
use crate::core::object::Kind;

/// Why the template's objects cannot be created as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{file}: {kind} {name:?} is in namespace {found:?}, but this service runs in {namespace:?}; leave metadata.namespace out or use the namespace keyword")]
    Namespace {
        file: String,
        kind: String,
        name: String,
        found: String,
        namespace: String,
    },
    #[error("{file}: {kind} {name:?} appears twice")]
    Duplicate {
        file: String,
        kind: String,
        name: String,
    },
    #[error(
        "{file}: {kind} {name:?} has the name of the Secret the API keeps the service's env in"
    )]
    SecretName {
        file: String,
        kind: String,
        name: String,
    },
    #[error("{file}: more than one Exposure; a service has one front door")]
    TwoExposures { file: String },
    #[error("{file}: no Exposure and no containerPort to make one from")]
    NoPort { file: String },
    #[error("{file}: {what}")]
    Invalid { file: String, what: String },
}

/// The facts of one start.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub file: &'a str,
    pub namespace: &'a str,
    /// The Portico user the webhook will stamp (named in the identity annotation).
    pub user: &'a str,
    pub tag: &'a str,
    pub client: &'a str,
    pub service_id: &'a str,
    pub start_id: &'a str,
    /// This start's nonce: an object carrying it was created by this start (see
    /// [`super::record::owns`]).
    pub nonce: &'a str,
    /// Value of the service label: a hash of client and service id.
    pub key: &'a str,
    pub secret_name: &'a str,
    /// The hub's certificates for the lab's internal TLS, as the Secret's data, and that
    /// Secret's name: made only when the request carried them and `api.ssl.enabled` is on.
    pub certs: Option<(&'a str, &'a BTreeMap<String, String>)>,
    /// The name of the Exposure made when the template has none (and so of its Service).
    pub exposure_name: &'a str,
    /// A template that brings its own `v1` Service of that name (as the Kubernetes manager's
    /// templates do, `svc-<id>`) gets no Exposure: the Service the hub connects to is the
    /// template's.
    pub own_service_suffices: bool,
    pub env: &'a BTreeMap<String, String>,
    /// Type of the Exposure made when the template has none.
    pub service_type: ServiceType,
}

/// Label and annotation keys the API writes, under the configured domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `<domain>/api-service`: the service's key (hash of client and id), on every object.
    pub service: String,
    /// `<domain>/api-client`: the client's name, on every object.
    pub client: String,
    /// `<domain>/service-id`: the `uuidcode`.
    pub service_id: String,
    /// `<domain>/start-id`.
    pub start_id: String,
    /// `<domain>/api-start`: the nonce of the start that created the object.
    pub nonce: String,
    /// `<domain>/user`: the identity annotation the webhook reads from trusted submitters.
    pub user: String,
    /// `<domain>/ipaddr`: the requested tag.
    pub tag: String,
}

impl Keys {
    pub fn new(config: &Config) -> Self {
        let d = &config.annotation_domain;
        Self {
            service: format!("{d}/api-service"),
            client: format!("{d}/api-client"),
            service_id: format!("{d}/service-id"),
            start_id: format!("{d}/start-id"),
            nonce: format!("{d}/api-start"),
            user: config.user_annotation(),
            tag: config.tag_annotation(),
        }
    }
}

/// A created object's identity, as recorded for the stop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl ObjectRef {
    pub fn of(object: &Value) -> Self {
        let s = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Self {
            api_version: s("/apiVersion"),
            kind: s("/kind"),
            name: s("/metadata/name"),
        }
    }

    pub fn is_exposure(&self) -> bool {
        self.kind == "Exposure" && self.api_version.starts_with("portico.dev/")
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// The objects to create, in order: the env Secret, the template's objects, the Exposure last
/// (so it is only made once what it exposes exists).
pub fn plan(
    keys: &Keys,
    input: &PlanInput<'_>,
    objects: Vec<Value>,
) -> Result<Vec<Value>, PlanError> {
    let file = input.file.to_string();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(objects.len() + 2);
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": input.secret_name},
        "type": "Opaque",
        "stringData": input.env,
    });
    stamp_object(keys, input, &mut secret);
    seen.insert(ObjectRef::of(&secret));
    out.push(secret);
    if let Some((name, data)) = input.certs {
        let mut certs = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "Opaque",
            "stringData": data,
        });
        stamp_object(keys, input, &mut certs);
        seen.insert(ObjectRef::of(&certs));
        out.push(certs);
    }
    let mut exposure: Option<Value> = None;
    for mut object in objects {
        let r = ObjectRef::of(&object);
        match object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            Some(ns) if ns != input.namespace => {
                return Err(PlanError::Namespace {
                    file,
                    kind: r.kind,
                    name: r.name,
                    found: ns.to_string(),
                    namespace: input.namespace.to_string(),
                })
            }
            _ => {}
        }
        if r.kind == "Secret" && r.api_version == "v1" && r.name == input.secret_name {
            return Err(PlanError::SecretName {
                file,
                kind: r.kind,
                name: r.name,
            });
        }
        if !seen.insert(r.clone()) {
            return Err(PlanError::Duplicate {
                file,
                kind: r.kind,
                name: r.name,
            });
        }
        if !object["metadata"].is_object() {
            return Err(PlanError::Invalid {
                file,
                what: format!("{r}: metadata is not a mapping"),
            });
        }
        stamp_object(keys, input, &mut object);
        if r.is_exposure() {
            if exposure.is_some() {
                return Err(PlanError::TwoExposures { file });
            }
            let spec = object
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| PlanError::Invalid {
                    file: file.clone(),
                    what: format!("{r}: spec is not a mapping"),
                })?;
            spec.insert("tag".into(), json!(input.tag));
            // The webhook fills in the user from the identity annotation.
            spec.remove("user");
            exposure = Some(object);
            continue;
        }
        stamp_pods(keys, input, &mut object).map_err(|what| PlanError::Invalid {
            file: file.clone(),
            what: format!("{r}: {what}"),
        })?;
        out.push(object);
    }
    let own_service = input.own_service_suffices
        && out.iter().any(|o| {
            let r = ObjectRef::of(o);
            r.api_version == "v1" && r.kind == "Service" && r.name == input.exposure_name
        });
    let exposure = match exposure {
        Some(e) => e,
        None if own_service => return Ok(out),
        None => {
            let ports = first_ports(&out[1..]);
            if ports.is_empty() {
                return Err(PlanError::NoPort { file });
            }
            let mut e = json!({
                "apiVersion": "portico.dev/v1alpha1",
                "kind": "Exposure",
                "metadata": {"name": input.exposure_name},
                "spec": {
                    "tag": input.tag,
                    "target": "pod0",
                    "service": {"type": input.service_type.as_str(), "ports": ports},
                },
            });
            stamp_object(keys, input, &mut e);
            if !seen.insert(ObjectRef::of(&e)) {
                return Err(PlanError::Duplicate {
                    file,
                    kind: "Exposure".into(),
                    name: input.exposure_name.into(),
                });
            }
            e
        }
    };
    out.push(exposure);
    Ok(out)
}

fn map_at<'v>(value: &'v mut Value, key: &str) -> Option<&'v mut Map<String, Value>> {
    let obj = value.as_object_mut()?;
    let entry = obj.entry(key.to_string()).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

fn stamp_meta(
    keys: &Keys,
    input: &PlanInput<'_>,
    meta: &mut Value,
    pod: bool,
) -> Result<(), String> {
    let labels = map_at(meta, "labels").ok_or("metadata.labels is not a mapping")?;
    labels.insert(keys.service.clone(), json!(input.key));
    labels.insert(keys.client.clone(), json!(input.client));
    let annotations = map_at(meta, "annotations").ok_or("metadata.annotations is not a mapping")?;
    annotations.insert(keys.user.clone(), json!(input.user));
    annotations.insert(keys.service_id.clone(), json!(input.service_id));
    annotations.insert(keys.start_id.clone(), json!(input.start_id));
    annotations.insert(keys.nonce.clone(), json!(input.nonce));
    if pod {
        annotations.insert(keys.tag.clone(), json!(input.tag));
    }
    Ok(())
}

fn stamp_object(keys: &Keys, input: &PlanInput<'_>, object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata") {
        // A non-mapping metadata is reported by the caller.
        let _ = stamp_meta(keys, input, meta, false);
    }
    if let Some(obj) = object.as_object_mut() {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), json!(input.namespace));
        }
    }
}

/// Where a kind keeps the template of the pods it makes, as a JSON pointer (the core's
/// [`Kind::pod_template_path`]).
fn pod_template_pointer(object: &Value) -> Option<String> {
    let kind = Kind::from_api_version(
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    );
    kind.pod_template_path()
        .map(|tokens| format!("/{}", tokens.join("/")))
}

fn stamp_pods(keys: &Keys, input: &PlanInput<'_>, object: &mut Value) -> Result<(), String> {
    let kind = object["kind"].as_str().unwrap_or("").to_string();
    if kind == "Pod" {
        return stamp_meta(keys, input, &mut object["metadata"], true);
    }
    let Some(pointer) = pod_template_pointer(object) else {
        return Ok(());
    };
    // The workload itself carries the tag too: the webhook reads it from either place.
    stamp_meta(keys, input, &mut object["metadata"], true)?;
    let template = object
        .pointer_mut(&pointer)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{} is missing", pointer[1..].replace('/', ".")))?;
    let meta = template.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    stamp_meta(keys, input, meta, true)
}

/// The value of `label` on a Pod, or on a workload's pod template: after creation, the route
/// value Portico's webhook stamped there.
pub fn pod_label(object: &Value, label: &str) -> Option<String> {
    let meta = if object["kind"].as_str() == Some("Pod") {
        object.get("metadata")?
    } else {
        object
            .pointer(&pod_template_pointer(object)?)?
            .get("metadata")?
    };
    meta.pointer(&format!(
        "/labels/{}",
        label.replace('~', "~0").replace('/', "~1")
    ))
    .and_then(Value::as_str)
    .map(str::to_string)
}

/// The pod spec of a Pod or a workload's template.
fn pod_spec(object: &Value) -> Option<&Value> {
    let kind = object["kind"].as_str()?;
    if kind == "Pod" {
        return object.get("spec");
    }
    object.pointer(&pod_template_pointer(object)?)?.get("spec")
}

/// The ports of the first container that declares any, named as the Exposure needs them.
fn first_ports(objects: &[Value]) -> Vec<Value> {
    for object in objects {
        let Some(spec) = pod_spec(object) else {
            continue;
        };
        for container in spec["containers"].as_array().into_iter().flatten() {
            let ports: Vec<Value> = container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let port = p["containerPort"].as_i64()?;
                    let name = p["name"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("p{port}"));
                    let mut out = json!({"name": name, "port": port});
                    if let Some(proto) = p["protocol"].as_str() {
                        out["protocol"] = json!(proto);
                    }
                    Some(out)
                })
                .collect();
            if !ports.is_empty() {
                return ports;
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(env: &'a BTreeMap<String, String>) -> PlanInput<'a> {
        PlanInput {
            file: "descriptions/portal/lab/default/service.yaml",
            namespace: "team",
            user: "portal_alice",
            tag: "svc1",
            client: "portal",
            service_id: "svc1",
            start_id: "s1",
            nonce: "n1",
            key: "k1",
            secret_name: "svc1-env",
            certs: None,
            exposure_name: "svc1",
            own_service_suffices: false,
            env,
            service_type: ServiceType::NodePort,
        }
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "svc1"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8888}]}]}})
    }

    #[test]
    fn a_pod_gets_secret_stamp_and_generated_exposure() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        let out = plan(&Keys::new(&Config::default()), &input(&env), vec![pod()]).unwrap();
        let refs: Vec<String> = out.iter().map(|o| ObjectRef::of(o).to_string()).collect();
        assert_eq!(refs, ["Secret/svc1-env", "Pod/svc1", "Exposure/svc1"]);
        assert_eq!(out[0]["stringData"]["A"], "1");
        let pod = &out[1];
        assert_eq!(pod["metadata"]["namespace"], "team");
        assert_eq!(
            pod["metadata"]["annotations"]["portico.dev/user"],
            "portal_alice"
        );
        assert_eq!(pod["metadata"]["annotations"]["portico.dev/ipaddr"], "svc1");
        assert_eq!(
            pod["metadata"]["annotations"]["portico.dev/api-start"],
            "n1"
        );
        assert_eq!(pod["metadata"]["labels"]["portico.dev/api-service"], "k1");
        assert_eq!(
            pod["metadata"]["labels"]["portico.dev/api-client"],
            "portal"
        );
        let e = &out[2];
        assert_eq!(e["spec"]["tag"], "svc1");
        assert_eq!(e["spec"]["service"]["type"], "NodePort");
        assert_eq!(
            e["spec"]["service"]["ports"][0],
            json!({"name": "http", "port": 8888})
        );
        assert_eq!(
            e["metadata"]["annotations"]["portico.dev/user"],
            "portal_alice"
        );
        assert!(out[0]["metadata"]["annotations"]
            .get("portico.dev/ipaddr")
            .is_none());
    }

    #[test]
    fn workload_templates_are_stamped_and_a_template_exposure_is_kept_but_retagged() {
        let env = BTreeMap::new();
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "team"},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": null, "spec": {}}}}}});
        let exp = json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": {"name": "e"},
            "spec": {"tag": "other", "user": "someone", "service": {"type": "ClusterIP", "ports": []}}});
        let out = plan(
            &Keys::new(&Config::default()),
            &input(&env),
            vec![exp, job, cron],
        )
        .unwrap();
        let refs: Vec<String> = out.iter().map(|o| ObjectRef::of(o).to_string()).collect();
        assert_eq!(
            refs,
            ["Secret/svc1-env", "Job/j", "CronJob/c", "Exposure/e"]
        );
        let t = &out[1]["spec"]["template"]["metadata"];
        assert_eq!(t["annotations"]["portico.dev/ipaddr"], "svc1");
        assert_eq!(t["labels"]["portico.dev/api-service"], "k1");
        let t = &out[2]["spec"]["jobTemplate"]["spec"]["template"]["metadata"];
        assert_eq!(t["annotations"]["portico.dev/user"], "portal_alice");
        assert_eq!(out[3]["spec"]["tag"], "svc1");
        assert!(out[3]["spec"].get("user").is_none());
    }

    #[test]
    fn certificates_get_a_secret_of_their_own_that_the_template_cannot_take() {
        let env = BTreeMap::new();
        let data: BTreeMap<String, String> =
            [("JUPYTERHUB_SSL_KEYFILE_DATA".to_string(), "K".to_string())].into();
        let mut i = input(&env);
        i.certs = Some(("svc1-tls", &data));
        let out = plan(&Keys::new(&Config::default()), &i, vec![pod()]).unwrap();
        let refs: Vec<String> = out.iter().map(|o| ObjectRef::of(o).to_string()).collect();
        assert_eq!(
            refs,
            [
                "Secret/svc1-env",
                "Secret/svc1-tls",
                "Pod/svc1",
                "Exposure/svc1"
            ]
        );
        assert_eq!(out[1]["stringData"]["JUPYTERHUB_SSL_KEYFILE_DATA"], "K");
        assert_eq!(
            out[1]["metadata"]["labels"]["portico.dev/api-service"],
            "k1"
        );
        let taken = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "svc1-tls"}});
        let err = plan(&Keys::new(&Config::default()), &i, vec![pod(), taken]).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn a_template_with_its_own_service_of_the_lab_s_name_gets_no_exposure() {
        let env = BTreeMap::new();
        let svc = |name: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"port": 8080}]}})
        };
        let names = |out: Vec<Value>| -> Vec<String> {
            out.iter().map(|o| ObjectRef::of(o).to_string()).collect()
        };
        let mut i = input(&env);
        i.own_service_suffices = true;
        let out = plan(&Keys::new(&Config::default()), &i, vec![pod(), svc("svc1")]).unwrap();
        assert_eq!(names(out), ["Secret/svc1-env", "Pod/svc1", "Service/svc1"]);
        // Another name, or a client of the other wire: the Exposure is made as before.
        let out = plan(
            &Keys::new(&Config::default()),
            &i,
            vec![pod(), svc("other")],
        )
        .unwrap();
        assert_eq!(names(out).last().unwrap(), "Exposure/svc1");
        let out = plan(
            &Keys::new(&Config::default()),
            &input(&env),
            vec![pod(), svc("svc1")],
        )
        .unwrap();
        assert_eq!(names(out).last().unwrap(), "Exposure/svc1");
    }

    #[test]
    fn refusals_name_the_file_and_object() {
        let env = BTreeMap::new();
        let cases: Vec<(Vec<Value>, &str)> = vec![
            (
                vec![
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "other"}}),
                ],
                "namespace \"other\"",
            ),
            (vec![pod(), pod()], "appears twice"),
            (
                vec![
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "svc1-env"}}),
                ],
                "env in",
            ),
            (
                vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})],
                "no containerPort",
            ),
            (
                vec![
                    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "a"}, "spec": {}}),
                ],
                "spec.template is missing",
            ),
            (
                vec![
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": [1]}}),
                ],
                "labels is not a mapping",
            ),
            (
                vec![
                    pod(),
                    json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": {"name": "x"}, "spec": {}}),
                    json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": {"name": "y"}, "spec": {}}),
                ],
                "more than one Exposure",
            ),
        ];
        for (objects, needle) in cases {
            let err = plan(&Keys::new(&Config::default()), &input(&env), objects)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(
                err.starts_with("descriptions/portal/lab/default/service.yaml"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_stamped_route_is_read_from_a_pod_or_a_template() {
        let pod = json!({"kind": "Pod", "metadata": {"labels": {"jarvice-job-ipaddr": "p-x"}}});
        assert_eq!(
            pod_label(&pod, "jarvice-job-ipaddr").as_deref(),
            Some("p-x")
        );
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {},
            "spec": {"template": {"metadata": {"labels": {"a/b": "v"}}}}});
        assert_eq!(pod_label(&deploy, "a/b").as_deref(), Some("v"));
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": {"a/b": "v"}}});
        assert_eq!(pod_label(&cm, "a/b"), None);
    }
}
