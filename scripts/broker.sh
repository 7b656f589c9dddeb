#!/usr/bin/env bash
# Ensures a RabbitMQ broker answers on 127.0.0.1:5672 (guest/guest), for the tests and .ci/run.
#
# Idempotent: when something already answers on the port it only waits for the broker to have
# finished booting and exits 0. Otherwise it installs Debian's rabbitmq-server if it is
# missing, starts it detached, and waits (bounded by BROKER_WAIT_SECS, default 60) until the
# port answers and `rabbitmqctl await_startup` succeeds. Exits non-zero with a message on
# stderr when it cannot.
set -euo pipefail

HOST=127.0.0.1
PORT=5672
WAIT_SECS="${BROKER_WAIT_SECS:-60}"

say() { echo "broker.sh: $*" >&2; }
die() { say "$*"; exit 1; }

port_answers() { timeout 2 bash -c "</dev/tcp/$HOST/$PORT" 2>/dev/null; }

# `await_startup` blocks until the node has booted; bounded by its own timeout so a node that
# never boots cannot hang CI.
node_started() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0 # a broker we did not install: trust the port
  timeout 15 rabbitmqctl await_startup --timeout 10 >/dev/null 2>&1
}

wait_ready() {
  local deadline=$((SECONDS + WAIT_SECS))
  while ((SECONDS < deadline)); do
    if port_answers && node_started; then
      return 0
    fi
    sleep 1
  done
  return 1
}

if port_answers; then
  wait_ready || die "something answers on $HOST:$PORT but RabbitMQ did not finish starting within ${WAIT_SECS}s"
  say "RabbitMQ answers on $HOST:$PORT"
  exit 0
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
    wait_ready || die "rabbitmq-server was installed but did not finish starting within ${WAIT_SECS}s"
    say "RabbitMQ answers on $HOST:$PORT"
    exit 0
  fi
fi

say "starting rabbitmq-server -detached"
rabbitmq-server -detached >&2 || die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
wait_ready || die "RabbitMQ did not answer on $HOST:$PORT within ${WAIT_SECS}s (see /var/log/rabbitmq/)"
say "RabbitMQ answers on $HOST:$PORT"
