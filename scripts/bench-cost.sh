#!/usr/bin/env bash
# What one request costs the machine, for the store and for the bare fan-out, durable and not.
# Runs the headline mix (`quorumkv bench`: 50% GET / 50% PUT, 64 clients, 10,000 keys of
# 256 bytes, DURATION s after a 3 s warm-up) against, one after another:
#   1. a 3-node quorumkv, `dev --sync always` (the default);
#   2. the durable fan-out ceiling (`bench ceiling --fsync-dir`);
#   3. a 3-node quorumkv, `dev --sync interval`;
#   4. the plain fan-out ceiling (`bench ceiling`).
# For each: ops/s, p99, how busy the CPUs were, and per operation the machine's CPU time
# (from /proc/stat: user, system, interrupts and steal, the load generator included), context
# switches and system calls (with `perf`, when installed). Then the arithmetic behind the
# durable ratio: the CPU per operation quorumkv would need for 0.9x of the durable ceiling,
# against what the store's own work (quorumkv minus the ceiling with the same sync) and the
# fsyncs (durable minus plain) cost each side.
# PROFILE=release skips the slow fat-LTO build of the default `dist` profile.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-20}
profile=${PROFILE:-dist}
cargo build --profile "$profile" --quiet
bin="$PWD/target/$profile/quorumkv"
data=$(mktemp -d "${TMPDIR:-/var/tmp}/qkv-cost.XXXXXX")
out="results/cost-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
. scripts/targets.sh
# Machine-wide busy and idle jiffies, and context switches so far.
counters() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6} /^ctxt/{print $2}' /proc/stat | xargs; }
# Measures the mix against $2 (comma-separated nodes); $1 names the run.
# Prints "name ops/s p99_ms busy_% cpu_us/op ctxsw/op syscalls/op".
measure() {
  local name=$1 nodes=$2
  "$bin" bench --duration 3s --nodes "$nodes" --out "$out/$name-warmup" >/dev/null 2>&1
  local before after
  before=$(counters)
  local load=("$bin" bench --duration "${duration}s" --nodes "$nodes" --out "$out/$name")
  if command -v perf >/dev/null; then
    perf stat -a -x, -e raw_syscalls:sys_enter -o "$out/$name.perf" -- "${load[@]}" >"$out/$name.txt" 2>&1
  else
    "${load[@]}" >"$out/$name.txt" 2>&1
  fi
  after=$(counters)
  python3 - "$out" "$name" "$duration" "$before" "$after" <<'PY'
import glob, json, os, sys
out, name, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
b0, i0, c0 = map(int, sys.argv[4].split())
b1, i1, c1 = map(int, sys.argv[5].split())
s = json.load(open(sorted(glob.glob(f"{out}/{name}/bench-*.json"))[-1]))
ops = s["ops_per_s"] * duration
hz = os.sysconf("SC_CLK_TCK")
syscalls = "-"
try:
    for line in open(f"{out}/{name}.perf"):
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("raw_syscalls"):
            syscalls = f"{int(fields[0]) / ops:.1f}"
except (OSError, ValueError):
    pass
cpu_us = (b1 - b0) / hz * 1e6 / ops
busy = 100 * (b1 - b0) / (b1 - b0 + i1 - i0)
print(f'{name} {s["ops_per_s"]:.0f} {s["latency"]["all"]["p99_ms"]:.1f} {busy:.0f} {cpu_us:.1f} '
      f'{(c1 - c0) / ops:.2f} {syscalls}')
PY
}
results="$out/summary.txt"
: >"$results"
dev_nodes=127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103
ceiling_nodes=127.0.0.1:8301,127.0.0.1:8302,127.0.0.1:8303
for sync in always interval; do
  "$bin" dev --sync "$sync" --data-dir "$data/dev-$sync" >"$data/dev-$sync.log" 2>&1 &
  pids+=($!)
  for p in 8101 8102 8103; do up "http://127.0.0.1:$p/health"; done
  measure "quorumkv-$sync" "$dev_nodes" >>"$results"
  stop_all
  mkdir -p "$data/fsync"
  flags=()
  [[ $sync == always ]] && flags=(--fsync-dir "$data/fsync")
  "$bin" bench ceiling "${flags[@]}" >"$data/ceiling-$sync.log" 2>&1 &
  pids+=($!)
  for p in 8301 8302 8303; do up "http://127.0.0.1:$p/health"; done
  measure "ceiling-$sync" "$ceiling_nodes" >>"$results"
  stop_all
done
python3 - "$results" <<'PY' | tee -a "$results"
import sys
rows = {}
for line in open(sys.argv[1]):
    name, ops, p99, busy, cpu, ctxsw, syscalls = line.split()
    rows[name] = (float(ops), float(cpu))
print(f'{"run":<20} {"ops/s":>7} {"p99 ms":>7} {"busy %":>7} {"CPU us/op":>10} {"ctxsw/op":>9} '
      f'{"syscalls/op":>12}')
for line in open(sys.argv[1]):
    name, ops, p99, busy, cpu, ctxsw, syscalls = line.split()
    print(f"{name:<20} {ops:>7} {p99:>7} {busy:>7} {cpu:>10} {ctxsw:>9} {syscalls:>12}")
qa, ca = rows["quorumkv-always"], rows["ceiling-always"]
qi, ci = rows["quorumkv-interval"], rows["ceiling-interval"]
print(f"quorumkv/ceiling: durable {qa[0] / ca[0]:.2f}x, plain {qi[0] / ci[0]:.2f}x")
print(f"the store's own work: {qi[1] - ci[1]:.1f} us/op plain, {qa[1] - ca[1]:.1f} us/op durable")
print(f"fsyncs: quorumkv +{qa[1] - qi[1]:.1f} us/op, ceiling +{ca[1] - ci[1]:.1f} us/op")
budget = ca[1] / 0.9
print(f"0.9x of the durable ceiling, CPU-bound, allows {budget:.1f} us/op: even with fsyncs "
      f"costing quorumkv only what they cost the ceiling, that leaves {budget - ca[1]:.1f} us/op "
      f"for the store's own work")
PY
echo "saved to $out"
