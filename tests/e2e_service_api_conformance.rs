//! The conformance scenarios (`conformance/`) on the real control plane: Portico's service API
//! as `portico serve --api` runs it in a cluster (Portico's service account impersonating
//! `portico-api`, bound only by manifests/service-api/rbac.yaml, a trusted submitter of the
//! cluster's Portico), its tenants' labs in a namespace of each scenario's own, the cluster's
//! Portico stamping and exposing them, kwok playing their kubelet. What a kubelet would report
//! of a crash (a failed pod, an Event) the test writes as the node; no log is kept (kwok serves
//! none), so a crash's last words reach the details through the Event.

mod cluster;
mod conformance;
mod harness;
mod kubectl_bin;
mod service_api_support;

use cluster::{cluster, Cluster};
use conformance::{Lab, Tenants};
use http::{HeaderMap, StatusCode};
use portico::service_api::RunningApi;
use serde_json::{json, Value};
use service_api_support::*;

struct OnCluster {
    c: &'static Cluster,
    ns: String,
    api: RunningApi,
    tls: ApiTls,
    _dir: tempfile::TempDir,
    _descriptions: tempfile::TempDir,
}

impl OnCluster {
    async fn start(scenario: &str) -> OnCluster {
        let c = cluster();
        let ns = format!("api-{scenario}");
        c.tenant_namespace(&ns);
        let descriptions = descriptions_for_clients();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let tls = ApiTls::mint(&dir.path().join("certs"));
        let mut config = portico::config::Config::default();
        // As the cluster's Portico is configured (e2e/controlplane/cluster.sh).
        config.identity.trusted_submitters.users = vec!["portal".into(), "portico-api".into()];
        config.provisioner.domain = "apps.cluster.test".into();
        config.api.descriptions = descriptions.path().display().to_string();
        config.api.kubeconfig = Some(c.kubeconfig.display().to_string());
        config.api.context = Some("portico".into());
        config.api.impersonate = Some("portico-api".into());
        with_hubs_in(&mut config, &ns);
        assert_eq!(config.problems(), Vec::<String>::new());
        let api = portico::service_api::start_for_serve(tls.options(), &config)
            .await
            .expect("the service API starts against the cluster");
        OnCluster {
            c,
            ns,
            api,
            tls,
            _dir: dir,
            _descriptions: descriptions,
        }
    }

    fn kubectl_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let r = self.c.kubectl("admin", &all, None);
        if !r.ok {
            assert!(
                r.err.contains("NotFound"),
                "kubectl {all:?} failed: {}",
                r.err
            );
            return None;
        }
        Some(serde_json::from_str(&r.out).expect("kubectl prints JSON"))
    }

    fn resource(resource: &str) -> &str {
        if resource == "exposures" {
            "exposures.portico.dev"
        } else {
            resource
        }
    }

    fn set_finalizers(&self, pod: &str, finalizers: Value) -> bool {
        let patch = json!({"metadata": {"finalizers": finalizers}}).to_string();
        let r = self.c.kubectl(
            "admin",
            &[
                "-n",
                &self.ns,
                "patch",
                "pod",
                pod,
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        );
        r.ok || r.err.contains("NotFound")
    }
}

impl Lab for OnCluster {
    fn tenants(&self) -> Tenants {
        Tenants {
            hub_token: HUB_TOKEN,
            hub_user: HUB_USER,
            hub_password: HUB_PASSWORD,
            hub2_token: HUB2_TOKEN,
        }
    }

    async fn call_exact(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, String) {
        self.tls
            .call_exact(self.api.addr(), method, path, headers, body)
            .await
    }

    async fn get(&self, resource: &str, name: &str) -> Option<Value> {
        self.kubectl_json(&["get", Self::resource(resource), name])
    }

    async fn list(&self, resource: &str) -> Vec<Value> {
        self.kubectl_json(&["get", Self::resource(resource)])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }

    async fn records(&self) -> Vec<Value> {
        let r = self.c.ok(
            "admin",
            &["-n", "portico-system", "get", "configmaps", "-o", "json"],
            None,
        );
        let list: Value = serde_json::from_str(&r).expect("kubectl prints JSON");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("portico-api-"))
            })
            .cloned()
            .collect()
    }

    async fn squat_pod(&self, name: &str) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        self.c.ok(
            "user1",
            &["-n", &self.ns, "create", "-f", "-"],
            Some(&pod.to_string()),
        );
    }

    async fn crash(&self, pod: &str, line: &str) {
        self.fail_pod(pod, "Error", line).await;
    }

    async fn fail_pod(&self, pod: &str, reason: &str, message: &str) {
        // What a kubelet writes when the main process exits 1: every container terminated, the
        // pod Failed and not Ready, and a Warning Event about it.
        let current = self.get("pods", pod).await.expect("the pod to fail");
        let terminated =
            json!({"terminated": {"exitCode": 1, "reason": reason, "message": message}});
        let containers: Vec<Value> = current["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mut c = c.clone();
                c["state"] = terminated.clone();
                c["ready"] = json!(false);
                c["started"] = json!(false);
                c
            })
            .collect();
        let status = json!({"status": {
            "phase": "Failed", "reason": reason, "message": message,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodFailed"},
                           {"type": "ContainersReady", "status": "False", "reason": "PodFailed"}],
            "containerStatuses": containers}});
        // As the kubelet does: a PATCH of pods/status, nothing read first (a node may not read
        // pods/status, so kubectl's patch, which reads first, is refused).
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.c.kubeconfig).expect("kubeconfig");
        let options = kube::config::KubeConfigOptions {
            context: Some("node".into()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("the node's kubeconfig context");
        let node = kube::Client::try_from(config).expect("a client as the node");
        kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(node, &self.ns)
            .patch_status(
                pod,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&status),
            )
            .await
            .expect("the node writes the pod's status");
        let event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{pod}."), "namespace": self.ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": self.ns,
                               "uid": current["metadata"]["uid"]},
            "type": "Warning", "reason": reason, "message": message,
            "source": {"component": "kubelet", "host": "e2e-node"},
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1});
        self.c.ok(
            "admin",
            &["-n", &self.ns, "create", "-f", "-"],
            Some(&event.to_string()),
        );
    }

    async fn hold(&self, pod: &str) {
        assert!(
            self.set_finalizers(pod, json!(["test.portico.dev/grace"])),
            "holding {pod}"
        );
    }

    async fn release(&self, pod: &str) {
        assert!(self.set_finalizers(pod, Value::Null), "releasing {pod}");
    }
}

/// Now as RFC 3339, as Event timestamps are written.
fn now() -> String {
    k8s_openapi::chrono::Utc::now().to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_poll_until_running_and_stop() {
    conformance::start_poll_until_running_and_stop(&OnCluster::start("start").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_is_explained_and_the_delete_after_it_is_harmless() {
    conformance::a_failed_start_is_explained_and_the_delete_after_it_is_harmless(
        &OnCluster::start("failed").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_that_crashes_after_running_reads_not_running_with_details() {
    conformance::a_lab_that_crashes_after_running_reads_not_running_with_details(
        &OnCluster::start("crash").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_new_start_id_while_the_old_lab_is_going_away() {
    conformance::a_restart_with_a_new_start_id_while_the_old_lab_is_going_away(
        &OnCluster::start("restart").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_never_see_each_others_labs() {
    conformance::two_tenants_never_see_each_others_labs(&OnCluster::start("tenants").await).await;
}
