//! The controllers the sandbox plays: Jobs (Indexed and not), StatefulSets, Deployments, the
//! kubelet stand-in (Running/Ready, fail/kill with Events and logs) and Job completion.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn job(name: &str, spec: Value) -> Value {
    let mut s = json!({"template": {"metadata": {"labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": s})
}

#[tokio::test]
async fn indexed_job_pods() {
    let sb = start().await;
    let ns = sb.create_namespace("job").await.unwrap();
    let r = post(
        &sb,
        "user1",
        &format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        job(
            "train",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    let uid = r.body["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        r.body["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str()
    );
    assert_eq!(
        r.body["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "train"
    );
    let h = sb.handle();
    let nsc = ns.clone();
    let pods = wait_for(Duration::from_secs(5), || {
        let p = h.objects("", "pods", Some(&nsc));
        (p.len() == 3 && p.iter().all(|p| p["status"]["phase"] == "Running")).then_some(p)
    })
    .await;
    let mut idx: Vec<String> = Vec::new();
    for p in &pods {
        let i = p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"],
            i.as_str()
        );
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with(&format!("train-{i}-"))
                && name.len() == format!("train-{i}-").len() + 5,
            "{name}"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["metadata"]["labels"]["app"], "train");
        assert!(p["status"]["podIP"]
            .as_str()
            .unwrap()
            .starts_with("10.244."));
        assert!(p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"));
        assert_eq!(p["spec"]["hostname"], format!("train-{i}"));
        idx.push(i);
    }
    idx.sort();
    assert_eq!(idx, ["0", "1", "2"]);
    // Pod creations are counted for the job controller, not for user1.
    let c = sb.counters();
    assert_eq!(
        c.count(Some("user1"), Some("create"), Some("jobs.batch")),
        1
    );
    // Succeed all: the Job completes.
    for p in &pods {
        sb.succeed_pod(&ns, p["metadata"]["name"].as_str().unwrap())
            .await
            .unwrap();
    }
    let nsc = ns.clone();
    let j = wait_for(Duration::from_secs(5), || {
        h.object("batch", "jobs", &nsc, "train").filter(|j| {
            j["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Complete"))
        })
    })
    .await;
    assert_eq!(j["status"]["succeeded"], 3);
    assert_eq!(j["status"]["completedIndexes"], "0-2");
    // Deleting the Job garbage-collects its pods.
    http(
        &sb,
        "admin",
        "DELETE",
        &format!("/apis/batch/v1/namespaces/{ns}/jobs/train"),
        "application/json",
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.objects("", "pods", Some(&nsc)).is_empty().then_some(())
    })
    .await;
    // Job template is immutable.
    post(
        &sb,
        "user1",
        &format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        job("j2", json!({})),
    )
    .await;
    let r = patch(
        &sb,
        "admin",
        &format!("/apis/batch/v1/namespaces/{ns}/jobs/j2"),
        "application/merge-patch+json",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "other"}]}}}}),
    )
    .await;
    assert_eq!(r.code, 422);
    sb.shutdown().await;
}

#[tokio::test]
async fn plain_job_parallelism_and_failures() {
    let sb = start_with(|o| o.pod_succeed_after = Some(Duration::from_millis(300))).await;
    let ns = sb.create_namespace("pj").await.unwrap();
    post(
        &sb,
        "user1",
        &format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        job("w", json!({"parallelism": 2, "completions": 4})),
    )
    .await;
    let h = sb.handle();
    let nsc = ns.clone();
    let j = wait_for(Duration::from_secs(10), || {
        h.object("batch", "jobs", &nsc, "w")
            .filter(|j| j["status"]["succeeded"] == 4)
    })
    .await;
    assert!(j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Complete"));
    let pods = sb.objects("", "pods", Some(&ns));
    assert_eq!(pods.len(), 4);
    for p in &pods {
        let n = p["metadata"]["name"].as_str().unwrap();
        assert!(n.starts_with("w-") && n.len() == 7, "{n}");
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn statefulset_ordinal_pods() {
    let sb = start().await;
    let ns = sb.create_namespace("sts").await.unwrap();
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    assert_eq!(
        post(
            &sb,
            "user1",
            &format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
            sts
        )
        .await
        .code,
        201
    );
    let h = sb.handle();
    let nsc = ns.clone();
    let pods = wait_for(Duration::from_secs(5), || {
        let p = h.objects("", "pods", Some(&nsc));
        (p.len() == 3 && p.iter().all(|p| p["status"]["phase"] == "Running")).then_some(p)
    })
    .await;
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(p["metadata"]["name"], format!("db-{i}"));
        assert_eq!(
            p["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            i.to_string()
        );
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            format!("db-{i}")
        );
        assert_eq!(p["spec"]["subdomain"], "db");
    }
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.object("apps", "statefulsets", &nsc, "db")
            .filter(|s| s["status"]["readyReplicas"] == 3)
    })
    .await;
    // Kill pod 1: Failed, Event, logs; the controller replaces it.
    sb.kill_pod(&ns, "db-1").await.unwrap();
    let events = sb.objects("", "events", Some(&ns));
    assert!(events
        .iter()
        .any(|e| e["reason"] == "Killing" && e["involvedObject"]["name"] == "db-1"));
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.object("", "pods", &nsc, "db-1").filter(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"][0]["ready"] == true
        })
    })
    .await;
    // Scale down.
    patch(
        &sb,
        "admin",
        &format!("/apis/apps/v1/namespaces/{ns}/statefulsets/db"),
        "application/merge-patch+json",
        json!({"spec": {"replicas": 1}}),
    )
    .await;
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        (h.objects("", "pods", Some(&nsc)).len() == 1).then_some(())
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn deployments_and_pod_logs() {
    let sb = start().await;
    let ns = sb.create_namespace("dep").await.unwrap();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    assert_eq!(
        post(
            &sb,
            "user1",
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            d
        )
        .await
        .code,
        201
    );
    let h = sb.handle();
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.object("apps", "deployments", &nsc, "web")
            .filter(|d| d["status"]["readyReplicas"] == 2)
    })
    .await;
    let rs = sb.objects("apps", "replicasets", Some(&ns));
    assert_eq!(rs.len(), 1);
    let pods = sb.objects("", "pods", Some(&ns));
    assert_eq!(pods.len(), 2);
    let pod_name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert!(pod_name.starts_with(rs[0]["metadata"]["name"].as_str().unwrap()));
    assert!(pods[0]["metadata"]["labels"]["pod-template-hash"].is_string());
    // Logs and events of a failed pod: a lone pod, because a ReplicaSet replaces (and so
    // deletes) a failed pod of its own at any moment, taking its log with it.
    let solo = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    assert_eq!(
        post(&sb, "user1", &format!("/api/v1/namespaces/{ns}/pods"), solo)
            .await
            .code,
        201
    );
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.object("", "pods", &nsc, "solo")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let pod_name = "solo".to_string();
    sb.fail_pod(&ns, &pod_name, "Error", "boom: out of cheese")
        .await
        .unwrap();
    let r = http(
        &sb,
        "admin",
        "GET",
        &format!("/api/v1/namespaces/{ns}/pods/{pod_name}/log"),
        "",
        None,
    )
    .await;
    assert_eq!(r.code, 200);
    assert!(r.text.contains("is simulated"), "{}", r.text);
    assert!(r.text.contains("boom: out of cheese"), "{}", r.text);
    let events = sb.objects("", "events", Some(&ns));
    assert!(events.iter().any(|e| e["reason"] == "Error"
        && e["type"] == "Warning"
        && e["message"] == "boom: out of cheese"));
    sb.shutdown().await;
}

/// Nothing runs in the sandbox: a pod of an image off the list stays Pending with ErrImagePull
/// (and an Event saying why), a listed one runs, and its "log" says it is simulated.
#[tokio::test]
async fn only_listed_images_are_pretended_to_run() {
    let sb = start_with(|o| o.images = vec!["busybox".into()]).await;
    let ns = sb.create_namespace("img").await.unwrap();
    let make = |name: &str, image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": image}]}})
    };
    for (name, image) in [("real", "busybox:1.36"), ("made-up", "portico:0.1.0")] {
        let r = post(
            &sb,
            "user1",
            &format!("/api/v1/namespaces/{ns}/pods"),
            make(name, image),
        )
        .await;
        assert_eq!(r.code, 201, "{}", r.text);
    }
    let h = sb.handle();
    let nsc = ns.clone();
    let failed = wait_for(Duration::from_secs(5), || {
        h.objects("", "pods", Some(&nsc))
            .into_iter()
            .find(|p| p["metadata"]["name"] == "made-up")
            .filter(|p| {
                p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
            })
    })
    .await;
    assert_eq!(failed["status"]["phase"], "Pending");
    let why = failed["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert!(
        why.contains("\"portico:0.1.0\"") && why.contains("--image"),
        "{why}"
    );
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.objects("", "events", Some(&nsc))
            .into_iter()
            .find(|e| e["reason"] == "Failed" && e["involvedObject"]["name"] == "made-up")
    })
    .await;
    let nsc = ns.clone();
    wait_for(Duration::from_secs(5), || {
        h.objects("", "pods", Some(&nsc))
            .into_iter()
            .find(|p| p["metadata"]["name"] == "real" && p["status"]["phase"] == "Running")
    })
    .await;
    let log = get(&sb, &format!("/api/v1/namespaces/{ns}/pods/real/log")).await;
    assert!(log.text.contains("is simulated"), "{}", log.text);
}
