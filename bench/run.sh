#!/usr/bin/env bash
# Run DPS's own benchmarks: start a server, run `dps loadtest` scenario files against it, stop it.
#
#   bench/run.sh                       # `dps cluster` (Redis, ts-a, ts-b, ws-a, ws-b), then
#                                      # fanout-2000.toml and steady-5.toml
#   bench/run.sh --embedded            # the embedded default (one process) on port 4000
#   bench/run.sh [--embedded] FILE...  # other scenario files, e.g. many-topics.toml
#
# Reports go to stdout, with the server's CPU per delivery (every process of it, Redis too);
# JSON reports to $RESULTS (default bench/results/). Everything runs on 127.0.0.1, on the
# ports the README uses (4000, 4001, 5000, 5001, Redis on 6379; PORT_BASE=N moves them to N,
# N+1, N+1000, N+1001 and N+2379), and every process started here is stopped when the script
# ends. DPS=path/to/dps runs another checkout's server (the load test stays this one's). Run
# `make run` once first (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
dps=${DPS:-.venv/bin/dps}
loader=.venv/bin/dps
base=${PORT_BASE:-4000}
results=${RESULTS:-bench/results}
mode=cluster
if [ "${1:-}" = "--embedded" ]; then mode=embedded; shift; fi
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(bench/scenarios/fanout-2000.toml bench/scenarios/steady-5.toml)
mkdir -p "$results"
# The scenarios publish from a few sockets as fast as the server takes it: lift the per-socket
# publish rate, whose default suits a chat, not a load test.
export DPS_PUBLISH_RATE=1000000 DPS_PUBLISH_BURST=1000000
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log="$results/$mode.log"
if [ "$mode" = cluster ]; then
  "$dps" cluster --port-base "$base" --redis-port $((base + 2379)) >"$log" 2>&1 &
  gateways=("$base" $((base + 1)))
  urls=()
  if [ "$base" != 4000 ]; then  # a --url replaces the file's gateways and its nodes
    urls=(--url "ws://127.0.0.1:$base" --url "ws://127.0.0.1:$((base + 1))"
      --node "http://127.0.0.1:$((base + 1000))" --node "http://127.0.0.1:$((base + 1001))")
  fi
else
  DPS_PORT=$base "$dps" >"$log" 2>&1 &
  gateways=("$base")
  urls=(--url "ws://127.0.0.1:$base")
fi
server=$!
trap 'kill -INT "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT

for port in "${gateways[@]}"; do
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { echo "the server exited; see $log" >&2; exit 1; }
    sleep 0.1
  done
done

for scenario in "${scenarios[@]}"; do
  name=$(basename "$scenario" .toml)
  echo "== $mode: $name"
  "$loader" loadtest --scenario-file "$scenario" "${urls[@]}" --server-pid "$server" \
    --json "$results/$mode-$name.json" || echo "(the load test counted failures)"
done
