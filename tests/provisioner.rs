//! The provisioner's scenarios against the sandbox API server with Portico's webhook registered
//! and its provisioner running. The scenarios themselves are in `scenarios/` (shared with the
//! real control plane's `e2e_provisioner.rs`); leader election and faults are the sandbox's own.

// Both the harness and the scenarios load tests/wait/ for their waiting; here both are in.
#![allow(clippy::duplicate_mod)]

mod harness;
mod scenarios;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use harness::Loop;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::config::Kubeconfig;
use kube::Client;
use portico::api::Exposure;
use scenarios::*;

/// The sandbox as a scenario's world: namespace `team`, domain `apps.test`, the sandbox's own
/// load-balancer addresses (192.0.2.x), writes counted by the sandbox itself (Events included),
/// passes by the one provisioner's own counters.
struct Sandboxed<'a>(&'a Loop, Arc<portico::provisioner::Stats>);

impl World for Sandboxed<'_> {
    async fn client(&self, context: &str) -> Client {
        let yaml = self.0.sandbox.kubeconfig_yaml(context);
        let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
        client_in(kubeconfig, context, "team").await
    }

    fn domain(&self) -> &str {
        &self.0.config.provisioner.domain
    }

    async fn serve_load_balancer(&self, _name: &str) {
        // The sandbox allocates load-balancer addresses itself (--lb-pool).
    }

    async fn portico_writes(&self) -> u64 {
        self.0.portico_writes()
    }

    async fn activity(&self) -> Activity {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Activity {
            passes: load(&self.1.passes),
            writes: self.0.portico_writes(),
            pending_wakeups: load(&self.1.pending_wakeups),
        }
    }
}

/// A shared scenario on a fresh sandbox with one provisioner.
macro_rules! on_the_sandbox {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let l = Loop::start().await;
            let p = l.provisioner("p1").await;
            scenarios::$name(&Sandboxed(&l, p.stats.clone())).await;
            p.stop().await;
        }
    )*};
}

on_the_sandbox!(
    s01_nodeport_exposure_survives_job_resubmission,
    s02_loadbalancer_selects_every_pod_and_reports_the_address,
    s03_jobs_sharing_a_tag_are_all_reached,
    s04_ingress_host_template_and_case_conflict,
    s05_per_job_nodeport_and_headless_service,
    s06_node_port_collision_is_a_conflict_not_a_crash,
    s07_drifted_selector_is_restored,
    s08_steady_state_writes_nothing,
    s09_pod0_is_elected_and_moves,
    s12_exposing_another_users_tag_is_refused,
    s13_names_that_cannot_name_a_service,
);

/// 10. Two instances: one leads; stop it, the other takes over; never both writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_leader_election_hands_over() {
    let l = Loop::start().await;
    let a = l.provisioner("replica-a").await;
    let w = Sandboxed(&l, a.stats.clone());
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
    let user1 = w.client("user1").await;
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
    let w = Sandboxed(&l, p.stats.clone());
    let user1 = w.client("user1").await;
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
        let list = Api::<Exposure>::default_namespaced(user1.clone())
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
    let services = Api::<Service>::default_namespaced(user1.clone())
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
    // Failures and writes the lagging watches did not confirm are all settled, and nothing is
    // left to retry.
    comes_to_rest(&w, "s11 after the faults").await;
    p.stop().await;
}

/// A node port held by a Service Portico does not manage (and so does not watch): the Exposure
/// asking for it reports Conflict; once that Service is deleted, the refusal is tried again
/// after `provisioner.refusalRecheckSeconds` although no watched object changed, and the
/// Exposure gets its Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_freed_by_an_unwatched_service_is_taken_after_the_recheck() {
    let mut config = harness::test_config();
    config.provisioner.refusal_recheck_seconds = 2;
    let l = Loop::start_with(config).await;
    let p = l.provisioner("p1").await;
    let w = Sandboxed(&l, p.stats.clone());
    let admin = w.client("admin").await;
    let squatter: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "squatter"},
        "spec": {"type": "NodePort", "selector": {"app": "other"},
                 "ports": [{"port": 80, "nodePort": 30410}]}
    }))
    .expect("service");
    let services = Api::<Service>::default_namespaced(admin.clone());
    services
        .create(&Default::default(), &squatter)
        .await
        .expect("squatter");
    let user1 = w.client("user1").await;
    create_exposure(&user1, &exposure("wants", nodeport("wants", 30410, "pod0")))
        .await
        .expect("exposure");
    eventually(PATIENCE, "the conflict", || async {
        status_of(&user1, "wants")
            .await
            .filter(|s| condition(s, "Conflict").is_some_and(|c| c.0 == "True"))
    })
    .await;
    // Once the retries the Exposure's own status change armed are spent, nothing Portico
    // watches will change: only the recheck can notice that the port was freed.
    eventually(PATIENCE, "no armed retry left", || async {
        (p.stats
            .pending_wakeups
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0)
            .then_some(())
    })
    .await;
    services
        .delete("squatter", &Default::default())
        .await
        .expect("delete the squatter");
    let svc = eventually(
        PATIENCE,
        "the Exposure's Service on the freed port",
        || async { service(&user1, "wants").await },
    )
    .await;
    assert_eq!(
        svc.spec.and_then(|s| s.ports).unwrap_or_default()[0].node_port,
        Some(30410)
    );
    p.stop().await;
}
