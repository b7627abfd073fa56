#!/usr/bin/env bash
# The fan-out check: the gateway against nginx + nchan and the bare epoll
# broadcaster, interleaved in one session, each run on a fresh server on a
# free loopback port. Servers ("kinds"):
#   gateway       topobus gateway on the in-process bus (mem://), fed by POST /publish
#   gw-nats       topobus gateway on NATS + JetStream, fed the production way: a plain
#                 NATS client publishing envelopes (bench/nats_pub)
#   gw-nats-http  topobus gateway on NATS + JetStream, fed by POST /publish
#   nchan         nginx + nchan, fed by its POST /pub
#   bare          bench/epoll_bcast, fed by POST
# Per run and server:
#   idle   N_IDLE streams held: (RSS with them - RSS before) / connected
#          (gateway, nchan, bare; many topologies: bench/topologies.sh)
#   rate20 STREAMS streams, one publisher at 20 events/s: p50/p99, CPU/delivery
#   sat    STREAMS streams, publishers as fast as answered (HTTP: PUB_CONNS
#          connections, one request in flight each; NATS: at most NATS_WINDOW
#          events published and not yet delivered to every stream, as the load
#          client counts them): deliveries/s, CPU/delivery
# Server CPU is utime+stime from /proc/<pid>/stat over the measured window
# (nginx: master + workers; gw-nats*: gateway + nats-server); "other" is the
# rest of the machine's busy CPU in the same window (client, publisher, and
# anything else running). Each scenario first waits (up to BENCH_QUIET_WAIT s)
# for the 1-minute load to fall below 2 and records the load it starts at.
# Prints one table of medians and leaves raw figures in $BENCH_OUT (default
# a temp dir that is removed). Everything it starts is stopped by PID.
#
# usage: bench/run.sh [RUNS]
#   env: N_IDLE STREAMS LOOPS WINDOW_S PUB_CONNS NATS_WINDOW KINDS BENCH_OUT TOPOBUS
set -euo pipefail

RUNS=${1:-3}
N_IDLE=${N_IDLE:-10000}
STREAMS=${STREAMS:-1000}
LOOPS=${LOOPS:-2}
WINDOW_S=${WINDOW_S:-8}
PUB_CONNS=${PUB_CONNS:-4}
NATS_WINDOW=${NATS_WINDOW:-8}
KINDS=${KINDS:-gateway gw-nats gw-nats-http nchan bare}
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
bench_init

# Server processes to account: the main pid plus its child processes (nginx workers),
# plus nats-server when the gateway runs on it.
server_pids() {
    echo "$srv_pid" $(cat "/proc/$srv_pid/task/$srv_pid/children" 2>/dev/null) ${extra_pid:-}
}

cpu_ticks() { cpu_ticks_of $(server_pids); }
rss_kb() { rss_kb_of "$srv_pid" $(cat "/proc/$srv_pid/task/$srv_pid/children" 2>/dev/null); }

start_gateway() {
    local port=$1 bus=$2 feed=$3 secret="bench-$RANDOM-$RANDOM-$RANDOM-secret-0123456789" id
    export TOPOBUS_JWT_SECRET=$secret
    start_gateway_proc "$port" "$bus" "sqlite:$tmp/gw.db" "$tmp/gateway-$kind-$run.log"
    srv_pid=$gw_pid
    wait_port "$port"
    token=$("$topobus" token --sub bench --role viewer,editor,publisher --ttl 3600)
    id=$(curl -sf -m 5 -XPOST -H "Authorization: Bearer $token" -d '{"name":"bench"}' \
        "http://127.0.0.1:$port/topologies" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
    sub_path="/topologies/$id/events?token=$token"
    if [ "$feed" = nats ]; then
        pub_cmd=("$build/bench/nats_pub" --port "$nats_port" --subject "topology.$id.tick")
        pub_sat=(--window "$NATS_WINDOW" --counter-file "$tmp/counter" --streams "$STREAMS")
    else
        pub_cmd=("$build/bench/sse_pub" --port "$port" --path /publish
            --topic "topology.$id.tick" --token "$token")
        pub_sat=(--rate 0 --conns "$PUB_CONNS")
    fi
}

start_nchan() {
    local port=$1 dir=$tmp/nginx
    mkdir -p "$dir/tmp" "$dir/logs"
    # Same cores as the gateway: one worker per gateway loop. postpone_output 0 and
    # sendfile off are nchan's best case here (postponed output cost it 3x at 1,000 streams).
    cat >"$dir/nginx.conf" <<EOF
load_module /usr/share/nginx/modules/ngx_nchan_module.so;
worker_processes $LOOPS;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 19000; multi_accept on; }
http {
  access_log off;
  keepalive_requests 1000000;
  postpone_output 0;
  sendfile off;
  tcp_nodelay on;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  nchan_shared_memory_size 256m;
  server {
    listen 127.0.0.1:$port;
    location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 16; }
    location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; }
  }
}
EOF
    nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/logs/stdout" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    wait_port "$port"
    sub_path=/sub
    pub_cmd=("$build/bench/sse_pub" --port "$port" --path /pub)
    pub_sat=(--rate 0 --conns "$PUB_CONNS")
}

start_bare() {
    "$build/bench/epoll_bcast" --port "$1" --threads "$LOOPS" >"$tmp/bare.log" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    wait_port "$1"
    sub_path=/sub
    pub_cmd=("$build/bench/sse_pub" --port "$1" --path /pub)
    pub_sat=(--rate 0 --conns "$PUB_CONNS")
}

start_load() {
    "$build/bench/sse_load" --port "$port" --path "$sub_path" --streams "$1" \
        --threads "${2:-1}" --inflight 128 --connect-timeout 120 --max-seconds 600 \
        --counter-file "$tmp/counter" >"$tmp/load.out" 2>&1 &
    load_pid=$!
    pids+=("$load_pid")
    wait_line "$tmp/load.out" '^ready' 180
}

scenario_idle() {
    local kind=$1 before after conn load
    load=$(wait_quiet)
    sleep 1
    before=$(rss_kb)
    start_load "$N_IDLE" 1
    sleep 3
    after=$(rss_kb)
    conn=$(field "$(grep '^ready' "$tmp/load.out")" connected)
    stop_pid "$load_pid"
    record "$kind" idle load1 "$load"
    record "$kind" idle connected "$conn"
    record "$kind" idle rss_before_kb "$before"
    record "$kind" idle bytes_per_stream "$(((after - before) * 1024 / (conn > 0 ? conn : 1)))"
}

# scenario_stream KIND NAME PUBLISHER-ARGS...
scenario_stream() {
    local kind=$1 name=$2 c0 c1 b0 b1 win pub tot deliv cpu_s secs load
    shift 2
    load=$(wait_quiet)
    start_load "$STREAMS" 1
    "${pub_cmd[@]}" "$@" --max-seconds $((WINDOW_S + 30)) >"$tmp/pub.out" 2>&1 &
    local pub_pid=$!
    pids+=("$pub_pid")
    sleep 2
    c0=$(cpu_ticks)
    b0=$(busy_ticks)
    kill -USR1 "$load_pid"
    sleep "$WINDOW_S"
    kill -USR2 "$load_pid"
    c1=$(cpu_ticks)
    b1=$(busy_ticks)
    wait_line "$tmp/load.out" '^window' 10
    stop_pid "$pub_pid"
    sleep 1
    stop_pid "$load_pid"
    win=$(grep '^window' "$tmp/load.out")
    tot=$(grep '^total' "$tmp/load.out")
    pub=$(cat "$tmp/pub.out")
    deliv=$(field "$win" deliveries)
    secs=$(field "$win" seconds)
    cpu_s=$(awk -v t=$((c1 - c0)) -v hz="$hz" 'BEGIN {print t / hz}')
    record "$kind" "$name" load1 "$load"
    record "$kind" "$name" dps "$(field "$win" dps)"
    record "$kind" "$name" p50_ms "$(awk -v v="$(field "$win" p50_us)" 'BEGIN {print v / 1000}')"
    record "$kind" "$name" p99_ms "$(awk -v v="$(field "$win" p99_us)" 'BEGIN {print v / 1000}')"
    record "$kind" "$name" cpu_us_per_delivery \
        "$(awk -v c="$cpu_s" -v d="$deliv" 'BEGIN {printf "%.2f", (d > 0 ? c * 1e6 / d : 0)}')"
    record "$kind" "$name" server_cores "$(awk -v c="$cpu_s" -v s="$secs" 'BEGIN {printf "%.2f", c / s}')"
    record "$kind" "$name" other_cores \
        "$(awk -v b=$((b1 - b0)) -v c=$((c1 - c0)) -v hz="$hz" -v s="$secs" \
            'BEGIN {printf "%.2f", (b - c) / hz / s}')"
    record "$kind" "$name" publishes_per_s "$(field "$pub" rate)"
    record "$kind" "$name" delivered_pct "$(awk -v d="$(field "$tot" deliveries)" \
        -v ok="$(field "$pub" ok)" -v n="$STREAMS" 'BEGIN {printf "%.1f", (ok > 0 ? 100 * d / (ok * n) : 0)}')"
    # The gateway opens every stream with a snapshot; any further one is a resync.
    local initial=0
    case $kind in gateway | gw-*) initial=$STREAMS ;; esac
    record "$kind" "$name" resyncs "$(($(field "$tot" snapshots) - initial))"
    record "$kind" "$name" client_cores \
        "$(awk -v c="$(field "$win" client_cpu_s)" -v s="$secs" 'BEGIN {printf "%.2f", c / s}')"
    record "$kind" "$name" pub_errors "$(field "$pub" errors)"
    cp "$tmp/load.out" "$tmp/load-$kind-$run-$name.out"
    cp "$tmp/pub.out" "$tmp/pub-$kind-$run-$name.out"
}

run_one() {
    local kind=$1 run=$2
    port=$(free_port)
    extra_pid=
    log "bench: run $run $kind on 127.0.0.1:$port"
    case $kind in
    gateway) start_gateway "$port" mem:// http ;;
    gw-nats | gw-nats-http)
        start_nats
        extra_pid=$nats_pid
        start_gateway "$port" "$nats_url" "$([ "$kind" = gw-nats ] && echo nats || echo http)"
        ;;
    nchan) start_nchan "$port" ;;
    bare) start_bare "$port" ;;
    esac
    # Idle memory on one topology does not depend on the bus; topologies.sh measures NATS.
    case $kind in gw-*) ;; *) scenario_idle "$kind" ;; esac
    scenario_stream "$kind" rate20 --rate 20
    scenario_stream "$kind" sat "${pub_sat[@]}"
    stop_pid "$srv_pid"
    [ -n "$extra_pid" ] && stop_nats
    rm -f "$tmp"/gw.db*
}

print_table() {
    local s m k kinds=($KINDS)
    printf '\n%-8s %-20s' scenario figure
    for k in "${kinds[@]}"; do printf ' %12s' "$k"; done
    printf '\n'
    for s in idle rate20 sat; do
        for m in load1 connected bytes_per_stream dps p50_ms p99_ms cpu_us_per_delivery \
            server_cores client_cores other_cores publishes_per_s delivered_pct resyncs pub_errors; do
            local any=-
            for k in "${kinds[@]}"; do [ "$(median "$k" "$s" "$m")" != - ] && any=y; done
            [ "$any" = - ] && continue
            printf '%-8s %-20s' "$s" "$m"
            for k in "${kinds[@]}"; do printf ' %12s' "$(median "$k" "$s" "$m")"; done
            printf '\n'
        done
    done
}

bench_prepare
log "bench: $(nproc) cores, $RUNS runs, $N_IDLE idle streams, $STREAMS streams, $LOOPS loops/workers/threads"
for run in $(seq "$RUNS"); do
    for kind in $KINDS; do
        run_one "$kind" "$run"
    done
done
print_table
[ -n "${BENCH_OUT:-}" ] && log "bench: raw figures in $raw"
exit 0
