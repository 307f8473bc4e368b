# What the benchmark scripts share; source it after `cd` to the checkout.
# Every process a script starts goes into `pids`; on exit they are stopped by PID, the
# newest first.
pids=()
stop_all() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

# Wait until URL $1 answers (30 s at most), else stop the script.
wait_ready() {
  for _ in $(seq 300); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not answer" >&2
  exit 1
}
