#!/usr/bin/env bash
# Installs what is missing, then: the debug build and its whole ctest suite,
# the ASan+UBSan build and the same suite, and each libFuzzer target for
# TB_FUZZ_SECONDS (default 30). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

fuzz_seconds=${TB_FUZZ_SECONDS:-30}
summary=()

suite() {
    local preset=$1
    echo "== $preset: configure and build"
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset" >/dev/null
    echo "== $preset: ctest"
    local log
    log=$(mktemp)
    if ! ctest --preset "$preset" 2>&1 | tee "$log"; then
        rm -f "$log"
        return 1
    fi
    summary+=("$preset: $(grep -E 'tests passed' "$log" || echo 'no summary')")
    grep -q '100% tests passed' "$log" || { rm -f "$log"; return 1; }
    rm -f "$log"
}

fuzz_one() {
    local bin=$1 work=$2 name
    name=$(basename "$bin" | sed 's/^fuzz_//')
    mkdir -p "$work/$name"
    # New inputs go to the scratch dir; the committed corpus is only read.
    "$bin" -max_total_time="$fuzz_seconds" -print_final_stats=1 \
        -artifact_prefix="$work/$name-" "$work/$name" "tests/fuzz/corpus/$name" \
        >"$work/$name.log" 2>&1
}

fuzz_report() {
    local name=$1 work=$2 rc=$3 runs
    if [ "$rc" -eq 0 ]; then
        runs=$(grep -m1 -o 'number_of_executed_units: [0-9]*' "$work/$name.log" | awk '{print $2}')
        summary+=("fuzz $name: ${fuzz_seconds}s, ${runs:-?} runs, no finding")
        return 0
    fi
    echo "fuzz $name found a problem:" >&2
    tail -n 40 "$work/$name.log" >&2
    summary+=("fuzz $name: FAILED")
    return 1
}

fuzz() {
    echo "== fuzz: configure and build (clang, libFuzzer), ${fuzz_seconds}s per target"
    cmake --preset fuzz >/dev/null
    cmake --build --preset fuzz >/dev/null
    local work bins failed=0
    work=$(mktemp -d)
    bins=(build/fuzz/tests/fuzz/fuzz_*)
    # Two targets at a time: one per core.
    for ((i = 0; i < ${#bins[@]}; i += 2)); do
        local a=${bins[$i]} b=${bins[$((i + 1))]:-} pa pb=0 ra=0 rb=0
        fuzz_one "$a" "$work" &
        pa=$!
        if [ -n "$b" ]; then
            fuzz_one "$b" "$work" &
            pb=$!
        fi
        wait "$pa" || ra=$?
        [ "$pb" -eq 0 ] || wait "$pb" || rb=$?
        fuzz_report "$(basename "$a" | sed 's/^fuzz_//')" "$work" "$ra" || failed=1
        if [ -n "$b" ]; then
            fuzz_report "$(basename "$b" | sed 's/^fuzz_//')" "$work" "$rb" || failed=1
        fi
    done
    rm -rf "$work"
    return $failed
}

status=0
suite debug || status=1
[ $status -eq 0 ] && { suite asan || status=1; }
[ $status -eq 0 ] && { fuzz || status=1; }

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
