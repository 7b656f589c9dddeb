#!/usr/bin/env bash
# The README's first command: logfence end to end against a real RabbitMQ, in under a minute
# after the build.
#
# It makes sure a broker answers (scripts/broker.sh), builds the release binary (or uses
# LOGFENCE_BIN), and prepares a Python environment with logfence-handler (scripts/pyenv.sh,
# target/py-venv). A small Python app (scripts/demo_app.py) logs a batch of records with the
# standard `logging` module — ordinary chat logs in the three styles, the incident's link
# verbatim and as a template, a Log4Shell lookup, a CR/LF forgery, an attribute-access
# attack. The demo asks `logfence check` what it makes of them (the app's records captured
# as files), then starts `logfence consume` on a fresh quorum queue, runs the app again to
# publish the batch through the handler (app -> handler -> queue -> logfence -> sink), waits
# until every message is settled, and shows the sink's lines, `logfence dlq list`, and the
# interesting lines of /metrics. It stops the consumer with SIGTERM and deletes both of its
# queues, also when something fails on the way (the shared exchange `logfence.dlx` stays:
# other consumers use it).
#
# Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f), LOGFENCE_BIN (a
# built binary: skip the build), DEMO_WAIT_SECS (bound of each wait, default 30).
# Needs: bash, python3 with venv and pip's access to PyPI (the app, and reading JSON and
# HTTP), amqp-tools (amqp-delete-queue; installed with apt-get when missing and running as
# root or with sudo).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
WAIT_SECS="${DEMO_WAIT_SECS:-30}"
QUEUE="logfence-demo-$$"
DLQ="$QUEUE.dead"

heading() { printf '\n== %s\n' "$*"; }
row() { printf '  %-10s %s\n' "$1" "$2"; }
die() {
  echo "demo.sh: $*" >&2
  exit 1
}

# The URL with its password replaced, for printing.
redacted() { sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }

WORK=""
CONSUMER_PID=""
QUEUES_DECLARED=""

# Runs on every exit, success or not: stop the consumer, delete its queues, remove the
# temporary files. Each step is best effort and bounded.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$CONSUMER_PID" ] && kill -0 "$CONSUMER_PID" 2>/dev/null; then
    kill -TERM "$CONSUMER_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$CONSUMER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$CONSUMER_PID" 2>/dev/null || true
    wait "$CONSUMER_PID" 2>/dev/null || true
  fi
  if [ -n "$QUEUES_DECLARED" ]; then
    for q in "$QUEUE" "$DLQ"; do
      timeout 10 amqp-delete-queue --url="$AMQP_URL" --queue="$q" >/dev/null 2>&1 || true
    done
  fi
  if [ "$status" -ne 0 ] && [ -n "$WORK" ] && [ -s "$WORK/consumer.log" ]; then
    echo "demo.sh: failed; the consumer's last log lines:" >&2
    tail -n 20 "$WORK/consumer.log" >&2
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites -------------------------------------------------------------------------

command -v python3 >/dev/null 2>&1 || die "python3 is required (the README's prerequisites)"

if ! command -v amqp-delete-queue >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "amqp-tools is missing; install it (apt-get install amqp-tools) and run again"
    SUDO="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || die "amqp-tools is missing and there is no apt-get to install it"
  echo "demo.sh: installing amqp-tools (amqp-delete-queue)" >&2
  $SUDO apt-get update >&2 || die "apt-get update failed"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends amqp-tools >&2 ||
    die "apt-get install amqp-tools failed"
fi

# scripts/broker.sh looks after the local broker only; another AMQP_URL must already answer.
case "$AMQP_URL" in
*@127.0.0.1:5672/* | *@localhost:5672/*)
  scripts/broker.sh || die "no RabbitMQ answers (see the message of scripts/broker.sh above)"
  ;;
esac

if [ -n "${LOGFENCE_BIN:-}" ]; then
  BIN="$LOGFENCE_BIN"
else
  echo "demo.sh: cargo build --release" >&2
  cargo build --release >&2 || die "cargo build --release failed"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/logfence"
fi
[ -x "$BIN" ] || die "no logfence binary at $BIN"

# The app's Python: a venv with logfence-handler installed (made once, under target/).
PY="$(scripts/pyenv.sh)" || die "no Python environment for the app (see scripts/pyenv.sh's message above)"

STARTED=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logfence-demo.XXXXXX")"
mkdir -p "$WORK/batch" "$WORK/state"

# --- the batch -----------------------------------------------------------------------------

# The app's records, in the order it logs them: ordinary ones (the three template styles, a
# verbatim `%`, a relayed plain-text line), then the hostile ones. The incident: `%24` is a
# URL-encoded `$`, so `%2400000000d` is a `%d` of width 2.4 billion; logged as a message it
# is harmless text, concatenated into a template it is the OOM. Captured by the handler
# (capture mode: one JSON record per line), each record becomes one file for `check`, byte
# for byte the body the handler publishes; the names sort in logging order.
NAMES=(chat-message-sent chat-rate-limited chat-user-joined-brace deploy-dollar http-access
  chat-unicode-message verbatim-with-percent plain-text-line incident-link-verbatim
  incident-link-as-template log4shell-lookup crlf-injection attribute-access)
"$PY" scripts/demo_app.py --capture "$WORK/capture.ndjson" || die "scripts/demo_app.py --capture failed"
i=0
while IFS= read -r body; do
  ((i < ${#NAMES[@]})) || die "the app logged more records than the demo names"
  printf '%s' "$body" >"$WORK/batch/$(printf '%02d' $((i + 1)))-${NAMES[$i]}.json"
  i=$((i + 1))
done <"$WORK/capture.ndjson"
RECORDS=("$WORK"/batch/*)
N=${#RECORDS[@]}
[ "$N" -eq "${#NAMES[@]}" ] || die "the app logged $N records, the demo names ${#NAMES[@]}"

echo "logfence demo"
row broker "$(redacted "$AMQP_URL")"
row binary "$BIN ($("$BIN" --version))"
row queue "$QUEUE (quorum; dead letters go to $DLQ)"
row records "$N, in $WORK/batch"

# --- what check says -----------------------------------------------------------------------

heading "1. logfence check: what logfence makes of each record (the consumer runs the same pipeline)"
set +e
"$BIN" check --json "$WORK/batch" >"$WORK/check.jsonl"
CHECK_STATUS=$?
set -e
[ "$CHECK_STATUS" -le 1 ] || die "logfence check exited $CHECK_STATUS"
python3 - "$WORK/check.jsonl" <<'PY'
import json, os, sys

reports = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
names = [os.path.basename(r["source"]).split("-", 1)[1].rsplit(".", 1)[0] for r in reports]
width = max(len(n) for n in names)
print(f"  {'record':<{width}}  {'verdict':<8}  findings")
for name, r in zip(names, reports):
    findings = "; ".join(
        f"{f['severity']} {f['rule']}" + (f": {f['detail']}" if f["severity"] == "reject" else "")
        for f in r["findings"]
    ) or "-"
    print(f"  {name:<{width}}  {r['verdict']:<8}  {findings}")
PY

# --- consume -------------------------------------------------------------------------------

heading "2. logfence consume, then the app logs the batch through logfence-handler"
QUEUES_DECLARED=1 # from here on, the queues may exist: delete them on the way out
# RUST_LOG=info: the consumer logs the address it bound (port 0 picks a free one).
RUST_LOG=info "$BIN" consume --queue "$QUEUE" --sink "file:$WORK/sink.log" --on-reject both \
  --memory-limit 64MiB --metrics-addr 127.0.0.1:0 --state-dir "$WORK/state" \
  --amqp-url "$AMQP_URL" 2>"$WORK/consumer.log" &
CONSUMER_PID=$!

# One HTTP GET of the consumer's endpoint: prints the body, fails on a non-200 answer.
http_get() {
  python3 - "http://$METRICS_ADDR$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.stdout.write(r.read().decode())
except Exception:
    sys.exit(1)
PY
}

# Polls "$@" every 0.2 s until it succeeds, for at most WAIT_SECS; fails on the way if the
# consumer has exited.
wait_for() {
  local what="$1" deadline=$((SECONDS + WAIT_SECS))
  shift
  until "$@"; do
    kill -0 "$CONSUMER_PID" 2>/dev/null || die "the consumer exited while waiting for $what"
    ((SECONDS < deadline)) || die "no $what within ${WAIT_SECS}s"
    sleep 0.2
  done
}

metrics_addr_logged() {
  METRICS_ADDR="$(sed -n 's/.*metrics endpoint listening.*addr=\([0-9.:]*\).*/\1/p' "$WORK/consumer.log" 2>/dev/null | head -n 1)"
  [ -n "$METRICS_ADDR" ]
}
wait_for "metrics address in the consumer's log" metrics_addr_logged
wait_for "/readyz 200 (connected and consuming)" http_get /readyz >/dev/null
row consumer "pid $CONSUMER_PID; /metrics, /healthz, /readyz on $METRICS_ADDR; ready"

"$PY" scripts/demo_app.py --url "$AMQP_URL" --queue "$QUEUE" ||
  die "scripts/demo_app.py could not publish its records"
row published "$N records to $QUEUE (scripts/demo_app.py, logfence-handler: persistent, confirmed)"

# Settled = counted once in logfence_messages_total, whatever became of it.
settled() {
  http_get /metrics | awk '/^logfence_messages_total\{/ { n += $NF } END { print n + 0 }'
}
all_settled() { [ "$(settled)" -ge "$N" ]; }
wait_for "settlement of all $N messages" all_settled
row settled "$(settled) of $N, after $((SECONDS - STARTED))s"

heading "3. the sink: one line per record, every control character escaped ($WORK/sink.log)"
sed 's/^/  /' "$WORK/sink.log"

heading "4. logfence dlq list --queue $DLQ"
"$BIN" dlq list --queue "$DLQ" --amqp-url "$AMQP_URL" | sed 's/^/  /'

heading "5. /metrics: what was settled, what was found, what it cost"
http_get /metrics >"$WORK/metrics.txt"
# In this order: settled by outcome, findings that fired, the per-message allocation
# histogram's count and sum, and the process's memory against its cap.
for pattern in '^logfence_messages_total\{' '^logfence_findings_total\{' \
  '^logfence_message_alloc_bytes_(count|sum) ' '^logfence_memory_' '^logfence_consumer_paused '; do
  grep -E "$pattern" "$WORK/metrics.txt" | sort | awk '
    /^logfence_findings_total/ && $NF == 0 { next }
    /_bytes / && $NF >= 1048576 { printf "  %-52s %s (%.1f MiB)\n", $1, $2, $2 / 1048576; next }
    { printf "  %-52s %s\n", $1, $2 }'
done

heading "6. stop and clean up"
kill -TERM "$CONSUMER_PID"
set +e
wait "$CONSUMER_PID"
EXIT=$?
set -e
CONSUMER_PID=""
row consumer "SIGTERM: exited $EXIT"
for q in "$QUEUE" "$DLQ"; do
  timeout 10 amqp-delete-queue --url="$AMQP_URL" --queue="$q" >/dev/null || die "could not delete $q"
done
QUEUES_DECLARED=""
row deleted "$QUEUE, $DLQ"
row took "$((SECONDS - STARTED))s after the build"
[ "$EXIT" -eq 0 ] || die "the consumer exited $EXIT on SIGTERM"
