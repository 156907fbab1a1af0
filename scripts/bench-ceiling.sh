#!/usr/bin/env bash
# The fan-out ceiling next to the real thing: starts `quorumkv bench ceiling` (three bare
# coordinators forwarding to three bare replica processes, storing nothing) and measures it
# with the same load as the headline (64 clients, 50% GET / 50% PUT, 256-byte values, 10,000
# keys), with `quorumkv bench` and with wrk (if installed). Output goes under results/.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-20s}
mkdir -p results
out="results/bench-ceiling-$(date -u +%Y%m%dT%H%M%SZ).txt"
cargo build --profile dist --quiet
bin=./target/dist/quorumkv
$bin bench ceiling >/dev/null 2>&1 &
ceiling=$!
trap 'kill -INT $ceiling 2>/dev/null; wait $ceiling 2>/dev/null' EXIT
for port in 8301 8302 8303; do
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.1; done
done
{
  echo "== quorumkv bench against the ceiling (64 clients over c1-c3)"
  $bin bench --nodes 127.0.0.1:8301,127.0.0.1:8302,127.0.0.1:8303 --duration "$duration" --out results
  if command -v wrk >/dev/null; then
    echo "== wrk -t2 -c64 against c1"
    wrk -t2 -c64 -d"$duration" --latency -s scripts/wrk-mixed.lua http://127.0.0.1:8301
  fi
} | tee "$out"
echo "saved to $out"
