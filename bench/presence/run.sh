#!/usr/bin/env bash
# What presence costs: bench/scenarios/presence-churn.toml (10,000 sockets on one topic over
# two gateways, 100 leaving and 100 joining again every second) against a cluster whose
# topic has no presence, then against one whose topic has it (bench/presence/channels.toml).
# Prints, for both: the topic's owner's CPU while churning, the presence diff bytes per
# change (owner to gateways, and gateways to sockets), and the latency of a join (to its ok
# reply, and to its presence_state).
#
# Starts Redis and the README's four nodes itself, on the README's ports (gateways on 4000
# and 4001, topic servers on 5000 and 5001, Redis on 6379; PORT_BASE=B moves the nodes to B,
# B+1, B+1000, B+1001 and REDIS_PORT Redis), and stops them by PID. MODES="presence" runs
# one of the two; settings in the environment (DPS_PRESENCE_INTERVAL=0.25) reach the nodes.
# Run `make run` once first (.venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
results=${RESULTS:-bench/results}
scenario=${SCENARIO:-bench/scenarios/presence-churn.toml}
mkdir -p "$results"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# A load test joins and leaves far faster than people do; and the presence_state of 10,000
# sockets is about 1 MB, more than a socket's default outbound bound (DPS_SOCKET_QUEUE).
export DPS_PUBLISH_RATE=1000000 DPS_PUBLISH_BURST=1000000 DPS_JOIN_RATE=1000000
export DPS_JOIN_BURST=1000000 DPS_SOCKET_QUEUE=16777216 DPS_LOG_LEVEL=warning
export DPS_CLUSTER_SECRET=${DPS_CLUSTER_SECRET:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')}
base=${PORT_BASE:-4000}
redis_port=${REDIS_PORT:-6379}
export REDIS_URL=redis://127.0.0.1:$redis_port
targets=(--url "ws://127.0.0.1:$base" --url "ws://127.0.0.1:$((base + 1))")
targets+=(--node "http://127.0.0.1:$((base + 1000))" --node "http://127.0.0.1:$((base + 1001))")
. bench/lib.sh

owner=$(.venv/bin/python -c '
from pathlib import Path
from app.ring import Ring, load
print(Ring(load(Path("ring.toml")), ["ts-a", "ts-b"]).owner("loadtest:0"))')

for mode in ${MODES:-plain presence}; do
  channels=()
  [ "$mode" = presence ] && channels=(DPS_CHANNELS=bench/presence/channels.toml)
  .venv/bin/redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$results/presence-$mode-redis.log" 2>&1 &
  pids+=($!)
  declare -A pid_of=()
  for node in "ts-a:ts:$((base + 1000))" "ts-b:ts:$((base + 1001))" "ws-a:ws:$base" \
    "ws-b:ws:$((base + 1))"; do
    IFS=: read -r name role port <<<"$node"
    env "${channels[@]}" DPS_APP="$role" DPS_NODE="$name" DPS_PORT="$port" .venv/bin/dps \
      >"$results/presence-$mode-$name.log" 2>&1 &
    pids+=($!)
    pid_of[$name]=$!
  done
  wait_ready "http://127.0.0.1:$base/readyz"
  wait_ready "http://127.0.0.1:$((base + 1))/readyz"
  echo "== $mode (the topic's owner: $owner)"
  .venv/bin/dps loadtest --scenario-file "$scenario" "${targets[@]}" --server-pid "${pid_of[$owner]}" \
    --json "$results/presence-$mode.json" || echo "(the load test reported failures: see above)"
  stop_all
done

.venv/bin/python - "$results" "$owner" ${MODES:-plain presence} <<'PY'
import json, sys
results, owner, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
names = {"plain": "without presence", "presence": "with presence"}
for mode in modes:
    name, r = names[mode], json.load(open(f"{results}/presence-{mode}.json"))
    churn_s = r["duration"]
    node = r["nodes"].get(owner, {})
    changes = node.get("presence_changes", 0)
    p = r["presence"]
    joins = p["rejoins_sent"]
    print(name)
    print(f"  churn: {p['leaves']:,} leaves and {joins:,} joins in {churn_s:.0f} s, "
          f"{r['subscriptions']:,} sockets joined at first")
    print(f"  owner ({owner}) CPU while churning: {r['server_cpu_s']:.2f} s, "
          f"{100 * r['server_cpu_s'] / churn_s:.1f}% of a core")
    if changes:
        print(f"  diff bytes per change, owner to gateways (both): "
              f"{node['presence_diff_bytes'] / changes:,.0f}")
        print(f"  diff bytes per change, to the sockets (all of them): "
              f"{p['presence_diff_bytes'] / changes:,.0f} "
              f"({p['presence_diff_bytes'] / changes / r['subscriptions']:,.1f} per socket)")
    rejoin, state = r["rejoin_latency_ms"], r["presence_state_ms"]
    print(f"  join latency ms, to the ok reply: p50 {rejoin['p50']:.1f}, p99 {rejoin['p99']:.1f}")
    if state["samples"]:
        print(f"  join latency ms, to presence_state: p50 {state['p50']:.1f}, "
              f"p99 {state['p99']:.1f} (state {p['presence_state_bytes'] / p['presence_states']:,.0f} bytes on average)")
PY
