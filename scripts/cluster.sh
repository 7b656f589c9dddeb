#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for the failover scenario and for trying
# logfence against a cluster by hand.
#
#   scripts/cluster.sh start [VERSION]   # start (or complete) the cluster; prints the 3 AMQP URLs
#   scripts/cluster.sh stop  [VERSION]   # stop the three nodes and remove their data
#   scripts/cluster.sh urls  [VERSION]   # the three AMQP URLs, one a line
#   scripts/cluster.sh status [VERSION]  # rabbitmqctl cluster_status, via node 1
#   scripts/cluster.sh node-start N      # start node N (1..3) again, as a member (after a kill)
#   scripts/cluster.sh node-stop N       # stop node N cleanly (rabbitmqctl stop)
#   scripts/cluster.sh node-pid N        # the OS pid of node N (its Erlang VM), for a kill -9
#   scripts/cluster.sh leader QUEUE      # the number (1..3) of the node leading quorum queue QUEUE
#   scripts/cluster.sh members QUEUE     # how many nodes hold a replica of quorum queue QUEUE
#
# Each node has its own node name (logfence-cN@localhost), AMQP port (5681..5683), Erlang
# distribution port (25681..25683), data directory and log directory under $CLUSTER_DIR, and
# one shared Erlang cookie in $CLUSTER_DIR/home. Nodes 2 and 3 join node 1 with `rabbitmqctl
# join_cluster`. `start` is idempotent: nodes already running are left alone, members are not
# joined again, and it returns once all three run as one cluster. Nothing here touches the
# machine's own broker (5672): the nodes read their own config and plugin files, not
# /etc/rabbitmq.
#
# VERSION: the RabbitMQ of this machine (Debian's, under /usr/lib/rabbitmq) is the default and
# the only one this script finds by itself; for another, point CLUSTER_RABBITMQ_SBIN at the
# sbin directory of that install (it must hold rabbitmq-server and rabbitmqctl).
#
# Environment: CLUSTER_DIR (default /tmp/logfence-cluster-VERSION), CLUSTER_AMQP_PORT (first
# AMQP port, default 5681), CLUSTER_DIST_PORT (first distribution port, default 25681),
# CLUSTER_WAIT_SECS (default 120).
set -euo pipefail

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

cmd="${1:-}"
arg="${2:-}"

installed_version() {
  local d
  d=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-* 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] || return 1
  d=${d##*rabbitmq_server-}
  echo "${d%.*}"
}

case "$cmd" in
  node-start|node-stop|node-pid|leader|members) version="$(installed_version || echo none)" ;;
  *) version="${arg:-$(installed_version || echo none)}" ;;
esac

if [ -n "${CLUSTER_RABBITMQ_SBIN:-}" ]; then
  SBIN="$CLUSTER_RABBITMQ_SBIN"
elif [ "$version" = "$(installed_version || echo none)" ]; then
  # Debian's /usr/sbin wrappers switch to the rabbitmq user and drop the environment: the
  # scripts behind them take it as given.
  SBIN=/usr/lib/rabbitmq/bin
else
  die "RabbitMQ $version is not installed here (this machine has $(installed_version || echo none)); set CLUSTER_RABBITMQ_SBIN to its sbin directory"
fi
[ -x "$SBIN/rabbitmq-server" ] && [ -x "$SBIN/rabbitmqctl" ] || die "no rabbitmq-server / rabbitmqctl in $SBIN"

DIR="${CLUSTER_DIR:-/tmp/logfence-cluster-$version}"
AMQP0="${CLUSTER_AMQP_PORT:-5681}"
DIST0="${CLUSTER_DIST_PORT:-25681}"
WAIT_SECS="${CLUSTER_WAIT_SECS:-120}"
NODES=(1 2 3)

node_name() { echo "logfence-c$1@localhost"; }
amqp_port() { echo $((AMQP0 + $1 - 1)); }
dist_port() { echo $((DIST0 + $1 - 1)); }

# The environment one node's server and every rabbitmqctl aimed at it run with.
node_env() {
  local n=$1 base="$DIR/node$n"
  echo HOME="$DIR/home" \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_MNESIA_BASE="$base/mnesia" \
    RABBITMQ_LOG_BASE="$base/log" \
    RABBITMQ_PID_FILE="$base/pid" \
    RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
    RABBITMQ_PLUGINS_EXPAND_DIR="$base/plugins-expand" \
    ERL_EPMD_ADDRESS=127.0.0.1
}

ctl() {
  local n=$1
  shift
  # shellcheck disable=SC2046
  env $(node_env "$n") "$SBIN/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

port_answers() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

node_running() { ctl "$1" status >/dev/null 2>&1; }

prepare() {
  mkdir -p "$DIR/home"
  [ -s "$DIR/home/.erlang.cookie" ] || {
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F >"$DIR/home/.erlang.cookie"
  }
  chmod 600 "$DIR/home/.erlang.cookie"
  echo '[].' >"$DIR/enabled_plugins"
  : >"$DIR/rabbitmq-env.conf"
  for n in "${NODES[@]}"; do
    mkdir -p "$DIR/node$n/mnesia" "$DIR/node$n/log"
    cat >"$DIR/node$n/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
loopback_users.guest = true
log.file.level = warning
EOF
  done
}

start_node() {
  local n=$1
  if node_running "$n"; then
    return 0
  fi
  port_answers "$(amqp_port "$n")" && die "port $(amqp_port "$n") is taken by something that is not node $n"
  say "starting $(node_name "$n") on AMQP $(amqp_port "$n"), distribution $(dist_port "$n")"
  # shellcheck disable=SC2046
  env $(node_env "$n") "$SBIN/rabbitmq-server" -detached >/dev/null 2>&1 ||
    die "node $n did not start (see $DIR/node$n/log)"
}

await_node() {
  local n=$1 deadline=$((SECONDS + WAIT_SECS))
  while ((SECONDS < deadline)); do
    if [ -s "$DIR/node$n/pid" ] && ctl "$n" await_startup --timeout 10 >/dev/null 2>&1 &&
      port_answers "$(amqp_port "$n")"; then
      return 0
    fi
    sleep 1
  done
  die "node $n did not finish booting within ${WAIT_SECS}s (see $DIR/node$n/log)"
}

is_member() {
  # Node $1 counts node 1 among its disk nodes.
  ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name 1)\"" &&
    ctl "$1" cluster_status --formatter json 2>/dev/null |
      python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sys.argv[1] in s.get("disk_nodes",[]) else 1)' "$(node_name 1)"
}

join() {
  local n=$1
  is_member "$n" && return 0
  say "joining $(node_name "$n") to $(node_name 1)"
  local log="$DIR/node$n/log/ctl.log"
  { ctl "$n" stop_app && ctl "$n" reset && ctl "$n" join_cluster "$(node_name 1)" &&
    ctl "$n" start_app; } >>"$log" 2>&1 || die "node $n could not join node 1 (see $log)"
}

urls() {
  for n in "${NODES[@]}"; do
    echo "amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"
  done
}

await_cluster() {
  local deadline=$((SECONDS + WAIT_SECS)) running
  while ((SECONDS < deadline)); do
    running=$(ctl 1 cluster_status --formatter json 2>/dev/null |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("running_nodes",[])))' 2>/dev/null || echo 0)
    [ "$running" = 3 ] && return 0
    sleep 1
  done
  die "the cluster did not show 3 running nodes within ${WAIT_SECS}s"
}

node_arg() {
  case "$arg" in
    1|2|3) echo "$arg" ;;
    *) die "$cmd: expected a node number 1, 2 or 3" ;;
  esac
}

case "$cmd" in
  start)
    prepare
    # Node 1 first (the others join it), then the other two side by side.
    start_node 1
    await_node 1
    start_node 2
    start_node 3
    await_node 2
    await_node 3
    join 2
    join 3
    await_cluster
    say "RabbitMQ $version cluster of 3 nodes up ($DIR)"
    urls
    ;;
  stop)
    for n in "${NODES[@]}"; do
      if node_running "$n"; then
        say "stopping $(node_name "$n")"
        ctl "$n" stop >/dev/null 2>&1 || true
      fi
      # A node that does not answer its ctl (killed half-way) is ended by its pid file.
      if [ -s "$DIR/node$n/pid" ]; then
        pid=$(cat "$DIR/node$n/pid")
        if kill -0 "$pid" 2>/dev/null && grep -q beam "/proc/$pid/cmdline" 2>/dev/null; then
          kill -9 "$pid" 2>/dev/null || true
        fi
      fi
    done
    rm -rf "$DIR"
    say "stopped and removed ($DIR)"
    ;;
  urls) urls ;;
  status) ctl 1 cluster_status ;;
  node-start)
    n=$(node_arg)
    [ -d "$DIR/node$n" ] || die "no cluster in $DIR: run 'scripts/cluster.sh start' first"
    start_node "$n"
    await_node "$n"
    ;;
  node-stop)
    n=$(node_arg)
    ctl "$n" stop >/dev/null
    ;;
  node-pid)
    n=$(node_arg)
    [ -s "$DIR/node$n/pid" ] || die "node $n has no pid file"
    cat "$DIR/node$n/pid"
    ;;
  leader|members)
    [ -n "$arg" ] || die "$cmd: expected a queue name"
    for n in "${NODES[@]}"; do
      out=$(ctl "$n" list_queues name leader members --formatter json 2>/dev/null) || continue
      python3 -c '
import json, sys
cmd, queue, names = sys.argv[1], sys.argv[2], sys.argv[3:]
for q in json.loads(sys.stdin.read() or "[]"):
    if q.get("name") != queue:
        continue
    if cmd == "members":
        print(len(q.get("members") or []))
        sys.exit(0)
    leader = q.get("leader")
    if leader in names:
        print(names.index(leader) + 1)
        sys.exit(0)
    sys.exit("queue %s is led by %r, not a node of this cluster" % (queue, leader))
sys.exit("no queue " + queue)
' "$cmd" "$arg" "$(node_name 1)" "$(node_name 2)" "$(node_name 3)" <<<"$out"
      exit $?
    done
    die "no node answered"
    ;;
  *)
    die "usage: scripts/cluster.sh start|stop|urls|status [VERSION] | node-start|node-stop|node-pid N"
    ;;
esac
