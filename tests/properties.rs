//! Property tests over the whole webhook path: mutation is idempotent, and the user part of every
//! route value written is the requester's (or the trusted stamp's) encoding, whatever the object
//! claims.

mod support;

use portico::admission::Endpoint;
use portico::config::Config;
use portico::core::host::{
    default_host, host_prefix, host_space, is_dns_host, may_claim, HostSpace,
};
use portico::core::label::validate_label_value;
use portico::core::route::{route_value, RouteValue};
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

/// User names that stress the host encoding: plain lowercase, mixed case, with the characters a
/// DNS label cannot hold, anything at all, and the longest plain names.
fn host_users() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,12}",
        "[A-Za-z0-9]{1,12}",
        "[A-Za-z0-9_.@:-]{1,24}",
        ".{1,30}",
        "[a-z0-9]{38,46}",
        "[A-Za-z0-9]{38,46}",
    ]
}

/// Valid tags: short lowercase ones that stay plain, and any label value up to the longest.
fn host_tags() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?",
        "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
        "[A-Za-z0-9]([-A-Za-z0-9_.]{0,60}[A-Za-z0-9])?",
    ]
}

/// A near miss of `s`: the same, other case, `.`/`_` for `-` and back, doubled `-`. These are what
/// the old lowercase-and-replace host merged.
fn near(s: &str, how: u8) -> String {
    match how {
        0 => s.to_string(),
        1 => s.to_lowercase(),
        2 => s.to_uppercase(),
        3 => s.replace(['.', '_'], "-"),
        4 => s.replace('-', "."),
        5 => s.replace('-', "--"),
        _ => s
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
    }
}

fn host_policy(max_prefix_length: usize, template: &str) -> Policy {
    let mut c = Config::default();
    c.provisioner.domain = "apps.example.com".into();
    c.provisioner.ingress_host_template = template.into();
    c.identity.max_prefix_length = max_prefix_length;
    Policy::new(c)
}

fn host_templates() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("{user}-{tag}.{domain}"),
        Just("{user}-{tag}-web.{domain}"),
        Just("{user}-{tag}x.{domain}"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Every (user, tag) with a route value has a default host; it is a valid lowercase DNS name
    /// with no `--` at the IDNA positions; two pairs share a host only when they are the same
    /// pair; the host is in its user's space, claimable by that user and by no other.
    #[test]
    fn default_hosts_are_injective_valid_and_their_users_own(
        max_len in prop_oneof![Just(8usize), Just(40), Just(46)],
        template in host_templates(),
        u1 in host_users(), t1 in host_tags(),
        other_user in host_users(), other_tag in host_tags(),
        how_user in 0u8..7, how_tag in 0u8..7, pick in 0u8..4,
    ) {
        let policy = host_policy(max_len, template);
        prop_assume!(policy.config.problems().is_empty());
        let u2 = if pick & 1 == 0 { near(&u1, how_user) } else { other_user };
        let t2 = if pick & 2 == 0 { near(&t1, how_tag) } else { other_tag };
        let (Ok(p1), Ok(p2)) = (policy.prefix_for(&u1), policy.prefix_for(&u2)) else {
            return Ok(());
        };
        let (Ok(_), Ok(_)) = (route_value(&u1, &p1, &t1), route_value(&u2, &p2, &t2)) else {
            return Ok(());
        };
        let provisioner = &policy.config.provisioner;
        let h1 = default_host(provisioner, &p1, &t1);
        let h2 = default_host(provisioner, &p2, &t2);
        prop_assert!(h1.is_ok(), "{u1:?}/{t1:?}: {h1:?}");
        prop_assert!(h2.is_ok(), "{u2:?}/{t2:?}: {h2:?}");
        let (h1, h2) = (h1.unwrap_or_default(), h2.unwrap_or_default());
        for h in [&h1, &h2] {
            prop_assert!(is_dns_host(h), "{h}");
            prop_assert_eq!(h.to_lowercase(), h.clone());
            prop_assert!(h.split('.').all(|l| l.len() <= 63 && l.get(2..4) != Some("--")), "{}", h);
        }
        prop_assert_eq!(u1 == u2 && t1 == t2, h1 == h2, "{:?}/{:?} and {:?}/{:?} → {}", u1, t1, u2, t2, h1);
        prop_assert_eq!(host_space(&policy, &h1), HostSpace::Owned(host_prefix(&p1)));
        prop_assert_eq!(may_claim(&policy, &p1, &h1), Ok(()));
        // DNS ignores case, and names below a host are in the same space.
        prop_assert_eq!(may_claim(&policy, &p1, &format!("x.{}", h1.to_uppercase())), Ok(()));
        if p1 != p2 {
            let refused = may_claim(&policy, &p2, &h1);
            prop_assert_eq!(refused.as_ref().map_err(|e| e.code()), Err("host-foreign"));
            let wildcard_below = format!("*.{h1}");
            prop_assert!(may_claim(&policy, &p2, &wildcard_below).is_err());
        }
    }

    /// Whatever host a user writes, at most one prefix may claim it unless it is outside the
    /// domain or in nobody's space.
    #[test]
    fn a_host_in_a_space_is_claimable_by_one_prefix_only(
        label in "[A-Za-z0-9*-]{1,40}", deeper in proptest::option::of("[a-z0-9*]{1,5}"),
        u1 in host_users(), u2 in host_users(),
    ) {
        let policy = host_policy(40, "{user}-{tag}.{domain}");
        let host = match deeper {
            Some(d) => format!("{d}.{label}.apps.example.com"),
            None => format!("{label}.apps.example.com"),
        };
        let (Ok(p1), Ok(p2)) = (policy.prefix_for(&u1), policy.prefix_for(&u2)) else {
            return Ok(());
        };
        if p1 != p2 && may_claim(&policy, &p1, &host).is_ok() && may_claim(&policy, &p2, &host).is_ok() {
            prop_assert!(
                matches!(host_space(&policy, &host), HostSpace::Outside | HostSpace::Unowned),
                "{host} claimable by {p1} and {p2}"
            );
        }
    }
}
