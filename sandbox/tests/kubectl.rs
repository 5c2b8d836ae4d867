//! Drives a real kubectl against the sandbox: create -f, get, get -o yaml, label, annotate,
//! patch --type=merge, delete, --as USER, admission warnings and denials.
//!
//! kubectl is found through `KUBECTL`, else under the repository's `.tools/` (installed by
//! `sandbox/scripts/install-kubectl.sh`). Without it the test is skipped, except under CI=true,
//! where it fails.

mod common;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_kubectl() -> Option<PathBuf> {
    if let Ok(k) = std::env::var("KUBECTL") {
        if !k.is_empty() && Path::new(&k).is_file() {
            return Some(PathBuf::from(k));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        ".tools/kubectl/bin/kubectl",
        ".tools/bin/kubectl",
        ".tools/kubectl/kubectl",
        ".tools/kubectl",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.is_file())
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    ns: String,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=10s")
            .arg("-n")
            .arg(&self.ns)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.kubeconfig.parent().unwrap());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("kubectl runs");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o.stdout
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_speaks_to_the_sandbox() {
    let Some(bin) = find_kubectl() else {
        panic!("kubectl not found: set KUBECTL or run `make kubectl` (`make test` does so first)");
    };
    let hook = webhook(|req| {
        let user = req["userInfo"]["username"].as_str().unwrap_or("").to_string();
        if req["operation"] == "UPDATE" && user == "user2" {
            return json!({"allowed": false, "status": {"code": 403, "message": "only the owner may relabel"}});
        }
        json!({"allowed": true, "warnings": [format!("seen by the test webhook as {user}")]})
    })
    .await;
    let sb = start().await;
    sb.apply_object("admin", json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "kubectl-test"},
        "webhooks": [{"name": "pods.kubectl.test", "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
            "clientConfig": {"url": format!("https://127.0.0.1:{}/validate", hook.addr.port()), "caBundle": hook.ca_bundle},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]}))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).unwrap();
    let ns = sb.create_namespace("kubectl").await.unwrap();
    let k = Kubectl {
        bin,
        kubeconfig,
        ns: ns.clone(),
    };
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n").unwrap();

    let o = k
        .run(&["create", "-f", manifest.to_str().unwrap(), "--as", "user1"])
        .await;
    assert!(o.ok, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("pod/web created"), "{}", o.stdout);
    assert!(
        o.stderr
            .contains("Warning: seen by the test webhook as user1"),
        "{}",
        o.stderr
    );

    let out = k.ok(&["get", "pods"]).await;
    assert!(out.contains("NAME") && out.contains("web"), "{out}");
    let yaml = k.ok(&["get", "pod", "web", "-o", "yaml"]).await;
    assert!(
        yaml.contains("name: web") && yaml.contains(&format!("namespace: {ns}")),
        "{yaml}"
    );

    k.ok(&["label", "pod", "web", "tier=front"]).await;
    k.ok(&["annotate", "pod", "web", "note=hello"]).await;
    k.ok(&[
        "patch",
        "pod",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"yes"}}}"#,
    ])
    .await;
    let labels = k.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.labels.tier},{.metadata.annotations.note},{.metadata.labels.patched}"]).await;
    assert_eq!(labels, "front,hello,yes");
    let selected = k
        .ok(&["get", "pods", "-l", "tier in (front),app=web", "-o", "name"])
        .await;
    assert_eq!(selected.trim(), "pod/web");

    // --as user2: the webhook denies, kubectl prints the apiserver-shaped message.
    let o = k
        .run(&[
            "label",
            "pod",
            "web",
            "jarvice-job-ipaddr=user2-x",
            "--as",
            "user2",
        ])
        .await;
    assert!(!o.ok);
    assert!(o.stderr.contains("admission webhook \"pods.kubectl.test\" denied the request: only the owner may relabel"), "{}", o.stderr);
    // The apiserver's own label rule.
    let o = k
        .run(&[
            "patch",
            "pod",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"bad":"-x"}}}"#,
        ])
        .await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("a valid label must be an empty string"),
        "{}",
        o.stderr
    );

    let c = sb.counters();
    assert_eq!(c.count(Some("user1"), Some("create"), Some("pods")), 1);
    assert_eq!(c.count(Some("user2"), Some("patch"), Some("pods")), 1);

    let o = k.ok(&["delete", "pod", "web"]).await;
    assert!(o.contains("deleted"), "{o}");
    let o = k.run(&["get", "pod", "web"]).await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("NotFound") || o.stderr.contains("not found"),
        "{}",
        o.stderr
    );
    sb.shutdown().await;
}
