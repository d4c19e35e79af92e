#!/usr/bin/env bash
# The 3-node comparison: builds plinth and plinth-bench (release), starts a 3-replica plinth
# cluster and a 3-member etcd cluster on loopback, runs kv-put and lock-uncontended against each
# leader ROUNDS times, then kills the plinth leader FAILOVERS times and times how long until a
# write is acknowledged again. Writes the results into docs/benchmarks.md between the
# `compare-cluster.sh` markers (raw reports in docs/benchmarks-cluster.jsonl). Stops everything
# it started on exit.
#
#   bench/compare-cluster.sh                  # ROUNDS=3 DURATION=5s FAILOVERS=10
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
FAILOVERS=${FAILOVERS:-10}
OUT=$(mktemp -d /tmp/plinth-compare-cluster.XXXXXX)
export PEERS_DIR="$OUT/peers"
RESULTS="$OUT/results.jsonl"
PORTS=(7071 7072 7073)
PEERS="1=127.0.0.1:7071,2=127.0.0.1:7072,3=127.0.0.1:7073"
ALL_PLINTH="http://127.0.0.1:7071,http://127.0.0.1:7072,http://127.0.0.1:7073"
ALL_ETCD="http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379"
declare -A PID

log() { printf 'compare-cluster: %s\n' "$*" >&2; }

cleanup() {
  for id in 1 2 3; do
    [ -n "${PID[$id]:-}" ] && kill "${PID[$id]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  bench/peers.sh stop || true
  rm -rf "$OUT"
}
trap cleanup EXIT

if ! command -v protoc >/dev/null; then
  log "installing protobuf-compiler (for the etcd client's build)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q protobuf-compiler >/dev/null
fi
log "building (release)"
cargo build --release --locked -p plinth -p plinth-bench --features plinth-bench/peers
PLINTH=target/release/plinth
BENCH=target/release/plinth-bench

start_node() {
  local id=$1
  "$PLINTH" serve --node-id "$id" --peers "$PEERS" --data-dir "$OUT/plinth-$id" \
    >>"$OUT/plinth-$id.log" 2>&1 &
  PID[$id]=$!
}

# The plinth leader's id, once every running node names the same one.
plinth_leader() {
  local tries=0
  until PLINTH_ENDPOINT=$ALL_PLINTH "$PLINTH" cluster status --json 2>/dev/null |
    python3 -c 'import json,sys; s=json.load(sys.stdin); l=int(s.get("leader_id",0)); print(l) if l else sys.exit(1)'; do
    tries=$((tries + 1))
    ((tries < 200)) || { log "no plinth leader"; exit 1; }
    sleep 0.05
  done
}

# The etcd leader's client URL.
etcd_leader() {
  ETCDCTL_API=3 etcdctl --endpoints="$ALL_ETCD" endpoint status -w json |
    python3 -c '
import json, sys
for e in json.load(sys.stdin):
    s = e["Status"]
    if s["leader"] == s["header"]["member_id"]:
        print(e["Endpoint"])'
}

etcd_pid_of() {
  case "$1" in
    *:2379) cat "$PEERS_DIR/etcd1/pid" ;;
    *:22379) cat "$PEERS_DIR/etcd2/pid" ;;
    *:32379) cat "$PEERS_DIR/etcd3/pid" ;;
  esac
}

bench() {
  local workload=$1 system=$2 conc=$3 endpoint=$4 pid=$5
  shift 5
  "$BENCH" run "$workload" --system "$system" --concurrency "$conc" --endpoint "$endpoint" \
    --pid "$pid" --json "$RESULTS" --no-header "$@" || log "$workload on $system at $conc failed"
}

log "starting 3 plinth replicas and 3 etcd members"
for id in 1 2 3; do start_node "$id"; done
bench/peers.sh start etcd_cluster >&2

for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS"
  leader=$(plinth_leader)
  p_endpoint="http://127.0.0.1:${PORTS[$((leader - 1))]}"
  e_endpoint=$(etcd_leader)
  for conc in 16 64; do
    bench kv-put plinth "$conc" "$p_endpoint" "${PID[$leader]}" --duration "$DURATION"
    bench kv-put etcd "$conc" "$e_endpoint" "$(etcd_pid_of "$e_endpoint")" --duration "$DURATION"
  done
  for conc in 1 16; do
    bench lock-uncontended plinth "$conc" "$p_endpoint" "${PID[$leader]}" --duration "$DURATION"
    bench lock-uncontended etcd "$conc" "$e_endpoint" "$(etcd_pid_of "$e_endpoint")" --duration "$DURATION"
  done
done

log "failover: killing the plinth leader $FAILOVERS times"
times=()
for i in $(seq "$FAILOVERS"); do
  leader=$(plinth_leader)
  others=$(for id in 1 2 3; do [ "$id" = "$leader" ] || printf 'http://127.0.0.1:%s,' "${PORTS[$((id - 1))]}"; done)
  kill -9 "${PID[$leader]}"
  wait "${PID[$leader]}" 2>/dev/null || true
  start=$(date +%s%N)
  until PLINTH_ENDPOINT=${others%,} "$PLINTH" kv put failover "$i" >/dev/null 2>&1; do sleep 0.01; done
  end=$(date +%s%N)
  times+=($(((end - start) / 1000000)))
  log "failover $i: killed node $leader; a write was acknowledged again after ${times[-1]} ms"
  start_node "$leader"
  sleep 2
done
median_ms=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')

log "writing docs/benchmarks.md"
{
  echo "<!-- compare-cluster.sh begin: everything down to the end marker is written by bench/compare-cluster.sh -->"
  echo
  echo "## Three nodes: plinth beside etcd, and failover"
  echo
  echo "One run of \`ROUNDS=$ROUNDS DURATION=$DURATION FAILOVERS=$FAILOVERS bench/compare-cluster.sh\` on $(date -u +%Y-%m-%d),"
  echo "plinth at \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- crates proto || echo ' (with uncommitted changes)'). A 3-replica plinth"
  echo "cluster and a 3-member etcd cluster ($(dpkg-query -W -f '${Version}' etcd-server 2>/dev/null)) on the same machine, every member on loopback"
  echo "and on the same disk, each system measured alone; the load goes to each system's leader, and the server"
  echo "CPU and RSS are the leader's. A write is acknowledged once a majority (two of three) has it fsynced."
  echo "- Machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr)."
  echo "- Failover: the plinth leader \`kill -9\`ed $FAILOVERS times under no load; the time from the kill until"
  echo "  a write through the two others is acknowledged (a new leader elected, and committing): median"
  echo "  **$median_ms ms**, each: ${times[*]} ms."
  echo
  "$BENCH" tables "$RESULTS"
  echo "<!-- compare-cluster.sh end -->"
} >"$OUT/section.md"

cp "$RESULTS" docs/benchmarks-cluster.jsonl

bench/put-section.py compare-cluster.sh "$OUT/section.md"
log "done: docs/benchmarks.md"
