//! `portico audit` against a running cluster (the sandbox, through an ordinary kubeconfig): what
//! Portico made passes; what was made around it is reported, with exit code 1.

mod harness;

use harness::{eventually, Loop};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use portico::api::Exposure;
use serde_json::{json, Value};

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

fn exposure(name: &str, tag: &str, node_port: i32) -> Exposure {
    from(
        json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"tag": tag, "target": "all", "service": {"type": "NodePort",
            "ports": [{"name": "http", "port": 80, "nodePort": node_port}]}}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_of_the_sandbox_reports_what_was_made_around_portico() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    let admin = l.client("admin").await;

    // Made through Portico: a labelled job and its Exposure, and a second Exposure that loses
    // the node port.
    let job: Job = from(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "lab", "namespace": "team", "annotations": {"portico.dev/ipaddr": "foobar"}},
        "spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}}));
    Api::<Job>::namespaced(user1.clone(), "team")
        .create(&PostParams::default(), &job)
        .await
        .expect("job");
    let exposures = Api::<Exposure>::namespaced(user1.clone(), "team");
    exposures
        .create(&PostParams::default(), &exposure("web", "foobar", 30090))
        .await
        .expect("exposure");
    eventually(20, "web's Service", || async {
        Api::<Service>::namespaced(user1.clone(), "team")
            .get_opt("web")
            .await
            .ok()
            .flatten()
    })
    .await;
    exposures
        .create(&PostParams::default(), &exposure("web2", "foobar", 30090))
        .await
        .expect("second exposure");
    eventually(20, "web2 in conflict", || async {
        let st = exposures.get("web2").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Conflict" && c.status == "True")
            .then_some(())
    })
    .await;
    let user1_ip = eventually(20, "two labelled pods with IPs", || async {
        let pods = Api::<Pod>::namespaced(user1.clone(), "team")
            .list(&ListParams::default().labels("jarvice-job-ipaddr=user1-foobar"))
            .await
            .ok()?;
        let ips: Vec<String> = pods
            .items
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        (ips.len() == 2).then(|| ips[0].clone())
    })
    .await;

    // Made around Portico: a pod labelled in a namespace the webhook does not see; a Service by
    // an administrator for user2 selecting user1's pods; a managed-looking Service with no owner.
    let sys_pods = Api::<Pod>::namespaced(admin.clone(), "portico-system");
    sys_pods
        .create(
            &PostParams::default(),
            &from(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "sneaky", "labels": {"jarvice-job-ipaddr": "user1-foobar"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}})),
        )
        .await
        .expect("pod outside the webhook's reach");
    let services = Api::<Service>::namespaced(admin.clone(), "team");
    services
        .create(
            &PostParams::default(),
            &from(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "borrowed", "annotations": {"portico.dev/user": "user2"}},
                "spec": {"selector": {"jarvice-job-ipaddr": "user1-foobar"}, "ports": [{"port": 80}]}})),
        )
        .await
        .expect("an administrator may");
    services
        .create(
            &PostParams::default(),
            &from(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "leftover", "labels": {"app.kubernetes.io/managed-by": "portico", "portico.dev/owner": "user1"}},
                "spec": {"selector": {"jarvice-job-ipaddr": "user1-foobar", "portico.dev/owner": "user1"}, "ports": [{"port": 80}]}})),
        )
        .await
        .expect("leftover");

    // Made before Portico stripped copied identity (here: in a namespace its webhook does not
    // see): a CronJob whose pod template is stamped for user1 but whose jobTemplate.metadata,
    // which the cronjob controller copies onto every Job, says user2.
    Api::<CronJob>::namespaced(admin.clone(), "portico-system")
        .create(
            &PostParams::default(),
            &from(json!({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "nightly"},
                "spec": {"schedule": "@hourly", "jobTemplate": {
                    "metadata": {"labels": {"portico.dev/owner": "user2"}, "annotations": {"portico.dev/user": "user2"}},
                    "spec": {"template": {
                        "metadata": {"labels": {"jarvice-job-ipaddr": "user1-nightly", "portico.dev/owner": "user1"},
                            "annotations": {"portico.dev/user": "user1", "portico.dev/ipaddr": "nightly"}},
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}}}})),
        )
        .await
        .expect("a CronJob the webhook does not see");
    // Hand-written EndpointSlices by an administrator: one that joins user1's routed Service
    // `web` (the Exposure's), and one that sends user2's selector-less Service to user1's pod.
    services
        .create(
            &PostParams::default(),
            &from(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "side", "labels": {"portico.dev/owner": "user2"}},
                "spec": {"ports": [{"port": 80}]}})),
        )
        .await
        .expect("a selector-less Service");
    let slices = Api::<EndpointSlice>::namespaced(admin.clone(), "team");
    for (name, service, address) in [
        ("web-extra", "web", "192.0.2.10".to_string()),
        ("side-1", "side", user1_ip.clone()),
    ] {
        slices
            .create(
                &PostParams::default(),
                &from(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
                    "addressType": "IPv4", "endpoints": [{"addresses": [address]}], "ports": [{"port": 80}]})),
            )
            .await
            .expect("an administrator may write endpoints");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    l.sandbox.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["audit", "--context", "admin", "-o", "json", "--kubeconfig"])
            .arg(&kubeconfig)
            .env_remove("PORTICO_CONFIG")
            .output()
            .expect("portico audit")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut got: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default().into(),
                f["object"]["namespace"].as_str().unwrap_or_default().into(),
                f["object"]["name"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, String)> = [
        ("exposure-conflict", "team", "web2"),
        ("foreign-endpoints", "team", "side-1"),
        ("foreign-selector", "team", "borrowed"),
        ("forged-copied-identity", "portico-system", "nightly"),
        ("hand-written-endpoints", "team", "web-extra"),
        ("orphaned-service", "team", "leftover"),
        ("unstamped-route", "portico-system", "sneaky"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["scanned"]["pods"], 3);
    assert_eq!(report["scanned"]["exposures"], 2);
    assert_eq!(report["scanned"]["endpoints"], 2);
    assert!(report["source"]
        .as_str()
        .is_some_and(|s| s.contains("admin")));
    p.stop().await;
}
