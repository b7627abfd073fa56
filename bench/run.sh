#!/usr/bin/env bash
# The fan-out scale check (issue 6): the gateway against nginx + nchan and the
# bare epoll broadcaster, interleaved in one session, each run on a fresh
# server on a free loopback port. Per run and server:
#   idle   N_IDLE streams held: (RSS with them - RSS before) / connected
#   rate20 STREAMS streams, one publisher at 20 events/s: p50/p99, CPU/delivery
#   sat    STREAMS streams, PUB_CONNS publishers as fast as answered:
#          deliveries/s, CPU/delivery
# Server CPU is utime+stime from /proc/<pid>/stat over the measured window
# (nginx: master + workers); "other" is the rest of the machine's busy CPU
# in the same window (client, publisher, and anything else running).
# Prints one table of medians and leaves raw figures in $BENCH_OUT (default
# a temp dir that is removed). Everything it starts is stopped by PID.
#
# usage: bench/run.sh [RUNS]    env: N_IDLE STREAMS LOOPS WINDOW_S PUB_CONNS
set -euo pipefail

RUNS=${1:-3}
N_IDLE=${N_IDLE:-10000}
STREAMS=${STREAMS:-1000}
LOOPS=${LOOPS:-2}
WINDOW_S=${WINDOW_S:-8}
PUB_CONNS=${PUB_CONNS:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build/release
tmp=$(mktemp -d /tmp/tb-bench.XXXXXX)
raw=${BENCH_OUT:-$tmp}/raw.tsv
mkdir -p "$(dirname "$raw")"
: >"$raw"
pids=()
hz=$(getconf CLK_TCK)

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

install_missing() {
    "$root/scripts/deps.sh" run
    local missing=()
    for p in nginx-light libnginx-mod-nchan curl; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "bench: installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null
        # The package starts a system nginx on :80; the bench runs its own.
        systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
}

build_all() {
    (cd "$root" && cmake --preset release >/dev/null &&
        cmake -S . -B build/release -DTB_BENCH=ON >/dev/null &&
        cmake --build build/release >/dev/null)
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1 i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    log "bench: nothing listens on $port"
    return 1
}

# wait_line FILE REGEX SECONDS
wait_line() {
    local i
    for i in $(seq $(($3 * 10))); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    log "bench: timed out waiting for '$2' in $1"
    return 1
}

forget_pid() {
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    pids=("${keep[@]}")
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    timeout 15 tail --pid="$1" -f /dev/null 2>/dev/null || kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# Server processes to account: the main pid plus its child processes (nginx workers).
server_pids() {
    echo "$srv_pid" $(cat "/proc/$srv_pid/task/$srv_pid/children" 2>/dev/null)
}

cpu_ticks() {
    local sum=0 p v
    for p in $(server_pids); do
        v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        sum=$((sum + v))
    done
    echo "$sum"
}

rss_kb() {
    local sum=0 p v
    for p in $(server_pids); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        sum=$((sum + v))
    done
    echo "$sum"
}

busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

start_gateway() {
    local port=$1 secret="bench-$RANDOM-$RANDOM-$RANDOM-secret-0123456789" id
    export TOPOBUS_JWT_SECRET=$secret
    TOPOBUS_LOG=warn TOPOBUS_SSE_MAX_PER_USER=0 "$build/cmd/topobus" gateway \
        --listen "127.0.0.1:$port" --bus mem:// --db "sqlite:$tmp/gw.db" --loops "$LOOPS" \
        >"$tmp/gateway.log" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    wait_port "$port"
    token=$("$build/cmd/topobus" token --sub bench --role viewer,editor,publisher --ttl 3600)
    id=$(curl -sf -m 5 -XPOST -H "Authorization: Bearer $token" -d '{"name":"bench"}' \
        "http://127.0.0.1:$port/topologies" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
    sub_path="/topologies/$id/events?token=$token"
    pub_args=(--path /publish --topic "topology.$id.tick" --token "$token")
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
    pub_args=(--path /pub)
}

start_bare() {
    "$build/bench/epoll_bcast" --port "$1" --threads "$LOOPS" >"$tmp/bare.log" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    wait_port "$1"
    sub_path=/sub
    pub_args=(--path /pub)
}

# field LINE KEY -> value of KEY=value in LINE
field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$raw"; }

start_load() {
    "$build/bench/sse_load" --port "$port" --path "$sub_path" --streams "$1" \
        --threads "${2:-1}" --inflight 128 --connect-timeout 120 --max-seconds 600 \
        >"$tmp/load.out" 2>&1 &
    load_pid=$!
    pids+=("$load_pid")
    wait_line "$tmp/load.out" '^ready' 180
}

scenario_idle() {
    local kind=$1 before after conn
    sleep 1
    before=$(rss_kb)
    start_load "$N_IDLE" 1
    sleep 3
    after=$(rss_kb)
    conn=$(field "$(grep '^ready' "$tmp/load.out")" connected)
    stop_pid "$load_pid"
    record "$kind" idle connected "$conn"
    record "$kind" idle rss_before_kb "$before"
    record "$kind" idle bytes_per_stream "$(((after - before) * 1024 / (conn > 0 ? conn : 1)))"
}

# scenario_stream KIND NAME RATE CONNS
scenario_stream() {
    local kind=$1 name=$2 c0 c1 b0 b1 win pub tot deliv cpu_s secs
    start_load "$STREAMS" 1
    "$build/bench/sse_pub" --port "$port" "${pub_args[@]}" --rate "$3" --conns "$4" \
        --max-seconds $((WINDOW_S + 30)) >"$tmp/pub.out" 2>&1 &
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
    [ "$kind" = gateway ] && initial=$STREAMS
    record "$kind" "$name" resyncs "$(($(field "$tot" snapshots) - initial))"
    record "$kind" "$name" client_cores \
        "$(awk -v c="$(field "$win" client_cpu_s)" -v s="$secs" 'BEGIN {printf "%.2f", c / s}')"
    record "$kind" "$name" pub_errors "$(field "$pub" errors)"
}

run_one() {
    local kind=$1 run=$2
    port=$(free_port)
    log "bench: run $run $kind on 127.0.0.1:$port"
    case $kind in
    gateway) start_gateway "$port" ;;
    nchan) start_nchan "$port" ;;
    bare) start_bare "$port" ;;
    esac
    scenario_idle "$kind"
    scenario_stream "$kind" rate20 20 1
    scenario_stream "$kind" sat 0 "$PUB_CONNS"
    stop_pid "$srv_pid"
    rm -f "$tmp"/gw.db*
}

median() {
    awk -F'\t' -v k="$1" -v s="$2" -v m="$3" '$1 == k && $2 == s && $3 == m {print $4}' "$raw" |
        sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

print_table() {
    local s m
    printf '\n%-8s %-20s %12s %12s %12s\n' scenario figure gateway nchan bare
    for s in idle rate20 sat; do
        for m in connected bytes_per_stream dps p50_ms p99_ms cpu_us_per_delivery server_cores \
            client_cores other_cores publishes_per_s delivered_pct resyncs pub_errors; do
            [ "$(median gateway "$s" "$m")" = - ] && continue
            printf '%-8s %-20s %12s %12s %12s\n' "$s" "$m" "$(median gateway "$s" "$m")" \
                "$(median nchan "$s" "$m")" "$(median bare "$s" "$m")"
        done
    done
}

install_missing
build_all
log "bench: $(nproc) cores, $RUNS runs, $N_IDLE idle streams, $STREAMS streams, $LOOPS loops/workers/threads"
for run in $(seq "$RUNS"); do
    for kind in gateway nchan bare; do
        run_one "$kind" "$run"
    done
done
print_table
[ -n "${BENCH_OUT:-}" ] && log "bench: raw figures in $raw"
exit 0
