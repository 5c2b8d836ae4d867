//! Conformance with the Kubernetes manager's clients, written once against a [`Lab`]: Portico's
//! service API (a client with `wire: k8smgr`) driven exactly as JupyterHub's BackendSpawner
//! drives the manager — the same requests, in the same order, with the same headers and body
//! (tests/data/k8smgr/), reading only what the spawner reads: on a start, any 2xx (a body must be
//! JSON) or the error object's `error` and `detailed_error`, followed by a DELETE; on a poll,
//! `running` alone (absent or any error status counts as still running); on a stop, nothing.
//! `service_api_conformance.rs` plays it on the sandbox, `e2e_service_api_conformance.rs` on the
//! real control plane.
//!
//! Where a scenario checks the cluster it plays the hub's other half: the lab's address is
//! `svc-<name>-<start_id>`, which the hub computes for itself.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

const TEMPLATE: &str = include_str!("../data/k8smgr/start-body.json.tmpl");

/// The tenants' credentials (the service API's `jupyterhub` and `jupyterhub2` clients).
pub struct Tenants {
    pub hub_token: &'static str,
    pub hub_user: &'static str,
    pub hub_password: &'static str,
    pub hub2_token: &'static str,
}

/// Where the API runs: its HTTPS port and the namespace its tenants' labs go to.
#[allow(async_fn_in_trait)] // used by tests only, never across threads
pub trait Lab {
    fn tenants(&self) -> Tenants;
    /// One request with exactly these headers (and `host`): what the spawner sends, byte for
    /// byte. The body is returned as text, as the spawner reads it.
    async fn call_exact(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, String);
    /// An object of the tenants' namespace: `resource` is `pods`, `secrets`, `services` or
    /// `exposures`.
    async fn get(&self, resource: &str, name: &str) -> Option<Value>;
    async fn list(&self, resource: &str) -> Vec<Value>;
    /// The API's records (ConfigMaps `portico-api-*` in portico-system).
    async fn records(&self) -> Vec<Value>;
    /// Another user (`user1`) makes a pod of their own named `name` in the namespace.
    async fn squat_pod(&self, name: &str);
    /// The pod's main process prints `line` and exits 1: the pod fails (reason `Error`), and
    /// the line is in what the kubelet reports of it (its log, or an Event where no log is kept).
    async fn crash(&self, pod: &str, line: &str);
    /// The pod fails with this reason and message, as its kubelet reports it.
    async fn fail_pod(&self, pod: &str, reason: &str, message: &str);
    /// Holds a pod in Terminating (a finalizer), as a kubelet does during a grace period.
    async fn hold(&self, pod: &str);
    async fn release(&self, pod: &str);
}

/// What the spawner makes of a start's answer.
#[derive(Debug, PartialEq)]
pub enum Started {
    Yes,
    /// The summary and details the user is shown.
    Failed(String, String),
}

/// One JupyterHub server as the BackendSpawner handles it.
pub struct Spawner<'e, L: Lab> {
    lab: &'e L,
    /// The configured `Authorization` value, sent verbatim.
    authorization: String,
    /// `spawner.name`: the `uuidcode` header and the path segment.
    pub name: String,
    user: String,
    user_id: u64,
    /// New for every start attempt; cleared by a stop.
    pub start_id: Option<String>,
    /// `already_stopped`: after a stop, a poll sends nothing.
    stopped: bool,
    pub certs: Value,
}

fn new_start_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0x1a2b_3c00);
    format!("{:08x}", N.fetch_add(1, Ordering::Relaxed))
}

impl<'e, L: Lab> Spawner<'e, L> {
    pub fn new(lab: &'e L, authorization: &str, name: &str, user: &str, user_id: u64) -> Self {
        Self {
            lab,
            authorization: authorization.to_string(),
            name: name.to_string(),
            user: user.to_string(),
            user_id,
            start_id: None,
            stopped: false,
            certs: json!({}),
        }
    }

    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("accept", "application/json".to_string()),
            ("content-type", "application/json".to_string()),
            ("authorization", self.authorization.clone()),
            ("uuidcode", self.name.clone()),
        ]
    }

    pub fn body(&self, start_id: &str) -> String {
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

    pub fn service_path(&self) -> String {
        format!("/api/services/{}/", self.name)
    }

    /// `start()`: a new start_id, the POST, and on failure the DELETE the spawner sends at once.
    pub async fn start(&mut self) -> Started {
        let start_id = new_start_id();
        self.start_id = Some(start_id.clone());
        self.stopped = false;
        let (status, _, text) = self
            .lab
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
    pub async fn poll(&self) -> Option<i32> {
        if self.stopped {
            return Some(0);
        }
        let (status, _, text) = self
            .lab
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
    pub async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = self
            .lab
            .call_exact("DELETE", &self.service_path(), &self.headers(), Vec::new())
            .await;
        self.stopped = true;
        self.start_id = None;
    }

    /// The address the hub computes for itself.
    pub fn lab_service(&self, start_id: &str) -> String {
        format!("svc-{}-{start_id}", self.name)
    }
}

pub fn token(key: &str) -> String {
    format!("Token {key}")
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Waits until the hub's address for this start exists and selects a ready pod of the lab,
/// polling as the spawner does meanwhile: the lab must never read as stopped on the way.
pub async fn until_reachable<L: Lab>(sp: &Spawner<'_, L>, start_id: &str) -> Value {
    let name = sp.lab_service(start_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(sp.poll().await, None, "a starting lab read as stopped");
        if let Some(svc) = sp.lab.get("services", &name).await {
            let selector = svc["spec"]["selector"].clone();
            let ready = sp.lab.list("pods").await.into_iter().find(|p| {
                let labels = &p["metadata"]["labels"];
                let selected = selector
                    .as_object()
                    .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v));
                selected && is_ready(p) && p["metadata"]["deletionTimestamp"].is_null()
            });
            if let Some(pod) = ready {
                let ports: Vec<i64> = svc["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
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
pub async fn objects_of(lab: &impl Lab, client: &str) -> Vec<String> {
    let mut out = Vec::new();
    for resource in ["pods", "secrets", "services", "exposures"] {
        for o in lab.list(resource).await {
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

pub async fn until_gone(lab: &impl Lab, client: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = objects_of(lab, client).await;
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{client}'s lab objects are never gone: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until the spawner reads the lab as stopped.
async fn until_stopped<L: Lab>(sp: &Spawner<'_, L>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sp.poll().await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poll never turned to running: false"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Secret's value of `key`, from `data` (base64) or `stringData`.
fn secret_value(secret: &Value, key: &str) -> Option<String> {
    if let Some(v) = secret["data"][key].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        return String::from_utf8(bytes).ok();
    }
    secret["stringData"][key].as_str().map(str::to_string)
}

pub async fn start_poll_until_running_and_stop(lab: &impl Lab) {
    let t = lab.tenants();
    let name = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let mut sp = Spawner::new(lab, &token(t.hub_token), name, "alice", 17);
    assert_eq!(sp.start().await, Started::Yes);
    let start_id = sp.start_id.clone().expect("a start id");
    let pod = until_reachable(&sp, &start_id).await;
    // The manager's naming: the pod is <name>-<start_id>, its env the hub's, the user's number
    // as the text the lab reads, the hub's other keys passed on, nothing of auth_state.
    assert_eq!(pod["metadata"]["name"], format!("{name}-{start_id}"));
    let secret = lab
        .get("secrets", &format!("secret-{name}-{start_id}"))
        .await
        .expect("the env Secret");
    let value = |k: &str| secret_value(&secret, k);
    assert_eq!(value("JUPYTERHUB_USER_ID").as_deref(), Some("17"));
    assert_eq!(value("JUPYTER_MODULE_XPRA_ENABLED").as_deref(), Some("0"));
    assert_eq!(value("JUPYTERHUB_STAGE").as_deref(), Some("production"));
    assert_eq!(value("auth_state"), None);
    assert_eq!(value("access_token"), None);
    let everywhere = serde_json::to_string(&(
        lab.list("secrets").await,
        lab.list("pods").await,
        lab.records().await,
    ))
    .expect("JSON");
    assert!(
        !everywhere.contains("SMUGGLED"),
        "auth_state reached the cluster"
    );
    // Still running on later polls.
    for _ in 0..3 {
        assert_eq!(sp.poll().await, None);
    }
    sp.stop().await;
    until_gone(lab, "jupyterhub").await;
    // What a stopped name reads as: 404 (never running: true).
    let (status, _, _) = lab
        .call_exact("GET", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A second DELETE, and one for a name never started, are harmless.
    let (status, _, text) = lab
        .call_exact("DELETE", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(body["detailed_error"].is_string(), "{text}");
}

pub async fn a_failed_start_is_explained_and_the_delete_after_it_is_harmless(lab: &impl Lab) {
    let t = lab.tenants();
    // No such service: refused before anything is made.
    let mut sp = Spawner::new(lab, &token(t.hub_token), "fa11ed00fa11ed00", "bob", 18);
    let body = sp
        .body("00000001")
        .replace("JupyterLab/JupyterLab", "Nope/Nope");
    let (status, _, text) = lab
        .call_exact("POST", "/api/services/", &sp.headers(), body.into_bytes())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(err["error"], "Could not start service", "{text}");
    assert!(
        err["detailed_error"]
            .as_str()
            .is_some_and(|d| d.contains("Nope/Nope")),
        "{text}"
    );

    // certs present but incomplete: refused, with what to send.
    sp.certs = json!({"keyfile": "-----BEGIN PRIVATE KEY-----"});
    match sp.start().await {
        Started::Failed(e, d) => {
            assert_eq!(e, "Could not start service");
            assert!(d.contains("certs.certfile"), "{d}");
        }
        Started::Yes => panic!("incomplete certs were accepted"),
    }
    assert_eq!(objects_of(lab, "jupyterhub").await, Vec::<String>::new());

    // The cluster refuses an object (its name is taken by someone else's pod): everything the
    // start made is rolled back, the spawner shows why, its DELETE finds nothing, and the
    // other pod is untouched.
    sp.certs = json!({});
    let start_id = "0badc0de";
    let squatted = format!("fa11ed00fa11ed00-{start_id}");
    lab.squat_pod(&squatted).await;
    let (status, _, text) = lab
        .call_exact(
            "POST",
            "/api/services/",
            &sp.headers(),
            sp.body(start_id).into_bytes(),
        )
        .await;
    assert!(!status.is_success(), "{status} {text}");
    let err: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(err["error"], "Could not start service", "{text}");
    assert!(
        err["detailed_error"]
            .as_str()
            .is_some_and(|d| d.contains("already exists")),
        "{err}"
    );
    // The spawner's DELETE right after.
    let (status, _, _) = lab
        .call_exact("DELETE", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    until_gone(lab, "jupyterhub").await;
    assert!(lab.get("pods", &squatted).await.is_some());
    // And a poll after it does not say running.
    let (status, _, _) = lab
        .call_exact("GET", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

pub async fn a_lab_that_crashes_after_running_reads_not_running_with_details(lab: &impl Lab) {
    let t = lab.tenants();
    let mut sp = Spawner::new(lab, &token(t.hub_token), "c0ffee00c0ffee00", "carol", 19);
    assert_eq!(sp.start().await, Started::Yes);
    let start_id = sp.start_id.clone().expect("a start id");
    let pod = until_reachable(&sp, &start_id).await;
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    lab.crash(pod_name, "kernel died: <script>alert(1)</script>")
        .await;
    until_stopped(&sp).await;
    // The details a 2.x hub shows: escaped HTML with the reason and what the lab said last.
    let (status, _, text) = lab
        .call_exact("GET", &sp.service_path(), &sp.headers(), Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(body["running"], false, "{text}");
    assert_eq!(body["details"]["error"], "Service cannot start", "{text}");
    let html = body["details"]["detailed_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        html.contains("kernel died: &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    // JupyterHub then stops the server.
    sp.stop().await;
    until_gone(lab, "jupyterhub").await;
}

pub async fn a_restart_with_a_new_start_id_while_the_old_lab_is_going_away(lab: &impl Lab) {
    let t = lab.tenants();
    let mut sp = Spawner::new(lab, &token(t.hub_token), "5e55105e55105e55", "dave", 20);
    assert_eq!(sp.start().await, Started::Yes);
    let first = sp.start_id.clone().expect("a start id");
    let old_pod = until_reachable(&sp, &first).await["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    lab.hold(&old_pod).await;

    // The user stops and starts again at once: JupyterHub's stop, then a start with a new id.
    sp.stop().await;
    let terminating = lab
        .get("pods", &old_pod)
        .await
        .expect("the old pod is still going away");
    assert!(!terminating["metadata"]["deletionTimestamp"].is_null());
    // The old pod fails on its way out (its main process is killed): that says nothing about
    // the new lab, whose own pod is not even running yet at its first polls.
    lab.fail_pod(&old_pod, "Error", "terminated").await;
    assert_eq!(sp.start().await, Started::Yes);
    let second = sp.start_id.clone().expect("a start id");
    assert_ne!(first, second);
    // Every poll on the way asserts the lab does not read as stopped.
    let new_pod = until_reachable(&sp, &second).await;
    assert_ne!(new_pod["metadata"]["name"], old_pod.as_str());
    for _ in 0..5 {
        assert_eq!(sp.poll().await, None, "the new lab read as stopped");
    }

    // A start with a new id without a stop first (a hub that lost its state): the previous
    // start is replaced, again while its pod is still going away.
    let current = new_pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    lab.hold(&current).await;
    assert_eq!(sp.start().await, Started::Yes);
    lab.fail_pod(&current, "Error", "terminated").await;
    let third = sp.start_id.clone().expect("a start id");
    until_reachable(&sp, &third).await;
    for _ in 0..3 {
        assert_eq!(sp.poll().await, None);
    }
    sp.stop().await;
    lab.release(&old_pod).await;
    lab.release(&current).await;
    until_gone(lab, "jupyterhub").await;
}

pub async fn two_tenants_never_see_each_others_labs(lab: &impl Lab) {
    let t = lab.tenants();
    let name = "7e7a7e7a7e7a7e7a7e7a7e7a7e7a7e7a";
    let mut one = Spawner::new(lab, &token(t.hub_token), name, "erin", 21);
    let mut two = Spawner::new(lab, &token(t.hub2_token), name, "erin", 21);
    assert_eq!(one.start().await, Started::Yes);
    assert_eq!(two.start().await, Started::Yes);
    let id1 = one.start_id.clone().expect("a start id");
    let id2 = two.start_id.clone().expect("a start id");
    until_reachable(&one, &id1).await;
    until_reachable(&two, &id2).await;

    // The same tenant by its basic credentials (the production hub's fallback) sees its lab;
    // the token of one tenant is no password of the other.
    let as_basic = Spawner::new(lab, &basic(t.hub_user, t.hub_password), name, "erin", 21);
    let (status, _, text) = lab
        .call_exact(
            "GET",
            &as_basic.service_path(),
            &as_basic.headers(),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(body["start_id"], id1.as_str(), "{text}");
    for wrong in [
        basic(t.hub_user, t.hub2_token),
        basic("jupyterhub2", t.hub2_token),
        format!("Bearer {}x", t.hub_token),
        "Token".to_string(),
        format!("Token  {} {}", t.hub2_token, t.hub_token),
    ] {
        let intruder = Spawner::new(lab, &wrong, name, "erin", 21);
        let (status, _, _) = lab
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
    let only_one = Spawner::new(lab, &token(t.hub2_token), name, "erin", 21);
    for method in ["GET", "DELETE"] {
        let (status, _, _) = lab
            .call_exact(
                method,
                &only_one.service_path(),
                &only_one.headers(),
                Vec::new(),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    assert_eq!(one.poll().await, None);
    assert!(lab.get("services", &one.lab_service(&id1)).await.is_some());
    one.stop().await;
    until_gone(lab, "jupyterhub").await;
    until_gone(lab, "jupyterhub2").await;
}
