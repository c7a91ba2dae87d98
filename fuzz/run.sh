#!/usr/bin/env bash
# Run every fuzz target for a bounded time: `fuzz/run.sh [seconds-per-target]` (default 60).
# CI runs a short smoke (`fuzz/run.sh 20`). Installs cargo-fuzz from crates.io when missing; uses
# the nightly toolchain when there is one, else stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z).
# Safe Rust only, so no sanitizer (-s none): ~2x the executions per second.
# Crashing inputs land in fuzz/artifacts/<target>/; copy them to fuzz/regressions/<target>/
# so every later run replays them first.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
command -v cargo-fuzz > /dev/null || cargo install --locked cargo-fuzz
if rustup toolchain list 2> /dev/null | grep -q '^nightly'; then
  fuzz() { cargo +nightly fuzz "$@"; }
else
  fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi
targets="${FUZZ_TARGETS:-policy_document request_body sse_usage path_normalise wasm_request}"

# The host target drives the real plugin .wasm.
(cd .. && cargo build -q -p pag0-plugin --profile wasm-release --target wasm32-wasip1)
export PAG0_WASM="${PAG0_WASM:-$(cd .. && pwd)/target/wasm32-wasip1/wasm-release/pag0_plugin.wasm}"

for t in $targets; do
  mkdir -p "corpus/$t" "regressions/$t" "seeds/$t"
  # Replay known crashers first: a regression fails here, before any new fuzzing.
  if compgen -G "regressions/$t/*" > /dev/null; then
    fuzz run -s none "$t" "$PWD"/regressions/$t/* -- -runs=0
  fi
  echo "== fuzz $t for ${secs}s"
  set +e
  fuzz run -s none "$t" "$PWD/corpus/$t" "$PWD/seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|SUMMARY|Done)|panicked|ERROR|Test unit written"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit "$status"
  fi
done
