//! Operability through the ops port and the audit trail: `/metrics` carries the webhook's and the
//! provisioner's families and they move as work happens; every admission decision and every
//! provisioner write leaves one JSON line in the trail.

mod harness;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use harness::{eventually, test_config, Loop};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use portico::api::Exposure;
use portico::provisioner::metrics::{Observe, ProvisionerMetrics};
use portico::server::audit_log::AuditLog;
use serde_json::{json, Value};

/// GET /metrics on the ops port, over plain HTTP/1.0.
fn scrape(ops: SocketAddr) -> String {
    let mut tcp = std::net::TcpStream::connect(ops).expect("connect ops port");
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: ops\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    tcp.read_to_string(&mut text).expect("read");
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}

/// The value of the first sample line starting with `series` (name plus labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn trail(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn pod(name: &str, tag: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team", "annotations": {"portico.dev/ipaddr": tag}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_audit_trail_move_with_admission_and_provisioning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let audit = AuditLog::file(&path, 1 << 20, 3).expect("trail");
    let l = Loop::start_audited(test_config(), audit.clone()).await;
    let ops = l.webhook.ops_addr();
    let observe = Observe {
        metrics: ProvisionerMetrics::register(l.webhook.metrics()),
        audit,
        identity: "system:serviceaccount:portico-system:portico".into(),
    };
    let p = l.provisioner_observed("p1", observe).await;

    // Registered before anything happened: dashboards and alerts see zeros, not gaps.
    let text = scrape(ops);
    for family in [
        "portico_build_info",
        "portico_certificate_expiry_seconds",
        "portico_provisioner_writes_total{kind=\"Service\",result=\"failed\"}",
        "portico_provisioner_managed_objects{type=\"Exposure\"}",
        "portico_provisioner_node_ports_in_use",
        "portico_provisioner_pending_retries",
        "portico_provisioner_leader",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert!(sample(&text, "portico_certificate_expiry_seconds").is_some_and(|s| s > 3600.0));

    let user1 = l.client("user1").await;
    Api::<Pod>::namespaced(user1.clone(), "team")
        .create(&PostParams::default(), &pod("p", "foobar"))
        .await
        .expect("pod admitted");
    let too_long = "x".repeat(60);
    let refused = Api::<Pod>::namespaced(user1.clone(), "team")
        .create(&PostParams::default(), &pod("q", &too_long))
        .await;
    assert!(refused.is_err(), "a 60-character tag was admitted");
    let exposure: Exposure = serde_json::from_value(json!({
        "apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"tag": "foobar", "target": "pod0", "service": {"type": "NodePort",
                 "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}}
    }))
    .expect("exposure");
    Api::<Exposure>::namespaced(user1.clone(), "team")
        .create(&PostParams::default(), &exposure)
        .await
        .expect("exposure created");

    let text = eventually(20, "provisioner metrics to move", || async {
        let text = tokio::task::spawn_blocking(move || scrape(ops))
            .await
            .expect("scrape");
        let moved = sample(&text, "portico_provisioner_leader") == Some(1.0)
            && sample(&text, "portico_provisioner_node_ports_in_use") == Some(1.0)
            && sample(
                &text,
                "portico_provisioner_managed_objects{type=\"Service\"}",
            ) == Some(1.0)
            && sample(&text, "portico_provisioner_managed_objects{type=\"Pod\"}") == Some(1.0)
            && sample(
                &text,
                "portico_provisioner_writes_total{kind=\"Service\",result=\"ok\"}",
            )
            .is_some_and(|n| n >= 1.0)
            && sample(
                &text,
                "portico_provisioner_writes_total{kind=\"Status\",result=\"ok\"}",
            )
            .is_some_and(|n| n >= 1.0);
        moved.then_some(text)
    })
    .await;
    assert!(sample(&text, "portico_provisioner_reconciles_total").is_some_and(|n| n >= 1.0));
    assert!(text.contains("portico_provisioner_reconcile_duration_seconds_count"));
    assert_eq!(
        sample(
            &text,
            "portico_admission_requests_total{endpoint=\"mutate\",operation=\"CREATE\",kind=\"Pod\",outcome=\"mutated\",reason=\"\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "portico_admission_requests_total{endpoint=\"mutate\",operation=\"CREATE\",kind=\"Pod\",outcome=\"denied\",reason=\"tag-too-long\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(sample(
        &text,
        "portico_admission_duration_seconds_count{endpoint=\"mutate\"}"
    )
    .is_some_and(|n| n >= 2.0));

    // The trail: the pod stamped, the pod refused, the Exposure validated, the Service applied.
    let records = eventually(10, "the Service write in the trail", || async {
        let records = trail(&path);
        records
            .iter()
            .any(|r| r["source"] == "provisioner" && r["object"]["kind"] == "Service")
            .then_some(records)
    })
    .await;
    let stamped = records
        .iter()
        .find(|r| {
            r["source"] == "admission" && r["object"]["name"] == "p" && r["outcome"] == "mutated"
        })
        .expect("the stamped pod's record");
    assert_eq!(stamped["user"], "user1");
    assert_eq!(stamped["route"], "user1-foobar");
    assert!(
        stamped["change"]
            .as_array()
            .is_some_and(|ops| !ops.is_empty()),
        "{stamped}"
    );
    let denied = records
        .iter()
        .find(|r| r["source"] == "admission" && r["outcome"] == "denied")
        .expect("the refused pod's record");
    assert_eq!(denied["reason"], "tag-too-long");
    assert!(
        denied["message"].as_str().is_some_and(|m| m.contains("57")),
        "{denied}"
    );
    let applied = records
        .iter()
        .find(|r| r["source"] == "provisioner" && r["object"]["kind"] == "Service")
        .expect("the Service write");
    assert_eq!(applied["operation"], "apply");
    assert_eq!(applied["outcome"], "written");
    assert_eq!(applied["object"]["name"], "web");
    assert_eq!(applied["route"], "user1-foobar");
    assert_eq!(
        applied["user"],
        "system:serviceaccount:portico-system:portico"
    );
    assert_eq!(applied["change"]["spec"]["type"], "NodePort");
    p.stop().await;
}
