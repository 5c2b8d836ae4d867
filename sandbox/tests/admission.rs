//! Dynamic admission over HTTPS with a tiny rcgen-certified webhook: the AdmissionReview sent,
//! JSONPatch and warnings, denials, failurePolicy, caBundle verification, service endpoints,
//! namespace/object selectors, reinvocation, dryRun, and controller-created pods.

mod common;
use common::*;
use portico_sandbox::RunningSandbox;
use serde_json::{json, Value};
use std::time::Duration;

fn hook_config(kind: &str, name: &str, client: Value, extra: Value) -> Value {
    let mut w = json!({"name": name, "clientConfig": client, "admissionReviewVersions": ["v1"],
        "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 3,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}});
    if let (Some(m), Some(e)) = (w.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": [w]})
}

async fn register(sb: &RunningSandbox, cfg: Value) {
    sb.apply_object("admin", cfg)
        .await
        .expect("webhook configuration stored");
}

fn url(h: &Webhook, path: &str) -> Value {
    json!({"url": format!("https://127.0.0.1:{}{path}", h.addr.port()), "caBundle": h.ca_bundle})
}

#[tokio::test]
async fn mutating_webhook_patches_and_warns() {
    let hook = webhook(|req| {
        let op = req["operation"].as_str().unwrap_or("");
        let labelled = req["object"]["metadata"]["labels"]["stamped"].is_string();
        if op == "CREATE" && !labelled {
            let patch = json!([{"op": "add", "path": "/metadata/labels/stamped", "value": req["userInfo"]["username"]}]);
            json!({"allowed": true, "patchType": "JSONPatch", "patch": b64(&patch), "warnings": ["labelled as you"]})
        } else {
            json!({"allowed": true})
        }
    })
    .await;
    let sb = start_with(|o| o.controllers = false).await;
    register(
        &sb,
        hook_config(
            "MutatingWebhookConfiguration",
            "stamp.test",
            url(&hook, "/mutate"),
            json!({"reinvocationPolicy": "IfNeeded"}),
        ),
    )
    .await;
    let ns = sb.create_namespace("mut").await.unwrap();
    let r = post(
        &sb,
        "user1",
        &format!("/api/v1/namespaces/{ns}/pods"),
        pod("p", json!({"app": "x"})),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert_eq!(r.body["metadata"]["labels"]["stamped"], "user1");
    let warning = r.headers.get("warning").unwrap().to_str().unwrap();
    assert_eq!(warning, "299 - \"labelled as you\"");
    let reviews = hook.reviews.lock().unwrap().clone();
    let req = &reviews[0]["request"];
    assert_eq!(reviews[0]["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(reviews[0]["kind"], "AdmissionReview");
    assert_eq!(
        req["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(
        req["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(req["requestKind"], req["kind"]);
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(req["namespace"], ns.as_str());
    assert_eq!(req["name"], "p");
    assert_eq!(req["userInfo"]["username"], "user1");
    assert!(req["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:authenticated")));
    assert_eq!(req["dryRun"], false);
    assert_eq!(req["options"]["kind"], "CreateOptions");
    assert!(req["oldObject"].is_null());
    assert!(!req["uid"].as_str().unwrap().is_empty());
    // UPDATE (a label patch) carries oldObject and UpdateOptions.
    let r = patch(
        &sb,
        "user2",
        &format!("/api/v1/namespaces/{ns}/pods/p"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    assert_eq!(r.code, 200);
    let reviews = hook.reviews.lock().unwrap().clone();
    let last = &reviews.last().unwrap()["request"];
    assert_eq!(last["operation"], "UPDATE");
    assert_eq!(last["userInfo"]["username"], "user2");
    assert_eq!(last["oldObject"]["metadata"]["labels"]["stamped"], "user1");
    assert_eq!(last["options"]["kind"], "UpdateOptions");
    // kube-system is excluded by the namespaceSelector.
    let before = hook.reviews.lock().unwrap().len();
    post(
        &sb,
        "admin",
        "/api/v1/namespaces/kube-system/pods",
        pod("sys", json!({})),
    )
    .await;
    assert_eq!(hook.reviews.lock().unwrap().len(), before);
    sb.shutdown().await;
}

#[tokio::test]
async fn validating_webhook_denies_with_its_message() {
    let hook = webhook(|req| {
        if req["userInfo"]["username"] == "user2" {
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "user2 may not relabel user1's pod"}})
        } else {
            json!({"allowed": true})
        }
    })
    .await;
    let sb = start_with(|o| o.controllers = false).await;
    register(
        &sb,
        hook_config(
            "ValidatingWebhookConfiguration",
            "guard.test",
            url(&hook, "/validate"),
            json!({}),
        ),
    )
    .await;
    let ns = sb.create_namespace("val").await.unwrap();
    assert_eq!(
        post(
            &sb,
            "user1",
            &format!("/api/v1/namespaces/{ns}/pods"),
            pod("p", json!({}))
        )
        .await
        .code,
        201
    );
    let r = patch(
        &sb,
        "user2",
        &format!("/api/v1/namespaces/{ns}/pods/p"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"jarvice-job-ipaddr": "user2-x"}}}),
    )
    .await;
    assert_eq!(r.code, 403);
    assert_eq!(
        r.body["message"],
        "admission webhook \"guard.test\" denied the request: user2 may not relabel user1's pod"
    );
    assert!(
        sb.object("", "pods", &ns, "p").unwrap()["metadata"]["labels"]
            .get("jarvice-job-ipaddr")
            .is_none()
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn failure_policy_and_ca_bundle() {
    let sb = start_with(|o| o.controllers = false).await;
    let ns = sb.create_namespace("fail").await.unwrap();
    // Nothing listens on this port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = webhook(|_| json!({"allowed": true})).await;
    let client =
        json!({"url": format!("https://127.0.0.1:{dead}/mutate"), "caBundle": hook.ca_bundle});
    register(
        &sb,
        hook_config(
            "MutatingWebhookConfiguration",
            "down.test",
            client.clone(),
            json!({}),
        ),
    )
    .await;
    let r = post(
        &sb,
        "user1",
        &format!("/api/v1/namespaces/{ns}/pods"),
        pod("p", json!({})),
    )
    .await;
    assert_eq!(r.code, 500);
    let msg = r.body["message"].as_str().unwrap();
    assert!(msg.starts_with("Internal error occurred: failed calling webhook \"down.test\": failed to call webhook: Post \"https://127.0.0.1:"), "{msg}");
    // Ignore lets it through.
    register(
        &sb,
        hook_config(
            "MutatingWebhookConfiguration",
            "down.test",
            client,
            json!({"failurePolicy": "Ignore"}),
        ),
    )
    .await;
    assert_eq!(
        post(
            &sb,
            "user1",
            &format!("/api/v1/namespaces/{ns}/pods"),
            pod("p", json!({}))
        )
        .await
        .code,
        201
    );
    // A caBundle that did not sign the webhook's certificate fails verification.
    let other = webhook(|_| json!({"allowed": true})).await;
    let wrong_ca = json!({"url": format!("https://127.0.0.1:{}/mutate", hook.addr.port()), "caBundle": other.ca_bundle});
    register(
        &sb,
        hook_config(
            "MutatingWebhookConfiguration",
            "down.test",
            wrong_ca,
            json!({}),
        ),
    )
    .await;
    let r = post(
        &sb,
        "user1",
        &format!("/api/v1/namespaces/{ns}/pods"),
        pod("q", json!({})),
    )
    .await;
    assert_eq!(r.code, 500, "{}", r.text);
    assert!(hook.reviews.lock().unwrap().is_empty());
    sb.shutdown().await;
}

#[tokio::test]
async fn service_references_object_selector_and_dry_run() {
    let hook = webhook(|_| json!({"allowed": true})).await;
    let sb = start_with(|o| o.controllers = false).await;
    sb.set_service_endpoint("hooks/hook", &hook.addr.to_string());
    let client = json!({"service": {"namespace": "hooks", "name": "hook", "path": "/mutate", "port": 443}, "caBundle": hook.ca_bundle});
    register(
        &sb,
        hook_config(
            "MutatingWebhookConfiguration",
            "svc.test",
            client,
            json!({"objectSelector": {"matchLabels": {"hooked": "yes"}}, "sideEffects": "Unknown"}),
        ),
    )
    .await;
    let ns = sb.create_namespace("svcref").await.unwrap();
    assert_eq!(
        post(
            &sb,
            "user1",
            &format!("/api/v1/namespaces/{ns}/pods"),
            pod("skip", json!({}))
        )
        .await
        .code,
        201
    );
    assert!(hook.reviews.lock().unwrap().is_empty());
    assert_eq!(
        post(
            &sb,
            "user1",
            &format!("/api/v1/namespaces/{ns}/pods"),
            pod("hit", json!({"hooked": "yes"}))
        )
        .await
        .code,
        201
    );
    assert_eq!(hook.reviews.lock().unwrap().len(), 1);
    // sideEffects Unknown + dryRun is refused.
    let r = post(
        &sb,
        "user1",
        &format!("/api/v1/namespaces/{ns}/pods?dryRun=All"),
        pod("dry", json!({"hooked": "yes"})),
    )
    .await;
    assert_eq!(r.code, 400);
    assert_eq!(
        r.body["message"],
        "admission webhook \"svc.test\" does not support dry run"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn reinvocation_runs_earlier_webhooks_again() {
    // "a-first" adds label a unless present; "b-second" adds label b. With IfNeeded, a-first is
    // called again after b-second changed the object.
    let first = webhook(|req| {
        if req["object"]["metadata"]["labels"]["a"].is_string() {
            json!({"allowed": true})
        } else {
            json!({"allowed": true, "patchType": "JSONPatch", "patch": b64(&json!([{"op": "add", "path": "/metadata/labels/a", "value": "1"}]))})
        }
    })
    .await;
    let second = webhook(|req| {
        if req["object"]["metadata"]["labels"]["b"].is_string() {
            json!({"allowed": true})
        } else {
            json!({"allowed": true, "patchType": "JSONPatch", "patch": b64(&json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}]))})
        }
    })
    .await;
    let sb = start_with(|o| o.controllers = false).await;
    register(
        &sb,
        hook_config(
            "MutatingWebhookConfiguration",
            "a-first",
            url(&first, "/m"),
            json!({"reinvocationPolicy": "IfNeeded"}),
        ),
    )
    .await;
    register(
        &sb,
        hook_config(
            "MutatingWebhookConfiguration",
            "b-second",
            url(&second, "/m"),
            json!({}),
        ),
    )
    .await;
    let ns = sb.create_namespace("reinv").await.unwrap();
    let r = post(
        &sb,
        "user1",
        &format!("/api/v1/namespaces/{ns}/pods"),
        pod("p", json!({"x": "y"})),
    )
    .await;
    assert_eq!(r.code, 201);
    assert_eq!(
        r.body["metadata"]["labels"],
        json!({"x": "y", "a": "1", "b": "2"})
    );
    assert_eq!(first.reviews.lock().unwrap().len(), 2);
    assert_eq!(second.reviews.lock().unwrap().len(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn job_pods_are_admitted_as_the_job_controller() {
    let hook = webhook(|req| {
        let patch = json!([{"op": "add", "path": "/metadata/labels/seen-by", "value": req["userInfo"]["username"].as_str().unwrap_or("").replace(':', ".")}]);
        json!({"allowed": true, "patchType": "JSONPatch", "patch": b64(&patch)})
    })
    .await;
    let sb = start().await;
    register(&sb, hook_config("MutatingWebhookConfiguration", "pods.test", url(&hook, "/m"), json!({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}))).await;
    let ns = sb.create_namespace("jobadm").await.unwrap();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed",
            "template": {"metadata": {"labels": {"app": "j"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    assert_eq!(
        post(
            &sb,
            "user1",
            &format!("/apis/batch/v1/namespaces/{ns}/jobs"),
            job
        )
        .await
        .code,
        201
    );
    let h = sb.handle();
    let nsc = ns.clone();
    let pods = wait_for(Duration::from_secs(5), || {
        let p = h.objects("", "pods", Some(&nsc));
        (p.len() == 2).then_some(p)
    })
    .await;
    for p in &pods {
        assert_eq!(
            p["metadata"]["labels"]["seen-by"],
            "system.serviceaccount.kube-system.job-controller"
        );
    }
    let reviews = hook.reviews.lock().unwrap().clone();
    assert!(
        reviews.iter().all(|r| r["request"]["name"].is_null()),
        "pods have only generateName at admission"
    );
    assert!(reviews
        .iter()
        .all(|r| r["request"]["object"]["metadata"]["generateName"]
            .as_str()
            .unwrap()
            .starts_with("j-")));
    sb.shutdown().await;
}
