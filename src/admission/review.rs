//! The AdmissionReview wire format: decoding only the parts decisions need, and encoding replies.
//!
//! Objects are decoded lazily: the request keeps `object` and `oldObject` as raw JSON and only
//! their metadata (and, per kind, the pod template's metadata, a Service's selector or an
//! Exposure's tag and user) are parsed; everything else is skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::object::{ExposureView, Kind, Map, Meta, Object, Operation, Request, Requester};

/// The envelope of a review as it arrives.
#[derive(Deserialize)]
pub struct ReviewIn<'a> {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(borrow)]
    pub request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Deserialize, Default)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

/// `request` of an AdmissionReview.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<'a> {
    pub uid: String,
    pub kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MetaIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    labels: Option<Map>,
    #[serde(default)]
    annotations: Option<Map>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerIn>>,
}

#[derive(Deserialize)]
struct OwnerIn {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    controller: Option<bool>,
}

impl MetaIn {
    fn into_meta(self) -> Meta {
        Meta {
            labels: self.labels,
            annotations: self.annotations,
            controller_kind: self
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.kind),
        }
    }
}

#[derive(Deserialize)]
struct WithMeta {
    #[serde(default)]
    metadata: Option<MetaIn>,
}

#[derive(Deserialize)]
struct TemplateIn {
    #[serde(default)]
    metadata: Option<MetaIn>,
}

#[derive(Deserialize)]
struct WorkloadSpec {
    #[serde(default)]
    template: Option<TemplateIn>,
}

#[derive(Deserialize)]
struct Workload {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<WorkloadSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronSpec {
    #[serde(default)]
    job_template: Option<Workload>,
}

#[derive(Deserialize)]
struct CronJob {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<CronSpec>,
}

#[derive(Deserialize)]
struct ServiceSpec {
    #[serde(default)]
    selector: Option<Map>,
}

#[derive(Deserialize)]
struct Service {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<ServiceSpec>,
}

#[derive(Deserialize)]
struct ExposureSpec {
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct Exposure {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<ExposureSpec>,
}

fn name_of(meta: &MetaIn) -> String {
    meta.name
        .clone()
        .or_else(|| meta.generate_name.clone())
        .unwrap_or_default()
}

/// Decodes the parts of `raw` that a decision about `kind` needs.
pub fn decode_object(kind: &Kind, raw: &RawValue) -> Result<Object, serde_json::Error> {
    let text = raw.get();
    let split = |meta: Option<MetaIn>| {
        let meta = meta.unwrap_or_default();
        (name_of(&meta), meta.into_meta())
    };
    Ok(match kind {
        Kind::Job | Kind::StatefulSet | Kind::Deployment | Kind::ReplicaSet | Kind::DaemonSet => {
            let w: Workload = serde_json::from_str(text)?;
            let (name, meta) = split(w.metadata);
            let template = w
                .spec
                .and_then(|s| s.template)
                .and_then(|t| t.metadata)
                .map(MetaIn::into_meta);
            Object {
                name,
                meta,
                template,
                ..Object::default()
            }
        }
        Kind::CronJob => {
            let c: CronJob = serde_json::from_str(text)?;
            let (name, meta) = split(c.metadata);
            let template = c
                .spec
                .and_then(|s| s.job_template)
                .and_then(|j| j.spec)
                .and_then(|s| s.template)
                .and_then(|t| t.metadata)
                .map(MetaIn::into_meta);
            Object {
                name,
                meta,
                template,
                ..Object::default()
            }
        }
        Kind::Service => {
            let s: Service = serde_json::from_str(text)?;
            let (name, meta) = split(s.metadata);
            Object {
                name,
                meta,
                selector: s.spec.and_then(|s| s.selector),
                ..Object::default()
            }
        }
        Kind::Exposure => {
            let e: Exposure = serde_json::from_str(text)?;
            let (name, meta) = split(e.metadata);
            let exposure = e
                .spec
                .map(|s| ExposureView {
                    tag: s.tag,
                    user: s.user,
                })
                .unwrap_or_default();
            Object {
                name,
                meta,
                exposure: Some(exposure),
                ..Object::default()
            }
        }
        Kind::Pod | Kind::Other(_) => {
            let o: WithMeta = serde_json::from_str(text)?;
            let (name, meta) = split(o.metadata);
            Object {
                name,
                meta,
                ..Object::default()
            }
        }
    })
}

/// Why a well-formed review cannot be decided (answered inside the review, `allowed: false`).
#[derive(Debug, thiserror::Error)]
pub enum Undecidable {
    #[error("unknown operation {0:?}")]
    Operation(String),
    #[error("request.{field} is not a JSON object, so it cannot be a {kind}")]
    NotAnObject { field: &'static str, kind: String },
    #[error("request.{field} could not be read as a {kind}: {source}")]
    Object {
        field: &'static str,
        kind: String,
        source: serde_json::Error,
    },
}

/// Reduces a decoded request to the plain [`Request`] decisions take.
pub fn to_request(input: &RequestIn<'_>) -> Result<Request, Undecidable> {
    let operation = match input.operation.as_str() {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        "CONNECT" => Operation::Connect,
        other => return Err(Undecidable::Operation(other.to_string())),
    };
    let kind = input
        .kind
        .as_ref()
        .map(|k| Kind::from_group_kind(&k.group, &k.kind))
        .unwrap_or_else(|| Kind::Other(String::new()));
    let decode =
        |field: &'static str, raw: Option<&RawValue>| -> Result<Option<Object>, Undecidable> {
            // DELETE and CONNECT carry objects that no decision reads (and CONNECT's is not the pod).
            if matches!(operation, Operation::Delete | Operation::Connect) {
                return Ok(None);
            }
            match raw {
                None => Ok(None),
                Some(raw) if raw.get() == "null" => Ok(None),
                // serde reads a struct from a JSON array too (fields by position); the apiserver
                // only ever sends objects, so anything else is not the object it stores.
                Some(raw) if !raw.get().starts_with('{') => Err(Undecidable::NotAnObject {
                    field,
                    kind: kind.name().to_string(),
                }),
                Some(raw) => {
                    decode_object(&kind, raw)
                        .map(Some)
                        .map_err(|source| Undecidable::Object {
                            field,
                            kind: kind.name().to_string(),
                            source,
                        })
                }
            }
        };
    Ok(Request {
        operation,
        namespace: input.namespace.clone().unwrap_or_default(),
        requester: Requester {
            username: input.user_info.username.clone(),
            groups: input.user_info.groups.clone().unwrap_or_default(),
        },
        dry_run: input.dry_run.unwrap_or(false),
        object: decode("object", input.object)?,
        old_object: decode("oldObject", input.old_object)?,
        kind,
    })
}

/// The reply envelope.
#[derive(Serialize)]
pub struct ReviewOut<'a> {
    #[serde(rename = "apiVersion")]
    pub api_version: &'a str,
    pub kind: &'static str,
    pub response: ResponseOut,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
pub struct StatusOut {
    pub code: u16,
    pub message: String,
    pub reason: &'static str,
}
