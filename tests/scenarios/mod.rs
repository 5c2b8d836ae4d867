//! The provisioner's scenarios (issue 4's list, in order), written once against a [`World`]:
//! `tests/provisioner.rs` plays them on the sandbox, `tests/e2e_provisioner.rs` on the real
//! control plane (real server-side apply, NodePort allocation and garbage collection). The two
//! that need a world of their own stay with it: leader election and faults (sandbox fault
//! injection; on the real control plane, `e2e_leader.rs` and the restarts in
//! `e2e_provisioner.rs`).
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use portico::api::Exposure;
use serde_json::{json, Value};

#[path = "../wait/mod.rs"]
mod wait;
pub use wait::eventually;

/// How long a scenario waits for one step before it fails (a bound on a hang, not a figure).
pub const PATIENCE: u64 = 30;

/// Where a scenario runs: its clients all default to one namespace of its own.
#[allow(async_fn_in_trait)] // used by tests only, never across threads
pub trait World {
    /// A client as `context` (admin, user1, user2, portal, portico) whose default namespace is
    /// the scenario's.
    async fn client(&self, context: &str) -> Client;
    /// The provisioner's `domain` (Ingress hosts are `{user}-{tag}.{domain}`).
    fn domain(&self) -> &str;
    /// Plays the cloud's load-balancer controller for the Service `name` where none runs.
    async fn serve_load_balancer(&self, name: &str);
    /// Portico's provisioner writes so far (not Lease renewals).
    async fn portico_writes(&self) -> u64;
    /// What the provisioner has done so far, as [`comes_to_rest`] watches it.
    async fn activity(&self) -> Activity;
    /// Waits until this world has the provisioner to itself: its passes are counted for every
    /// namespace, so other scenarios' work would show in the quiet window.
    async fn alone(&self) {}
}

/// The provisioner's activity, as [`comes_to_rest`] compares it across a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Reconcile passes run.
    pub passes: u64,
    /// Writes sent (accepted or refused).
    pub writes: u64,
    /// Writes that will wake the provisioner on a timer (`portico_provisioner_pending_wakeups`):
    /// 0 at rest, else a pass (and likely a write) is already scheduled.
    pub pending_wakeups: u64,
}

/// How long the world must stay still: no pass, no write, and no timer left that would start one.
pub const QUIET_WINDOW: Duration = Duration::from_secs(3);

/// How long a world may take to come to rest: a refusal (a node port taken) is tried once more
/// after the world changed, once its backoff (at most 60 s in the provisioner) has passed; on a
/// shared cluster the other scenarios' work is such a change.
pub const REST_PATIENCE: u64 = PATIENCE + 60;

/// Every scenario ends here (and some also stop here midway): once its last change has settled
/// (within [`REST_PATIENCE`]), the provisioner runs no pass and sends no write for
/// [`QUIET_WINDOW`], and holds no timer that would wake it — so it stays quiet until something
/// changes. A comparison that never matches what the apiserver stores (a write loop at rest)
/// never gets there.
pub async fn comes_to_rest(w: &impl World, scenario: &str) {
    w.alone().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(REST_PATIENCE);
    loop {
        let before = w.activity().await;
        tokio::time::sleep(QUIET_WINDOW).await;
        let after = w.activity().await;
        if before == after && after.pending_wakeups == 0 {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{scenario}: the provisioner never came to rest within {REST_PATIENCE} s: in the last \
                 {QUIET_WINDOW:?} it ran {} pass(es) and sent {} write(s), and {} write(s) will \
                 wake it again ({before:?} → {after:?})",
                after.passes - before.passes,
                after.writes - before.writes,
                after.pending_wakeups
            );
        }
    }
}

/// A client as `context` of `kubeconfig` whose default namespace is `ns`.
pub async fn client_in(kubeconfig: Kubeconfig, context: &str, ns: &str) -> Client {
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config");
    config.default_namespace = ns.to_string();
    Client::try_from(config).expect("client")
}

pub fn job(name: &str, tag: &str, pods: i32, indexed: bool) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "annotations": {"portico.dev/ipaddr": tag}},
        "spec": {
            "parallelism": pods, "completions": pods,
            "completionMode": if indexed { "Indexed" } else { "NonIndexed" },
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}
        }
    }))
    .expect("job")
}

pub fn exposure(name: &str, spec: Value) -> Exposure {
    serde_json::from_value(json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": {"name": name}, "spec": spec})).expect("exposure")
}

pub fn nodeport(tag: &str, port: i32, target: &str) -> Value {
    json!({"tag": tag, "target": target, "service": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": port}]}})
}

pub async fn create_job(client: &Client, j: &Job) {
    Api::<Job>::default_namespaced(client.clone())
        .create(&PostParams::default(), j)
        .await
        .expect("job created");
}

pub async fn delete_job(client: &Client, name: &str) {
    Api::<Job>::default_namespaced(client.clone())
        .delete(name, &DeleteParams::background())
        .await
        .expect("job deleted");
}

pub async fn create_exposure(client: &Client, e: &Exposure) -> Result<Exposure, kube::Error> {
    Api::<Exposure>::default_namespaced(client.clone())
        .create(&PostParams::default(), e)
        .await
}

pub async fn status_of(client: &Client, name: &str) -> Option<portico::api::ExposureStatus> {
    Api::<Exposure>::default_namespaced(client.clone())
        .get(name)
        .await
        .ok()?
        .status
}

pub fn condition(st: &portico::api::ExposureStatus, t: &str) -> Option<(String, String, String)> {
    st.conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub async fn service(client: &Client, name: &str) -> Option<Service> {
    Api::<Service>::default_namespaced(client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

pub async fn running_pods_of(client: &Client, job: &str) -> Vec<Pod> {
    let pods = Api::<Pod>::default_namespaced(client.clone())
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
pub async fn s01_nodeport_exposure_survives_job_resubmission(w: &impl World) {
    let user1 = w.client("user1").await;
    create_job(&user1, &job("lab", "foobar", 1, true)).await;
    create_exposure(
        &user1,
        &exposure("foobar", nodeport("foobar", 30080, "pod0")),
    )
    .await
    .expect("exposure");
    let st = eventually(PATIENCE, "status with one pod", || async {
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
    eventually(PATIENCE, "no pods selected", || async {
        status_of(&user1, "foobar").await.filter(|s| s.pods == 0)
    })
    .await;
    eventually(PATIENCE, "job gone", || async {
        Api::<Job>::default_namespaced(user1.clone())
            .get_opt("lab")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    create_job(&user1, &job("lab", "foobar", 1, true)).await;
    let st = eventually(PATIENCE, "the new pod selected", || async {
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
    comes_to_rest(w, "s01_nodeport_exposure_survives_job_resubmission").await;
}

/// 2. LoadBalancer, target all, 3-pod job: all three selected; the address shows in status.
pub async fn s02_loadbalancer_selects_every_pod_and_reports_the_address(w: &impl World) {
    let user1 = w.client("user1").await;
    create_job(&user1, &job("web", "web", 3, false)).await;
    let spec = json!({"tag": "web", "target": "all", "service": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]}});
    create_exposure(&user1, &exposure("web", spec))
        .await
        .expect("exposure");
    w.serve_load_balancer("web").await;
    let st = eventually(PATIENCE, "three pods and an address", || async {
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
    comes_to_rest(
        w,
        "s02_loadbalancer_selects_every_pod_and_reports_the_address",
    )
    .await;
}

/// 3. Two jobs with one tag: both reached; one ends, the other still is.
pub async fn s03_jobs_sharing_a_tag_are_all_reached(w: &impl World) {
    let user1 = w.client("user1").await;
    create_job(&user1, &job("a", "shared", 1, false)).await;
    create_job(&user1, &job("b", "shared", 1, false)).await;
    let spec = json!({"tag": "shared", "target": "all", "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}});
    create_exposure(&user1, &exposure("shared", spec))
        .await
        .expect("exposure");
    eventually(PATIENCE, "both jobs' pods", || async {
        status_of(&user1, "shared").await.filter(|s| s.pods == 2)
    })
    .await;
    delete_job(&user1, "a").await;
    eventually(PATIENCE, "the other job's pod", || async {
        status_of(&user1, "shared").await.filter(|s| s.pods == 1)
    })
    .await;
    comes_to_rest(w, "s03_jobs_sharing_a_tag_are_all_reached").await;
}

/// 4. Ingress from the host template: tags differing only in case get different hosts; two
///    explicit hosts differing only in case are one DNS name, and the younger gets Conflict.
pub async fn s04_ingress_host_template_and_case_conflict(w: &impl World) {
    let user1 = w.client("user1").await;
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
    let st = eventually(PATIENCE, "host in status", || async {
        status_of(&user1, "lower")
            .await
            .filter(|s| s.host.is_some() && s.service.is_some())
    })
    .await;
    assert_eq!(
        st.host.as_deref(),
        Some(format!("user1-foobar.{}", w.domain()).as_str())
    );
    let ing = eventually(PATIENCE, "ingress", || async {
        Api::<Ingress>::default_namespaced(user1.clone())
            .get_opt("lower")
            .await
            .ok()
            .flatten()
    })
    .await;
    let rules = ing.spec.and_then(|s| s.rules).unwrap_or_default();
    assert_eq!(
        rules[0].host.as_deref(),
        Some(format!("user1-foobar.{}", w.domain()).as_str())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    create_exposure(&user1, &exposure("upper", spec("FooBar", None)))
        .await
        .expect("exposure");
    let st = eventually(PATIENCE, "the other tag's own host", || async {
        status_of(&user1, "upper")
            .await
            .filter(|s| s.host.is_some() && s.service.is_some())
    })
    .await;
    let upper = st.host.clone().unwrap_or_default();
    assert!(
        upper.starts_with("user1-foobar--") && upper.ends_with(&format!(".{}", w.domain())),
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
        &exposure(
            "squatter",
            spec("other", Some(&format!("User1-FooBar.{}", w.domain()))),
        ),
    )
    .await
    .expect("exposure");
    let st = eventually(PATIENCE, "conflict", || async {
        status_of(&user1, "squatter")
            .await
            .filter(|s| condition(s, "Conflict").is_some_and(|c| c.0 == "True"))
    })
    .await;
    assert!(condition(&st, "Conflict")
        .unwrap()
        .2
        .contains(&format!("user1-foobar.{}", w.domain())));
    let st = status_of(&user1, "lower").await.unwrap();
    assert_eq!(
        condition(&st, "Conflict").map(|c| c.0),
        Some("False".into())
    );
    comes_to_rest(w, "s04_ingress_host_template_and_case_conflict").await;
}

/// 5. Per-job NodePort (dynamic) and headless Service: created, port annotated back on the Job,
///    removed with the Job.
pub async fn s05_per_job_nodeport_and_headless_service(w: &impl World) {
    let user1 = w.client("user1").await;
    let mut j = job("mpi", "mpi", 2, true);
    let ann = j.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert("portico.dev/expose".into(), "NodePort".into());
    ann.insert("portico.dev/ports".into(), "http:5000,metrics:9090".into());
    ann.insert("portico.dev/headless".into(), "true".into());
    create_job(&user1, &j).await;
    let exposed = eventually(PATIENCE, "exposed service", || async {
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
    let workers = eventually(PATIENCE, "headless service", || async {
        service(&user1, "mpi-workers").await
    })
    .await;
    assert_eq!(
        workers.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    let annotated = eventually(PATIENCE, "node port on the job", || async {
        let j = Api::<Job>::default_namespaced(user1.clone())
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
    // While the job lives: its headless Service (`clusterIP: None`, type defaulted by the
    // apiserver) once was applied again every few seconds.
    comes_to_rest(w, "s05 while the job runs").await;
    delete_job(&user1, "mpi").await;
    eventually(PATIENCE, "services removed with the job", || async {
        (service(&user1, "mpi-expose").await.is_none()
            && service(&user1, "mpi-workers").await.is_none())
        .then_some(())
    })
    .await;
    comes_to_rest(w, "s05_per_job_nodeport_and_headless_service").await;
}

/// 6. Two Exposures asking for one node port: the second reports Conflict with the apiserver's
///    message; the first is untouched.
pub async fn s06_node_port_collision_is_a_conflict_not_a_crash(w: &impl World) {
    let user1 = w.client("user1").await;
    create_exposure(&user1, &exposure("first", nodeport("one", 30090, "pod0")))
        .await
        .expect("exposure");
    eventually(PATIENCE, "first service", || async {
        service(&user1, "first").await
    })
    .await;
    create_exposure(&user1, &exposure("second", nodeport("two", 30090, "pod0")))
        .await
        .expect("exposure");
    let st = eventually(PATIENCE, "conflict", || async {
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
    comes_to_rest(w, "s06_node_port_collision_is_a_conflict_not_a_crash").await;
}

/// 7. Someone edits the Service selector: restored.
pub async fn s07_drifted_selector_is_restored(w: &impl World) {
    let user1 = w.client("user1").await;
    let admin = w.client("admin").await;
    create_exposure(&user1, &exposure("drift", nodeport("drift", 30100, "pod0")))
        .await
        .expect("exposure");
    eventually(PATIENCE, "service", || async {
        service(&user1, "drift").await
    })
    .await;
    let patch = json!({"spec": {"selector": {"app": "someone-else"}}});
    Api::<Service>::default_namespaced(admin.clone())
        .patch("drift", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit");
    eventually(PATIENCE, "selector restored", || async {
        let sel = service(&user1, "drift").await?.spec?.selector?;
        (sel.get("jarvice-pod0-job-ipaddr").map(String::as_str) == Some("user1-drift")
            && !sel.contains_key("app"))
        .then_some(())
    })
    .await;
    comes_to_rest(w, "s07_drifted_selector_is_restored").await;
}

/// 8. 100 Exposures at steady state: zero writes by Portico over a quiet period.
pub async fn s08_steady_state_writes_nothing(w: &impl World) {
    let user1 = w.client("user1").await;
    let start = w.portico_writes().await;
    for i in 0..100 {
        let spec = json!({"tag": format!("t{i}"), "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}});
        create_exposure(&user1, &exposure(&format!("e{i}"), spec))
            .await
            .expect("exposure");
    }
    eventually(3 * PATIENCE, "every status written", || async {
        let list = Api::<Exposure>::default_namespaced(user1.clone())
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
    let before = w.portico_writes().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        w.portico_writes().await - before,
        0,
        "Portico wrote at steady state"
    );
    let made = before - start;
    assert!(made <= 2 * 100 + 10, "{made} writes for 100 exposures");
    comes_to_rest(w, "s08_steady_state_writes_nothing").await;
}

/// 9. Non-indexed 3-pod job with target pod0: exactly one pod labelled; delete it: another takes it.
pub async fn s09_pod0_is_elected_and_moves(w: &impl World) {
    let user1 = w.client("user1").await;
    create_job(&user1, &job("farm", "farm", 3, false)).await;
    let pods_api = Api::<Pod>::default_namespaced(user1.clone());
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
    let first = eventually(PATIENCE, "one pod0", || async {
        holders().await.filter(|h| h.len() == 1)
    })
    .await;
    pods_api
        .delete(&first[0], &DeleteParams::default())
        .await
        .expect("delete pod");
    let next = eventually(PATIENCE, "pod0 moved", || async {
        holders().await.filter(|h| h.len() == 1 && h[0] != first[0])
    })
    .await;
    assert_eq!(next.len(), 1);
    comes_to_rest(w, "s09_pod0_is_elected_and_moves").await;
}

/// 12. user2 creates an Exposure for user1's tag: refused.
pub async fn s12_exposing_another_users_tag_is_refused(w: &impl World) {
    let user2 = w.client("user2").await;
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
    comes_to_rest(w, "s12_exposing_another_users_tag_is_refused").await;
}

/// 13. Names that can never name a Service (not a DNS-1035 label): an Exposure is refused at
///     admission saying why; a workload asking for per-job exposure gets one Event saying why,
///     no Service, and the provisioner comes to rest (no retry for ever).
pub async fn s13_names_that_cannot_name_a_service(w: &impl World) {
    let user1 = w.client("user1").await;
    let err = create_exposure(&user1, &exposure("1lab", nodeport("lab", 30130, "pod0")))
        .await
        .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("DNS-1035") && message.contains("start with a lowercase letter"),
        "{message}"
    );
    let mut j = job("1lab", "lab", 1, true);
    let ann = j.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert("portico.dev/expose".into(), "ClusterIP".into());
    create_job(&user1, &j).await;
    let events = Api::<k8s_openapi::api::core::v1::Event>::default_namespaced(user1.clone());
    let said = eventually(PATIENCE, "an InvalidName Event on the Job", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidName")
                    && e.involved_object.name.as_deref() == Some("1lab")
            })
            .and_then(|e| e.message)
    })
    .await;
    assert!(
        said.contains("\"1lab-expose\"") && said.contains("start with a lowercase letter"),
        "{said}"
    );
    assert!(service(&user1, "1lab-expose").await.is_none());
    comes_to_rest(w, "s13_names_that_cannot_name_a_service").await;
}
