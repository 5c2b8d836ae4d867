//! The paths Portico's ownership rules police, as a kube-apiserver serves them: `pods/status`
//! changing metadata, DELETE and deletecollection admission, namespace deletion as the namespace
//! controller, ReplicationControllers and their controller, a CronJob run as the cronjob
//! controller, and Endpoints / EndpointSlices / Ingresses through admission.

mod common;
use common::*;
use portico_sandbox::RunningSandbox;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A webhook configuration with one webhook, `rules` as given, calling `hook` by URL.
fn config(kind: &str, name: &str, hook: &Webhook, rules: Value) -> Value {
    let w = json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Fail", "timeoutSeconds": 5, "rules": rules,
        "clientConfig": {"url": format!("https://127.0.0.1:{}/hook", hook.addr.port()), "caBundle": hook.ca_bundle}});
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": [w]})
}

fn rule(ops: &[&str], group: &str, resources: &[&str]) -> Value {
    json!([{"operations": ops, "apiGroups": [group], "apiVersions": ["v1"], "resources": resources}])
}

async fn register(sb: &RunningSandbox, cfg: Value) {
    sb.apply_object("admin", cfg)
        .await
        .expect("webhook configuration stored");
}

fn requests(h: &Webhook) -> Vec<Value> {
    h.reviews
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["request"].clone())
        .collect()
}

async fn delete(sb: &RunningSandbox, ctx: &str, path: &str, body: Option<Value>) -> Resp {
    http(sb, ctx, "DELETE", path, "application/json", body).await
}

#[tokio::test]
async fn pod_status_takes_labels_and_is_admitted_as_the_status_subresource() {
    let pods_only = webhook(|_| json!({"allowed": true})).await;
    let status = webhook(|_| json!({"allowed": true})).await;
    let mutating = webhook(|_| json!({"allowed": true})).await;
    let sb = start_with(|o| o.controllers = false).await;
    let all = &["CREATE", "UPDATE", "DELETE"];
    register(
        &sb,
        config(
            "ValidatingWebhookConfiguration",
            "pods-only.test",
            &pods_only,
            rule(all, "", &["pods"]),
        ),
    )
    .await;
    register(
        &sb,
        config(
            "ValidatingWebhookConfiguration",
            "pods-status.test",
            &status,
            rule(all, "", &["pods/status"]),
        ),
    )
    .await;
    register(
        &sb,
        config(
            "MutatingWebhookConfiguration",
            "pods-status-mutating.test",
            &mutating,
            rule(&["UPDATE"], "", &["pods/status"]),
        ),
    )
    .await;
    let ns = sb.create_namespace("podstatus").await.unwrap();
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let mut p = pod("p", json!({"app": "web"}));
    p["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "owner-uid"}]);
    let r = post(&sb, "user1", &pods, p).await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert_eq!(requests(&pods_only).len(), 1);
    assert!(requests(&status).is_empty());

    // A merge patch of pods/status by another user: labels and annotations are taken, the
    // spec change and the ownerReferences change are dropped, status is taken.
    let r = patch(
        &sb,
        "user2",
        &format!("{pods}/p/status"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "stolen", "extra": "x"}, "annotations": {"a": "b"},
                "ownerReferences": null},
            "spec": {"containers": [{"name": "c", "image": "evil:1"}]},
            "status": {"phase": "Running"}}),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.text);
    let stored = sb.object("", "pods", &ns, "p").unwrap();
    assert_eq!(
        stored["metadata"]["labels"],
        json!({"app": "stolen", "extra": "x"})
    );
    assert_eq!(stored["metadata"]["annotations"], json!({"a": "b"}));
    assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], "owner-uid");
    assert_eq!(stored["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(stored["status"]["phase"], "Running");
    assert_eq!(stored["status"]["qosClass"], "BestEffort", "backfilled");

    // Only the webhooks that list pods/status were called, with the status attributes.
    assert_eq!(requests(&pods_only).len(), 1);
    let reqs = requests(&status);
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req["operation"], "UPDATE");
    assert_eq!(req["subResource"], "status");
    assert_eq!(req["requestSubResource"], "status");
    assert_eq!(
        req["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(req["name"], "p");
    assert_eq!(req["userInfo"]["username"], "user2");
    assert_eq!(req["options"]["kind"], "UpdateOptions");
    assert_eq!(
        req["oldObject"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(req["object"]["metadata"]["labels"]["app"], "stolen");
    // Validating webhooks see the object as it will be stored (spec reset).
    assert_eq!(
        req["object"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    let m = requests(&mutating);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["subResource"], "status");
    assert!(m[0]["oldObject"].is_object());

    // PUT of pods/status takes labels too.
    let mut cur = sb.object("", "pods", &ns, "p").unwrap();
    cur["metadata"]["labels"] = json!({"app": "put"});
    let r = http(
        &sb,
        "user2",
        "PUT",
        &format!("{pods}/p/status"),
        "application/json",
        Some(cur),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(
        sb.object("", "pods", &ns, "p").unwrap()["metadata"]["labels"],
        json!({"app": "put"})
    );
    assert_eq!(requests(&status).len(), 2);
    assert_eq!(requests(&pods_only).len(), 1);

    // Label values are validated on pods/status as on the pod.
    let r = patch(
        &sb,
        "user2",
        &format!("{pods}/p/status"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "-bad"}}}),
    )
    .await;
    assert_eq!(r.code, 422, "{}", r.text);
    sb.shutdown().await;
}

#[tokio::test]
async fn delete_admission_carries_the_old_object_and_denials_keep_it() {
    let hook = webhook(|req| {
        if req["userInfo"]["username"] == "user2" {
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "not yours"}})
        } else {
            json!({"allowed": true})
        }
    })
    .await;
    let sb = start_with(|o| o.controllers = false).await;
    register(
        &sb,
        config(
            "ValidatingWebhookConfiguration",
            "deletes.test",
            &hook,
            rule(&["DELETE"], "", &["configmaps"]),
        ),
    )
    .await;
    let ns = sb.create_namespace("del").await.unwrap();
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    for n in ["a", "b", "c"] {
        let r = post(
            &sb,
            "user1",
            &cms,
            json!({"metadata": {"name": n, "labels": {"set": "one"}}, "data": {"k": n}}),
        )
        .await;
        assert_eq!(r.code, 201);
    }
    assert!(requests(&hook).is_empty(), "CREATE is not registered");

    // Denied: 403 with the webhook's message, the object stays.
    let r = delete(&sb, "user2", &format!("{cms}/a"), None).await;
    assert_eq!(r.code, 403, "{}", r.text);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["reason"], "Forbidden");
    assert_eq!(
        r.body["message"],
        "admission webhook \"deletes.test\" denied the request: not yours"
    );
    assert!(sb.object("", "configmaps", &ns, "a").is_some());
    let reqs = requests(&hook);
    let req = &reqs[0];
    assert_eq!(req["operation"], "DELETE");
    assert_eq!(req["name"], "a");
    assert_eq!(req["namespace"], ns.as_str());
    assert!(req["object"].is_null());
    assert_eq!(req["oldObject"]["metadata"]["name"], "a");
    assert_eq!(req["oldObject"]["data"]["k"], "a");
    assert_eq!(req["oldObject"]["kind"], "ConfigMap");
    assert_eq!(req["options"]["kind"], "DeleteOptions");
    assert_eq!(req["options"]["apiVersion"], "meta.k8s.io/v1");

    // Allowed, with DeleteOptions from the body and the query.
    let r = delete(
        &sb,
        "user1",
        &format!("{cms}/a?propagationPolicy=Foreground"),
        Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.text);
    assert!(sb.object("", "configmaps", &ns, "a").is_none());
    let reqs = requests(&hook);
    let req = reqs.last().unwrap();
    assert_eq!(req["options"]["propagationPolicy"], "Foreground");
    assert_eq!(req["options"]["gracePeriodSeconds"], 0);
    assert_eq!(req["options"]["kind"], "DeleteOptions");

    // deletecollection: each item is admitted as a DELETE with its oldObject and no name; a
    // denial stops it with the webhook's 403 and leaves the objects.
    let before = requests(&hook).len();
    let r = delete(
        &sb,
        "user2",
        &format!("{cms}?labelSelector=set%3Done"),
        None,
    )
    .await;
    assert_eq!(r.code, 403, "{}", r.text);
    assert_eq!(sb.objects("", "configmaps", Some(&ns)).len(), 2);
    let r = delete(
        &sb,
        "user1",
        &format!("{cms}?labelSelector=set%3Done&propagationPolicy=Background"),
        None,
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.text);
    assert!(sb.objects("", "configmaps", Some(&ns)).is_empty());
    let reqs = requests(&hook);
    let items: Vec<&Value> = reqs[before..]
        .iter()
        .filter(|r| r["userInfo"]["username"] == "user1")
        .collect();
    assert_eq!(items.len(), 2);
    let mut names: Vec<&str> = items
        .iter()
        .map(|r| r["oldObject"]["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);
    for r in items {
        assert_eq!(r["operation"], "DELETE");
        assert!(r.get("name").is_none(), "{r}");
        assert!(r["object"].is_null());
        assert_eq!(r["options"]["propagationPolicy"], "Background");
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn namespace_contents_are_deleted_as_the_namespace_controller() {
    let allow_kept = Arc::new(AtomicBool::new(false));
    let flag = allow_kept.clone();
    let hook = webhook(move |req| {
        let kept = req["oldObject"]["metadata"]["labels"]["keep"] == "yes";
        if kept && !flag.load(Ordering::SeqCst) {
            json!({"allowed": false, "status": {"code": 403, "message": "kept"}})
        } else {
            json!({"allowed": true})
        }
    })
    .await;
    let sb = start().await;
    register(
        &sb,
        config(
            "ValidatingWebhookConfiguration",
            "ns-contents.test",
            &hook,
            rule(&["DELETE"], "", &["configmaps"]),
        ),
    )
    .await;
    let ns = sb.create_namespace("nsdel").await.unwrap();
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    post(&sb, "user1", &cms, json!({"metadata": {"name": "plain"}})).await;
    post(
        &sb,
        "user1",
        &cms,
        json!({"metadata": {"name": "kept", "labels": {"keep": "yes"}}}),
    )
    .await;
    let r = delete(&sb, "admin", &format!("/api/v1/namespaces/{ns}"), None).await;
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(r.body["status"]["phase"], "Terminating");
    // The refused object keeps the namespace Terminating; the other one went.
    let n = sb.object("", "namespaces", "", &ns).expect("still there");
    assert!(n["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(n["status"]["phase"], "Terminating");
    assert!(sb.object("", "configmaps", &ns, "plain").is_none());
    assert!(sb.object("", "configmaps", &ns, "kept").is_some());
    for req in requests(&hook) {
        assert_eq!(
            req["userInfo"]["username"],
            "system:serviceaccount:kube-system:namespace-controller"
        );
        assert_eq!(req["operation"], "DELETE");
        assert!(req["oldObject"].is_object());
        assert_eq!(req["options"]["propagationPolicy"], "Background");
    }
    // New content is refused while it terminates (NamespaceLifecycle).
    let r = post(&sb, "user1", &cms, json!({"metadata": {"name": "late"}})).await;
    assert_eq!(r.code, 403, "{}", r.text);
    assert_eq!(
        r.body["message"],
        format!("configmaps \"late\" is forbidden: unable to create new content in namespace {ns} because it is being terminated")
    );
    // Once the webhook allows it, the controllers finish the deletion.
    allow_kept.store(true, Ordering::SeqCst);
    let h = sb.handle();
    let nsc = ns.clone();
    wait_for(WAIT, || {
        h.object("", "namespaces", "", &nsc).is_none().then_some(())
    })
    .await;
    assert!(sb.object("", "configmaps", &ns, "kept").is_none());
    sb.shutdown().await;
}

fn rc(name: &str, replicas: i64, template_labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
        "spec": {"replicas": replicas,
            "template": {"metadata": {"labels": template_labels, "annotations": {"t": "a"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
}

#[tokio::test]
async fn replication_controllers_are_served_validated_and_run() {
    let hook = webhook(|req| {
        let who = req["userInfo"]["username"]
            .as_str()
            .unwrap_or("")
            .replace(':', ".");
        let patch = if req["object"]["metadata"]["annotations"].is_object() {
            json!([{"op": "add", "path": "/metadata/annotations/seen-by", "value": who}])
        } else {
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"seen-by": who}}])
        };
        json!({"allowed": true, "patchType": "JSONPatch", "patch": b64(&patch)})
    })
    .await;
    let sb = start().await;
    register(
        &sb,
        config(
            "MutatingWebhookConfiguration",
            "rc-pods.test",
            &hook,
            rule(&["CREATE"], "", &["pods", "replicationcontrollers"]),
        ),
    )
    .await;
    let ns = sb.create_namespace("rc").await.unwrap();
    let rcs = format!("/api/v1/namespaces/{ns}/replicationcontrollers");

    // Discovery: the resource, its short name and status subresource.
    let r = get(&sb, "/api/v1").await;
    let res = r.body["resources"].as_array().unwrap();
    let rc_res = res
        .iter()
        .find(|x| x["name"] == "replicationcontrollers")
        .expect("served");
    assert_eq!(rc_res["kind"], "ReplicationController");
    assert_eq!(rc_res["namespaced"], true);
    assert_eq!(rc_res["shortNames"], json!(["rc"]));
    assert!(res
        .iter()
        .any(|x| x["name"] == "replicationcontrollers/status"));

    // The selector must match the template's labels.
    let mut bad = rc("bad", 1, json!({"app": "web"}));
    bad["spec"]["selector"] = json!({"app": "other"});
    let r = post(&sb, "user1", &rcs, bad).await;
    assert_eq!(r.code, 422, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"),
        "{}",
        r.text
    );
    let r = post(&sb, "user1", &rcs, rc("nolabels", 1, json!({}))).await;
    assert_eq!(r.code, 422, "{}", r.text);
    assert!(
        r.text.contains("spec.selector: Required value"),
        "{}",
        r.text
    );

    // Defaulting: selector and object labels from the template.
    let r = post(&sb, "user1", &rcs, rc("web", 2, json!({"app": "web"}))).await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert_eq!(r.body["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(r.body["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(r.body["status"], json!({"replicas": 0}));
    assert_eq!(
        r.body["metadata"]["annotations"]["seen-by"], "user1",
        "RC CREATE admitted"
    );
    let uid = r.body["metadata"]["uid"].as_str().unwrap().to_string();

    let h = sb.handle();
    let nsc = ns.clone();
    let pods = wait_for(WAIT, || {
        let p = h.objects("", "pods", Some(&nsc));
        (p.len() == 2).then_some(p)
    })
    .await;
    for p in &pods {
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(p["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(p["metadata"]["annotations"]["t"], "a");
        assert_eq!(
            p["metadata"]["annotations"]["seen-by"],
            "system.serviceaccount.kube-system.replication-controller"
        );
        let o = &p["metadata"]["ownerReferences"][0];
        assert_eq!(o["apiVersion"], "v1");
        assert_eq!(o["kind"], "ReplicationController");
        assert_eq!(o["name"], "web");
        assert_eq!(o["uid"], uid.as_str());
        assert_eq!(o["controller"], true);
    }
    // Status written through replicationcontrollers/status.
    wait_for(WAIT, || {
        let rc = h.object("", "replicationcontrollers", &nsc, "web")?;
        (rc["status"]["readyReplicas"] == 2).then_some(())
    })
    .await;
    // Scale down: the controller deletes one.
    let r = patch(
        &sb,
        "user1",
        &format!("{rcs}/web"),
        "application/merge-patch+json",
        json!({"spec": {"replicas": 1}}),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.text);
    wait_for(WAIT, || {
        (h.objects("", "pods", Some(&nsc)).len() == 1).then_some(())
    })
    .await;
    // Deleting the RC: the garbage collector removes its pod.
    let r = delete(&sb, "user1", &format!("{rcs}/web"), None).await;
    assert_eq!(r.code, 200, "{}", r.text);
    wait_for(WAIT, || {
        h.objects("", "pods", Some(&nsc)).is_empty().then_some(())
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn a_cronjob_run_creates_its_job_as_the_cronjob_controller() {
    let hook = webhook(|_| json!({"allowed": true})).await;
    let sb = start().await;
    register(
        &sb,
        config(
            "ValidatingWebhookConfiguration",
            "jobs.test",
            &hook,
            json!([{"operations": ["CREATE"], "apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs"]},
                {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]),
        ),
    )
    .await;
    let ns = sb.create_namespace("cron").await.unwrap();
    let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "labels": {"on-cronjob": "only"}},
        "spec": {"schedule": "0 3 * * *",
            "jobTemplate": {
                "metadata": {"labels": {"route": "user1-x"}, "annotations": {"note": "copied"}},
                "spec": {"backoffLimit": 2, "template": {
                    "metadata": {"labels": {"pod": "label"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    let r = post(
        &sb,
        "user1",
        &format!("/apis/batch/v1/namespaces/{ns}/cronjobs"),
        cj,
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    let cj_uid = r.body["metadata"]["uid"].as_str().unwrap().to_string();

    // The library function.
    let job = sb
        .run_cronjob_at(&ns, "nightly", 1_700_000_000)
        .await
        .unwrap();
    assert_eq!(job["metadata"]["name"], "nightly-28333333");
    assert_eq!(job["metadata"]["labels"], json!({"route": "user1-x"}));
    assert_eq!(job["metadata"]["annotations"]["note"], "copied");
    assert_eq!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        "2023-11-14T22:13:20Z"
    );
    let o = &job["metadata"]["ownerReferences"][0];
    assert_eq!(o["kind"], "CronJob");
    assert_eq!(o["apiVersion"], "batch/v1");
    assert_eq!(o["uid"], cj_uid.as_str());
    assert_eq!(o["controller"], true);
    assert_eq!(job["spec"]["backoffLimit"], 2);
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["pod"],
        "label"
    );
    let reqs = requests(&hook);
    let job_req = reqs
        .iter()
        .find(|r| r["resource"]["resource"] == "jobs")
        .expect("the Job was admitted");
    assert_eq!(
        job_req["userInfo"]["username"],
        "system:serviceaccount:kube-system:cronjob-controller"
    );
    assert_eq!(job_req["operation"], "CREATE");

    // The control endpoint; the Job controller then makes pods as usual.
    let r = http(
        &sb,
        "admin",
        "POST",
        &format!("/sandbox/cronjobs/{ns}/nightly/run?scheduledTime=1700000060"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    assert_eq!(r.body["metadata"]["name"], "nightly-28333334");
    // The same minute again collides, as the controller's names intend.
    assert!(sb
        .run_cronjob_at(&ns, "nightly", 1_700_000_061)
        .await
        .is_err());
    let h = sb.handle();
    let nsc = ns.clone();
    let pods = wait_for(WAIT, || {
        let p = h.objects("", "pods", Some(&nsc));
        (p.len() == 2).then_some(p)
    })
    .await;
    for p in &pods {
        assert_eq!(p["metadata"]["labels"]["pod"], "label");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
    }
    let pod_users: Vec<Value> = requests(&hook)
        .iter()
        .filter(|r| r["resource"]["resource"] == "pods")
        .map(|r| r["userInfo"]["username"].clone())
        .collect();
    assert!(pod_users
        .iter()
        .all(|u| u == "system:serviceaccount:kube-system:job-controller"));
    let cj = sb.object("batch", "cronjobs", &ns, "nightly").unwrap();
    assert_eq!(cj["status"]["active"].as_array().unwrap().len(), 2);
    assert_eq!(cj["status"]["lastScheduleTime"], "2023-11-14T22:14:20Z");
    assert!(sb.run_cronjob(&ns, "absent").await.is_err());
    sb.shutdown().await;
}

#[tokio::test]
async fn endpoints_slices_and_ingresses_go_through_admission() {
    let hook = webhook(|_| json!({"allowed": true})).await;
    let sb = start_with(|o| o.controllers = false).await;
    let ops = json!(["CREATE", "UPDATE", "DELETE"]);
    let rules = json!([
        {"operations": ops, "apiGroups": [""], "apiVersions": ["v1"], "resources": ["endpoints"]},
        {"operations": ops, "apiGroups": ["discovery.k8s.io"], "apiVersions": ["v1"], "resources": ["endpointslices"]},
        {"operations": ops, "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"], "resources": ["ingresses"]}]);
    register(
        &sb,
        config(
            "ValidatingWebhookConfiguration",
            "routing.test",
            &hook,
            rules,
        ),
    )
    .await;
    let ns = sb.create_namespace("routing").await.unwrap();
    let cases = [
        (
            format!("/api/v1/namespaces/{ns}/endpoints"),
            json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
            "endpoints",
            "",
        ),
        (
            format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"),
            json!({"metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}),
            "endpointslices",
            "discovery.k8s.io",
        ),
        (
            format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"),
            json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "a.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
            "ingresses",
            "networking.k8s.io",
        ),
    ];
    for (path, body, resource, group) in cases {
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        let r = post(&sb, "user1", &path, body).await;
        assert_eq!(r.code, 201, "{}", r.text);
        let r = patch(
            &sb,
            "user2",
            &format!("{path}/{name}"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"taken": "yes"}}}),
        )
        .await;
        assert_eq!(r.code, 200, "{}", r.text);
        let r = delete(&sb, "user2", &format!("{path}/{name}"), None).await;
        assert_eq!(r.code, 200, "{}", r.text);
        let mine: Vec<Value> = requests(&hook)
            .into_iter()
            .filter(|r| r["resource"]["resource"] == resource)
            .collect();
        let ops: Vec<&str> = mine
            .iter()
            .map(|r| r["operation"].as_str().unwrap())
            .collect();
        assert_eq!(ops, ["CREATE", "UPDATE", "DELETE"], "{resource}");
        assert_eq!(mine[0]["resource"]["group"], group);
        assert_eq!(mine[1]["oldObject"]["metadata"]["name"], name.as_str());
        assert_eq!(mine[1]["object"]["metadata"]["labels"]["taken"], "yes");
        assert!(mine[2]["object"].is_null());
        assert_eq!(mine[2]["oldObject"]["metadata"]["labels"]["taken"], "yes");
    }
    sb.shutdown().await;
}
