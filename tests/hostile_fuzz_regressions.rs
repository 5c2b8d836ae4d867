//! The fuzz targets' invariants, in `make test`: every seed of the `review` corpus and every input
//! the fuzzers ever broke (`fuzz/regressions/`) is checked with the very code the fuzz targets run
//! (`fuzz/src/checks.rs`, included here), plus a fixed list of prefix/route pairs that are known
//! to be tricky. `make fuzz` searches for new inputs; this test keeps the old ones fixed.

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::path::{Path, PathBuf};

use portico::core::Policy;

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        // Skip notes (`*.md`) and placeholders (`.keep`).
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            p.is_file() && !name.starts_with('.') && !name.ends_with(".md")
        })
        .collect();
    out.sort();
    out
}

#[test]
fn seed_corpus_satisfies_the_review_invariants() {
    let hooks = checks::webhooks();
    let seeds = files("fuzz/corpus/review");
    assert!(seeds.len() >= 10, "the seed corpus is there: {seeds:?}");
    for path in seeds {
        let data = std::fs::read(&path).unwrap();
        checks::check_review(&hooks, &data);
    }
}

#[test]
fn review_regressions_stay_fixed() {
    let hooks = checks::webhooks();
    for path in files("fuzz/regressions/review") {
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            checks::check_review(&hooks, &data)
        }));
        assert!(
            result.is_ok(),
            "{} broke an invariant again",
            path.display()
        );
    }
}

/// Route regressions are JSON arrays `[user_a, tag_a, user_b, tag_b]`.
#[test]
fn route_regressions_and_known_tricky_pairs() {
    let policy = Policy::default();
    let mut cases: Vec<[String; 4]> = files("fuzz/regressions/route")
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let fixed: &[[&str; 4]] = &[
        ["a-b", "c", "a", "b-c"],
        ["a@b", "x", "a.b", "x"],
        ["user1", "foobar", "user1", "foobar"],
        ["User1", "foobar", "user1", "foobar"],
        ["alice@example.com", "t", "alice_", "t"],
        [
            "system:serviceaccount:team:runner",
            "t",
            "system",
            "serviceaccount-team-runner-t",
        ],
        ["https://issuer.example#1234", "t", "https", "issuer"],
        ["Ünïcode", "t", "Unicode", "t"],
        ["", "t", "u", "t"],
        ["a", "", "a", "-"],
    ];
    cases.extend(fixed.iter().map(|c| c.map(String::from)));
    // Names at and just past the length kept verbatim.
    let (at, over) = ("x".repeat(40), "x".repeat(41));
    cases.push([at, "t".into(), over, "t".into()]);
    for [ua, ta, ub, tb] in &cases {
        checks::check_route(&policy, (ua, ta), (ub, tb));
        checks::check_route(&policy, (ub, tb), (ua, ta));
    }
}
