//! The webhook's live view of the cluster, end to end: the sandbox, Portico's webhook watching it
//! as `portico serve` does, and a provisioner sharing the webhook's pod cache. A hand-written
//! EndpointSlice by user2 that lists user1's routed pod is refused; one that lists user2's own
//! pod is admitted.

mod harness;

use std::time::Duration;

use harness::{eventually, test_config, Loop};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::Client;
use portico::api::Exposure;
use portico::core::cluster::{ClusterView, Known};
use serde_json::json;

const NS: &str = "team";

async fn create_pod(client: &Client, name: &str, tag: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": {"portico.dev/ipaddr": tag}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))
    .expect("pod");
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
}

/// The pod's IP once the (sandbox) kubelet has started it.
async fn ip_of(client: &Client, name: &str) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    eventually(20, &format!("an IP for pod {name}"), || async {
        pods.get(name).await.ok()?.status?.pod_ip
    })
    .await
}

fn slice(name: &str, address: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("endpointslice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_endpointslice_may_list_only_the_requesters_routed_pods() {
    let l = Loop::start_viewed(test_config()).await;
    let view = l.view.clone().expect("view");
    tokio::time::timeout(Duration::from_secs(20), view.ready())
        .await
        .expect("the view lists within 20 s")
        .expect("the watches run");
    assert!(view.is_ready());
    let p = l.provisioner_sharing("p1").await;
    let (user1, user2) = (l.client("user1").await, l.client("user2").await);
    create_pod(&user1, "lab", "foobar").await;
    create_pod(&user2, "mine", "mine").await;
    let (theirs, mine) = (ip_of(&user1, "lab").await, ip_of(&user2, "mine").await);
    // The view learns of both pods from its watch (no API call when asked).
    for (ip, owner) in [(&theirs, "user1"), (&mine, "user2")] {
        eventually(20, &format!("the view to know {ip}"), || async {
            match view.pod_by_ip(ip) {
                Known::Yes(Some(pod)) => (pod.owner == owner).then_some(()),
                _ => None,
            }
        })
        .await;
    }

    let slices = Api::<EndpointSlice>::namespaced(user2.clone(), NS);
    let refused = slices
        .create(&PostParams::default(), &slice("side-door", &theirs))
        .await
        .expect_err("user2 pointed a Service at user1's pod");
    let kube::Error::Api(status) = refused else {
        panic!("not a refusal: {refused}");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains(&format!("lists address {theirs}"))
            && status.message.contains("team/lab")
            && status.message.contains("\"user1\""),
        "{}",
        status.message
    );
    slices
        .create(&PostParams::default(), &slice("front-door", &mine))
        .await
        .expect("user2 may point at their own pod");

    // The provisioner reads the same pod cache: user1's Exposure counts user1's running pod.
    let exposure: Exposure = serde_json::from_value(json!({
        "apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
        "metadata": {"name": "foobar", "namespace": NS},
        "spec": {"tag": "foobar", "target": "pod0",
            "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    }))
    .expect("exposure");
    let exposures = Api::<Exposure>::namespaced(user1.clone(), NS);
    exposures
        .create(&PostParams::default(), &exposure)
        .await
        .expect("exposure");
    eventually(20, "the Exposure to count its pod", || async {
        exposures
            .get("foobar")
            .await
            .ok()?
            .status
            .filter(|s| s.pods == 1)
    })
    .await;
    p.stop().await;
}
