//! One kubectl transcript, run against the sandbox (with Portico in its admission path, as
//! tests/harness starts it) and against the real v1.37 control plane (tests/cluster/), compared
//! step by step: create/get/label/annotate, merge/JSON/strategic patches, server-side apply with
//! its conflicts, replace, delete, selectors, server dry runs, typed generators (protobuf), a
//! Job's controller-made pods, a Service's node port, and the errors users meet (404, 409, 422).
//!
//! Volatile values (uids, resourceVersions, timestamps, generated names, IPs, node ports,
//! managedFields' field sets) are normalised away. Whatever still differs must be in
//! [`ALLOWED`], each entry with the reason the sandbox differs there; the test fails on any other
//! difference, and on an allowed one that no longer happens (so the list stays true). The same
//! list is in sandbox/README.md, "Divergences from a real apiserver".

mod cluster;
mod harness;
mod kubectl_bin;

use harness::{test_config, Loop};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// (step, path prefix, why the sandbox differs). The path is a JSON path of the step's output
/// (`stdout`/`stderr` for text), `*` as step matches every step.
const ALLOWED: &[(&str, &str, &str)] = &[
    // Bookkeeping the sandbox does more widely than the apiserver; Portico reads generation
    // only of workloads, which have it on both.
    ("*", "metadata.generation", "the sandbox sets generation on every kind, the apiserver only where its strategy tracks spec changes (not ConfigMaps, Secrets, Services)"),
    // Message detail.
    ("patch json fails", "stderr", "a failed JSON patch: the sandbox adds the cause (operation, path) after the apiserver's words"),
    // Controllers. The sandbox's kubelet stand-in runs pods on sandbox-node; in the e2e cluster
    // kwok plays the kubelet of e2e-node, with status fields of its own.
    ("deployment", "metadata.annotations", "the sandbox's deployment controller does not number revisions (deployment.kubernetes.io/revision)"),
    ("deployment", "status", "the deployment controllers' status fields and timing differ (sandbox stand-in vs the real controller with kwok's pods)"),
    ("job", "spec.manualSelector", "the apiserver prints manualSelector: false once it generated the selector; the sandbox leaves the unset field out"),
    ("job's pods", "items[0].metadata.finalizers", "the real job controller tracks pods with the batch.kubernetes.io/job-tracking finalizer; the sandbox's counts them without it"),
    ("job's pods", "items[0].spec.nodeName", "the sandbox places every pod on sandbox-node; the e2e cluster's scheduler on e2e-node"),
    ("job's pods", "items[0].status", "the sandbox's kubelet stand-in and kwok write different status fields (conditions, hostIP, containerStatuses, qosClass)"),
    // Admission plugins and pod defaults the sandbox does not imitate (nothing of Portico's
    // depends on them: it reads labels, annotations, owners and the template).
    ("job's pods", "items[0].spec.serviceAccount", "ServiceAccount admission: serviceAccountName/serviceAccount default"),
    ("job's pods", "items[0].spec.volumes", "ServiceAccount admission: the kube-api-access projected token volume"),
    ("job's pods", "items[0].spec.containers[0].volumeMounts", "ServiceAccount admission: the token volume's mount"),
    ("job's pods", "items[0].spec.tolerations", "DefaultTolerationSeconds admission: not-ready/unreachable tolerations"),
    ("job's pods", "items[0].spec.priority", "Priority admission: priority 0"),
    ("job's pods", "items[0].spec.preemptionPolicy", "Priority admission: PreemptLowerPriority"),
    ("job's pods", "items[0].spec.enableServiceLinks", "pod defaulting the sandbox does not apply: enableServiceLinks true"),
];

/// Allowed like [`ALLOWED`], but whether they show depends on how far a controller got when
/// kubectl asked, so they are not required to.
const RACY: &[(&str, &str, &str)] = &[(
    "job",
    "status.ready",
    "the Job's ready count depends on how far each side's kubelet got when kubectl asked",
)];

/// What one kubectl run printed, normalised.
#[derive(Debug, Clone)]
struct Out {
    ok: bool,
    stdout: Value,
    stderr: String,
}

enum Shape {
    Text,
    Json,
}

struct Side {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Side {
    fn run(&self, args: &[&str], stdin: Option<&str>, shape: &Shape) -> Out {
        let r = kubectl_bin::run(&self.bin, &self.kubeconfig, "admin", args, stdin);
        let stdout = match shape {
            Shape::Json if r.ok => serde_json::from_str(&r.out)
                .map(|v| normalise(&v, ""))
                .unwrap_or_else(|e| Value::String(format!("not JSON ({e}): {}", r.out))),
            _ => Value::String(text(&r.out)),
        };
        Out {
            ok: r.ok,
            stdout,
            stderr: text(&r.err),
        }
    }

    /// Runs until `ready` holds for the parsed output (controllers work asynchronously).
    fn wait(&self, args: &[&str], ready: impl Fn(&Value) -> bool) -> Out {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.run(args, None, &Shape::Json);
            if out.ok && ready(&out.stdout) || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Text with its volatile words replaced.
fn text(s: &str) -> String {
    s.split_inclusive(char::is_whitespace)
        .map(|w| {
            let t = w.trim_end();
            let n = scalar(t.trim_matches(|c| c == '"' || c == ',' || c == '\''));
            match n {
                Some(n) => format!("{n}{}", &w[t.len()..]),
                None => w.to_string(),
            }
        })
        .collect()
}

/// The placeholder of a volatile scalar: a uid, a timestamp, an IPv4 address.
fn scalar(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    let uid = s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let time =
        b.len() >= 20 && b[4] == b'-' && b[10] == b'T' && b[..4].iter().all(u8::is_ascii_digit);
    let parts: Vec<&str> = s.split('.').collect();
    let ip = parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()));
    match (uid, time, ip) {
        (true, _, _) => Some("<uid>"),
        (_, true, _) => Some("<time>"),
        (_, _, true) => Some("<ip>"),
        _ => None,
    }
}

/// A JSON output with its volatile values replaced. `key` is the key `v` is under.
fn normalise(v: &Value, key: &str) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, child) in o {
                let n = match k.as_str() {
                    "resourceVersion" | "uid" | "creationTimestamp" => {
                        Value::String(format!("<{k}>"))
                    }
                    // Who manages what, not which fields (their sets follow each server's defaults).
                    "managedFields" => Value::Array(
                        child
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|m| {
                                let mut e = Map::new();
                                for f in ["manager", "operation", "subresource"] {
                                    if let Some(x) = m.get(f) {
                                        e.insert(f.into(), x.clone());
                                    }
                                }
                                Value::Object(e)
                            })
                            .collect(),
                    ),
                    "nodePort" if child.as_u64().is_some_and(|p| (30000..=32767).contains(&p)) => {
                        Value::String("<nodePort in range>".into())
                    }
                    _ => normalise(child, k),
                };
                out.insert(k.clone(), n);
            }
            // A generated name is its prefix and a placeholder.
            if let Some(prefix) = o.get("generateName").and_then(Value::as_str) {
                if o.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with(prefix))
                {
                    out.insert("name".into(), Value::String(format!("{prefix}<gen>")));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| normalise(x, key)).collect()),
        Value::String(s) => Value::String(
            scalar(s)
                .map(str::to_string)
                .or_else(|| generated(s, key))
                .unwrap_or_else(|| s.clone()),
        ),
        other => other.clone(),
    }
}

/// Names with a random suffix outside `metadata.name`: a pod's hostname-ish references.
fn generated(s: &str, key: &str) -> Option<String> {
    let (prefix, suffix) = s.rsplit_once('-')?;
    let random = suffix.len() == 5
        && suffix
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (random && matches!(key, "name" | "hostname" | "podName")).then(|| format!("{prefix}-<gen>"))
}

/// Differences between two outputs, as (path, sandbox, cluster).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => diff(&p, l, r, out),
                    (l, r) => out.push((p, show(l), show(r))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), l, r, out);
            }
        }
        _ if a != b => out.push((path.to_string(), a.to_string(), b.to_string())),
        _ => {}
    }
}

fn show(v: Option<&Value>) -> String {
    v.map(Value::to_string).unwrap_or_else(|| "(absent)".into())
}

const CM1: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  labels:\n    app: a\ndata:\n  k: v\n";
const CM1_REPLACED: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  labels:\n    app: a\n    tier: web\ndata:\n  x: x1\n";
const CM1_STALE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  resourceVersion: \"1\"\ndata:\n  x: z\n";
const CM2_ALICE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\n  labels:\n    tier: db\ndata:\n  a: \"1\"\n";
const CM2_BOB: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\ndata:\n  a: \"2\"\n  b: \"3\"\n";
const BAD_LABEL: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm3\n  labels:\n    app: \"-bad-\"\n";

/// The transcript: (step, kubectl arguments, stdin, output shape).
fn transcript() -> Vec<(&'static str, Vec<&'static str>, Option<&'static str>, Shape)> {
    use Shape::*;
    vec![
        ("create -f", vec!["create", "-f", "-"], Some(CM1), Text),
        (
            "get -o json",
            vec!["get", "configmap", "cm1", "-o", "json"],
            None,
            Json,
        ),
        (
            "label",
            vec!["label", "configmap", "cm1", "tier=web"],
            None,
            Text,
        ),
        (
            "label exists",
            vec!["label", "configmap", "cm1", "tier=db"],
            None,
            Text,
        ),
        (
            "annotate",
            vec!["annotate", "configmap", "cm1", "note=hello"],
            None,
            Text,
        ),
        (
            "patch merge",
            vec![
                "patch",
                "configmap",
                "cm1",
                "--type=merge",
                "-p",
                r#"{"data":{"k":"v2","m":"n"}}"#,
            ],
            None,
            Text,
        ),
        (
            "patch json",
            vec![
                "patch",
                "configmap",
                "cm1",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/data/j","value":"1"},{"op":"remove","path":"/data/m"}]"#,
            ],
            None,
            Text,
        ),
        (
            "patch json fails",
            vec![
                "patch",
                "configmap",
                "cm1",
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/data/missing"}]"#,
            ],
            None,
            Text,
        ),
        (
            "after patches",
            vec!["get", "configmap", "cm1", "-o", "json"],
            None,
            Json,
        ),
        (
            "create deployment",
            vec!["create", "deployment", "web", "--image=busybox"],
            None,
            Text,
        ),
        (
            "patch strategic",
            vec![
                "patch",
                "deployment",
                "web",
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"busybox","image":"busybox:1.36","env":[{"name":"A","value":"1"}]}]}}}}"#,
            ],
            None,
            Text,
        ),
        (
            "deployment",
            vec!["get", "deployment", "web", "-o", "json"],
            None,
            Json,
        ),
        (
            "apply --server-side",
            vec!["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            Some(CM2_ALICE),
            Text,
        ),
        (
            "apply conflict",
            vec!["apply", "--server-side", "--field-manager=bob", "-f", "-"],
            Some(CM2_BOB),
            Text,
        ),
        (
            "apply force",
            vec![
                "apply",
                "--server-side",
                "--field-manager=bob",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(CM2_BOB),
            Text,
        ),
        (
            "applied",
            vec!["get", "configmap", "cm2", "-o", "json"],
            None,
            Json,
        ),
        (
            "replace",
            vec!["replace", "-f", "-"],
            Some(CM1_REPLACED),
            Text,
        ),
        (
            "replace stale",
            vec!["replace", "-f", "-"],
            Some(CM1_STALE),
            Text,
        ),
        (
            "label selector",
            vec!["get", "configmaps", "-l", "tier=web", "-o", "name"],
            None,
            Text,
        ),
        (
            "set selector",
            vec![
                "get",
                "configmaps",
                "-l",
                "tier in (web,db),app!=b",
                "-o",
                "name",
            ],
            None,
            Text,
        ),
        (
            "field selector",
            vec![
                "get",
                "configmaps",
                "--field-selector",
                "metadata.name=cm2",
                "-o",
                "name",
            ],
            None,
            Text,
        ),
        (
            "dry-run=server",
            vec![
                "create",
                "configmap",
                "dry",
                "--from-literal=a=b",
                "--dry-run=server",
                "-o",
                "json",
            ],
            None,
            Json,
        ),
        (
            "dry run left nothing",
            vec!["get", "configmap", "dry"],
            None,
            Text,
        ),
        ("404", vec!["get", "configmap", "nope"], None, Text),
        (
            "409",
            vec!["create", "configmap", "cm2", "--from-literal=a=b"],
            None,
            Text,
        ),
        (
            "422 name",
            vec!["create", "configmap", "Bad_Name"],
            None,
            Text,
        ),
        (
            "422 label",
            vec!["create", "-f", "-"],
            Some(BAD_LABEL),
            Text,
        ),
        (
            "create service clusterip",
            vec!["create", "service", "clusterip", "s1", "--tcp=80:8080"],
            None,
            Text,
        ),
        (
            "clusterip service",
            vec!["get", "service", "s1", "-o", "json"],
            None,
            Json,
        ),
        (
            "create service nodeport",
            vec!["create", "service", "nodeport", "np", "--tcp=81:8081"],
            None,
            Text,
        ),
        (
            "nodeport service",
            vec!["get", "service", "np", "-o", "json"],
            None,
            Json,
        ),
        (
            "node port taken",
            vec![
                "create",
                "service",
                "nodeport",
                "np2",
                "--tcp=82:8082",
                "--node-port=30082",
            ],
            None,
            Text,
        ),
        (
            "node port clash",
            vec![
                "create",
                "service",
                "nodeport",
                "np3",
                "--tcp=83:8083",
                "--node-port=30082",
            ],
            None,
            Text,
        ),
        (
            "create cronjob",
            vec![
                "create",
                "cronjob",
                "cj",
                "--image=busybox",
                "--schedule=*/5 * * * *",
            ],
            None,
            Text,
        ),
        (
            "cronjob",
            vec!["get", "cronjob", "cj", "-o", "json"],
            None,
            Json,
        ),
        (
            "create secret",
            vec!["create", "secret", "generic", "sec", "--from-literal=p=q"],
            None,
            Text,
        ),
        (
            "secret",
            vec!["get", "secret", "sec", "-o", "json"],
            None,
            Json,
        ),
        (
            "create job",
            vec!["create", "job", "pj", "--image=busybox", "--", "true"],
            None,
            Text,
        ),
        ("job", vec!["get", "job", "pj", "-o", "json"], None, Json),
        ("delete", vec!["delete", "configmap", "cm1"], None, Text),
        (
            "delete again",
            vec!["delete", "configmap", "cm1"],
            None,
            Text,
        ),
    ]
}

fn allowed(step: &str, path: &str) -> Option<usize> {
    ALLOWED
        .iter()
        .chain(RACY)
        .position(|(s, p, _)| (*s == "*" || *s == step) && path.starts_with(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_answers_kubectl_as_the_real_apiserver_does() {
    // The real control plane starts meanwhile (20–40 s).
    let real = tokio::task::spawn_blocking(cluster::cluster);
    let lp = Loop::start_with(test_config()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    lp.sandbox
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    let real = real.await.expect("cluster");
    let sandbox = Side {
        bin: real.kubectl.clone(),
        kubeconfig,
    };
    let cluster = Side {
        bin: real.kubectl.clone(),
        kubeconfig: real.kubeconfig.clone(),
    };
    let mut problems = Vec::new();
    let mut used = vec![false; ALLOWED.len() + RACY.len()];
    let mut compare = |step: &str, s: Out, c: Out| {
        let mut diffs = Vec::new();
        if s.ok != c.ok {
            diffs.push(("ok".to_string(), s.ok.to_string(), c.ok.to_string()));
        }
        match (&s.stdout, &c.stdout) {
            (Value::String(a), Value::String(b)) if a != b => {
                diffs.push(("stdout".into(), a.clone(), b.clone()))
            }
            (a, b) => diff("", a, b, &mut diffs),
        }
        if s.stderr != c.stderr {
            diffs.push(("stderr".into(), s.stderr.clone(), c.stderr.clone()));
        }
        for (path, a, b) in diffs {
            match allowed(step, &path) {
                Some(i) => used[i] = true,
                None => problems.push(format!(
                    "{step}: {path}\n    sandbox: {a}\n    cluster: {b}"
                )),
            }
        }
    };
    let run = |side: &Side, args: &[&str], stdin: Option<&str>, shape: &Shape| {
        side.run(args, stdin, shape)
    };
    for (step, args, stdin, shape) in transcript() {
        let s = run(&sandbox, &args, stdin, &shape);
        let c = run(&cluster, &args, stdin, &shape);
        compare(step, s, c);
    }
    // The Job's controller makes its pod on both (the sandbox's kubelet stand-in runs it; kwok
    // does in the e2e cluster).
    let pods = ["get", "pods", "-l", "job-name=pj", "-o", "json"];
    let one = |v: &Value| v["items"].as_array().is_some_and(|i| i.len() == 1);
    compare(
        "job's pods",
        sandbox.wait(&pods, one),
        cluster.wait(&pods, one),
    );

    for (i, (step, path, why)) in ALLOWED.iter().enumerate() {
        if !used[i] {
            problems.push(format!(
                "allowed but did not differ: {step}: {path} ({why})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} divergences between the sandbox and kube-apiserver v1.37:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
