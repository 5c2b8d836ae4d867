//! The provisioner's scenarios, each against the sandbox API server with Portico's webhook
//! registered and its provisioner running (issue 4's list, in order).

mod harness;

use std::time::Duration;

use harness::{eventually, Loop};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use portico::api::Exposure;
use serde_json::{json, Value};

const NS: &str = "team";

fn job(name: &str, tag: &str, pods: i32, indexed: bool) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "annotations": {"portico.dev/ipaddr": tag}},
        "spec": {
            "parallelism": pods, "completions": pods,
            "completionMode": if indexed { "Indexed" } else { "NonIndexed" },
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}
        }
    }))
    .expect("job")
}

fn exposure(name: &str, spec: Value) -> Exposure {
    serde_json::from_value(json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": {"name": name, "namespace": NS}, "spec": spec})).expect("exposure")
}

fn nodeport(tag: &str, port: i32, target: &str) -> Value {
    json!({"tag": tag, "target": target, "service": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": port}]}})
}

async fn create_job(client: &Client, j: &Job) {
    Api::<Job>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), j)
        .await
        .expect("job created");
}

async fn delete_job(client: &Client, name: &str) {
    Api::<Job>::namespaced(client.clone(), NS)
        .delete(name, &DeleteParams::background())
        .await
        .expect("job deleted");
}

async fn create_exposure(client: &Client, e: &Exposure) -> Result<Exposure, kube::Error> {
    Api::<Exposure>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), e)
        .await
}

async fn status_of(client: &Client, name: &str) -> Option<portico::api::ExposureStatus> {
    Api::<Exposure>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .ok()?
        .status
}

fn condition(st: &portico::api::ExposureStatus, t: &str) -> Option<(String, String, String)> {
    st.conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn service(client: &Client, name: &str) -> Option<Service> {
    Api::<Service>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

async fn running_pods_of(client: &Client, job: &str) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    pods.into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect()
}

/// 1. NodePort, fixed port 30080, target pod0: the job goes and comes back; same Service, same
///    port, the new pod selected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_nodeport_exposure_survives_job_resubmission() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    create_job(&user1, &job("lab", "foobar", 1, true)).await;
    create_exposure(
        &user1,
        &exposure("foobar", nodeport("foobar", 30080, "pod0")),
    )
    .await
    .expect("exposure");
    let st = eventually(20, "status with one pod", || async {
        status_of(&user1, "foobar").await.filter(|s| s.pods == 1)
    })
    .await;
    assert_eq!(st.node_ports.get("http"), Some(&30080));
    assert_eq!(condition(&st, "Ready").map(|c| c.0), Some("True".into()));
    let svc = service(&user1, "foobar").await.expect("service");
    let sel = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    assert_eq!(
        sel.get("jarvice-pod0-job-ipaddr").map(String::as_str),
        Some("user1-foobar")
    );
    assert_eq!(
        sel.get("portico.dev/owner").map(String::as_str),
        Some("user1")
    );
    let uid = svc.metadata.uid.clone();
    let first_pod = running_pods_of(&user1, "lab")
        .await
        .first()
        .and_then(|p| p.metadata.name.clone());

    delete_job(&user1, "lab").await;
    eventually(20, "no pods selected", || async {
        status_of(&user1, "foobar").await.filter(|s| s.pods == 0)
    })
    .await;
    eventually(20, "job gone", || async {
        Api::<Job>::namespaced(user1.clone(), NS)
            .get_opt("lab")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    create_job(&user1, &job("lab", "foobar", 1, true)).await;
    let st = eventually(20, "the new pod selected", || async {
        status_of(&user1, "foobar").await.filter(|s| s.pods == 1)
    })
    .await;
    assert_eq!(st.node_ports.get("http"), Some(&30080));
    let svc = service(&user1, "foobar").await.expect("service");
    assert_eq!(svc.metadata.uid, uid, "the same Service");
    let new_pod = running_pods_of(&user1, "lab")
        .await
        .first()
        .and_then(|p| p.metadata.name.clone());
    assert_ne!(first_pod, new_pod);
    p.stop().await;
}

/// 2. LoadBalancer, target all, 3-pod job: all three selected; the address shows in status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_loadbalancer_selects_every_pod_and_reports_the_address() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    create_job(&user1, &job("web", "web", 3, false)).await;
    let spec = json!({"tag": "web", "target": "all", "service": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]}});
    create_exposure(&user1, &exposure("web", spec))
        .await
        .expect("exposure");
    let st = eventually(20, "three pods and an address", || async {
        status_of(&user1, "web")
            .await
            .filter(|s| s.pods == 3 && s.address.is_some())
    })
    .await;
    assert!(
        st.address
            .as_deref()
            .is_some_and(|a| a.starts_with("192.0.2.")),
        "{st:?}"
    );
    assert_eq!(condition(&st, "Ready").map(|c| c.0), Some("True".into()));
    p.stop().await;
}

/// 3. Two jobs with one tag: both reached; one ends, the other still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_jobs_sharing_a_tag_are_all_reached() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    create_job(&user1, &job("a", "shared", 1, false)).await;
    create_job(&user1, &job("b", "shared", 1, false)).await;
    let spec = json!({"tag": "shared", "target": "all", "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}});
    create_exposure(&user1, &exposure("shared", spec))
        .await
        .expect("exposure");
    eventually(20, "both jobs' pods", || async {
        status_of(&user1, "shared").await.filter(|s| s.pods == 2)
    })
    .await;
    delete_job(&user1, "a").await;
    eventually(20, "the other job's pod", || async {
        status_of(&user1, "shared").await.filter(|s| s.pods == 1)
    })
    .await;
    p.stop().await;
}

/// 4. Ingress from the host template: tags differing only in case get different hosts; two
///    explicit hosts differing only in case are one DNS name, and the younger gets Conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_ingress_host_template_and_case_conflict() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    let spec = |tag: &str, host: Option<&str>| {
        let mut ingress = json!({"ingressClassName": "nginx", "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "true"}});
        if let Some(h) = host {
            ingress["host"] = json!(h);
        }
        json!({"tag": tag, "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]},
        "ingress": ingress})
    };
    create_exposure(&user1, &exposure("lower", spec("foobar", None)))
        .await
        .expect("exposure");
    let st = eventually(20, "host in status", || async {
        status_of(&user1, "lower")
            .await
            .filter(|s| s.host.is_some() && s.service.is_some())
    })
    .await;
    assert_eq!(st.host.as_deref(), Some("user1-foobar.apps.test"));
    let ing = eventually(20, "ingress", || async {
        Api::<Ingress>::namespaced(user1.clone(), NS)
            .get_opt("lower")
            .await
            .ok()
            .flatten()
    })
    .await;
    let rules = ing.spec.and_then(|s| s.rules).unwrap_or_default();
    assert_eq!(rules[0].host.as_deref(), Some("user1-foobar.apps.test"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    create_exposure(&user1, &exposure("upper", spec("FooBar", None)))
        .await
        .expect("exposure");
    let st = eventually(20, "the other tag's own host", || async {
        status_of(&user1, "upper")
            .await
            .filter(|s| s.host.is_some() && s.service.is_some())
    })
    .await;
    let upper = st.host.clone().unwrap_or_default();
    assert!(
        upper.starts_with("user1-foobar--") && upper.ends_with(".apps.test"),
        "{upper}"
    );
    assert_ne!(
        condition(&st, "Conflict").map(|c| c.0),
        Some("True".into()),
        "{st:?}"
    );
    create_exposure(
        &user1,
        // Named to sort after "lower": creation times have one-second resolution, and a tie goes
        // to the smaller key, so the older Exposure keeps the host even within the same second.
        &exposure("squatter", spec("other", Some("User1-FooBar.apps.test"))),
    )
    .await
    .expect("exposure");
    let st = eventually(20, "conflict", || async {
        status_of(&user1, "squatter")
            .await
            .filter(|s| condition(s, "Conflict").is_some_and(|c| c.0 == "True"))
    })
    .await;
    assert!(condition(&st, "Conflict")
        .unwrap()
        .2
        .contains("user1-foobar.apps.test"));
    let st = status_of(&user1, "lower").await.unwrap();
    assert_eq!(
        condition(&st, "Conflict").map(|c| c.0),
        Some("False".into())
    );
    p.stop().await;
}

/// 5. Per-job NodePort (dynamic) and headless Service: created, port annotated back on the Job,
///    removed with the Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_per_job_nodeport_and_headless_service() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    let mut j = job("mpi", "mpi", 2, true);
    let ann = j.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert("portico.dev/expose".into(), "NodePort".into());
    ann.insert("portico.dev/ports".into(), "http:5000,metrics:9090".into());
    ann.insert("portico.dev/headless".into(), "true".into());
    create_job(&user1, &j).await;
    let exposed = eventually(20, "exposed service", || async {
        service(&user1, "mpi-expose").await
    })
    .await;
    let ports = exposed
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    assert_eq!(ports.len(), 2);
    let np = ports[0].node_port.expect("node port assigned");
    let workers = eventually(20, "headless service", || async {
        service(&user1, "mpi-workers").await
    })
    .await;
    assert_eq!(
        workers.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    let annotated = eventually(20, "node port on the job", || async {
        let j = Api::<Job>::namespaced(user1.clone(), NS)
            .get("mpi")
            .await
            .ok()?;
        j.metadata
            .annotations?
            .get("portico.dev/node-ports")
            .cloned()
    })
    .await;
    assert!(annotated.contains(&format!("http={np}")), "{annotated}");
    delete_job(&user1, "mpi").await;
    eventually(20, "services removed with the job", || async {
        (service(&user1, "mpi-expose").await.is_none()
            && service(&user1, "mpi-workers").await.is_none())
        .then_some(())
    })
    .await;
    p.stop().await;
}

/// 6. Two Exposures asking for one node port: the second reports Conflict with the apiserver's
///    message; the first is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06_node_port_collision_is_a_conflict_not_a_crash() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    create_exposure(&user1, &exposure("first", nodeport("one", 30090, "pod0")))
        .await
        .expect("exposure");
    eventually(20, "first service", || async {
        service(&user1, "first").await
    })
    .await;
    create_exposure(&user1, &exposure("second", nodeport("two", 30090, "pod0")))
        .await
        .expect("exposure");
    let st = eventually(20, "conflict", || async {
        status_of(&user1, "second")
            .await
            .filter(|s| condition(s, "Conflict").is_some_and(|c| c.0 == "True"))
    })
    .await;
    let msg = condition(&st, "Conflict").unwrap().2;
    assert!(msg.contains("provided port is already allocated"), "{msg}");
    let first = service(&user1, "first").await.unwrap();
    assert_eq!(
        first.spec.and_then(|s| s.ports).unwrap()[0].node_port,
        Some(30090)
    );
    assert!(service(&user1, "second").await.is_none());
    p.stop().await;
}

/// 7. Someone edits the Service selector: restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s07_drifted_selector_is_restored() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    let admin = l.client("admin").await;
    create_exposure(&user1, &exposure("drift", nodeport("drift", 30100, "pod0")))
        .await
        .expect("exposure");
    eventually(20, "service", || async { service(&user1, "drift").await }).await;
    let patch = json!({"spec": {"selector": {"app": "someone-else"}}});
    Api::<Service>::namespaced(admin.clone(), NS)
        .patch("drift", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit");
    eventually(20, "selector restored", || async {
        let sel = service(&user1, "drift").await?.spec?.selector?;
        (sel.get("jarvice-pod0-job-ipaddr").map(String::as_str) == Some("user1-drift")
            && !sel.contains_key("app"))
        .then_some(())
    })
    .await;
    p.stop().await;
}

/// 8. 100 Exposures at steady state: zero writes by Portico over a quiet period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s08_steady_state_writes_nothing() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    for i in 0..100 {
        let spec = json!({"tag": format!("t{i}"), "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}});
        create_exposure(&user1, &exposure(&format!("e{i}"), spec))
            .await
            .expect("exposure");
    }
    eventually(60, "every status written", || async {
        let list = Api::<Exposure>::namespaced(user1.clone(), NS)
            .list(&ListParams::default())
            .await
            .ok()?;
        list.items
            .iter()
            .all(|e| e.status.as_ref().is_some_and(|s| s.service.is_some()))
            .then_some(())
    })
    .await;
    // Let the last writes land, then watch a quiet period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = l.portico_writes();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        l.portico_writes() - before,
        0,
        "Portico wrote at steady state"
    );
    assert!(before <= 2 * 100 + 10, "{before} writes for 100 exposures");
    p.stop().await;
}

/// 9. Non-indexed 3-pod job with target pod0: exactly one pod labelled; delete it: another takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_pod0_is_elected_and_moves() {
    let l = Loop::start().await;
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    create_job(&user1, &job("farm", "farm", 3, false)).await;
    let pods_api = Api::<Pod>::namespaced(user1.clone(), NS);
    let holders = || async {
        let list = pods_api
            .list(&ListParams::default().labels("jarvice-pod0-job-ipaddr=user1-farm"))
            .await
            .ok()?;
        Some(
            list.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>(),
        )
    };
    let first = eventually(20, "one pod0", || async {
        holders().await.filter(|h| h.len() == 1)
    })
    .await;
    pods_api
        .delete(&first[0], &DeleteParams::default())
        .await
        .expect("delete pod");
    let next = eventually(20, "pod0 moved", || async {
        holders().await.filter(|h| h.len() == 1 && h[0] != first[0])
    })
    .await;
    assert_eq!(next.len(), 1);
    p.stop().await;
}

/// 10. Two instances: one leads; stop it, the other takes over; never both writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_leader_election_hands_over() {
    let l = Loop::start().await;
    let a = l.provisioner("replica-a").await;
    let lease = || async {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(l.client("admin").await, "portico-system");
        leases
            .get_opt("portico-provisioner")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    };
    eventually(20, "replica-a leads", || async {
        lease().await.filter(|h| h == "replica-a")
    })
    .await;
    let b = l.provisioner("replica-b").await;
    let user1 = l.client("user1").await;
    create_exposure(&user1, &exposure("ha", nodeport("ha", 30110, "pod0")))
        .await
        .expect("exposure");
    eventually(20, "service by the leader", || async {
        service(&user1, "ha").await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lease().await.as_deref(),
        Some("replica-a"),
        "leadership flapped"
    );
    let writes = |p: &harness::RunningProvisioner| portico::provisioner::writes(&p.stats);
    assert!(writes(&a) > 0, "the leader wrote nothing");
    assert_eq!(writes(&b), 0, "the follower wrote while replica-a led");
    let a_writes = writes(&a);
    let a_stats = a.stats.clone();
    a.stop().await;
    eventually(20, "replica-b leads", || async {
        lease().await.filter(|h| h == "replica-b")
    })
    .await;
    // The new leader reconciles: a new Exposure gets its Service.
    create_exposure(&user1, &exposure("ha2", nodeport("ha2", 30111, "pod0")))
        .await
        .expect("exposure");
    eventually(20, "service by the new leader", || async {
        service(&user1, "ha2").await
    })
    .await;
    assert!(writes(&b) > 0, "the new leader wrote nothing");
    assert_eq!(
        portico::provisioner::writes(&a_stats),
        a_writes,
        "the old leader wrote after stopping"
    );
    b.stop().await;
}

/// 11. 20% errors, slow responses and dropped watches: everything converges, no duplicates or
///     orphans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_converges_under_faults() {
    let l = Loop::start().await;
    let mut faults = portico_sandbox::Faults::default();
    faults.error_rate.insert("*".into(), 0.2);
    faults.latency_ms.insert("*".into(), 20);
    faults.drop_watches_after_ms = Some(1500);
    faults.only_users = vec![portico_sandbox::PORTICO_USER.into()];
    l.sandbox.set_faults(faults);
    let p = l.provisioner("p1").await;
    let user1 = l.client("user1").await;
    for i in 0..10 {
        create_exposure(
            &user1,
            &exposure(
                &format!("f{i}"),
                nodeport(&format!("f{i}"), 30200 + i, "pod0"),
            ),
        )
        .await
        .expect("exposure");
    }
    eventually(60, "all services and statuses", || async {
        let list = Api::<Exposure>::namespaced(user1.clone(), NS)
            .list(&ListParams::default())
            .await
            .ok()?;
        let done = list
            .items
            .iter()
            .all(|e| e.status.as_ref().is_some_and(|s| s.node_ports.len() == 1));
        done.then_some(())
    })
    .await;
    l.sandbox.clear_faults();
    let services = Api::<Service>::namespaced(user1.clone(), NS)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=portico"))
        .await
        .expect("list");
    assert_eq!(services.items.len(), 10, "no duplicate or orphaned Service");
    for i in 0..10 {
        let s = service(&user1, &format!("f{i}")).await.expect("service");
        assert_eq!(
            s.spec.and_then(|s| s.ports).unwrap()[0].node_port,
            Some(30200 + i)
        );
    }
    p.stop().await;
}

/// 12. user2 creates an Exposure for user1's tag: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_exposing_another_users_tag_is_refused() {
    let l = Loop::start().await;
    let user2 = l.client("user2").await;
    let mut spec = nodeport("foobar", 30120, "pod0");
    spec["user"] = json!("user1");
    let err = create_exposure(&user2, &exposure("steal", spec))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("user1"), "{err}");
    // Without naming a user, user2 exposes their own route value only.
    let mine = create_exposure(&user2, &exposure("mine", nodeport("foobar", 30121, "pod0")))
        .await
        .expect("own exposure");
    assert_eq!(mine.spec.user.as_deref(), Some("user2"));
}
