#!/usr/bin/env bash
# The partition checks of tests/partitions.rs, long: faults for SECS seconds per run, RUNS
# runs with fresh seeds (each printed, so a failure replays with QKV_SEED=...).
# Needs root and iptables. Usage: scripts/soak-partitions.sh [SECS=120] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
runs=${2:-3}
command -v iptables >/dev/null || { echo "needs iptables (apt-get install iptables)"; exit 2; }
for run in $(seq 1 "$runs"); do
  echo "== run $run of $runs: ${secs}s of faults"
  QKV_FAULT_SECS=$secs cargo test --test partitions -- --nocapture --test-threads 1 2>&1 |
    grep -E 'QKV_SEED|faults:|set:|lww:|replicas identical|test result|panicked|lost'
done
