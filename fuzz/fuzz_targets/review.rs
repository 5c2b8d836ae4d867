//! Arbitrary bytes as an AdmissionReview body: decoding plus the whole decision path
//! (`Webhook::answer` on `/mutate` and `/validate`, three configurations), checked by
//! `portico_fuzz::checks::check_review`. Seeds: real AdmissionReview documents (corpus/review).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portico::admission::Webhook;

static HOOKS: OnceLock<Vec<Webhook>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let hooks = HOOKS.get_or_init(portico_fuzz::checks::webhooks);
    portico_fuzz::checks::check_review(hooks, data);
});
