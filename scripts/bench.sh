#!/usr/bin/env bash
# `make bench`: Portico's benchmarks, loopback only, bounded in time, ending with the tables.
#
#   1. criterion micro-benchmarks of the decision path (benches/core.rs);
#   2. the webhook (`portico serve --no-controller`) against the TLS limit server under h2load,
#      HTTP/1.1 and HTTP/2, alternating A B A B (bench/src/bin/webhook.rs);
#   3. the provisioner at 100, 1,000 and 10,000 pods against the sandbox
#      (bench/src/bin/provisioner.rs).
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_SECONDS (8) for the webhook runs; BENCH_PODS
# (100,1000,10000) and BENCH_QUIET_SECONDS (60) for the provisioner; BENCH_ONLY=core|webhook|
# provisioner to run one part. Results land in target/bench/ (summary.md and per-part files).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench
ONLY=${BENCH_ONLY:-}
CARGO=${CARGO:-cargo}
mkdir -p "$OUT"
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

# The load generator, from Debian, only when it is missing.
if want webhook && ! command -v h2load >/dev/null 2>&1; then
  echo "installing h2load (nghttp2-client)"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq nghttp2-client >/dev/null
fi

# One release build with one feature set: the binaries and the criterion benchmarks share it.
FEATURES=(--features portico/bench)
$CARGO build --release "${FEATURES[@]}" -p portico --bin portico -p portico-bench --bins

{
  echo "# Portico benchmarks"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "$(rustc --version)"
} > "$OUT/summary.md"

if want core; then
  echo "== criterion micro-benchmarks"
  timeout 600 $CARGO bench "${FEATURES[@]}" -p portico --bench core -- --noplot | tee "$OUT/criterion.txt"
  target/release/portico-bench-criterion target/criterion | tee "$OUT/core.md"
  cat "$OUT/core.md" >> "$OUT/summary.md"
fi

if want webhook; then
  echo "== webhook load"
  timeout 900 target/release/portico-bench-webhook --out "$OUT/webhook"
  cat "$OUT/webhook/webhook.md" >> "$OUT/summary.md"
fi

if want provisioner; then
  echo "== provisioner scale"
  timeout 1800 target/release/portico-bench-provisioner --out "$OUT/provisioner"
  cat "$OUT/provisioner/provisioner.md" >> "$OUT/summary.md"
fi

echo
echo "======================================================================"
cat "$OUT/summary.md"
