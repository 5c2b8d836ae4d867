//! The offline commands, run as a user runs them: the built binary, files and stdin.

use std::io::Write;
use std::process::{Command, Stdio};

fn portico(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const MANIFESTS: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: lab
  annotations:
    portico.dev/ipaddr: foobar
spec:
  completionMode: Indexed
  template:
    spec:
      containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata:
  name: login
  labels:
    jarvice-job-ipaddr: foobar
spec:
  containers: [{name: main, image: busybox}]
"#;

#[test]
fn mutate_prints_manifests_as_stored_with_warnings_on_stderr() {
    let (code, out, err) = portico(&["mutate", "--user", "user1"], Some(MANIFESTS));
    assert_eq!(code, 0, "{err}");
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    let template = &docs[0]["spec"]["template"]["metadata"];
    assert_eq!(template["labels"]["jarvice-job-ipaddr"], "user1-foobar");
    assert_eq!(template["annotations"]["portico.dev/user"], "user1");
    assert_eq!(
        docs[1]["metadata"]["labels"]["jarvice-pod0-job-ipaddr"],
        "user1-foobar"
    );
    assert!(
        err.contains("Warning: portico: pod labelled jarvice-job-ipaddr=user1-foobar"),
        "{err}"
    );
}

#[test]
fn mutate_exits_non_zero_with_the_denial() {
    let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    portico.dev/ipaddr: 'bad tag-'\n";
    let (code, _, err) = portico(&["mutate", "--user", "user1"], Some(bad));
    assert_eq!(code, 1);
    assert!(
        err.contains("denied: Pod p") && err.contains("not a valid label value"),
        "{err}"
    );
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  selector:\n    jarvice-job-ipaddr: user1-foobar\n";
    let (code, _, err) = portico(&["mutate", "--user", "user2"], Some(service));
    assert_eq!(code, 1, "{err}");
}

#[test]
fn review_reads_stdin_and_refuses_what_is_not_a_review() {
    let (code, _, err) = portico(&["review"], Some("{\"kind\": \"Pod\"}"));
    assert_eq!(code, 2);
    assert!(
        err.contains("HTTP 400") && err.contains("apiVersion"),
        "{err}"
    );
    let (code, _, err) = portico(&["review"], Some("not json"));
    assert_eq!(code, 2);
    assert!(err.contains("not JSON"), "{err}");
}

#[test]
fn config_check_explains_bad_values_and_accepts_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "labels:\n  job: 'no good'\nidentity:\n  unstampedFallback: maybe\n",
    )
    .unwrap();
    let (code, _, err) = portico(&["config", "check", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    // Both problems at once: a bad value type (enum) and a bad value, each by its key.
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(
        err.contains("identity.unstampedFallback: \"maybe\" is not one of deny, namespace"),
        "{err}"
    );
    assert!(err.contains("labels.job"), "{err}");
    // A missing file: the OS error once.
    let missing = dir.path().join("missing.yaml");
    let (code, _, err) = portico(&["config", "check", missing.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let good = dir.path().join("good.yaml");
    let (_, defaults, _) = portico(&["config", "defaults"], None);
    for key in ["kubeconfig:", "context:", "impersonate:"] {
        assert!(defaults.contains(key), "{key} missing from the defaults");
    }
    std::fs::write(&good, defaults).unwrap();
    let (code, out, err) = portico(&["config", "check", good.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok") && !out.contains("warning"), "{out}");
    // A trusted submitter named by a plain user name works, with a warning that says why not.
    let plain = dir.path().join("plain.yaml");
    std::fs::write(
        &plain,
        "identity:\n  trustedSubmitters:\n    users: [portal, 'system:serviceaccount:hub:spawner']\n",
    )
    .unwrap();
    let (code, out, err) = portico(&["config", "check", plain.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "warning: identity.trustedSubmitters.users: \"portal\" is not a service account"
        ) && !out.contains("spawner\" is not"),
        "{out}"
    );
}

#[test]
fn help_explains_each_command() {
    for cmd in [
        vec!["--help"],
        vec!["review", "--help"],
        vec!["mutate", "--help"],
        vec!["config", "check", "--help"],
    ] {
        let (code, out, _) = portico(&cmd, None);
        assert_eq!(code, 0);
        assert!(out.contains("Usage"), "{cmd:?}");
    }
}

/// The cluster `review --cluster` reads: user1's routed pod at 10.244.0.5 (a `List`, as
/// `kubectl get -o yaml` prints it) and user2's at 10.244.0.6.
const STATE: &str = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata:
      name: lab-0
      namespace: team
      labels: {jarvice-job-ipaddr: user1-foobar, portico.dev/owner: user1}
    status: {phase: Running, podIP: 10.244.0.5, podIPs: [{ip: 10.244.0.5}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: mine-0
  namespace: team
  labels: {jarvice-job-ipaddr: user2-mine, portico.dev/owner: user2}
status: {phase: Running, podIP: 10.244.0.6}
"#;

/// An EndpointSlice user2 writes by hand, listing `address`.
fn slice_review(address: &str) -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "slice-1",
            "kind": {"group": "discovery.k8s.io", "version": "v1", "kind": "EndpointSlice"},
            "resource": {"group": "discovery.k8s.io", "version": "v1", "resource": "endpointslices"},
            "namespace": "team",
            "name": "side-door",
            "operation": "CREATE",
            "userInfo": {"username": "user2", "groups": ["system:authenticated"]},
            "object": {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "side-door", "namespace": "team",
                    "labels": {"kubernetes.io/service-name": "side-door"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address]}],
                "ports": [{"port": 8080}]
            }
        }
    })
    .to_string()
}

#[test]
fn review_with_cluster_refuses_an_endpointslice_to_another_users_pod() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.yaml");
    std::fs::write(&state, STATE).unwrap();
    let slice = dir.path().join("slice-review.json");
    let review = |address: &str, cluster: &[&str]| {
        std::fs::write(&slice, slice_review(address)).unwrap();
        let mut args = vec!["review", "--validate"];
        for c in cluster {
            args.extend(["--cluster", c]);
        }
        args.extend(["-f", slice.to_str().unwrap()]);
        let (code, out, err) = portico(&args, None);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["response"].clone()
    };
    let state = state.to_str().unwrap();
    // user1's routed pod: refused, naming the pod and its owner.
    let denied = review("10.244.0.5", &[state]);
    assert_eq!(denied["allowed"], false, "{denied}");
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("team/lab-0") && message.contains("\"user1\""),
        "{message}"
    );
    // user2's own pod, from a folder: allowed.
    let allowed = review("10.244.0.6", &[dir.path().to_str().unwrap()]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    // Without that pod in the cluster (no --cluster: nothing routed), the address is nobody's.
    let allowed = review("10.244.0.5", &[]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    // A cluster file that is not YAML is an error, not an empty cluster.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "items: [").unwrap();
    let (code, _, err) = portico(
        &[
            "review",
            "--validate",
            "--cluster",
            broken.to_str().unwrap(),
        ],
        Some(&slice_review("10.244.0.5")),
    );
    assert_eq!(code, 2);
    assert!(err.contains("broken.yaml"), "{err}");
}
