#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets with cargo-fuzz (libFuzzer) and runs each one for a bounded
# time. Knobs: FUZZ_SECONDS (per target, default 60), FUZZ_TARGETS (default: all three).
#
# - cargo-fuzz is installed once into .tools/cargo-fuzz (git-ignored).
# - The stable toolchain is enough: without a sanitizer (`--sanitizer none`) cargo-fuzz passes
#   only stable codegen flags. RUSTC_BOOTSTRAP=1 is set anyway so that a cargo-fuzz release that
#   adds a `-Z` flag does not break the target; Portico forbids `unsafe`, so AddressSanitizer
#   would add little beyond what the invariant checks catch.
# - Builds go to the repository's target/ (release profile, its own triple directory, so the dev
#   artifacts are untouched). libFuzzer's growing working corpus lives in target/fuzz-corpus/;
#   the committed seeds in fuzz/corpus/ are only read.
# - A finding is saved in fuzz/artifacts/<target>/ and the run fails; minimise it
#   (`cargo fuzz tmin`), add it under fuzz/regressions/ and fix the bug:
#   tests/hostile_fuzz_regressions.rs checks every file there in `make test`.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-review review_fields route}"
tools="$root/.tools/cargo-fuzz"
cargo="${CARGO:-cargo}"

if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz into $tools"
  "$cargo" install cargo-fuzz --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1
fuzz=("$cargo" fuzz)
common=(--sanitizer none --target-dir "$root/target")

cd "$root/fuzz"
"${fuzz[@]}" build "${common[@]}"

status=0
for target in $targets; do
  work="$root/target/fuzz-corpus/$target"
  mkdir -p "$work"
  seeds=()
  [ -d "corpus/$target" ] && seeds=("corpus/$target")
  log="$root/target/fuzz-$target.log"
  echo "== $target: ${seconds}s (log: $log)"
  if "${fuzz[@]}" run "${common[@]}" "$target" "$work" "${seeds[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  else
    status=1
    echo "!! $target found a failure:"
    grep -E 'panicked at|^SUMMARY|Test unit written to' "$log" | head -5 || tail -20 "$log"
  fi
done
exit "$status"
