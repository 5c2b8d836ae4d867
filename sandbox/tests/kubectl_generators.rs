//! kubectl's typed generators (`kubectl create namespace|deployment|job|…`, `kubectl run`) send
//! their objects as Kubernetes protobuf. For each one, the object the sandbox stores must be the
//! one kubectl meant: what `--dry-run=client -o json` prints for the same command, and exactly
//! what the sandbox stores when the same object arrives as JSON (`kubectl create -f`), modulo
//! what differs between any two objects (uid, resourceVersion, timestamps, cluster IPs, the
//! Job's controller-uid).
//!
//! kubectl comes from `KUBECTL` or the repository's `.tools/kubectl/bin/kubectl` (`make
//! kubectl`); without it the test fails.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn kubectl_bin() -> PathBuf {
    let path = std::env::var_os("KUBECTL")
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/kubectl/bin/kubectl")
        });
    assert!(
        path.is_file(),
        "kubectl not found at {}: run `make kubectl` (or sandbox/scripts/install-kubectl.sh), \
         or set KUBECTL to a kubectl 1.37",
        path.display()
    );
    path
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl as admin in `ns`: Ok(stdout, stderr) when it succeeded, else Err(both).
    async fn run(&self, ns: &str, args: &[&str]) -> Result<(String, String), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", "admin", "--request-timeout=10s", "-n", ns])
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.kubeconfig.parent().expect("kubeconfig dir"));
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok((stdout, stderr))
        } else {
            Err(format!("{stdout}{stderr}"))
        }
    }

    async fn ok(&self, ns: &str, args: &[&str]) -> String {
        match self.run(ns, args).await {
            Ok((out, _)) => out,
            Err(e) => panic!("kubectl {args:?} failed: {e}"),
        }
    }

    async fn json(&self, ns: &str, args: &[&str]) -> Value {
        let out = self.ok(ns, args).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {out}"))
    }
}

/// Removes what the server alone sets and, with `copies`, what differs between two stored copies
/// of one object (the Job's controller-uid, a Service's node ports).
fn normalise(mut v: Value, copies: bool) -> Value {
    if let Some(meta) = v["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "namespace",
            "generation",
        ] {
            meta.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = v["spec"].as_object_mut() {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        spec.remove("nodeName"); // the scheduler's, whenever it gets to the pod
    }
    if copies {
        node_ports(&mut v).for_each(|p| {
            p.as_object_mut().map(|p| p.remove("nodePort"));
        });
    }
    if copies {
        strip_controller_uid(&mut v);
    }
    v
}

/// A Service's ports (none for other kinds; `get_mut`, as indexing would add `spec.ports: null`).
fn node_ports(v: &mut Value) -> impl Iterator<Item = &mut Value> {
    v.get_mut("spec")
        .and_then(|s| s.get_mut("ports"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// The Job's `controller-uid` labels and selector carry the uid.
fn strip_controller_uid(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("controller-uid");
            o.remove("batch.kubernetes.io/controller-uid");
            o.values_mut().for_each(strip_controller_uid);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_controller_uid),
        _ => {}
    }
}

/// Every field of `want` is in `got` with the same value (`got` may have more: defaults; lists
/// have the same length).
fn assert_contains(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                let gv = g.get(k).unwrap_or(&Value::Null);
                assert_contains(gv, wv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "at {path}: {got} vs {want}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_contains(gv, wv, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "at {path}"),
    }
}

/// (kind/name for `get`, the generator's arguments).
fn generators() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "deployment/web",
            vec!["create", "deployment", "web", "--image=busybox"],
        ),
        // replicas is a pointer: its zero must survive (Go writes it, JSON keeps it).
        (
            "deployment/idle",
            vec![
                "create",
                "deployment",
                "idle",
                "--image=busybox",
                "--replicas=0",
                "--port=8080",
            ],
        ),
        (
            "job/once",
            vec![
                "create",
                "job",
                "once",
                "--image=busybox",
                "--",
                "echo",
                "hi",
            ],
        ),
        (
            "cronjob/cj",
            vec![
                "create",
                "cronjob",
                "cj",
                "--image=busybox",
                "--schedule=*/1 * * * *",
            ],
        ),
        (
            "service/s1",
            vec!["create", "service", "clusterip", "s1", "--tcp=80:8080"],
        ),
        (
            "service/hl",
            vec!["create", "service", "clusterip", "hl", "--clusterip=None"],
        ),
        (
            "service/np",
            vec![
                "create",
                "service",
                "nodeport",
                "np",
                "--tcp=81:http",
                "--node-port=30081",
            ],
        ),
        (
            "configmap/cm",
            vec![
                "create",
                "configmap",
                "cm",
                "--from-literal=a=1",
                "--from-literal=empty=",
            ],
        ),
        (
            "secret/sec",
            vec![
                "create",
                "secret",
                "generic",
                "sec",
                "--from-literal=password=s3cr\u{e9}t",
                "--from-literal=blank=",
            ],
        ),
        ("serviceaccount/sa", vec!["create", "serviceaccount", "sa"]),
        (
            "role/reader",
            vec![
                "create",
                "role",
                "reader",
                "--verb=get,list",
                "--resource=pods,deployments.apps",
            ],
        ),
        (
            "rolebinding/rb",
            vec![
                "create",
                "rolebinding",
                "rb",
                "--clusterrole=view",
                "--user=user1",
                "--serviceaccount=kube-system:default",
            ],
        ),
        (
            "ingress/ing",
            vec![
                "create",
                "ingress",
                "ing",
                "--class=default",
                "--rule=foo.example.com/bar*=s1:80",
                "--annotation=a=b",
            ],
        ),
        (
            "poddisruptionbudget/pdb-int",
            vec![
                "create",
                "poddisruptionbudget",
                "pdb-int",
                "--selector=app=web",
                "--min-available=1",
            ],
        ),
        (
            "poddisruptionbudget/pdb-pct",
            vec![
                "create",
                "poddisruptionbudget",
                "pdb-pct",
                "--selector=app=web",
                "--max-unavailable=50%",
            ],
        ),
        (
            "pod/runner",
            vec![
                "run",
                "runner",
                "--image=busybox",
                "--labels=app=runner",
                "--env=A=1",
                "--port=80",
                "--",
                "sleep",
                "3600",
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_typed_generators_store_what_kubectl_meant() {
    let bin = kubectl_bin();
    let sb = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    sb.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let k = Kubectl { bin, kubeconfig };
    let proto_ns = sb.create_namespace("proto").await.expect("namespace");
    let json_ns = sb.create_namespace("json").await.expect("namespace");

    for (target, args) in generators() {
        // Flags before the generator's own `--` (a container command follows it).
        let mut dry = args.clone();
        dry.splice(1..1, ["--dry-run=client", "-o", "json"]);
        let mut meant = k.json(&proto_ns, &dry).await;
        // The same object as JSON, into the other namespace.
        meant["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("namespace");
        // A node port is allocated once in the whole cluster: the JSON copy gets its own.
        let mut copy = meant.clone();
        node_ports(&mut copy).for_each(|p| {
            p.as_object_mut().map(|p| p.remove("nodePort"));
        });
        let file = dir.path().join("meant.json");
        std::fs::write(&file, copy.to_string()).expect("write");

        let created = k.run(&proto_ns, &args).await;
        assert!(created.is_ok(), "kubectl {args:?} (protobuf): {created:?}");
        k.ok(&json_ns, &["create", "-f", file.to_str().expect("utf-8")])
            .await;
        let from_proto = k.json(&proto_ns, &["get", target, "-o", "json"]).await;
        let from_json = k.json(&json_ns, &["get", target, "-o", "json"]).await;
        assert_eq!(
            normalise(from_proto.clone(), true),
            normalise(from_json, true),
            "{target}: stored from protobuf vs from JSON"
        );
        assert_contains(
            &normalise(from_proto, false),
            &normalise(meant, false),
            target,
        );
    }

    // A namespace (cluster-scoped: one name only), checked against kubectl's own rendering.
    let ns = format!("{proto_ns}-n1");
    let meant = k
        .json(
            &proto_ns,
            &["create", "namespace", &ns, "--dry-run=client", "-o", "json"],
        )
        .await;
    k.ok(&proto_ns, &["create", "namespace", &ns]).await;
    let stored = k
        .json(&proto_ns, &["get", "namespace", &ns, "-o", "json"])
        .await;
    assert_contains(
        &normalise(stored.clone(), false),
        &normalise(meant, false),
        "namespace",
    );
    assert_eq!(
        stored["metadata"]["labels"]["kubernetes.io/metadata.name"],
        json!(ns)
    );

    // What kubectl sends really is protobuf (else this test would prove nothing).
    let verbose = k
        .run(
            &proto_ns,
            &["create", "configmap", "seen", "--from-literal=x=y", "-v=8"],
        )
        .await;
    let log = match verbose {
        Ok((_, err)) => err,
        Err(e) => panic!("create configmap -v=8: {e}"),
    };
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl create configmap did not send protobuf:\n{log}"
    );
    sb.shutdown().await;
}
