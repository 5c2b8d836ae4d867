//! The ownership matrix end to end through the sandbox apiserver: its cronjob, job and
//! replication controllers copy metadata as Kubernetes' do, `pods/status` stores labels as the
//! real status strategy does, and every UPDATE or DELETE reaches Portico's validating webhook
//! with the stored object, as shipped in `manifests/`.

mod harness;

use harness::{eventually, test_config, Loop};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use portico::api::Exposure;
use serde_json::{json, Value};

const NS: &str = "team";

/// The refusal of a request that must be refused, as `kubectl` would print it.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            status.message
        }
        other => panic!("{what}: not refused: {other:?}"),
    }
}

async fn create<K>(client: &Client, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("object");
    Api::<K>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &object)
        .await
        .expect("created")
}

fn labels(meta: &kube::api::ObjectMeta) -> (Option<&str>, Option<&str>) {
    let get = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    (get("jarvice-job-ipaddr"), get("portico.dev/owner"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_cannot_forge_its_jobs_through_the_controllers() {
    let l = Loop::start_with(test_config()).await;
    let user2 = l.client("user2").await;
    let cronjob: CronJob = create(
        &user2,
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": NS},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {
            "metadata": {"annotations": {"portico.dev/user": "user1", "portico.dev/ipaddr": "foobar"},
                         "labels": {"portico.dev/owner": "user1"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}}}}}}),
    )
    .await;
    let copied = cronjob
        .spec
        .as_ref()
        .and_then(|s| s.job_template.metadata.as_ref())
        .expect("jobTemplate.metadata");
    assert_eq!(
        copied
            .annotations
            .as_ref()
            .and_then(|a| a.get("portico.dev/user")),
        None,
        "the forged identity was stored"
    );
    // The sandbox's cronjob controller copies jobTemplate.metadata onto the Job, then its job
    // controller makes the pod: both stay user2's.
    let job = l
        .sandbox
        .run_cronjob(NS, "nightly")
        .await
        .expect("cronjob runs");
    let job_name = job["metadata"]["name"]
        .as_str()
        .expect("job name")
        .to_string();
    let pods = Api::<Pod>::namespaced(l.client("admin").await, NS);
    let selector = format!("job-name={job_name}");
    let pod = eventually(20, "the cronjob's pod", || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        labels(&pod.metadata),
        (Some("user2-foobar"), Some("user2")),
        "{:?}",
        pod.metadata.labels
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_objects_stay_their_owners_through_every_verb() {
    let l = Loop::start_with(test_config()).await;
    let (user1, user2, admin) = (
        l.client("user1").await,
        l.client("user2").await,
        l.client("admin").await,
    );
    // user1's pod, Service, Exposure and Deployment.
    let _: Pod = create(
        &user1,
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lab", "namespace": NS, "annotations": {"portico.dev/ipaddr": "lab"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}),
    )
    .await;
    let _: Service = create(
        &user1,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lab", "namespace": NS},
        "spec": {"selector": {"jarvice-job-ipaddr": "user1-lab"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let _: Exposure = create(
        &user1,
        json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
        "metadata": {"name": "lab", "namespace": NS},
        "spec": {"tag": "lab", "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}}}),
    )
    .await;
    let _: Deployment = create(
        &user1,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": {"portico.dev/ipaddr": "web"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}),
    )
    .await;

    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();
    // user2 re-points the Service, takes the Exposure, changes the Deployment's image.
    let m = refused(
        Api::<Service>::namespaced(user2.clone(), NS)
            .patch(
                "lab",
                &pp,
                &merge(json!({"spec": {"selector": {"jarvice-job-ipaddr": "user2-trap"}}})),
            )
            .await,
        "Service re-pointed",
    );
    assert!(m.contains("prefix \"user1\""), "{m}");
    let m = refused(
        Api::<Exposure>::namespaced(user2.clone(), NS)
            .patch("lab", &pp, &merge(json!({"spec": {"user": "user2"}})))
            .await,
        "Exposure taken",
    );
    assert!(m.contains("user \"user1\""), "{m}");
    let m = refused(
        Api::<Deployment>::namespaced(user2.clone(), NS)
            .patch(
                "web",
                &pp,
                &Patch::Json::<()>(
                    serde_json::from_value(json!([{"op": "replace",
                        "path": "/spec/template/spec/containers/0/image", "value": "evil"}]))
                    .expect("patch"),
                ),
            )
            .await,
        "Deployment image",
    );
    assert!(m.contains("user \"user1\""), "{m}");
    // Deletes by user2 are refused; the pod, Service and Exposure are still there.
    let m = refused(
        Api::<Pod>::namespaced(user2.clone(), NS)
            .delete("lab", &DeleteParams::default())
            .await,
        "pod deleted",
    );
    assert!(m.contains("may not delete"), "{m}");
    refused(
        Api::<Service>::namespaced(user2.clone(), NS)
            .delete("lab", &DeleteParams::default())
            .await,
        "Service deleted",
    );
    // pods/status cannot carry a relabel, not even an administrator's.
    let m = refused(
        Api::<Pod>::namespaced(admin.clone(), NS)
            .patch_status(
                "lab",
                &pp,
                &merge(json!({"metadata": {"labels": {"jarvice-job-ipaddr": "user2-trap"}}})),
            )
            .await,
        "status relabel",
    );
    assert!(m.contains("status subresource"), "{m}");
    let pod = Api::<Pod>::namespaced(admin.clone(), NS)
        .get("lab")
        .await
        .expect("pod still there");
    assert_eq!(labels(&pod.metadata), (Some("user1-lab"), Some("user1")));
    // The owner's own unrelated update and delete go through.
    Api::<Service>::namespaced(user1.clone(), NS)
        .patch(
            "lab",
            &pp,
            &merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .expect("owner updates");
    Api::<Pod>::namespaced(user1.clone(), NS)
        .delete("lab", &DeleteParams::default())
        .await
        .expect("owner deletes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controllers_pods_carry_its_stamp() {
    let l = Loop::start_with(test_config()).await;
    let user1 = l.client("user1").await;
    let _: ReplicationController = create(
        &user1,
        json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"app": "rc"}, "template": {
            "metadata": {"labels": {"app": "rc", "jarvice-job-ipaddr": "lab"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}),
    )
    .await;
    let pods = Api::<Pod>::namespaced(l.client("admin").await, NS);
    let pod = eventually(20, "the replication controller's pod", || async {
        pods.list(&ListParams::default().labels("app=rc"))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(labels(&pod.metadata), (Some("user1-lab"), Some("user1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_and_aliases_reach_only_their_writers_services_and_hosts() {
    use k8s_openapi::api::networking::v1::Ingress;
    let l = Loop::start_viewed(test_config()).await;
    let view = l.view.clone().expect("view");
    tokio::time::timeout(std::time::Duration::from_secs(20), view.ready())
        .await
        .expect("the view lists within 20 s")
        .expect("the watches run");
    let (user1, user2) = (l.client("user1").await, l.client("user2").await);
    let _: Service = create(
        &user1,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lab", "namespace": NS},
        "spec": {"selector": {"jarvice-job-ipaddr": "user1-lab"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let _: Service = create(
        &user2,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mine", "namespace": NS},
        "spec": {"selector": {"jarvice-job-ipaddr": "user2-mine"}, "ports": [{"port": 80}]}}),
    )
    .await;
    // The view learns of user1's Service from its watch.
    eventually(20, "the view to know Service lab", || async {
        match portico::core::cluster::ClusterView::service_owner(&view, NS, "lab") {
            portico::core::cluster::Known::Yes(Some(owner)) => (owner == "user1").then_some(()),
            _ => None,
        }
    })
    .await;
    let ingress = |name: &str, host: &str, backend: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": backend, "port": {"number": 80}}}}]}}]}})
    };
    let ingresses = Api::<Ingress>::namespaced(user2.clone(), NS);
    for (name, host, backend, why) in [
        ("steal", "user2-shop.apps.test", "lab", "Service team/lab"),
        ("squat", "user1-lab.apps.test", "mine", "host space"),
        ("catch", "*.apps.test", "mine", "wildcard"),
    ] {
        let object: Ingress =
            serde_json::from_value(ingress(name, host, backend)).expect("ingress");
        let m = refused(
            ingresses.create(&PostParams::default(), &object).await,
            name,
        );
        assert!(m.contains(why), "{name}: {m}");
    }
    let own: Ingress =
        serde_json::from_value(ingress("own", "user2-shop.apps.test", "mine")).expect("ingress");
    ingresses
        .create(&PostParams::default(), &own)
        .await
        .expect("user2's own host and Service");
    let alias: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "alias", "namespace": NS},
        "spec": {"type": "ExternalName", "externalName": "lab.team.svc.cluster.local"}}))
    .expect("service");
    let m = refused(
        Api::<Service>::namespaced(user2.clone(), NS)
            .create(&PostParams::default(), &alias)
            .await,
        "alias",
    );
    assert!(m.contains("aliases"), "{m}");
}
