//! The e2e tier: Portico in the admission path of a real Kubernetes v1.37 control plane
//! (etcd, kube-apiserver, kube-controller-manager with per-controller service accounts,
//! kube-scheduler; see tests/cluster/), driven with kubectl 1.37 as users would. What the sandbox
//! tests assume about Kubernetes — who the controllers are, what they copy, what the apiserver
//! sends for subresources and deletes, which manifests it accepts — is checked here against the
//! real thing.
//!
//! All tests share one cluster and the namespace `team`, so every object has its own name.
//! No kubelet runs: pods stay Pending unless a test writes their status as the node would.

mod cluster;
mod kubectl_bin;

use cluster::{cluster, eventually, Cluster};
use serde_json::Value;

/// Pods (as admin) whose label `key` satisfies `pick`, as JSON.
fn pods_where(c: &Cluster, key: &str, pick: impl Fn(&str) -> bool) -> Vec<Value> {
    let out = c.ok("admin", &["get", "pods", "-o", "json"], None);
    let list: Value = serde_json::from_str(&out).expect("pod list");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["labels"][key].as_str().is_some_and(&pick))
        .collect()
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["labels"][key].as_str()
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A refusal by Portico's webhook (not RBAC, not the apiserver's own validation).
fn assert_portico_denied(r: &kubectl_bin::Ran, what: &str, needle: &str) {
    assert!(!r.ok, "{what} was accepted: {}", r.out);
    assert!(
        r.err.contains("admission webhook") && r.err.contains("denied the request"),
        "{what}: refused, but not by Portico: {}",
        r.err
    );
    assert!(
        r.err.contains(needle),
        "{what}: expected {needle:?} in: {}",
        r.err
    );
}

fn indexed_job(name: &str, tag: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
    portico.dev/ipaddr: {tag}
spec:
  completionMode: Indexed
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: busybox}}]
"#
    )
}

// --- 1. the admission loop ---

/// user1's Job goes through the real job controller (as
/// system:serviceaccount:kube-system:job-controller) and its pods come out labelled for user1;
/// user2 cannot relabel them.
#[test]
fn a_job_by_user1_gets_pods_labelled_for_user1_from_the_real_job_controller() {
    let c = cluster();
    let r = c.kubectl(
        "user1",
        &["create", "-f", "-"],
        Some(&indexed_job("lab", "foobar")),
    );
    assert!(r.ok, "{}", r.err);
    assert!(
        r.err.contains("Warning: portico:") && r.err.contains("user1-foobar"),
        "{}",
        r.err
    );
    let pods = eventually(60, "the job controller's two pods of job lab", || {
        let pods = pods_where(c, "job-name", |j| j == "lab");
        (pods.len() == 2).then_some(pods)
    });
    for p in &pods {
        assert_eq!(label(p, "jarvice-job-ipaddr"), Some("user1-foobar"), "{p}");
        assert_eq!(label(p, "portico.dev/owner"), Some("user1"), "{p}");
        assert_eq!(annotation(p, "portico.dev/user"), Some("user1"), "{p}");
        // Made by the controller, not by user1: the stamp came through the pod template.
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job", "{p}");
    }
    let first: Vec<&Value> = pods
        .iter()
        .filter(|p| label(p, "jarvice-pod0-job-ipaddr") == Some("user1-foobar"))
        .collect();
    assert_eq!(first.len(), 1, "exactly one first pod: {pods:?}");
    assert_eq!(
        annotation(first[0], "batch.kubernetes.io/job-completion-index"),
        Some("0")
    );

    let pod = name(&pods[0]);
    let r = c.kubectl(
        "user2",
        &[
            "label",
            "pod",
            &pod,
            "jarvice-job-ipaddr=user2-x",
            "--overwrite",
        ],
        None,
    );
    assert_portico_denied(&r, "user2's relabel", "cannot be changed afterwards");
    let r = c.kubectl(
        "user1",
        &[
            "annotate",
            "pod",
            &pod,
            "portico.dev/user=user2",
            "--overwrite",
        ],
        None,
    );
    assert!(!r.ok, "identity annotation changed: {}", r.out);
}

/// kubectl's typed generators build objects client-side from flags; they pass Portico's webhooks
/// on the real apiserver, and the controllers behind them still create their pods.
#[test]
fn kubectl_typed_generators_work() {
    let c = cluster();
    c.ok("user1", &["create", "namespace", "made-by-user1"], None);
    c.ok(
        "user1",
        &[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=1",
        ],
        None,
    );
    c.ok("user1", &["create", "job", "once", "--image=busybox"], None);
    c.ok(
        "user1",
        &[
            "create",
            "cronjob",
            "typed-cron",
            "--image=busybox",
            "--schedule=0 3 * * *",
        ],
        None,
    );
    c.ok(
        "user1",
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        None,
    );
    eventually(60, "the deployment's pod (replicaset controller)", || {
        (!pods_where(c, "app", |a| a == "web").is_empty()).then_some(())
    });
    eventually(60, "job once's pod (job controller)", || {
        (!pods_where(c, "job-name", |j| j == "once").is_empty()).then_some(())
    });
}

/// A Deployment's pods (through the real deployment and replicaset controllers) and a
/// StatefulSet's pods carry user1's route value; the StatefulSet's ordinal 0 is the first pod.
#[test]
fn deployment_and_statefulset_pods_are_labelled_for_their_user() {
    let c = cluster();
    let workload = |kind: &str, name: &str, tag: &str, extra: &str| {
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  annotations:\n    \
             portico.dev/ipaddr: {tag}\nspec:\n  replicas: 2\n{extra}  selector:\n    \
             matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: \
             {name}}}\n    spec:\n      containers: [{{name: main, image: busybox}}]\n"
        )
    };
    c.ok(
        "user1",
        &["create", "-f", "-"],
        Some(&workload("Deployment", "dep-web", "depweb", "")),
    );
    c.ok(
        "user1",
        &["create", "-f", "-"],
        Some(&workload(
            "StatefulSet",
            "sts-db",
            "stsdb",
            "  serviceName: sts-db\n  podManagementPolicy: Parallel\n",
        )),
    );
    let deployed = eventually(60, "the deployment's two pods", || {
        let pods = pods_where(c, "app", |a| a == "dep-web");
        (pods.len() == 2).then_some(pods)
    });
    for p in &deployed {
        assert_eq!(label(p, "jarvice-job-ipaddr"), Some("user1-depweb"), "{p}");
        assert_eq!(label(p, "portico.dev/owner"), Some("user1"), "{p}");
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet",
            "{p}"
        );
    }
    let stateful = eventually(60, "the statefulset's two pods", || {
        let pods = pods_where(c, "app", |a| a == "sts-db");
        (pods.len() == 2).then_some(pods)
    });
    for p in &stateful {
        assert_eq!(label(p, "jarvice-job-ipaddr"), Some("user1-stsdb"), "{p}");
        let first = label(p, "jarvice-pod0-job-ipaddr") == Some("user1-stsdb");
        assert_eq!(
            first,
            name(p) == "sts-db-0",
            "only ordinal 0 is the first pod: {p}"
        );
    }
}

/// `--as`: an administrator impersonating user1 creates a pod stamped for user1 (identity is the
/// impersonated user's, as the apiserver hands it to the webhook); user1 cannot impersonate.
#[test]
fn impersonation_stamps_the_impersonated_user_and_is_not_for_tenants() {
    let c = cluster();
    let r = c.kubectl(
        "admin",
        &[
            "--as",
            "user1",
            "run",
            "as-user1",
            "--image=busybox",
            "--annotations=portico.dev/ipaddr=asuser",
            "-o",
            "json",
        ],
        None,
    );
    assert!(r.ok, "{}", r.err);
    let pod: Value = serde_json::from_str(&r.out).expect("pod");
    assert_eq!(
        label(&pod, "jarvice-job-ipaddr"),
        Some("user1-asuser"),
        "{pod}"
    );
    assert_eq!(annotation(&pod, "portico.dev/user"), Some("user1"), "{pod}");
    let r = c.kubectl(
        "user1",
        &["--as", "user2", "run", "as-user2", "--image=busybox"],
        None,
    );
    assert!(!r.ok, "user1 impersonated user2: {}", r.out);
    assert!(r.err.contains("cannot impersonate"), "{}", r.err);
}

/// The provisioner, as Portico's service account with only the shipped RBAC, makes an Exposure's
/// Service on the real apiserver (server-side apply) and reports it in the Exposure's status.
#[test]
fn the_provisioner_makes_an_exposures_service_as_its_own_service_account() {
    let c = cluster();
    c.ok(
        "user1",
        &["create", "-f", "-"],
        Some(&indexed_job("exp-lab", "explab")),
    );
    let exposure = r#"
apiVersion: portico.dev/v1alpha1
kind: Exposure
metadata:
  name: explab
spec:
  tag: explab
  target: pod0
  service:
    ports: [{name: http, port: 80, targetPort: 8888}]
"#;
    c.ok("user1", &["create", "-f", "-"], Some(exposure));
    let service = eventually(30, "the Exposure's Service in its status", || {
        let ex: Value = serde_json::from_str(&c.ok(
            "user1",
            &["get", "exposure", "explab", "-o", "json"],
            None,
        ))
        .ok()?;
        ex["status"]["service"].as_str().map(str::to_string)
    });
    let svc: Value = serde_json::from_str(&c.ok(
        "user1",
        &[
            "get",
            "service",
            &service,
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    ))
    .expect("service");
    assert_eq!(
        svc["spec"]["selector"]["jarvice-pod0-job-ipaddr"], "user1-explab",
        "{svc}"
    );
    assert!(
        svc["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|m| m.iter().any(|f| f["manager"] == "portico")),
        "not applied by Portico: {svc}"
    );
    // user1 made the Exposure, not the Service: that is Portico's, and refused to user2.
    let r = c.kubectl(
        "user2",
        &["delete", "service", &service, "--wait=false"],
        None,
    );
    assert_portico_denied(&r, "user2 deleting user1's exposed Service", "user1");
}

// --- 2. ownership attacks, end to end ---

/// user2's CronJob carries user1's identity in `spec.jobTemplate.metadata`, which the real
/// cronjob controller copies onto the Job it makes: the pods the real job controller then makes
/// are user2's, never user1's.
#[test]
fn a_cronjob_forging_user1_in_its_job_metadata_makes_pods_for_user2() {
    let c = cluster();
    let cronjob = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    metadata:
      annotations:
        portico.dev/user: user1
        portico.dev/ipaddr: foobar
      labels:
        portico.dev/owner: user1
        jarvice-pod0-job-ipaddr: user1-foobar
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: main, image: busybox}]
"#;
    let r = c.kubectl("user2", &["create", "-f", "-"], Some(cronjob));
    assert!(r.ok, "{}", r.err);
    assert!(r.err.contains("jobTemplate.metadata"), "{}", r.err);
    // The cronjob controller runs `* * * * *` at the next minute boundary: at most 60 s away.
    let job = eventually(70, "the cronjob controller's Job", || {
        let out = c.ok("admin", &["get", "jobs", "-o", "json"], None);
        let list: Value = serde_json::from_str(&out).expect("job list");
        list["items"].as_array().and_then(|jobs| {
            jobs.iter()
                .find(|j| j["metadata"]["ownerReferences"][0]["name"] == "nightly")
                .cloned()
        })
    });
    // No more runs: they would only repeat this one. (Suspended, not deleted: deleting would
    // have the garbage collector take this Job and its pods away.)
    c.ok(
        "user2",
        &[
            "patch",
            "cronjob",
            "nightly",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
        None,
    );
    assert_ne!(annotation(&job, "portico.dev/user"), Some("user1"), "{job}");
    assert_ne!(label(&job, "portico.dev/owner"), Some("user1"), "{job}");
    let job_name = name(&job);
    let pods = eventually(30, "the job controller's pod of the cronjob's Job", || {
        let pods = pods_where(c, "job-name", |j| j == job_name);
        (!pods.is_empty()).then_some(pods)
    });
    for p in &pods {
        for key in ["jarvice-job-ipaddr", "jarvice-pod0-job-ipaddr"] {
            assert!(
                !label(p, key).is_some_and(|v| v.starts_with("user1-")),
                "{key} on {p}"
            );
        }
        assert_eq!(label(p, "jarvice-job-ipaddr"), Some("user2-foobar"), "{p}");
        assert_eq!(label(p, "portico.dev/owner"), Some("user2"), "{p}");
        assert_eq!(annotation(p, "portico.dev/user"), Some("user2"), "{p}");
    }
}

fn pod_yaml(name: &str, tag: &str, node: Option<&str>) -> String {
    let node = node
        .map(|n| format!("  nodeName: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    portico.dev/ipaddr: {tag}\nspec:\n{node}  containers: [{{name: main, image: busybox}}]\n"
    )
}

/// The status subresource can change a pod's labels: an administrator is refused by Portico; a
/// node is not sent to Portico at all (the shipped matchCondition skips system:nodes) and is
/// refused by the apiserver's NodeRestriction instead — which is why the cluster must run it. The
/// node's ordinary status writes (what a kubelet does) go through.
#[test]
fn pods_status_cannot_relabel_a_pod_for_an_admin_or_a_node() {
    let c = cluster();
    c.ok(
        "user1",
        &["create", "-f", "-"],
        Some(&pod_yaml("bound", "bound", Some("e2e-node"))),
    );
    let relabel = r#"{"metadata":{"labels":{"jarvice-job-ipaddr":"user2-trap"}}}"#;
    // What a kubelet does: PUT the whole pod to pods/status. (`kubectl patch --subresource`
    // first GETs pods/status, which the Node authorizer does not grant.)
    let put_status = |edit: &dyn Fn(&mut Value)| {
        let mut pod: Value =
            serde_json::from_str(&c.ok("admin", &["get", "pod", "bound", "-o", "json"], None))
                .expect("pod");
        edit(&mut pod);
        c.kubectl(
            "node",
            &[
                "replace",
                "--raw",
                "/api/v1/namespaces/team/pods/bound/status",
                "-f",
                "-",
            ],
            Some(&pod.to_string()),
        )
    };
    let patch = |who: &str, body: &str| {
        c.kubectl(
            who,
            &[
                "patch",
                "pod",
                "bound",
                "--subresource=status",
                "--type=merge",
                "-p",
                body,
            ],
            None,
        )
    };
    let r = patch("admin", relabel);
    assert_portico_denied(
        &r,
        "admin's relabel through pods/status",
        "status subresource",
    );
    let r = put_status(&|p| p["metadata"]["labels"]["jarvice-job-ipaddr"] = "user2-trap".into());
    assert!(!r.ok, "the node relabelled through pods/status: {}", r.out);
    assert!(
        r.err.contains("cannot update labels through pod status"),
        "{}",
        r.err
    );
    // Playing the kubelet: the node reports the pod running.
    let r = put_status(&|p| {
        p["status"]["phase"] = "Running".into();
        p["status"]["conditions"] = serde_json::json!([{"type": "Ready", "status": "True"}]);
    });
    assert!(r.ok, "{}", r.err);
    let pod: Value =
        serde_json::from_str(&c.ok("admin", &["get", "pod", "bound", "-o", "json"], None))
            .expect("pod");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(label(&pod, "jarvice-job-ipaddr"), Some("user1-bound"));
}

/// user2 cannot change user1's Service, Exposure or Deployment, nor delete user1's pod; user1
/// can delete it. Each refusal names the owner.
#[test]
fn user2_cannot_update_or_delete_what_user1_owns() {
    let c = cluster();
    let service = r#"
apiVersion: v1
kind: Service
metadata:
  name: own-svc
spec:
  selector: {jarvice-job-ipaddr: user1-owned}
  ports: [{port: 80}]
"#;
    let exposure = r#"
apiVersion: portico.dev/v1alpha1
kind: Exposure
metadata:
  name: own-exposure
spec:
  tag: owned
  service:
    ports: [{name: http, port: 80}]
"#;
    let deployment = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: own-deploy
  annotations:
    portico.dev/ipaddr: owned
spec:
  replicas: 1
  selector:
    matchLabels: {app: own-deploy}
  template:
    metadata:
      labels: {app: own-deploy}
    spec:
      containers: [{name: main, image: busybox}]
"#;
    for doc in [service, exposure, deployment] {
        c.ok("user1", &["create", "-f", "-"], Some(doc));
    }
    c.ok(
        "user1",
        &["create", "-f", "-"],
        Some(&pod_yaml("own-pod", "owned", None)),
    );

    let r = c.kubectl(
        "user2",
        &[
            "patch",
            "service",
            "own-svc",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"jarvice-job-ipaddr":"user2-trap"}}}"#,
        ],
        None,
    );
    assert_portico_denied(&r, "user2 re-pointing user1's Service", "user1");
    let r = c.kubectl(
        "user2",
        &[
            "patch",
            "exposure",
            "own-exposure",
            "--type=merge",
            "-p",
            r#"{"spec":{"service":{"ports":[{"name":"http","port":8080}]}}}"#,
        ],
        None,
    );
    assert_portico_denied(&r, "user2 changing user1's Exposure", "user1");
    let r = c.kubectl(
        "user2",
        &["set", "image", "deployment/own-deploy", "main=evil"],
        None,
    );
    assert_portico_denied(&r, "user2 changing user1's Deployment", "user \"user1\"");

    let r = c.kubectl("user2", &["delete", "pod", "own-pod", "--wait=false"], None);
    assert_portico_denied(
        &r,
        "user2 deleting user1's pod",
        "Pod team/own-pod belongs to user \"user1\"",
    );
    c.ok("user1", &["delete", "pod", "own-pod", "--wait=false"], None);
}

// --- 3. the shipped manifests ---

/// The shipped manifests are what the real apiserver accepts: the base was applied for real when
/// the cluster started (CRD with a structural schema, RBAC, webhook configurations with their
/// matchConditions); the self-managed overlay, with certificates made by `portico certs`, passes a
/// server-side dry run.
#[test]
fn the_shipped_manifests_apply_cleanly() {
    let c = cluster();
    let crd: Value = serde_json::from_str(&c.ok(
        "admin",
        &["get", "crd", "exposures.portico.dev", "-o", "json"],
        None,
    ))
    .expect("crd");
    let conditions = crd["status"]["conditions"].as_array().expect("conditions");
    let status = |t: &str| {
        conditions
            .iter()
            .find(|x| x["type"] == t)
            .map(|x| x["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status("Established").as_deref(), Some("True"), "{crd}");
    assert_eq!(status("NonStructuralSchema"), None, "{crd}");
    let hooks: Value = serde_json::from_str(&c.ok(
        "admin",
        &[
            "get",
            "validatingwebhookconfiguration",
            "portico",
            "-o",
            "json",
        ],
        None,
    ))
    .expect("webhooks");
    assert!(
        hooks["webhooks"][0]["matchConditions"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{hooks}"
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(root.join("manifests"))
        .arg(tmp.path())
        .status()
        .expect("cp");
    assert!(copy.success());
    let overlay = tmp.path().join("manifests/overlays/self-managed");
    let certs = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args([
            "certs",
            "--service",
            "portico",
            "--namespace",
            "portico-system",
            "--out",
        ])
        .arg(overlay.join("certs"))
        .output()
        .expect("portico certs");
    assert!(certs.status.success(), "{certs:?}");
    let out = c.ok(
        "admin",
        &[
            "apply",
            "--dry-run=server",
            "-k",
            overlay.to_str().expect("utf-8 path"),
            // Its objects are in portico-system (kubectl_bin passes `-n team` first).
            "-n",
            "portico-system",
        ],
        None,
    );
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/exposures.portico.dev",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/portico",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/portico",
        "clusterrole.rbac.authorization.k8s.io/portico",
        "deployment.apps/portico",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
}

// --- 4. the audit, against the real cluster ---

/// `portico audit` reads the real cluster (whatever the other tests made meanwhile) and finds no
/// violation: everything routed went through Portico. Retried for a few seconds, since a Service
/// may lag its Exposure for a moment while the provisioner converges.
#[test]
fn portico_audit_finds_no_violation_in_the_real_cluster() {
    let c = cluster();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["audit", "--context", "admin", "--kubeconfig"])
            .arg(&c.kubeconfig)
            .output()
            .expect("portico audit")
    };
    let mut last = String::new();
    let clean = (0..20).any(|_| {
        let out = run();
        last = format!(
            "exit {:?}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success() || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            false
        }
    });
    assert!(clean, "portico audit found violations:\n{last}");
    assert!(last.contains("0 violation(s)"), "{last}");
}
