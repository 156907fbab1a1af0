#!/usr/bin/env bash
# Measures a join under load: a 3-node `quorumkv dev` cluster holding KEYS keys of VALUE bytes
# runs the headline mix (`quorumkv bench`, workload a, 64 clients) for DURATION seconds; JOIN_AT
# seconds in, a fourth node joins and its share of the partitions is streamed to it. Prints the
# handoff rate (MB/s and keys/s, from the senders' "partition handed off" lines) and the
# client throughput and p99 before and during the transfer (from the bench's per-second JSON).
# PROFILE=release skips the slow fat-LTO build of the default `dist` profile.
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${KEYS:-200000}
value=${VALUE:-512}
duration=${DURATION:-60}
join_at=${JOIN_AT:-20}
profile=${PROFILE:-dist}
cargo build --profile "$profile" --quiet
bin="./target/$profile/quorumkv"
data=$(mktemp -d)
out="results/handoff-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
"$bin" dev --data-dir "$data" >"$data/dev.log" 2>&1 &
dev=$!
n4=
trap 'kill $n4 2>/dev/null; kill -INT $dev 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
for port in 8101 8102 8103; do
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
done
echo "preloading $keys keys of $value bytes"
"$bin" bench --keys "$keys" --value-bytes "$value" --duration 1s --out "$out/preload" >/dev/null
"$bin" bench --keys "$keys" --value-bytes "$value" --no-preload --duration "${duration}s" \
  --out "$out" >"$out/bench.txt" &
bench=$!
sleep "$join_at"
cat >"$data/n4.toml" <<CONF
node_id = "n4"
http_addr = "127.0.0.1:8104"
peer_addr = "127.0.0.1:8204"
data_dir = "$data/n4"
[cluster]
join = ["127.0.0.1:8201"]
[security]
cluster_secret_file = "$data/cluster.secret"
CONF
start=$(date +%s.%N)
"$bin" serve --config "$data/n4.toml" >"$data/n4.log" 2>&1 &
n4=$!
# n4 among the members (it shows among the Raft learners a moment earlier).
until curl -sf http://127.0.0.1:8101/admin/cluster | grep -q '"id":"n4"'; do sleep 0.1; done
"$bin" admin wait --node 127.0.0.1:8101 >/dev/null
done_at=$(date +%s.%N)
wait $bench
cat "$out/bench.txt"
python3 - "$out" "$data" "$start" "$done_at" "$join_at" <<'PY'
import glob, json, re, sys
out, data, start, done, join_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
keys = byts = 0
for log in glob.glob(f"{data}/*.log"):
    for line in open(log, errors="replace"):
        if "partition handed off" in line:
            keys += int(re.search(r"keys=(\d+)", line).group(1))
            byts += int(re.search(r"bytes=(\d+)", line).group(1))
secs = done - start
print(f"transfer: {keys} keys, {byts / 1e6:.1f} MB in {secs:.1f} s: "
      f"{byts / 1e6 / secs:.1f} MB/s, {keys / secs:.0f} keys/s (from the join to the commit)")
summary = json.load(open(sorted(glob.glob(f"{out}/bench-*.json"))[-1]))
per = summary["per_second"]
during_end = join_at + int(secs + 0.999)
def phase(rows):
    if not rows:
        return "n/a"
    ops = sum(r["ops"] for r in rows) / len(rows)
    p99 = sorted(r["p99_ms"] for r in rows)[len(rows) // 2]
    return f"{ops:.0f} ops/s, p99 {p99:.1f} ms (median of per-second p99s)"
print("before the join:", phase([r for r in per if 2 <= r["second"] < join_at]))
print("during the transfer:", phase([r for r in per if join_at <= r["second"] < during_end]))
print("after the commit:", phase([r for r in per if r["second"] >= during_end + 2]))
PY
echo "results in $out"
