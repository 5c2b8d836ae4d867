//! The invariants the fuzz targets check, shared with the regression test in `make test`
//! (`tests/hostile_fuzz_regressions.rs` includes this file), so that an input the fuzzer once
//! broke is checked against exactly the same rules forever after.
//!
//! A violated invariant panics: that is how libFuzzer (and the stable driver) learn of a finding.

use base64::Engine as _;
use portico::admission::review::{to_request, ReviewIn};
use portico::admission::{Endpoint, Webhook};
use portico::config::Config;
use portico::core::label::validate_label_value;
use portico::core::route::{route_value, RouteValue};
use portico::core::{Kind, Policy};
use serde_json::Value;

/// Configurations every review input is judged under: the default, strict mode, and namespace
/// identity.
pub fn webhooks() -> Vec<Webhook> {
    let strict = Config {
        strict: true,
        ..Config::default()
    };
    let mut namespace = Config::default();
    namespace.identity.mode = portico::config::IdentityMode::Namespace;
    vec![
        Webhook::new(Config::default()),
        Webhook::new(strict),
        Webhook::new(namespace),
    ]
}

/// Any bytes as a review body, on both endpoints, under every configuration in `hooks`:
/// - `Err` (a 400) is fine; `Ok` must be a well-formed AdmissionReview carrying the request's uid;
/// - a denial carries a message and no patch; a patch only comes from `/mutate`;
/// - a patch applies to the object it was computed for, and reviewing the result again yields no
///   further patch (idempotence);
/// - with the default configuration and an ordinary requester on CREATE, every routing and owner
///   label on the stored pod or pod template carries the requester's own prefix, and is a valid
///   label value.
pub fn check_review(hooks: &[Webhook], data: &[u8]) {
    check_single_pass(data);
    // The input as a JSON value, when it is one serde_json can hold (it has a depth limit that
    // the webhook's decoder does not need).
    let input: Option<Value> = serde_json::from_slice(data).ok();
    for (i, webhook) in hooks.iter().enumerate() {
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let Ok(answer) = webhook.answer(endpoint, data) else {
                continue;
            };
            let out: Value = serde_json::from_slice(&answer.body).expect("the answer is JSON");
            assert_eq!(out["kind"], "AdmissionReview", "{out}");
            let response = &out["response"];
            let allowed = response["allowed"].as_bool().expect("allowed is a bool");
            assert_eq!(response["uid"].as_str(), Some(answer.summary.uid.as_str()));
            if let Some(input) = &input {
                assert_eq!(response["uid"], input["request"]["uid"], "uid carried back");
            }
            if !allowed {
                let message = response["status"]["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "a denial says why: {out}");
                assert!(response["patch"].is_null(), "a denial has no patch: {out}");
                continue;
            }
            let Some(patch) = response["patch"].as_str() else {
                continue;
            };
            assert_eq!(endpoint, Endpoint::Mutate, "only /mutate patches: {out}");
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch)
                .expect("the patch is base64");
            let patch: json_patch::Patch =
                serde_json::from_slice(&bytes).expect("the patch is a JSON Patch");
            let Some(input) = &input else { continue };
            let mut stored = input["request"]["object"].clone();
            if let Err(e) = json_patch::patch(&mut stored, &patch) {
                panic!(
                    "the patch does not apply to the object it was computed for: {e}\npatch: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            if i == 0 {
                check_labels(webhook.policy(), input, &stored);
            }
            // Reviewing the stored object again changes nothing.
            let mut again = input.clone();
            again["request"]["object"] = stored;
            let body = serde_json::to_vec(&again).expect("serializable");
            let answer = webhook
                .answer(endpoint, &body)
                .expect("the stored object is still a review");
            let out: Value = serde_json::from_slice(&answer.body).expect("JSON");
            assert!(
                out["response"]["patch"].is_null(),
                "second review patched again: {out}\nfirst patch: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// The single-pass decoder comes to the same request (or the same reason it cannot) as the
/// two-pass reference, and fails exactly when the reference does.
fn check_single_pass(data: &[u8]) {
    // Bodies that are not UTF-8 are refused before either reading.
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    let decide = |review: Result<ReviewIn<'_>, serde_json::Error>| {
        review
            .map_err(|e| e.to_string())
            .map(|r| r.request.map(|q| to_request(q).map_err(|e| e.to_string())))
    };
    let single = decide(ReviewIn::parse(data));
    let reference = decide(ReviewIn::parse_in_two_passes(data));
    assert_eq!(
        single, reference,
        "single pass and two passes disagree on {}",
        data
    );
}

/// Routing and owner labels after a CREATE by an ordinary user carry that user's prefix.
fn check_labels(policy: &Policy, input: &Value, stored: &Value) {
    let request = &input["request"];
    if request["operation"] != "CREATE" {
        return;
    }
    let user = request["userInfo"]["username"].as_str().unwrap_or_default();
    let groups: Vec<&str> = request["userInfo"]["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let id = &policy.config.identity;
    let special = |p: &portico::config::Principals| {
        p.users.iter().any(|u| u == user) || p.groups.iter().any(|g| groups.contains(&g.as_str()))
    };
    if user == id.portico || special(&id.workload_controllers) || special(&id.trusted_submitters) {
        return;
    }
    let kind = Kind::from_group_kind(
        request["kind"]["group"].as_str().unwrap_or_default(),
        request["kind"]["kind"].as_str().unwrap_or_default(),
    );
    let labels = match kind {
        Kind::Pod => &stored["metadata"]["labels"],
        Kind::CronJob => &stored["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
        Kind::Job | Kind::StatefulSet | Kind::Deployment | Kind::ReplicaSet | Kind::DaemonSet => {
            &stored["spec"]["template"]["metadata"]["labels"]
        }
        _ => return,
    };
    let Ok(prefix) = policy.prefix_for(user) else {
        return;
    };
    for key in [policy.job_label(), policy.pod0_label()] {
        if let Some(value) = labels.get(key).and_then(Value::as_str) {
            validate_label_value(value).unwrap_or_else(|e| panic!("{key}={value:?}: {e}"));
            assert_eq!(
                RouteValue::prefix_of(value),
                Some(prefix.as_str()),
                "{key}={value:?} is not {user:?}'s (prefix {prefix})"
            );
        }
    }
    let owner_key = policy.owner_label.as_str();
    if let Some(owner) = labels.get(owner_key).and_then(Value::as_str) {
        assert_eq!(owner, prefix.as_str(), "{owner_key}");
    }
}

/// Prefix encoding and route values on arbitrary (user, tag) pairs:
/// - a prefix is a non-empty valid label value without `-`, and plain alphanumeric names (up to
///   the length limit) encode to themselves;
/// - different users never share a prefix; different (user, tag) pairs never share a route value;
/// - a route value is a valid label value of at most 63 characters, `<prefix>-<tag>`.
pub fn check_route(policy: &Policy, a: (&str, &str), b: (&str, &str)) {
    let mut seen = Vec::new();
    for (user, tag) in [a, b] {
        let Ok(prefix) = policy.prefix_for(user) else {
            assert!(
                user.is_empty(),
                "only the empty name has no prefix: {user:?}"
            );
            seen.push(None);
            continue;
        };
        let p = prefix.as_str();
        assert!(!p.is_empty() && !p.contains('-'), "{user:?} -> {p:?}");
        validate_label_value(p).unwrap_or_else(|e| panic!("{user:?} -> {p:?}: {e}"));
        let plain = user.bytes().all(|b| b.is_ascii_alphanumeric());
        if plain && user.len() <= policy.config.identity.max_prefix_length {
            assert_eq!(p, user, "plain names encode to themselves");
        }
        let route = route_value(user, &prefix, tag).ok().map(|route| {
            let r = route.as_str().to_owned();
            validate_label_value(&r).unwrap_or_else(|e| panic!("{r:?}: {e}"));
            assert!(r.len() <= 63, "{r:?}");
            assert_eq!(r, format!("{p}-{tag}"));
            assert_eq!(RouteValue::prefix_of(&r), Some(p));
            r
        });
        seen.push(Some((prefix, route)));
    }
    if let [Some((pa, ra)), Some((pb, rb))] = &seen[..] {
        if a.0 != b.0 {
            assert_ne!(pa, pb, "{:?} and {:?} share a prefix", a.0, b.0);
        }
        if a != b {
            if let (Some(ra), Some(rb)) = (ra, rb) {
                assert_ne!(ra, rb, "{a:?} and {b:?} share a route value");
            }
        }
    }
}
