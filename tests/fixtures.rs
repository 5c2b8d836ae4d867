//! Every AdmissionReview recorded from the real apiserver (`tests/data/admission-reviews/`, made by
//! `make fixtures`) gets a well-formed answer
//! carrying its `uid`, under every configuration shape, on both endpoints — with and without a
//! tag added to the object.

mod support;

use std::path::PathBuf;

use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use serde_json::{json, Value};

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission-reviews");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_slice(&text).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 16, "fixtures missing: {}", out.len());
    out
}

fn configs() -> Vec<Webhook> {
    [
        "",
        "strict: true\n",
        "identity:\n  mode: namespace\n",
        "identity:\n  unstampedFallback: namespace\n  trustedSubmitters:\n    groups: [system:masters]\n",
    ]
    .iter()
    .map(|y| Webhook::new(Config::from_yaml(y, "test").unwrap()))
    .collect()
}

fn check(webhook: &Webhook, name: &str, review: &Value) -> Value {
    let body = serde_json::to_vec(review).unwrap();
    let mut last = Value::Null;
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let answer = webhook
            .answer(endpoint, &body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let reply: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(reply["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(reply["kind"], "AdmissionReview", "{name}");
        assert_eq!(reply["response"]["uid"], review["request"]["uid"], "{name}");
        assert!(reply["response"]["allowed"].is_boolean(), "{name}");
        if reply["response"]["allowed"] == json!(false) {
            assert!(
                !reply["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{name}"
            );
        }
        if let Some(patch) = reply["response"]["patch"].as_str() {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            let mut object = review["request"]["object"].clone();
            json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if endpoint == Endpoint::Mutate {
            last = reply;
        }
    }
    last
}

#[test]
fn every_fixture_gets_a_well_formed_answer_under_every_configuration() {
    for webhook in configs() {
        for (name, review) in fixtures() {
            check(&webhook, &name, &review);
        }
    }
}

/// Ask for a tag in each fixture's object (and template) and check the patch still applies and
/// the result is consistent for the kinds Portico stamps.
#[test]
fn every_fixture_with_a_tag_added_is_stamped_or_refused_clearly() {
    for webhook in configs() {
        for (name, mut review) in fixtures() {
            let object = &mut review["request"]["object"];
            if !object.is_object() {
                continue;
            }
            if object["metadata"]["annotations"].is_null() {
                object["metadata"]["annotations"] = json!({});
            }
            object["metadata"]["annotations"]["portico.dev/ipaddr"] = json!("foobar");
            let reply = check(&webhook, &name, &review);
            let op = review["request"]["operation"].as_str().unwrap_or_default();
            let kind = review["request"]["kind"]["kind"]
                .as_str()
                .unwrap_or_default();
            let stamps = matches!(
                kind,
                "Pod"
                    | "Job"
                    | "CronJob"
                    | "StatefulSet"
                    | "Deployment"
                    | "ReplicaSet"
                    | "DaemonSet"
            );
            if op == "CREATE" && stamps && reply["response"]["allowed"] == json!(true) {
                assert!(
                    reply["response"]["patch"].is_string(),
                    "{name}: a tagged {kind} was not stamped"
                );
            }
        }
    }
}

#[test]
fn review_command_matches_the_webhook_on_every_fixture() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission-reviews");
    for (name, review) in fixtures() {
        let out = portico::cli::offline::review(None, &[], Some(&dir.join(&name)), false).unwrap();
        let expected = support::webhook()
            .answer(Endpoint::Mutate, &serde_json::to_vec(&review).unwrap())
            .unwrap();
        assert_eq!(out.as_bytes(), expected.body.as_slice(), "{name}");
    }
}
