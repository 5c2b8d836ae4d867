//! The protobuf → JSON walk on its edge cases: Kubernetes' own messages (Quantity, IntOrString,
//! Time, MicroTime, RawExtension, Duration), bytes, empty maps and lists, zero scalars that JSON
//! keeps or drops, inlined and renamed fields, and bodies it must refuse with a Status — through
//! the decoder and through the sandbox's HTTP API.

mod common;
use common::*;
use portico_sandbox::protobuf::{self, ProtobufError};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MapKey, Value as P};
use serde_json::{json, Value};
use std::collections::HashMap;

/// A message of `name` with `fields` set (full names are under k8s.io).
fn msg(name: &str, fields: Vec<(&str, P)>) -> DynamicMessage {
    let pool = protobuf::descriptors().expect("descriptors");
    let desc = pool
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("no message {name}"));
    let mut m = DynamicMessage::new(desc);
    for (f, v) in fields {
        assert!(m.get_field_by_name(f).is_some(), "{name} has no field {f}");
        m.set_field_by_name(f, v);
    }
    m
}

fn s(v: &str) -> P {
    P::String(v.into())
}

fn m(v: DynamicMessage) -> P {
    P::Message(v)
}

fn map(entries: Vec<(&str, P)>) -> P {
    P::Map(
        entries
            .into_iter()
            .map(|(k, v)| (MapKey::String(k.into()), v))
            .collect::<HashMap<_, _>>(),
    )
}

const CORE: &str = "k8s.io.api.core.v1";
const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// The body kubectl sends: `k8s\0` + runtime.Unknown{typeMeta, raw}.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = msg(
        "k8s.io.apimachinery.pkg.runtime.Unknown",
        vec![
            (
                "typeMeta",
                m(msg(
                    "k8s.io.apimachinery.pkg.runtime.TypeMeta",
                    vec![("apiVersion", s(api_version)), ("kind", s(kind))],
                )),
            ),
            ("raw", P::Bytes(raw.into())),
        ],
    );
    let mut body = protobuf::MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn decode(api_version: &str, kind: &str, obj: DynamicMessage) -> Value {
    protobuf::decode(&envelope(api_version, kind, obj.encode_to_vec())).expect("decodes")
}

fn meta(name: &str) -> P {
    m(msg(&format!("{META}.ObjectMeta"), vec![("name", s(name))]))
}

fn quantity(q: &str) -> P {
    m(msg(
        "k8s.io.apimachinery.pkg.api.resource.Quantity",
        vec![("string", s(q))],
    ))
}

fn int_or_string(v: Result<i32, &str>) -> P {
    let name = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
    m(match v {
        Ok(i) => msg(name, vec![("type", P::I64(0)), ("intVal", P::I32(i))]),
        Err(t) => msg(name, vec![("type", P::I64(1)), ("strVal", s(t))]),
    })
}

#[test]
fn quantities_print_as_their_strings_and_an_empty_one_as_zero() {
    let resources = msg(
        &format!("{CORE}.ResourceRequirements"),
        vec![
            (
                "limits",
                map(vec![("cpu", quantity("500m")), ("memory", quantity("1Gi"))]),
            ),
            (
                "requests",
                map(vec![(
                    "cpu",
                    m(msg("k8s.io.apimachinery.pkg.api.resource.Quantity", vec![])),
                )]),
            ),
        ],
    );
    let container = msg(
        &format!("{CORE}.Container"),
        vec![
            ("name", s("c")),
            ("image", s("busybox")),
            ("resources", m(resources)),
        ],
    );
    let pod = msg(
        &format!("{CORE}.Pod"),
        vec![
            ("metadata", meta("p")),
            (
                "spec",
                m(msg(
                    &format!("{CORE}.PodSpec"),
                    vec![("containers", P::List(vec![m(container)]))],
                )),
            ),
        ],
    );
    let v = decode("v1", "Pod", pod);
    assert_eq!(
        v["spec"]["containers"][0]["resources"],
        json!({"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "0"}})
    );
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Pod");
}

#[test]
fn int_or_string_prints_either_form() {
    let port = |target| {
        m(msg(
            &format!("{CORE}.ServicePort"),
            vec![("port", P::I32(80)), ("targetPort", target)],
        ))
    };
    let svc = msg(
        &format!("{CORE}.Service"),
        vec![
            ("metadata", meta("s")),
            (
                "spec",
                m(msg(
                    &format!("{CORE}.ServiceSpec"),
                    vec![(
                        "ports",
                        P::List(vec![
                            port(int_or_string(Ok(8080))),
                            port(int_or_string(Err("http"))),
                        ]),
                    )],
                )),
            ),
        ],
    );
    let v = decode("v1", "Service", svc);
    assert_eq!(v["spec"]["ports"][0]["targetPort"], json!(8080));
    assert_eq!(v["spec"]["ports"][1]["targetPort"], json!("http"));
    // An int 0 IntOrString is still printed: the field is a struct, always written by Go.
    let pdb = msg(
        "k8s.io.api.policy.v1.PodDisruptionBudget",
        vec![(
            "spec",
            m(msg(
                "k8s.io.api.policy.v1.PodDisruptionBudgetSpec",
                vec![("maxUnavailable", int_or_string(Ok(0)))],
            )),
        )],
    );
    assert_eq!(
        decode("policy/v1", "PodDisruptionBudget", pdb)["spec"],
        json!({"maxUnavailable": 0})
    );
}

#[test]
fn times_print_as_the_apiserver_prints_them() {
    let time = |secs: i64, nanos: i32| {
        m(msg(
            &format!("{META}.Time"),
            vec![("seconds", P::I64(secs)), ("nanos", P::I32(nanos))],
        ))
    };
    let empty_time = || m(msg(&format!("{META}.Time"), vec![]));
    let object_meta = msg(
        &format!("{META}.ObjectMeta"),
        vec![
            ("name", s("t")),
            ("creationTimestamp", empty_time()),
            ("deletionTimestamp", time(1_700_000_000, 999_000_000)),
        ],
    );
    let status = msg(
        "k8s.io.api.batch.v1.JobStatus",
        vec![("startTime", empty_time()), ("completionTime", time(0, 5))],
    );
    let job = msg(
        "k8s.io.api.batch.v1.Job",
        vec![("metadata", m(object_meta)), ("status", m(status))],
    );
    let v = decode("batch/v1", "Job", job);
    // Time has second precision; a zero creationTimestamp is omitzero; another zero Time is null.
    assert_eq!(v["metadata"]["deletionTimestamp"], "2023-11-14T22:13:20Z");
    assert!(v["metadata"].get("creationTimestamp").is_none(), "{v}");
    assert_eq!(v["status"]["startTime"], Value::Null);
    assert!(v["status"]
        .as_object()
        .expect("status")
        .contains_key("startTime"));
    assert_eq!(v["status"]["completionTime"], "1970-01-01T00:00:00Z");

    let event = msg(
        "k8s.io.api.events.v1.Event",
        vec![
            ("metadata", meta("e")),
            (
                "eventTime",
                m(msg(
                    &format!("{META}.MicroTime"),
                    vec![
                        ("seconds", P::I64(1_700_000_000)),
                        ("nanos", P::I32(123_456_789)),
                    ],
                )),
            ),
        ],
    );
    let v = decode("events.k8s.io/v1", "Event", event);
    assert_eq!(v["eventTime"], "2023-11-14T22:13:20.123456Z");
}

#[test]
fn bytes_are_base64_and_empty_maps_and_lists_are_left_out() {
    let secret = msg(
        &format!("{CORE}.Secret"),
        vec![
            ("metadata", meta("sec")),
            (
                "data",
                map(vec![
                    ("bin", P::Bytes(vec![0u8, 0xff, b'h', b'i'].into())),
                    ("blank", P::Bytes(Vec::new().into())),
                ]),
            ),
            ("stringData", map(vec![])),
            ("type", s("Opaque")),
        ],
    );
    let v = decode("v1", "Secret", secret);
    assert_eq!(v["data"], json!({"bin": "AP9oaQ==", "blank": ""}));
    assert!(v.get("stringData").is_none(), "{v}");
    let cm = msg(
        &format!("{CORE}.ConfigMap"),
        vec![("metadata", meta("cm")), ("data", map(vec![]))],
    );
    let v = decode("v1", "ConfigMap", cm);
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    );
    let pod = msg(
        &format!("{CORE}.Pod"),
        vec![(
            "spec",
            m(msg(
                &format!("{CORE}.PodSpec"),
                vec![("containers", P::List(vec![]))],
            )),
        )],
    );
    assert_eq!(decode("v1", "Pod", pod)["spec"], json!({}));
}

#[test]
fn zero_scalars_are_kept_only_where_json_keeps_them() {
    // Go's encoder writes non-pointer scalars even when zero: hostNetwork false and an empty
    // restartPolicy are omitempty (left out); replicas is a pointer (0 is kept); a container's
    // name has no omitempty (an empty one is printed).
    let container = msg(
        &format!("{CORE}.Container"),
        vec![("name", s("")), ("image", s("i"))],
    );
    let spec = msg(
        &format!("{CORE}.PodSpec"),
        vec![
            ("hostNetwork", P::Bool(false)),
            ("restartPolicy", s("")),
            ("containers", P::List(vec![m(container)])),
        ],
    );
    let template = msg(&format!("{CORE}.PodTemplateSpec"), vec![("spec", m(spec))]);
    let dspec = msg(
        "k8s.io.api.apps.v1.DeploymentSpec",
        vec![
            ("replicas", P::I32(0)),
            ("paused", P::Bool(false)),
            ("template", m(template)),
        ],
    );
    let d = msg(
        "k8s.io.api.apps.v1.Deployment",
        vec![("metadata", meta("d")), ("spec", m(dspec))],
    );
    let v = decode("apps/v1", "Deployment", d);
    assert_eq!(
        v["spec"],
        json!({"replicas": 0, "template": {"spec": {"containers": [{"name": "", "image": "i"}]}}})
    );
}

#[test]
fn raw_extensions_are_embedded_json_and_other_bytes_there_are_refused() {
    let rev = |raw: &[u8]| {
        msg(
            "k8s.io.api.apps.v1.ControllerRevision",
            vec![
                ("metadata", meta("r")),
                (
                    "data",
                    m(msg(
                        "k8s.io.apimachinery.pkg.runtime.RawExtension",
                        vec![("raw", P::Bytes(raw.to_vec().into()))],
                    )),
                ),
                ("revision", P::I64(3)),
            ],
        )
    };
    let v = decode(
        "apps/v1",
        "ControllerRevision",
        rev(br#"{"spec":{"a":[1,"x"]}}"#),
    );
    assert_eq!(v["data"], json!({"spec": {"a": [1, "x"]}}));
    assert_eq!(v["revision"], 3);
    let err = protobuf::decode(&envelope(
        "apps/v1",
        "ControllerRevision",
        rev(b"\x0a\x02hi").encode_to_vec(),
    ))
    .expect_err("not JSON");
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("ControllerRevision"), "{err}");
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[test]
fn renamed_and_inlined_fields_follow_the_json_form() {
    // MutatingWebhookConfiguration's list is `Webhooks` in protobuf; a rule's RuleWithOperations
    // embeds Rule, whose fields JSON puts beside `operations`.
    let rule = msg(
        "k8s.io.api.admissionregistration.v1.RuleWithOperations",
        vec![
            ("operations", P::List(vec![s("CREATE")])),
            (
                "rule",
                m(msg(
                    "k8s.io.api.admissionregistration.v1.Rule",
                    vec![
                        ("apiGroups", P::List(vec![s("")])),
                        ("apiVersions", P::List(vec![s("v1")])),
                        ("resources", P::List(vec![s("pods")])),
                    ],
                )),
            ),
        ],
    );
    let hook = msg(
        "k8s.io.api.admissionregistration.v1.MutatingWebhook",
        vec![("name", s("a.b.c")), ("rules", P::List(vec![m(rule)]))],
    );
    let conf = msg(
        "k8s.io.api.admissionregistration.v1.MutatingWebhookConfiguration",
        vec![
            ("metadata", meta("w")),
            ("Webhooks", P::List(vec![m(hook)])),
        ],
    );
    let v = decode(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        conf,
    );
    assert_eq!(
        v["webhooks"][0]["rules"],
        json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}])
    );
    assert_eq!(v["webhooks"][0]["name"], "a.b.c");
}

#[test]
fn durations_print_as_go_prints_them() {
    for (ns, want) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (250_000_000, "250ms"),
        (1_500_000_000, "1.5s"),
        (60_000_000_000, "1m0s"),
        (3_600_000_000_000, "1h0m0s"),
        (5_430_000_000_000, "1h30m30s"),
        (-90_000_000_000, "-1m30s"),
    ] {
        assert_eq!(protobuf::go_duration(ns), want, "{ns}");
    }
}

#[test]
fn bodies_it_cannot_read_are_refused_with_a_reason() {
    let cm = msg(&format!("{CORE}.ConfigMap"), vec![("metadata", meta("x"))]).encode_to_vec();
    // No envelope.
    let e = protobuf::decode(&cm).expect_err("no magic");
    assert!(matches!(e, ProtobufError::NoEnvelope), "{e}");
    assert_eq!(e.status(), 400);
    // A kind the sandbox has no message for (a custom resource is JSON only, as in Kubernetes).
    let e = protobuf::decode(&envelope("portico.dev/v1alpha1", "Exposure", cm.clone()))
        .expect_err("unknown kind");
    assert_eq!(e.status(), 415);
    assert!(
        e.to_string().contains("Exposure (portico.dev/v1alpha1)"),
        "{e}"
    );
    // No typeMeta.
    let e = protobuf::decode(&envelope("", "", cm.clone())).expect_err("no kind");
    assert!(matches!(e, ProtobufError::NoTypeMeta), "{e}");
    // A truncated envelope and a truncated object: 400, never a panic.
    let body = envelope("v1", "ConfigMap", cm.clone());
    for cut in 4..body.len() {
        if let Err(e) = protobuf::decode(&body[..cut]) {
            assert_eq!(e.status(), 400, "cut at {cut}: {e}");
        }
    }
    let e = protobuf::decode(&envelope("v1", "ConfigMap", vec![0x0a, 0x10, 1])).expect_err("bad");
    assert!(e.to_string().contains("ConfigMap is malformed"), "{e}");
}

#[tokio::test]
async fn the_api_takes_protobuf_in_and_answers_json() {
    let sb = start().await;
    let ns = sb.create_namespace("pb").await.expect("namespace");
    let cm = msg(
        &format!("{CORE}.ConfigMap"),
        vec![
            ("metadata", meta("from-pb")),
            ("data", map(vec![("k", s("v"))])),
        ],
    );
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let pb = "application/vnd.kubernetes.protobuf";
    let r = http_raw(
        &sb,
        "admin",
        "POST",
        &path,
        pb,
        envelope("v1", "ConfigMap", cm.encode_to_vec()),
        &[],
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert_eq!(r.body["data"], json!({"k": "v"}));
    let r = get(&sb, &format!("{path}/from-pb")).await;
    assert_eq!(r.body["metadata"]["namespace"], json!(ns));

    // PUT with protobuf too (kubectl replace of a typed object).
    let mut meta_pb = msg(&format!("{META}.ObjectMeta"), vec![("name", s("from-pb"))]);
    meta_pb.set_field_by_name(
        "resourceVersion",
        s(r.body["metadata"]["resourceVersion"].as_str().unwrap_or("")),
    );
    let cm = msg(
        &format!("{CORE}.ConfigMap"),
        vec![("metadata", m(meta_pb)), ("data", map(vec![("k", s("w"))]))],
    );
    let r = http_raw(
        &sb,
        "admin",
        "PUT",
        &format!("{path}/from-pb"),
        pb,
        envelope("v1", "ConfigMap", cm.encode_to_vec()),
        &[],
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(r.body["data"], json!({"k": "w"}));

    let r = http_raw(
        &sb,
        "admin",
        "POST",
        &path,
        pb,
        b"not protobuf".to_vec(),
        &[],
    )
    .await;
    assert_eq!(r.code, 400, "{}", r.text);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["reason"], "BadRequest");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("envelope"),
        "{}",
        r.text
    );

    let r = http_raw(
        &sb,
        "admin",
        "POST",
        &path,
        pb,
        envelope("example.com/v1", "Widget", vec![]),
        &[],
    )
    .await;
    assert_eq!(r.code, 415, "{}", r.text);
    assert_eq!(r.body["reason"], "UnsupportedMediaType");
    sb.shutdown().await;
}
