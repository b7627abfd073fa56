#!/usr/bin/env bash
# The mutator benchmark in its three deployments (bench/bench_mutator_modes.h):
# serve, nats-sqlite, nats-pg. Builds the release tree with -DTB_BENCH=ON (as
# bench/run.sh does), runs bench_mutator once per mode with --runs RUNS, and
# prints one table of medians with the load average before and after each mode.
# Per-run lines go to stderr. bench_mutator stops its own processes by PID.
#
# usage: bench/mutator.sh [RUNS] [bench_mutator options…]   env: MODES, JOBS
set -euo pipefail

RUNS=${1:-5}
shift $(($# > 0 ? 1 : 0))
MODES=${MODES:-serve nats-sqlite nats-pg}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build/release
out=$(mktemp /tmp/tb-mutator-bench.XXXXXX)
pid=

cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$root" && cmake --preset release >/dev/null &&
    cmake -S . -B build/release -DTB_BENCH=ON >/dev/null &&
    cmake --build build/release -j "${JOBS:-2}" --target bench_mutator topobus >/dev/null)

load() { cut -d' ' -f1-3 /proc/loadavg; }
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

rows=()
for mode in $MODES; do
    before=$(load)
    "$build/bench/bench_mutator" --mode "$mode" --runs "$RUNS" "$@" >"$out" &
    pid=$!
    wait "$pid"
    pid=
    after=$(load)
    grep -v '^result' "$out" >&2
    r=$(grep '^result' "$out")
    row=$(printf '%-12s %8s %8s %9s %9s %12s   %s -> %s' "$mode" "$(field "$r" slow_p50)" \
        "$(field "$r" slow_p99)" "$(field "$r" fast_p50)" "$(field "$r" fast_p99)" \
        "$(field "$r" sustained)" "$before" "$after")
    raw=$(field "$r" raw)
    [ -n "$raw" ] && row+="   (raw store $raw/s, 1000 nodes $(field "$r" raw_1000)/s)"
    rows+=("$row")
done

printf '\nmedians of %s runs on %s cores\n' "$RUNS" "$(nproc)"
printf '(latency in ms: enqueue -> mutation.applied at the SSE client)\n'
printf '%-12s %8s %8s %9s %9s %12s   %s\n' mode '1/s p50' '1/s p99' '200/s p50' '200/s p99' \
    'mutations/s' 'load 1/5/15 min before -> after'
printf '%s\n' "${rows[@]}"
