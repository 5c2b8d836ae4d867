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
    assert!(
        err.contains("unstampedFallback") || err.contains("maybe"),
        "{err}"
    );
    let good = dir.path().join("good.yaml");
    let (_, defaults, _) = portico(&["config", "defaults"], None);
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
