#!/usr/bin/env bash
# The reliability scenarios (tests/it/incidents/), run one at a time on a release
# build against the local broker, then one table of figures against goals.
#
#   scripts/incidents.sh              # every scenario
#   scripts/incidents.sh soak         # those whose test name contains "soak"
#   scripts/incidents.sh failover     # the leader failover on a three-node cluster, which it
#                                     # starts with scripts/cluster.sh (ports 5681-5683)
#
# Exits non-zero when a goal is missed or a scenario fails.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/broker.sh >/dev/null
filter="${1:-incidents::}"  # only ignored tests run: the scenarios
mkdir -p target
out=target/incidents.log
cargo test --release --all-features --test it -- --ignored --test-threads 1 --nocapture "$filter" 2>&1 | tee "$out" | grep -E '^test |FIGURE\|' >&2
status=${PIPESTATUS[0]}
echo
printf '%-19s | %-34s | %-30s | %-18s | %s\n' scenario figure value goal met
printf '%s\n' "--------------------+------------------------------------+--------------------------------+--------------------+----"
grep -o 'FIGURE|.*' "$out" | while IFS='|' read -r _ scenario name value goal met; do
  printf '%-19s | %-34s | %-30s | %-18s | %s\n' "$scenario" "$name" "$value" "$goal" "$met"
done
if grep -q 'FIGURE|.*|NO$' "$out" || [ "$status" -ne 0 ]; then
  grep -A12 -E "panicked at|^---- " "$out" | head -80 >&2
  echo "incidents: a goal was missed or a scenario failed (exit $status); full output: $out" >&2
  exit 1
fi
