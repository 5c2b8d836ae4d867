//! Prefix encoding and route values (`portico::core::prefix`, `portico::core::route`) on
//! fuzzer-chosen pairs of (user, tag): label-safe, self-encoding plain names, injective, no
//! ambiguous route value. Checked by `portico_fuzz::checks::check_route`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portico::core::Policy;

static POLICY: OnceLock<Policy> = OnceLock::new();

fuzz_target!(|input: (String, String, String, String)| {
    let policy = POLICY.get_or_init(Policy::default);
    let (user_a, tag_a, user_b, tag_b) = &input;
    portico_fuzz::checks::check_route(policy, (user_a, tag_a), (user_b, tag_b));
    // The second user as a near-twin of the first: differs by its last character, or is the
    // first with the tag's first segment moved over (`a-b`+`c` against `a`+`b-c`).
    if let Some((head, tail)) = tag_a.split_once('-') {
        let moved = format!("{user_a}-{head}");
        portico_fuzz::checks::check_route(policy, (user_a, tag_a), (&moved, tail));
    }
});
