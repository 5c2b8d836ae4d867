//! The provisioner's scenarios on the real control plane (a cluster of this binary's own): the
//! same scenarios as `provisioner.rs` plays on the sandbox (`scenarios/`), here with the real
//! apiserver's server-side apply, NodePort allocation (and its 422 on a taken port), the real
//! garbage collector removing what a Job owned, kwok playing the kubelet, and the cluster's own
//! Portico (its service account, the shipped RBAC) as the provisioner. Each scenario has a
//! namespace of its own; the ones that measure Portico's writes, or restart the apiserver and
//! etcd, run alone.

mod cluster;
mod kubectl_bin;
mod scenarios;

use std::time::{Duration, Instant};

use cluster::{cluster, Cluster};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::Client;
use portico::api::Exposure;
use scenarios::*;
use serde_json::json;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Scenarios share the cluster; one that counts Portico's writes or restarts the control plane
/// takes it alone, and every scenario takes it alone for its quiet window at the end
/// (`scenarios::comes_to_rest`: the provisioner's passes are counted for the whole cluster).
static TURNS: RwLock<()> = RwLock::const_new(());

#[allow(dead_code)] // held for its Drop: the turn ends with the scenario
enum Turn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// The real cluster as a scenario's world: namespace `e2e-<scenario>`, in which user1, user2 and
/// portal have what `team` gives them (`edit` and Exposures).
struct OnCluster {
    c: &'static Cluster,
    ns: String,
    turn: tokio::sync::Mutex<Option<Turn>>,
}

impl OnCluster {
    async fn new(scenario: &str, alone: bool) -> OnCluster {
        let turn = if alone {
            Turn::Alone(TURNS.write().await)
        } else {
            Turn::Shared(TURNS.read().await)
        };
        let c = cluster();
        let short = scenario.split('_').next().unwrap_or(scenario);
        let ns = format!("e2e-{short}");
        c.tenant_namespace(&ns);
        OnCluster {
            c,
            ns,
            turn: tokio::sync::Mutex::new(Some(turn)),
        }
    }
}

impl OnCluster {
    /// The provisioner's records in the cluster's Portico's audit trail (its log) for objects in
    /// this world's namespace, sent or refused: (kind/name, operation, outcome).
    fn writes(&self) -> Vec<(String, String, String)> {
        let log = std::fs::read_to_string(self.c.dir.join("portico.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| {
                r["source"] == "provisioner" && r["object"]["namespace"] == self.ns.as_str()
            })
            .map(|r| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                (
                    format!("{}/{}", s(&r["object"]["kind"]), s(&r["object"]["name"])),
                    s(&r["operation"]),
                    s(&r["outcome"]),
                )
            })
            .collect()
    }
}

impl World for OnCluster {
    async fn client(&self, context: &str) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.c.kubeconfig).expect("kubeconfig");
        client_in(kubeconfig, context, &self.ns).await
    }

    fn domain(&self) -> &str {
        // e2e/controlplane/cluster.sh's Portico configuration.
        "apps.cluster.test"
    }

    async fn serve_load_balancer(&self, name: &str) {
        // No cloud controller runs: the test gives the Service an address, as one would.
        let services = Api::<Service>::default_namespaced(self.client("admin").await);
        eventually(PATIENCE, "the LoadBalancer Service", || async {
            services.get_opt(name).await.ok().flatten()
        })
        .await;
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
        services
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("the load balancer's address");
    }

    async fn portico_writes(&self) -> u64 {
        // This namespace's writes only: the other scenarios share the cluster.
        self.writes().len() as u64
    }

    async fn activity(&self) -> Activity {
        // The cluster's Portico's, over every namespace (see `alone`): a write loop in a namespace
        // another scenario left behind shows here too.
        let metrics = self.c.portico_metrics();
        let writes = ["ok", "failed"].map(|result| {
            ["Service", "Ingress", "Status", "Pod0", "NodePorts"].map(|kind| {
                let sample = format!(
                    "portico_provisioner_writes_total{{kind=\"{kind}\",result=\"{result}\"}}"
                );
                cluster::sample(&metrics, &sample)
            })
        });
        Activity {
            passes: cluster::sample(&metrics, "portico_provisioner_reconciles_total"),
            writes: writes.iter().flatten().sum(),
            pending_wakeups: cluster::sample(&metrics, "portico_provisioner_pending_wakeups"),
        }
    }

    async fn alone(&self) {
        let mut turn = self.turn.lock().await;
        if matches!(*turn, Some(Turn::Alone(_))) {
            return;
        }
        // The shared turn ends before the lone one is asked for, so two scenarios that both
        // want to be alone wait for each other in turn, never for each other at once.
        *turn = None;
        *turn = Some(Turn::Alone(TURNS.write().await));
    }
}

macro_rules! on_the_cluster {
    ($alone:expr => $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let w = OnCluster::new(stringify!($name), $alone).await;
            scenarios::$name(&w).await;
        }
    )*};
}

on_the_cluster!(false =>
    s01_nodeport_exposure_survives_job_resubmission,
    s02_loadbalancer_selects_every_pod_and_reports_the_address,
    s03_jobs_sharing_a_tag_are_all_reached,
    s04_ingress_host_template_and_case_conflict,
    s05_per_job_nodeport_and_headless_service,
    s06_node_port_collision_is_a_conflict_not_a_crash,
    s07_drifted_selector_is_restored,
    s09_pod0_is_elected_and_moves,
    s12_exposing_another_users_tag_is_refused,
    s13_names_that_cannot_name_a_service,
);
on_the_cluster!(true => s08_steady_state_writes_nothing);

/// The world of the restarts test: five one-pod jobs and ten NodePort Exposures (five of them
/// selecting a job's first pod, five selecting nothing yet).
const EXPOSURES: i32 = 10;
const JOBS: i32 = 5;
const FIRST_PORT: i32 = 30300;

/// Whether the world is exactly as desired; else what is not.
async fn converged(user1: &Client) -> Result<(), String> {
    let exposures = Api::<Exposure>::default_namespaced(user1.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    if exposures.items.len() != EXPOSURES as usize {
        return Err(format!("{} Exposures", exposures.items.len()));
    }
    for e in &exposures.items {
        let name = e.metadata.name.clone().unwrap_or_default();
        let i: i32 = name.trim_start_matches('r').parse().unwrap_or(-1);
        let st = e.status.clone().unwrap_or_default();
        let want_pods = i32::from(i < JOBS);
        if st.node_ports.get("http") != Some(&(FIRST_PORT + i)) || st.pods != want_pods {
            return Err(format!("{name}: {st:?}"));
        }
    }
    let managed = Api::<Service>::default_namespaced(user1.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=portico"))
        .await
        .map_err(|e| e.to_string())?;
    if managed.items.len() != EXPOSURES as usize {
        return Err(format!("{} managed Services", managed.items.len()));
    }
    for s in &managed.items {
        let name = s.metadata.name.clone().unwrap_or_default();
        let i: i32 = name.trim_start_matches('r').parse().unwrap_or(-1);
        let spec = s.spec.clone().unwrap_or_default();
        let port = spec
            .ports
            .unwrap_or_default()
            .first()
            .and_then(|p| p.node_port);
        let sel = spec.selector.unwrap_or_default();
        let routed = sel.get("jarvice-pod0-job-ipaddr").map(String::as_str);
        if port != Some(FIRST_PORT + i) || routed != Some(format!("user1-r{i}").as_str()) {
            return Err(format!("Service {name}: port {port:?}, selector {sel:?}"));
        }
    }
    let pods = Api::<Pod>::default_namespaced(user1.clone())
        .list(&ListParams::default().labels("jarvice-pod0-job-ipaddr"))
        .await
        .map_err(|e| e.to_string())?;
    let live = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    if live != JOBS as usize {
        return Err(format!("{live} first pods for {JOBS} jobs"));
    }
    Ok(())
}

/// The apiserver killed (SIGKILL, as a crash) while Portico reconciles and started again 3 s
/// later, then the same for etcd: the world converges to
/// exactly what is desired (no Service lost, duplicated or mis-pointed, every status right) and
/// Portico then writes nothing. Prints a FIGURES line: writes before and after, convergence time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_and_etcd_restarts_lose_and_duplicate_nothing() {
    let w = OnCluster::new("restarts", true).await;
    let c = w.c;
    let user1 = w.client("user1").await;
    let start_writes = w.portico_writes().await;
    for i in 0..JOBS {
        create_job(&user1, &job(&format!("r{i}"), &format!("r{i}"), 1, true)).await;
    }
    for i in 0..EXPOSURES {
        let spec = nodeport(&format!("r{i}"), FIRST_PORT + i, "pod0");
        create_exposure(&user1, &exposure(&format!("r{i}"), spec))
            .await
            .expect("exposure");
    }
    // Mid-reconcile: as soon as Portico has made its first Service.
    eventually(PATIENCE, "Portico's first Service", || async {
        service(&user1, "r0").await
    })
    .await;
    let at_first_restart = w.portico_writes().await - start_writes;
    let down = c.kill_component("kube-apiserver");
    tokio::time::sleep(Duration::from_secs(3)).await;
    down.resume();
    c.wait_ready(90);
    let apiserver_back = Instant::now();
    eventually(
        3 * PATIENCE,
        "convergence after the apiserver's restart",
        || async { converged(&user1).await.ok() },
    )
    .await;
    let after_apiserver = apiserver_back.elapsed();

    let down = c.kill_component("etcd");
    tokio::time::sleep(Duration::from_secs(3)).await;
    down.resume();
    c.wait_ready(90);
    let etcd_back = Instant::now();
    // A pod0 deleted while etcd was away would show here; delete one now that it is back, so
    // that the provisioner has work to do on a freshly reconnected apiserver.
    let pods = Api::<Pod>::default_namespaced(user1.clone());
    let first = pods
        .list(&ListParams::default().labels("jarvice-pod0-job-ipaddr=user1-r1"))
        .await
        .expect("pods");
    for p in first.items {
        let name = p.metadata.name.unwrap_or_default();
        pods.delete(&name, &Default::default())
            .await
            .expect("delete");
    }
    let last = std::sync::Mutex::new(String::new());
    eventually(3 * PATIENCE, "convergence after etcd's restart", || async {
        match converged(&user1).await {
            Ok(()) => Some(()),
            Err(e) => {
                *last.lock().unwrap_or_else(|p| p.into_inner()) = e;
                None
            }
        }
    })
    .await;
    let after_etcd = etcd_back.elapsed();
    let at_convergence = w.portico_writes().await - start_writes;
    // Late writes after convergence are what the quiet window looks for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = w.portico_writes().await - start_writes;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = w.portico_writes().await - start_writes - settled;
    eprintln!(
        "FIGURES restarts: writes before the apiserver stopped {at_first_restart}, at convergence \
         {at_convergence}, within 3 s after {}, in the 5 s quiet window {quiet}; converged \
         {after_apiserver:?} after the apiserver came back and {after_etcd:?} after etcd did",
        settled - at_convergence
    );
    assert_eq!(quiet, 0, "Portico kept writing after convergence");
    // Nothing rewritten for a stale watch: each Service applied once (twice when the answer to an
    // accepted apply was lost to the kill), each status written at most three times (no pod yet,
    // the pod, and once more after a lost answer).
    let mut accepted: std::collections::BTreeMap<String, u32> = Default::default();
    for (object, operation, outcome) in w.writes() {
        if outcome == "written" {
            *accepted.entry(format!("{object} {operation}")).or_default() += 1;
        }
    }
    for (what, n) in &accepted {
        let bound = if what.ends_with(" status") { 3 } else { 2 };
        assert!(*n <= bound, "{what} written {n} times: {accepted:?}");
    }
    converged(&user1)
        .await
        .expect("still exactly as desired after the quiet window");
}
