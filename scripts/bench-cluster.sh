#!/usr/bin/env bash
# Measures a local 3-node `quorumkv dev` cluster with wrk: the 50/50 GET/PUT mix of
# scripts/wrk-mixed.lua, 64 connections, first all on node 1, then spread over the three nodes.
# Needs wrk (Debian: apt-get install wrk). Output is kept under results/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
duration=${DURATION:-20s}
mkdir -p results
out="results/bench-cluster-$(date -u +%Y%m%dT%H%M%SZ).txt"
data=$(mktemp -d)
cargo build --profile dist --quiet
./target/dist/quorumkv dev --data-dir "$data" >"$data/dev.log" 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data"' EXIT
for port in 8101 8102 8103; do
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.1; done
done
PRELOAD=1 wrk -t2 -c16 -d5s -s scripts/wrk-mixed.lua http://127.0.0.1:8101 >/dev/null
{
  echo "== 64 connections to node 1"
  wrk -t2 -c64 -d"$duration" --latency -s scripts/wrk-mixed.lua http://127.0.0.1:8101
  echo "== 64 connections spread over nodes 1-3 (three wrk processes)"
  for port in 8101 8102 8103; do
    wrk -t1 -c21 -d"$duration" --latency -s scripts/wrk-mixed.lua "http://127.0.0.1:$port" >"$data/wrk-$port.txt" &
  done
  wait %2 %3 %4 2>/dev/null || wait
  for port in 8101 8102 8103; do echo "-- node on $port"; cat "$data/wrk-$port.txt"; done
} | tee "$out"
echo "saved to $out"
