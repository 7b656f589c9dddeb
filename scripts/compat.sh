#!/usr/bin/env bash
# The broker-facing tests against every RabbitMQ version logfence supports, and one matrix:
# test x version -> pass/fail, with the key figures the tests print.
#
#   scripts/compat.sh                 # 3.10 (the host's), 4.0 and 4.3 (chroots, see broker.sh)
#   scripts/compat.sh 4.3             # only the versions named
#   COMPAT_FILTER=dlq scripts/compat.sh   # only the matrix rows whose test name contains it
#
# The test binary is built once (debug, all features, as `cargo test` builds it); each
# version's broker is started (its chroot built first when missing: a package that cannot be
# fetched fails here, loudly) and the same tests run against it through
# LOGFENCE_TEST_AMQP_URL / LOGFENCE_TEST_RABBITMQCTL, with CI=true so that none can pass
# without a broker. The 4.x nodes are left running (scripts/broker.sh stop 4.0|4.3).
# Exits non-zero when any test failed on any version; full output in target/compat/.
set -uo pipefail
cd "$(dirname "$0")/.."

VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.10 4.0 4.3)
THREADS="${COMPAT_THREADS:-2}"

# The matrix: row label, then the exact test names behind it. Each version runs all of them
# in one test process, COMPAT_THREADS (2) at a time.
ROWS=(
  "consume: mixed batch, DLQ headers|consume::consume_writes_one_right_line_per_record_and_dead_letters_the_rejected"
  "poison with a crash (quorum)|consume::consume_poison_kills_the_main_process_at_most_once_and_only_it_is_dead_lettered"
  "poison with a crash (classic)|consume::consume_poison_on_a_classic_queue_is_caught_by_the_redelivered_flag"
  "supervisor restart loop|incidents::fleet::incident_the_crash_loop_is_one_death_then_the_dlq"
  "SIGTERM drain|consume::consume_sigterm_finishes_work_in_flight_and_exits_0_with_nothing_lost_or_unacked consume::consume_sigterm_on_a_quorum_queue_loses_no_ack"
  "SIGTERM drain timeout: nack|brokers::consume_sigterm_drain_hands_back_with_the_uncounted_verb"
  "reconnect: connection cut|consume::consume_survives_broker_loss_mid_stream_without_loss_or_stale_acks"
  "reconnect: basic.cancel|brokers::consume_consumes_again_after_the_broker_cancels_it"
  "returns: count, verb, place|brokers::quorum_returns_are_counted_and_placed_as_the_broker_version_does"
  "upgrade: older .dead accepted|brokers::consume_accepts_a_dead_letter_queue_declared_before_it_had_a_delivery_limit"
  "DLQ headers (broker's limit)|dlq::dlq_list_shows_messages_the_broker_dead_lettered_at_its_delivery_limit"
  "dlq list: order, SIGINT|dlq::dlq_list_twice_leaves_a_quorum_dlq_as_found_order_included dlq::dlq_list_interrupted_by_sigint_leaves_a_quorum_dlq_intact"
  "dlq list x25: 100 kept|dlq::dlq_list_25_times_keeps_every_dead_letter_in_order"
  "dlq list x25: older .dead|brokers::dlq_list_keeps_an_older_dead_letter_queue_whole_over_25_listings"
  "dlq replay (--check)|dlq::dlq_replay_moves_every_message_back_byte_for_byte_with_its_own_properties dlq::dlq_replay_check_moves_exactly_the_messages_that_now_pass"
  "metrics, /readyz|metrics::metrics_count_a_mixed_batch_exactly_and_pass_promtool metrics::readyz_turns_503_at_sigterm_while_the_drain_runs"
  "deploy definitions|deploy::rabbitmq::definitions_load_into_the_broker_and_consume_accepts_them_with_and_without_declaring"
  "demo|demo::demo_shows_the_incident_refused_and_the_poison_dead_lettered"
)

say() { echo "compat.sh: $*" >&2; }
started=$SECONDS
out=target/compat
mkdir -p "$out"

# Brokers whose chroot is missing are built (and started) in the background meanwhile:
# debootstrap and apt are mostly waiting on the network.
declare -A STARTING
for v in "${VERSIONS[@]}"; do
  [ "$v" = 3.10 ] && continue
  STARTING[$v]="$out/broker-$v.log"
  scripts/broker.sh "$v" >"${STARTING[$v]}" 2>&1 &
  STARTING[$v.pid]=$!
done

say "building the test binary (cargo test --all-features --no-run)"
build_log="$out/build.log"
if ! cargo test --all-features --test it --no-run >"$build_log" 2>&1; then
  tail -n 30 "$build_log" >&2
  say "the test binary did not build"
  exit 1
fi
IT=$(grep -o 'target/debug/deps/it-[0-9a-f]*' "$build_log" | tail -n 1)
[ -x "$IT" ] || {
  say "no test binary named in $build_log"
  exit 1
}
say "  built in $((SECONDS - started)) s: $IT"

declare -A RESULT FIG SEEN BROKER TOOK
FIGKEYS=()
failed=0
for v in "${VERSIONS[@]}"; do
  t0=$SECONDS
  if [ -n "${STARTING[$v.pid]:-}" ]; then
    if ! wait "${STARTING[$v.pid]}"; then
      cat "${STARTING[$v]}" >&2
      say "RabbitMQ $v could not be built or started (see above)"
      exit 1
    fi
    grep -E "built in|debootstrap:" "${STARTING[$v]}" >&2 || true
  fi
  if ! url=$(scripts/broker.sh "$v" | tail -n 1); then
    say "RabbitMQ $v could not be started (see above)"
    exit 1
  fi
  env_lines=$(scripts/broker.sh env "$v") || exit 1
  ctl=$(sed -n 's/^LOGFENCE_TEST_RABBITMQCTL=//p' <<<"$env_lines")
  BROKER[$v]="$url, ready after $((SECONDS - t0)) s"
  say "RabbitMQ $v at $url (ready after $((SECONDS - t0)) s)"
  # Every selected test against this version in one run, a few at a time.
  tests=""
  for row in "${ROWS[@]}"; do
    label="${row%%|*}"
    if [ -n "${COMPAT_FILTER:-}" ] && [[ "$row" != *"$COMPAT_FILTER"* ]]; then
      continue
    fi
    tests="$tests ${row#*|}"
  done
  log="$out/$v.log"
  t1=$SECONDS
  # shellcheck disable=SC2086 # the test names are words
  LOGFENCE_TEST_AMQP_URL="$url" LOGFENCE_TEST_RABBITMQCTL="$ctl" CI=true RUST_BACKTRACE=0 \
    LOGFENCE_CRASH_LOOP_RECORDS="${LOGFENCE_CRASH_LOOP_RECORDS:-20000}" \
    "$IT" --exact $tests --include-ignored --test-threads "$THREADS" --nocapture >"$log" 2>&1
  status=$?
  TOOK[$v]=$((SECONDS - t1))
  [ "$status" -eq 0 ] || failed=1
  for row in "${ROWS[@]}"; do
    label="${row%%|*}"
    if [ -n "${COMPAT_FILTER:-}" ] && [[ "$row" != *"$COMPAT_FILTER"* ]]; then
      continue
    fi
    verdict=pass
    for t in ${row#*|}; do
      if ! grep -qE "^test $t \.\.\. ok$" "$log"; then
        verdict=FAIL
        failed=1
        say "FAILED on $v: $t (log: $log)"
      fi
    done
    RESULT["$label|$v"]=$verdict
  done
  if [ "$status" -ne 0 ]; then
    grep -A8 -E "panicked at" "$log" | head -n 40 >&2
  fi
  # Key figures: the FIGURE lines the tests print. (Throughput is left to
  # scripts/incidents.sh: a debug build under load says little about it.)
  while IFS='|' read -r _ scenario name value _; do
    key="$scenario: $name"
    [ -n "${SEEN[$key]:-}" ] || FIGKEYS+=("$key")
    SEEN[$key]=1
    FIG["$key|$v"]="$value"
  done < <(grep -o 'FIGURE|.*' "$log" | grep -v -e 'lines/s' -e 'during / before')
done

echo
echo "RabbitMQ compatibility matrix ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - started)) s in all)"
for v in "${VERSIONS[@]}"; do echo "  $v: ${BROKER[$v]}; tests ${TOOK[$v]:-?} s"; done
printf '%-34s' "test"
for v in "${VERSIONS[@]}"; do printf ' | %-6s' "$v"; done
echo
for row in "${ROWS[@]}"; do
  label="${row%%|*}"
  [ -n "${RESULT["$label|${VERSIONS[0]}"]:-}" ] || continue
  printf '%-34s' "$label"
  for v in "${VERSIONS[@]}"; do printf ' | %-6s' "${RESULT["$label|$v"]:-}"; done
  echo
done
echo
printf '%-50s' "key figure"
for v in "${VERSIONS[@]}"; do printf ' | %-10s' "$v"; done
echo
for key in "${FIGKEYS[@]}"; do
  printf '%-50s' "$key"
  for v in "${VERSIONS[@]}"; do printf ' | %-10s' "${FIG["$key|$v"]:--}"; done
  echo
done
if [ "$failed" -ne 0 ]; then
  say "some tests failed; logs in $out/"
  exit 1
fi
