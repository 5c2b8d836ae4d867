//! Watches (resume, bookmarks, 410, timeouts, selector transitions), fault injection, counters
//! and the restart that keeps state.

mod common;
use common::*;
use portico_sandbox::Faults;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn watch_resumes_and_expires() {
    let sb = start_with(|o| {
        o.controllers = false;
        o.watch_window = 5;
    })
    .await;
    let ns = sb.create_namespace("w").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let first = post(
        &sb,
        "admin",
        &base,
        json!({"metadata": {"name": "a", "labels": {"app": "x"}}}),
    )
    .await;
    let rv = first.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    post(&sb, "admin", &base, json!({"metadata": {"name": "b"}})).await;
    patch(
        &sb,
        "admin",
        &format!("{base}/a"),
        "application/merge-patch+json",
        json!({"data": {"k": "v"}}),
    )
    .await;
    // Resume from rv: b ADDED, a MODIFIED.
    let evs = watch(
        &sb,
        "admin",
        &format!("{base}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        2,
        Duration::from_secs(3),
    )
    .await;
    let kinds: Vec<_> = evs
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "a".into())
        ]
    );
    // No rv: synthetic ADDED for everything, then live events.
    let evs = watch(
        &sb,
        "admin",
        &format!("{base}?watch=1&labelSelector=app%3Dx&timeoutSeconds=1"),
        5,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["type"], "ADDED");
    // Push rv out of the window: 410 as an ERROR event.
    for i in 0..6 {
        post(
            &sb,
            "admin",
            &base,
            json!({"metadata": {"name": format!("f{i}")}}),
        )
        .await;
    }
    let evs = watch(
        &sb,
        "admin",
        &format!("{base}?watch=1&resourceVersion={rv}"),
        1,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
    assert!(evs[0]["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version"));
    // compact() expires everything; force_watch_gone too.
    let now = sb.resource_version();
    sb.compact();
    let evs = watch(
        &sb,
        "admin",
        &format!("{base}?watch=1&resourceVersion={}", now - 1),
        1,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(evs[0]["object"]["code"], 410);
    sb.shutdown().await;
}

#[tokio::test]
async fn watch_bookmarks_timeouts_and_selector_transitions() {
    let sb = start_with(|o| o.controllers = false).await;
    let ns = sb.create_namespace("wb").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    post(
        &sb,
        "admin",
        &base,
        json!({"metadata": {"name": "a", "labels": {"app": "x"}}}),
    )
    .await;
    let rv = sb.resource_version();
    let h = sb.handle();
    let url = format!("{base}/a");
    let writer = {
        let sb2 = h.clone();
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sb2.request(
                "admin",
                "PATCH",
                &url,
                Some(json!({"metadata": {"labels": {"app": "y"}}})),
            )
            .await;
            sb2.request(
                "admin",
                "PATCH",
                &url,
                Some(json!({"metadata": {"labels": {"app": "x"}}})),
            )
            .await;
        })
    };
    let started = Instant::now();
    let evs = watch(&sb, "admin", &format!("{base}?watch=1&resourceVersion={rv}&labelSelector=app%3Dx&allowWatchBookmarks=true&timeoutSeconds=2"), 100, Duration::from_secs(5)).await;
    writer.await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    let types: Vec<&str> = evs
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|t| *t != "BOOKMARK")
        .collect();
    assert_eq!(types, ["DELETED", "ADDED"]);
    let bm = evs
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .expect("a bookmark");
    assert_eq!(bm["object"]["kind"], "ConfigMap");
    assert!(
        bm["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn faults_are_switchable_and_counted() {
    let sb = start_with(|o| o.controllers = false).await;
    let ns = sb.create_namespace("f").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let mut f = Faults::default();
    f.error_rate.insert("list".into(), 0.5);
    f.throttle_rate.insert("create".into(), 1.0);
    f.retry_after_seconds = 3;
    f.latency_ms.insert("get".into(), 150);
    f.only_users = vec!["user1".into()];
    sb.set_faults(f);
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(http(&sb, "user1", "GET", &base, "", None).await.code);
        }
        v
    };
    assert_eq!(codes, [200, 500, 200, 500]);
    let r = post(&sb, "user1", &base, json!({"metadata": {"name": "x"}})).await;
    assert_eq!(r.code, 429);
    assert_eq!(r.headers.get("retry-after").unwrap(), "3");
    // admin is not affected
    assert_eq!(
        post(&sb, "admin", &base, json!({"metadata": {"name": "x"}}))
            .await
            .code,
        201
    );
    let t = Instant::now();
    assert_eq!(
        http(&sb, "user1", "GET", &format!("{base}/x"), "", None)
            .await
            .code,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    // Over HTTP too.
    let r = http(
        &sb,
        "",
        "PUT",
        "/sandbox/faults",
        "application/json",
        Some(json!({})),
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(http(&sb, "user1", "GET", &base, "", None).await.code, 200);
    let c = sb.counters();
    assert_eq!(c.count(Some("user1"), Some("list"), Some("configmaps")), 5);
    assert_eq!(c.writes_by("user1"), 1);
    let r = http(&sb, "", "GET", "/sandbox/counters", "", None).await;
    assert!(r
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|row| row["user"] == "user1" && row["verb"] == "create"));
    sb.reset_counters();
    assert_eq!(sb.counters().count(None, None, None), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn dropped_watches_and_restart_keep_state() {
    let sb = start_with(|o| o.controllers = false).await;
    let ns = sb.create_namespace("r").await.unwrap();
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    post(&sb, "admin", &base, json!({"metadata": {"name": "keep"}})).await;
    sb.set_faults(Faults {
        drop_watches_after_ms: Some(200),
        ..Faults::default()
    });
    let t = Instant::now();
    let evs = watch(
        &sb,
        "admin",
        &format!("{base}?watch=1&resourceVersion={}", sb.resource_version()),
        10,
        Duration::from_secs(5),
    )
    .await;
    assert!(evs.is_empty());
    assert!(t.elapsed() < Duration::from_secs(2));
    sb.set_faults(Faults {
        force_watch_gone: true,
        ..Faults::default()
    });
    let evs = watch(
        &sb,
        "admin",
        &format!("{base}?watch=1&resourceVersion={}", sb.resource_version()),
        1,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(evs[0]["object"]["code"], 410);
    sb.clear_faults();
    // A watch open across the restart is closed; state survives; same port.
    let addr = sb.addr();
    let h = sb.handle();
    let path = format!("{base}?watch=1&resourceVersion={}", sb.resource_version());
    let restarter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.restart(Duration::from_millis(100)).await.unwrap();
    });
    let t = Instant::now();
    let evs = watch(&sb, "admin", &path, 10, Duration::from_secs(5)).await;
    assert!(evs.is_empty());
    assert!(t.elapsed() < Duration::from_secs(2));
    restarter.await.unwrap();
    assert_eq!(sb.addr(), addr);
    assert_eq!(get(&sb, &format!("{base}/keep")).await.code, 200);
    sb.shutdown().await;
}
