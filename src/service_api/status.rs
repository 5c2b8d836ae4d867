//! A service's state, as a pure function of what the cluster shows: its pods, its Exposure,
//! which of its objects are gone, and its recent events.
//!
//! - `running`: a pod is running and ready, and the Exposure says `Ready` (its Service selects
//!   the pod and, for a load balancer, an address was assigned);
//! - `failed`: a pod failed, a container cannot start (crash loop, image pull errors), or the
//!   Exposure reports a conflict;
//! - `stopped`: every pod completed, or an object of the service was deleted behind its back;
//! - `starting`: anything else.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Event, Pod};
use serde::{Deserialize, Serialize};

use crate::api::Exposure;

/// The four states a portal polls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Running,
    Stopped,
    Failed,
}

/// Where the service answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// `NodePort`, `LoadBalancer` or `ClusterIP`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The Service in front of the pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Node ports by port name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_ports: BTreeMap<String, i32>,
    /// The load-balancer address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<String>,
    /// The ingress host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Where the node ports are reached from outside: `api.nodePortHost`, else the external
    /// address of the node the service's pod runs on (none when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_host: Option<String>,
}

/// The verdict on a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub phase: Phase,
    /// Why, in a sentence.
    pub reason: String,
    pub address: Option<Address>,
    /// Pods whose logs explain a failure (the failed ones).
    pub failed_pods: Vec<String>,
    /// The failure is one the kubelet retries by itself (a first failed image pull), so it may
    /// still turn out well.
    pub retrying: bool,
}

/// Container waiting reasons that will not resolve by waiting.
const STUCK: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The waiting reason the kubelet retries at once by itself: the first failed image pull. Once
/// it has retried and failed again the reason is `ImagePullBackOff`.
const RETRIED: &str = "ErrImagePull";

/// Why a pod cannot come up, and whether the kubelet is still retrying it by itself.
fn stuck_reason(pod: &Pod) -> Option<(String, bool)> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        let why = status
            .reason
            .clone()
            .or_else(|| status.message.clone())
            .unwrap_or_else(|| "Failed".into());
        return Some((format!("pod {} failed: {why}", pod_name(pod)), false));
    }
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            if let Some(reason) = w.reason.as_deref().filter(|r| STUCK.contains(r)) {
                let msg = w.message.as_deref().unwrap_or("");
                return Some((
                    format!("pod {} container {}: {reason} {msg}", pod_name(pod), c.name)
                        .trim_end()
                        .to_string(),
                    reason == RETRIED,
                ));
            }
        }
    }
    None
}

/// The address the Exposure reports.
pub fn address_of(exposure: &Exposure) -> Address {
    let status = exposure.status.clone().unwrap_or_default();
    Address {
        type_: exposure.spec.service.type_.as_str().to_string(),
        service: status.service,
        node_ports: status.node_ports,
        // Only a LoadBalancer's address is one: for the other types the Exposure's `address`
        // is the cluster IP, which a portal outside the cluster cannot use.
        load_balancer: status
            .address
            .filter(|_| exposure.spec.service.type_ == crate::api::ServiceType::LoadBalancer),
        host: status.host,
        node_host: None,
    }
}

/// A node's address as reached from outside the cluster: its external DNS name, else its
/// external IP. Internal addresses are not offered: a portal outside the cluster cannot use them.
pub fn node_address(node: &k8s_openapi::api::core::v1::Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    ["ExternalDNS", "ExternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a.type_ == *kind && !a.address.is_empty())
            .map(|a| a.address.clone())
    })
}

/// The node a ready pod of the service runs on (the one a node port leads to first).
pub fn node_of(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| is_ready(p))
        .find_map(|p| p.spec.as_ref()?.node_name.clone())
}

fn condition<'e>(exposure: &'e Exposure, type_: &str) -> Option<&'e crate::api::Condition> {
    exposure
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The pods that speak for this start: not being deleted, and made by this start (they carry
/// its nonce under `nonce_key`). A restart's new pods are not judged by the previous start's,
/// which may still be going away — one of those failing must not make the new lab look
/// failed.
pub fn this_starts_pods(pods: Vec<Pod>, nonce_key: &str, nonce: &str) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            // Records written before nonces existed have none: every pod counts then.
            nonce.is_empty()
                || p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(nonce_key))
                    .is_some_and(|n| n == nonce)
        })
        .collect()
}

/// The pods as [`assess`] should judge them when only the main container counts (the
/// manager's `container_main_name`): in a pod that has a container named `main`, only that
/// container's state is kept, and the pod is ready exactly when it is — a sidecar that crashes
/// or is not ready neither fails nor holds back the service. A pod without such a container, or
/// an empty `main`, is judged whole.
pub fn focus_on_main(pods: Vec<Pod>, main: &str) -> Vec<Pod> {
    if main.is_empty() {
        return pods;
    }
    pods.into_iter()
        .map(|mut pod| {
            let Some(status) = pod.status.as_mut() else {
                return pod;
            };
            let Some(main_status) = status
                .container_statuses
                .iter()
                .flatten()
                .find(|c| c.name == main)
                .cloned()
            else {
                return pod;
            };
            let ready = if main_status.ready { "True" } else { "False" };
            status.container_statuses = Some(vec![main_status]);
            for c in status.conditions.iter_mut().flatten() {
                if c.type_ == "Ready" {
                    c.status = ready.to_string();
                }
            }
            pod
        })
        .collect()
}

/// Decides the phase. `missing` lists objects of the service that no longer exist.
pub fn assess(pods: &[Pod], exposure: Option<&Exposure>, missing: &[String]) -> Assessment {
    let failed: Vec<(String, (String, bool))> = pods
        .iter()
        .filter_map(|p| stuck_reason(p).map(|r| (pod_name(p), r)))
        .collect();
    let ready = pods.iter().any(is_ready);
    let address = exposure.map(address_of);
    let verdict = |phase, reason: String| Assessment {
        phase,
        reason,
        address: address.clone(),
        failed_pods: failed.iter().map(|(n, _)| n.clone()).collect(),
        retrying: false,
    };
    if let Some(c) = exposure
        .and_then(|e| condition(e, "Conflict"))
        .filter(|c| c.status == "True")
    {
        return verdict(
            Phase::Failed,
            format!("the Exposure is in conflict: {}", c.message),
        );
    }
    if !missing.is_empty() {
        return verdict(
            Phase::Stopped,
            format!("deleted outside the API: {}", missing.join(", ")),
        );
    }
    if !ready {
        if let Some((_, (reason, _))) = failed.first() {
            return Assessment {
                retrying: failed.iter().all(|(_, (_, retrying))| *retrying),
                ..verdict(Phase::Failed, reason.clone())
            };
        }
    }
    let succeeded = !pods.is_empty()
        && pods
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"));
    if succeeded {
        return verdict(Phase::Stopped, "every pod completed".into());
    }
    let exposed = exposure.and_then(|e| condition(e, "Ready"));
    match (ready, exposed) {
        (true, Some(c)) if c.status == "True" => verdict(Phase::Running, c.message.clone()),
        (true, Some(c)) => verdict(
            Phase::Starting,
            format!(
                "the pod is ready; the Exposure is not: {} {}",
                c.reason, c.message
            ),
        ),
        (true, None) => verdict(
            Phase::Starting,
            "the pod is ready; waiting for the Exposure".into(),
        ),
        (false, _) if pods.is_empty() => verdict(Phase::Starting, "no pod yet".into()),
        (false, _) => verdict(Phase::Starting, "waiting for a pod to be ready".into()),
    }
}

/// [`assess`] for a service whose template brings its own Service instead of an Exposure (a
/// Kubernetes manager's template): a ready pod is enough to be running.
pub fn assess_own_service(pods: &[Pod], missing: &[String]) -> Assessment {
    let mut a = assess(pods, None, missing);
    if a.phase == Phase::Starting && pods.iter().any(is_ready) {
        a.phase = Phase::Running;
        a.reason = "a pod is running and ready (behind the template's own Service)".into();
    }
    a
}

/// One reported pod event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub time: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub object: String,
    pub message: String,
}

fn event_time(e: &Event) -> String {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .unwrap_or_default()
}

/// The last `n` events about the objects with these uids (never by name: anyone can make an
/// object of a given name), oldest first.
pub fn recent_events(events: &[Event], uids: &BTreeSet<String>, n: usize) -> Vec<EventLine> {
    let mut lines: Vec<EventLine> = events
        .iter()
        .filter(|e| {
            e.involved_object
                .uid
                .as_ref()
                .is_some_and(|uid| uids.contains(uid))
        })
        .map(|e| EventLine {
            time: event_time(e),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            object: format!(
                "{}/{}",
                e.involved_object.kind.as_deref().unwrap_or(""),
                e.involved_object.name.as_deref().unwrap_or("")
            ),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect();
    // RFC 3339 times in UTC sort as text.
    lines.sort_by(|a, b| a.time.cmp(&b.time));
    let skip = lines.len().saturating_sub(n);
    lines.split_off(skip)
}

/// The last `m` lines of several logs, each prefixed with where it came from.
pub fn last_lines(logs: &[(String, String)], m: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (source, text) in logs {
        out.extend(text.lines().map(|l| format!("[{source}] {l}")));
    }
    let skip = out.len().saturating_sub(m);
    out.split_off(skip)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": status})).unwrap()
    }

    fn running() -> serde_json::Value {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    }

    #[test]
    fn only_a_load_balancers_address_is_reported_as_one() {
        for (kind, want) in [
            ("LoadBalancer", Some("192.0.2.10")),
            ("NodePort", None),
            ("ClusterIP", None),
        ] {
            let e: Exposure = serde_json::from_value(json!({
                "apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": {"name": "e"},
                "spec": {"tag": "t", "service": {"type": kind, "ports": []}},
                "status": {"address": "192.0.2.10"}}))
            .unwrap();
            assert_eq!(address_of(&e).load_balancer.as_deref(), want, "{kind}");
        }
    }

    fn exposure(conditions: serde_json::Value) -> Exposure {
        serde_json::from_value(json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
            "metadata": {"name": "e"}, "spec": {"tag": "t", "service": {"type": "NodePort", "ports": []}},
            "status": {"service": "svc", "nodePorts": {"http": 30080}, "pods": 1, "conditions": conditions}}))
        .unwrap()
    }

    fn ready() -> serde_json::Value {
        json!([{"type": "Ready", "status": "True", "reason": "Exposed", "message": "1 pod(s)"}])
    }

    #[test]
    fn phases() {
        let e = exposure(ready());
        let a = assess(&[pod("p", running())], Some(&e), &[]);
        assert_eq!(a.phase, Phase::Running);
        let addr = a.address.unwrap();
        assert_eq!(addr.node_ports["http"], 30080);
        assert_eq!(addr.type_, "NodePort");

        let not_ready = exposure(
            json!([{"type": "Ready", "status": "False", "reason": "NoPods", "message": ""}]),
        );
        assert_eq!(
            assess(&[pod("p", running())], Some(&not_ready), &[]).phase,
            Phase::Starting
        );
        assert_eq!(
            assess(&[pod("p", running())], None, &[]).phase,
            Phase::Starting
        );
        assert_eq!(assess(&[], Some(&e), &[]).phase, Phase::Starting);
        assert_eq!(
            assess(&[pod("p", json!({"phase": "Pending"}))], Some(&e), &[]).phase,
            Phase::Starting
        );

        let failed = assess(
            &[pod("p", json!({"phase": "Failed", "reason": "Error"}))],
            Some(&e),
            &[],
        );
        assert_eq!(failed.phase, Phase::Failed);
        assert_eq!(failed.failed_pods, ["p"]);
        assert!(failed.reason.contains("pod p failed: Error"));

        let crash = pod(
            "p",
            json!({"phase": "Running", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}),
        );
        let a = assess(&[crash], Some(&e), &[]);
        assert_eq!(a.phase, Phase::Failed);
        assert!(!a.retrying);

        // A first failed pull is reported, and marked as one the kubelet retries.
        let waiting = |reason: &str| {
            pod(
                "p",
                json!({"phase": "Pending", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason}}}]}),
            )
        };
        let a = assess(&[waiting("ErrImagePull")], Some(&e), &[]);
        assert_eq!((a.phase, a.retrying), (Phase::Failed, true));
        let a = assess(&[waiting("ImagePullBackOff")], Some(&e), &[]);
        assert_eq!((a.phase, a.retrying), (Phase::Failed, false));
        let a = assess(
            &[
                waiting("ErrImagePull"),
                pod("q", json!({"phase": "Failed"})),
            ],
            Some(&e),
            &[],
        );
        assert_eq!((a.phase, a.retrying), (Phase::Failed, false));

        // One failed pod of several while another serves: still running.
        let mixed = [pod("a", json!({"phase": "Failed"})), pod("b", running())];
        assert_eq!(assess(&mixed, Some(&e), &[]).phase, Phase::Running);

        let done = [pod("a", json!({"phase": "Succeeded"}))];
        assert_eq!(assess(&done, Some(&e), &[]).phase, Phase::Stopped);
        assert_eq!(
            assess(&[], Some(&e), &["Pod/p".into()]).phase,
            Phase::Stopped
        );

        let conflict = exposure(
            json!([{"type": "Conflict", "status": "True", "reason": "Conflict", "message": "port taken"}]),
        );
        let a = assess(&[pod("p", running())], Some(&conflict), &[]);
        assert_eq!(a.phase, Phase::Failed);
        assert!(a.reason.contains("port taken"));
    }

    #[test]
    fn without_an_exposure_a_ready_pod_is_running() {
        assert_eq!(
            assess_own_service(&[pod("p", running())], &[]).phase,
            Phase::Running
        );
        assert_eq!(
            assess_own_service(&[pod("p", json!({"phase": "Pending"}))], &[]).phase,
            Phase::Starting
        );
        assert_eq!(assess_own_service(&[], &[]).phase, Phase::Starting);
        assert_eq!(
            assess_own_service(&[pod("p", json!({"phase": "Failed"}))], &[]).phase,
            Phase::Failed
        );
        assert_eq!(
            assess_own_service(&[pod("p", running())], &["Service/s".into()]).phase,
            Phase::Stopped
        );
    }

    #[test]
    fn only_the_main_container_counts_when_one_is_named() {
        let e = exposure(ready());
        let container = |name: &str, ready: bool, waiting: Option<&str>| {
            let state = match waiting {
                Some(r) => json!({"waiting": {"reason": r}}),
                None => json!({"running": {}}),
            };
            json!({"name": name, "image": "i", "imageID": "", "ready": ready, "restartCount": 0, "state": state})
        };
        // The main container serves; a sidecar crash-loops, so the pod is not Ready.
        let sidecar_down = pod(
            "p",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [container("main", true, None), container("proxy", false, Some("CrashLoopBackOff"))]}),
        );
        assert_eq!(
            assess(std::slice::from_ref(&sidecar_down), Some(&e), &[]).phase,
            Phase::Failed
        );
        let focused = focus_on_main(vec![sidecar_down.clone()], "main");
        assert_eq!(assess(&focused, Some(&e), &[]).phase, Phase::Running);
        // The main container is the one stuck: failed, whatever the sidecar does.
        let main_down = pod(
            "p",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [container("main", false, Some("CrashLoopBackOff")), container("proxy", true, None)]}),
        );
        let focused = focus_on_main(vec![main_down], "main");
        assert_eq!(assess(&focused, Some(&e), &[]).phase, Phase::Failed);
        // No container of that name, or no name: the pod is judged whole.
        assert_eq!(
            assess(
                &focus_on_main(vec![sidecar_down.clone()], "lab"),
                Some(&e),
                &[]
            )
            .phase,
            Phase::Failed
        );
        assert_eq!(
            assess(&focus_on_main(vec![sidecar_down], ""), Some(&e), &[]).phase,
            Phase::Failed
        );
        // A failed pod stays failed.
        let gone = pod(
            "p",
            json!({"phase": "Failed", "containerStatuses": [container("main", false, None)]}),
        );
        assert_eq!(
            assess(&focus_on_main(vec![gone], "main"), Some(&e), &[]).phase,
            Phase::Failed
        );
    }

    #[test]
    fn a_nodes_outside_address_and_the_node_of_a_ready_pod() {
        let node = |addresses: serde_json::Value| -> k8s_openapi::api::core::v1::Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n"}, "status": {"addresses": addresses}}),
            )
            .unwrap()
        };
        let both = node(json!([{"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "ExternalIP", "address": "203.0.113.7"}, {"type": "ExternalDNS", "address": "n1.example.org"}]));
        assert_eq!(node_address(&both).as_deref(), Some("n1.example.org"));
        let ip = node(
            json!([{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "ExternalIP", "address": "203.0.113.7"}]),
        );
        assert_eq!(node_address(&ip).as_deref(), Some("203.0.113.7"));
        let internal = node(
            json!([{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n"}]),
        );
        assert_eq!(node_address(&internal), None);
        assert_eq!(node_address(&node(json!([]))), None);

        let on = |name: &str, node: &str, status: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": []}, "status": status}))
                .unwrap()
        };
        let pods = [
            on("a", "n1", json!({"phase": "Pending"})),
            on("b", "n2", running()),
        ];
        assert_eq!(node_of(&pods).as_deref(), Some("n2"));
        assert_eq!(node_of(&pods[..1]), None);
    }

    #[test]
    fn only_this_starts_live_pods_count() {
        let with = |name: &str, nonce: &str, deleting: bool| -> Pod {
            let mut meta = json!({"name": name, "annotations": {"portico.dev/api-start": nonce}});
            if deleting {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(json!({"metadata": meta})).unwrap()
        };
        let pods = vec![
            with("new", "n2", false),
            with("old", "n1", false),
            with("going", "n2", true),
            serde_json::from_value(json!({"metadata": {"name": "bare"}})).unwrap(),
        ];
        let names = |pods: Vec<Pod>| -> Vec<String> { pods.iter().map(pod_name).collect() };
        assert_eq!(
            names(this_starts_pods(
                pods.clone(),
                "portico.dev/api-start",
                "n2"
            )),
            ["new"]
        );
        assert_eq!(
            names(this_starts_pods(pods, "portico.dev/api-start", "")),
            ["new", "old", "bare"]
        );
    }

    #[test]
    fn events_and_lines_are_the_most_recent() {
        let ev = |name: &str, t: &str, msg: &str| -> Event {
            serde_json::from_value(json!({"metadata": {"name": format!("{name}.{t}")},
                "involvedObject": {"kind": "Pod", "name": name, "uid": format!("uid-{name}")}, "reason": "R", "type": "Warning",
                "message": msg, "lastTimestamp": t}))
            .unwrap()
        };
        let events = [
            ev("p", "2026-01-01T00:00:03Z", "c"),
            ev("p", "2026-01-01T00:00:01Z", "a"),
            ev("other", "2026-01-01T00:00:04Z", "x"),
            ev("p", "2026-01-01T00:00:02Z", "b"),
        ];
        let about: BTreeSet<String> = ["uid-p".to_string()].into();
        let lines = recent_events(&events, &about, 2);
        let msgs: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, ["b", "c"]);
        assert_eq!(lines[0].object, "Pod/p");
        assert_eq!(recent_events(&events, &about, 0).len(), 0);
        // A decoy of the same name but another uid is not about the service.
        let mut decoy = ev("p", "2026-01-01T00:00:09Z", "decoy");
        decoy.involved_object.uid = Some("uid-decoy".into());
        let lines = recent_events(&[decoy], &about, 5);
        assert!(lines.is_empty());

        let logs = vec![
            ("p/c".to_string(), "1\n2\n3\n".to_string()),
            ("q/c".to_string(), "4".to_string()),
        ];
        assert_eq!(last_lines(&logs, 2), ["[p/c] 3", "[q/c] 4"]);
        assert_eq!(last_lines(&logs, 10).len(), 4);
    }
}
