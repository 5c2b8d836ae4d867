//! Warn-only mode (`audit.mode: warn`) for rollout: every decision is still computed and
//! recorded, but a denial is answered as allowed, unchanged, with the admission warning
//! `portico (warn mode): would deny: <message>`, and the metrics count it as `would-deny`.

mod harness;
mod support;

use std::io::{Read, Write};

use harness::{test_config, Loop};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use portico::admission::{Endpoint, WARN_PREFIX};
use portico::config::{AuditMode, Config};
use portico::server::audit_log::AuditLog;
use serde_json::{json, Value};
use support::{pod, review, send, service, user, webhook, webhook_with};

const WARN: &str = "audit:\n  mode: warn\n";

#[test]
fn warn_mode_is_configured_with_a_default_of_enforce() {
    assert_eq!(Config::default().audit.mode, AuditMode::Enforce);
    let c = Config::from_yaml(WARN, "t").expect("config");
    assert_eq!(c.audit.mode, AuditMode::Warn);
    let err = Config::from_yaml("audit:\n  mode: maybe\n", "t")
        .expect_err("unknown mode")
        .to_string();
    assert!(err.contains("maybe"), "{err}");
    let err = Config::from_yaml("audit:\n  keepFiles: 0\n  maxFileBytes: 10\n", "t")
        .expect_err("bad rotation")
        .to_string();
    assert!(
        err.contains("audit.keepFiles") && err.contains("audit.maxFileBytes"),
        "{err}"
    );
}

#[test]
fn a_denial_becomes_an_allowed_answer_with_the_warning_and_no_patch() {
    let long = "x".repeat(60);
    let object = pod("p").tag(&long);
    let r = review("CREATE", &user("user1"), Some(&object), None);
    let enforced = send(&webhook(), Endpoint::Mutate, &r);
    assert!(!enforced.allowed);
    let warned = send(&webhook_with(WARN), Endpoint::Mutate, &r);
    assert!(warned.allowed, "{:?}", warned.raw);
    assert!(warned.patch.is_none(), "a would-be denial must not stamp");
    assert_eq!(
        warned.warnings,
        vec![format!("{WARN_PREFIX}{}", enforced.message)]
    );
    assert!(warned.warnings[0].starts_with("portico (warn mode): would deny: ipaddr tag"));
}

#[test]
fn the_summary_keeps_the_reason_for_logs_and_metrics() {
    let stolen = service("s", json!({"jarvice-job-ipaddr": "user1-foobar"}));
    let body =
        serde_json::to_vec(&review("CREATE", &user("user2"), Some(&stolen), None)).expect("json");
    let answer = webhook_with(WARN)
        .answer(Endpoint::Validate, &body)
        .expect("a review");
    let s = &answer.summary;
    assert!(s.allowed && s.would_deny && !s.mutated);
    assert!(s.reason.as_deref().is_some_and(|r| !r.is_empty()));
    assert!(s
        .message
        .as_deref()
        .is_some_and(|m| m.contains("user1-foobar")));
    let enforced = webhook()
        .answer(Endpoint::Validate, &body)
        .expect("a review");
    assert!(!enforced.summary.allowed && !enforced.summary.would_deny);
    assert_eq!(enforced.summary.reason, s.reason);
}

#[test]
fn allowed_decisions_are_the_same_in_both_modes() {
    let object = pod("p").tag("foobar");
    let r = review("CREATE", &user("user1"), Some(&object), None);
    let a = send(&webhook(), Endpoint::Mutate, &r);
    let b = send(&webhook_with(WARN), Endpoint::Mutate, &r);
    assert_eq!(a.raw, b.raw);
}

fn scrape(ops: std::net::SocketAddr) -> String {
    let mut tcp = std::net::TcpStream::connect(ops).expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    tcp.read_to_string(&mut text).expect("read");
    text
}

/// Through the sandbox: user2's relabel of user1's pod, refused under enforce, goes through in
/// warn mode; the metric and the audit trail say it would have been denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_through_the_apiserver_counts_and_records_would_be_denials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut config = test_config();
    config.audit.mode = AuditMode::Warn;
    let l = Loop::start_audited(config, AuditLog::file(&path, 1 << 20, 2).expect("trail")).await;
    let user1: Api<Pod> = Api::namespaced(l.client("user1").await, "team");
    let user2: Api<Pod> = Api::namespaced(l.client("user2").await, "team");
    let p: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"portico.dev/ipaddr": "foobar"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))
    .expect("pod");
    let created = user1
        .create(&PostParams::default(), &p)
        .await
        .expect("pod created");
    let labels = created.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("jarvice-job-ipaddr").map(String::as_str),
        Some("user1-foobar"),
        "allowed decisions still stamp in warn mode"
    );
    let relabel = json!({"metadata": {"labels": {"jarvice-job-ipaddr": "user2-x"}}});
    let patched = user2
        .patch("p", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("warn mode lets the relabel through");
    assert_eq!(
        patched
            .metadata
            .labels
            .unwrap_or_default()
            .get("jarvice-job-ipaddr")
            .map(String::as_str),
        Some("user2-x")
    );
    let ops = l.webhook.ops_addr();
    let text = tokio::task::spawn_blocking(move || scrape(ops))
        .await
        .expect("scrape");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("portico_admission_requests_total{")
                && l.contains("operation=\"UPDATE\"")
                && l.contains("outcome=\"would-deny\"")
        })
        .unwrap_or_else(|| panic!("no would-deny series:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(!text.contains("outcome=\"denied\""), "{text}");
    let records: Vec<Value> = std::fs::read_to_string(&path)
        .expect("trail")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let r = records
        .iter()
        .find(|r| r["outcome"] == "would-deny")
        .expect("a would-deny record");
    assert_eq!(r["user"], "user2");
    assert_eq!(r["object"]["name"], "p");
    assert!(r["message"]
        .as_str()
        .is_some_and(|m| m.contains("cannot be changed afterwards")));
}
