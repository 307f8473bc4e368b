#!/usr/bin/env bash
# The memory of idle subscribed sockets: one embedded DPS, `dps loadtest --scenario connect`.
#
#   bench/idle/run.sh [CONNECTIONS]    # default 5000, joined to CONNECTIONS/5 topics
#
# Starts `dps` (the embedded default) on a free loopback port, connects CONNECTIONS sockets
# that each join a topic and stay idle for 3 s, and prints the load test's report, whose
# "server memory" line is the server's resident memory with the sockets held, less before
# them, per connection. Stops the server it started, by its PID. A few seconds per
# thousand sockets; the load test is cut off after 5 minutes. Where the bytes go, by the
# line that allocated them: `.venv/bin/python bench/idle/breakdown.py`.
set -euo pipefail
cd "$(dirname "$0")/../.."
dps=${DPS:-.venv/bin/dps}
connections=${1:-5000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((connections + 1000)) ]; then
  echo "ulimit -n is $(ulimit -n): $connections sockets need more descriptors" >&2
  exit 1
fi
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
DPS_HOST=127.0.0.1 DPS_PORT=$port DPS_MAX_SOCKETS=$((connections + 500)) "$dps" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
timeout 300 "$dps" loadtest --scenario connect \
  --url "ws://127.0.0.1:$port/socket/websocket?vsn=2.0.0" \
  --connections "$connections" --topics $((connections / 5 > 0 ? connections / 5 : 1)) \
  --duration 3 --server-pid "$server" --procs 2
