#!/usr/bin/env bash
# Guest instructions per allowed exchange, for one or more builds of the filter: exact, so it
# separates two builds on a noisy or virtualised machine where CPU time cannot.
#
#   host-tests/profile/guest-instructions.sh [--profile] A.wasm [B.wasm ...]
#
# Runs host-tests/examples/guest_loop (an allowed per-request-priced GET with its response and
# the end of the stream, through wasmtime) for 200 and for 1200 exchanges under callgrind and
# divides the difference by 1000, so compiling the module and starting the host cancel out.
# "guest" counts only the JIT code (the .wasm compiled by cranelift: the filter, the proxy-wasm
# SDK, the allocator); "all" adds the test host. With --profile, the guest figure is split by
# function (wasmtime's perf map; build the .wasm with CARGO_PROFILE_WASM_RELEASE_STRIP=false so
# functions have names). Needs valgrind (apt-get install valgrind).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
profile=""
if [ "${1:-}" = "--profile" ]; then profile=1; shift; fi
[ $# -ge 1 ] || { sed -n 2,14p "$0"; exit 2; }
wasms=()
for w in "$@"; do wasms+=("$(realpath "$w")"); done
cd "$root"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --quiet --release -p pag0-host-tests --example guest_loop
bin=target/release/examples/guest_loop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for abs in "${wasms[@]}"; do
  for n in 200 1200; do
    # In $work: wasmtime writes the perf map to /tmp/perf-<pid>.map.
    ( cd "$work" && env ${profile:+PAG0_PERFMAP=1} PAG0_WASM="$abs" \
        valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" "$root/$bin" "$n" >/dev/null 2>"$work/vg.$n" ) \
      || { cat "$work/vg.$n" >&2; exit 1; }
    if [ -n "$profile" ]; then
      pid=$(sed -n 's/^==\([0-9]*\)==.*/\1/p' "$work/vg.$n" | head -1)
      mv "/tmp/perf-$pid.map" "$work/map.$n"
    fi
  done
  python3 host-tests/profile/guest_ir.py "$abs" "$work" ${profile:+--profile}
done
