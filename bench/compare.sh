#!/usr/bin/env bash
# Builds plinth and plinth-bench (release), starts plinth and its peers on loopback, runs every
# workload against each system that offers it at 1, 16 and 64 operations in flight (and 256 for
# kv-put), ROUNDS times, then loads 1,000,000 keys of 100 bytes into fresh plinth and etcd for
# the memory comparison, and writes the results into docs/benchmarks.md between the
# `compare.sh` markers: the machine, the command, one table per workload with each system's
# median figures, and plinth's ratio to each peer. Stops everything it started on exit.
#
#   bench/compare.sh                      # ROUNDS=3 DURATION=5s MEMORY_KEYS=1000000
#   ROUNDS=1 DURATION=2s MEMORY_KEYS=100000 bench/compare.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}
OUT=$(mktemp -d /tmp/plinth-compare.XXXXXX)
export PEERS_DIR="$OUT/peers"
RESULTS="$OUT/results.jsonl"
PLINTH_PID=

log() { printf 'compare: %s\n' "$*" >&2; }

cleanup() {
  if [ -n "$PLINTH_PID" ]; then
    kill "$PLINTH_PID" 2>/dev/null || true
    wait "$PLINTH_PID" 2>/dev/null || true
  fi
  bench/peers.sh stop || true
  rm -rf "$OUT"
}
trap cleanup EXIT

# etcd-client generates its gRPC code at build time and needs protoc for it.
if ! command -v protoc >/dev/null; then
  log "installing protobuf-compiler (for the etcd client's build)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q protobuf-compiler >/dev/null
fi
log "building (release)"
cargo build --release --locked -p plinth -p plinth-bench --features plinth-bench/peers
PLINTH=target/release/plinth
BENCH=target/release/plinth-bench

start_plinth() {
  rm -rf "$OUT/plinth"
  "$PLINTH" serve --data-dir "$OUT/plinth" --listen 127.0.0.1:7070 >"$OUT/plinth.log" 2>&1 &
  PLINTH_PID=$!
  until (exec 3<>/dev/tcp/127.0.0.1/7070) 2>/dev/null; do
    kill -0 "$PLINTH_PID" || { cat "$OUT/plinth.log" >&2; exit 1; }
    sleep 0.1
  done
}

stop_plinth() {
  kill "$PLINTH_PID" 2>/dev/null || true
  wait "$PLINTH_PID" 2>/dev/null || true
  PLINTH_PID=
}

pid_of() {
  if [ "$1" = plinth ]; then echo "$PLINTH_PID"; else bench/peers.sh pids | sed -n "s/^$1=//p"; fi
}

# bench WORKLOAD SYSTEM CONCURRENCY [more plinth-bench run flags]
bench() {
  local workload=$1 system=$2 conc=$3
  shift 3
  "$BENCH" run "$workload" --system "$system" --concurrency "$conc" --pid "$(pid_of "$system")" \
    --json "$RESULTS" --no-header "$@" || log "$workload on $system at $conc failed"
}

log "starting the peers and plinth"
bench/peers.sh start >&2
start_plinth

for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS"
  for conc in 1 16 64 256; do
    for system in plinth etcd; do bench kv-put "$system" "$conc" --duration "$DURATION"; done
  done
  for conc in 1 16 64; do
    for system in plinth etcd; do bench kv-get "$system" "$conc" --duration "$DURATION"; done
    for system in plinth etcd redis; do
      bench lock-uncontended "$system" "$conc" --duration "$DURATION"
      bench lock-contended "$system" "$conc" --duration "$DURATION"
    done
    for system in plinth rabbitmq nats; do
      bench queue "$system" "$conc" --duration "$DURATION"
      bench queue "$system" "$conc" --duration "$DURATION" --batch 10
    done
  done
  for system in plinth etcd; do
    bench watch-fanout "$system" 1 --duration "$DURATION" --watchers 100 --rate 200
  done
done

log "memory: $MEMORY_KEYS keys of 100 bytes into fresh plinth and etcd"
stop_plinth
bench/peers.sh stop
bench/peers.sh start etcd >&2
start_plinth
for system in plinth etcd; do
  bench kv-load "$system" 64 --keys "$MEMORY_KEYS" --value-size 100
done

log "writing docs/benchmarks.md"
{
  echo "<!-- compare.sh begin: everything down to the end marker is written by bench/compare.sh -->"
  echo
  echo "## plinth beside etcd, Redis, RabbitMQ and NATS JetStream"
  echo
  echo "One run of \`ROUNDS=$ROUNDS DURATION=$DURATION MEMORY_KEYS=$MEMORY_KEYS bench/compare.sh\` on $(date -u +%Y-%m-%d),"
  echo "plinth at \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- crates proto || echo ' (with uncommitted changes)'). Every figure is the median over the rounds; all"
  echo "systems ran on the same machine, one after another, on loopback, each with its data on the same disk."
  echo
  echo "- Machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr)."
  echo "- Peers: $(bench/peers.sh versions | paste -sd ';' | sed 's/;/; /g')."
  echo "- Durability: plinth fsyncs its log before every reply; etcd fsyncs its WAL before acknowledging (its default);"
  echo "  Redis runs \`appendfsync always\`; RabbitMQ gets a durable queue, persistent messages and publisher confirms;"
  echo "  JetStream gets file storage with \`sync_interval: always\`, so it too fsyncs a message before its ack."
  echo "- Load: \`plinth-bench run WORKLOAD --system S --concurrency C --duration $DURATION\` — C operations in flight over"
  echo "  one connection per 16 (etcd's own benchmark shape), driven by one load-generator thread for every system (its"
  echo "  other core left to the server), 256-byte values, unique keys for puts, 10,000 preloaded keys"
  echo "  for gets. A lock cycle is acquire + release (etcd: lock + unlock under a per-worker session lease, as Go's"
  echo "  \`concurrency\` package does; Redis: \`SET NX PX\` + a scripted release, not durable). A queue operation moves one"
  echo "  message: send, receive, ack (plinth acks with the worker's next receive, in the same write, as its SDK's consumer"
  echo "  does; the peers' acks are not waited for); \`queue-batch-10\` sends 10 at once and takes 10 (ops/s counts messages, latency"
  echo "  is per cycle). Delivery is from the send to the receiver's hands (queues) or from the put to each of 100"
  echo "  watchers (watch-fanout, one writer at 200 puts/s). Server CPU and peak RSS come from \`/proc/<pid>\`. plinth"
  echo "  runs on its defaults: on $(nproc) cores, $(( $(nproc) > 1 ? $(nproc) - 1 : 1 )) worker thread(s) besides its log's flusher."
  echo "- The raw reports are in \`docs/benchmarks-results.jsonl\`; \`plinth-bench tables docs/benchmarks-results.jsonl\`"
  echo "  prints these tables again."
  echo
  "$BENCH" tables "$RESULTS"
  echo "<!-- compare.sh end -->"
} >"$OUT/section.md"

# The raw reports, one JSON object a line, beside the page: `plinth-bench tables` reads them.
cp "$RESULTS" docs/benchmarks-results.jsonl

bench/put-section.py compare.sh "$OUT/section.md"
log "done: docs/benchmarks.md"
