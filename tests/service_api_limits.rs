//! The service API's limits: starts per client (in flight and per minute), no template work
//! for a start that does not go ahead, and bounded failure reports.

mod harness;
mod service_api_support;

use std::path::Path;

use http::StatusCode;
use portico_sandbox::Faults;
use service_api_support::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_beyond_a_clients_limits_are_refused_with_retry_after() {
    let descriptions = descriptions_for_clients();
    let env = ApiEnv::start(descriptions.path(), |c| {
        c.api.max_starts_in_flight = 1;
        c.api.starts_per_minute = 3;
    })
    .await;
    env.lp.sandbox.set_faults(Faults {
        latency_ms: [("create".to_string(), 1500)].into(),
        only_users: vec!["portal".into()],
        only_resources: vec!["pods".into()],
        ..Faults::default()
    });
    let first = env.start_service("lim-1", "s1", "jupyterlab", "alice");
    let second = async {
        harness::eventually(30, "the first start began", || async {
            env.lp
                .sandbox
                .object("", "secrets", NAMESPACE, "lim-1-env")
                .map(|_| ())
        })
        .await;
        let refused = env
            .start_service("lim-2", "s1", "jupyterlab", "alice")
            .await;
        // Another client's budget is its own.
        let body = start_body("s1", "jupyterlab", "mallory");
        let other = env
            .call(
                "POST",
                "/api/services/",
                Auth::Basic(OTHER_USER, OTHER_PASSWORD),
                &[("uuidcode", "lim-9")],
                Some(&body),
            )
            .await;
        (refused, other)
    };
    let (first, (refused, other)) = tokio::join!(first, second);
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["error"], "limit");
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("maxStartsInFlight"),
        "{}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    assert!(env
        .lp
        .sandbox
        .object("", "secrets", NAMESPACE, "lim-2-env")
        .is_none());
    env.lp.sandbox.clear_faults();
    // Two more starts fit in the minute (the refused one did not count); the fourth does not.
    for id in ["lim-3", "lim-4"] {
        let r = env.start_service(id, "s1", "jupyterlab", "alice").await;
        assert_eq!(r.status, StatusCode::CREATED, "{id}: {}", r.body);
    }
    let r = env
        .start_service("lim-5", "s1", "jupyterlab", "alice")
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("startsPerMinute"),
        "{}",
        r.body
    );
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: <id>\nspec:\n  containers:\n    - name: c\n      image: busybox\n      env: [{name: I, value: \"<input>\"}]\n      ports: [{name: http, containerPort: 8080}]\n";

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_is_packed_only_for_a_start_that_goes_ahead_and_places_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A template that does not place <input>: its input/ folder is never packed (a symbolic
    // link in it would be refused if it were).
    write(
        d,
        "portal/plain/default/service.yaml",
        &POD.replace("<input>", "x"),
    );
    write(d, "portal/plain/default/input/a.txt", "a");
    std::os::unix::fs::symlink("/etc/hostname", d.join("portal/plain/default/input/link")).unwrap();
    write(d, "portal/packed/default/service.yaml", POD);
    write(d, "portal/packed/default/input/a.txt", "a");
    let env = ApiEnv::start(d, |_| {}).await;
    let r = env.start_service("in-1", "s1", "plain", "alice").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = env.start_service("in-2", "s1", "packed", "alice").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // The folder changes so that packing it fails: a repeated start does not pack it again.
    std::os::unix::fs::symlink("/etc/hostname", d.join("portal/packed/default/input/link"))
        .unwrap();
    let r = env.start_service("in-2", "s1", "packed", "alice").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A new start does, and is refused before anything is created.
    let r = env.start_service("in-3", "s1", "packed", "alice").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("only regular files"),
        "{}",
        r.body
    );
    assert!(env
        .lp
        .sandbox
        .object("", "secrets", NAMESPACE, "in-3-env")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_reads_at_most_log_bytes_of_each_log() {
    let env = ApiEnv::start(&shipped_descriptions(), |c| {
        c.api.log_bytes = 1024;
        c.api.log_lines = 5;
    })
    .await;
    let r = env
        .start_service("big-1", "s1", "jupyterlab", "alice")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    env.poll_until("big-1", "running", 60).await;
    let huge = "x".repeat(256 * 1024);
    let sb = &env.lp.sandbox;
    sb.append_pod_log(NAMESPACE, "big-1", &[huge.as_str()]);
    sb.fail_pod(NAMESPACE, "big-1", "Error", "exited")
        .await
        .unwrap();
    let failed = env.poll_until("big-1", "failed", 30).await;
    let bytes: usize = failed["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().len())
        .sum();
    assert!(bytes > 0, "{failed}");
    assert!(bytes <= 1024 + 5 * 80, "{bytes} bytes of logs reported");
    assert!(failed.to_string().contains("cut at 1024 bytes"), "{failed}");
}
