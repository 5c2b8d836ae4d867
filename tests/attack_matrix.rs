//! The attack matrix: each test tries one way for a user to make a pod answer someone else's
//! route value (or to break the label rules), through the webhook's wire format.

mod support;

use portico::admission::Endpoint;
use serde_json::{json, Value};
use support::*;

const STRICT: &str = "strict: true\n";

// --- forged labels and identity on CREATE ---

#[test]
fn forged_routing_label_on_create_is_overwritten() {
    let w = webhook();
    let p = pod("p")
        .tag("foobar")
        .label("jarvice-job-ipaddr", "user2-foobar");
    let (stored, warnings) = create(&w, &user("user1"), &p).unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).0, Some("user1-foobar"));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("replaced label jarvice-job-ipaddr")),
        "{warnings:?}"
    );
}

#[test]
fn forged_routing_label_on_create_is_denied_in_strict_mode() {
    let w = webhook_with(STRICT);
    let p = pod("p")
        .tag("foobar")
        .label("jarvice-job-ipaddr", "user2-foobar");
    let err = create(&w, &user("user1"), &p).unwrap_err();
    assert!(
        err.contains("jarvice-job-ipaddr") && err.contains("user1-foobar"),
        "{err}"
    );
}

#[test]
fn forged_pod0_label_on_a_non_first_pod_is_removed() {
    let w = webhook();
    let p = pod("p")
        .tag("foobar")
        .owned_by("Job")
        .label("jarvice-pod0-job-ipaddr", "user1-foobar");
    let (stored, _) = create(&w, &user("user1"), &p).unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).1, None);
}

#[test]
fn forged_owner_label_without_a_tag_is_removed_or_denied() {
    let p = pod("p").label("portico.dev/owner", "user2");
    let (stored, _) = create(&webhook(), &user("user1"), &p).unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).2, None);
    assert!(create(&webhook_with(STRICT), &user("user1"), &p).is_err());
}

#[test]
fn forged_identity_annotation_by_ordinary_user_is_overwritten() {
    let w = webhook();
    let p = pod("p").tag("foobar").annotate("portico.dev/user", "user2");
    let (stored, _) = create(&w, &user("user1"), &p).unwrap();
    let (job, pod0, owner, who) = labels_of(&stored.0["metadata"]);
    assert_eq!(
        (job, pod0, owner, who),
        (
            Some("user1-foobar"),
            Some("user1-foobar"),
            Some("user1"),
            Some("user1")
        )
    );
}

#[test]
fn forged_identity_annotation_by_ordinary_user_is_denied_in_strict_mode() {
    let err = create(
        &webhook_with(STRICT),
        &user("user1"),
        &pod("p").tag("foobar").annotate("portico.dev/user", "user2"),
    )
    .unwrap_err();
    assert!(err.contains("portico.dev/user"), "{err}");
}

#[test]
fn forged_identity_annotation_without_a_tag_is_corrected() {
    let (stored, _) = create(
        &webhook(),
        &user("user1"),
        &pod("p").annotate("portico.dev/user", "user2"),
    )
    .unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).3, Some("user1"));
}

// --- UPDATE and PATCH ---

fn stamped_pod(owner: &str) -> Obj {
    create(&webhook(), &user(owner), &pod("p").tag("foobar"))
        .unwrap()
        .0
}

#[test]
fn relabel_to_another_users_value_by_update_is_denied() {
    let w = webhook();
    let old = stamped_pod("user1");
    let new = old.clone().label("jarvice-job-ipaddr", "user2-x");
    for who in ["user2", "user1"] {
        let r = send(
            &w,
            Endpoint::Mutate,
            &review("UPDATE", &user(who), Some(&new), Some(&old)),
        );
        assert!(!r.allowed, "{who} relabelled");
        assert!(r.message.contains("cannot be changed"), "{}", r.message);
    }
}

#[test]
fn removal_of_the_routing_label_by_update_is_denied() {
    let w = webhook();
    let old = stamped_pod("user1");
    let mut new = old.clone();
    new.0["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("jarvice-job-ipaddr");
    let r = send(
        &w,
        Endpoint::Mutate,
        &review("UPDATE", &user("user1"), Some(&new), Some(&old)),
    );
    assert!(!r.allowed);
}

#[test]
fn retagging_a_pod_by_update_is_denied_but_unrelated_updates_pass_untouched() {
    let w = webhook();
    let old = stamped_pod("user1");
    let retag = old.clone().tag("other");
    assert!(
        !send(
            &w,
            Endpoint::Mutate,
            &review("UPDATE", &user("user1"), Some(&retag), Some(&old))
        )
        .allowed
    );
    let unrelated = old.clone().annotate("note", "hello").label("app", "web");
    let r = send(
        &w,
        Endpoint::Mutate,
        &review("UPDATE", &user("user2"), Some(&unrelated), Some(&old)),
    );
    assert!(r.allowed && r.patch.is_none());
}

#[test]
fn portico_itself_may_move_the_pod0_label() {
    let w = webhook();
    let old = create(&w, &user("user1"), &pod("p").tag("foobar").owned_by("Job"))
        .unwrap()
        .0;
    let new = old.clone().label("jarvice-pod0-job-ipaddr", "user1-foobar");
    let r = send(
        &w,
        Endpoint::Mutate,
        &review("UPDATE", &user(PORTICO_SA), Some(&new), Some(&old)),
    );
    assert!(r.allowed && r.patch.is_none());
    let r = send(
        &w,
        Endpoint::Mutate,
        &review("UPDATE", &user("user1"), Some(&new), Some(&old)),
    );
    assert!(!r.allowed);
}

#[test]
fn workload_update_by_its_owner_restamps_and_forged_template_labels_are_replaced() {
    let w = webhook();
    let old = create(
        &w,
        &user("user1"),
        &workload("Deployment", "d").tag("foobar"),
    )
    .unwrap()
    .0;
    let new = old.clone().tag("other");
    let r = send(
        &w,
        Endpoint::Mutate,
        &review("UPDATE", &user("user1"), Some(&new), Some(&old)),
    );
    assert!(r.allowed);
    let stored = r.applied_to(&new);
    assert_eq!(labels_of(stored.template_meta()).0, Some("user1-other"));
    // user2 editing the template label directly to their own value does not take user1's pods.
    let mut forged = stored.clone();
    forged.0["spec"]["template"]["metadata"]["labels"]["jarvice-job-ipaddr"] =
        json!("user1-stolen");
    let r = send(
        &w,
        Endpoint::Mutate,
        &review("UPDATE", &user("user2"), Some(&forged), Some(&stored)),
    );
    let after = r.applied_to(&forged);
    assert_eq!(labels_of(after.template_meta()).0, Some("user2-other"));
}

// --- encoding ---

#[test]
fn user_a_b_with_tag_c_never_meets_user_a_with_tag_b_c() {
    let w = webhook();
    let one = create(&w, &user("a-b"), &pod("p").tag("c")).unwrap().0;
    let two = create(&w, &user("a"), &pod("p").tag("b-c")).unwrap().0;
    let (v1, v2) = (
        labels_of(&one.0["metadata"]).0.unwrap().to_string(),
        labels_of(&two.0["metadata"]).0.unwrap().to_string(),
    );
    assert_eq!(v2, "a-b-c");
    assert_ne!(v1, v2);
}

#[test]
fn awkward_usernames_get_valid_distinct_prefixes() {
    let w = webhook();
    let mut seen = std::collections::BTreeSet::new();
    for name in [
        "alice@example.com",
        "system:serviceaccount:team:runner",
        "https://issuer.example#1234",
        "Ünïcode",
        "alice.example.com",
    ] {
        let (stored, warnings) = create(&w, &user(name), &pod("p").tag("foobar")).unwrap();
        let (job, _, owner, who) = labels_of(&stored.0["metadata"]);
        let (job, owner) = (job.unwrap(), owner.unwrap());
        assert_eq!(who, Some(name));
        assert_eq!(job, format!("{owner}-foobar"));
        assert!(
            portico::core::label::validate_label_value(job).is_ok(),
            "{job}"
        );
        assert!(seen.insert(owner.to_string()), "{name} collides");
        assert!(warnings.iter().any(|w| w.contains(job)), "{warnings:?}");
    }
}

// --- tag rules ---

#[test]
fn tag_exactly_at_the_budget_passes_and_one_over_is_refused_with_the_budget() {
    let w = webhook();
    let budget = 63 - "user1-".len();
    let (stored, _) = create(&w, &user("user1"), &pod("p").tag(&"t".repeat(budget))).unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).0.unwrap().len(), 63);
    let err = create(&w, &user("user1"), &pod("p").tag(&"t".repeat(budget + 1))).unwrap_err();
    assert!(err.contains(&format!("at most {budget}")), "{err}");
}

#[test]
fn uppercase_tags_are_kept_case_sensitive() {
    let w = webhook();
    let upper = create(&w, &user("user1"), &pod("p").tag("FooBar"))
        .unwrap()
        .0;
    assert_eq!(labels_of(&upper.0["metadata"]).0, Some("user1-FooBar"));
}

#[test]
fn empty_tag_is_refused() {
    let err = create(&webhook(), &user("user1"), &pod("p").tag("")).unwrap_err();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn tags_with_leading_or_trailing_punctuation_are_refused() {
    let w = webhook();
    for tag in [
        "-foo", "foo-", "_foo", "foo_", ".foo", "foo.", "foo bar", "foo/bar",
    ] {
        let err = create(&w, &user("user1"), &pod("p").tag(tag)).unwrap_err();
        assert!(err.contains("not a valid label value"), "{tag}: {err}");
    }
}

#[test]
fn bare_tag_in_the_routing_label_is_honoured_for_original_manifests() {
    let (stored, _) = create(
        &webhook(),
        &user("user1"),
        &pod("p").label("jarvice-job-ipaddr", "foobar"),
    )
    .unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).0, Some("user1-foobar"));
    assert_eq!(
        stored.0["metadata"]["annotations"]["portico.dev/ipaddr"],
        "foobar"
    );
}

// --- dry run ---

#[test]
fn dry_run_is_answered_the_same_way() {
    let w = webhook();
    let p = pod("p").tag("foobar");
    let mut dry = review("CREATE", &user("user1"), Some(&p), None);
    dry["request"]["dryRun"] = json!(true);
    let wet = review("CREATE", &user("user1"), Some(&p), None);
    let (a, b) = (
        send(&w, Endpoint::Mutate, &dry),
        send(&w, Endpoint::Mutate, &wet),
    );
    assert_eq!(a.raw, b.raw);
}

// --- workload controllers ---

#[test]
fn pod_created_by_the_job_controller_from_a_stamped_job_gets_the_jobs_user() {
    let w = webhook();
    let job = create(&w, &user("user1"), &workload("Job", "j").tag("foobar"))
        .unwrap()
        .0;
    let tmpl = job.template_meta().clone();
    let mut p = pod("j-abcde").owned_by("Job");
    p.0["metadata"]["labels"] = tmpl["labels"].clone();
    p.0["metadata"]["annotations"] = tmpl["annotations"].clone();
    let (stored, _) = create(&w, &user(JOB_CONTROLLER), &p).unwrap();
    let (job_l, pod0, owner, who) = labels_of(&stored.0["metadata"]);
    assert_eq!(
        (job_l, pod0, owner, who),
        (Some("user1-foobar"), None, Some("user1"), Some("user1"))
    );
    // Index 0 of an Indexed Job is the first pod.
    let indexed = p
        .clone()
        .annotate("batch.kubernetes.io/job-completion-index", "0");
    let (stored, _) = create(&w, &user(JOB_CONTROLLER), &indexed).unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).1, Some("user1-foobar"));
}

#[test]
fn pod_created_by_the_job_controller_from_an_unstamped_job_is_refused_or_gets_the_namespace() {
    let p = pod("j-abcde")
        .owned_by("Job")
        .label("jarvice-job-ipaddr", "foobar");
    let err = create(&webhook(), &user(JOB_CONTROLLER), &p).unwrap_err();
    assert!(err.contains("never stamped"), "{err}");
    let w = webhook_with("identity:\n  unstampedFallback: namespace\n");
    let (stored, _) = create(&w, &user(JOB_CONTROLLER), &p).unwrap();
    // The namespace's own space: namespace `team` is not user `team`.
    assert_eq!(labels_of(&stored.0["metadata"]).0, Some("ns.team-foobar"));
    // No tag, no stamp: nothing to decide, untouched.
    let plain = pod("j-x").owned_by("Job");
    let r = send(
        &webhook(),
        Endpoint::Mutate,
        &review("CREATE", &user(JOB_CONTROLLER), Some(&plain), None),
    );
    assert!(r.allowed && r.patch.is_none());
}

#[test]
fn trusted_submitter_names_the_user_and_must_name_one() {
    let w = webhook_with("identity:\n  trustedSubmitters:\n    users: [portal]\n");
    let (stored, _) = create(
        &w,
        &user("portal"),
        &pod("p").tag("lab").annotate("portico.dev/user", "alice"),
    )
    .unwrap();
    assert_eq!(labels_of(&stored.0["metadata"]).0, Some("alice-lab"));
    let err = create(&w, &user("portal"), &pod("p").tag("lab")).unwrap_err();
    assert!(err.contains("must name the user"), "{err}");
}

#[test]
fn namespace_identity_mode_uses_the_namespace() {
    let w = webhook_with("identity:\n  mode: namespace\n");
    let (stored, _) = create(&w, &user("anyone"), &pod("p").tag("web")).unwrap();
    let (route, _, owner, who) = labels_of(&stored.0["metadata"]);
    assert_eq!(
        (route, owner, who),
        (
            Some("ns.team-web"),
            Some("ns.team"),
            Some("system:namespace:team")
        )
    );
    // A user named like the namespace is in another space and cannot select it.
    let (theirs, _) = create(&webhook(), &user("team"), &pod("q").tag("web")).unwrap();
    assert_eq!(labels_of(&theirs.0["metadata"]).0, Some("team-web"));
    let svc = service("s", json!({"jarvice-job-ipaddr": "ns.team-web"}));
    assert!(create(&webhook(), &user("team"), &svc).is_err());
    // Nobody may claim the namespace space by name.
    let err = create(
        &webhook(),
        &user("system:namespace:team"),
        &pod("r").tag("web"),
    )
    .unwrap_err();
    assert!(err.contains("reserves for namespace identities"), "{err}");
}

// --- Services ---

#[test]
fn service_by_user2_selecting_user1s_route_value_is_refused() {
    let w = webhook();
    let svc = service("s", json!({"jarvice-job-ipaddr": "user1-foobar"}));
    let r = send(
        &w,
        Endpoint::Validate,
        &review("CREATE", &user("user2"), Some(&svc), None),
    );
    assert!(!r.allowed);
    assert!(
        r.message.contains("user1-foobar") && r.message.contains("\"user2-\""),
        "{}",
        r.message
    );
    assert!(
        send(
            &w,
            Endpoint::Validate,
            &review("CREATE", &user("user1"), Some(&svc), None)
        )
        .allowed
    );
    let admin = Who {
        user: "kubernetes-admin",
        groups: &["system:masters"],
    };
    assert!(
        send(
            &w,
            Endpoint::Validate,
            &review("CREATE", &admin, Some(&svc), None)
        )
        .allowed
    );
    let pod0 = service("s", json!({"jarvice-pod0-job-ipaddr": "user1-foobar"}));
    assert!(
        !send(
            &w,
            Endpoint::Validate,
            &review("UPDATE", &user("user2"), Some(&pod0), Some(&svc))
        )
        .allowed
    );
    let owner = service("s", json!({"portico.dev/owner": "user1"}));
    assert!(
        !send(
            &w,
            Endpoint::Validate,
            &review("CREATE", &user("user2"), Some(&owner), None)
        )
        .allowed
    );
}

// --- idempotency and first pods, every kind ---

#[test]
fn second_review_of_a_mutated_object_yields_no_patch_for_every_kind() {
    let w = webhook();
    let mut objects = vec![
        pod("p").tag("foobar"),
        pod("p").tag("foobar").owned_by("ReplicaSet"),
    ];
    for kind in [
        "Job",
        "CronJob",
        "StatefulSet",
        "Deployment",
        "ReplicaSet",
        "DaemonSet",
    ] {
        objects.push(workload(kind, "w").tag("foobar"));
    }
    for object in objects {
        let (stored, _) = create(&w, &user("alice@example.com"), &object).unwrap();
        let r = send(
            &w,
            Endpoint::Mutate,
            &review("CREATE", &user("alice@example.com"), Some(&stored), None),
        );
        assert!(
            r.allowed && r.patch.is_none(),
            "{}: {:?}",
            object.0["kind"],
            r.patch
        );
        let (job, pod0, owner, who) = labels_of(stored.template_meta());
        assert!(job.unwrap().ends_with("-foobar"));
        assert_eq!(who, Some("alice@example.com"));
        assert!(owner.is_some());
        // Templates never carry pod0; a lone pod does.
        let lone = object.0["kind"] == "Pod" && object.0["metadata"]["ownerReferences"].is_null();
        assert_eq!(pod0.is_some(), lone, "{}", object.0["kind"]);
    }
}

#[test]
fn statefulset_pod_index_zero_is_the_first_pod() {
    let w = webhook();
    for (index, first) in [("0", true), ("1", false)] {
        let p = pod("s-0")
            .tag("db")
            .owned_by("StatefulSet")
            .label("apps.kubernetes.io/pod-index", index);
        let (stored, warnings) = create(&w, &user("user1"), &p).unwrap();
        assert_eq!(labels_of(&stored.0["metadata"]).1.is_some(), first);
        assert_eq!(warnings.iter().any(|w| w.contains("first pod")), first);
    }
}

#[test]
fn delete_and_connect_are_allowed_untouched() {
    let w = webhook();
    let p = stamped_pod("user1");
    let r = send(
        &w,
        Endpoint::Mutate,
        &review("DELETE", &user("user2"), None, Some(&p)),
    );
    assert!(r.allowed && r.patch.is_none());
}

// --- names that can never work ---

fn exposure_named(meta: Value) -> Obj {
    let mut metadata = meta;
    metadata["namespace"] = json!("team");
    Obj(
        json!({"apiVersion": "portico.dev/v1alpha1", "kind": "Exposure", "metadata": metadata,
        "spec": {"tag": "lab", "user": "user1", "service": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}}}),
    )
}

#[test]
fn an_exposure_whose_name_cannot_name_its_service_is_refused_at_creation_saying_why() {
    let w = webhook();
    let create = |meta: Value| {
        send(
            &w,
            Endpoint::Validate,
            &review("CREATE", &user("user1"), Some(&exposure_named(meta)), None),
        )
    };
    for (name, why) in [
        ("1lab", "must start with a lowercase letter"),
        ("lab.v2", "only lowercase letters, digits and '-'"),
        (&*"a".repeat(64), "longer than 63 characters"),
    ] {
        let r = create(json!({"name": name}));
        assert!(!r.allowed, "{name} admitted");
        for needle in [
            name,
            "DNS-1035",
            why,
            "the Service takes the Exposure's name",
        ] {
            assert!(r.message.contains(needle), "{name}: {}", r.message);
        }
        // An Exposure made before the rule stays editable and deletable.
        let old = exposure_named(json!({"name": name}));
        let update = review("UPDATE", &user("user1"), Some(&old), Some(&old));
        assert!(send(&w, Endpoint::Validate, &update).allowed, "{name}");
    }
    for fine in ["lab", "lab-1", &*"a".repeat(63)] {
        assert!(create(json!({"name": fine})).allowed, "{fine}");
    }
    // generateName: the five generated characters follow the stem.
    let generated = |stem: &str| create(json!({"generateName": stem}));
    assert!(generated("lab-").allowed);
    assert!(!generated("9lab-").allowed);
}
