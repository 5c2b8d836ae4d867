//! Leader election and restarts against the real control plane (a cluster of its own: this test
//! stops Portico, which tests/e2e_cluster.rs's shared cluster could not survive). Several
//! `portico serve` processes as Portico's service account, one Lease
//! (`portico-system/portico-provisioner`, 6 s): one leader at a time, the standby takes over when
//! the leader stops, the webhook's absence refuses pods (`failurePolicy: Fail`) and a restarted
//! Portico serves again and converges what was asked meanwhile.

mod cluster;
mod kubectl_bin;

use cluster::{cluster, eventually, terminate, Cluster};
use serde_json::Value;

fn holder(c: &Cluster) -> String {
    let r = c.kubectl(
        "admin",
        &[
            "-n",
            "portico-system",
            "get",
            "lease",
            "portico-provisioner",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    if r.ok {
        r.out.trim().to_string()
    } else {
        String::new()
    }
}

fn exposure(name: &str) -> String {
    format!(
        "apiVersion: portico.dev/v1alpha1\nkind: Exposure\nmetadata:\n  name: {name}\nspec:\n  tag: {name}\n  service:\n    ports: [{{name: http, port: 80}}]\n"
    )
}

fn exposure_service(c: &Cluster, name: &str) -> Option<String> {
    let out = c.kubectl("user1", &["get", "exposure", name, "-o", "json"], None);
    let ex: Value = serde_json::from_str(&out.out).ok()?;
    ex["status"]["service"].as_str().map(str::to_string)
}

#[test]
fn one_leader_the_standby_takes_over_and_a_restarted_portico_converges() {
    let c = cluster();
    let webhook_port = c.port("WEBHOOK_PORT");
    let first = eventually(30, "the cluster's Portico to lead", || {
        let h = holder(c);
        h.starts_with("e2e-portico-").then_some(h)
    });

    // A standby (its own webhook port, unused by the apiserver) does not take the Lease.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let standby = c.start_portico("standby", free);
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(
        holder(c),
        first,
        "the Lease moved while its leader was alive"
    );

    // The leader stops: the standby leads within a lease period or so.
    terminate(c.portico_pid());
    eventually(30, "the standby to take the Lease", || {
        holder(c).starts_with("standby-").then_some(())
    });

    // No webhook answers on the configured URL: the real apiserver refuses the pod.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: while-down\n  annotations:\n    portico.dev/ipaddr: down\nspec:\n  containers: [{name: main, image: busybox}]\n";
    let r = c.kubectl("user1", &["create", "-f", "-"], Some(pod));
    assert!(!r.ok, "a pod was admitted without Portico: {}", r.out);
    assert!(r.err.contains("failed calling webhook"), "{}", r.err);

    // Portico restarted on the webhook's port: pods are admitted and stamped again, and the
    // leading standby provisions an Exposure made now.
    let restarted = c.start_portico("restarted", webhook_port);
    let r = c.kubectl("user1", &["create", "-f", "-"], Some(pod));
    assert!(r.ok, "{}", r.err);
    assert!(r.err.contains("user1-down"), "{}", r.err);
    c.ok(
        "user1",
        &["create", "-f", "-"],
        Some(&exposure("after-restart")),
    );
    eventually(30, "the standby-turned-leader to make the Service", || {
        exposure_service(c, "after-restart")
    });

    // The leader stops again; the restarted one takes over and converges an Exposure made
    // while nobody led.
    standby.stop();
    c.ok(
        "user1",
        &["create", "-f", "-"],
        Some(&exposure("leaderless")),
    );
    eventually(30, "the restarted Portico to take the Lease", || {
        holder(c).starts_with("restarted-").then_some(())
    });
    eventually(
        30,
        "the new leader to make the leaderless Exposure's Service",
        || exposure_service(c, "leaderless"),
    );
    drop(restarted);
}
