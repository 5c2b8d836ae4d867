//! Kubernetes protobuf request bodies → the JSON the sandbox stores.
//!
//! kubectl's typed generators (`kubectl create namespace|deployment|job|service …`, `kubectl
//! run`) send `Content-Type: application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a
//! `runtime.Unknown` whose `typeMeta` names the kind and whose `raw` is the object's message.
//! Messages are decoded by `prost-reflect` against the descriptors of the API groups the sandbox
//! serves (`data/k8s-api.binpb`, made by `scripts/k8s-protobuf/gen.sh` from the pinned
//! `k8s.io/api`), then walked into JSON as the apiserver's JSON encoder would print the Go
//! object. What the descriptors cannot say comes from `data/k8s-json-fields.txt` (the Go types):
//! which scalar fields keep a zero value in JSON (pointers, fields without `omitempty` — Go's
//! protobuf encoder writes every non-pointer scalar, so presence alone means nothing), which
//! message fields are dropped when zero (`omitzero`: ObjectMeta.creationTimestamp), which are
//! inlined into their parent (`json:",inline"`: IngressRule's ingressRuleValue), and the
//! few JSON names that differ from the protobuf names (`webhooks`, `$ref`, `apiGroup`, …).
//! Messages with a JSON form of their own (Time, Quantity, IntOrString, …) are converted whole.

use crate::util::format_rfc3339;
use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as PValue,
};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The four bytes before every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";
const DESCRIPTORS: &[u8] = include_bytes!("../data/k8s-api.binpb");
const JSON_FIELDS: &str = include_str!("../data/k8s-json-fields.txt");

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const EXTENSIONS: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1";

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the protobuf body does not start with Kubernetes' envelope (\"k8s\\x00\")")]
    NoEnvelope,
    #[error("the protobuf envelope (runtime.Unknown) is malformed: {0}")]
    Envelope(String),
    #[error("the protobuf envelope names no apiVersion and kind")]
    NoTypeMeta,
    #[error("the protobuf envelope's contentEncoding {0:?} is not supported (only none)")]
    Encoding(String),
    #[error("the sandbox cannot read {kind} ({api_version}) as protobuf; send it as JSON")]
    UnknownKind { api_version: String, kind: String },
    #[error("the protobuf body of {kind} is malformed: {detail}")]
    Malformed { kind: String, detail: String },
    #[error("the sandbox's protobuf descriptors are unusable: {0}")]
    Descriptors(String),
}

impl ProtobufError {
    /// 415 for what the sandbox cannot read at all, 400 for a body that is wrong.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownKind { .. } | Self::Encoding(_) => 415,
            Self::Descriptors(_) => 500,
            _ => 400,
        }
    }
}

/// Descriptors and the JSON facts about their fields, loaded once.
struct Schema {
    pool: DescriptorPool,
    /// Full field names whose zero value is still printed.
    keep_zero: HashSet<String>,
    /// Full names of message fields left out when zero (`omitzero`).
    omit_zero: HashSet<String>,
    /// Full names of message fields whose fields JSON puts in the parent (`json:",inline"`).
    inline: HashSet<String>,
    /// Full field name → JSON name, where they differ.
    json_names: HashMap<String, String>,
}

fn schema() -> Result<&'static Schema, ProtobufError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string())?;
            let mut keep_zero = HashSet::new();
            let mut omit_zero = HashSet::new();
            let mut inline = HashSet::new();
            let mut json_names = HashMap::new();
            for line in JSON_FIELDS.lines() {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("keep"), Some(field), None) => {
                        keep_zero.insert(field.to_string());
                    }
                    (Some("omitzero"), Some(field), None) => {
                        omit_zero.insert(field.to_string());
                    }
                    (Some("inline"), Some(field), None) => {
                        inline.insert(field.to_string());
                    }
                    (Some("json"), Some(field), Some(name)) => {
                        json_names.insert(field.to_string(), name.to_string());
                    }
                    _ => {}
                }
            }
            Ok(Schema {
                pool,
                keep_zero,
                omit_zero,
                inline,
                json_names,
            })
        })
        .as_ref()
        .map_err(|e| ProtobufError::Descriptors(e.clone()))
}

/// The descriptors the sandbox decodes with (tests build messages from them).
pub fn descriptors() -> Result<&'static DescriptorPool, ProtobufError> {
    schema().map(|s| &s.pool)
}

/// The message of `kind` in `apiVersion`: `k8s.io.api.<first label of the group, or core>.<v>`,
/// the apiextensions package, or (DeleteOptions and the like, registered in every group) meta/v1.
fn message_for(pool: &DescriptorPool, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let short = group
        .split('.')
        .next()
        .filter(|g| !g.is_empty())
        .unwrap_or("core");
    [
        format!("k8s.io.api.{short}.{version}.{kind}"),
        format!("k8s.io.apiextensions_apiserver.pkg.apis.{short}.{version}.{kind}"),
        format!("{META}.{kind}"),
    ]
    .iter()
    .find_map(|name| pool.get_message_by_name(name))
}

/// Decodes a Kubernetes protobuf body (envelope included) into the object's JSON, with the
/// envelope's `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let schema = schema()?;
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoEnvelope)?;
    let unknown_desc = schema
        .pool
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
        .ok_or_else(|| ProtobufError::Descriptors("runtime.Unknown is missing".into()))?;
    let unknown = DynamicMessage::decode(unknown_desc, rest)
        .map_err(|e| ProtobufError::Envelope(e.to_string()))?;
    let type_meta = unknown.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(PValue::as_message);
    let text = |name: &str| {
        type_meta
            .and_then(|m| m.get_field_by_name(name))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::NoTypeMeta);
    }
    let encoding = unknown
        .get_field_by_name("contentEncoding")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if !encoding.is_empty() {
        return Err(ProtobufError::Encoding(encoding));
    }
    let Some(desc) = message_for(&schema.pool, &api_version, &kind) else {
        return Err(ProtobufError::UnknownKind { api_version, kind });
    };
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let malformed = |detail: String| ProtobufError::Malformed {
        kind: kind.clone(),
        detail,
    };
    let msg = DynamicMessage::decode(desc, raw).map_err(|e| malformed(e.to_string()))?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version.clone()));
    obj.insert("kind".into(), Value::String(kind.clone()));
    match to_json(schema, &msg).map_err(malformed)? {
        Value::Object(fields) => obj.extend(fields),
        other => return Err(malformed(format!("decoded to {other}, not an object"))),
    }
    Ok(Value::Object(obj))
}

/// One message as the apiserver prints it in JSON.
fn to_json(schema: &Schema, msg: &DynamicMessage) -> Result<Value, String> {
    let desc = msg.descriptor();
    let full = desc.full_name();
    let field = |name: &str| msg.get_field_by_name(name).map(|v| v.into_owned());
    let int = |name: &str| field(name).and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)));
    let message = |name: &str| -> Result<Option<Value>, String> {
        match msg.get_field_by_name(name).as_deref() {
            Some(PValue::Message(m)) if msg.has_field_by_name(name) => to_json(schema, m).map(Some),
            _ => Ok(None),
        }
    };
    match full {
        _ if full == format!("{META}.Time") || full == format!("{META}.MicroTime") => {
            let (secs, nanos) = (int("seconds").unwrap_or(0), int("nanos").unwrap_or(0));
            // Go's zero Time encodes as an empty message and prints as null.
            if secs == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let whole = format_rfc3339(secs);
            Ok(Value::String(if full.ends_with("MicroTime") {
                format!("{}.{:06}Z", whole.trim_end_matches('Z'), nanos / 1000)
            } else {
                whole
            }))
        }
        _ if full == format!("{META}.Duration") => {
            Ok(Value::String(go_duration(int("duration").unwrap_or(0))))
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity"
        | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => {
            let s = field("string").and_then(|v| v.as_str().map(str::to_string));
            Ok(Value::String(
                s.filter(|s| !s.is_empty()).unwrap_or("0".into()),
            ))
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Ok(if int("type") == Some(1) {
            Value::String(
                field("strVal")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            )
        } else {
            Value::from(int("intVal").unwrap_or(0))
        }),
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => raw_json(field("raw")),
        _ if full == format!("{META}.FieldsV1") => raw_json(field("Raw")),
        _ if full == format!("{EXTENSIONS}.JSON") => raw_json(field("raw")),
        // apiextensions' "schema or something else" unions print as whichever is set.
        _ if full == format!("{EXTENSIONS}.JSONSchemaPropsOrBool") => {
            Ok(match message("schema")? {
                Some(schema) => schema,
                None => Value::Bool(field("allows").and_then(|v| v.as_bool()).unwrap_or(false)),
            })
        }
        _ if full == format!("{EXTENSIONS}.JSONSchemaPropsOrArray")
            || full == format!("{EXTENSIONS}.JSONSchemaPropsOrStringArray") =>
        {
            let list = if full.ends_with("OrArray") {
                "jSONSchemas"
            } else {
                "property"
            };
            match msg.get_field_by_name(list).as_deref() {
                Some(PValue::List(items)) if !items.is_empty() => {
                    items.iter().map(|v| value(schema, v)).collect()
                }
                _ => Ok(message("schema")?.unwrap_or(Value::Null)),
            }
        }
        _ => {
            let mut out = Map::new();
            for (fd, v) in msg.fields() {
                let name = fd.full_name();
                let empty = match v {
                    PValue::List(l) => l.is_empty(),
                    PValue::Map(m) => m.is_empty(),
                    PValue::Message(_) => false,
                    scalar => is_zero(scalar) && !schema.keep_zero.contains(name),
                };
                if empty {
                    continue;
                }
                let json = value(schema, v)?;
                let zero = json.is_null() || json.as_object().is_some_and(Map::is_empty);
                if zero && schema.omit_zero.contains(name) {
                    continue;
                }
                if schema.inline.contains(name) {
                    if let Value::Object(fields) = json {
                        out.extend(fields);
                        continue;
                    }
                }
                let key = schema.json_names.get(name).cloned();
                out.insert(key.unwrap_or_else(|| fd.name().to_string()), json);
            }
            Ok(Value::Object(out))
        }
    }
}

/// A field's value: scalars as JSON scalars, bytes in base64 (as Go prints `[]byte`), lists,
/// maps as objects.
fn value(schema: &Schema, v: &PValue) -> Result<Value, String> {
    Ok(match v {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(n) | PValue::EnumNumber(n) => Value::from(*n),
        PValue::I64(n) => Value::from(*n),
        PValue::U32(n) => Value::from(*n),
        PValue::U64(n) => Value::from(*n),
        PValue::F32(f) => Value::from(f64::from(*f)),
        PValue::F64(f) => Value::from(*f),
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PValue::Message(m) => to_json(schema, m)?,
        PValue::List(items) => items
            .iter()
            .map(|i| value(schema, i))
            .collect::<Result<_, _>>()?,
        PValue::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                out.insert(key, value(schema, v)?);
            }
            Value::Object(out)
        }
    })
}

fn is_zero(v: &PValue) -> bool {
    match v {
        PValue::Bool(b) => !b,
        PValue::I32(n) | PValue::EnumNumber(n) => *n == 0,
        PValue::I64(n) => *n == 0,
        PValue::U32(n) => *n == 0,
        PValue::U64(n) => *n == 0,
        PValue::F32(f) => *f == 0.0,
        PValue::F64(f) => *f == 0.0,
        PValue::String(s) => s.is_empty(),
        PValue::Bytes(b) => b.is_empty(),
        PValue::Message(_) | PValue::List(_) | PValue::Map(_) => false,
    }
}

/// RawExtension / FieldsV1 / JSON: the bytes are JSON already (empty: null).
fn raw_json(raw: Option<PValue>) -> Result<Value, String> {
    match raw.as_ref().and_then(PValue::as_bytes) {
        Some(b) if !b.is_empty() => serde_json::from_slice(b)
            .map_err(|e| format!("an embedded object (RawExtension) is not JSON: {e}")),
        _ => Ok(Value::Null),
    }
}

/// A duration in nanoseconds as Go's `time.Duration.String()` prints it (`1h0m0s`, `1.5s`,
/// `250ms`, `0s`), which is how metav1.Duration appears in JSON.
pub fn go_duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |int: u64, frac: u64, digits: usize| {
        let f = format!("{frac:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{f}")
        }
    };
    let body = match u {
        0 => return "0s".into(),
        1..=999 => format!("{u}ns"),
        1_000..=999_999 => format!("{}µs", frac(u / 1_000, u % 1_000, 3)),
        1_000_000..=999_999_999 => format!("{}ms", frac(u / 1_000_000, u % 1_000_000, 6)),
        _ => {
            let secs = u / 1_000_000_000;
            let s = frac(secs % 60, u % 1_000_000_000, 9);
            match (secs / 3600, (secs / 60) % 60) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    };
    format!("{sign}{body}")
}
