//! Well-formed reviews with fuzzer-chosen contents (requester, groups, kind, operation, labels,
//! annotations, owner, old object): reaches the decision logic's corners faster than raw bytes.
//! Checked by the same invariants as the `review` target.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portico::admission::Webhook;
use portico_fuzz::fields::Fields;

static HOOKS: OnceLock<Vec<Webhook>> = OnceLock::new();

fuzz_target!(|fields: Fields| {
    let hooks = HOOKS.get_or_init(portico_fuzz::checks::webhooks);
    let body = fields.to_review();
    portico_fuzz::checks::check_review(hooks, &body);
});
