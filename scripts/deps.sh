#!/usr/bin/env bash
# Installs what a profile needs and is missing, and nothing else, quietly:
#   scripts/deps.sh run    build and run topobus
#   scripts/deps.sh test   also the test toolchain, servers and npm packages
# Debian 12, as root (or with sudo). Safe to run again: it only acts on gaps.
set -euo pipefail

profile=${1:-run}
root=$(cd "$(dirname "$0")/.." && pwd)

# libc6-dev: gcc only recommends it, and installs here skip recommends (a slim image lacks it).
run_pkgs=(cmake ninja-build gcc libc6-dev pkg-config libjansson-dev libjwt-dev libssl-dev libnats-dev libsqlite3-dev
    libpq-dev libwebsockets-dev)
# postgresql: the PostgreSQL store tests and the fault test start private servers from its binaries;
# docker-compose, python3-yaml, nginx-light, systemd: the deploy tests validate and run deploy/.
test_pkgs=(clang libclang-rt-14-dev libcmocka-dev curl libcurl4-openssl-dev nats-server sqlite3 postgresql
    chromium iproute2 docker-compose python3-yaml nginx-light systemd)

case "$profile" in
run) pkgs=("${run_pkgs[@]}") ;;
test) pkgs=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
*)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "deps: need root to install: ${missing[*]}" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages used by tests are pinned in tests/node/package-lock.json.
if [ "$profile" = test ] && [ -f "$root/tests/node/package.json" ]; then
    if ! command -v npm >/dev/null; then
        echo "deps: installing nodejs npm"
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    if [ ! -d "$root/tests/node/node_modules" ] ||
        [ "$root/tests/node/package-lock.json" -nt "$root/tests/node/node_modules" ]; then
        echo "deps: installing npm packages for tests"
        (cd "$root/tests/node" && npm ci --silent --no-audit --no-fund >/dev/null)
        touch "$root/tests/node/node_modules"
    fi
fi
