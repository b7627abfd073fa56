#!/usr/bin/env bash
# Many topologies: what a gateway costs when its streams are spread over many
# topologies (one bus subscription, constant threads) rather than piled on one.
# Everything runs on NATS + JetStream (nats-server with -js, a fresh store per run),
# each gateway with LOOPS loops, TOPOBUS_SSE_MAX_PER_USER=0, log level warn.
#
#   many   N_TOPOLOGIES topologies x 1 stream on one gateway:
#          connected, seconds until all answered, gateway threads, userland RSS
#          per stream ((RSS with them - RSS before) / connected), idle CPU of
#          gateway + nats-server over IDLE_S, then one event per topology from a
#          plain NATS client (bench/nats_pub): how many reached their stream,
#          publish->receive p50/p99
#   scale  SCALE_STREAMS streams over GATEWAYS gateway processes (one port each)
#          on one nats-server, spread over SCALE_TOPOLOGIES topologies, held by
#          GATEWAYS load processes, each from its own source address 127.0.0.x:
#          connected, seconds, userland RSS per stream (all gateways), idle CPU,
#          then RATE events/s spread over the topologies for WINDOW_S:
#          deliveries/s and publish->receive p50/p99 over every stream
#
# Each scenario first waits (up to BENCH_QUIET_WAIT s) for the 1-minute load to
# fall below 2 and records the load it starts at. Prints medians over RUNS and
# leaves raw figures in $BENCH_OUT (default a temp dir that is removed).
# Everything it starts is stopped by PID.
#
# usage: bench/topologies.sh [RUNS] [SCENARIOS]     (SCENARIOS: "many scale", the default)
#   env: N_TOPOLOGIES LOOPS IDLE_S SCALE_STREAMS GATEWAYS SCALE_TOPOLOGIES RATE WINDOW_S
#        BENCH_OUT TOPOBUS (another topobus binary to measure)
set -euo pipefail

RUNS=${1:-3}
SCENARIOS=${2:-many scale}
N_TOPOLOGIES=${N_TOPOLOGIES:-10000}
LOOPS=${LOOPS:-2}
IDLE_S=${IDLE_S:-20}
SCALE_STREAMS=${SCALE_STREAMS:-100000}
GATEWAYS=${GATEWAYS:-6}
SCALE_TOPOLOGIES=${SCALE_TOPOLOGIES:-1000}
RATE=${RATE:-100}
WINDOW_S=${WINDOW_S:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
bench_init
ulimit -n 20000

# start_gateways N: N gateways on one NATS and one SQLite file; sets gw_pids, gw_ports.
start_gateways() {
    local i
    gw_pids=()
    gw_ports=()
    for i in $(seq 0 $(($1 - 1))); do
        gw_ports+=("$(free_port)")
        start_gateway_proc "${gw_ports[$i]}" "$nats_url" "sqlite:$tmp/gw.db" "$tmp/gateway$i.log"
        gw_pids+=("$gw_pid")
        wait_port "${gw_ports[$i]}"
    done
}

# make_topologies COUNT: creates them through the first gateway; writes the stream paths
# ($tmp/paths) and the NATS subjects ($tmp/subjects) of each.
make_topologies() {
    local editor viewer
    editor=$("$topobus" token --sub bench-editor --role editor,viewer --ttl 7200)
    viewer=$("$topobus" token --sub bench --role viewer --ttl 7200)
    create_topologies "${gw_ports[0]}" "$editor" "$1" "$tmp/ids"
    sed "s|.*|/topologies/&/events?token=$viewer|" "$tmp/ids" >"$tmp/paths"
    sed 's|.*|topology.&.tick|' "$tmp/ids" >"$tmp/subjects"
}

# start_loads STREAMS-PER-PROCESS: one sse_load per gateway, each from its own address.
start_loads() {
    local i
    load_pids=()
    for i in "${!gw_ports[@]}"; do
        "$build/bench/sse_load" --port "${gw_ports[$i]}" --paths "$tmp/paths" --streams "$1" \
            --bind "127.0.0.$((10 + i))" --inflight 1000 --connect-timeout 300 --max-seconds 1800 \
            --hist-out "$tmp/hist$i" >"$tmp/load$i.out" 2>&1 &
        load_pids+=($!)
        pids+=($!)
    done
    for i in "${!gw_ports[@]}"; do
        wait_line "$tmp/load$i.out" '^ready' 360
    done
}

loads_sum() { # loads_sum LINE-PREFIX KEY
    local i sum=0 v
    for i in "${!load_pids[@]}"; do
        v=$(field "$(grep "^$1" "$tmp/load$i.out" | tail -1)" "$2")
        sum=$(awk -v a="$sum" -v b="${v:-0}" 'BEGIN {print a + b}')
    done
    echo "$sum"
}

loads_max() { # loads_max LINE-PREFIX KEY
    local i max=0 v
    for i in "${!load_pids[@]}"; do
        v=$(field "$(grep "^$1" "$tmp/load$i.out" | tail -1)" "$2")
        max=$(awk -v a="$max" -v b="${v:-0}" 'BEGIN {print (b > a ? b : a)}')
    done
    echo "$max"
}

signal_loads() {
    local p
    for p in "${load_pids[@]}"; do kill "-$1" "$p"; done
}

stop_everything() {
    local p
    for p in "${load_pids[@]}" "${gw_pids[@]}"; do stop_pid "$p"; done
    stop_nats
    rm -f "$tmp"/gw.db* "$tmp"/hist* "$tmp"/load*.out
}

# Holds the streams, measures what they cost, then the idle CPU; leaves the loads running.
measure_held() { # measure_held SCENARIO STREAMS-PER-PROCESS
    local name=$1 rss0 rss1 conn c0 c1 load i threads=0 t
    load=$(wait_quiet)
    record "$name" all load1 "$load"
    sleep 2
    rss0=$(rss_kb_of "${gw_pids[@]}")
    start_loads "$2"
    sleep 3
    rss1=$(rss_kb_of "${gw_pids[@]}")
    conn=$(loads_sum ready connected)
    for i in "${!gw_pids[@]}"; do
        t=$(threads_of "${gw_pids[$i]}")
        ((t > threads)) && threads=$t
    done
    record "$name" all connected "$conn"
    record "$name" all failed "$(loads_sum ready failed)"
    record "$name" all connect_s "$(loads_max ready seconds)"
    record "$name" all gateway_threads_max "$threads"
    record "$name" all bytes_per_stream "$(((rss1 - rss0) * 1024 / (conn > 0 ? conn : 1)))"
    c0=$(cpu_ticks_of "${gw_pids[@]}" "$nats_pid")
    sleep "$IDLE_S"
    c1=$(cpu_ticks_of "${gw_pids[@]}" "$nats_pid")
    record "$name" all idle_cores "$(awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$IDLE_S" \
        'BEGIN {printf "%.4f", t / hz / s}')"
    log "bench: $name: $conn connected in $(loads_max ready seconds) s, $threads threads"
}

scenario_many() {
    start_nats
    start_gateways 1
    make_topologies "$N_TOPOLOGIES"
    measure_held many "$N_TOPOLOGIES"
    # One event per topology from a plain NATS client: each must reach its one stream.
    local t0 got=0 i win
    signal_loads USR1
    t0=$(date +%s.%N)
    "$build/bench/nats_pub" --port "$nats_port" --subjects "$tmp/subjects" \
        --count "$N_TOPOLOGIES" --rate 0 >"$tmp/pub.out" 2>&1
    for i in $(seq 300); do
        kill -HUP "${load_pids[0]}"
        sleep 0.1
        got=$(field "$(grep '^count' "$tmp/load0.out" | tail -1)" deliveries)
        ((${got:-0} >= N_TOPOLOGIES)) && break
    done
    record many all all_delivered_s "$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN {printf "%.2f", t1 - t0}')"
    signal_loads USR2
    wait_line "$tmp/load0.out" '^window' 10
    win=$(grep '^window' "$tmp/load0.out")
    record many all events_published "$(field "$(cat "$tmp/pub.out")" ok)"
    record many all events_received "${got:-0}"
    # Every stream opened with one snapshot; any other is a resync.
    record many all resyncs "$(($(field "$win" snapshots) - $(field "$win" streams)))"
    record many all burst_p50_ms "$(awk -v v="$(field "$win" p50_us)" 'BEGIN {print v / 1000}')"
    record many all burst_p99_ms "$(awk -v v="$(field "$win" p99_us)" 'BEGIN {print v / 1000}')"
    stop_everything
}

scenario_scale() {
    local per=$((SCALE_STREAMS / GATEWAYS)) win
    start_nats
    start_gateways "$GATEWAYS"
    make_topologies "$SCALE_TOPOLOGIES"
    measure_held scale "$per"
    signal_loads USR1
    "$build/bench/nats_pub" --port "$nats_port" --subjects "$tmp/subjects" --rate "$RATE" \
        --max-seconds "$WINDOW_S" >"$tmp/pub.out" 2>&1
    sleep 1
    signal_loads USR2
    local i
    for i in "${!load_pids[@]}"; do wait_line "$tmp/load$i.out" '^window' 10; done
    win=$(merge_hists "$tmp"/hist*)
    signal_loads HUP
    sleep 0.5
    record scale all rate_events_per_s "$(field "$(cat "$tmp/pub.out")" rate)"
    record scale all dps "$(awk -v d="$(loads_sum window deliveries)" -v s="$(loads_max window seconds)" \
        'BEGIN {printf "%.0f", d / s}')"
    record scale all delivered_pct "$(awk -v d="$(loads_sum count deliveries)" \
        -v ok="$(field "$(cat "$tmp/pub.out")" ok)" -v per="$((SCALE_STREAMS / SCALE_TOPOLOGIES))" \
        'BEGIN {printf "%.1f", (ok > 0 ? 100 * d / (ok * per) : 0)}')"
    record scale all p50_ms "$(awk -v v="$(field "$win" p50_us)" 'BEGIN {print v / 1000}')"
    record scale all p99_ms "$(awk -v v="$(field "$win" p99_us)" 'BEGIN {print v / 1000}')"
    record scale all resyncs "$(($(loads_sum window snapshots) - $(loads_sum window streams)))"
    stop_everything
}

print_table() {
    local s m
    printf '\n%-8s %-22s %12s\n' scenario figure median
    for s in $SCENARIOS; do
        for m in load1 connected failed connect_s gateway_threads_max bytes_per_stream idle_cores \
            events_published events_received all_delivered_s burst_p50_ms burst_p99_ms \
            rate_events_per_s dps delivered_pct p50_ms p99_ms resyncs; do
            [ "$(median "$s" all "$m")" = - ] && continue
            printf '%-8s %-22s %12s\n' "$s" "$m" "$(median "$s" all "$m")"
        done
    done
}

bench_prepare
export TOPOBUS_JWT_SECRET="bench-$RANDOM-$RANDOM-$RANDOM-secret-0123456789"
log "bench: $(nproc) cores, $RUNS runs of: $SCENARIOS; topobus $topobus"
for run in $(seq "$RUNS"); do
    for s in $SCENARIOS; do
        log "bench: run $run $s"
        "scenario_$s"
    done
done
print_table
[ -n "${BENCH_OUT:-}" ] && log "bench: raw figures in $raw"
exit 0
