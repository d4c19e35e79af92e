#!/usr/bin/env bash
# What idle waiters cost every write: kv-put at 64 in flight on a fresh plinth, alternately
# alone and with WAITERS idle long-polling queue receives and WAITERS lock acquires queued
# behind a held lock (`plinth-bench run --idle-waiters`), ROUNDS pairs. Prints one line a run
# and the median of each. PLINTH and BENCH name the binaries (default: a release build of this
# tree), so that two builds can be compared with the same load generator.
#
#   bench/waiters.sh                         # ROUNDS=5 DURATION=5s WAITERS=1000
#   PLINTH=/tmp/old/plinth bench/waiters.sh  # an older server
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
WAITERS=${WAITERS:-1000}
OUT=$(mktemp -d /tmp/plinth-waiters.XXXXXX)
PLINTH_PID=

cleanup() {
  if [ -n "$PLINTH_PID" ]; then
    kill "$PLINTH_PID" 2>/dev/null || true
    wait "$PLINTH_PID" 2>/dev/null || true
  fi
  rm -rf "$OUT"
}
trap cleanup EXIT

if [ -z "${PLINTH:-}" ] || [ -z "${BENCH:-}" ]; then
  cargo build --release --locked -p plinth -p plinth-bench >&2
fi
PLINTH=${PLINTH:-target/release/plinth}
BENCH=${BENCH:-target/release/plinth-bench}

"$PLINTH" serve --data-dir "$OUT/data" --listen 127.0.0.1:7070 >"$OUT/plinth.log" 2>&1 &
PLINTH_PID=$!
until (exec 3<>/dev/tcp/127.0.0.1/7070) 2>/dev/null; do
  kill -0 "$PLINTH_PID" || { cat "$OUT/plinth.log" >&2; exit 1; }
  sleep 0.1
done

run() {
  "$BENCH" run kv-put --concurrency 64 --duration "$DURATION" --pid "$PLINTH_PID" \
    --json "$OUT/$1.jsonl" --no-header "${@:2}"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS: alone, then with $WAITERS long polls and $WAITERS lock waiters" >&2
  run alone
  run waiters --idle-waiters "$WAITERS"
done

median() {
  python3 - "$1" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
ops = statistics.median(r["ops_per_s"] for r in runs)
p99 = statistics.median(r["latency"]["p99_us"] for r in runs) / 1000
print(f"{ops:.0f} ops/s, p99 {p99:.2f} ms ({len(runs)} runs)")
EOF
}
echo "kv-put at 64, alone:                $(median "$OUT/alone.jsonl")"
echo "kv-put at 64, with $WAITERS+$WAITERS waiters: $(median "$OUT/waiters.jsonl")"
