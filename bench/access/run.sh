#!/usr/bin/env bash
# What access control costs: the same joins and publishes against the embedded server,
# once with no access control and once with hook rules for every join and publish, the
# hook answering at once (bench/access/hook_server.py). Prints both reports and the ratios.
# Runs on 127.0.0.1 ports 4000 (DPS) and 4900 (the hook); stops what it starts. Run
# `make run` once first (.venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
results=${RESULTS:-bench/results}
mkdir -p "$results"
# The chatters publish as fast as the server answers: lift the per-socket publish rate.
export DPS_PUBLISH_RATE=1000000 DPS_PUBLISH_BURST=1000000
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
. bench/lib.sh

"$py" bench/access/hook_server.py 4900 &
pids+=($!)

for mode in open hooks; do
  if [ "$mode" = hooks ]; then
    env=(DPS_CHANNELS=bench/access/hooks.toml DPS_HOOK_URL=http://127.0.0.1:4900/hooks)
  else
    env=()
  fi
  env "${env[@]}" DPS_PORT=4000 .venv/bin/dps >"$results/access-$mode.log" 2>&1 &
  server=$!
  pids+=($server)
  wait_ready http://127.0.0.1:4000/readyz
  echo "== $mode"
  .venv/bin/dps loadtest --scenario-file bench/access/access.toml --json "$results/access-$mode.json" \
    || echo "(the load test reported failures: see above)"
  kill -INT "$server"
  wait "$server" || true
done

"$py" - "$results/access-open.json" "$results/access-hooks.json" <<'PY'
import json, sys
open_, hooks = (json.load(open(path)) for path in sys.argv[1:])
for a, b in zip(open_["phases"], hooks["phases"]):
    print(a["phase"])
    print(f"  sockets/s (connect + join): {b['connections']['per_s']:,.0f} with hooks, "
          f"{a['connections']['per_s']:,.0f} without: {b['connections']['per_s'] / a['connections']['per_s']:.2f}x")
    print(f"  join latency p50/p99 ms: {b['join_latency_ms']['p50']:.1f}/{b['join_latency_ms']['p99']:.1f} "
          f"with hooks, {a['join_latency_ms']['p50']:.1f}/{a['join_latency_ms']['p99']:.1f} without")
    if a["messages"] > 10:
        rate = lambda r: r["messages"] / r["publish_s"]
        print(f"  publishes/s: {rate(b):,.0f} with hooks, {rate(a):,.0f} without: {rate(b) / rate(a):.2f}x")
        print(f"  deliveries/s: {b['deliveries_per_s']:,.0f} with hooks, {a['deliveries_per_s']:,.0f} without")
PY
