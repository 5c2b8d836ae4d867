//! The service API as a hostile co-tenant, end user or portal would try it: another client's
//! leftover record naming your objects, a decoy pod faking your status, a user id that names a
//! system namespace, and request values that YAML would read as something other than strings.

mod harness;
mod service_api_support;

use std::path::Path;

use http::StatusCode;
use portico::service_api::cluster::service_key;
use serde_json::{json, Value};
use service_api_support::*;

fn other() -> Auth<'static> {
    Auth::Basic(OTHER_USER, OTHER_PASSWORD)
}

fn pod_uid(env: &ApiEnv, name: &str) -> Option<Value> {
    env.lp
        .sandbox
        .object("", "pods", NAMESPACE, name)
        .map(|p| p["metadata"]["uid"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_record_of_another_client_reaches_none_of_your_objects() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |_| {}).await;
    let r = env
        .start_service("lab-7", "s1", "jupyterlab", "alice")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    env.poll_until("lab-7", "running", 60).await;
    let uid = pod_uid(&env, "lab-7").expect("alice's pod");

    // What a start by the other client that was cut off after recording leaves behind: a record
    // of its own naming the same objects (both clients' namespaces are `team`).
    let names = [
        ("v1", "Secret", "lab-7-env"),
        ("v1", "Pod", "lab-7"),
        ("portico.dev/v1alpha1", "Exposure", "lab-7"),
    ];
    let record = json!({
        "client": "other", "serviceId": "lab-7", "userId": "mallory", "user": "other_mallory",
        "namespace": NAMESPACE, "startId": "s9", "service": "jupyterlab/default", "tag": "lab-7",
        "objects": names.iter().map(|(a, k, n)| json!({"apiVersion": a, "kind": k, "name": n})).collect::<Vec<_>>(),
    });
    let key = service_key("other", "lab-7");
    env.lp
        .sandbox
        .apply_object(
            "admin",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("portico-api-{key}"), "namespace": "portico-system",
                    "labels": {"portico.dev/api-service": key, "portico.dev/api-client": "other"}},
                "data": {"record": record.to_string()}}),
        )
        .await
        .unwrap();

    // The other client's poll shows nothing of alice's service.
    let r = env
        .call("GET", "/api/services/lab-7/", other(), &[], None)
        .await;
    if r.status == StatusCode::OK {
        assert_ne!(r.body["status"], "running", "{}", r.body);
        assert!(r.body.get("address").is_none(), "{}", r.body);
    }
    // Its stop removes its own record and nothing of alice's.
    let r = env
        .call("DELETE", "/api/services/lab-7/", other(), &[], None)
        .await;
    assert!(
        r.status == StatusCode::OK || r.status == StatusCode::NOT_FOUND,
        "{} {}",
        r.status,
        r.body
    );
    assert_eq!(
        pod_uid(&env, "lab-7"),
        Some(uid),
        "alice's pod is untouched"
    );
    for (group, resource, name) in [
        ("", "secrets", "lab-7-env"),
        ("portico.dev", "exposures", "lab-7"),
    ] {
        assert!(
            env.lp
                .sandbox
                .object(group, resource, NAMESPACE, name)
                .is_some(),
            "alice's {resource}/{name} is untouched"
        );
    }
    let r = env.poll("lab-7").await;
    assert_eq!(r.body["status"], "running", "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoy_pod_of_another_user_does_not_change_your_status() {
    let env = ApiEnv::start(&shipped_descriptions(), |c| {
        c.api.events = 5;
        c.api.log_lines = 5;
    })
    .await;
    let r = env
        .start_service("lab-8", "s1", "jupyterlab", "alice")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    env.poll_until("lab-8", "running", 60).await;
    // Anyone can compute the service label's value and put it on pods of their own: one that
    // serves (to hide a failure) and one that fails (to fake one, with its own log lines).
    let key = service_key("portal", "lab-8");
    for name in ["decoy-ready", "decoy-failed"] {
        env.lp
            .sandbox
            .apply_object(
                "user2",
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": NAMESPACE,
                        "labels": {"portico.dev/api-service": key, "portico.dev/api-client": "portal"},
                        "annotations": {"portico.dev/service-id": "lab-8"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
            )
            .await
            .unwrap();
    }
    let sb = &env.lp.sandbox;
    harness::eventually(30, "the decoy serves", || async {
        let pod = sb.object("", "pods", NAMESPACE, "decoy-ready")?;
        (pod["status"]["phase"] == "Running").then_some(())
    })
    .await;
    sb.append_pod_log(NAMESPACE, "decoy-failed", &["DECOY: your lab is broken"]);
    sb.fail_pod(NAMESPACE, "decoy-failed", "DecoyFailure", "DECOY failure")
        .await
        .unwrap();
    // An Event anyone may write, naming the service's pod but not its uid.
    sb.apply_object(
        "user2",
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "lab-8.decoy", "namespace": NAMESPACE},
            "involvedObject": {"kind": "Pod", "name": "lab-8", "namespace": NAMESPACE, "uid": "not-the-pods-uid"},
            "reason": "DecoyEvent", "message": "DECOY event", "type": "Warning",
            "lastTimestamp": "2099-01-01T00:00:00Z"}),
    )
    .await
    .unwrap();
    sb.append_pod_log(NAMESPACE, "lab-8", &["the real reason"]);
    sb.fail_pod(
        NAMESPACE,
        "lab-8",
        "OOMKilled",
        "the lab used too much memory",
    )
    .await
    .unwrap();
    let failed = env.poll_until("lab-8", "failed", 30).await;
    assert!(
        failed["reason"].as_str().unwrap().contains("lab-8"),
        "{failed}"
    );
    assert!(!failed.to_string().contains("DECOY"), "{failed}");
    assert!(!failed.to_string().contains("decoy"), "{failed}");
    assert!(failed.to_string().contains("the real reason"), "{failed}");
    assert!(
        failed["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "OOMKilled"),
        "{failed}"
    );
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_cannot_place_a_service_in_a_system_or_unlisted_namespace() {
    let env = ApiEnv::start(&shipped_descriptions(), |c| {
        c.api.clients[0].namespace = "{user}".into();
        c.api.clients[0].allowed_namespaces = vec!["team".into(), "lab-*".into()];
    })
    .await;
    let before = env.lp.sandbox.objects("", "pods", Some("portico-system"));
    for user in ["portico-system", "kube-system", "default", "elsewhere"] {
        let r = env.start_service("lab-9", "s1", "jupyterlab", user).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{user}: {}", r.body);
        assert_eq!(r.body["error"], "namespace", "{user}: {}", r.body);
        assert!(
            r.body["message"].as_str().unwrap().contains(user),
            "{}",
            r.body
        );
    }
    assert_eq!(
        env.lp.sandbox.objects("", "pods", Some("portico-system")),
        before
    );
    assert!(env.records().is_empty());
    // The listed namespace works.
    let r = env.start_service("lab-9", "s1", "jupyterlab", "team").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

const TYPED: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: <id>\n  annotations:\n    v: <user_options.v>\n    w: x-<user_options.v>\nspec:\n  containers:\n    - name: c\n      image: busybox\n      args:\n        - <user_options.v>\n      ports: [{name: http, containerPort: 8080}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_values_stay_the_strings_they_were() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "portal/typed/default/service.yaml", TYPED);
    let env = ApiEnv::start(dir.path(), |_| {}).await;
    for (i, value) in ["null", "true", "0x1F", "+1", ".inf", "-", "k:", "1e3"]
        .iter()
        .enumerate()
    {
        let id = format!("ty-{i}");
        let mut body = start_body("s1", "typed", "alice");
        body["user_options"]["v"] = json!(value);
        let r = env
            .call(
                "POST",
                "/api/services/",
                Auth::Bearer(PORTAL_TOKEN),
                &[("uuidcode", id.as_str())],
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{value:?}: {}", r.body);
        let pod = env
            .lp
            .sandbox
            .object("", "pods", NAMESPACE, &id)
            .expect("pod");
        assert_eq!(pod["metadata"]["annotations"]["v"], json!(value));
        assert_eq!(
            pod["metadata"]["annotations"]["w"],
            json!(format!("x-{value}"))
        );
        assert_eq!(pod["spec"]["containers"][0]["args"], json!([value]));
    }
}
