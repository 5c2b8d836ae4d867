//! The `k8smgr` wire against the sandbox, point by point, and as an attacker would try it: the
//! paths with and without their slash (never a redirect), `Token` and `Basic` credentials, the
//! injective `uuidcode` mapping and percent-escaped paths, what a start's body may carry and
//! where it must not go, a poll that never says `false` for a hiccup, and the 25 s answer.

mod harness;
mod service_api_support;

use http::StatusCode;
use portico_sandbox::Faults;
use serde_json::{json, Value};
use service_api_support::*;

fn hub() -> Auth<'static> {
    Auth::Raw("Token hub-token-0123456789abcdef")
}

fn body(start_id: &str, user: &str) -> Value {
    json!({"user_options": {"service": "JupyterLab/JupyterLab", "name": "My lab", "system": "HDF-Cloud"},
        "env": {"JUPYTERHUB_USER": user, "JUPYTERHUB_USER_ID": 42, "JUPYTERHUB_API_TOKEN": "t",
                "JUPYTERHUB_STATUS_URL": "users/progress/status/x/y"},
        "certs": {}, "start_id": start_id})
}

async fn start(env: &ApiEnv, name: &str, start_id: &str) -> Reply {
    post(env, name, &body(start_id, "alice")).await
}

/// A POST of `b` by the hub, for the service `name`.
async fn post(env: &ApiEnv, name: &str, b: &Value) -> Reply {
    env.call(
        "POST",
        "/api/services/",
        hub(),
        &[("uuidcode", name)],
        Some(b),
    )
    .await
}

/// A GET or DELETE of `path` by the hub.
async fn by_hub(env: &ApiEnv, verb: &str, path: &str) -> Reply {
    env.call(verb, path, hub(), &[], None).await
}

fn names_of(env: &ApiEnv, resource: &str) -> Vec<String> {
    env.labelled(resource, "")
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_or_without_the_slash_and_never_a_redirect() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    // A POST without the slash starts the service (a redirect would turn it into a GET).
    let r = env
        .call(
            "POST",
            "/api/services",
            hub(),
            &[("uuidcode", "noslash")],
            Some(&body("00000001", "alice")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.headers.get("location").is_none());
    assert_eq!(r.body["running"], true);
    assert_eq!(r.body["servername"], "noslash");
    for path in ["/api/services/noslash", "/api/services/noslash/"] {
        let r = env.call("GET", path, hub(), &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body["running"], true);
        assert_eq!(r.body["start_id"], "00000001");
    }
    // The keyword is case-insensitive; Bearer works too.
    for auth in [
        "token hub-token-0123456789abcdef",
        "TOKEN hub-token-0123456789abcdef",
        "Bearer hub-token-0123456789abcdef",
    ] {
        let r = env
            .call("GET", "/api/services/noslash/", Auth::Raw(auth), &[], None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{auth}");
    }
    // Refusals the spawner can show.
    let r = env
        .call(
            "GET",
            "/api/services/noslash/",
            Auth::Raw("Token nope"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body["detailed_error"].is_string(), "{}", r.body);
    let r = env
        .call("DELETE", "/api/services/noslash", hub(), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["running"], false);
    let r = by_hub(&env, "DELETE", "/api/services/noslash/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "Could not stop service");
    // Health: no credentials needed, nothing told.
    let r = env.call("GET", "/api/health/", Auth::None, &[], None).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, Value::Null));
    let r = env
        .call("POST", "/api/health/", Auth::None, &[], None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_name_is_mapped_injectively_and_no_mapping_reaches_another_service() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let odd = "My_Lab.1";
    let r = start(&env, odd, "00000001").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["servername"], odd);
    let encoded = portico::service_api::names::object_id(odd).unwrap();
    assert!(encoded.starts_with("x--"));
    let pods = names_of(&env, "pods");
    assert_eq!(pods, [format!("{encoded}-00000001")]);
    assert!(env
        .lp
        .sandbox
        .object(
            "portico.dev",
            "exposures",
            NAMESPACE,
            &format!("svc-{encoded}-00000001")
        )
        .is_some());
    // Addressed as sent, or percent-escaped.
    for path in ["/api/services/My_Lab.1/", "/api/services/My%5FLab%2E1/"] {
        let r = env.call("GET", path, hub(), &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body["servername"], odd);
    }
    // An attacker names a service after the other one's object name: it is a service of its
    // own (its name begins with the encoding's prefix, so it is encoded too), with objects of
    // its own; stopping it leaves the first alone.
    let r = start(&env, &encoded, "00000002").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let twice = portico::service_api::names::object_id(&encoded).unwrap();
    assert_ne!(twice, encoded);
    assert_eq!(names_of(&env, "pods").len(), 2);
    let r = by_hub(&env, "DELETE", &format!("/api/services/{encoded}/")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = by_hub(&env, "GET", "/api/services/My_Lab.1/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["running"], true);
    assert_eq!(names_of(&env, "pods"), [format!("{encoded}-00000001")]);

    // Names no path can address, escapes that decode to a slash, names too long to encode.
    let r = start(&env, "a/b", "00000003").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"].as_str().unwrap().contains("'/'"),
        "{}",
        r.body
    );
    assert!(r.body["detailed_error"]
        .as_str()
        .unwrap()
        .contains("&#x27;/&#x27;"));
    for path in [
        "/api/services/..%2F..%2Fportico-system/",
        "/api/services/My_Lab.1%2F/",
        "/api/services/%ZZ/",
    ] {
        let r = env.call("GET", path, hub(), &[], None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
    }
    let r = start(&env, &"Q".repeat(30), "00000004").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["detailed_error"]
        .as_str()
        .unwrap()
        .contains("23 bytes"));
    // A start_id that cannot be part of the lab's Service name.
    let r = start(&env, "lab-x", "ABC").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["code"], "start_id");
    // A Portico client keeps its strict rule.
    let r = env
        .call(
            "POST",
            "/api/services/",
            Auth::Bearer(PORTAL_TOKEN),
            &[("uuidcode", odd)],
            Some(&start_body("s1", "jupyterlab", "alice")),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "uuidcode");
    // No uuidcode: a name is made up and returned, as the manager does.
    let r = env
        .call(
            "POST",
            "/api/services/",
            hub(),
            &[],
            Some(&body("00000005", "alice")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let invented = r.body["servername"].as_str().unwrap().to_string();
    assert_eq!(invented.len(), 32);
    assert!(invented.chars().all(|c| c.is_ascii_hexdigit()));
    let r = by_hub(&env, "GET", &format!("/api/services/{invented}/")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_body_carries_goes_only_where_it_belongs() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let mut b = body("00000001", "alice");
    b["auth_state"] = json!({"access_token": "SMUGGLED-1"});
    b["user_options"]["extra"] = json!({"nested": "SMUGGLED-2"});
    b["certs"] = json!({"keyfile": "SMUGGLED-KEY", "certfile": "CERT", "cafile": "CA"});
    b["something_new"] = json!("SMUGGLED-3");
    let r = post(&env, "lab-1", &b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(!r.body.to_string().contains("SMUGGLED"), "{}", r.body);
    let cluster = serde_json::to_string(&(
        env.lp.sandbox.objects("", "secrets", Some(NAMESPACE)),
        env.lp.sandbox.objects("", "pods", Some(NAMESPACE)),
        env.lp
            .sandbox
            .objects("portico.dev", "exposures", Some(NAMESPACE)),
        env.records(),
    ))
    .unwrap();
    // api.ssl.enabled is off: the certificates are dropped too.
    for needle in ["SMUGGLED-1", "SMUGGLED-2", "SMUGGLED-3", "SMUGGLED-KEY"] {
        assert!(!cluster.contains(needle), "{needle} reached the cluster");
    }
    let poll = by_hub(&env, "GET", "/api/services/lab-1/").await;
    assert!(!poll.body.to_string().contains("SMUGGLED"), "{}", poll.body);

    // Env keys that are no variable names, env values that are no scalars: refused, nothing made.
    for (env_part, needle) in [
        (json!({"JUPYTERHUB_USER": "bob", "A=B": "1"}), "\"A=B\""),
        (
            json!({"JUPYTERHUB_USER": "bob", "A\nB": "1"}),
            "cannot name a variable",
        ),
        (
            json!({"JUPYTERHUB_USER": "bob", "NESTED": {"a": 1}}),
            "env.NESTED",
        ),
        (
            json!({"JUPYTERHUB_USER": {"name": "alice"}}),
            "env.JUPYTERHUB_USER",
        ),
    ] {
        let mut b = body("00000002", "bob");
        b["env"] = env_part;
        let r = post(&env, "lab-2", &b).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{needle}: {}", r.body);
        assert_eq!(r.body["error"], "Could not start service");
        assert!(
            r.body["detailed_error"]
                .as_str()
                .unwrap()
                .contains(&needle.replace('"', "&quot;")),
            "{needle}: {}",
            r.body
        );
    }
    // The user is a string field even when sent as a number: another tenant's user of that
    // number is still another tenant's.
    let mut b = body("00000003", "x");
    b["env"]["JUPYTERHUB_USER"] = json!(42);
    let r = post(&env, "lab-3", &b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["user_id"], "42");
    assert_eq!(names_of(&env, "pods").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_says_false_only_for_an_ended_lab_never_for_a_hiccup() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let r = start(&env, "lab-1", "00000001").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let pod = "lab-1-00000001";
    harness::eventually(30, "the lab runs", || async {
        let r = by_hub(&env, "GET", "/api/services/lab-1/").await;
        (r.body["status"] == "running").then_some(())
    })
    .await;
    // The cluster fails every read of the API's: an error status (the clients keep the lab),
    // never 200 with running false.
    let sb = &env.lp.sandbox;
    sb.set_faults(Faults {
        error_rate: [("*".to_string(), 1.0)].into(),
        only_users: vec!["portal".into()],
        ..Faults::default()
    });
    let r = by_hub(&env, "GET", "/api/services/lab-1/").await;
    sb.clear_faults();
    assert!(r.status.is_server_error(), "{} {}", r.status, r.body);
    assert!(r.body.get("running").is_none(), "{}", r.body);
    let r = by_hub(&env, "GET", "/api/services/lab-1/").await;
    assert_eq!(r.body["running"], true, "{}", r.body);
    // The lab's process ends: false, with details of why.
    sb.succeed_pod(NAMESPACE, pod).await.unwrap();
    harness::eventually(30, "running turns false", || async {
        let r = by_hub(&env, "GET", "/api/services/lab-1/").await;
        (r.body["running"] == false).then_some(r.body)
    })
    .await;
    let r = by_hub(&env, "GET", "/api/services/lab-1/").await;
    assert_eq!(r.body["details"]["error"], "Service has ended");
    assert!(r.body["details"]["detailed_error"].is_string());
    // A Portico client's reply has none of this wire's fields.
    let r = env
        .call(
            "POST",
            "/api/services/",
            Auth::Bearer(PORTAL_TOKEN),
            &[("uuidcode", "p-1")],
            Some(&start_body("s1", "jupyterlab", "alice")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body.get("running").is_none() && r.body.get("servername").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cluster_is_answered_within_the_clients_timeout() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    // Creating the lab's pod takes longer than the clients wait (30 s).
    env.lp.sandbox.set_faults(Faults {
        latency_ms: [("create".to_string(), 32_000)].into(),
        only_users: vec!["portal".into()],
        only_resources: vec!["pods".into()],
        ..Faults::default()
    });
    let r = start(&env, "slow-1", "00000001").await;
    env.lp.sandbox.clear_faults();
    // This wire's own bound answered (Portico's 60 s one would say otherwise, in its shape).
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.body);
    assert_eq!(r.body["error"], "Could not start service");
    assert!(r.body["detailed_error"].as_str().unwrap().contains("25 s"));
    // The start went on by itself and completed.
    harness::eventually(40, "the start completes on its own", || async {
        let r = by_hub(&env, "GET", "/api/services/slow-1/").await;
        (r.status == StatusCode::OK && r.body["running"] == true && r.body["status"] != "starting")
            .then_some(())
    })
    .await;
    let r = by_hub(&env, "DELETE", "/api/services/slow-1/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_in_the_managers_style_works_as_it_is() {
    let descriptions = descriptions_for_clients();
    let manager_style = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/k8smgr/descriptions/JupyterLab/Manager");
    let target = descriptions.path().join("jupyterhub/JupyterLab/Manager");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(
        manager_style.join("service.yaml"),
        target.join("service.yaml"),
    )
    .unwrap();
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let mut b = body("0000000a", "alice");
    b["user_options"]["service"] = json!("JupyterLab/Manager");
    let r = post(&env, "mgr-1", &b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let running = harness::eventually(30, "the lab runs", || async {
        let r = by_hub(&env, "GET", "/api/services/mgr-1/").await;
        (r.body["status"] == "running").then_some(r.body)
    })
    .await;
    assert_eq!(running["running"], true);
    let sb = &env.lp.sandbox;
    assert!(sb
        .object(
            "apps",
            "deployments",
            NAMESPACE,
            "deployment-main-mgr-1-0000000a"
        )
        .is_some());
    let svc = sb
        .object("", "services", NAMESPACE, "svc-mgr-1-0000000a")
        .expect("the hub's address");
    assert_eq!(svc["spec"]["selector"]["name"], "mgr-1-0000000a");
    assert!(env.labelled("exposures", "portico.dev").is_empty());
    let r = by_hub(&env, "DELETE", "/api/services/mgr-1/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(sb
        .object("", "services", NAMESPACE, "svc-mgr-1-0000000a")
        .is_none());
    assert!(sb
        .object(
            "apps",
            "deployments",
            NAMESPACE,
            "deployment-main-mgr-1-0000000a"
        )
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ssl_enabled_the_hubs_certificates_become_the_labs_secret() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |c| {
        with_hubs(c);
        c.api.ssl.enabled = true;
    })
    .await;
    let mut b = body("0000000c", "alice");
    b["certs"] = json!({"keyfile": "KEY-PEM", "certfile": "CERT-PEM", "cafile": "CA-PEM"});
    let r = post(&env, "tls-1", &b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let sb = &env.lp.sandbox;
    let secret = sb
        .object("", "secrets", NAMESPACE, "secret-certs-tls-1-0000000c")
        .expect("the certificates' Secret");
    let text = |k: &str| -> String {
        match secret["data"][k].as_str() {
            Some(b64) => String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap(),
            )
            .unwrap(),
            None => secret["stringData"][k].as_str().unwrap().to_string(),
        }
    };
    assert_eq!(text("JUPYTERHUB_SSL_KEYFILE_DATA"), "KEY-PEM");
    assert_eq!(text("JUPYTERHUB_SSL_CERTFILE_DATA"), "CERT-PEM");
    assert_eq!(text("JUPYTERHUB_SSL_CLIENT_CA_DATA"), "CA-PEM");
    // Not in the env Secret, and gone with the service.
    let env_secret = sb
        .object("", "secrets", NAMESPACE, "secret-tls-1-0000000c")
        .unwrap();
    assert!(!env_secret.to_string().contains("KEY-PEM"));
    let r = by_hub(&env, "DELETE", "/api/services/tls-1/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(sb
        .object("", "secrets", NAMESPACE, "secret-certs-tls-1-0000000c")
        .is_none());
    // A start without certificates makes no such Secret.
    let r = start(&env, "tls-2", "0000000d").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(sb
        .object("", "secrets", NAMESPACE, "secret-certs-tls-2-0000000d")
        .is_none());
}

/// The documented configuration that reproduces the manager's defaults is valid as written.
#[test]
fn the_documented_manager_defaults_are_a_valid_configuration() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/service-api.md"))
        .unwrap();
    let section = doc
        .split("### The manager's `config.json` defaults")
        .nth(1)
        .expect("the section");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("its configuration");
    let text = format!("identity:\n  trustedSubmitters:\n    users: [portico-api]\n{yaml}");
    let config = portico::config::Config::from_yaml(&text, "docs/service-api.md").unwrap();
    assert_eq!(config.problems(), Vec::<String>::new());
    let client = &config.api.clients[0];
    assert_eq!(client.wire, portico::service_api::config::Wire::K8smgr);
    assert_eq!(config.api.keywords.cert_secret_name, "secret_certs_name");
    assert_eq!(config.api.user_id_env, "JUPYTERHUB_USER_ID");
    assert_eq!((config.api.events, config.api.log_lines), (3, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_managers_template_knobs_and_the_main_container() {
    let descriptions = descriptions_for_clients();
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/k8smgr/descriptions/JupyterLab/Sidecar");
    let target = descriptions.path().join("jupyterhub/JupyterLab/Sidecar");
    std::fs::create_dir_all(target.join("files")).unwrap();
    std::fs::copy(from.join("lab.yaml"), target.join("lab.yaml")).unwrap();
    std::fs::copy(from.join("files/hello.txt"), target.join("files/hello.txt")).unwrap();
    let env = ApiEnv::start(descriptions.path(), |c| {
        with_hubs(c);
        c.api.yaml_filename = "lab.yaml".into();
        c.api.input_dir = "files".into();
        c.api.container_main_name = "main".into();
    })
    .await;
    let mut b = body("0000000e", "alice");
    b["user_options"]["service"] = json!("JupyterLab/Sidecar");
    let r = post(&env, "side-1", &b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let sb = &env.lp.sandbox;
    let pod = sb
        .object("", "pods", NAMESPACE, "side-1-0000000e")
        .expect("the lab's pod, from lab.yaml");
    // <input> is files/, packed.
    let packed = pod["spec"]["containers"][0]["env"][0]["value"]
        .as_str()
        .unwrap();
    let archive =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, packed).unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(archive.as_slice()),
        &mut tar,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&tar).contains("hello from files/"));
    harness::eventually(30, "the lab runs", || async {
        let r = by_hub(&env, "GET", "/api/services/side-1/").await;
        (r.body["status"] == "running").then_some(())
    })
    .await;
    // The sidecar crash-loops; the main container serves: the lab is still running.
    let mut status = sb.object("", "pods", NAMESPACE, "side-1-0000000e").unwrap()["status"].clone();
    status["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    status["containerStatuses"] = json!([
        {"name": "main", "image": "i", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}},
        {"name": "proxy", "image": "busybox", "imageID": "", "ready": false, "restartCount": 5,
         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}
    ]);
    let patched = sb
        .request(
            "admin",
            "PATCH",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/side-1-0000000e/status"),
            Some(json!({"status": status})),
        )
        .await;
    assert_eq!(patched.code, 200, "{}", patched.body);
    for _ in 0..3 {
        let r = by_hub(&env, "GET", "/api/services/side-1/").await;
        assert_eq!(r.body["running"], true, "{}", r.body);
        assert_eq!(r.body["status"], "running", "{}", r.body);
    }
    // Now the main container is the one that cannot run: not running, with details.
    status["containerStatuses"][0]["ready"] = json!(false);
    status["containerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "main exits"}});
    let patched = sb
        .request(
            "admin",
            "PATCH",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/side-1-0000000e/status"),
            Some(json!({"status": status})),
        )
        .await;
    assert_eq!(patched.code, 200, "{}", patched.body);
    let r = by_hub(&env, "GET", "/api/services/side-1/").await;
    assert_eq!(r.body["running"], false, "{}", r.body);
    assert!(r.body["details"]["detailed_error"]
        .as_str()
        .unwrap()
        .contains("container main"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_variable_and_a_tenants_table_for_the_stage() {
    let descriptions = descriptions_for_clients();
    std::env::set_var("PORTICO_TEST_K8SMGR_STAGE", "staging");
    let env = ApiEnv::start(descriptions.path(), |c| {
        with_hubs(c);
        c.api.stage_env = "PORTICO_TEST_K8SMGR_STAGE".into();
        c.api.stages.insert(
            "staging".into(),
            [("jupyterlab_image".to_string(), "stage/lab:1".to_string())].into(),
        );
        let hub = c
            .api
            .clients
            .iter_mut()
            .find(|c| c.name == "jupyterhub")
            .unwrap();
        hub.replacements.remove("jupyterlab_image");
        hub.stage_replacements.insert(
            "staging".into(),
            [(
                "jupyterlab_image".to_string(),
                "hub-staging/lab:2".to_string(),
            )]
            .into(),
        );
        let hub2 = c
            .api
            .clients
            .iter_mut()
            .find(|c| c.name == "jupyterhub2")
            .unwrap();
        hub2.replacements.remove("jupyterlab_image");
    })
    .await;
    let image = |pod: &str| {
        env.lp
            .sandbox
            .object("", "pods", NAMESPACE, pod)
            .unwrap_or_else(|| panic!("pod {pod}"))["spec"]["containers"][0]["image"]
            .clone()
    };
    // The tenant's table for the stage wins.
    let r = start(&env, "st-1", "00000011").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(image("st-1-00000011"), "hub-staging/lab:2");
    // Another tenant without one gets the stage's table.
    let r = env
        .call(
            "POST",
            "/api/services/",
            Auth::Raw("Token hub2-token-fedcba9876543210"),
            &[("uuidcode", "st-2")],
            Some(&body("00000012", "alice")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let other = env
        .lp
        .sandbox
        .object("", "pods", NAMESPACE, "st-2-00000012")
        .unwrap();
    assert_eq!(other["spec"]["containers"][0]["image"], "stage/lab:1");
}

fn copy_template(descriptions: &std::path::Path, option: &str) {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/k8smgr/descriptions/JupyterLab")
        .join(option);
    let target = descriptions.join("jupyterhub/JupyterLab").join(option);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(from.join("service.yaml"), target.join("service.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_home_survives_stops_and_is_nobody_elses() {
    let descriptions = descriptions_for_clients();
    copy_template(descriptions.path(), "Home");
    let skel = tempfile::tempdir().unwrap();
    std::fs::write(skel.path().join("welcome.txt"), "welcome to your home").unwrap();
    let skel_path = skel.path().display().to_string();
    let env = ApiEnv::start(descriptions.path(), |c| {
        with_hubs(c);
        c.api.user_homes.enabled = true;
        c.api.user_homes.size = "2Gi".into();
        c.api.user_homes.skel = skel_path;
    })
    .await;
    let sb = &env.lp.sandbox;
    let home_start = |name: &'static str, start_id: &'static str, user: &'static str| {
        let mut b = body(start_id, user);
        b["user_options"]["service"] = json!("JupyterLab/Home");
        let env = &env;
        async move { post(env, name, &b).await }
    };
    let claim_of = |pod: &str| {
        sb.object("", "pods", NAMESPACE, pod)
            .unwrap_or_else(|| panic!("pod {pod}"))["spec"]["volumes"][0]["persistentVolumeClaim"]
            ["claimName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r = home_start("home-1", "00000021", "alice").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let claim = claim_of("home-1-00000021");
    let pvc = sb
        .object("", "persistentvolumeclaims", NAMESPACE, &claim)
        .expect("the home claim");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "2Gi");
    // Seeded from the skeleton.
    let pod = sb.object("", "pods", NAMESPACE, "home-1-00000021").unwrap();
    let packed = pod["spec"]["initContainers"][0]["env"][0]["value"]
        .as_str()
        .unwrap();
    let archive =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, packed).unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(archive.as_slice()),
        &mut tar,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&tar).contains("welcome to your home"));
    // A stop keeps it; the next start mounts the same one.
    let r = by_hub(&env, "DELETE", "/api/services/home-1/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(sb
        .object("", "pods", NAMESPACE, "home-1-00000021")
        .is_none());
    let kept = sb
        .object("", "persistentvolumeclaims", NAMESPACE, &claim)
        .expect("the home survives the stop");
    assert_eq!(kept["metadata"]["uid"], pvc["metadata"]["uid"]);
    let r = home_start("home-1", "00000022", "alice").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(claim_of("home-1-00000022"), claim);
    // Another user gets another home.
    let r = home_start("home-2", "00000023", "bob").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_ne!(claim_of("home-2-00000023"), claim);
    // A claim of a home's name made by someone else is never mounted: the start is refused.
    let carol = portico::service_api::home::claim_name(&portico::service_api::home::home_key(
        "jupyterhub",
        "carol",
    ));
    let squatter = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": carol, "namespace": NAMESPACE, "labels": {"portico.dev/api-client": "jupyterhub"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    sb.apply_object("user1", squatter).await.unwrap();
    let r = home_start("home-3", "00000024", "carol").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["code"], "home");
    assert!(sb
        .object("", "pods", NAMESPACE, "home-3-00000024")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_mounting_a_home_is_refused_when_homes_are_off() {
    let descriptions = descriptions_for_clients();
    copy_template(descriptions.path(), "Home");
    let env = ApiEnv::start(descriptions.path(), with_hubs).await;
    let mut b = body("00000031", "alice");
    b["user_options"]["service"] = json!("JupyterLab/Home");
    let r = post(&env, "home-9", &b).await;
    assert!(!r.status.is_success(), "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("api.userHomes.enabled is off"),
        "{}",
        r.body
    );
    assert!(env.labelled("pods", "").is_empty());
    assert!(env
        .lp
        .sandbox
        .objects("", "persistentvolumeclaims", Some(NAMESPACE))
        .is_empty());
}
