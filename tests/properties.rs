//! Property tests over the whole webhook path: mutation is idempotent, and the user part of every
//! route value written is the requester's (or the trusted stamp's) encoding, whatever the object
//! claims.

mod support;

use portico::admission::Endpoint;
use portico::core::label::validate_label_value;
use portico::core::route::RouteValue;
use portico::core::Policy;
use proptest::prelude::*;
use serde_json::json;
use support::*;

fn kinds() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("Pod"),
        Just("Job"),
        Just("CronJob"),
        Just("StatefulSet"),
        Just("Deployment"),
        Just("ReplicaSet"),
        Just("DaemonSet")
    ]
}

fn base(kind: &str) -> Obj {
    if kind == "Pod" {
        pod("p")
    } else {
        workload(kind, "w")
    }
}

/// Something an attacker might put on the object before submitting.
#[derive(Debug, Clone)]
struct Forgery {
    job: Option<String>,
    pod0: Option<String>,
    owner: Option<String>,
    user: Option<String>,
}

fn forgery() -> impl Strategy<Value = Forgery> {
    let v = || proptest::option::of("[a-z0-9]{1,6}(-[a-z0-9]{1,6})?");
    (v(), v(), v(), proptest::option::of(".{1,20}")).prop_map(|(job, pod0, owner, user)| Forgery {
        job,
        pod0,
        owner,
        user,
    })
}

fn apply_forgery(mut o: Obj, f: &Forgery, on_template: bool) -> Obj {
    let meta = if on_template && o.0["kind"] != "Pod" {
        if o.0["kind"] == "CronJob" {
            &mut o.0["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
        } else {
            &mut o.0["spec"]["template"]["metadata"]
        }
    } else {
        &mut o.0["metadata"]
    };
    for (key, value) in [
        ("jarvice-job-ipaddr", &f.job),
        ("jarvice-pod0-job-ipaddr", &f.pod0),
        ("portico.dev/owner", &f.owner),
    ] {
        if let Some(v) = value {
            meta["labels"][key] = json!(v);
        }
    }
    if let Some(u) = &f.user {
        meta["annotations"]["portico.dev/user"] = json!(u);
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutation_is_idempotent(
        kind in kinds(),
        requester in ".{1,30}",
        tag in proptest::option::of("[A-Za-z0-9._-]{0,30}"),
        f in forgery(),
        on_template in any::<bool>(),
    ) {
        let w = webhook();
        let mut o = apply_forgery(base(kind), &f, on_template);
        if let Some(t) = &tag {
            o = o.tag(t);
        }
        let who = user(&requester);
        let first = send(&w, Endpoint::Mutate, &review("CREATE", &who, Some(&o), None));
        if first.allowed {
            let stored = first.applied_to(&o);
            let second = send(&w, Endpoint::Mutate, &review("CREATE", &who, Some(&stored), None));
            prop_assert!(second.allowed);
            prop_assert!(second.patch.is_none(), "second patch {:?}", second.patch);
        } else {
            prop_assert!(!first.message.is_empty());
        }
    }

    #[test]
    fn route_values_always_carry_the_requesters_prefix(
        kind in kinds(),
        requester in ".{1,30}",
        tag in "[A-Za-z0-9]{1,10}",
        f in forgery(),
        on_template in any::<bool>(),
    ) {
        let w = webhook();
        let o = apply_forgery(base(kind), &f, on_template).tag(&tag);
        let r = send(&w, Endpoint::Mutate, &review("CREATE", &user(&requester), Some(&o), None));
        prop_assert!(r.allowed, "{}", r.message);
        let stored = r.applied_to(&o);
        let prefix = Policy::default().prefix_for(&requester).unwrap();
        // Every Portico key anywhere on the object speaks of the requester.
        for meta in [&stored.0["metadata"], stored.template_meta()] {
            let (job, pod0, owner, who) = labels_of(meta);
            for value in [job, pod0].into_iter().flatten() {
                prop_assert!(validate_label_value(value).is_ok());
                if meta == stored.template_meta() || kind == "Pod" {
                    prop_assert_eq!(RouteValue::prefix_of(value), Some(prefix.as_str()), "{}", value);
                }
            }
            if meta == stored.template_meta() {
                prop_assert_eq!(owner, Some(prefix.as_str()));
                prop_assert_eq!(who, Some(requester.as_str()));
                prop_assert_eq!(job.map(str::to_string), Some(format!("{prefix}-{tag}")));
            }
        }
    }

    #[test]
    fn trusted_stamps_decide_the_prefix_for_workload_controller_pods(stamped in ".{1,30}", tag in "[a-z0-9]{1,10}", f in forgery()) {
        let w = webhook();
        let mut f = f;
        f.user = None;
        let p = apply_forgery(pod("j-x").owned_by("Job"), &f, false).tag(&tag).annotate("portico.dev/user", &stamped);
        let r = send(&w, Endpoint::Mutate, &review("CREATE", &user(JOB_CONTROLLER), Some(&p), None));
        prop_assert!(r.allowed, "{}", r.message);
        let stored = r.applied_to(&p);
        let prefix = Policy::default().prefix_for(&stamped).unwrap();
        prop_assert_eq!(labels_of(&stored.0["metadata"]).0.map(str::to_string), Some(format!("{prefix}-{tag}")));
        prop_assert_eq!(labels_of(&stored.0["metadata"]).1, None);
    }
}
