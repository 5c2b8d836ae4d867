//! `portico-bench-criterion`: the criterion results under `target/criterion` as one table
//! (median time per iteration with its 95% interval), plus the verdict on the core target of
//! 5 µs per Pod review decision.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use portico_bench::table;
use serde_json::Value;

/// The benchmark whose median is held to the 5 µs target: a Pod review's bytes in, the decision
/// out. The whole answer (with the patch and the reply encoded) is shown beside it.
const TARGET_BENCH: &str = "core/decide_pod_create";
const WHOLE_BENCH: &str = "review/pod_create";
const TARGET_NANOS: f64 = 5_000.0;

fn main() -> anyhow::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    let mut found = Vec::new();
    collect(&root, &mut found)?;
    found.sort();
    let mut rows = Vec::new();
    let mut verdict = None;
    let mut whole = None;
    for path in found {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        // <root>/<group>/<bench>/new/estimates.json
        let Some(bench_dir) = path.parent().and_then(Path::parent) else {
            continue;
        };
        let id = bench_dir
            .strip_prefix(&root)
            .unwrap_or(bench_dir)
            .to_string_lossy()
            .into_owned();
        let median = &v["median"];
        let (Some(point), Some(lo), Some(hi)) = (
            median["point_estimate"].as_f64(),
            median["confidence_interval"]["lower_bound"].as_f64(),
            median["confidence_interval"]["upper_bound"].as_f64(),
        ) else {
            continue;
        };
        if id == TARGET_BENCH {
            verdict = Some(point);
        }
        if id == WHOLE_BENCH {
            whole = Some(point);
        }
        rows.push(vec![
            id,
            format!("{:.2}", point / 1000.0),
            format!("{:.2} – {:.2}", lo / 1000.0, hi / 1000.0),
        ]);
    }
    println!("\nCore micro-benchmarks (criterion; median time per iteration)\n");
    print!(
        "{}",
        table(&["benchmark", "median µs", "95% interval µs"], &rows)
    );
    match verdict {
        Some(ns) => {
            println!(
            "\nPod review decision (review bytes in, decision out): {:.2} µs (target ≤ 5: {}); \
             whole answer with the reply encoded: {}",
            ns / 1000.0,
            if ns <= TARGET_NANOS { "met" } else { "MISSED" },
            whole.map_or("not measured".to_string(), |ns| format!("{:.2} µs", ns / 1000.0))
        )
        }
        None => println!("\n{TARGET_BENCH} was not measured"),
    }
    Ok(())
}

/// Every `new/estimates.json` under `dir`.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            // criterion's own report folder holds no estimates.
            if path.file_name().is_some_and(|n| n == "report") {
                continue;
            }
            collect(&path, out)?;
        } else if path.ends_with("new/estimates.json") {
            out.push(path);
        }
    }
    Ok(())
}
