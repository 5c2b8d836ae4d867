//! The service API against the sandbox: a portal starts, polls and stops users' services from
//! templates; the webhook stamps them like any `kubectl` job and the provisioner exposes them.

mod harness;
mod service_api_support;

use std::path::Path;

use http::StatusCode;
use portico::core::Policy;
use serde_json::{json, Value};
use service_api_support::*;

fn route_prefix(config: &portico::config::Config, user: &str) -> String {
    Policy::new(config.clone())
        .prefix_for(user)
        .unwrap()
        .as_str()
        .to_string()
}

fn pods_of(env: &ApiEnv) -> Vec<Value> {
    env.labelled("pods", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_poll_until_running_then_stop() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    let r = env
        .start_service("lab-1", "s1", "jupyterlab/default", "alice")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "starting");
    assert_eq!(r.body["name"], "lab-1");
    assert_eq!(r.body["user_id"], "alice");
    assert_eq!(r.body["service"], "jupyterlab/default");

    // The pod was stamped by the webhook for the unique user, exactly as a kubectl job.
    let pods = pods_of(&env);
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    let prefix = route_prefix(&env.config, "portal_alice");
    assert_eq!(
        pod["metadata"]["labels"]["jarvice-job-ipaddr"],
        format!("{prefix}-lab-1")
    );
    assert_eq!(
        pod["metadata"]["labels"]["jarvice-pod0-job-ipaddr"],
        format!("{prefix}-lab-1")
    );
    assert_eq!(pod["metadata"]["labels"]["portico.dev/owner"], prefix);
    assert_eq!(
        pod["metadata"]["annotations"]["portico.dev/user"],
        "portal_alice"
    );
    // The template's keywords were replaced; <input> is the packed input/ folder.
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "quay.io/jupyter/base-notebook:2025-01-06");
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "lab-1-env");
    assert!(c["env"][0]["value"].as_str().unwrap().len() > 100);
    // The Secret holds env.
    let secret = env
        .lp
        .sandbox
        .object("", "secrets", NAMESPACE, "lab-1-env")
        .expect("env Secret");
    let data = secret["data"]
        .as_object()
        .or(secret["stringData"].as_object())
        .unwrap();
    assert!(data.contains_key("JUPYTERHUB_API_TOKEN"));
    let exposure = env
        .lp
        .sandbox
        .object("portico.dev", "exposures", NAMESPACE, "lab-1")
        .expect("Exposure");
    assert_eq!(exposure["spec"]["user"], "portal_alice");
    assert_eq!(exposure["spec"]["service"]["type"], "NodePort");

    let running = env.poll_until("lab-1", "running", 60).await;
    let node_port = running["address"]["node_ports"]["http"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{running}");
    assert_eq!(running["address"]["type"], "NodePort");
    // The Service the address names selects the service's pod.
    let svc_name = running["address"]["service"].as_str().unwrap();
    let svc = env
        .lp
        .sandbox
        .object("", "services", NAMESPACE, svc_name)
        .unwrap();
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], node_port);

    // The same start again changes nothing.
    let before = env.lp.sandbox.counters();
    let again = env
        .start_service("lab-1", "s1", "jupyterlab/default", "alice")
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["status"], "running");
    assert_eq!(
        env.lp.sandbox.counters().since(&before).writes_by("portal"),
        0
    );

    let stop = env
        .call(
            "DELETE",
            "/api/services/lab-1/",
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(stop.status, StatusCode::OK, "{}", stop.body);
    assert_eq!(stop.body["status"], "stopped");
    assert_eq!(env.poll("lab-1").await.status, StatusCode::NOT_FOUND);
    assert!(pods_of(&env).is_empty());
    assert!(env
        .lp
        .sandbox
        .object("", "secrets", NAMESPACE, "lab-1-env")
        .is_none());
    assert!(env
        .lp
        .sandbox
        .object("portico.dev", "exposures", NAMESPACE, "lab-1")
        .is_none());
    assert!(env.records().is_empty());
    let again = env
        .call(
            "DELETE",
            "/api/services/lab-1/",
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_kubeconfig_impersonating_the_trusted_submitter() {
    // As `portico serve --api` runs it: api.kubeconfig, api.context and api.impersonate.
    let env = ApiEnv::start_as(&shipped_descriptions(), |_| {}, true).await;
    let r = env
        .start_service("lab-5", "s1", "jupyterlab", "carol")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let pod = env
        .lp
        .sandbox
        .object("", "pods", NAMESPACE, "lab-5")
        .unwrap();
    let prefix = route_prefix(&env.config, "portal_carol");
    assert_eq!(
        pod["metadata"]["labels"]["jarvice-job-ipaddr"],
        format!("{prefix}-lab-5")
    );
    assert_eq!(
        pod["metadata"]["annotations"]["portico.dev/user"],
        "portal_carol"
    );
    env.poll_until("lab-5", "running", 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_template_with_its_own_exposure_gets_an_ingress_host() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    let r = env.start_service("web-1", "s1", "flask", "bob").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["service"], "flask/default");
    let running = env.poll_until("web-1", "running", 60).await;
    let host = running["address"]["host"].as_str().unwrap();
    assert!(
        host.ends_with(".apps.test") && host.contains("web-1"),
        "{running}"
    );
    let exposure = env
        .lp
        .sandbox
        .object("portico.dev", "exposures", NAMESPACE, "web-1")
        .unwrap();
    assert_eq!(exposure["spec"]["tag"], "web-1");
    assert_eq!(exposure["spec"]["ingress"]["tlsSecret"], "web-1-tls");
    let stop = env
        .call(
            "DELETE",
            "/api/services/web-1",
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(stop.status, StatusCode::OK);
    assert!(env
        .lp
        .sandbox
        .object("apps", "deployments", NAMESPACE, "web-1")
        .is_none());
    assert!(env
        .lp
        .sandbox
        .object("", "configmaps", NAMESPACE, "web-1-app")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_new_start_id_replaces_the_objects() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    let first = env
        .start_service("lab-2", "s1", "jupyterlab", "alice")
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    env.poll_until("lab-2", "running", 60).await;
    let uid1 = pods_of(&env)[0]["metadata"]["uid"].clone();
    let second = env
        .start_service("lab-2", "s2", "jupyterlab", "alice")
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(second.body["start_id"], "s2");
    let pods = pods_of(&env);
    assert_eq!(pods.len(), 1, "the old pod is gone");
    assert_ne!(pods[0]["metadata"]["uid"], uid1);
    assert_eq!(
        pods[0]["metadata"]["annotations"]["portico.dev/start-id"],
        "s2"
    );
    let running = env.poll_until("lab-2", "running", 60).await;
    assert_eq!(running["start_id"], "s2");
    assert_eq!(env.records().len(), 1);
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: <id>\nspec:\n  containers:\n    - name: c\n      image: <image>\n      ports: [{name: http, containerPort: 8080}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_errors_name_the_file_and_keyword_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "portal/ok/default/service.yaml",
        &POD.replace("<image>", "<user_options.image>"),
    );
    write(
        d,
        "portal/unknown/default/service.yaml",
        &POD.replace("<image>", "<no_such_keyword>"),
    );
    write(
        d,
        "portal/badyaml/default/service.yaml",
        &POD.replace("<image>", "<broken>"),
    );
    write(
        d,
        "portal/staged/default/service.yaml",
        &POD.replace("<image>", "<registry>/lab"),
    );
    // The second object is refused by Portico's webhook (it selects another user's pods):
    // the pod created before it must be rolled back.
    write(
        d,
        "portal/refused/default/service.yaml",
        &format!("{POD}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: <id>-steal\nspec:\n  selector:\n    jarvice-job-ipaddr: user1-foobar\n  ports: [{{port: 80}}]\n"),
    );
    let env = ApiEnv::start(d, |c| {
        c.api.clients[0]
            .replacements
            .insert("image".into(), "busybox".into());
        c.api.clients[0]
            .replacements
            .insert("broken".into(), "[unclosed".into());
        c.api.stage = "prod".into();
        c.api.stages.insert(
            "prod".into(),
            [("registry".to_string(), "registry.example.org".to_string())].into(),
        );
    })
    .await;
    let unknown = env.start_service("t-1", "s1", "unknown", "alice").await;
    assert_eq!(
        unknown.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        unknown.body
    );
    assert_eq!(unknown.body["error"], "template");
    assert_eq!(unknown.body["keyword"], "no_such_keyword");
    assert!(unknown.body["file"]
        .as_str()
        .unwrap()
        .ends_with("portal/unknown/default/service.yaml"));
    assert!(unknown.body["message"]
        .as_str()
        .unwrap()
        .contains("<no_such_keyword>"));

    let bad = env.start_service("t-2", "s1", "badyaml", "alice").await;
    assert_eq!(
        bad.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        bad.body
    );
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .contains("not valid YAML"),
        "{}",
        bad.body
    );
    assert!(bad.body["file"]
        .as_str()
        .unwrap()
        .ends_with("badyaml/default/service.yaml"));

    // A user option the template needs but the request lacks is the caller's error.
    let missing = env.start_service("t-3", "s1", "ok", "alice").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.body);
    assert_eq!(missing.body["keyword"], "user_options.image");
    // A user option that would add YAML structure is refused, not placed.
    let mut body = start_body("s1", "ok", "alice");
    body["user_options"]["image"] = json!("x\n  hostNetwork: true");
    let injected = env
        .call(
            "POST",
            "/api/services/",
            Auth::Bearer(PORTAL_TOKEN),
            &[("uuidcode", "t-4")],
            Some(&body),
        )
        .await;
    assert_eq!(
        injected.status,
        StatusCode::BAD_REQUEST,
        "{}",
        injected.body
    );

    let no_such = env
        .start_service("t-5", "s1", "nothing/here", "alice")
        .await;
    assert_eq!(no_such.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_such.body["error"], "unknown-service");
    let escape = env.start_service("t-6", "s1", "../other", "alice").await;
    assert_eq!(escape.status, StatusCode::BAD_REQUEST);

    let refused = env.start_service("t-7", "s1", "refused", "alice").await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    let msg = refused.body["message"].as_str().unwrap();
    assert!(
        msg.contains("Service/t-7-steal") && msg.contains("nothing of the start is left"),
        "{msg}"
    );
    assert!(
        env.lp
            .sandbox
            .object("", "pods", NAMESPACE, "t-7")
            .is_none(),
        "rolled back"
    );

    assert!(env.labelled("pods", "").is_empty());
    assert!(env.labelled("secrets", "").is_empty());
    assert!(env.records().is_empty());

    // The stage's table fills <registry>; user options work when sent.
    let staged = env.start_service("t-8", "s1", "staged", "alice").await;
    assert_eq!(staged.status, StatusCode::CREATED, "{}", staged.body);
    let pod = env.lp.sandbox.object("", "pods", NAMESPACE, "t-8").unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "registry.example.org/lab"
    );
    let mut body = start_body("s1", "ok", "alice");
    body["user_options"]["image"] = json!("busybox:1.36");
    let ok = env
        .call(
            "POST",
            "/api/services/",
            Auth::Bearer(PORTAL_TOKEN),
            &[("uuidcode", "t-9")],
            Some(&body),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    let pod = env.lp.sandbox.object("", "pods", NAMESPACE, "t-9").unwrap();
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox:1.36");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_before_the_body_is_read() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    let body = start_body("s1", "jupyterlab", "alice");
    for auth in [
        Auth::None,
        Auth::Bearer("nope"),
        Auth::Bearer(""),
        Auth::Basic(OTHER_USER, "wrong"),
        Auth::Basic("portal", PORTAL_TOKEN),
    ] {
        let r = env
            .call(
                "POST",
                "/api/services/",
                auth,
                &[("uuidcode", "x-1")],
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert!(r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("Bearer"));
    }
    // Bad credentials are answered from the head alone: 401 while the announced 4 MiB body
    // has not been sent at all.
    let huge = 4 * 1024 * 1024;
    assert_eq!(
        env.status_of_head("/api/services/", "authorization: Bearer nope\r\n", huge, 0)
            .await,
        401
    );
    // Good credentials: the body is read, up to the limit.
    let good = format!("authorization: Bearer {PORTAL_TOKEN}\r\n");
    assert_eq!(
        env.status_of_head("/api/services/", &good, huge, huge)
            .await,
        413
    );
    for path in ["/api/services/x-1/", "/api/logs/level"] {
        assert_eq!(
            env.call("GET", path, Auth::None, &[], None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(env.labelled("pods", "").is_empty());
    assert!(env.records().is_empty());
    // Basic credentials of the second client work.
    let r = env
        .call(
            "GET",
            "/api/services/x-1/",
            Auth::Basic(OTHER_USER, OTHER_PASSWORD),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_users_see_only_their_own_services() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |_| {}).await;
    assert_eq!(
        env.start_service("lab-3", "s1", "jupyterlab", "alice")
            .await
            .status,
        StatusCode::CREATED
    );
    env.poll_until("lab-3", "running", 60).await;
    let other = Auth::Basic(OTHER_USER, OTHER_PASSWORD);
    let r = env
        .call("GET", "/api/services/lab-3/", other, &[], None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = env
        .call(
            "DELETE",
            "/api/services/lab-3/",
            Auth::Basic(OTHER_USER, OTHER_PASSWORD),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The other client starting the same name cannot take over the first one's objects.
    let body = start_body("s9", "jupyterlab", "mallory");
    let r = env
        .call(
            "POST",
            "/api/services/",
            Auth::Basic(OTHER_USER, OTHER_PASSWORD),
            &[("uuidcode", "lab-3")],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // Another user of the same client: not theirs to poll, stop or restart.
    let bob = [("user-id", "bob")];
    assert_eq!(
        env.call(
            "GET",
            "/api/services/lab-3/",
            Auth::Bearer(PORTAL_TOKEN),
            &bob,
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.call(
            "DELETE",
            "/api/services/lab-3/",
            Auth::Bearer(PORTAL_TOKEN),
            &bob,
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let r = env.start_service("lab-3", "s2", "jupyterlab", "bob").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // Alice's service is untouched by all of that.
    let alice = [("user-id", "alice")];
    let r = env
        .call(
            "GET",
            "/api/services/lab-3/",
            Auth::Bearer(PORTAL_TOKEN),
            &alice,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["start_id"], "s1");
    assert_eq!(pods_of(&env).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pod_reports_events_and_log_lines() {
    let env = ApiEnv::start(&shipped_descriptions(), |c| {
        c.api.events = 3;
        c.api.log_lines = 2;
    })
    .await;
    assert_eq!(
        env.start_service("lab-4", "s1", "jupyterlab", "alice")
            .await
            .status,
        StatusCode::CREATED
    );
    env.poll_until("lab-4", "running", 60).await;
    let sb = &env.lp.sandbox;
    sb.append_pod_log(
        NAMESPACE,
        "lab-4",
        &["line one", "line two", "Traceback: kernel died"],
    );
    sb.fail_pod(
        NAMESPACE,
        "lab-4",
        "OOMKilled",
        "container lab used too much memory",
    )
    .await
    .unwrap();
    let failed = env.poll_until("lab-4", "failed", 30).await;
    assert!(
        failed["reason"].as_str().unwrap().contains("lab-4"),
        "{failed}"
    );
    let events = failed["events"].as_array().unwrap();
    assert!(!events.is_empty() && events.len() <= 3, "{failed}");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "OOMKilled" && e["object"] == "Pod/lab-4"),
        "{failed}"
    );
    let logs = failed["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{failed}");
    assert!(
        logs.iter()
            .any(|l| l.as_str().unwrap().contains("too much memory")),
        "{failed}"
    );
    assert!(
        logs[0].as_str().unwrap().starts_with("[lab-4/lab]"),
        "{failed}"
    );
    // Stopping a failed service removes it all the same.
    let stop = env
        .call(
            "DELETE",
            "/api/services/lab-4/",
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(stop.status, StatusCode::OK);
    assert!(pods_of(&env).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_changes_at_run_time_for_admin_clients_only() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    let r = env
        .call(
            "GET",
            "/api/logs/level",
            Auth::Bearer(PORTAL_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = env
        .call(
            "GET",
            "/api/logs/level",
            Auth::Bearer(ADMIN_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let before = r.body.clone();
    let change = json!({"level": "off", "targets": {"portico::service_api": "debug"}});
    let r = env
        .call(
            "PUT",
            "/api/logs/level",
            Auth::Bearer(ADMIN_TOKEN),
            &[],
            Some(&change),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["targets"]["portico::service_api"], "debug");
    assert!(tracing::enabled!(target: "portico::service_api::rest", tracing::Level::DEBUG));
    assert!(!tracing::enabled!(target: "portico::server", tracing::Level::ERROR));
    let r = env
        .call(
            "GET",
            "/api/logs/level",
            Auth::Bearer(ADMIN_TOKEN),
            &[],
            None,
        )
        .await;
    assert_eq!(r.body["level"], "off");
    let bad = json!({"level": "chatty"});
    let r = env
        .call(
            "PUT",
            "/api/logs/level",
            Auth::Bearer(ADMIN_TOKEN),
            &[],
            Some(&bad),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let restore = json!({"level": before["level"], "targets": before["targets"]});
    let r = env
        .call(
            "PUT",
            "/api/logs/level",
            Auth::Bearer(ADMIN_TOKEN),
            &[],
            Some(&restore),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !tracing::enabled!(target: "portico::service_api::rest", tracing::Level::DEBUG)
            || before["level"] != "off"
    );
}

/// A service name that cannot name a Service (it starts with a digit, as a bare UUID may) is
/// refused at once with why and what to send instead, never admitted to stay `starting`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_name_that_cannot_name_a_service_is_refused_saying_why() {
    let env = ApiEnv::start(&shipped_descriptions(), |_| {}).await;
    for id in ["9b1de3c2", "1lab"] {
        let r = env.start_service(id, "s1", "jupyterlab", "alice").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id}: {}", r.body);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("starts with a letter") && message.contains(&format!("lab-{id}")),
            "{id}: {}",
            r.body
        );
        // Unknown to GET and DELETE alike.
        let polled = env
            .call(
                "GET",
                &format!("/api/services/{id}/"),
                Auth::Bearer(PORTAL_TOKEN),
                &[],
                None,
            )
            .await;
        assert_eq!(polled.status, StatusCode::NOT_FOUND, "{}", polled.body);
    }
    let ok = env
        .start_service("lab-9b1de3c2", "s1", "jupyterlab", "alice")
        .await;
    assert!(ok.status.is_success(), "{}", ok.body);
}
