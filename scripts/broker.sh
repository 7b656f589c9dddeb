#!/usr/bin/env bash
# Ensures a RabbitMQ broker of a given version answers, for the tests, scripts/compat.sh and
# .ci/run.
#
#   scripts/broker.sh            Debian's own RabbitMQ (3.10 on bookworm) on 127.0.0.1:5672
#   scripts/broker.sh 3.10       the same
#   scripts/broker.sh 4.0        Debian trixie's 4.0.x on 127.0.0.1:5673
#   scripts/broker.sh 4.3        Debian forky's 4.3.x on 127.0.0.1:5674
#   scripts/broker.sh stop 4.0   stops the 4.0 node this script started (same for 4.3)
#   scripts/broker.sh env 4.3    prints the test suite's environment for that broker:
#                                LOGFENCE_TEST_AMQP_URL=... and LOGFENCE_TEST_RABBITMQCTL=...
#
# Idempotent: a broker that already answers is only waited for. On success the last line on
# stdout is the AMQP URL it serves (for `env`: the two variables, one a line).
#
# 4.0 and 4.3 need a newer glibc than bookworm's, so each runs from a
# `debootstrap --variant=minbase` chroot built once and reused, under
# LOGFENCE_BROKERS_DIR (default /var/lib/logfence-brokers): trixie/ for 4.0, forky/ for 4.3.
# A chroot that is missing or was left half-built is built again (needs root and network;
# LOGFENCE_DEBIAN_MIRROR overrides the mirror). Each node has its own name, AMQP port,
# distribution port and epmd port, so it never meets the host's broker:
#
#   version  suite   node             AMQP  dist   epmd
#   4.0      trixie  logfence40@localhost  5673  25673  4373
#   4.3      forky   logfence43@localhost  5674  25674  4374
#
# Time bounds: BROKER_WAIT_SECS (default 60; 120 for a chroot node) to start,
# BROKER_BUILD_SECS (default 900) to build a chroot. Any failure exits non-zero with a
# message on stderr, never quietly: a package that cannot be fetched fails the build.
set -euo pipefail

say() { echo "broker.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

HOST=127.0.0.1
BASE="${LOGFENCE_BROKERS_DIR:-/var/lib/logfence-brokers}"
MIRROR="${LOGFENCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUILD_SECS="${BROKER_BUILD_SECS:-900}"

ACTION=start
if [ "${1:-}" = stop ] || [ "${1:-}" = env ]; then
  ACTION="$1"
  shift
  [ $# -ge 1 ] || die "usage: broker.sh $ACTION 3.10|4.0|4.3"
fi
VERSION="${1:-3.10}"

case "$VERSION" in
3.10 | 3)
  VERSION=3.10 PORT=5672 SUITE=""
  ;;
4.0)
  PORT=5673 DIST_PORT=25673 EPMD_PORT=4373 SUITE=trixie NODE=logfence40@localhost
  ;;
4.3)
  PORT=5674 DIST_PORT=25674 EPMD_PORT=4374 SUITE=forky NODE=logfence43@localhost
  ;;
*) die "unknown version '$VERSION' (3.10, 4.0 or 4.3)" ;;
esac
URL="amqp://guest:guest@$HOST:$PORT/%2f"
ROOT="${SUITE:+$BASE/$SUITE}"

port_answers() { timeout 2 bash -c "</dev/tcp/$HOST/$PORT" 2>/dev/null; }

# The command that reaches this broker's rabbitmqctl, as the tests run it (split on spaces).
ctl_command() {
  if [ -z "$SUITE" ]; then
    echo "rabbitmqctl"
  else
    echo "chroot $ROOT env HOME=/var/lib/rabbitmq ERL_EPMD_PORT=$EPMD_PORT rabbitmqctl -n $NODE"
  fi
}

ctl() {
  # shellcheck disable=SC2046 # the command is words on purpose
  $(ctl_command) "$@"
}

# ---------------------------------------------------------------- 3.10: the host's broker

host_node_started() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0 # a broker we did not install: trust the port
  timeout 15 rabbitmqctl await_startup --timeout 10 >/dev/null 2>&1
}

host_wait_ready() {
  local deadline=$((SECONDS + ${BROKER_WAIT_SECS:-60}))
  while ((SECONDS < deadline)); do
    if port_answers && host_node_started; then
      return 0
    fi
    sleep 1
  done
  return 1
}

host_start() {
  local wait="${BROKER_WAIT_SECS:-60}"
  if port_answers; then
    host_wait_ready || die "something answers on $HOST:$PORT but RabbitMQ did not finish starting within ${wait}s"
    return 0
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 ||
      die "nothing answers on $HOST:$PORT and rabbitmq-server is not installed (no apt-get to install it)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || die "installing rabbitmq-server needs root (or sudo)"
      SUDO="sudo"
    fi
    say "installing rabbitmq-server"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update >&2 || die "apt-get update failed"
    $SUDO apt-get install -y rabbitmq-server >&2 || die "apt-get install rabbitmq-server failed"
    # The package may start the service itself (where an init system runs it).
    if port_answers; then
      host_wait_ready || die "rabbitmq-server was installed but did not finish starting within ${wait}s"
      return 0
    fi
  fi
  say "starting rabbitmq-server -detached"
  rabbitmq-server -detached >&2 || die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
  host_wait_ready || die "RabbitMQ did not answer on $HOST:$PORT within ${wait}s (see /var/log/rabbitmq/)"
}

# ---------------------------------------------------------------- 4.x: a chroot each

mounted() { grep -qs " $1 " /proc/mounts; }

# Unmounts what we mounted under a chroot (before it is removed or after its node stops).
unmount_under() {
  local dir="$1" m
  for m in tmp proc sys dev/pts dev; do
    if mounted "$dir/$m"; then umount "$dir/$m" 2>/dev/null || umount -l "$dir/$m" 2>/dev/null || true; fi
  done
}

# Removes a chroot directory, never through a mount (the chroot's /tmp is the host's).
remove_tree() {
  local dir="$1"
  [ -e "$dir" ] || return 0
  unmount_under "$dir"
  if grep -qs " $dir/" /proc/mounts; then
    die "something is still mounted under $dir; not removing it"
  fi
  rm -rf --one-file-system "$dir"
}

build_chroot() {
  [ "$(id -u)" -eq 0 ] || die "building the $SUITE chroot needs root (debootstrap, chroot)"
  if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 ||
      die "debootstrap is not installed (and no apt-get to install it); it builds the $SUITE chroot for RabbitMQ $VERSION"
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2 ||
      { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2; } ||
      die "apt-get install debootstrap failed"
  fi
  local work="$ROOT.building" log="$BASE/$SUITE.build.log" script
  mkdir -p "$BASE"
  remove_tree "$work"
  # bookworm's debootstrap has no script for forky: sid's is the same recipe.
  script="/usr/share/debootstrap/scripts/$SUITE"
  [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
  say "building the $SUITE chroot for RabbitMQ $VERSION in $ROOT (log: $log)"
  local start=$SECONDS
  : >"$log"
  fail() {
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    die "cannot build the $SUITE chroot for RabbitMQ $VERSION: $1 (full log: $log)"
  }
  timeout "$BUILD_SECS" debootstrap --variant=minbase "$SUITE" "$work" "$MIRROR" "$script" >>"$log" 2>&1 ||
    fail "debootstrap $SUITE from $MIRROR failed (a package could not be fetched?)"
  say "  debootstrap: $((SECONDS - start)) s"
  # No service starts inside the chroot while packages install.
  printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
  chmod +x "$work/usr/sbin/policy-rc.d"
  grep -qs localhost "$work/etc/hosts" || echo "127.0.0.1 localhost" >>"$work/etc/hosts"
  # forky's Release file on the mirror may be past its Valid-Until.
  timeout "$BUILD_SECS" chroot "$work" apt-get -o Acquire::Check-Valid-Until=false update >>"$log" 2>&1 ||
    fail "apt-get update in the chroot failed"
  timeout "$BUILD_SECS" chroot "$work" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends rabbitmq-server >>"$log" 2>&1 ||
    fail "apt-get install rabbitmq-server failed (a package could not be fetched?)"
  chroot "$work" apt-get clean >>"$log" 2>&1 || true
  chroot "$work" dpkg-query -W -f '${Version}\n' rabbitmq-server >"$work/.logfence-rabbitmq-version" ||
    fail "rabbitmq-server is not installed in the chroot"
  unmount_under "$work"
  remove_tree "$ROOT"
  mv "$work" "$ROOT"
  say "  built in $((SECONDS - start)) s: rabbitmq-server $(cat "$ROOT/.logfence-rabbitmq-version")"
}

configure_node() {
  local etc="$ROOT/etc/rabbitmq"
  mkdir -p "$etc"
  cat >"$etc/rabbitmq-env.conf" <<EOF
# Written by logfence's scripts/broker.sh: RabbitMQ $VERSION beside the host's broker.
NODENAME=$NODE
NODE_IP_ADDRESS=$HOST
NODE_PORT=$PORT
DIST_PORT=$DIST_PORT
EOF
  cat >"$etc/rabbitmq.conf" <<EOF
# Written by logfence's scripts/broker.sh.
listeners.tcp.default = $HOST:$PORT
loopback_users.guest = false
EOF
  # The plugins the host node runs are not wanted here (no management listener to clash).
  echo "[]." >"$etc/enabled_plugins"
  chroot "$ROOT" chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
}

# /tmp is the host's, so that a file a test writes under /tmp (definitions to import) has
# the same path for the chroot's rabbitmqctl.
mount_under() {
  mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mounted "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
  mounted "$ROOT/dev/pts" || mount --bind /dev/pts "$ROOT/dev/pts"
  mounted "$ROOT/tmp" || mount --bind /tmp "$ROOT/tmp"
}

chroot_started() { timeout 20 $(ctl_command) await_startup --timeout 15 >/dev/null 2>&1; }

chroot_start() {
  local wait="${BROKER_WAIT_SECS:-120}"
  if [ ! -e "$ROOT/.logfence-rabbitmq-version" ]; then
    port_answers && die "something else answers on $HOST:$PORT, and the $SUITE chroot is not built"
    build_chroot
  fi
  if port_answers && chroot_started; then
    mount_under
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "starting RabbitMQ $VERSION in its chroot needs root"
  configure_node
  mount_under
  say "starting RabbitMQ $(cat "$ROOT/.logfence-rabbitmq-version") as $NODE on $HOST:$PORT"
  # Started as the rabbitmq user, detached: the node outlives this script.
  chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/rabbitmq \
    ERL_EPMD_PORT="$EPMD_PORT" LANG=C.UTF-8 \
    setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    setsid rabbitmq-server >>"$ROOT/var/log/rabbitmq/logfence-start.log" 2>&1 </dev/null &
  disown || true
  local deadline=$((SECONDS + wait))
  while ((SECONDS < deadline)); do
    if port_answers && chroot_started; then
      return 0
    fi
    sleep 1
  done
  tail -n 20 "$ROOT/var/log/rabbitmq/logfence-start.log" | sed 's/^/  | /' >&2 || true
  die "RabbitMQ $VERSION did not answer on $HOST:$PORT within ${wait}s (logs: $ROOT/var/log/rabbitmq/)"
}

chroot_stop() {
  [ -d "$ROOT" ] || {
    say "no $SUITE chroot at $ROOT: nothing to stop"
    return 0
  }
  if port_answers || timeout 10 $(ctl_command) ping >/dev/null 2>&1; then
    say "stopping $NODE"
    timeout 60 $(ctl_command) stop >&2 || say "rabbitmqctl stop failed"
  fi
  # The epmd this node started on its own port (never the host's).
  chroot "$ROOT" env ERL_EPMD_PORT="$EPMD_PORT" epmd -kill >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 20))
  while port_answers && ((SECONDS < deadline)); do sleep 1; done
  port_answers && die "RabbitMQ $VERSION still answers on $HOST:$PORT"
  unmount_under "$ROOT"
  say "RabbitMQ $VERSION stopped"
}

case "$ACTION" in
env)
  echo "LOGFENCE_TEST_AMQP_URL=$URL"
  echo "LOGFENCE_TEST_RABBITMQCTL=$(ctl_command)"
  ;;
stop)
  [ -n "$SUITE" ] || die "broker.sh does not stop the host's broker on $PORT"
  chroot_stop
  ;;
start)
  if [ -z "$SUITE" ]; then host_start; else chroot_start; fi
  say "RabbitMQ $VERSION answers on $HOST:$PORT"
  echo "$URL"
  ;;
esac
