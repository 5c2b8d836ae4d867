//! The conformance scenarios (`conformance/`) on the sandbox: Portico's service API with the
//! manager-style tenants, the whole loop (webhook, provisioner) in process.

mod conformance;
mod harness;
mod service_api_support;

use conformance::{Lab, Tenants};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use service_api_support::*;

/// The API on the sandbox, and the templates' folder it reads (kept for the API's lifetime).
struct OnSandbox(ApiEnv, #[allow(dead_code)] tempfile::TempDir);

impl OnSandbox {
    async fn start() -> OnSandbox {
        let descriptions = descriptions_for_clients();
        let env = ApiEnv::start(descriptions.path(), with_hubs).await;
        OnSandbox(env, descriptions)
    }

    fn group_of(resource: &str) -> &'static str {
        if resource == "exposures" {
            "portico.dev"
        } else {
            ""
        }
    }

    async fn set_finalizers(&self, pod: &str, finalizers: Value) -> u16 {
        let r = self
            .0
            .lp
            .sandbox
            .request(
                "admin",
                "PATCH",
                &format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}"),
                Some(json!({"metadata": {"finalizers": finalizers}})),
            )
            .await;
        r.code
    }
}

impl Lab for OnSandbox {
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
        self.0.call_exact(method, path, headers, body).await
    }

    async fn get(&self, resource: &str, name: &str) -> Option<Value> {
        let group = Self::group_of(resource);
        self.0.lp.sandbox.object(group, resource, NAMESPACE, name)
    }

    async fn list(&self, resource: &str) -> Vec<Value> {
        let group = Self::group_of(resource);
        self.0.lp.sandbox.objects(group, resource, Some(NAMESPACE))
    }

    async fn records(&self) -> Vec<Value> {
        self.0.records()
    }

    async fn squat_pod(&self, name: &str) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        self.0
            .lp
            .sandbox
            .apply_object("user1", pod)
            .await
            .expect("a pod of someone else's");
    }

    async fn crash(&self, pod: &str, line: &str) {
        self.0.lp.sandbox.append_pod_log(NAMESPACE, pod, &[line]);
        self.fail_pod(pod, "Error", "the lab exited with 1").await;
    }

    async fn fail_pod(&self, pod: &str, reason: &str, message: &str) {
        self.0
            .lp
            .sandbox
            .fail_pod(NAMESPACE, pod, reason, message)
            .await
            .expect("the sandbox fails the pod");
    }

    async fn hold(&self, pod: &str) {
        let code = self
            .set_finalizers(pod, json!(["test.portico.dev/grace"]))
            .await;
        assert_eq!(code, 200, "holding {pod}");
    }

    async fn release(&self, pod: &str) {
        let code = self.set_finalizers(pod, Value::Null).await;
        assert!(code == 200 || code == 404, "releasing {pod}: {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_poll_until_running_and_stop() {
    conformance::start_poll_until_running_and_stop(&OnSandbox::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_is_explained_and_the_delete_after_it_is_harmless() {
    conformance::a_failed_start_is_explained_and_the_delete_after_it_is_harmless(
        &OnSandbox::start().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_that_crashes_after_running_reads_not_running_with_details() {
    conformance::a_lab_that_crashes_after_running_reads_not_running_with_details(
        &OnSandbox::start().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_new_start_id_while_the_old_lab_is_going_away() {
    conformance::a_restart_with_a_new_start_id_while_the_old_lab_is_going_away(
        &OnSandbox::start().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_never_see_each_others_labs() {
    conformance::two_tenants_never_see_each_others_labs(&OnSandbox::start().await).await;
}
