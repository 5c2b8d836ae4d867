//! `portico audit -f FILE_OR_DIR` on the manifests in tests/data/audit: every object named after a rule
//! is reported under that rule, the `ok-*` ones are not; the three output formats; exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/audit")
}

fn portico(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .env_remove("PORTICO_CONFIG")
        .output()
        .expect("portico runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_seeded_violation_is_found_and_nothing_else() {
    let dir = data();
    let out = portico(&["audit", "-f", dir.to_str().expect("utf-8"), "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    let mut got: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["object"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                f["object"]["name"].as_str().unwrap_or_default().to_string(),
                f["rule"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    let expected: Vec<(String, String, String)> = [
        ("lab", "drift"),
        ("lab", "exposure-conflict"),
        ("lab", "missing-routing-label"),
        ("lab", "unstamped-exposure"),
        ("shop", "foreign-endpoints"),
        ("shop", "foreign-selector"),
        ("shop", "forged-copied-identity"),
        ("shop", "hand-written-endpoints"),
        ("shop", "ingress-squat"),
        ("shop", "unattributed-endpoints"),
        ("team", "foreign-selector"),
        ("team", "missing-routing-label"),
        ("team", "orphaned-service"),
        ("team", "prefix-mismatch"),
        ("team", "unattributed-selector"),
        ("team", "unstamped-route"),
    ]
    .iter()
    .map(|(ns, name)| (ns.to_string(), name.to_string(), name.to_string()))
    .collect();
    assert_eq!(got, expected, "{}", stdout(&out));
    assert_eq!(report["violations"], 14);
    assert_eq!(report["warnings"], 2);
    assert_eq!(report["scanned"]["pods"], 7);
    assert_eq!(report["scanned"]["services"], 11);
    assert_eq!(report["scanned"]["ingresses"], 2);
    assert_eq!(report["scanned"]["exposures"], 4);
    assert_eq!(report["scanned"]["workloads"], 3);
    assert_eq!(report["scanned"]["endpoints"], 6);
    let messages: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("stamped user \"user2\" has prefix \"user2\"")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("provided port is already allocated")),
        "{messages:?}"
    );
}

#[test]
fn the_table_names_each_finding_and_sums_up() {
    let dir = data();
    let out = portico(&["audit", "-f", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let header = text.lines().next().expect("a header");
    for column in [
        "SEVERITY",
        "RULE",
        "NAMESPACE",
        "OBJECT",
        "ROUTE",
        "MESSAGE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(text.contains("Service/foreign-selector"), "{text}");
    assert!(
        text.contains("14 violation(s), 2 warning(s) in 7 pod(s), 11 service(s)"),
        "{text}"
    );
}

#[test]
fn policy_reports_are_wg_policy_shaped_per_namespace() {
    let dir = data();
    let out = portico(&[
        "audit",
        "-f",
        dir.to_str().expect("utf-8"),
        "-o",
        "policyreport",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    assert_eq!(docs.len(), 3, "{text}");
    for doc in &docs {
        assert_eq!(doc["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(doc["kind"], "PolicyReport");
        let results = doc["results"].as_array().expect("results");
        let fails = results.iter().filter(|r| r["result"] == "fail").count();
        assert_eq!(doc["summary"]["fail"], fails);
        for r in results {
            assert_eq!(r["policy"], "portico-routing");
            assert_eq!(r["source"], "portico");
            assert!(r["rule"].is_string() && r["message"].is_string());
            assert_eq!(r["resources"][0]["namespace"], doc["metadata"]["namespace"]);
        }
    }
    let team = docs
        .iter()
        .find(|d| d["metadata"]["namespace"] == "team")
        .expect("team's report");
    assert_eq!(team["summary"]["warn"], 1);
}

#[test]
fn exit_codes_clean_warning_strict_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::fs::read_to_string(data().join("team/services.yaml")).expect("read");
    // Only the unattributed Service (a warning) and the clean one.
    let list: Value = serde_yaml::from_str(&src).expect("yaml");
    let keep: Vec<Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| {
            matches!(
                i["metadata"]["name"].as_str(),
                Some("ok-own" | "unattributed-selector")
            )
        })
        .cloned()
        .collect();
    let text: String = keep
        .iter()
        .map(|v| format!("---\n{}", serde_yaml::to_string(v).expect("yaml")))
        .collect();
    std::fs::write(dir.path().join("s.yml"), text).expect("write");
    let path = dir.path().to_str().expect("utf-8");
    assert_eq!(portico(&["audit", "-f", path]).status.code(), Some(0));
    assert_eq!(
        portico(&["audit", "-f", path, "--strict"]).status.code(),
        Some(1)
    );
    // The one file itself, as kubectl's -f takes it.
    let file = dir.path().join("s.yml");
    let file = file.to_str().expect("utf-8");
    assert_eq!(portico(&["audit", "-f", file]).status.code(), Some(0));
    assert_eq!(
        portico(&["audit", "-f", file, "--strict"]).status.code(),
        Some(1)
    );
    // One namespace only: `lab` has four findings.
    let out = portico(&[
        "audit",
        "-f",
        data().to_str().expect("utf-8"),
        "-n",
        "lab",
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(4));
    // A path that does not exist is an error, exit 2, naming it.
    let out = portico(&["audit", "-f", "/nonexistent/portico-audit"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read /nonexistent/portico-audit"),
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

/// The ownership rules the webhook now enforces (copied identity, hand-written endpoints, Ingress
/// squatting, re-pointed selectors), on tests/data/audit/claims alone: exactly their findings,
/// exit 1, and the same rules in the PolicyReport.
#[test]
fn ownership_violations_in_manifests_are_reported_by_rule() {
    let dir = data().join("claims");
    let dir = dir.to_str().expect("utf-8");
    let out = portico(&["audit", "-f", dir, "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    let findings = report["findings"].as_array().expect("findings");
    let mut got: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default(),
                f["severity"].as_str().unwrap_or_default(),
                f["object"]["kind"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        vec![
            ("foreign-endpoints", "violation", "EndpointSlice"),
            ("foreign-selector", "violation", "Service"),
            ("forged-copied-identity", "violation", "CronJob"),
            ("hand-written-endpoints", "violation", "EndpointSlice"),
            ("ingress-squat", "violation", "Ingress"),
            ("unattributed-endpoints", "warning", "EndpointSlice"),
        ],
        "{}",
        stdout(&out)
    );
    // Every finding is on the object named after its rule: the ok-* objects pass.
    for f in findings {
        assert_eq!(f["object"]["name"], f["rule"], "{f}");
    }
    let message = |rule: &str| {
        findings
            .iter()
            .find(|f| f["rule"] == rule)
            .and_then(|f| f["message"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(message("forged-copied-identity").contains("spec.jobTemplate.metadata"));
    assert!(message("foreign-endpoints").contains("10.1.0.1 (pod shop/ok-web)"));
    assert!(message("ingress-squat").contains("user1-web.apps.test"));
    assert!(message("foreign-selector").contains("\"kubectl-edit\""));

    let out = portico(&["audit", "-f", dir, "-o", "policyreport"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    assert_eq!(docs.len(), 1, "{text}");
    let results = docs[0]["results"].as_array().expect("results");
    let mut rules: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or_default(),
                r["result"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        vec![
            ("foreign-endpoints", "fail"),
            ("foreign-selector", "fail"),
            ("forged-copied-identity", "fail"),
            ("hand-written-endpoints", "fail"),
            ("ingress-squat", "fail"),
            ("unattributed-endpoints", "warn"),
        ]
    );
    assert_eq!(docs[0]["summary"]["fail"], 5);
    assert_eq!(docs[0]["summary"]["warn"], 1);
    for r in results {
        assert!(
            r["properties"]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{r:?}"
        );
    }
}
