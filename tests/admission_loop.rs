//! The admission loop through the sandbox, driven by a real `kubectl` as a user would: a Job
//! created as user1 ends up with labelled pods; user2's relabel is refused with Portico's message;
//! with Portico down, `failurePolicy: Fail` refuses the pod. And `make run`'s scene plays.

mod harness;
mod kubectl_bin;

use std::path::PathBuf;
use std::process::Command;

use harness::{eventually, Loop};
use kubectl_bin::kubectl;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl as `context`; returns (success, stdout, stderr).
    fn run(&self, context: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let r = kubectl_bin::run(&self.bin, &self.kubeconfig, context, args, stdin);
        (r.ok, r.out, r.err)
    }
}

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: lab
  annotations:
    portico.dev/ipaddr: foobar
spec:
  completionMode: Indexed
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
"#;

async fn setup() -> (Loop, Kubectl, tempfile::TempDir) {
    let bin = kubectl();
    let l = Loop::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    l.sandbox.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    (l, Kubectl { bin, kubeconfig }, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_job_as_user1_gets_labelled_pods_and_user2_cannot_relabel_them() {
    let (_l, k, _dir) = setup().await;
    let (ok, _, err) =
        tokio::task::block_in_place(|| k.run("user1", &["create", "-f", "-"], Some(JOB)));
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "Warning: portico: pods of this workload labelled jarvice-job-ipaddr=user1-foobar"
        ),
        "{err}"
    );
    let pods = eventually(20, "two labelled pods", || async {
        let (_, out, _) = tokio::task::block_in_place(|| {
            k.run("admin", &["get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.jarvice-job-ipaddr} {.metadata.labels.jarvice-pod0-job-ipaddr}{\"\\n\"}{end}"], None)
        });
        let lines: Vec<String> = out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect();
        (lines.len() == 2).then_some(lines)
    })
    .await;
    for line in &pods {
        assert!(line.contains(" user1-foobar"), "{line}");
    }
    assert_eq!(
        pods.iter()
            .filter(|l| l.matches("user1-foobar").count() == 2)
            .count(),
        1,
        "exactly one first pod: {pods:?}"
    );
    let pod = pods[0].split_whitespace().next().expect("name").to_string();
    let (ok, _, err) = tokio::task::block_in_place(|| {
        k.run(
            "user2",
            &[
                "label",
                "pod",
                &pod,
                "jarvice-job-ipaddr=user2-x",
                "--overwrite",
            ],
            None,
        )
    });
    assert!(!ok, "user2 relabelled user1's pod");
    assert!(
        err.contains("denied the request") && err.contains("cannot be changed afterwards"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| {
        k.run(
            "user1",
            &[
                "annotate",
                "pod",
                &pod,
                "portico.dev/user=user2",
                "--overwrite",
            ],
            None,
        )
    });
    assert!(!ok, "identity annotation changed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_with_failure_policy_fail_refuses_the_pod() {
    let (l, k, _dir) = setup().await;
    l.webhook.shutdown().await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    portico.dev/ipaddr: foobar\nspec:\n  containers: [{name: main, image: busybox}]\n";
    let (ok, _, err) =
        tokio::task::block_in_place(|| k.run("user1", &["create", "-f", "-"], Some(pod)));
    assert!(!ok, "a pod was admitted without Portico");
    assert!(err.contains("failed calling webhook"), "{err}");
}

/// `make run`'s scripted scene plays against the sandbox on free ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_scene_plays() {
    let bin = kubectl();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port().to_string())
            .expect("port")
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The scene runs the binaries cargo built for this test run.
    let out = tokio::task::block_in_place(|| {
        Command::new(root.join("scripts/run.sh"))
            .arg("sandbox-scene")
            .env("RUN_SCENE_ONLY", "1")
            .env("KUBECTL", &bin)
            .env("PORTICO", env!("CARGO_BIN_EXE_portico"))
            // The sandbox binary beside it (the same target directory, whatever CARGO_TARGET_DIR).
            .env(
                "SANDBOX",
                std::path::Path::new(env!("CARGO_BIN_EXE_portico"))
                    .with_file_name("portico-sandbox"),
            )
            .env("STATE", tempfile::tempdir().expect("tempdir").keep())
            .env("SANDBOX_PORT", free())
            .env("WEBHOOK_PORT", free())
            .env("OPS_PORT", free())
            .env("SERVICE_API_PORT", free())
            .output()
            .expect("run.sh")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("user1-foobar") && stdout.contains("scene played"),
        "{stdout}"
    );
    assert!(stderr.contains("cannot be changed afterwards"), "{stderr}");
}
