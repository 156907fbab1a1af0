#!/usr/bin/env bash
# Runs the storage benchmark in release mode and keeps its output under results/.
# Usage: scripts/bench-storage.sh [extra `quorumkv bench storage` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results
out="results/bench-storage-$(date -u +%Y%m%dT%H%M%SZ).txt"
cargo build --profile dist --quiet
./target/dist/quorumkv bench storage "$@" | tee "$out"
echo "saved to $out"
