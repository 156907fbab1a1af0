#!/usr/bin/env bash
# Side by side in one run, the same mix (`quorumkv bench`: workload a, 50% GET / 50% PUT,
# 64 clients, 10,000 keys of 256 bytes, DURATION s each) against, one after another:
#   1. a 3-member etcd on loopback (Debian's etcd-server, installed when missing; etcd fsyncs
#      its log before every commit), through its v3 JSON gateway (`bench --api etcd`);
#   2. a 3-node quorumkv (`quorumkv dev`: sync = "always", internode encryption on);
#   3. the same with client TLS and tokens on (`dev --secure`);
#   4. the durable fan-out ceiling (`bench ceiling --fsync-dir`: bare coordinators, replicas
#      that only append and group-commit an fdatasync before acking);
#   5. the plain fan-out ceiling (`bench ceiling`: nothing stored).
# Prints each figure and the ratios quorumkv/etcd and quorumkv/durable ceiling.
# PROFILE=release skips the slow fat-LTO build of the default `dist` profile.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-20}
profile=${PROFILE:-dist}
cargo build --profile "$profile" --quiet
bin="$PWD/target/$profile/quorumkv"
if ! command -v etcd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
data=$(mktemp -d "${TMPDIR:-/var/tmp}/qkv-peers.XXXXXX")
out="results/peers-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
. scripts/targets.sh
# Runs the mix; $1 names the run, the rest are extra bench flags. Prints "ops/s p99_ms".
mix() {
  local name=$1
  shift
  "$bin" bench --duration "${duration}s" --warmup 3s --out "$out/$name" "$@" >"$out/$name.txt"
  python3 - "$out/$name" <<'PY'
import glob, json, sys
s = json.load(open(sorted(glob.glob(f"{sys.argv[1]}/bench-*.json"))[-1]))
print(f'{s["ops_per_s"]:.0f} {s["latency"]["all"]["p99_ms"]:.1f} {s["errors"]}')
PY
}

# 1. etcd
cluster="e1=http://127.0.0.1:2380,e2=http://127.0.0.1:12380,e3=http://127.0.0.1:22380"
for i in 1 2 3; do
  c=$(((i - 1) * 10000 + 2379))
  p=$((c + 1))
  etcd --name "e$i" --data-dir "$data/e$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --initial-cluster-token qkv-bench >"$data/e$i.log" 2>&1 &
  pids+=($!)
done
for c in 2379 12379 22379; do up "http://127.0.0.1:$c/health"; done
read -r etcd_ops etcd_p99 etcd_err < <(mix etcd --api etcd \
  --nodes 127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379)
stop_all

# 2. and 3. quorumkv, plain clients then TLS + tokens
"$bin" dev --data-dir "$data/q" >"$data/q.log" 2>&1 &
pids+=($!)
for port in 8101 8102 8103; do up "http://127.0.0.1:$port/health"; done
read -r q_ops q_p99 q_err < <(mix quorumkv)
stop_all
"$bin" dev --secure --data-dir "$data/qs" >"$data/qs.log" 2>&1 &
pids+=($!)
for port in 8101 8102 8103; do up -k "https://127.0.0.1:$port/health"; done
until [ -s "$data/qs/dev.token" ]; do sleep 0.1; done
read -r qs_ops qs_p99 qs_err < <(mix quorumkv-secure --token "$(cat "$data/qs/dev.token")" \
  --cacert "$data/qs/node.crt" --nodes https://127.0.0.1:8101,https://127.0.0.1:8102,https://127.0.0.1:8103)
stop_all

# 4. and 5. the ceilings
mkdir -p "$data/fsync"
"$bin" bench ceiling --fsync-dir "$data/fsync" >/dev/null 2>&1 &
pids+=($!)
for port in 8301 8302 8303; do up "http://127.0.0.1:$port/"; done
read -r cd_ops cd_p99 cd_err < <(mix ceiling-fsync --nodes 127.0.0.1:8301,127.0.0.1:8302,127.0.0.1:8303)
stop_all
"$bin" bench ceiling >/dev/null 2>&1 &
pids+=($!)
for port in 8301 8302 8303; do up "http://127.0.0.1:$port/"; done
read -r c_ops c_p99 c_err < <(mix ceiling --nodes 127.0.0.1:8301,127.0.0.1:8302,127.0.0.1:8303)
stop_all

python3 - "$etcd_ops" "$etcd_p99" "$etcd_err" "$q_ops" "$q_p99" "$q_err" "$qs_ops" "$qs_p99" "$qs_err" \
  "$cd_ops" "$cd_p99" "$cd_err" "$c_ops" "$c_p99" "$c_err" <<'PY' | tee "$out/summary.txt"
import sys
v = sys.argv[1:]
rows = [("etcd 3 members (fsync per commit)", v[0:3]), ("quorumkv 3 nodes, sync = always", v[3:6]),
        ("quorumkv, TLS + tokens on", v[6:9]), ("ceiling, fdatasync before ack", v[9:12]),
        ("ceiling, nothing stored", v[12:15])]
for name, (ops, p99, err) in rows:
    print(f"{name:36} {float(ops):8.0f} ops/s  p99 {float(p99):6.1f} ms  errors {err}")
q, qs, etcd, cd, c = (float(v[i]) for i in (3, 6, 0, 9, 12))
print(f"quorumkv / etcd: {q / etcd:.2f}x   quorumkv / durable ceiling: {q / cd:.2f}x   "
      f"secure / plain: {qs / q:.2f}x   durable ceiling / plain ceiling: {cd / c:.2f}x")
PY
echo "results in $out"
