#!/usr/bin/env bash
# How a node holds up as its data grows: KEYS keys of VALUE bytes per node on a 3-node
# `quorumkv dev` cluster (n = 3, so every node holds every key). Prints, as one JSON line:
#   - start-up: seconds from `serve` to a healthy /health, node 1 started alone;
#   - memory: that node's resident set beyond an empty node's, per key, and per key beyond
#     the key's own bytes;
#   - the headline mix (workload a, 64 clients, DURATION s after WARMUP s) on the whole
#     cluster: ops/s, p99.
# Node 1 is filled with `quorumkv bench fill` (stored as client writes are, then merged, as a
# long-running node keeps its data) and its storage copied to the other two, so the replicas
# agree and anti-entropy has nothing to do. MODE=catchup leaves node 3 empty instead and
# reports how fast anti-entropy fills it while the mix runs, and the mix's ops/s during the
# catch-up against after it (DURATION must outlast the catch-up by 20 s or more).
# REPAIR_RATE sets each node's `[anti_entropy] repair_bytes_per_sec` (default 512 KiB/s).
# PROFILE=release skips the slow fat-LTO build of the default `dist` profile.
set -eEuo pipefail
cd "$(dirname "$0")/.."
keys=${KEYS:-1000000}
value=${VALUE:-256}
duration=${DURATION:-20}
# Seconds of the mix run unrecorded first: a node's first reaping walk after a start reads
# its keys once (at most 50,000 a second), which the steady state does not pay.
warmup=${WARMUP:-0}
mode=${MODE:-steady}
profile=${PROFILE:-dist}
dev_flags=()
[ -n "${REPAIR_RATE:-}" ] && dev_flags=(--repair-bytes-per-sec "$REPAIR_RATE")
cargo build --profile "$profile" --quiet
bin="$PWD/target/$profile/quorumkv"
data=$(mktemp -d "${TMPDIR:-/var/tmp}/qkv-scale.XXXXXX")
out="results/scale-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
dev=
# On a failure the data directory and the nodes' logs are kept, and the script says where
# and at which line it stopped.
failed_at=
trap 'failed_at=${failed_at:-$LINENO}' ERR
finish() {
  local rc=$?
  [ -z "$dev" ] || kill -TERM "$dev" 2>/dev/null
  wait 2>/dev/null
  if [ "$rc" -ne 0 ]; then
    echo "bench-scale.sh failed (exit $rc, line ${failed_at:-?}); data and logs kept in $data" >&2
  elif [ -z "${KEEP:-}" ]; then
    rm -rf "$data"
  fi
}
trap finish EXIT

# Waits for a healthy node on port $1; gives up if process $2 is gone.
healthy() {
  until curl -sf "http://127.0.0.1:$1/health" >/dev/null; do
    kill -0 "$2" 2>/dev/null || { echo "node on port $1 did not start; see $data/*.log" >&2; exit 1; }
    sleep 0.02
  done
}
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
start_dev() {
  "$bin" dev --data-dir "$data" "${dev_flags[@]}" >>"$data/dev.log" 2>&1 &
  dev=$!
  for port in 8101 8102 8103; do healthy "$port" "$dev"; done
}
# dev returns before its nodes have let go of their data directories.
stop_dev() {
  kill -TERM "$dev" 2>/dev/null || { echo "quorumkv dev exited before it was stopped" >&2; exit 1; }
  wait "$dev" || true
  dev=
  while pgrep -f "serve --config $data" >/dev/null; do sleep 0.1; done
}
# Starts node 1 alone; prints "seconds rss_kb" once it is healthy and has settled.
start_alone() {
  local t0 t1 pid rss
  t0=$(date +%s.%N)
  "$bin" serve --config "$data/n1.toml" >>"$data/n1-alone.log" 2>&1 &
  pid=$!
  healthy 8101 "$pid"
  t1=$(date +%s.%N)
  sleep 2
  rss=$(rss_kb "$pid")
  kill -TERM "$pid"
  wait "$pid" || true
  echo "$(echo "$t1 - $t0" | bc) $rss"
}

# Configs, metadata and an empty node's footprint.
start_dev
stop_dev
read -r _ empty_kb < <(start_alone)
"$bin" bench fill --config "$data/n1.toml" --keys "$keys" --value-bytes "$value" | tee "$out/fill.txt"
copies="n2 n3"
[ "$mode" = catchup ] && copies="n2"
for n in $copies; do
  rm -rf "${data:?}/$n/storage"
  cp -r "$data/n1/storage" "$data/$n/storage"
done
sync
# One start without load first: the first start after the files were copied stalled nodes for
# seconds under load on this machine (not seen on any later start; not explained yet).
start_dev
sleep 10
stop_dev
read -r startup_s full_kb < <(start_alone)
# Page cache warm for every node alike.
cat "$data"/n*/storage/*.data >/dev/null

start_dev
t0=$(date +%s.%N)
"$bin" bench --keys "$keys" --value-bytes "$value" --no-preload --duration "${duration}s" \
  --warmup "${warmup}s" --out "$out" >"$out/bench.txt" &
bench=$!
t1=0
if [ "$mode" = catchup ]; then
  # Until node 3 holds every key (anti-entropy, with read repair filling some on the way).
  stored() { curl -sf http://127.0.0.1:8103/admin/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["storage"]["keys"])'; }
  until [ "$(stored)" -ge "$keys" ]; do sleep 1; done
  t1=$(date +%s.%N)
fi
wait "$bench"
stop_dev
cat "$out/bench.txt"
python3 - "$out" "$keys" "$value" "$startup_s" "$empty_kb" "$full_kb" "$mode" "$t0" "$t1" "$warmup" <<'PY' | tee "$out/scale.json"
import glob, json, os, sys
out, keys, value, startup, empty_kb, full_kb, mode, t0, t1, warmup = sys.argv[1:]
keys, value, empty_kb, full_kb = int(keys), int(value), int(empty_kb), int(full_kb)
summary = json.load(open(sorted(glob.glob(f"{out}/bench-*.json"))[-1]))
key_bytes = 1 + len("sessions") + len(f"k{keys // 2}")
per_key = (full_kb - empty_kb) * 1024 / keys
row = {
    "mode": mode, "repair_rate": os.environ.get("REPAIR_RATE", "default"),
    "keys": keys, "value_bytes": value, "startup_s": round(float(startup), 2),
    "rss_mb": round(full_kb / 1024), "bytes_per_key": round(per_key),
    "bytes_per_key_beyond_key": round(per_key - key_bytes),
    "ops_per_s": round(summary["ops_per_s"]), "p99_ms": summary["latency"]["all"]["p99_ms"],
    "errors": summary["errors"],
}
if mode == "catchup":
    secs = float(t1) - float(t0)
    row["catchup_s"] = round(secs, 1)
    row["catchup_keys_per_s"] = round(keys / secs)
    # The bench's seconds count from the end of its warm-up.
    done = secs - float(warmup)
    per = summary["per_second"]
    during = [r["ops"] for r in per if r["second"] < done]
    after = [r["ops"] for r in per if r["second"] >= done + 2]
    if during and after:
        row["ops_per_s_during"] = round(sum(during) / len(during))
        row["ops_per_s_after"] = round(sum(after) / len(after))
        row["catchup_cost"] = round(1 - row["ops_per_s_during"] / row["ops_per_s_after"], 3)
print(json.dumps(row))
PY
echo "results in $out"
