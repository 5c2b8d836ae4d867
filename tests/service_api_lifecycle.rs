//! Starts that are cut off and stops that race starts: a start completes or is rolled back
//! whatever happens to its request, a stop during a start is ordered after it (on one replica
//! or two), and a start abandoned by a replica that went away is collected.

mod harness;
mod service_api_support;

use std::net::SocketAddr;

use http::StatusCode;
use portico::service_api::cluster::service_key;
use portico_sandbox::Faults;
use serde_json::json;
use service_api_support::*;

/// Creates by the API's identity of these resources take `ms` longer.
fn slow_creates(env: &ApiEnv, ms: u64, resources: &[&str]) {
    env.lp.sandbox.set_faults(Faults {
        latency_ms: [("create".to_string(), ms)].into(),
        only_users: vec!["portal".into()],
        only_resources: resources.iter().map(|r| r.to_string()).collect(),
        ..Faults::default()
    });
}

fn secret_exists(env: &ApiEnv, id: &str) -> bool {
    env.lp
        .sandbox
        .object("", "secrets", NAMESPACE, &format!("{id}-env"))
        .is_some()
}

/// Nothing of any start is left: no labelled object, no record.
fn nothing_left(env: &ApiEnv) {
    for (resource, group) in [("pods", ""), ("secrets", ""), ("exposures", "portico.dev")] {
        let left = env.labelled(resource, group);
        assert!(left.is_empty(), "{resource} left: {left:?}");
    }
    assert!(
        env.records().is_empty(),
        "records left: {:?}",
        env.records()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_start_still_gets_a_whole_start() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    slow_creates(&env, 1500, &["pods", "exposures"]);
    // The client goes away as soon as the start has begun creating objects.
    tokio::select! {
        r = env.start_service("cut-1", "s1", "jupyterlab", "alice") => {
            panic!("the start answered before the client left: {} {}", r.status, r.body)
        }
        _ = harness::eventually(30, "the start began", || async { secret_exists(&env, "cut-1").then_some(()) }) => {}
    }
    // The start went on without its client and completed.
    let running = env.poll_until("cut-1", "running", 60).await;
    assert_eq!(running["start_id"], "s1");
    env.lp.sandbox.clear_faults();
    let stop = env
        .call(
            "DELETE",
            "/api/services/cut-1/",
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(stop.status, StatusCode::OK, "{}", stop.body);
    nothing_left(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_past_its_time_bound_is_rolled_back_and_says_so() {
    let env = ApiEnv::start(&shipped_descriptions(), |c| {
        c.api.start_timeout_seconds = 5;
        c.api.abandoned_after_seconds = 20;
    })
    .await;
    slow_creates(&env, 3000, &["secrets", "pods", "exposures"]);
    let r = env
        .start_service("slow-1", "s1", "jupyterlab", "alice")
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.body);
    assert_eq!(r.body["error"], "timeout");
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.contains("startTimeoutSeconds") && msg.contains("nothing of the start is left"),
        "{msg}"
    );
    nothing_left(&env);
    assert_eq!(env.poll("slow-1").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_abandoned_by_a_replica_that_went_away_is_collected() {
    let env = ApiEnv::start(&shipped_descriptions(), |c| {
        c.api.start_timeout_seconds = 5;
        c.api.abandoned_after_seconds = 20;
    })
    .await;
    // What a replica that died while creating leaves: a record still "starting" since long ago,
    // and the first object, carrying the start's nonce but not yet recorded.
    let key = service_key("portal", "gone-1");
    let record = json!({
        "client": "portal", "serviceId": "gone-1", "userId": "alice", "user": "portal_alice",
        "namespace": NAMESPACE, "startId": "s1", "service": "jupyterlab/default", "tag": "gone-1",
        "objects": [
            {"apiVersion": "v1", "kind": "Secret", "name": "gone-1-env"},
            {"apiVersion": "v1", "kind": "Pod", "name": "gone-1"},
        ],
        "nonce": "n-gone", "state": "starting", "since": 1,
    });
    let sb = &env.lp.sandbox;
    sb.apply_object(
        "admin",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("portico-api-{key}"), "namespace": "portico-system",
                "labels": {"portico.dev/api-service": key, "portico.dev/api-client": "portal"}},
            "data": {"record": record.to_string()}}),
    )
    .await
    .unwrap();
    sb.apply_object(
        "portal",
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "gone-1-env", "namespace": NAMESPACE,
                "labels": {"portico.dev/api-service": key},
                "annotations": {"portico.dev/api-start": "n-gone"}},
            "stringData": {"A": "1"}}),
    )
    .await
    .unwrap();
    // A secret of the same name pattern that is not the start's stays.
    sb.apply_object(
        "portal",
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "unrelated", "namespace": NAMESPACE},
            "stringData": {"A": "1"}}),
    )
    .await
    .unwrap();
    // Until it is collected (which may already have happened) a poll says the start is dead.
    let r = env.poll("gone-1").await;
    if r.status != StatusCode::NOT_FOUND {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["status"], "failed", "{}", r.body);
    }
    harness::eventually(30, "the abandoned start is collected", || async {
        (env.records().is_empty() && !secret_exists(&env, "gone-1")).then_some(())
    })
    .await;
    assert!(sb.object("", "secrets", NAMESPACE, "unrelated").is_some());
    // The name is free again.
    let r = env
        .start_service("gone-1", "s2", "jupyterlab", "alice")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// A stop sent (to `stop_at`) while a start is creating objects: the stop answers only once
/// nothing of the start is left, the start answers that it was stopped, and the name is free.
async fn stop_during_start(env: &ApiEnv, stop_at: SocketAddr, id: &str) {
    slow_creates(env, 1500, &["pods", "exposures"]);
    let start = env.start_service(id, "s1", "jupyterlab", "alice");
    let stop = async {
        harness::eventually(30, "the start began", || async {
            secret_exists(env, id).then_some(())
        })
        .await;
        env.call_at(
            stop_at,
            "DELETE",
            &format!("/api/services/{id}/"),
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            Vec::new(),
        )
        .await
    };
    let (started, stopped) = tokio::join!(start, stop);
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.body);
    assert_eq!(stopped.body["status"], "stopped", "{}", stopped.body);
    assert_eq!(started.status, StatusCode::CONFLICT, "{}", started.body);
    assert_eq!(started.body["error"], "stopped", "{}", started.body);
    nothing_left(env);
    assert_eq!(env.poll(id).await.status, StatusCode::NOT_FOUND);
    env.lp.sandbox.clear_faults();
    let again = env.start_service(id, "s2", "jupyterlab", "alice").await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    env.poll_until(id, "running", 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_start_is_ordered_after_it() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    stop_during_start(&env, env.api.addr(), "race-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_on_another_replica_during_a_start_is_ordered_after_it() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    let replica = env.replica().await;
    stop_during_start(&env, replica.addr(), "race-2").await;
    // A start while another replica's start of the same name is in progress is refused, not
    // interleaved.
    slow_creates(&env, 1500, &["pods", "exposures"]);
    let first = env.start_service("race-3", "s1", "jupyterlab", "alice");
    let second = async {
        harness::eventually(30, "the first start began", || async {
            secret_exists(&env, "race-3").then_some(())
        })
        .await;
        let body = start_body("s2", "jupyterlab", "alice");
        env.call_at(
            replica.addr(),
            "POST",
            "/api/services/",
            Auth::Bearer(PORTAL_TOKEN),
            &[("uuidcode", "race-3")],
            body.to_string().into_bytes(),
        )
        .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
    assert_eq!(second.body["error"], "busy", "{}", second.body);
    env.lp.sandbox.clear_faults();
    let running = env.poll_until("race-3", "running", 60).await;
    assert_eq!(running["start_id"], "s1");
    replica.shutdown().await;
}
