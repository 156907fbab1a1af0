#!/usr/bin/env bash
# Measures anti-entropy: a 3-node cluster of `quorumkv serve` processes writes KEYS keys while
# node 3 is down, then node 3 starts and we time how long until it holds every key, without any
# client reads. Meanwhile, and again afterwards, wrk measures client throughput on node 1, so
# the cost of the repair traffic shows. Needs wrk. Usage: KEYS=100000 scripts/measure-convergence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${KEYS:-10000}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
cargo build --profile dist --quiet
bin=./target/dist/quorumkv
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
# Three nodes share this machine: each gets its share of the cores, as `quorumkv dev` gives it.
threads=$(( $(nproc) / 3 )); [ "$threads" -ge 1 ] || threads=1
members=""
for i in 1 2 3; do
  members+="  { id = \"n$i\", peer_addr = \"127.0.0.1:940$i\", http_addr = \"127.0.0.1:830$i\" },"$'\n'
done
for i in 1 2 3; do
  cat >"$dir/n$i.toml" <<TOML
node_id = "n$i"
http_addr = "127.0.0.1:830$i"
peer_addr = "127.0.0.1:940$i"
data_dir = "$dir/data/n$i"
worker_threads = $threads
[cluster]
ring_size = 64
members = [
$members]
[buckets.sessions]
conflict = "lww"
TOML
done
start() { RUST_LOG=warn "$bin" serve --config "$dir/n$1.toml" >>"$dir/n$1.log" 2>&1 & pids+=($!); }
keys_on() { curl -sf "http://127.0.0.1:830$1/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["storage"]["keys"])'; }
start 1; start 2
until curl -sf http://127.0.0.1:8301/health >/dev/null && curl -sf http://127.0.0.1:8302/health >/dev/null; do sleep 0.1; done
secs=$(( keys / 2000 + 5 ))
echo "writing $keys keys with node 3 down (${secs}s of wrk)"
KEYS=$keys PRELOAD=1 wrk -t1 -c16 -d"${secs}s" -s scripts/wrk-mixed.lua http://127.0.0.1:8301 >/dev/null
# wrk stops with writes in flight: wait until node 1's count settles, and take that as the target.
target=$(keys_on 1); sleep 1
while [ "$(keys_on 1)" != "$target" ]; do target=$(keys_on 1); sleep 1; done
echo "node 1 holds $target keys"
start 3
until curl -sf http://127.0.0.1:8303/health >/dev/null; do sleep 0.1; done
t0=$(date +%s.%N)
KEYS=$keys wrk -t2 -c64 -d10s --latency -s scripts/wrk-mixed.lua http://127.0.0.1:8301 >"$dir/during.txt" &
wrk_pid=$!
while [ "$(keys_on 3)" -lt "$target" ]; do sleep 0.2; done
t1=$(date +%s.%N)
wait $wrk_pid
echo "node 3 converged on $target missed keys in $(python3 -c "print(round($t1 - $t0, 1))") s (anti_entropy.interval_ms = 10000)"
echo "-- client load on node 1 while node 3 catches up:"
grep -E "Requests/sec|^ +99%|^ +50%" "$dir/during.txt"
KEYS=$keys wrk -t2 -c64 -d10s --latency -s scripts/wrk-mixed.lua http://127.0.0.1:8301 >"$dir/after.txt"
echo "-- the same load once the replicas agree:"
grep -E "Requests/sec|^ +99%|^ +50%" "$dir/after.txt"
echo "-- bytes moved by node 3's exchanges that repaired nothing (identical partitions):"
curl -sf http://127.0.0.1:8303/admin/anti-entropy | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitions"]
idle = [p["bytes"] for p in parts if p["keys_repaired"] == 0]
print(len(idle), "idle exchanges, at most", max(idle) if idle else 0, "bytes each")'
