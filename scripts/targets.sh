# Sourced by the comparison scripts (bench-peers.sh, bench-cost.sh): the processes of the
# target being measured, started into `pids`, and their clean-up. Needs `data`, the run's
# scratch directory, set before it is sourced; removes it on exit.
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$data"' EXIT
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  # Nodes and a ceiling's replica processes are children: wait until they are gone too, or
  # the next target's run would be answered by them.
  while pgrep -f "serve --config $data|bench ceiling" >/dev/null; do sleep 0.1; done
}
up() { until curl -s -o /dev/null "$@"; do sleep 0.1; done; }
