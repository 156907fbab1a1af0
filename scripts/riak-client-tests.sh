#!/usr/bin/env bash
# The official Riak Python client's own test suite against quorumkv's Riak-compatible API.
#
# Installs `riak==2.7.0` from PyPI into a virtual environment under target/ (with a shim that
# lets it import on Python >= 3.10; the package itself is not modified), unpacks its source
# package (its tests read files beside them), starts a 3-node `quorumkv dev` whose buckets
# default to lww (Riak's default bucket type: allow_mult = false), and runs each test id of
# tests/riak/acceptance_ids.txt in its own process under a timeout (a client waiting on an
# endpoint that is not served would wait forever). A skipped test counts as failed.
# RUN_MAPREDUCE is set for the two link tests among the ids (no MapReduce test is listed).
#
#   scripts/riak-client-tests.sh            # all listed ids
#   IDS=FILE PORT=8300 TIMEOUT=60 scripts/riak-client-tests.sh
#
# Prints "N passed, M failed"; exits non-zero unless every id passed. Logs of failed ids and
# of the nodes are kept under target/riak-client/logs.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK="target/riak-client"
IDS="${IDS:-tests/riak/acceptance_ids.txt}"
PORT="${PORT:-8300}"
TIMEOUT="${TIMEOUT:-60}"
PYTHON="${PYTHON:-python3}"
VENV="$WORK/venv"
LOGS="$WORK/logs"
mkdir -p "$WORK" "$LOGS"
rm -f "$LOGS"/*.log

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import riak' 2>/dev/null; then
  echo "== installing riak==2.7.0 into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # riak 2.7.0 predates Python 3.10: it imports the ABCs from `collections` and passes
  # `verbose=` to namedtuple. The shim restores both before anything imports riak.
  cat > "$site/riak_py3_shim.py" <<'EOF'
import collections
import collections.abc

for _name in collections.abc.__all__:
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

_namedtuple = collections.namedtuple


def _namedtuple_without_verbose(*args, **kwargs):
    kwargs.pop("verbose", None)
    return _namedtuple(*args, **kwargs)


collections.namedtuple = _namedtuple_without_verbose
EOF
  echo "import riak_py3_shim" > "$site/riak-py3-shim.pth"
  "$VENV/bin/pip" install -q riak==2.7.0
fi
SRC="$WORK/src/riak-2.7.0"
if [ ! -f "$SRC/riak/tests/test_kv.py" ]; then
  echo "== unpacking the riak 2.7.0 source package (its tests)"
  rm -rf "$WORK/src"
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: riak==2.7.0 -d "$WORK/src"
  tar -xzf "$WORK/src/riak-2.7.0.tar.gz" -C "$WORK/src"
fi

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/quorumkv
fi
DATA="$WORK/data"
rm -rf "$DATA"
coproc DEV { exec "$BIN" dev --nodes 3 --base-port "$PORT" --data-dir "$DATA" --conflict lww 2>"$LOGS/nodes.log"; }
DEV_PID=$DEV_PID
cleanup() {
  kill -INT "$DEV_PID" 2>/dev/null || true
  wait "$DEV_PID" 2>/dev/null || true
}
trap cleanup EXIT
HTTP_PORT=$((PORT + 1))
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null || { echo "the dev cluster did not start"; cat "$LOGS/nodes.log"; exit 1; }
# The metadata group must have applied its first entry before bucket properties change.
"$BIN" admin wait --node "http://127.0.0.1:$HTTP_PORT" >/dev/null 2>&1 || true

passed=0
failed=0
failures=()
while read -r id; do
  [ -z "$id" ] && continue
  log="$LOGS/$id.log"
  if (cd "$SRC" && RIAK_TEST_PROTOCOL=http RIAK_TEST_HTTP_PORT=$HTTP_PORT RUN_KV=1 RUN_CLIENT=1 RUN_MAPREDUCE=1 \
      RUN_RESOLVE=1 RUN_INDEXES=1 RUN_BTYPES=1 timeout "$TIMEOUT" "$OLDPWD/$VENV/bin/python" \
      -m unittest "$id") >"$log" 2>&1 && ! grep -q "skipped" "$log"; then
    passed=$((passed + 1))
    rm -f "$log"
  else
    failed=$((failed + 1))
    failures+=("$id")
  fi
done < "$IDS"

for id in "${failures[@]}"; do
  echo "FAILED $id (log: $LOGS/$id.log)"
  tail -n 5 "$LOGS/$id.log" | sed 's/^/    /'
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
