//! The JARVICE points of the service API: a portal's user may choose the ipaddr tag
//! (`api.tagOption`), so that an administrator's persistent Service selecting
//! `<prefix>-<tag>` finds the service — and never another user's route value.

mod harness;
mod service_api_support;

use http::StatusCode;
use portico::core::Policy;
use serde_json::{json, Value};
use service_api_support::*;

fn prefix(config: &portico::config::Config, user: &str) -> String {
    Policy::new(config.clone())
        .prefix_for(user)
        .unwrap()
        .as_str()
        .to_string()
}

async fn start_with(env: &ApiEnv, id: &str, user: &str, options: Value) -> Reply {
    let mut body = start_body("s1", "jupyterlab", user);
    for (k, v) in options.as_object().unwrap() {
        body["user_options"][k] = v.clone();
    }
    env.call(
        "POST",
        "/api/services/",
        Auth::Bearer(PORTAL_TOKEN),
        &[("uuidcode", id)],
        Some(&body),
    )
    .await
}

fn pod_labels(env: &ApiEnv, name: &str) -> Value {
    env.lp
        .sandbox
        .object("", "pods", NAMESPACE, name)
        .unwrap_or_else(|| panic!("pod {name}"))["metadata"]["labels"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_chosen_tag_is_found_by_an_administrators_persistent_service() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |c| c.api.tag_option = "ipaddr".into()).await;
    let alice = prefix(&env.config, "portal_alice");
    let r = start_with(&env, "lab-1", "alice", json!({"ipaddr": "FooBar"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["tag"], "FooBar");
    // The tag is kept as chosen (case sensitive) under alice's own prefix.
    let route = format!("{alice}-FooBar");
    let labels = pod_labels(&env, "lab-1");
    assert_eq!(labels["jarvice-pod0-job-ipaddr"], route.as_str());
    // An administrator's persistent Service for that tag selects the lab's pod.
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "alices-lab", "namespace": NAMESPACE},
        "spec": {"selector": {"jarvice-pod0-job-ipaddr": route}, "ports": [{"port": 80, "targetPort": 8888}]}});
    env.lp.sandbox.apply_object("admin", svc).await.unwrap();
    let selector = env
        .lp
        .sandbox
        .object("", "services", NAMESPACE, "alices-lab")
        .unwrap()["spec"]["selector"]
        .clone();
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&labels[k], v, "{k}");
    }
    env.poll_until("lab-1", "running", 60).await;

    // Another user naming alice's route value as a tag gets a value under their own prefix.
    let bob = prefix(&env.config, "portal_bob");
    let r = start_with(&env, "lab-2", "bob", json!({"ipaddr": route})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let bobs = pod_labels(&env, "lab-2");
    assert_eq!(bobs["jarvice-pod0-job-ipaddr"], format!("{bob}-{route}"));
    assert_ne!(bobs["jarvice-pod0-job-ipaddr"], route.as_str());

    // Tags that make no route value, or are no string: refused, nothing made.
    for (options, needle) in [
        (json!({"ipaddr": "a b"}), "ipaddr tag"),
        (json!({"ipaddr": "x".repeat(80)}), "ipaddr tag"),
        (json!({"ipaddr": 7}), "must be a non-empty string"),
        (json!({"ipaddr": ""}), "must be a non-empty string"),
    ] {
        let r = start_with(&env, "lab-3", "carol", options).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["error"], "tag");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{}",
            r.body
        );
    }
    assert!(env
        .lp
        .sandbox
        .object("", "pods", NAMESPACE, "lab-3")
        .is_none());
    // Without the option, the tag is the service's id, as before.
    let r = start_with(&env, "lab-4", "carol", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["tag"], "lab-4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tag_option_the_option_is_only_a_value() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |_| {}).await;
    let r = start_with(&env, "lab-5", "alice", json!({"ipaddr": "FooBar"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["tag"], "lab-5");
}
