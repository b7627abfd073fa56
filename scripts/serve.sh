#!/usr/bin/env bash
# Installs what is missing, builds topobus (release) and runs `topobus serve`.
# Extra arguments go to `topobus serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run
cmake --preset release >/dev/null
cmake --build --preset release >/dev/null
exec build/release/cmd/topobus serve "$@"
