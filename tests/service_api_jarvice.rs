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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_is_reported_with_an_address_a_portal_can_reach() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |_| {}).await;
    let sb = &env.lp.sandbox;
    // The node has only internal addresses: none is offered.
    let r = start_with(&env, "np-1", "alice", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let running = env.poll_until("np-1", "running", 60).await;
    assert!(
        running["address"]["node_ports"]["http"].is_i64(),
        "{running}"
    );
    assert!(running["address"].get("node_host").is_none(), "{running}");
    // Given an external address, the node's is reported.
    let node = sb.objects("", "nodes", None).remove(0);
    let name = node["metadata"]["name"].as_str().unwrap().to_string();
    let mut status = node["status"].clone();
    status["addresses"] = json!([{"type": "InternalIP", "address": "10.0.0.5"},
        {"type": "ExternalIP", "address": "203.0.113.7"}]);
    let patched = sb
        .request(
            "admin",
            "PATCH",
            &format!("/api/v1/nodes/{name}/status"),
            Some(json!({"status": status})),
        )
        .await;
    assert_eq!(patched.code, 200, "{}", patched.body);
    let r = env.poll("np-1").await;
    assert_eq!(r.body["address"]["node_host"], "203.0.113.7", "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_node_port_host_wins() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |c| {
        c.api.node_port_host = "labs.example.org".into()
    })
    .await;
    let r = start_with(&env, "np-2", "alice", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let running = env.poll_until("np-2", "running", 60).await;
    assert_eq!(
        running["address"]["node_host"], "labs.example.org",
        "{running}"
    );
}
