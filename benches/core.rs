//! Criterion micro-benchmarks of Portico's decision path (run by `make bench`; built only with
//! `--features bench`, so `cargo test` never compiles criterion).
//!
//! - `review/*`: a whole review body in, the reply body out ([`Webhook::answer`]) — what the
//!   server spends per request beyond TLS, HTTP, logging and metrics. Pod CREATE by an OIDC user,
//!   a pod from a stamped Job by the job controller, Job CREATE, Pod UPDATE that leaves routing
//!   alone.
//! - `core/decide_*`: the decision per review: review bytes in, decision out (decoding what the
//!   decision needs, then deciding) — held to the 5 µs target for a Pod review.
//! - `core/*`: the pure decision on an already-decoded request, and the decoding alone.
//! - `prefix/*`: the prefix encoding of a plain and of a hashed user name.
//! - `patch/*`: edits → JSON Patch → the bytes that travel (base64 in the reply).

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portico::admission::review::{to_request, ReviewIn};
use portico::admission::{patch, Endpoint, Webhook};
use portico::config::Config;
use portico::core::{self, Policy};

const POD_CREATE: &str = include_str!("data/pod-create.json");
const JOB_CREATE: &str = include_str!("data/job-create.json");
const POD_UPDATE: &str = include_str!("data/pod-update.json");

/// The Pod CREATE review as the job controller sends it for a Job that Portico stamped: the
/// template's labels and identity annotation are already on the pod.
fn pod_from_stamped_job() -> String {
    let mut v: serde_json::Value = serde_json::from_str(POD_CREATE).expect("fixture");
    let request = &mut v["request"];
    request["userInfo"] = serde_json::json!({
        "username": "system:serviceaccount:kube-system:job-controller",
        "uid": "c1d2e3f4-0000-4000-8000-000000000001",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
    });
    let labels = &mut request["object"]["metadata"]["labels"];
    labels["jarvice-job-ipaddr"] = "oidc_iyymerm2bdkjpmjg-notebook".into();
    labels["portico.dev/owner"] = "oidc_iyymerm2bdkjpmjg".into();
    v.to_string()
}

fn reviews(c: &mut Criterion) {
    let webhook = Webhook::new(Config::default());
    let stamped = pod_from_stamped_job();
    let mut group = c.benchmark_group("review");
    for (name, body) in [
        ("pod_create", POD_CREATE),
        ("pod_from_stamped_job", stamped.as_str()),
        ("job_create", JOB_CREATE),
        ("pod_update", POD_UPDATE),
    ] {
        // A benchmark of a review that is refused or undecidable would measure the wrong path.
        let answer = webhook
            .answer(Endpoint::Mutate, body.as_bytes())
            .expect("a review");
        assert!(answer.summary.allowed, "{name}: {:?}", answer.summary);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| webhook.answer(Endpoint::Mutate, black_box(body.as_bytes())))
        });
    }
    group.finish();
}

fn core_decision(c: &mut Criterion) {
    let policy = Policy::new(Config::default());
    let mut group = c.benchmark_group("core");
    // The decision per review as the issue counts it: review bytes in, decision out (decoding
    // what the decision needs, then deciding); the reply's patch and JSON are `patch/*`.
    for (name, body) in [
        ("decide_pod_create", POD_CREATE),
        ("decide_job_create", JOB_CREATE),
        ("decide_pod_update", POD_UPDATE),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let review = ReviewIn::parse(black_box(body)).expect("review");
                let request = to_request(review.request.expect("request")).expect("decodable");
                core::mutate(&policy, &request)
            })
        });
    }
    group.bench_function("decode_pod_create", |b| {
        b.iter(|| {
            let review = ReviewIn::parse(black_box(POD_CREATE)).expect("review");
            to_request(review.request.expect("request")).expect("decodable")
        })
    });
    // The floor for any serde_json decoder: one pass over the body that keeps nothing.
    group.bench_function("skip_pod_create", |b| {
        b.iter(|| serde_json::from_str::<serde::de::IgnoredAny>(black_box(POD_CREATE)))
    });
    let review = ReviewIn::parse(POD_CREATE).expect("review");
    let request = to_request(review.request.expect("request")).expect("decodable");
    group.bench_function("mutate_pod_create", |b| {
        b.iter(|| core::mutate(&policy, black_box(&request)))
    });
    group.finish();
}

fn prefixes(c: &mut Criterion) {
    let policy = Policy::new(Config::default());
    let mut group = c.benchmark_group("prefix");
    group.bench_function("plain_user1", |b| {
        b.iter(|| policy.prefix_for(black_box("user1")))
    });
    group.bench_function("hashed_oidc", |b| {
        b.iter(|| policy.prefix_for(black_box("oidc:alice@example.org")))
    });
    group.finish();
}

fn patches(c: &mut Criterion) {
    let policy = Policy::new(Config::default());
    let mut group = c.benchmark_group("patch");
    for (name, body) in [("pod_create", POD_CREATE), ("job_create", JOB_CREATE)] {
        let review = ReviewIn::parse(body).expect("review");
        let request = to_request(review.request.expect("request")).expect("decodable");
        let decision = core::mutate(&policy, &request);
        let edits = decision.edits().to_vec();
        let object = request.object.clone().expect("object");
        assert!(!edits.is_empty(), "{name} should be stamped");
        group.bench_function(name, |b| {
            b.iter(|| {
                let patch = patch::build(&request.kind, black_box(&object), black_box(&edits));
                let json = serde_json::to_vec(&patch).expect("serialisable");
                base64::engine::general_purpose::STANDARD.encode(json)
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    // Bounded: about four seconds per benchmark.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = reviews, core_decision, prefixes, patches
}
criterion_main!(benches);
