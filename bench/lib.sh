# Helpers shared by the bench scripts (run.sh, topologies.sh); sourced, not run.
# The sourcing script sets `root` (the repository) and calls bench_init first.
# BENCH_KEEP=1 keeps the scratch directory (server logs, raw outputs) for a look.
# Everything started through these helpers is recorded in `pids` and stopped by
# PID at exit, however the script ends.

bench_init() {
    tmp=$(mktemp -d /tmp/tb-bench.XXXXXX)
    raw=${BENCH_OUT:-$tmp}/raw.tsv
    mkdir -p "$(dirname "$raw")"
    : >"$raw"
    pids=()
    hz=$(getconf CLK_TCK)
    build=$root/build/release
    topobus=${TOPOBUS:-$build/cmd/topobus}
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    done
    if [ -n "${BENCH_KEEP:-}" ]; then
        log "bench: logs kept in $tmp"
    else
        rm -rf "$tmp"
    fi
}

log() { printf '%s\n' "$*" >&2; }

# Installs what the scripts need and builds the release binaries with the bench tools.
bench_prepare() {
    "$root/scripts/deps.sh" run
    local missing=() p
    for p in nginx-light libnginx-mod-nchan curl nats-server python3; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "bench: installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null
        # The nginx package starts a system nginx on :80; the bench runs its own.
        systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
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

# The 1-minute load average.
load1() { cut -d' ' -f1 /proc/loadavg; }

# Waits (at most BENCH_QUIET_WAIT seconds, default 300) for the 1-minute load to fall
# below BENCH_QUIET_LOAD (default 2): other work on the machine disturbs the figures.
# Prints the load it ends with; the caller records it next to its figures.
wait_quiet() {
    local limit=${BENCH_QUIET_LOAD:-2} waited=0 max=${BENCH_QUIET_WAIT:-300}
    while awk -v l="$(load1)" -v m="$limit" 'BEGIN {exit !(l >= m)}' && ((waited < max)); do
        sleep 5
        waited=$((waited + 5))
    done
    ((waited > 0)) && log "bench: waited ${waited}s for a quieter machine (load $(load1))"
    load1
}

# utime + stime (clock ticks) and VmRSS (KiB) summed over the given pids.
cpu_ticks_of() {
    local sum=0 p v
    for p in "$@"; do
        v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        sum=$((sum + v))
    done
    echo "$sum"
}

rss_kb_of() {
    local sum=0 p v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        sum=$((sum + v))
    done
    echo "$sum"
}

threads_of() { ls "/proc/$1/task" 2>/dev/null | wc -l; }

busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# field LINE KEY -> value of KEY=value in LINE
field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }

# record KIND SCENARIO METRIC VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$raw"; }

median() {
    awk -F'\t' -v k="$1" -v s="$2" -v m="$3" '$1 == k && $2 == s && $3 == m {print $4}' "$raw" |
        sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# Starts nats-server with JetStream (and monitoring) on free ports: sets nats_pid,
# nats_port, nats_url, nats_mon.
start_nats() {
    nats_port=$(free_port)
    nats_mon=$(free_port)
    mkdir -p "$tmp/nats"
    nats-server -a 127.0.0.1 -p "$nats_port" -m "$nats_mon" -js -sd "$tmp/nats" \
        >"$tmp/nats.log" 2>&1 &
    nats_pid=$!
    pids+=("$nats_pid")
    wait_port "$nats_port"
    nats_url=nats://127.0.0.1:$nats_port
}

stop_nats() {
    stop_pid "$nats_pid"
    rm -rf "$tmp/nats"
}

# start_gateway_proc PORT BUS DB LOG: a gateway for the bench; sets gw_pid.
start_gateway_proc() {
    TOPOBUS_LOG=notice TOPOBUS_SSE_MAX_PER_USER=0 "$topobus" gateway \
        --listen "127.0.0.1:$1" --bus "$2" --db "$3" --loops "${LOOPS:-2}" >"$4" 2>&1 &
    gw_pid=$!
    pids+=("$gw_pid")
}

# create_topologies PORT TOKEN COUNT FILE: creates COUNT topologies over one keep-alive
# connection and writes their ids to FILE, one a line.
create_topologies() {
    python3 - "$1" "$2" "$3" "$4" <<'EOF'
import http.client, json, sys
port, token, count, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
hdr = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
with open(out, "w") as f:
    for i in range(count):
        conn.request("POST", "/topologies", body=json.dumps({"name": "t%d" % i}), headers=hdr)
        r = conn.getresponse()
        body = r.read()
        if r.status != 201:
            sys.exit("create: %d %s" % (r.status, body[:200]))
        f.write(json.loads(body)["id"] + "\n")
EOF
}

# merge_hists FILE... -> "p50_us=… p99_us=… count=…" from sse_load --hist-out files.
merge_hists() {
    python3 - "$@" <<'EOF'
import sys
SUB_BITS = 6; SUB = 1 << SUB_BITS
def value(i):
    if i < SUB:
        return i
    shift = i // SUB - 1
    return (SUB + i % SUB) << shift
buckets = {}
for path in sys.argv[1:]:
    try:
        for line in open(path):
            i, n = map(int, line.split())
            buckets[i] = buckets.get(i, 0) + n
    except FileNotFoundError:
        pass
total = sum(buckets.values())
def q(p):
    if total == 0:
        return 0
    rank = int(p * (total - 1)) + 1; seen = 0
    for i in sorted(buckets):
        seen += buckets[i]
        if seen >= rank:
            return value(i)
    return 0
print("p50_us=%.1f p99_us=%.1f count=%d" % (q(0.5) / 1e3, q(0.99) / 1e3, total))
EOF
}
