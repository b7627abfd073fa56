#!/usr/bin/env bash
# Interleaved comparison of two builds with the mutator benchmark: for each
# round and mode, one run of build A, then one of build B, so both see the
# same machine. One `result` line per run, prefixed with the build, mode,
# round and the 1-minute load average.
#
# usage: bench/mutator_ab.sh BUILD_A BUILD_B [ROUNDS]   env: MODES (default: all three)
#   BUILD_*: release trees built with -DTB_BENCH=ON (bench/mutator.sh builds one)
set -euo pipefail

a=$1 b=$2 rounds=${3:-2}
modes=${MODES:-serve nats-sqlite nats-pg}
for round in $(seq 1 "$rounds"); do
    for mode in $modes; do
        for build in "$a" "$b"; do
            line=$("$build/bench/bench_mutator" --mode "$mode" --runs 1 2>/dev/null | grep '^result' | tail -1)
            echo "build=$build mode=$mode round=$round load=$(cut -d' ' -f1 /proc/loadavg) ${line#result }"
        done
    done
done
