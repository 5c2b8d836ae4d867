//! The ownership matrix: each test tries one way for a user with ordinary namespace rights to
//! forge another user's identity through metadata a controller copies, to take over another
//! user's routed object by UPDATE or DELETE, or to reach another user's pods or Services along
//! a path with no selector. Offline, through the webhook's wire format (what `portico review`
//! answers); the sandbox and real-cluster tiers replay the same attacks end to end.

mod support;

use std::sync::Arc;

use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use portico::core::cluster::Routed;
use serde_json::{json, Value};
use support::*;

const CRONJOB_CONTROLLER: &str = "system:serviceaccount:kube-system:cronjob-controller";
const DEPLOYMENT_CONTROLLER: &str = "system:serviceaccount:kube-system:deployment-controller";
const RC_CONTROLLER: &str = "system:serviceaccount:kube-system:replication-controller";
const SLICE_CONTROLLER: &str = "system:serviceaccount:kube-system:endpointslice-controller";

fn kube_system(name: &str) -> Who<'_> {
    Who {
        user: name,
        groups: &[
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated",
        ],
    }
}

fn node() -> Who<'static> {
    Who {
        user: "system:node:worker-1",
        groups: &["system:nodes", "system:authenticated"],
    }
}

fn admin() -> Who<'static> {
    Who {
        user: "root",
        groups: &["system:masters", "system:authenticated"],
    }
}

/// A webhook whose view of the cluster holds user1's routed pod (10.0.0.7) and Service.
fn webhook_seeing_user1() -> Webhook {
    let mut routed = Routed::default();
    routed.add_pod("team", "lab-0", "user1", &["10.0.0.7"]);
    routed.add_pod("team", "mine-0", "user2", &["10.0.0.8"]);
    routed.add_service("team", "lab", "user1");
    routed.add_service("team", "mine", "user2");
    Webhook::new(Config::default()).with_view(Arc::new(routed))
}

fn validate(w: &Webhook, op: &str, who: &Who<'_>, new: Option<&Obj>, old: Option<&Obj>) -> Reply {
    send(w, Endpoint::Validate, &review(op, who, new, old))
}

fn mutate(w: &Webhook, op: &str, who: &Who<'_>, new: &Obj, old: Option<&Obj>) -> Reply {
    send(w, Endpoint::Mutate, &review(op, who, Some(new), old))
}

/// A stamped object as Portico stores it for `owner`.
fn stored(w: &Webhook, owner: &str, object: &Obj) -> Obj {
    create(w, &user(owner), object).expect("created").0
}

// --- 1. identity forged through metadata a controller copies ---

fn forged_cronjob() -> Obj {
    let mut cj = workload("CronJob", "nightly");
    cj.0["spec"]["jobTemplate"]["metadata"] = json!({
        "annotations": {"portico.dev/user": "user1", "portico.dev/ipaddr": "foobar"},
        "labels": {"portico.dev/owner": "user1", "jarvice-pod0-job-ipaddr": "user1-foobar"}
    });
    cj
}

/// The Job the cronjob controller makes: metadata from `jobTemplate.metadata`, spec from
/// `jobTemplate.spec`.
fn job_from(cronjob: &Obj) -> Obj {
    let template = &cronjob.0["spec"]["jobTemplate"];
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!("nightly-1");
    metadata["namespace"] = json!("team");
    metadata["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "u", "controller": true}]);
    Obj(
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template["spec"]}),
    )
}

/// A pod the job controller makes from a Job's template.
fn pod_from(job: &Obj) -> Obj {
    let mut metadata = job.0["spec"]["template"]["metadata"].clone();
    metadata["name"] = json!("nightly-1-x");
    metadata["namespace"] = json!("team");
    metadata["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-1", "uid": "j", "controller": true}]);
    Obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": job.0["spec"]["template"]["spec"]}),
    )
}

#[test]
fn a_cronjobs_job_metadata_cannot_make_pods_answer_another_users_route() {
    let w = webhook();
    let (cronjob, warnings) = create(&w, &user("user2"), &forged_cronjob()).unwrap();
    let copied = &cronjob.0["spec"]["jobTemplate"]["metadata"];
    assert_eq!(copied["annotations"]["portico.dev/user"], Value::Null);
    assert_eq!(copied["labels"]["portico.dev/owner"], Value::Null);
    assert_eq!(copied["labels"]["jarvice-pod0-job-ipaddr"], Value::Null);
    assert!(
        warnings.iter().any(|w| w.contains("jobTemplate.metadata")),
        "{warnings:?}"
    );
    // The tag asked for there is honoured, for the requester.
    assert_eq!(
        labels_of(cronjob.template_meta()).0,
        Some("user2-foobar"),
        "{cronjob:?}"
    );
    // The real controllers copy it on: the Job, then its pods, stay user2's.
    let job = job_from(&cronjob);
    let (job, _) = create(&w, &kube_system(CRONJOB_CONTROLLER), &job).unwrap();
    assert_eq!(labels_of(job.template_meta()).0, Some("user2-foobar"));
    let (pod, _) = create(&w, &kube_system(JOB_CONTROLLER), &pod_from(&job)).unwrap();
    let (route, _, owner, who) = labels_of(&pod.0["metadata"]);
    assert_eq!(
        (route, owner, who),
        (Some("user2-foobar"), Some("user2"), Some("user2"))
    );
}

#[test]
fn a_cronjob_stored_before_the_fix_still_cannot_forge_its_jobs() {
    // Stored unstripped (made before Portico ran, or in warn mode): the Job the controller copies
    // it into names user1 in its own metadata, but only a stamp on a template counts.
    let job = job_from(&forged_cronjob());
    let w = webhook();
    let err = create(&w, &kube_system(CRONJOB_CONTROLLER), &job).unwrap_err();
    assert!(err.contains("never stamped"), "{err}");
    // With the namespace fallback it becomes the namespace's, never user1's.
    let w = webhook_with("identity:\n  unstampedFallback: namespace\n");
    let (job, _) = create(&w, &kube_system(CRONJOB_CONTROLLER), &job).unwrap();
    assert_eq!(labels_of(job.template_meta()).0, Some("ns.team-foobar"));
    assert_eq!(
        job.0["metadata"]["annotations"]["portico.dev/user"],
        Value::Null
    );
}

#[test]
fn forged_job_metadata_is_refused_in_strict_mode() {
    let err = create(
        &webhook_with("strict: true\n"),
        &user("user2"),
        &forged_cronjob(),
    )
    .unwrap_err();
    assert!(
        err.contains("spec.jobTemplate.metadata") && err.contains("portico.dev/"),
        "{err}"
    );
}

#[test]
fn a_deployments_annotations_cannot_forge_its_replicasets() {
    let w = webhook();
    let d = workload("Deployment", "web")
        .annotate("portico.dev/user", "user1")
        .label("portico.dev/owner", "user1");
    let mut d = d;
    d.0["spec"]["template"]["metadata"]["labels"]["jarvice-job-ipaddr"] = json!("web");
    let (d, _) = create(&w, &user("user2"), &d).unwrap();
    assert_eq!(
        d.0["metadata"]["annotations"]["portico.dev/user"],
        Value::Null
    );
    assert_eq!(d.0["metadata"]["labels"]["portico.dev/owner"], Value::Null);
    // A ReplicaSet that still carries user1 in its own annotations (copied from an older
    // Deployment) takes its identity from the template stamp alone.
    let mut rs = d.clone();
    rs.0["kind"] = json!("ReplicaSet");
    rs.0["metadata"]["annotations"] =
        json!({"portico.dev/user": "user1", "portico.dev/ipaddr": "web"});
    rs.0["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d", "controller": true}]);
    let (rs, _) = create(&w, &kube_system(DEPLOYMENT_CONTROLLER), &rs).unwrap();
    assert_eq!(labels_of(rs.template_meta()).0, Some("user2-web"));
    assert_eq!(
        rs.0["metadata"]["annotations"]["portico.dev/user"],
        Value::Null
    );
}

#[test]
fn an_unrelated_update_by_the_owner_goes_through_unchanged() {
    let w = webhook();
    let cj = stored(&w, "user1", &workload("CronJob", "c").tag("lab"));
    let mut changed = cj.clone();
    changed.0["spec"]["schedule"] = json!("5 * * * *");
    let r = mutate(&w, "UPDATE", &user("user1"), &changed, Some(&cj));
    assert!(r.allowed && r.patch.is_none(), "{:?}", r.raw);
    let v = validate(&w, "UPDATE", &user("user1"), Some(&changed), Some(&cj));
    assert!(v.allowed, "{}", v.message);
}

// --- 2. taking over by UPDATE or DELETE ---

#[test]
fn another_user_cannot_take_over_an_exposure() {
    let w = webhook();
    let mut ex = Obj(
        json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
        "metadata": {"name": "lab", "namespace": "team"},
        "spec": {"tag": "lab", "ports": [{"port": 80}]}}),
    );
    ex = stored(&w, "user1", &ex);
    assert_eq!(ex.0["spec"]["user"], "user1");
    let mut taken = ex.clone();
    taken.0["spec"]["user"] = json!("user2");
    let m = mutate(&w, "UPDATE", &user("user2"), &taken, Some(&ex));
    let v = validate(&w, "UPDATE", &user("user2"), Some(&taken), Some(&ex));
    assert!(!(m.allowed && v.allowed), "spec.user changed by user2");
    assert!(
        v.message.contains("belongs to user \"user1\""),
        "{}",
        v.message
    );
    // Nor delete it, nor touch anything else in it.
    let d = validate(&w, "DELETE", &user("user2"), None, Some(&ex));
    assert!(
        !d.allowed && d.message.contains("may not delete"),
        "{}",
        d.message
    );
    let mut other = ex.clone();
    other.0["spec"]["ports"] = json!([{"port": 8080}]);
    assert!(!validate(&w, "UPDATE", &user("user2"), Some(&other), Some(&ex)).allowed);
    // The owner, an administrator and Portico may.
    assert!(validate(&w, "UPDATE", &user("user1"), Some(&other), Some(&ex)).allowed);
    assert!(validate(&w, "DELETE", &admin(), None, Some(&ex)).allowed);
    assert!(validate(&w, "UPDATE", &user(PORTICO_SA), Some(&other), Some(&ex)).allowed);
}

#[test]
fn another_user_cannot_repoint_drop_or_delete_a_routed_service() {
    let w = webhook();
    let svc = stored(
        &w,
        "user1",
        &service("lab", json!({"jarvice-job-ipaddr": "user1-lab"})),
    );
    let repointed = service("lab", json!({"jarvice-job-ipaddr": "user2-trap"}));
    let dropped = Obj(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "lab", "namespace": "team"}, "spec": {"ports": [{"port": 80}]}}));
    for new in [&repointed, &dropped] {
        let v = validate(&w, "UPDATE", &user("user2"), Some(new), Some(&svc));
        assert!(
            !v.allowed && v.message.contains("prefix \"user1\""),
            "{}",
            v.message
        );
    }
    assert!(!validate(&w, "DELETE", &user("user2"), None, Some(&svc)).allowed);
    // Its owner may re-point it among their own routes, or drop the selector.
    let own = service("lab", json!({"jarvice-job-ipaddr": "user1-other"}));
    assert!(validate(&w, "UPDATE", &user("user1"), Some(&own), Some(&svc)).allowed);
    assert!(validate(&w, "UPDATE", &user("user1"), Some(&dropped), Some(&svc)).allowed);
    assert!(validate(&w, "DELETE", &user("user1"), None, Some(&svc)).allowed);
}

#[test]
fn another_user_cannot_change_the_image_or_tag_of_a_stamped_workload() {
    let w = webhook();
    for kind in [
        "Deployment",
        "Job",
        "CronJob",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
    ] {
        let old = stored(&w, "user1", &workload(kind, "w").tag("lab"));
        let mut image = old.clone();
        let spec = if kind == "CronJob" {
            &mut image.0["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        } else {
            &mut image.0["spec"]["template"]["spec"]
        };
        spec["containers"][0]["image"] = json!("evil");
        let v = validate(&w, "UPDATE", &user("user2"), Some(&image), Some(&old));
        assert!(
            !v.allowed && v.message.contains("user \"user1\""),
            "{kind}: {}",
            v.message
        );
        // A new tag is stamped for user2 by the mutating webhook, and still refused.
        let retag = old.clone().tag("trap");
        let m = mutate(&w, "UPDATE", &user("user2"), &retag, Some(&old));
        let retagged = m.applied_to(&retag);
        let v = validate(&w, "UPDATE", &user("user2"), Some(&retagged), Some(&old));
        assert!(!v.allowed, "{kind}");
        assert!(
            !validate(&w, "DELETE", &user("user2"), None, Some(&old)).allowed,
            "{kind}"
        );
        assert!(
            validate(&w, "UPDATE", &user("user1"), Some(&image), Some(&old)).allowed,
            "{kind}"
        );
    }
}

#[test]
fn another_user_cannot_delete_a_stamped_pod_but_the_cluster_can() {
    let w = webhook();
    let p = stored(&w, "user1", &pod("lab-0").tag("lab"));
    let v = validate(&w, "DELETE", &user("user2"), None, Some(&p));
    assert!(
        !v.allowed
            && v.message
                .contains("Pod team/lab-0 belongs to user \"user1\""),
        "{}",
        v.message
    );
    assert!(validate(&w, "DELETE", &user("user1"), None, Some(&p)).allowed);
    for who in [
        admin(),
        node(),
        kube_system("system:serviceaccount:kube-system:generic-garbage-collector"),
        kube_system("system:serviceaccount:kube-system:namespace-controller"),
        user(JOB_CONTROLLER),
    ] {
        assert!(
            validate(&w, "DELETE", &who, None, Some(&p)).allowed,
            "{}",
            who.user
        );
    }
    // Unstamped objects are nobody's in particular: RBAC alone decides.
    assert!(validate(&w, "DELETE", &user("user2"), None, Some(&pod("plain"))).allowed);
}

#[test]
fn ownership_holds_in_namespace_mode_and_for_trusted_submitters() {
    let ns = webhook_with("identity:\n  mode: namespace\n");
    let p = stored(&ns, "anyone", &pod("p").tag("web"));
    // Anyone in the namespace is its owner in namespace mode.
    assert!(validate(&ns, "DELETE", &user("someone-else"), None, Some(&p)).allowed);
    let sub = webhook_with("identity:\n  trustedSubmitters:\n    users: [portal]\n");
    let p = create(
        &sub,
        &user("portal"),
        &pod("p").tag("lab").annotate("portico.dev/user", "alice"),
    )
    .unwrap()
    .0;
    assert!(validate(&sub, "DELETE", &user("portal"), None, Some(&p)).allowed);
    assert!(validate(&sub, "DELETE", &user("alice"), None, Some(&p)).allowed);
    assert!(!validate(&sub, "DELETE", &user("bob"), None, Some(&p)).allowed);
}

// --- 3. paths the webhook did not see ---

fn status_update(who: &Who<'_>, new: &Obj, old: &Obj) -> Value {
    let mut r = review("UPDATE", who, Some(new), Some(old));
    r["request"]["subResource"] = json!("status");
    r["request"]["resource"]["resource"] = json!("pods");
    r
}

#[test]
fn pods_status_cannot_change_routing_labels() {
    let w = webhook();
    let p = stored(&w, "user1", &pod("lab-0").tag("lab"));
    let relabelled = p.clone().label("jarvice-job-ipaddr", "user2-trap");
    for who in [node(), user("user1"), admin()] {
        let r = send(
            &w,
            Endpoint::Validate,
            &status_update(&who, &relabelled, &p),
        );
        assert!(
            !r.allowed && r.message.contains("status subresource"),
            "{}: {}",
            who.user,
            r.message
        );
    }
    // The kubelet's ordinary status writes (labels untouched) go through; Portico may move pod0.
    let mut running = p.clone();
    running.0["status"] = json!({"phase": "Running"});
    assert!(
        send(
            &w,
            Endpoint::Validate,
            &status_update(&node(), &running, &p)
        )
        .allowed
    );
    let moved = p.clone().label("jarvice-pod0-job-ipaddr", "user1-lab");
    assert!(
        send(
            &w,
            Endpoint::Validate,
            &status_update(&user(PORTICO_SA), &moved, &p)
        )
        .allowed
    );
    // Who may write status at all is RBAC's (readiness-gate controllers do); labels never move.
    assert!(
        send(
            &w,
            Endpoint::Validate,
            &status_update(&user("user2"), &running, &p)
        )
        .allowed
    );
    let r = send(
        &w,
        Endpoint::Validate,
        &status_update(&user("user2"), &relabelled, &p),
    );
    assert!(
        !r.allowed && r.message.contains("status subresource"),
        "{}",
        r.message
    );
}

#[test]
fn replication_controllers_are_stamped_and_their_pods_inherit_the_stamp() {
    let w = webhook();
    let mut rc = workload("ReplicaSet", "rc");
    rc.0["apiVersion"] = json!("v1");
    rc.0["kind"] = json!("ReplicationController");
    rc.0["spec"]["template"]["metadata"]["labels"]["jarvice-job-ipaddr"] = json!("lab");
    rc.0["spec"]["template"]["metadata"]["labels"]["portico.dev/owner"] = json!("user1");
    let (rc, warnings) = create(&w, &user("user2"), &rc).unwrap();
    assert_eq!(
        labels_of(rc.template_meta()).0,
        Some("user2-lab"),
        "{warnings:?}"
    );
    let mut p = Obj(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": rc.0["spec"]["template"]["metadata"].clone(),
        "spec": rc.0["spec"]["template"]["spec"].clone()}));
    p.0["metadata"]["name"] = json!("rc-x");
    p = p.owned_by("ReplicationController");
    let (p, _) = create(&w, &kube_system(RC_CONTROLLER), &p).unwrap();
    assert_eq!(labels_of(&p.0["metadata"]).0, Some("user2-lab"));
}

fn slice(service: Option<&str>, address: &str, target: Option<&str>) -> Obj {
    let mut endpoint = json!({"addresses": [address]});
    if let Some(t) = target {
        endpoint["targetRef"] = json!({"kind": "Pod", "name": t, "namespace": "team"});
    }
    let mut s = Obj(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "s", "namespace": "team"}, "addressType": "IPv4",
        "endpoints": [endpoint], "ports": [{"port": 80}]}),
    );
    if let Some(svc) = service {
        s = s.label("kubernetes.io/service-name", svc);
    }
    s
}

#[test]
fn hand_written_endpoint_slices_cannot_reach_another_users_pods_or_join_their_services() {
    let w = webhook_seeing_user1();
    let attempts = [
        (
            slice(Some("lab"), "10.9.9.9", None),
            "joins Service team/lab",
        ),
        (slice(Some("open"), "10.0.0.7", None), "address 10.0.0.7"),
        (
            slice(None, "10.9.9.9", Some("lab-0")),
            "targets pod team/lab-0",
        ),
    ];
    for (s, why) in &attempts {
        for op in ["CREATE", "UPDATE"] {
            let r = validate(&w, op, &user("user2"), Some(s), Some(s));
            assert!(
                !r.allowed && r.message.contains(why),
                "{op} {why}: {}",
                r.message
            );
        }
    }
    // Your own pods and Services, or addresses outside every routed pod, are fine.
    for s in [
        slice(Some("mine"), "10.0.0.8", Some("mine-0")),
        slice(Some("open"), "192.0.2.1", None),
    ] {
        assert!(validate(&w, "CREATE", &user("user2"), Some(&s), None).allowed);
    }
    // Kubernetes' own endpoint controllers fill routed Services.
    assert!(
        validate(
            &w,
            "CREATE",
            &kube_system(SLICE_CONTROLLER),
            Some(&attempts[0].0),
            None
        )
        .allowed
    );
    // The Endpoints API is the same path.
    let ep = Obj(json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "open", "namespace": "team"},
        "subsets": [{"addresses": [{"ip": "10.0.0.7"}], "ports": [{"port": 80}]}]}));
    let r = validate(&w, "CREATE", &user("user2"), Some(&ep), None);
    assert!(
        !r.allowed && r.message.contains("10.0.0.7"),
        "{}",
        r.message
    );
    let joined = Obj(json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "lab", "namespace": "team"}, "subsets": []}));
    assert!(!validate(&w, "CREATE", &user("user2"), Some(&joined), None).allowed);
}

#[test]
fn without_a_view_of_the_cluster_pointers_fail_closed() {
    let s = slice(Some("open"), "192.0.2.1", None);
    let r = validate(&webhook(), "CREATE", &user("user2"), Some(&s), None);
    assert!(
        !r.allowed && r.message.contains("not ready"),
        "{}",
        r.message
    );
}

#[test]
fn an_ingress_cannot_send_traffic_to_another_users_service() {
    let w = webhook_seeing_user1();
    let ingress = |backend: &str| {
        Obj(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "i", "namespace": "team"},
            "spec": {"rules": [{"host": "shop.example.org", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": backend, "port": {"number": 80}}}}]}}]}}),
        )
    };
    let r = validate(&w, "CREATE", &user("user2"), Some(&ingress("lab")), None);
    assert!(
        !r.allowed && r.message.contains("Service team/lab"),
        "{}",
        r.message
    );
    assert!(validate(&w, "CREATE", &user("user2"), Some(&ingress("mine")), None).allowed);
    assert!(validate(&w, "CREATE", &admin(), Some(&ingress("lab")), None).allowed);
    // An Ingress to user1's Service is user1's: user2 may not re-point or delete it.
    let theirs = ingress("lab");
    let r = validate(
        &w,
        "UPDATE",
        &user("user2"),
        Some(&ingress("mine")),
        Some(&theirs),
    );
    assert!(
        !r.allowed && r.message.contains("belongs to"),
        "{}",
        r.message
    );
    assert!(!validate(&w, "DELETE", &user("user2"), None, Some(&theirs)).allowed);
}

#[test]
fn an_external_name_service_cannot_alias_another_users_service() {
    let w = webhook_seeing_user1();
    let alias = |target: &str| {
        Obj(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "team"},
            "spec": {"type": "ExternalName", "externalName": target}}),
        )
    };
    for target in [
        "lab.team.svc.cluster.local",
        "LAB.team.svc",
        "lab.team.svc.cluster.local.",
        "lab-0.lab.team.svc.cluster.local",
        "10-0-0-7.team.pod.cluster.local",
    ] {
        let r = validate(&w, "CREATE", &user("user2"), Some(&alias(target)), None);
        assert!(
            !r.allowed && r.message.contains("aliases"),
            "{target}: {}",
            r.message
        );
    }
    for target in [
        "mine.team.svc.cluster.local",
        "example.com",
        "open.team.svc",
    ] {
        assert!(
            validate(&w, "CREATE", &user("user2"), Some(&alias(target)), None).allowed,
            "{target}"
        );
    }
}

// --- 4. host names ---

const DOMAIN: &str = "provisioner:\n  domain: apps.test\n";

fn ingress_for(host: Option<&str>) -> Obj {
    let mut rule = json!({"http": {"paths": [{"path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}});
    if let Some(h) = host {
        rule["host"] = json!(h);
    }
    Obj(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "i", "namespace": "team"}, "spec": {"rules": [rule]}}),
    )
}

#[test]
fn a_host_in_another_users_space_cannot_be_claimed_by_any_object() {
    let w = webhook_with(DOMAIN).with_view(Arc::new(Routed::default()));
    for host in [
        Some("user1-lab.apps.test"),
        Some("USER1-lab.apps.test"),
        Some("deeper.user1-lab.apps.test"),
        Some("*.apps.test"),
        None,
    ] {
        let r = validate(&w, "CREATE", &user("user2"), Some(&ingress_for(host)), None);
        assert!(!r.allowed, "{host:?} claimed by user2");
        assert!(r.message.contains("user2-"), "{host:?}: {}", r.message);
    }
    // Case matters to prefixes but not to DNS: Alice is not alice.
    let r = validate(
        &w,
        "CREATE",
        &user("Alice"),
        Some(&ingress_for(Some("alice-lab.apps.test"))),
        None,
    );
    assert!(!r.allowed, "{}", r.message);
    for host in ["user2-shop.apps.test", "www.apps.test", "shop.example.org"] {
        let r = validate(
            &w,
            "CREATE",
            &user("user2"),
            Some(&ingress_for(Some(host))),
            None,
        );
        assert!(r.allowed, "{host}: {}", r.message);
    }
    assert!(
        validate(
            &w,
            "CREATE",
            &admin(),
            Some(&ingress_for(Some("*.apps.test"))),
            None
        )
        .allowed
    );
    // An Ingress in user1's space is user1's.
    let theirs = ingress_for(Some("user1-lab.apps.test"));
    let r = validate(
        &w,
        "UPDATE",
        &user("user2"),
        Some(&ingress_for(Some("user2-x.apps.test"))),
        Some(&theirs),
    );
    assert!(
        !r.allowed && r.message.contains("belongs to"),
        "{}",
        r.message
    );
    assert!(validate(&w, "DELETE", &user("user1"), None, Some(&theirs)).allowed);
    // An Exposure naming its own host is held to the same rule.
    let ex = |host: &str| {
        Obj(
            json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure",
            "metadata": {"name": "e", "namespace": "team"},
            "spec": {"tag": "lab", "ports": [{"port": 80}], "ingress": {"host": host}}}),
        )
    };
    assert!(create(&w, &user("user2"), &ex("user1-lab.apps.test")).is_err());
    assert!(create(&w, &user("user2"), &ex("user2-lab.apps.test")).is_ok());
    assert!(create(&w, &user("user2"), &ex("")).is_ok());
}

#[test]
fn fqdn_endpoints_cannot_name_another_users_pods_through_cluster_dns() {
    let w = webhook_seeing_user1();
    let fqdn = |address: &str| {
        Obj(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "f", "namespace": "team"}, "addressType": "FQDN",
            "endpoints": [{"addresses": [address]}], "ports": [{"port": 80}]}),
        )
    };
    for address in [
        "lab-0.lab.team.svc.cluster.local",
        "10-0-0-7.team.pod.cluster.local",
    ] {
        let r = validate(&w, "CREATE", &user("user2"), Some(&fqdn(address)), None);
        assert!(
            !r.allowed && r.message.contains("resolves to"),
            "{address}: {}",
            r.message
        );
    }
    for address in ["mine.team.svc.cluster.local", "shop.example.org"] {
        assert!(validate(&w, "CREATE", &user("user2"), Some(&fqdn(address)), None).allowed);
    }
}

#[test]
fn another_user_cannot_add_an_ephemeral_container_to_a_stamped_pod() {
    let w = webhook();
    let p = stored(&w, "user1", &pod("lab-0").tag("lab"));
    let mut debugged = p.clone();
    debugged.0["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": "busybox", "targetContainerName": "main"}]);
    let mut r = review("UPDATE", &user("user2"), Some(&debugged), Some(&p));
    r["request"]["subResource"] = json!("ephemeralcontainers");
    let reply = send(&w, Endpoint::Validate, &r);
    assert!(
        !reply.allowed && reply.message.contains("belongs to user \"user1\""),
        "{}",
        reply.message
    );
    let mut r = review("UPDATE", &user("user1"), Some(&debugged), Some(&p));
    r["request"]["subResource"] = json!("ephemeralcontainers");
    assert!(send(&w, Endpoint::Validate, &r).allowed);
}

#[test]
fn a_target_ref_without_a_namespace_is_read_in_the_requests_namespace() {
    let w = webhook_seeing_user1();
    let s = Obj(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "s"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.1"], "targetRef": {"kind": "Pod", "name": "lab-0"}}]}),
    );
    let r = validate(&w, "CREATE", &user("user2"), Some(&s), None);
    assert!(
        !r.allowed && r.message.contains("pod team/lab-0"),
        "{}",
        r.message
    );
}
