#!/usr/bin/env bash
# DPS side by side with the Python stacks a user would deploy instead, on this machine, all
# driven by the project's own load generator (`dps loadtest`); prints the table of the
# README's Performance section, with ratios.
#
#   bench/compare.sh                                   # W1 and W2s against every server
#   bench/compare.sh --servers dps,ceiling --workloads W1 --seconds 15
#
# Run `make run` once first (.venv: DPS and redis-server). The peers (bench/peers/) run from
# their own virtualenv, bench/.venv-peers, made here from bench/requirements-peers.txt and
# made again when that file changes. Everything listens on free loopback ports, and every
# process started is stopped by its PID when the run ends (or dies with it). Reports and
# logs go to $RESULTS (default bench/results/compare/).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dps ] || { echo "no .venv/bin/dps: run \`make run\` once first" >&2; exit 2; }
peers=bench/.venv-peers
if ! cmp -s bench/requirements-peers.txt "$peers/requirements-peers.txt"; then
  rm -rf "$peers"
  .venv/bin/python -m venv "$peers"
  "$peers/bin/pip" install -q -r bench/requirements-peers.txt
  cp bench/requirements-peers.txt "$peers/"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec .venv/bin/python bench/compare.py --peers-python "$peers/bin/python" "$@"
