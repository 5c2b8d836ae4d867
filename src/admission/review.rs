//! The AdmissionReview wire format: decoding only the parts decisions need, and encoding replies.
//!
//! Decoding is one pass over the body. The apiserver writes `request.kind` before
//! `request.object`, so by the time the object arrives its kind is known and only what a decision
//! about that kind reads is kept (metadata, and per kind the pod template's metadata, a Service's
//! selector or an Exposure's tag and user); everything else is skipped without being built.
//!
//! When that single pass fails, the body is read again with the objects kept as raw JSON
//! ([`ReviewIn::parse`]): an envelope that is not a review is then told apart (HTTP 400) from a
//! review whose object cannot be read as its kind (answered inside the review, `allowed: false`).
//! A review whose `object` comes before its `kind` is decoded from the raw JSON afterwards.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::core::object::{
    EndpointView, ExposureView, IngressView, Kind, Map, Meta, Object, Operation, Request, Requester,
};

/// The envelope of a review as it arrives.
pub struct ReviewIn<'a> {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub request: Option<RequestIn<'a>>,
}

impl<'a> ReviewIn<'a> {
    /// Reads a review body: one pass when it can, a second (objects kept raw) when that fails,
    /// so the error returned is always the envelope's own. The body is text already checked to be
    /// UTF-8 (skipped values are not checked again, so the check has to come first).
    pub fn parse(body: &'a str) -> Result<Self, serde_json::Error> {
        Self::parse_with(body, Objects::Eager).or_else(|_| Self::parse_with(body, Objects::Raw))
    }

    /// The reference reading: objects kept raw and decoded afterwards by [`to_request`]. The
    /// single pass of [`ReviewIn::parse`] must always come to the same request (the tests and
    /// the fuzz targets check it).
    pub fn parse_in_two_passes(body: &'a str) -> Result<Self, serde_json::Error> {
        Self::parse_with(body, Objects::Raw)
    }

    fn parse_with(body: &'a str, objects: Objects) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(body);
        let review = de.deserialize_map(ReviewVisitor { objects })?;
        de.end()?;
        Ok(review)
    }
}

/// How the objects of a request are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Objects {
    /// Decoded as they are read when the request's kind is already known.
    Eager,
    /// Kept as raw JSON, decoded by [`to_request`].
    Raw,
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

/// `request.object` or `request.oldObject`: already decoded, or raw JSON still to decode.
// Lives for one review on the stack; boxing the decoded object would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum ObjectIn<'a> {
    Decoded(Object),
    Raw(&'a RawValue),
}

/// `request` of an AdmissionReview.
pub struct RequestIn<'a> {
    pub uid: String,
    pub kind: Option<GroupVersionKind>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub operation: String,
    pub user_info: UserInfo,
    pub object: Option<ObjectIn<'a>>,
    pub old_object: Option<ObjectIn<'a>>,
    pub dry_run: Option<bool>,
    pub sub_resource: Option<String>,
}

/// Matches an object key against the fields a visitor knows, without allocating it.
struct FieldOf(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldOf {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldOf {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|known| *known == v))
    }
}

/// The fields of one JSON object being read: which are known, and which were seen (a field given
/// twice is an error, as serde's derived decoders make it).
struct Fields {
    names: &'static [&'static str],
    seen: u32,
}

impl Fields {
    fn of(names: &'static [&'static str]) -> Self {
        Self { names, seen: 0 }
    }

    /// The index in `names` of the next known field, skipping the values of unknown ones.
    fn next<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<Option<usize>, A::Error> {
        while let Some(field) = map.next_key_seed(FieldOf(self.names))? {
            let Some(i) = field else {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            };
            let bit = 1 << i;
            if self.seen & bit != 0 {
                return Err(de::Error::duplicate_field(self.names[i]));
            }
            self.seen |= bit;
            return Ok(Some(i));
        }
        Ok(None)
    }
}

const REVIEW_FIELDS: &[&str] = &["apiVersion", "kind", "request"];

struct ReviewVisitor {
    objects: Objects,
}

impl<'de> Visitor<'de> for ReviewVisitor {
    type Value = ReviewIn<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionReview object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::of(REVIEW_FIELDS);
        let mut review = ReviewIn {
            api_version: None,
            kind: None,
            request: None,
        };
        while let Some(i) = fields.next(&mut map)? {
            match i {
                0 => review.api_version = map.next_value()?,
                1 => review.kind = map.next_value()?,
                _ => {
                    review.request = map.next_value_seed(Nullable(RequestVisitor {
                        objects: self.objects,
                    }))?
                }
            }
        }
        Ok(review)
    }
}

const REQUEST_FIELDS: &[&str] = &[
    "uid",
    "kind",
    "name",
    "namespace",
    "operation",
    "userInfo",
    "object",
    "oldObject",
    "dryRun",
    "subResource",
];

struct RequestVisitor {
    objects: Objects,
}

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RequestIn<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an admission request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::of(REQUEST_FIELDS);
        let (mut uid, mut operation) = (None, None);
        let mut request = RequestIn {
            uid: String::new(),
            kind: None,
            name: None,
            namespace: None,
            operation: String::new(),
            user_info: UserInfo::default(),
            object: None,
            old_object: None,
            dry_run: None,
            sub_resource: None,
        };
        while let Some(i) = fields.next(&mut map)? {
            match i {
                0 => uid = Some(map.next_value::<String>()?),
                1 => request.kind = map.next_value()?,
                2 => request.name = map.next_value()?,
                3 => request.namespace = map.next_value()?,
                4 => operation = Some(map.next_value::<String>()?),
                5 => request.user_info = map.next_value()?,
                6 | 7 => {
                    let object = match (&request.kind, self.objects) {
                        (Some(gvk), Objects::Eager) => {
                            let kind = Kind::from_group_kind(&gvk.group, &gvk.kind);
                            map.next_value_seed(Nullable(ObjectSeed(&kind)))?
                                .map(ObjectIn::Decoded)
                        }
                        _ => map.next_value::<Option<&RawValue>>()?.map(ObjectIn::Raw),
                    };
                    if i == 6 {
                        request.object = object;
                    } else {
                        request.old_object = object;
                    }
                }
                8 => request.dry_run = map.next_value()?,
                _ => request.sub_resource = map.next_value()?,
            }
        }
        request.uid = uid.ok_or_else(|| de::Error::missing_field("uid"))?;
        request.operation = operation.ok_or_else(|| de::Error::missing_field("operation"))?;
        Ok(request)
    }
}

/// `null` or what the inner seed reads.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or an object")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

impl<'de> DeserializeSeed<'de> for RequestVisitor {
    type Value = RequestIn<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

/// Reads an object of a known kind; only a JSON object is accepted (serde would read a struct
/// from an array too, by position, and the apiserver never sends one).
struct ObjectSeed<'k>(&'k Kind);

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Object;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} object", self.0.name())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        decode_object_from(self.0, de::value::MapAccessDeserializer::new(map))
    }
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

/// An object, or a pod template, read for its metadata alone.
#[derive(Deserialize)]
struct WithMeta {
    #[serde(default)]
    metadata: Option<MetaIn>,
}

#[derive(Deserialize)]
struct WorkloadSpec {
    #[serde(default)]
    template: Option<WithMeta>,
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
#[serde(rename_all = "camelCase")]
struct ServiceBackendIn {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct BackendIn {
    #[serde(default)]
    service: Option<ServiceBackendIn>,
}

#[derive(Deserialize)]
struct PathIn {
    #[serde(default)]
    backend: Option<BackendIn>,
}

#[derive(Deserialize)]
struct HttpIn {
    #[serde(default)]
    paths: Option<Vec<PathIn>>,
}

#[derive(Deserialize)]
struct RuleIn {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    http: Option<HttpIn>,
}

#[derive(Deserialize)]
struct TlsIn {
    #[serde(default)]
    hosts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngressSpecIn {
    #[serde(default)]
    default_backend: Option<BackendIn>,
    #[serde(default)]
    rules: Option<Vec<RuleIn>>,
    #[serde(default)]
    tls: Option<Vec<TlsIn>>,
}

#[derive(Deserialize)]
struct IngressIn {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<IngressSpecIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetRefIn {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// An EndpointSlice endpoint (`addresses`) or an Endpoints address (`ip`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointIn {
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    target_ref: Option<TargetRefIn>,
}

#[derive(Deserialize)]
struct SliceIn {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    endpoints: Option<Vec<EndpointIn>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubsetIn {
    #[serde(default)]
    addresses: Option<Vec<EndpointIn>>,
    #[serde(default)]
    not_ready_addresses: Option<Vec<EndpointIn>>,
}

#[derive(Deserialize)]
struct EndpointsIn {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    subsets: Option<Vec<SubsetIn>>,
}

fn endpoint_view(e: EndpointIn) -> EndpointView {
    let mut addresses = e.addresses.unwrap_or_default();
    addresses.extend(e.ip);
    let pod = e
        .target_ref
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .map(|r| (r.namespace, r.name.unwrap_or_default()));
    EndpointView { addresses, pod }
}

#[derive(Deserialize)]
struct CronJob {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<CronSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(default)]
    selector: Option<Map>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    external_name: Option<String>,
}

#[derive(Deserialize)]
struct Service {
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<ServiceSpec>,
}

#[derive(Deserialize)]
struct ExposureIngressIn {
    #[serde(default)]
    host: Option<String>,
}

#[derive(Deserialize)]
struct ExposureSpec {
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    ingress: Option<ExposureIngressIn>,
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
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let object = decode_object_from(kind, &mut de)?;
    de.end()?;
    Ok(object)
}

/// Decodes the parts of an object that a decision about `kind` needs, skipping the rest.
fn decode_object_from<'de, D: Deserializer<'de>>(kind: &Kind, d: D) -> Result<Object, D::Error> {
    let split = |meta: Option<MetaIn>| {
        let meta = meta.unwrap_or_default();
        (name_of(&meta), meta.into_meta())
    };
    Ok(match kind {
        Kind::Job
        | Kind::StatefulSet
        | Kind::Deployment
        | Kind::ReplicaSet
        | Kind::DaemonSet
        | Kind::ReplicationController => {
            let w = Workload::deserialize(d)?;
            let (name, meta) = split(w.metadata);
            let template = w.spec.and_then(|s| s.template);
            let template_missing = template.is_none();
            let template = template.and_then(|t| t.metadata).map(MetaIn::into_meta);
            Object {
                name,
                meta,
                template,
                template_missing,
                ..Object::default()
            }
        }
        Kind::CronJob => {
            let c = CronJob::deserialize(d)?;
            let (name, meta) = split(c.metadata);
            let job = c.spec.and_then(|s| s.job_template);
            let (job_meta, job_spec) = match job {
                Some(j) => (j.metadata, j.spec),
                None => (None, None),
            };
            let template = job_spec.and_then(|s| s.template);
            let template_missing = template.is_none();
            let template = template.and_then(|t| t.metadata).map(MetaIn::into_meta);
            Object {
                name,
                meta,
                template,
                template_missing,
                job_template: job_meta.map(MetaIn::into_meta),
                ..Object::default()
            }
        }
        Kind::Service => {
            let s = Service::deserialize(d)?;
            let (name, meta) = split(s.metadata);
            let (selector, service_type, external_name) = match s.spec {
                Some(spec) => (spec.selector, spec.type_, spec.external_name),
                None => (None, None, None),
            };
            Object {
                name,
                meta,
                selector,
                service_type,
                external_name,
                ..Object::default()
            }
        }
        Kind::Exposure => {
            let e = Exposure::deserialize(d)?;
            let (name, meta) = split(e.metadata);
            // No `spec` at all stays `None`: a patch that stamps the user must add `spec` whole.
            let exposure = e.spec.map(|s| ExposureView {
                tag: s.tag,
                user: s.user,
                host: s.ingress.and_then(|i| i.host),
            });
            Object {
                name,
                meta,
                exposure,
                ..Object::default()
            }
        }
        Kind::Ingress => {
            let i = IngressIn::deserialize(d)?;
            let (name, meta) = split(i.metadata);
            let mut view = IngressView::default();
            let mut backend = |b: Option<BackendIn>| {
                if let Some(n) = b.and_then(|b| b.service).and_then(|s| s.name) {
                    view.services.push(n);
                }
            };
            let spec = i.spec.unwrap_or(IngressSpecIn {
                default_backend: None,
                rules: None,
                tls: None,
            });
            // A default backend, or a rule without a host, answers for every host: claimed as "".
            let mut hosts = Vec::new();
            if spec.default_backend.is_some() {
                hosts.push(String::new());
            }
            backend(spec.default_backend);
            for rule in spec.rules.unwrap_or_default() {
                hosts.push(rule.host.unwrap_or_default());
                for path in rule.http.and_then(|h| h.paths).unwrap_or_default() {
                    backend(path.backend);
                }
            }
            for tls in spec.tls.unwrap_or_default() {
                hosts.extend(tls.hosts.unwrap_or_default());
            }
            view.hosts = hosts;
            Object {
                name,
                meta,
                ingress: Some(view),
                ..Object::default()
            }
        }
        Kind::EndpointSlice => {
            let e = SliceIn::deserialize(d)?;
            let (name, meta) = split(e.metadata);
            let endpoints = e
                .endpoints
                .unwrap_or_default()
                .into_iter()
                .map(endpoint_view)
                .collect();
            Object {
                name,
                meta,
                endpoints: Some(endpoints),
                ..Object::default()
            }
        }
        Kind::Endpoints => {
            let e = EndpointsIn::deserialize(d)?;
            let (name, meta) = split(e.metadata);
            let endpoints = e
                .subsets
                .unwrap_or_default()
                .into_iter()
                .flat_map(|s| {
                    let mut all = s.addresses.unwrap_or_default();
                    all.extend(s.not_ready_addresses.unwrap_or_default());
                    all
                })
                .map(endpoint_view)
                .collect();
            Object {
                name,
                meta,
                endpoints: Some(endpoints),
                ..Object::default()
            }
        }
        Kind::Pod | Kind::Other(_) => {
            let o = WithMeta::deserialize(d)?;
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
    // `error`, not `source`: the cause is in the message, so a chain printed whole says it once.
    #[error("request.{field} could not be read as a {kind}: {error}")]
    Object {
        field: &'static str,
        kind: String,
        error: serde_json::Error,
    },
}

/// Reduces a decoded request to the plain [`Request`] decisions take.
pub fn to_request(input: RequestIn<'_>) -> Result<Request, Undecidable> {
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
    let decode = |field: &'static str,
                  object: Option<ObjectIn>|
     -> Result<Option<Object>, Undecidable> {
        // CONNECT carries an options object, not the pod; DELETE's `object` is null or
        // DeleteOptions-shaped, and only its `oldObject` (the stored object) is read, for who owns it.
        if operation == Operation::Connect || (operation == Operation::Delete && field == "object")
        {
            return Ok(None);
        }
        match object {
            None => Ok(None),
            Some(ObjectIn::Decoded(object)) => Ok(Some(object)),
            Some(ObjectIn::Raw(raw)) if raw.get() == "null" => Ok(None),
            // serde reads a struct from a JSON array too (fields by position); the apiserver
            // only ever sends objects, so anything else is not the object it stores.
            Some(ObjectIn::Raw(raw)) if !raw.get().starts_with('{') => {
                Err(Undecidable::NotAnObject {
                    field,
                    kind: kind.name().to_string(),
                })
            }
            Some(ObjectIn::Raw(raw)) => {
                decode_object(&kind, raw)
                    .map(Some)
                    .map_err(|error| Undecidable::Object {
                        field,
                        kind: kind.name().to_string(),
                        error,
                    })
            }
        }
    };
    Ok(Request {
        operation,
        namespace: input.namespace.unwrap_or_default(),
        requester: Requester {
            username: input.user_info.username,
            groups: input.user_info.groups.unwrap_or_default(),
        },
        subresource: input.sub_resource.filter(|s| !s.is_empty()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// What a body decodes to along one path: the request, or why it is undecidable, or why it
    /// is not a review. Errors compare by message.
    fn decided(body: &str, objects: Objects) -> Result<Result<Request, String>, String> {
        let review = ReviewIn::parse_with(body, objects).map_err(|e| e.to_string())?;
        let request = review.request.ok_or("no request")?;
        Ok(to_request(request).map_err(|e| e.to_string()))
    }

    fn parsed(body: &Value) -> Result<Request, String> {
        let text = body.to_string();
        let review = ReviewIn::parse(&text).map_err(|e| format!("bad review: {e}"))?;
        to_request(review.request.ok_or("no request")?).map_err(|e| e.to_string())
    }

    fn review(request: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    }

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "labels": labels}, "spec": {"containers": []}})
    }

    fn pod_request(object: Value) -> Value {
        json!({
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "userInfo": {"username": "user1"},
            "object": object,
        })
    }

    fn fixture_bodies() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for dir in ["tests/data/admission-reviews", "benches/data"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("fixture directory") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|x| x == "json") {
                    let body = std::fs::read_to_string(&path).expect("fixture");
                    out.push((path.display().to_string(), body));
                }
            }
        }
        assert!(out.len() >= 17, "fixtures found: {}", out.len());
        out
    }

    #[test]
    fn the_single_pass_decodes_every_fixture_as_the_raw_pass_does() {
        for (name, body) in fixture_bodies() {
            let eager = decided(&body, Objects::Eager);
            let raw = decided(&body, Objects::Raw);
            assert!(eager.is_ok(), "{name}: {eager:?}");
            assert_eq!(eager, raw, "{name}");
        }
    }

    #[test]
    fn fixtures_decode_their_objects_in_the_single_pass() {
        for (name, body) in fixture_bodies() {
            let review = ReviewIn::parse_with(&body, Objects::Eager).expect("a review");
            let request = review.request.expect("a request");
            for object in [&request.object, &request.old_object].into_iter().flatten() {
                assert!(matches!(object, ObjectIn::Decoded(_)), "{name}: kept raw");
            }
        }
    }

    #[test]
    fn an_object_before_its_kind_is_decoded_afterwards() {
        let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "object":{"metadata":{"name":"p","labels":{"a":"b"}}},
            "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
            "operation":"CREATE","userInfo":{"username":"user1"}}}"#;
        let review = ReviewIn::parse(body).expect("a review");
        let request = review.request.expect("a request");
        assert!(matches!(request.object, Some(ObjectIn::Raw(_))));
        let request = to_request(request).expect("decidable");
        assert_eq!(request.kind, Kind::Pod);
        let object = request.object.expect("object");
        assert_eq!(object.name, "p");
        assert_eq!(object.meta.label("a"), Some("b"));
    }

    #[test]
    fn escaped_field_names_are_the_fields_they_spell() {
        let body = r#"{"api\u0056ersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
            "userInfo":{"username":"user1"},"obj\u0065ct":{"metadata":{"l\u0061bels":{"a":"b"}}}}}"#;
        let review = ReviewIn::parse(body).expect("a review");
        assert_eq!(review.api_version.as_deref(), Some("admission.k8s.io/v1"));
        let request = to_request(review.request.expect("a request")).expect("decidable");
        assert_eq!(request.object.expect("object").meta.label("a"), Some("b"));
    }

    #[test]
    fn an_object_that_is_not_a_json_object_is_undecidable_not_a_bad_review() {
        for object in [
            json!([{"metadata": {}}]),
            json!("pod"),
            json!(7),
            json!(true),
        ] {
            let got = parsed(&review(pod_request(object.clone())));
            let message = got.expect_err("undecidable");
            assert!(message.contains("not a JSON object"), "{object}: {message}");
        }
    }

    #[test]
    fn an_object_of_the_wrong_shape_is_undecidable_not_a_bad_review() {
        for labels in [json!(5), json!(["a"]), json!({"a": 1}), json!({"a": null})] {
            let got = parsed(&review(pod_request(pod(labels.clone()))));
            let message = got.expect_err("undecidable");
            assert!(
                message.starts_with("request.object could not be read as a Pod"),
                "{labels}: {message}"
            );
        }
    }

    /// Skipped values are not checked for UTF-8 by the decoder, so the whole body is checked
    /// first: invalid bytes where no decision looks still make it not JSON (found by fuzzing).
    #[test]
    fn invalid_utf8_anywhere_is_not_json() {
        use crate::admission::{BadReview, Endpoint, Webhook};
        let webhook = Webhook::new(crate::config::Config::default());
        let good = review(pod_request(pod(json!({"a": "b"})))).to_string();
        assert!(webhook.answer(Endpoint::Mutate, good.as_bytes()).is_ok());
        for (from, to) in [
            ("\"containers\"", &b"\"contai\xffners\""[..]),
            ("\"metadata\"", &b"\"met\xc3adata\""[..]),
            ("\"user1\"", &b"\"user\xed\xa0\x80\""[..]),
        ] {
            let mut body = Vec::new();
            let (before, after) = good.split_once(from).expect("needle in the body");
            body.extend_from_slice(before.as_bytes());
            body.extend_from_slice(to);
            body.extend_from_slice(after.as_bytes());
            match webhook.answer(Endpoint::Mutate, &body) {
                Err(BadReview::NotJson(message)) => assert!(message.contains("UTF-8"), "{message}"),
                other => panic!("{from}: {:?}", other.map(|a| a.summary)),
            }
        }
    }

    #[test]
    fn a_null_object_is_no_object() {
        let request = parsed(&review(pod_request(Value::Null))).expect("decidable");
        assert_eq!(request.object, None);
    }

    #[test]
    fn connect_ignores_objects_and_delete_reads_only_the_stored_one() {
        // CONNECT's object is an options object, never read.
        let mut request = pod_request(pod(json!(5)));
        request["operation"] = "CONNECT".into();
        request["oldObject"] = json!([1, 2]);
        let request = parsed(&review(request)).expect("decidable");
        assert_eq!((request.object, request.old_object), (None, None));
        // DELETE: `object` is ignored, `oldObject` (the stored object, whose owner decides) is read.
        let mut request = pod_request(json!(5));
        request["operation"] = "DELETE".into();
        request["oldObject"] = pod(json!({"portico.dev/owner": "user1"}));
        let request = parsed(&review(request)).expect("decidable");
        assert_eq!(request.object, None);
        let old = request.old_object.expect("oldObject read");
        assert_eq!(old.meta.label("portico.dev/owner"), Some("user1"));
        // A stored object that cannot be read is undecidable (refused), not waved through.
        let mut request = pod_request(json!(5));
        request["operation"] = "DELETE".into();
        request["oldObject"] = json!([1, 2]);
        assert!(parsed(&review(request)).is_err());
    }

    #[test]
    fn fields_given_twice_or_missing_make_it_no_review() {
        let base =
            r#""uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE""#;
        let cases = [
            (
                format!(
                    r#"{{"apiVersion":"admission.k8s.io/v1","apiVersion":"x","request":{{{base}}}}}"#
                ),
                "duplicate field `apiVersion`",
            ),
            (
                format!(r#"{{"request":{{{base},"object":{{}},"object":{{}}}}}}"#),
                "duplicate field `object`",
            ),
            (
                format!(r#"{{"request":{{{base},"uid":"u2"}}}}"#),
                "duplicate field `uid`",
            ),
            (
                r#"{"request":{"operation":"CREATE"}}"#.to_string(),
                "missing field `uid`",
            ),
            (
                r#"{"request":{"uid":"u1"}}"#.to_string(),
                "missing field `operation`",
            ),
            (
                r#"{"request":{"uid":"u1","operation":"CREATE","userInfo":null}}"#.to_string(),
                "invalid type: null",
            ),
            (
                r#"["admission.k8s.io/v1","AdmissionReview",{}]"#.to_string(),
                "invalid type: sequence",
            ),
            (format!(r#"{{"request":[{base}]}}"#), "expected"),
        ];
        for (body, expected) in cases {
            let err = match ReviewIn::parse(&body) {
                Ok(_) => panic!("{body}: read as a review"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    /// Any key order, any labels (escapes included), any of the kinds whose objects differ: both
    /// paths agree.
    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9./-]{0,12}",
            any::<String>().prop_map(|s| s.chars().take(12).collect()),
        ]
    }

    proptest! {
        #[test]
        fn the_single_pass_agrees_with_the_raw_pass(
            labels in proptest::collection::btree_map(arb_string(), arb_string(), 0..4),
            kind in prop_oneof![Just("Pod"), Just("Job"), Just("Service"), Just("CronJob"), Just("Exposure"), Just("Widget")],
            object_first in any::<bool>(),
            with_old in any::<bool>(),
            operation in prop_oneof![Just("CREATE"), Just("UPDATE"), Just("DELETE"), Just("PATCH")],
            wrong_shape in any::<bool>(),
        ) {
            let labels = if wrong_shape { json!([labels]) } else { json!(labels) };
            let meta = json!({"name": "o", "labels": labels, "annotations": {"portico.dev/ipaddr": "t"}});
            let object = json!({
                "metadata": meta,
                "spec": {"selector": labels, "tag": "t", "template": {"metadata": meta},
                         "jobTemplate": {"spec": {"template": {"metadata": meta}}}},
            });
            let group = if kind == "Exposure" { "portico.dev" } else { "" };
            let gvk = json!({"group": group, "version": "v1", "kind": kind});
            let mut fields = vec![
                format!(r#""uid":"u1","operation":{},"userInfo":{{"username":"user1"}}"#, json!(operation)),
                format!(r#""object":{object}"#),
            ];
            if with_old {
                fields.push(format!(r#""oldObject":{object}"#));
            }
            let kind_field = format!(r#""kind":{gvk}"#);
            if object_first { fields.push(kind_field) } else { fields.insert(0, kind_field) }
            let body = format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{{}}}}}"#,
                fields.join(",")
            );
            let raw = decided(&body, Objects::Raw);
            prop_assert!(raw.is_ok(), "{body}: {raw:?}");
            let single = ReviewIn::parse(&body)
                .map_err(|e| e.to_string())
                .map(|r| to_request(r.request.expect("request")).map_err(|e| e.to_string()));
            prop_assert_eq!(single, raw, "{}", body);
        }
    }
}
