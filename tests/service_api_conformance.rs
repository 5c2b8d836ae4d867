//! Conformance with the Kubernetes manager's clients: Portico's service API (a client with
//! `wire: k8smgr`) driven exactly as JupyterHub's BackendSpawner drives the manager — the same
//! requests, in the same order, with the same headers and body (tests/data/k8smgr/), reading
//! only what the spawner reads: on a start, any 2xx (a body must be JSON) or the error object's
//! `error` and `detailed_error`, followed by a DELETE; on a poll, `running` alone (absent or any
//! error status counts as still running); on a stop, nothing.
//!
//! Where the test checks the cluster it plays the hub's other half: the lab's address is
//! `svc-<name>-<start_id>`, which the hub computes for itself.

mod harness;
mod service_api_support;

use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use serde_json::{json, Value};
use service_api_support::*;

const TEMPLATE: &str = include_str!("data/k8smgr/start-body.json.tmpl");

/// What the spawner makes of a start's answer.
#[derive(Debug, PartialEq)]
enum Started {
    Yes,
    /// The summary and details the user is shown.
    Failed(String, String),
}

/// One JupyterHub server as the BackendSpawner handles it.
struct Spawner<'e> {
    env: &'e ApiEnv,
    /// The configured `Authorization` value, sent verbatim.
    authorization: String,
    /// `spawner.name`: the `uuidcode` header and the path segment.
    name: String,
    user: String,
    user_id: u64,
    /// New for every start attempt; cleared by a stop.
    start_id: Option<String>,
    /// `already_stopped`: after a stop, a poll sends nothing.
    stopped: bool,
    certs: Value,
}

fn new_start_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0x1a2b_3c00);
    format!("{:08x}", N.fetch_add(1, Ordering::Relaxed))
}

impl<'e> Spawner<'e> {
    fn new(env: &'e ApiEnv, authorization: &str, name: &str, user: &str, user_id: u64) -> Self {
        Self {
            env,
            authorization: authorization.to_string(),
            name: name.to_string(),
            user: user.to_string(),
            user_id,
            start_id: None,
            stopped: false,
            certs: json!({}),
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("accept", "application/json".to_string()),
            ("content-type", "application/json".to_string()),
            ("authorization", self.authorization.clone()),
            ("uuidcode", self.name.clone()),
        ]
    }

    fn body(&self, start_id: &str) -> String {
        TEMPLATE
            .trim_end()
            .replace("{{token}}", &format!("hub-api-token-{}", self.user))
            .replace("{{user}}", &self.user)
            .replace("{{server}}", &self.name)
            .replace("{{user_id}}", &self.user_id.to_string())
            .replace("{{certs}}", &self.certs.to_string())
            .replace("{{access_token}}", "SMUGGLED-access-token")
            .replace("{{start_id}}", start_id)
    }

    fn service_path(&self) -> String {
        format!("/api/services/{}/", self.name)
    }

    /// `start()`: a new start_id, the POST, and on failure the DELETE the spawner sends at once.
    async fn start(&mut self) -> Started {
        let start_id = new_start_id();
        self.start_id = Some(start_id.clone());
        self.stopped = false;
        let (status, _, text) = self
            .env
            .call_exact(
                "POST",
                "/api/services/",
                &self.headers(),
                self.body(&start_id).into_bytes(),
            )
            .await;
        if status.is_success() {
            if !text.is_empty() {
                let parsed: Result<Value, _> = serde_json::from_str(&text);
                assert!(
                    parsed.is_ok(),
                    "a 2xx body the spawner cannot json.loads: {text}"
                );
            }
            return Started::Yes;
        }
        // EventBackendSpawner: error/detailed_error from a JSON object, else "<code> - <reason>".
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let shown = match (
            parsed.get("error").and_then(Value::as_str),
            parsed.get("detailed_error").and_then(Value::as_str),
        ) {
            (Some(e), Some(d)) => (e.to_string(), d.to_string()),
            _ => (
                format!(
                    "{} - {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
                String::new(),
            ),
        };
        self.stop().await;
        Started::Failed(shown.0, shown.1)
    }

    /// `poll()`: `None` while running, `Some(0)` once stopped.
    async fn poll(&self) -> Option<i32> {
        if self.stopped {
            return Some(0);
        }
        let (status, _, text) = self
            .env
            .call_exact("GET", &self.service_path(), &self.headers(), Vec::new())
            .await;
        if !status.is_success() {
            // request_failed_poll_keep_running: every failure is "still running".
            return None;
        }
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a poll body the spawner cannot read ({e}): {text}"));
        assert!(body.is_object(), "a poll body must be an object: {text}");
        let running = body.get("running").cloned().unwrap_or(Value::Bool(true));
        let truthy = match running {
            Value::Bool(b) => b,
            Value::Null => false,
            other => panic!("running must be a boolean, got {other}"),
        };
        if truthy {
            None
        } else {
            Some(0)
        }
    }

    /// `stop()`: one DELETE, whatever it answers.
    async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = self
            .env
            .call_exact("DELETE", &self.service_path(), &self.headers(), Vec::new())
            .await;
        self.stopped = true;
        self.start_id = None;
    }

    /// The address the hub computes for itself.
    fn lab_service(&self, start_id: &str) -> String {
        format!("svc-{}-{start_id}", self.name)
    }
}

fn token(key: &str) -> String {
    format!("Token {key}")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Waits until the hub's address for this start exists and selects a ready pod of the lab,
/// polling as the spawner does meanwhile: the lab must never read as stopped on the way.
async fn until_reachable(sp: &Spawner<'_>, start_id: &str) -> Value {
    let sb = &sp.env.lp.sandbox;
    let name = sp.lab_service(start_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(sp.poll().await, None, "a starting lab read as stopped");
        if let Some(svc) = sb.object("", "services", NAMESPACE, &name) {
            let selector = svc["spec"]["selector"].clone();
            let ready = sb
                .objects("", "pods", Some(NAMESPACE))
                .into_iter()
                .find(|p| {
                    let labels = &p["metadata"]["labels"];
                    let selected = selector
                        .as_object()
                        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v));
                    let ready = p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True");
                    selected && ready && p["metadata"]["deletionTimestamp"].is_null()
                });
            if let Some(pod) = ready {
                let ports: Vec<i64> = svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["port"].as_i64())
                    .collect();
                assert!(ports.contains(&8080), "the hub connects to 8080: {svc}");
                return pod;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never selected a ready pod"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything in the namespace the API made for this client.
fn objects_of(env: &ApiEnv, client: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (group, resource) in [
        ("", "pods"),
        ("", "secrets"),
        ("", "services"),
        ("portico.dev", "exposures"),
    ] {
        for o in env.lp.sandbox.objects(group, resource, Some(NAMESPACE)) {
            if o["metadata"]["labels"]["portico.dev/api-client"] == client {
                out.push(format!(
                    "{resource}/{}",
                    o["metadata"]["name"].as_str().unwrap_or("")
                ));
            }
        }
    }
    out
}

async fn until_gone(env: &ApiEnv, client: &str) {
    harness::eventually(30, "the lab's objects are gone", || async {
        objects_of(env, client).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_poll_until_running_and_stop() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let mut sp = Spawner::new(
        &env,
        &token(HUB_TOKEN),
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "alice",
        17,
    );
    assert_eq!(sp.start().await, Started::Yes);
    let start_id = sp.start_id.clone().unwrap();
    let pod = until_reachable(&sp, &start_id).await;
    // The manager's naming: the pod is <name>-<start_id>, its env the hub's, the user's number
    // as the text the lab reads, the hub's other keys passed on, nothing of auth_state.
    assert_eq!(
        pod["metadata"]["name"],
        format!("0f1e2d3c4b5a69788796a5b4c3d2e1f0-{start_id}")
    );
    let secret = env
        .lp
        .sandbox
        .object(
            "",
            "secrets",
            NAMESPACE,
            &format!("secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0-{start_id}"),
        )
        .expect("the env Secret");
    let data = secret["data"]
        .as_object()
        .or(secret["stringData"].as_object())
        .unwrap()
        .clone();
    let value = |k: &str| {
        let v = data[k].as_str().unwrap().to_string();
        if secret["data"].is_object() {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap()
        } else {
            v
        }
    };
    assert_eq!(value("JUPYTERHUB_USER_ID"), "17");
    assert_eq!(value("JUPYTER_MODULE_XPRA_ENABLED"), "0");
    assert_eq!(value("JUPYTERHUB_STAGE"), "production");
    assert!(!data.contains_key("auth_state") && !data.contains_key("access_token"));
    let everywhere = serde_json::to_string(&(
        env.lp.sandbox.objects("", "secrets", Some(NAMESPACE)),
        env.lp.sandbox.objects("", "pods", Some(NAMESPACE)),
        env.records(),
    ))
    .unwrap();
    assert!(
        !everywhere.contains("SMUGGLED"),
        "auth_state reached the cluster"
    );
    // Still running on later polls.
    for _ in 0..3 {
        assert_eq!(sp.poll().await, None);
    }
    sp.stop().await;
    until_gone(&env, "jupyterhub").await;
    // What a stopped name reads as: 404 (never running: true).
    let (status, _, _) = env
        .call_exact("GET", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A second DELETE, and one for a name never started, are harmless.
    let (status, _, text) = env
        .call_exact("DELETE", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(serde_json::from_str::<Value>(&text).unwrap()["detailed_error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_is_explained_and_the_delete_after_it_is_harmless() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    // No such service: refused before anything is made.
    let mut sp = Spawner::new(&env, &token(HUB_TOKEN), "fa11ed00fa11ed00", "bob", 18);
    let mut body_service = sp
        .body("00000001")
        .replace("JupyterLab/JupyterLab", "Nope/Nope");
    let (status, _, text) = env
        .call_exact(
            "POST",
            "/api/services/",
            &sp.headers(),
            std::mem::take(&mut body_service).into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"], "Could not start service");
    assert!(err["detailed_error"]
        .as_str()
        .unwrap()
        .contains("Nope/Nope"));

    // certs present but incomplete: refused, with what to send.
    sp.certs = json!({"keyfile": "-----BEGIN PRIVATE KEY-----"});
    match sp.start().await {
        Started::Failed(e, d) => {
            assert_eq!(e, "Could not start service");
            assert!(d.contains("certs.certfile"), "{d}");
        }
        Started::Yes => panic!("incomplete certs were accepted"),
    }
    assert!(objects_of(&env, "jupyterhub").is_empty());

    // The cluster refuses an object (its name is taken by someone else's pod): everything the
    // start made is rolled back, the spawner shows why, its DELETE finds nothing, and the
    // other pod is untouched.
    sp.certs = json!({});
    let start_id = "0badc0de";
    let squatter = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("fa11ed00fa11ed00-{start_id}"), "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    env.lp
        .sandbox
        .apply_object("user1", squatter)
        .await
        .expect("a pod of someone else's");
    let (status, _, text) = env
        .call_exact(
            "POST",
            "/api/services/",
            &sp.headers(),
            sp.body(start_id).into_bytes(),
        )
        .await;
    assert!(!status.is_success(), "{status} {text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"], "Could not start service");
    assert!(
        err["detailed_error"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{err}"
    );
    // The spawner's DELETE right after.
    let (status, _, _) = env
        .call_exact("DELETE", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(objects_of(&env, "jupyterhub").is_empty());
    assert!(env
        .lp
        .sandbox
        .object(
            "",
            "pods",
            NAMESPACE,
            &format!("fa11ed00fa11ed00-{start_id}")
        )
        .is_some());
    // And a poll after it does not say running.
    let (status, _, _) = env
        .call_exact("GET", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_that_crashes_after_running_reads_not_running_with_details() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let mut sp = Spawner::new(&env, &token(HUB_TOKEN), "c0ffee00c0ffee00", "carol", 19);
    assert_eq!(sp.start().await, Started::Yes);
    let start_id = sp.start_id.clone().unwrap();
    let pod = until_reachable(&sp, &start_id).await;
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let sb = &env.lp.sandbox;
    sb.append_pod_log(
        NAMESPACE,
        &pod_name,
        &["kernel died: <script>alert(1)</script>"],
    );
    sb.fail_pod(NAMESPACE, &pod_name, "Error", "the lab exited with 1")
        .await
        .unwrap();
    harness::eventually(30, "the poll turns to running: false", || async {
        sp.poll().await
    })
    .await;
    // The details a 2.x hub shows: escaped HTML with the reason and the lab's last lines.
    let (status, _, text) = env
        .call_exact("GET", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["running"], false);
    assert_eq!(body["details"]["error"], "Service cannot start");
    let html = body["details"]["detailed_error"].as_str().unwrap();
    assert!(
        html.contains("kernel died: &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    // JupyterHub then stops the server.
    sp.stop().await;
    until_gone(&env, "jupyterhub").await;
}

/// Holds a pod in Terminating, as a kubelet does during a grace period.
async fn hold(env: &ApiEnv, pod: &str) {
    let r = env
        .lp
        .sandbox
        .request(
            "admin",
            "PATCH",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}"),
            Some(json!({"metadata": {"finalizers": ["test.portico.dev/grace"]}})),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
}

async fn release(env: &ApiEnv, pod: &str) {
    let r = env
        .lp
        .sandbox
        .request(
            "admin",
            "PATCH",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}"),
            Some(json!({"metadata": {"finalizers": null}})),
        )
        .await;
    assert!(r.code == 200 || r.code == 404, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_new_start_id_while_the_old_lab_is_going_away() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let mut sp = Spawner::new(&env, &token(HUB_TOKEN), "5e55105e55105e55", "dave", 20);
    assert_eq!(sp.start().await, Started::Yes);
    let first = sp.start_id.clone().unwrap();
    let old_pod = until_reachable(&sp, &first).await["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    hold(&env, &old_pod).await;

    // The user stops and starts again at once: JupyterHub's stop, then a start with a new id.
    sp.stop().await;
    let terminating = env
        .lp
        .sandbox
        .object("", "pods", NAMESPACE, &old_pod)
        .expect("the old pod is still going away");
    assert!(!terminating["metadata"]["deletionTimestamp"].is_null());
    // The old pod fails on its way out (its main process is killed): that says nothing about
    // the new lab, whose own pod is not even running yet at its first polls.
    env.lp
        .sandbox
        .fail_pod(NAMESPACE, &old_pod, "Error", "terminated")
        .await
        .unwrap();
    assert_eq!(sp.start().await, Started::Yes);
    let second = sp.start_id.clone().unwrap();
    assert_ne!(first, second);
    // Every poll on the way asserts the lab does not read as stopped.
    let new_pod = until_reachable(&sp, &second).await;
    assert_ne!(new_pod["metadata"]["name"], old_pod.as_str());
    for _ in 0..5 {
        assert_eq!(sp.poll().await, None, "the new lab read as stopped");
    }

    // A start with a new id without a stop first (a hub that lost its state): the previous
    // start is replaced, again while its pod is still going away.
    let current = new_pod["metadata"]["name"].as_str().unwrap().to_string();
    hold(&env, &current).await;
    assert_eq!(sp.start().await, Started::Yes);
    env.lp
        .sandbox
        .fail_pod(NAMESPACE, &current, "Error", "terminated")
        .await
        .unwrap();
    let third = sp.start_id.clone().unwrap();
    until_reachable(&sp, &third).await;
    for _ in 0..3 {
        assert_eq!(sp.poll().await, None);
    }
    sp.stop().await;
    release(&env, &old_pod).await;
    release(&env, &current).await;
    until_gone(&env, "jupyterhub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_never_see_each_others_labs() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let name = "7e7a7e7a7e7a7e7a7e7a7e7a7e7a7e7a";
    let mut one = Spawner::new(&env, &token(HUB_TOKEN), name, "erin", 21);
    let mut two = Spawner::new(&env, &token(HUB2_TOKEN), name, "erin", 21);
    assert_eq!(one.start().await, Started::Yes);
    assert_eq!(two.start().await, Started::Yes);
    let (id1, id2) = (one.start_id.clone().unwrap(), two.start_id.clone().unwrap());
    until_reachable(&one, &id1).await;
    until_reachable(&two, &id2).await;

    // The same tenant by its basic credentials (the production hub's fallback) sees its lab;
    // the token of one tenant is no password of the other.
    let as_basic = Spawner::new(&env, &basic(HUB_USER, HUB_PASSWORD), name, "erin", 21);
    let (status, _, text) = env
        .call_exact(
            "GET",
            &as_basic.service_path(),
            &as_basic.headers(),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["start_id"],
        id1.as_str()
    );
    for wrong in [
        basic(HUB_USER, HUB2_TOKEN),
        basic("jupyterhub2", HUB2_TOKEN),
        format!("Bearer {HUB_TOKEN}x"),
        "Token".to_string(),
        format!("Token  {HUB2_TOKEN} {HUB_TOKEN}"),
    ] {
        let intruder = Spawner::new(&env, &wrong, name, "erin", 21);
        let (status, _, _) = env
            .call_exact(
                "GET",
                &intruder.service_path(),
                &intruder.headers(),
                Vec::new(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
    }

    // Tenant two stops its lab; tenant one's keeps running, and the reverse name is unknown.
    two.stop().await;
    for _ in 0..3 {
        assert_eq!(one.poll().await, None);
    }
    let only_one = Spawner::new(&env, &token(HUB2_TOKEN), name, "erin", 21);
    let (status, _, _) = env
        .call_exact(
            "GET",
            &only_one.service_path(),
            &only_one.headers(),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = env
        .call_exact(
            "DELETE",
            &only_one.service_path(),
            &only_one.headers(),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(one.poll().await, None);
    assert!(env
        .lp
        .sandbox
        .object("", "services", NAMESPACE, &one.lab_service(&id1))
        .is_some());
    one.stop().await;
    until_gone(&env, "jupyterhub").await;
    until_gone(&env, "jupyterhub2").await;
}
