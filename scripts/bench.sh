#!/usr/bin/env bash
# Starts a local 3-node `quorumkv dev` cluster (n=3, r=w=2, sync=always unless SYNC says
# otherwise), runs the standard workloads with `quorumkv bench` (64 clients, 10,000 keys,
# 256-byte values) and leaves each run's JSON and SVG plots under results/<date>/.
# DURATION (default 20s), CLIENTS (64) and SYNC (always|interval|none) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-20s}
clients=${CLIENTS:-64}
sync=${SYNC:-always}
out="results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
data=$(mktemp -d)
cargo build --profile dist --quiet
bin=./target/dist/quorumkv
$bin dev --data-dir "$data" --sync "$sync" >"$out/dev.log" 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data"' EXIT
for port in 8101 8102 8103; do
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.1; done
done
run() {
  echo "== quorumkv bench $*" | tee -a "$out/summary.txt"
  $bin bench --clients "$clients" --duration "$duration" --out "$out" "$@" | tee -a "$out/summary.txt"
}
run --workload a --preload
run --workload b
run --workload c
run --workload w
run --workload a --distribution zipfian
run --workload rmw --preload
run --workload a --clients 1
echo "results in $out"
