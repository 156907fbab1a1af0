#!/usr/bin/env bash
# The headline mix (workload a, 64 clients, KEYS keys of 256 B preloaded, DURATION s) on a
# 3-node and then a 5-node `quorumkv dev` (n = 3 either way), on the same machine, and the
# ring's balance: keys stored per node after the preload (max / mean).
# PROFILE=release skips the slow fat-LTO build of the default `dist` profile.
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${KEYS:-100000}
duration=${DURATION:-20}
profile=${PROFILE:-dist}
cargo build --profile "$profile" --quiet
bin="$PWD/target/$profile/quorumkv"
out="results/nodes-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
dev=
data=
trap 'kill -TERM $dev 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
for nodes in 3 5; do
  data=$(mktemp -d "${TMPDIR:-/var/tmp}/qkv-nodes.XXXXXX")
  "$bin" dev --nodes "$nodes" --data-dir "$data" >"$data/dev.log" 2>&1 &
  dev=$!
  list=
  for i in $(seq 1 "$nodes"); do
    until curl -sf "http://127.0.0.1:$((8100 + i))/health" >/dev/null; do sleep 0.1; done
    list="$list${list:+,}127.0.0.1:$((8100 + i))"
  done
  "$bin" bench --nodes "$list" --keys "$keys" --preload --duration "${duration}s" \
    --out "$out/$nodes" >"$out/$nodes.txt"
  counts=$(for i in $(seq 1 "$nodes"); do
    curl -sf "http://127.0.0.1:$((8100 + i))/admin/status" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["storage"]["keys"])'
  done | paste -sd,)
  python3 - "$out/$nodes" "$nodes" "$counts" <<'PY'
import glob, json, sys
s = json.load(open(sorted(glob.glob(f"{sys.argv[1]}/bench-*.json"))[-1]))
counts = [int(c) for c in sys.argv[3].split(",")]
mean = sum(counts) / len(counts)
print(json.dumps({"nodes": int(sys.argv[2]), "ops_per_s": round(s["ops_per_s"]),
                  "p99_ms": s["latency"]["all"]["p99_ms"], "errors": s["errors"],
                  "keys_per_node": counts, "max_over_mean": round(max(counts) / mean, 3)}))
PY
  kill -TERM "$dev"
  wait "$dev" || true
  dev=
  while pgrep -f "serve --config $data" >/dev/null; do sleep 0.1; done
  rm -rf "$data"
done | tee "$out/summary.json"
echo "results in $out"
